//! Throughput of the whole stockapp pipeline (`datagen` → `stock-processor`
//! → `api-1`, `api-2`) on the embedded broker, against the raw broker.
//!
//! Every figure moves the same [`TRADES`] seeded trades (Avro values of
//! about 40 bytes) and is reported by criterion in elements (trades) per
//! second:
//!
//! * `pipeline/traced`: [`PipelineBuilder::start`] with every service's spans
//!   going into a [`SpanCapture`], timed from `start` (topics, clients,
//!   tasks) until [`RunningPipeline::wait_until_complete`] sees every trade
//!   (and the 9 user profiles sent before them) through the processor and
//!   both API consumers. A fresh embedded broker and capture per run; their
//!   setup, the `stop` and the broker shutdown are not timed.
//! * `pipeline/untraced`: the same with [`PipelineBuilder::start_untraced`]
//!   (an `AlwaysOff` sampler: context headers still travel, no span is
//!   recorded). traced/untraced is what tracing costs the pipeline.
//! * `pipeline/raw produce→fetch`: no pipeline, no tracing: the same Avro
//!   trade records produced one record per produce call (as the datagen
//!   service sends them) into a 3-partition topic, keyed to partitions the
//!   same way, then fetched back with a plain `PartitionClient` loop per
//!   partition. The mock cluster answers a fetch with one record batch per
//!   partition, so the loop fetches from the next offset until it has them
//!   all. This is the floor for one hop; the pipeline makes about three
//!   produce calls per trade (the trade, its JSON copy, its window row) and
//!   four reads (processor, two API consumers, the users table), so it can
//!   never reach it.
//!
//! `cargo bench --bench pipeline` ends with a summary line of both ratios
//! (throughput, so below 1 means slower), computed from the medians of a
//! few plain timed runs in the same process, plus what dominates the
//! pipeline's time: the trades' split over the partitions and the cost of a
//! `TracedConsumer::poll` once one partition is drained (every poll waits
//! for its slowest partition, and an empty one answers only after the
//! 2 ms `max_wait`, while a full one yields one batch, here one record).

use std::future::Future;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use kafka_trace_harness::stockapp::pipeline::PipelineBuilder;
use kafka_trace_harness::stockapp::{AvroRecord, SchemaRegistry, TRADES_TOPIC};
use kafka_trace_harness::{Broker, SpanCapture, TracedConsumer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use tokio::runtime::Runtime;

/// Trades per run, for every figure.
const TRADES: usize = 500;
const SEED: u64 = 1;
const PARTITIONS: u16 = 3;
const DEADLINE: Duration = Duration::from_secs(120);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `cargo bench` passes `--bench`; `cargo test --benches` does not, and
/// then the summary makes one run of each kind instead of several.
fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn settings() -> PipelineBuilder {
    PipelineBuilder::new()
        .seed(SEED)
        .trades(TRADES)
        .users(9)
        .api_consumers(2)
        .partitions(PARTITIONS)
}

/// One pipeline run on a fresh broker; only start → complete is timed.
async fn pipeline_run(traced: bool) -> Duration {
    let broker = Broker::builder().start().await.expect("broker");
    let capture = SpanCapture::new();
    let started = Instant::now();
    let mut pipeline = if traced {
        settings().start(&broker, &capture).await
    } else {
        settings().start_untraced(&broker).await
    }
    .expect("start");
    let progress = pipeline
        .wait_until_complete(DEADLINE)
        .await
        .expect("complete");
    let elapsed = started.elapsed();
    assert_eq!(progress.trades_processed, TRADES);
    pipeline.stop().await.expect("stop");
    broker.shutdown().await.expect("shutdown");
    elapsed
}

/// The pipeline's partitioner: Kafka's default (murmur2).
fn partition_for_key(key: &str, partitions: i32) -> i32 {
    kafka_trace_harness::traced::partitioner::partition_for_key(key.as_bytes(), partitions)
}

/// The datagen's trade records, Avro-framed, with their partitions.
fn trade_records() -> Vec<(i32, Record)> {
    let registry = SchemaRegistry::new();
    let now = chrono::Utc::now();
    settings()
        .datagen()
        .trades()
        .map(|trade| {
            let value = registry.encode_value(TRADES_TOPIC, &trade).expect("avro");
            let partition = partition_for_key(trade.key(), i32::from(PARTITIONS));
            let record = Record {
                key: Some(trade.key().as_bytes().to_vec()),
                value: Some(value),
                headers: Default::default(),
                timestamp: now,
            };
            (partition, record)
        })
        .collect()
}

/// Produces every record with its own produce call, then fetches every
/// partition back from offset 0 until it has them all.
async fn produce_then_fetch(clients: &[PartitionClient], records: &[(i32, Record)]) {
    let mut expected = vec![0_i64; clients.len()];
    for (partition, record) in records {
        let index = *partition as usize;
        clients[index]
            .produce(vec![record.clone()], Compression::NoCompression)
            .await
            .expect("produce");
        expected[index] += 1;
    }
    let mut fetched = 0;
    for (client, &count) in clients.iter().zip(&expected) {
        let mut next = 0;
        while next < count {
            let (batch, _high_watermark) = client
                .fetch_records(next, 1..52_428_800, 2)
                .await
                .expect("fetch");
            let before = next;
            for r in batch.iter().filter(|r| r.offset >= before) {
                next = next.max(r.offset + 1);
                fetched += 1;
            }
        }
    }
    assert_eq!(fetched, records.len());
}

/// One raw run on a fresh broker and topic; only produce → fetch is timed.
async fn raw_run(records: &[(i32, Record)]) -> Duration {
    let broker = Broker::builder().start().await.expect("broker");
    let topic = broker
        .create_unique_topic("raw-trades", PARTITIONS)
        .await
        .expect("topic");
    let client = broker.client().await.expect("client");
    let mut clients = Vec::new();
    for partition in 0..i32::from(PARTITIONS) {
        clients.push(
            client
                .partition_client(topic.as_str(), partition, UnknownTopicHandling::Retry)
                .await
                .expect("partition"),
        );
    }
    let started = Instant::now();
    produce_then_fetch(&clients, records).await;
    let elapsed = started.elapsed();
    drop(clients);
    broker.shutdown().await.expect("shutdown");
    elapsed
}

async fn total<F: Future<Output = Duration>>(iters: u64, run: impl Fn() -> F) -> Duration {
    let mut sum = Duration::ZERO;
    for _ in 0..iters {
        sum += run().await;
    }
    sum
}

fn pipeline(c: &mut Criterion) {
    let rt = runtime();
    let records = trade_records();
    let mut group = c.benchmark_group("pipeline");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(7))
        .throughput(Throughput::Elements(TRADES as u64));
    group.bench_function(format!("traced, {TRADES} trades"), |b| {
        b.to_async(&rt)
            .iter_custom(|iters| total(iters, || pipeline_run(true)))
    });
    group.bench_function(format!("untraced, {TRADES} trades"), |b| {
        b.to_async(&rt)
            .iter_custom(|iters| total(iters, || pipeline_run(false)))
    });
    group.bench_function(format!("raw produce→fetch, {TRADES} records"), |b| {
        b.to_async(&rt)
            .iter_custom(|iters| total(iters, || raw_run(&records)))
    });
    group.finish();
}

/// The pipeline's trades per partition: the key is the symbol, and 7
/// symbols over 3 partitions split the trades unevenly.
fn trades_per_partition(records: &[(i32, Record)]) -> Vec<usize> {
    let mut counts = vec![0; usize::from(PARTITIONS)];
    for (partition, _) in records {
        counts[*partition as usize] += 1;
    }
    counts
}

/// What one `TracedConsumer::poll` costs on a 3-partition topic whose
/// records (one per batch, as the datagen sends them) are all on one
/// partition: the state of the processor's trades consumer once a
/// partition is drained. Returns (time per poll, records per poll).
async fn skewed_poll(broker: &Broker, max_wait: Duration, records: usize) -> (Duration, f64) {
    let topic = broker
        .create_unique_topic("skewed", PARTITIONS)
        .await
        .expect("topic");
    let client = broker.client().await.expect("client");
    let partition = client
        .partition_client(topic.as_str(), 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    for (_, record) in trade_records().into_iter().take(records) {
        partition
            .produce(vec![record], Compression::NoCompression)
            .await
            .expect("produce");
    }
    let tracer = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOff)
        .build()
        .tracer("bench");
    let mut consumer = TracedConsumer::builder("bench", topic)
        .max_wait(max_wait)
        .build(broker, tracer)
        .await
        .expect("consumer");
    let (mut got, mut polls) = (0, 0_u32);
    let started = Instant::now();
    while got < records {
        got += consumer.poll().await.expect("poll").len();
        polls += 1;
    }
    (started.elapsed() / polls, got as f64 / f64::from(polls))
}

/// Both ratios, from medians of plain repeated runs in this process.
fn summary(_: &mut Criterion) {
    let rt = runtime();
    let runs = if bench_mode() { 7 } else { 1 };
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let records = trade_records();
    let mut traced = Vec::new();
    let mut untraced = Vec::new();
    let mut raw = Vec::new();
    // Interleaved, so a slow spell of the machine hits every kind alike.
    for _ in 0..runs {
        traced.push(rt.block_on(pipeline_run(true)));
        untraced.push(rt.block_on(pipeline_run(false)));
        raw.push(rt.block_on(raw_run(&records)));
    }
    let (traced, untraced, raw) = (median(traced), median(untraced), median(raw));
    let per_second = |d: Duration| TRADES as f64 / d.as_secs_f64();
    let ((skewed_2ms, per_poll_2ms), (skewed_0ms, per_poll_0ms)) = rt.block_on(async {
        let broker = Broker::builder().start().await.expect("broker");
        let records = if bench_mode() { 100 } else { 5 };
        let polls = (
            skewed_poll(&broker, Duration::from_millis(2), records).await,
            skewed_poll(&broker, Duration::ZERO, records).await,
        );
        broker.shutdown().await.expect("shutdown");
        polls
    });
    println!("\nsummary: {TRADES} trades, median of {runs} runs each:");
    println!(
        "summary: traced {traced:?} ({:.0} trades/s), untraced {untraced:?} ({:.0} trades/s), \
         raw produce→fetch {raw:?} ({:.0} records/s)",
        per_second(traced),
        per_second(untraced),
        per_second(raw),
    );
    println!(
        "summary: trades per partition {:?}; TracedConsumer::poll with data on 1 of 3 \
         partitions: {skewed_2ms:?}/poll ({per_poll_2ms:.1} records) with the pipeline's 2 ms \
         max_wait, {skewed_0ms:?}/poll ({per_poll_0ms:.1} records) with none",
        trades_per_partition(&records),
    );
    println!(
        "summary: traced/untraced throughput = {:.2}, pipeline/raw produce→fetch = {:.2} \
         (untraced pipeline/raw = {:.2})",
        untraced.as_secs_f64() / traced.as_secs_f64(),
        raw.as_secs_f64() / traced.as_secs_f64(),
        raw.as_secs_f64() / untraced.as_secs_f64(),
    );
}

criterion_group!(benches, pipeline, summary);
criterion_main!(benches);
