//! Throughput, growth, memory and latency of the whole stockapp pipeline
//! (`datagen` → `stock-processor` and `kstream-service` → `api-1`,
//! `api-2`) on the embedded broker, against honest baselines.
//!
//! * `pipeline/traced`: [`PipelineBuilder::start`] with every span going to
//!   a streaming [`TraceCheck`] (what `kafka-trace-harness run` does), timed
//!   from `start` until every trade went through every service; each run
//!   also asserts that every trade's trace matches the reference tree.
//! * `pipeline/untraced`: the same with [`PipelineBuilder::start_untraced`]
//!   (an `AlwaysOff` sampler: context headers travel, no span is recorded).
//! * `raw/rskafka batched` and `raw/rdkafka linger`: no pipeline, no
//!   tracing: the same trade records produced in batches (5 ms linger) and
//!   consumed back once (`support/raw_batched.rs`): what a user would do
//!   with a batching client instead. The pipeline moves each trade through
//!   three topics and four readers, so it cannot reach this floor.
//!
//! `cargo bench --bench pipeline` ends with summary lines, from plain runs
//! in the same process: throughput at 1k, 10k, 100k and 1M trades (growth),
//! traced/untraced and pipeline/raw ratios at 100k (medians of 3
//! interleaved runs; pipeline/raw also per record moved, since the
//! pipeline produces and reads several records per trade), peak memory per
//! trade, traced against untraced at 20,000 trades/s offered (throughput
//! and CPU per trade), and end-to-end p50/p99 at 1,000 trades/s offered.
//! `kafka-trace-harness run --trades 1000000` measures the million too
//! (README), as a program of its own.

#[path = "support/shared.rs"]
mod shared;

#[path = "support/raw_batched.rs"]
mod raw_batched;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use kafka_trace_harness::stockapp::pipeline::PipelineBuilder;
use kafka_trace_harness::stockapp::summary::TraceSummary;
use kafka_trace_harness::stockapp::trace_check::TraceCheck;
use kafka_trace_harness::{Broker, SpanCapture};
use shared::{bench_mode, runtime};

/// The program's allocator: the pipeline allocates per record in every
/// service, and the system allocator made the bench a different program
/// from the one `run` measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: u16 = 3;
const DEADLINE: Duration = Duration::from_secs(300);

fn settings(trades: usize) -> PipelineBuilder {
    PipelineBuilder::new()
        .seed(raw_batched::SEED)
        .trades(trades)
        .users(9)
        .api_consumers(2)
        .partitions(PARTITIONS)
}

/// What one pipeline run measured, from `start` until every trade went
/// through every service.
struct Run {
    elapsed: Duration,
    /// CPU time of the whole process (services, broker, trace check).
    cpu: Option<Duration>,
    /// What the trace check found, for a traced run.
    summary: Option<TraceSummary>,
    /// Records the broker took or handed out: every record produced
    /// (users, trades, rows, JSON copies) and every record read (by the
    /// processor, the Kafka Streams app and each API consumer).
    records_moved: usize,
}

/// CPU time this process has used so far (Linux: user + system time from
/// `/proc/self/stat`, in the kernel's fixed 100 ticks per second).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces: state is the
    // first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// One pipeline run on a fresh broker; only start → complete is timed.
async fn pipeline_run(settings: PipelineBuilder, trades: usize, traced: bool) -> Run {
    // The retention deletes read records in long runs; the services fail
    // on an unread one, so the watch is not needed here.
    let broker = Broker::builder()
        .watch_deleted_records(false)
        .start()
        .await
        .expect("broker");
    let check = Arc::new(TraceCheck::new(2));
    let capture = SpanCapture::builder().stream(check.clone()).build();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let mut pipeline = if traced {
        settings.start(&broker, &capture).await
    } else {
        settings.start_untraced(&broker).await
    }
    .expect("start");
    let progress = pipeline
        .wait_until_complete(DEADLINE)
        .await
        .expect("complete");
    let elapsed = started.elapsed();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    assert_eq!(progress.trades_processed, trades);
    let records_moved = progress.users_sent
        + progress.trades_sent
        + progress.rows_sent
        + progress.json_sent
        + progress.users_processed
        + progress.trades_processed
        + progress.kstream_trades_processed
        + progress.api_rows.iter().sum::<usize>();
    pipeline.stop().await.expect("stop");
    broker.shutdown().await.expect("shutdown");
    let summary = traced.then(|| {
        let report = check.finish();
        assert_eq!(
            (report.summary.complete, report.summary.broken),
            (trades, 0),
            "{:?}",
            report.broken_examples
        );
        report.summary
    });
    Run {
        elapsed,
        cpu,
        summary,
        records_moved,
    }
}

async fn timed(trades: usize, traced: bool) -> Duration {
    pipeline_run(settings(trades), trades, traced).await.elapsed
}

async fn raw_run(records: &[(i32, rskafka::record::Record)], rdkafka: bool) -> Duration {
    let broker = Broker::builder()
        .watch_deleted_records(false)
        .start()
        .await
        .expect("broker");
    let partitions = i32::from(PARTITIONS);
    let elapsed = if rdkafka {
        raw_batched::rdkafka_linger(&broker, "raw", partitions, records).await
    } else {
        raw_batched::rskafka_batched(&broker, "raw", partitions, records).await
    };
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
    let sizes: &[usize] = if bench_mode() {
        &[1_000, 10_000]
    } else {
        &[100]
    };
    for &trades in sizes {
        let records = raw_batched::trade_records(trades, i32::from(PARTITIONS));
        let mut group = c.benchmark_group(format!("{trades} trades"));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(8))
            .throughput(Throughput::Elements(trades as u64));
        group.bench_function("pipeline/traced", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| total(iters, || timed(trades, true)))
        });
        group.bench_function("pipeline/untraced", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| total(iters, || timed(trades, false)))
        });
        group.bench_function("raw/rskafka batched", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| total(iters, || raw_run(&records, false)))
        });
        group.bench_function("raw/rdkafka linger", |b| {
            b.to_async(&rt)
                .iter_custom(|iters| total(iters, || raw_run(&records, true)))
        });
        group.finish();
    }
}

/// Peak resident memory of this process so far (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn summary(_: &mut Criterion) {
    let rt = runtime();
    let bench = bench_mode();
    let per_second = |trades: usize, d: Duration| trades as f64 / d.as_secs_f64();

    // Growth and memory: one traced run per size, smallest first, so the
    // peak resident memory after each is that size's. The million takes
    // about half a minute and some 200 MB.
    let sizes: &[usize] = if bench {
        &[1_000, 10_000, 100_000, 1_000_000]
    } else {
        &[100, 1_000]
    };
    let mut growth = Vec::new();
    for &trades in sizes {
        let elapsed = rt.block_on(timed(trades, true));
        growth.push((trades, per_second(trades, elapsed), peak_rss()));
    }

    // Ratios at one size, interleaved so a slow spell hits every kind.
    let (trades, runs) = if bench { (100_000, 3) } else { (100, 1) };
    let records = raw_batched::trade_records(trades, i32::from(PARTITIONS));
    let (mut traced, mut untraced, mut rskafka, mut rdkafka) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Every run moves the same records (same seed).
    let mut records_moved = 0;
    for _ in 0..runs {
        let run = rt.block_on(pipeline_run(settings(trades), trades, true));
        traced.push(run.elapsed);
        records_moved = run.records_moved;
        untraced.push(rt.block_on(timed(trades, false)));
        rskafka.push(rt.block_on(raw_run(&records, false)));
        rdkafka.push(rt.block_on(raw_run(&records, true)));
    }
    let (traced, untraced, rskafka, rdkafka) = (
        median(traced),
        median(untraced),
        median(rskafka),
        median(rdkafka),
    );

    // Traced against untraced at the speed of the throughput target
    // (20,000 trades/s offered): what each delivers there, and what CPU
    // each spends per trade to do it.
    let (paced_rate, paced_trades) = if bench {
        (20_000.0, 100_000)
    } else {
        (2_000.0, 200)
    };
    let (mut paced_traced, mut paced_untraced) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (traced, runs) in [(true, &mut paced_traced), (false, &mut paced_untraced)] {
            let settings = settings(paced_trades).rate(paced_rate);
            runs.push(rt.block_on(pipeline_run(settings, paced_trades, traced)));
        }
    }
    let paced = |runs: Vec<Run>| {
        let per_trade = |d: Duration| d / paced_trades as u32;
        let cpu = runs
            .iter()
            .map(|run| run.cpu.map(per_trade))
            .collect::<Option<Vec<_>>>()
            .map(median);
        (median(runs.iter().map(|run| run.elapsed).collect()), cpu)
    };
    let (paced_traced, paced_untraced) = (paced(paced_traced), paced(paced_untraced));

    // End-to-end latency at an offered rate.
    let offered = if bench { 5_000 } else { 200 };
    let latency = rt
        .block_on(pipeline_run(settings(offered).rate(1_000.0), offered, true))
        .summary
        .expect("a traced run reports latency");

    println!("\nsummary: throughput, traced, one run per size (growth):");
    for (trades, rate, peak) in &growth {
        let peak = peak.map_or("n/a".to_owned(), |b| format!("{} MB", b / 1_000_000));
        println!("summary:   {trades:>7} trades: {rate:>8.0} trades/s, peak RSS so far {peak}");
    }
    if let Some(last) = growth.last() {
        for earlier in &growth[..growth.len() - 1] {
            println!(
                "summary:   {} trades / {} trades throughput = {:.2}",
                last.0,
                earlier.0,
                last.1 / earlier.1
            );
        }
        if let (Some(a), Some(b)) = (growth[growth.len().saturating_sub(2)].2, last.2) {
            let more = last.0 - growth[growth.len().saturating_sub(2)].0;
            println!(
                "summary:   peak memory per trade (growth between the last two sizes) = {} bytes",
                b.saturating_sub(a) / more as u64
            );
        }
    }
    println!(
        "summary: {trades} trades, median of {runs} runs: traced {:.0}/s, untraced {:.0}/s, \
         raw rskafka batched {:.0}/s, raw rdkafka linger {:.0}/s",
        per_second(trades, traced),
        per_second(trades, untraced),
        per_second(trades, rskafka),
        per_second(trades, rdkafka),
    );
    println!(
        "summary: traced/untraced = {:.2}, pipeline/raw rskafka batched = {:.2}, \
         pipeline/raw rdkafka linger = {:.2}",
        untraced.as_secs_f64() / traced.as_secs_f64(),
        rskafka.as_secs_f64() / traced.as_secs_f64(),
        rdkafka.as_secs_f64() / traced.as_secs_f64(),
    );
    // The baselines move each record twice (produced once, read once);
    // the pipeline moves each trade through three topics and four readers.
    let moved_per_trade = records_moved as f64 / trades as f64;
    println!(
        "summary: per record moved (produced or read; the pipeline moves {moved_per_trade:.2} \
         per trade, the baselines 2): pipeline/raw rskafka batched = {:.2}, \
         pipeline/raw rdkafka linger = {:.2}",
        rskafka.as_secs_f64() / traced.as_secs_f64() * moved_per_trade / 2.0,
        rdkafka.as_secs_f64() / traced.as_secs_f64() * moved_per_trade / 2.0,
    );
    let cpu = |cpu: Option<Duration>| cpu.map_or("n/a".to_owned(), |d| format!("{d:?}"));
    println!(
        "summary: at {paced_rate:.0} trades/s offered ({paced_trades} trades, median of {runs} \
         runs): traced {:.0}/s at {} CPU per trade, untraced {:.0}/s at {} CPU per trade",
        per_second(paced_trades, paced_traced.0),
        cpu(paced_traced.1),
        per_second(paced_trades, paced_untraced.0),
        cpu(paced_untraced.1),
    );
    if let (Some(traced_cpu), Some(untraced_cpu)) = (paced_traced.1, paced_untraced.1) {
        println!(
            "summary: at {paced_rate:.0} trades/s offered: traced/untraced throughput = {:.2}, \
             CPU per trade untraced/traced = {:.2}",
            paced_untraced.0.as_secs_f64() / paced_traced.0.as_secs_f64(),
            untraced_cpu.as_secs_f64() / traced_cpu.as_secs_f64(),
        );
    }
    println!(
        "summary: end-to-end at 1000 trades/s offered ({offered} trades): p50 {:?}, p99 {:?}",
        latency.end_to_end_p50, latency.end_to_end_p99
    );
}

criterion_group!(benches, pipeline, summary);
criterion_main!(benches);
