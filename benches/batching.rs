//! The batching traced producer against raw rskafka batched produce of the
//! same records (one request per batch) and against the unbatched
//! `TracedProducer` (one request per record, one record at a time), for
//! 1k and 10k records on one partition of the embedded broker.
//!
//! `cargo bench --bench batching` ends with a one-line summary of the
//! ratios measured in that run (medians of a few timed rounds each).

#[path = "support/shared.rs"]
mod shared;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kafka_trace_harness::traced::{BatchingTracedProducer, DEFAULT_MAX_BATCH_RECORDS};
use kafka_trace_harness::{Broker, SpanCapture, TracedProducer};
use opentelemetry::Context;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use shared::runtime;
use tokio::runtime::Runtime;

const SIZES: [usize; 2] = [1_000, 10_000];
/// Timed rounds per variant and size for the summary line.
const SUMMARY_ROUNDS: usize = 5;

fn record(i: usize) -> Record {
    Record {
        key: Some(format!("key-{i}").into_bytes()),
        value: Some(vec![b'x'; 100]),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    }
}

/// A broker, a topic, and the three producers on it. The broker's watch is
/// off: the runs pass far more than 5 MiB through one partition, and old
/// records being deleted does not matter here.
struct Fixture {
    _broker: Broker,
    topic: String,
    capture: SpanCapture,
    batching: BatchingTracedProducer,
    unbatched: TracedProducer,
    raw: PartitionClient,
}

impl Fixture {
    async fn new() -> Self {
        let broker = Broker::builder()
            .watch_deleted_records(false)
            .start()
            .await
            .expect("broker");
        let topic = broker.create_unique_topic("bench", 1).await.expect("topic");
        let capture = SpanCapture::new();
        let batching = BatchingTracedProducer::builder()
            .build(&broker, capture.tracer("batching"))
            .await
            .expect("batching producer");
        let unbatched = TracedProducer::connect(&broker, capture.tracer("unbatched"))
            .await
            .expect("producer");
        let raw = broker
            .client()
            .await
            .expect("client")
            .partition_client(&topic, 0, UnknownTopicHandling::Error)
            .await
            .expect("partition client");
        Self {
            _broker: broker,
            topic,
            capture,
            batching,
            unbatched,
            raw,
        }
    }

    async fn batching(&self, n: usize) {
        let sends: Vec<_> = (0..n)
            .map(|i| {
                self.batching
                    .send(&Context::new(), &self.topic, 0, record(i))
            })
            .collect();
        // All queued: send the last batch now rather than after the linger,
        // as a caller who knows it is done would.
        self.batching.flush().await.expect("flush");
        futures::future::try_join_all(sends).await.expect("sends");
        self.capture.clear();
    }

    /// The same records in requests of the batching producer's default
    /// batch size, one at a time.
    async fn raw(&self, n: usize) {
        let records: Vec<Record> = (0..n).map(record).collect();
        for chunk in records.chunks(DEFAULT_MAX_BATCH_RECORDS) {
            self.raw
                .produce(chunk.to_vec(), Compression::NoCompression)
                .await
                .expect("produce");
        }
    }

    /// One record at a time, as the unbatched producer is used: 1,000
    /// of its sends started at once on one partition did not all finish
    /// within the 10 s deadline in a trial run.
    async fn unbatched(&self, n: usize) {
        let cx = Context::new();
        for i in 0..n {
            self.unbatched
                .send(&cx, &self.topic, 0, record(i))
                .await
                .expect("send");
        }
        self.capture.clear();
    }

    async fn run(&self, variant: Variant, n: usize) {
        match variant {
            Variant::Batching => self.batching(n).await,
            Variant::Raw => self.raw(n).await,
            Variant::Unbatched => self.unbatched(n).await,
        }
    }
}

#[derive(Clone, Copy)]
enum Variant {
    Batching,
    Raw,
    Unbatched,
}

const VARIANTS: [(Variant, &str); 3] = [
    (Variant::Batching, "traced_batching"),
    (Variant::Raw, "raw_rskafka_batched"),
    (Variant::Unbatched, "traced_unbatched"),
];

fn produce(c: &mut Criterion) {
    let rt = runtime();
    let fixture = rt.block_on(Fixture::new());
    let mut group = c.benchmark_group("produce");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in SIZES {
        group.throughput(Throughput::Elements(n as u64));
        for (variant, name) in VARIANTS {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.to_async(&rt).iter(|| fixture.run(variant, n));
            });
        }
    }
    group.finish();
    summary(&rt, &fixture);
}

/// Median of [`SUMMARY_ROUNDS`] timed rounds of each variant, rounds
/// interleaved so that a noisy neighbour hits all three alike.
fn summary(rt: &Runtime, fixture: &Fixture) {
    let mut line = Vec::new();
    for n in SIZES {
        let mut times = [const { Vec::new() }; 3];
        for _ in 0..SUMMARY_ROUNDS {
            for (i, (variant, _)) in VARIANTS.iter().enumerate() {
                let started = Instant::now();
                rt.block_on(fixture.run(*variant, n));
                times[i].push(started.elapsed());
            }
        }
        let [batching, raw, unbatched] = times.map(|mut t| {
            t.sort();
            t[t.len() / 2]
        });
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        line.push(format!(
            "{n} records: traced batching {:.1} ms, raw batched {:.1} ms, unbatched traced \
             {:.1} ms (batching/raw ×{:.2}, unbatched/batching ×{:.1})",
            ms(batching),
            ms(raw),
            ms(unbatched),
            ms(batching) / ms(raw),
            ms(unbatched) / ms(batching),
        ));
    }
    let stats = fixture.batching.stats();
    println!(
        "batching summary: {}; batching producer: {} records in {} requests",
        line.join("; "),
        stats.records_acknowledged,
        stats.produce_requests
    );
}

criterion_group!(benches, produce);
criterion_main!(benches);
