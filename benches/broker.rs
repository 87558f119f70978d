//! Embedded broker: time to ready, produce latency direct vs through the
//! stall-free front, fetch throughput, and a new consumer group's first
//! record with the mock's initial rebalance delay and the harness's.
//!
//! `cargo bench --bench broker` ends with a summary of the two figures the
//! broker issue asks for (ready time, p50 produce of 100 records).

#[path = "support/shared.rs"]
mod shared;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kafka_trace_harness::Broker;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use shared::runtime;

const BATCH_SIZES: [usize; 5] = [1, 10, 100, 200, 1_000];
const FETCH_RECORDS: usize = 5_000;

fn records(count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(vec![b'x'; 100]),
            headers: [(
                "traceparent".to_owned(),
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
            )]
            .into(),
            timestamp: chrono::Utc::now(),
        })
        .collect()
}

async fn partition(broker: &Broker) -> PartitionClient {
    let topic = broker.create_unique_topic("bench", 1).await.expect("topic");
    broker
        .client()
        .await
        .expect("client")
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition")
}

fn time_to_ready(c: &mut Criterion) {
    let rt = runtime();
    c.bench_function("embedded broker: start to ready", |b| {
        b.to_async(&rt).iter(|| async {
            let broker = Broker::builder().start().await.expect("broker");
            broker.shutdown().await.expect("shutdown");
        })
    });
}

fn produce_latency(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("produce latency");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for (path, stall_free) in [("direct", false), ("stall-free front", true)] {
        let broker = rt
            .block_on(Broker::builder().stall_free(stall_free).start())
            .unwrap();
        let client = rt.block_on(partition(&broker));
        for size in BATCH_SIZES {
            let batch = records(size);
            group.throughput(Throughput::Elements(size as u64));
            group.bench_with_input(BenchmarkId::new(path, size), &batch, |b, batch| {
                b.to_async(&rt).iter(|| async {
                    client
                        .produce(batch.clone(), Compression::NoCompression)
                        .await
                        .expect("produce")
                })
            });
        }
        rt.block_on(broker.shutdown()).unwrap();
    }
    group.finish();
}

/// A new consumer group (librdkafka's `BaseConsumer`, polled): subscribe
/// to the first record, on a broker whose groups first wait `delay`.
/// The consumer is created before the clock starts and closed after it.
fn group_first_record(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("new consumer group: subscribe to first record");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    for (label, delay) in GROUP_DELAYS {
        let broker = rt
            .block_on(
                Broker::builder()
                    .group_initial_rebalance_delay(delay)
                    .start(),
            )
            .unwrap();
        let topic = rt.block_on(topic_with_one_record(&broker));
        let mut groups = 0u32;
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| {
                        groups += 1;
                        first_record(broker.bootstrap_servers(), &topic, &format!("g{groups}"))
                    })
                    .sum()
            })
        });
        rt.block_on(broker.shutdown()).unwrap();
    }
    group.finish();
}

/// The delays [`group_first_record`] compares: the mock's own default
/// (what a test waited before) and the harness's default.
const GROUP_DELAYS: [(&str, Duration); 2] = [
    ("initial delay 3 s (mock default)", Duration::from_secs(3)),
    ("initial delay 0 (harness default)", Duration::ZERO),
];

async fn topic_with_one_record(broker: &Broker) -> String {
    let topic = broker.create_unique_topic("group", 1).await.expect("topic");
    broker
        .client()
        .await
        .expect("client")
        .partition_client(topic.clone(), 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition")
        .produce(records(1), Compression::NoCompression)
        .await
        .expect("produce");
    topic
}

/// Subscribes a new consumer of `group` to `topic` and polls until its
/// first record; returns the time from subscribe to that record.
fn first_record(bootstrap: &str, topic: &str, group: &str) -> Duration {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let started = Instant::now();
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = started + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(10)) {
            Some(Ok(_)) => return started.elapsed(),
            Some(Err(e)) => panic!("consumer group {group:?} on {bootstrap}: {e}"),
            None => {}
        }
    }
    panic!("no record for consumer group {group:?} from {bootstrap} within 30 s");
}

fn fetch_throughput(c: &mut Criterion) {
    let rt = runtime();
    let broker = rt.block_on(Broker::builder().start()).unwrap();
    let client = rt.block_on(partition(&broker));
    rt.block_on(client.produce(records(FETCH_RECORDS), Compression::NoCompression))
        .unwrap();
    let mut group = c.benchmark_group("fetch");
    group.throughput(Throughput::Elements(FETCH_RECORDS as u64));
    group.bench_function("5000 records from offset 0", |b| {
        b.to_async(&rt).iter(|| async {
            let mut next = 0;
            while next < FETCH_RECORDS as i64 {
                let (batch, _) = client
                    .fetch_records(next, 1..50_000_000, 100)
                    .await
                    .expect("fetch");
                next = batch.last().map_or(next, |r| r.offset + 1);
            }
        })
    });
    group.finish();
    rt.block_on(broker.shutdown()).unwrap();
}

/// What the dropped-record watch costs a produce: p50 latency of one
/// record with the watch on and off, in rounds that alternate the two so
/// that both see the same machine. The watch asks for every partition's
/// log start every 250 ms, so a test with more topics pays more: the
/// broker here has 20 topics of 3 partitions.
fn watch_cost(_: &mut Criterion) {
    let rt = runtime();
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let mut p50 = [Vec::new(), Vec::new()];
    for round in 0..10 {
        for (slot, watch) in [(0, true), (1, false)] {
            // Alternate which goes first, so neither always runs warm.
            let watch = if round % 2 == 0 { watch } else { !watch };
            let slot = if round % 2 == 0 { slot } else { 1 - slot };
            let broker = rt
                .block_on(Broker::builder().watch_deleted_records(watch).start())
                .unwrap();
            for _ in 0..20 {
                rt.block_on(broker.create_unique_topic("other", 3)).unwrap();
            }
            let client = rt.block_on(partition(&broker));
            let batch = records(1);
            let samples = (0..300)
                .map(|_| {
                    rt.block_on(async {
                        let started = Instant::now();
                        client
                            .produce(batch.clone(), Compression::NoCompression)
                            .await
                            .unwrap();
                        started.elapsed()
                    })
                })
                .collect();
            p50[slot].push(median(samples));
            drop(client);
            let _ = rt.block_on(broker.shutdown());
        }
    }
    let (on, off) = (median(p50[0].clone()), median(p50[1].clone()));
    println!(
        "\nsummary: produce of 1 record p50 with the dropped-record watch {on:?}, without \
         {off:?} (on / off = {:.3}, median of 10 alternating rounds of 300)",
        on.as_secs_f64() / off.as_secs_f64()
    );
}

/// The two acceptance figures, as medians of plain repeated runs.
fn summary(_: &mut Criterion) {
    let rt = runtime();
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let ready = median(
        (0..50)
            .map(|_| {
                rt.block_on(async {
                    let started = Instant::now();
                    let broker = Broker::builder().start().await.unwrap();
                    let elapsed = started.elapsed();
                    broker.shutdown().await.unwrap();
                    elapsed
                })
            })
            .collect(),
    );
    let mut p50 = Vec::new();
    for stall_free in [false, true] {
        let broker = rt
            .block_on(Broker::builder().stall_free(stall_free).start())
            .unwrap();
        let client = rt.block_on(partition(&broker));
        let batch = records(100);
        p50.push(median(
            (0..40)
                .map(|_| {
                    rt.block_on(async {
                        let started = Instant::now();
                        client
                            .produce(batch.clone(), Compression::NoCompression)
                            .await
                            .unwrap();
                        started.elapsed()
                    })
                })
                .collect(),
        ));
        rt.block_on(broker.shutdown()).unwrap();
    }
    println!("\nsummary: embedded broker ready in {ready:?} (median of 50)");
    println!(
        "summary: produce 100 records p50: direct {:?}, stall-free front {:?} (ratio {:.1}x)",
        p50[0],
        p50[1],
        p50[0].as_secs_f64() / p50[1].as_secs_f64()
    );
}

criterion_group!(
    benches,
    time_to_ready,
    produce_latency,
    fetch_throughput,
    group_first_record,
    watch_cost,
    summary
);
criterion_main!(benches);
