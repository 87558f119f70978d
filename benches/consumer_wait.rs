//! What a traced consumer's fetch wait costs: CPU while idle, and
//! produce → handed-out latency while waiting.
//!
//! A consumer waiting at the broker costs CPU for every fetch it makes on
//! an empty partition; a longer wait makes fewer. The broker's front
//! answers a waiting fetch as soon as records arrive, so the wait should
//! cost no latency. Measured here, in one run:
//! - idle CPU over 5 s (user + system time of this process, from
//!   `/proc/self/stat`, less the broker's own idle CPU) of a `TracedConsumer`
//!   polling a 3-partition topic, and of the whole stockapp pipeline once
//!   it has finished its records;
//! - produce → handed-out latency (median, p90 of 40) of one record sent
//!   to partition 1 of 3 while the consumer polls (the other two partitions
//!   stay empty: a wait on them must not delay it).
//!
//! `cargo bench --bench consumer_wait --features stockapp` (Linux: it reads
//! `/proc`); `cargo test --benches` makes a shorter run.

#[path = "support/shared.rs"]
mod shared;

use std::time::{Duration, Instant};

use kafka_trace_harness::stockapp::pipeline::PipelineBuilder;
use kafka_trace_harness::{Broker, SpanCapture, TracedConsumer};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use shared::{bench_mode, runtime};

/// CPU time (user + system) this process used so far, from
/// `/proc/self/stat` (fields 14 and 15, in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux)");
    // The command name (field 2) may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// CPU this process uses while `idle` passes.
async fn cpu_over(idle: Duration) -> Duration {
    let before = cpu_time();
    tokio::time::sleep(idle).await;
    cpu_time().saturating_sub(before)
}

fn record() -> Record {
    Record {
        key: None,
        value: Some(vec![b'x'; 100]),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    }
}

fn percent(cpu: Duration, over: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / over.as_secs_f64()
}

async fn consumer_figures(idle: Duration, samples: usize) {
    let broker = Broker::builder().start().await.expect("broker");
    let topic = broker.create_unique_topic("wait", 3).await.expect("topic");
    let broker_alone = cpu_over(idle).await;
    let capture = SpanCapture::new();
    let mut consumer = TracedConsumer::builder("waiting", &topic)
        .build(&broker, capture.tracer("waiting"))
        .await
        .expect("consumer");
    let (handed, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let polling = tokio::spawn(async move {
        loop {
            for consumed in consumer.poll().await.expect("poll") {
                consumed.finish();
                let _ = handed.send(Instant::now());
            }
        }
    });
    let with_consumer = cpu_over(idle).await;
    let consumer_cpu = with_consumer.saturating_sub(broker_alone);
    println!(
        "idle 3-partition TracedConsumer, default wait: {:.2}% of a core over {idle:?} \
         (broker alone {:.2}%)",
        percent(consumer_cpu, idle),
        percent(broker_alone, idle)
    );

    let producer = broker
        .client()
        .await
        .expect("client")
        .partition_client(topic.as_str(), 1, UnknownTopicHandling::Error)
        .await
        .expect("partition client");
    let mut latencies = Vec::new();
    for _ in 0..samples {
        // Let the consumer settle into its wait.
        tokio::time::sleep(Duration::from_millis(120)).await;
        let started = Instant::now();
        producer
            .produce(vec![record()], Compression::NoCompression)
            .await
            .expect("produce");
        let arrived = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .expect("the record within 10 s")
            .expect("consumer alive");
        latencies.push(arrived - started);
    }
    latencies.sort();
    println!(
        "produce -> handed out, partition 1 of 3, {samples} records: median {:?}, p90 {:?}",
        latencies[samples / 2],
        latencies[samples * 9 / 10]
    );
    polling.abort();
    let _ = polling.await;
    broker.shutdown().await.expect("shutdown");
}

async fn pipeline_figures(idle: Duration) {
    let broker = Broker::builder().start().await.expect("broker");
    let broker_alone = cpu_over(idle).await;
    let capture = SpanCapture::new();
    let mut pipeline = PipelineBuilder::new()
        .trades(200)
        .start(&broker, &capture)
        .await
        .expect("pipeline");
    let started = Instant::now();
    pipeline
        .wait_until_complete(Duration::from_secs(60))
        .await
        .expect("complete");
    let complete = started.elapsed();
    let with_pipeline = cpu_over(idle).await;
    println!(
        "idle stockapp pipeline (2 API consumers): {:.2}% of a core over {idle:?} \
         (broker alone {:.2}%); 200 trades through every service in {complete:?}",
        percent(with_pipeline.saturating_sub(broker_alone), idle),
        percent(broker_alone, idle)
    );
    pipeline.stop().await.expect("stop");
    let _ = broker.shutdown().await;
}

fn main() {
    let (idle, samples) = if bench_mode() {
        (Duration::from_secs(5), 40)
    } else {
        (Duration::from_secs(1), 5)
    };
    let rt = runtime();
    rt.block_on(consumer_figures(idle, samples));
    rt.block_on(pipeline_figures(idle));
}
