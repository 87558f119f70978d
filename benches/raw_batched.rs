//! The honest baselines of the stockapp pipeline: its trade records (Avro,
//! keyed by symbol, murmur2 over 3 partitions, no headers) produced in
//! batches to the embedded broker and consumed back, 1k and 10k at a time:
//!
//! * `rskafka_batch_producer`: rskafka's `BatchProducer` per partition
//!   (5 ms linger, 1 MiB batches), then `PartitionClient` fetch loops.
//! * `rdkafka_linger`: rdkafka's `FutureProducer` (`linger.ms=5`,
//!   `acks=all`), then a `StreamConsumer` assigned every partition.
//!
//! Each run is a fresh topic; only produce → consume is timed (see
//! `support/raw_batched.rs`), and criterion reports records per second.
//! `cargo bench --bench raw_batched` ends with a summary: records/s of
//! both and the rdkafka/rskafka ratio, from medians of a few plain runs.

#[path = "support/shared.rs"]
mod shared;

#[path = "support/raw_batched.rs"]
mod raw_batched;

use std::future::Future;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use kafka_trace_harness::Broker;
use rskafka::record::Record;
use shared::{bench_mode, runtime};

const SIZES: [usize; 2] = [1_000, 10_000];
/// The stockapp pipeline's partitions of the trades topic.
const PARTITIONS: i32 = 3;
/// Plain runs per client and size for the summary (with `--bench`).
const SUMMARY_RUNS: usize = 5;

#[derive(Clone, Copy)]
enum Client {
    Rskafka,
    Rdkafka,
}

const CLIENTS: [(Client, &str); 2] = [
    (Client::Rskafka, "rskafka_batch_producer"),
    (Client::Rdkafka, "rdkafka_linger"),
];

/// One timed produce → consume of `records` on a fresh topic of `broker`.
async fn run(client: Client, broker: &Broker, records: &[(i32, Record)]) -> Duration {
    match client {
        Client::Rskafka => {
            raw_batched::rskafka_batched(broker, "raw-rskafka", PARTITIONS, records).await
        }
        Client::Rdkafka => {
            raw_batched::rdkafka_linger(broker, "raw-rdkafka", PARTITIONS, records).await
        }
    }
}

/// A broker without the dropped-record watch: every run adds a topic, and
/// the watch would ask each one's log start every 250 ms. No partition
/// nears the mock's 5 MiB, and a run that lost records fails anyway.
async fn broker() -> Broker {
    Broker::builder()
        .watch_deleted_records(false)
        .start()
        .await
        .expect("broker")
}

async fn total<F: Future<Output = Duration>>(iters: u64, run: impl Fn() -> F) -> Duration {
    let mut sum = Duration::ZERO;
    for _ in 0..iters {
        sum += run().await;
    }
    sum
}

fn produce_consume(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("raw batched produce→consume");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let records = raw_batched::trade_records(n, PARTITIONS);
        group.throughput(Throughput::Elements(n as u64));
        for (client, name) in CLIENTS {
            // A broker per benchmark, so that its topics do not pile up.
            let broker = rt.block_on(broker());
            group.bench_with_input(BenchmarkId::new(name, n), &records, |b, records| {
                b.to_async(&rt)
                    .iter_custom(|iters| total(iters, || run(client, &broker, records)))
            });
            rt.block_on(broker.shutdown()).expect("shutdown");
        }
    }
    group.finish();
}

/// Records/s of both clients and their ratio per size, from medians of
/// plain runs, interleaved so that a slow spell hits both alike.
fn summary(_: &mut Criterion) {
    let rt = runtime();
    let runs = if bench_mode() { SUMMARY_RUNS } else { 1 };
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let broker = rt.block_on(broker());
    println!(
        "\nsummary: raw batched produce→consume, {PARTITIONS} partitions, median of {runs} runs:"
    );
    for n in SIZES {
        let records = raw_batched::trade_records(n, PARTITIONS);
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (i, (client, _)) in CLIENTS.iter().enumerate() {
                times[i].push(rt.block_on(run(*client, &broker, &records)));
            }
        }
        let [rskafka, rdkafka] = times.map(median);
        let per_second = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "summary: {n} records: rskafka BatchProducer {rskafka:.1?} ({:.0} records/s), \
             rdkafka linger {rdkafka:.1?} ({:.0} records/s); rdkafka/rskafka throughput = {:.2}",
            per_second(rskafka),
            per_second(rdkafka),
            per_second(rdkafka) / per_second(rskafka),
        );
    }
    rt.block_on(broker.shutdown()).expect("shutdown");
}

criterion_group!(benches, produce_consume, summary);
criterion_main!(benches);
