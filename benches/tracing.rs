//! Costs of the tracing core: propagation per record, traced vs untraced
//! produce→consume on the embedded broker, forest build and render.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use kafka_trace_harness::propagation::{Headers, extract, inject};
use kafka_trace_harness::{
    Broker, CapturedSpan, SpanCapture, SpanForest, StartFrom, TracedConsumer, TracedProducer,
};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;

const RECORDS: usize = 100;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn record() -> Record {
    Record {
        key: Some(b"ZVZZT".to_vec()),
        value: Some(vec![b'x'; 100]),
        headers: Headers::new(),
        timestamp: chrono::Utc::now(),
    }
}

fn propagation(c: &mut Criterion) {
    let state = TraceState::from_key_value([("vendor", "abc"), ("other", "1")]).unwrap();
    let sc = SpanContext::new(
        TraceId::from(0x1234),
        SpanId::from(0x5678),
        TraceFlags::SAMPLED,
        false,
        state,
    );
    let cx = Context::new()
        .with_remote_span_context(sc)
        .with_baggage([KeyValue::new("user", "User_3")]);
    c.bench_function("inject+extract per record", |b| {
        b.iter(|| {
            let mut headers = Headers::new();
            inject(black_box(&cx), &mut headers);
            black_box(extract(&headers))
        })
    });
    // The floor: the SDK's composite propagator alone, on the simplest
    // carrier, so the harness's share of the figure above is visible.
    let sdk = TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]);
    let mut group = c.benchmark_group("propagation parts");
    group.bench_function("sdk inject+extract (HashMap carrier)", |b| {
        b.iter(|| {
            let mut carrier = std::collections::HashMap::<String, String>::new();
            sdk.inject_context(black_box(&cx), &mut carrier);
            black_box(sdk.extract(&carrier))
        })
    });
    group.bench_function("sdk inject (HashMap carrier)", |b| {
        b.iter(|| {
            let mut carrier = std::collections::HashMap::<String, String>::new();
            sdk.inject_context(black_box(&cx), &mut carrier);
            black_box(carrier)
        })
    });
    let mut carrier = std::collections::HashMap::<String, String>::new();
    sdk.inject_context(&cx, &mut carrier);
    group.bench_function("sdk extract (HashMap carrier)", |b| {
        b.iter(|| black_box(sdk.extract(black_box(&carrier))))
    });
    group.bench_function("harness inject", |b| {
        b.iter(|| {
            let mut headers = Headers::new();
            inject(black_box(&cx), &mut headers);
            black_box(headers)
        })
    });
    let mut headers = Headers::new();
    inject(&cx, &mut headers);
    group.bench_function("harness extract", |b| {
        b.iter(|| black_box(extract(black_box(&headers))))
    });
    group.finish();
}

/// Both variants on one broker; every round uses fresh topics, because the
/// mock cluster slows down as a partition's log grows, which would
/// otherwise penalise whichever variant ran longer.
struct Pipeline {
    broker: Broker,
    client: rskafka::client::Client,
    capture: SpanCapture,
    producer: TracedProducer,
}

impl Pipeline {
    async fn new() -> Self {
        let broker = Broker::builder().start().await.expect("broker");
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("p"))
            .await
            .expect("producer");
        let client = broker.client().await.expect("client");
        Self {
            broker,
            client,
            capture,
            producer,
        }
    }

    async fn topic(&self) -> String {
        self.broker
            .create_unique_topic("bench", 1)
            .await
            .expect("topic")
    }

    /// RECORDS records, one produce call each, then read back; returns
    /// the time taken without the setup.
    async fn untraced(&self) -> Duration {
        let topic = self.topic().await;
        let partition: PartitionClient = self
            .client
            .partition_client(topic, 0, UnknownTopicHandling::Retry)
            .await
            .expect("partition");
        // One untimed record, as the traced variant sends one to warm up.
        partition
            .produce(vec![record()], Compression::NoCompression)
            .await
            .expect("produce");
        let started = Instant::now();
        for _ in 0..RECORDS {
            partition
                .produce(vec![record()], Compression::NoCompression)
                .await
                .expect("produce");
        }
        let (mut next, mut got) = (1, 0);
        while got < RECORDS {
            let (records, _) = partition
                .fetch_records(next, 1..52_428_800, 50)
                .await
                .expect("fetch");
            let from = next;
            for r in records.into_iter().filter(|r| r.offset >= from) {
                next = r.offset + 1;
                got += 1;
                black_box(r);
            }
        }
        started.elapsed()
    }

    async fn traced(&self) -> Duration {
        let topic = self.topic().await;
        // Untimed: the producer's first send to a topic looks up metadata.
        self.producer
            .send(&Context::new(), &topic, 0, record())
            .await
            .expect("send");
        let mut consumer = TracedConsumer::builder("c", &topic)
            .start_from(StartFrom::Latest)
            .build(&self.broker, self.capture.tracer("c"))
            .await
            .expect("consumer");
        let started = Instant::now();
        for _ in 0..RECORDS {
            self.producer
                .send(&Context::new(), &topic, 0, record())
                .await
                .expect("send");
        }
        let consumed = consumer
            .consume(RECORDS, Duration::from_secs(30))
            .await
            .expect("consume");
        for c in consumed {
            c.finish();
        }
        let elapsed = started.elapsed();
        // Keeps memory flat across iterations.
        self.capture.clear();
        elapsed
    }
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let pipeline = rt.block_on(Pipeline::new());

    // One direct comparison in the same run, alternating the variants,
    // printed as a ratio.
    let rounds = 20;
    let (mut untraced, mut traced) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        untraced += rt.block_on(pipeline.untraced());
        traced += rt.block_on(pipeline.traced());
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (rounds * RECORDS) as f64;
    println!(
        "produce→consume per record: untraced {:.1} µs, traced {:.1} µs, traced/untraced = {:.2}",
        per(untraced),
        per(traced),
        traced.as_secs_f64() / untraced.as_secs_f64()
    );

    let mut group = c.benchmark_group("produce→consume 100 records");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("untraced", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(pipeline.untraced())).sum())
    });
    group.bench_function("traced", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(pipeline.traced())).sum())
    });
    group.finish();
}

/// `count` spans in traces of 10: a producer root, 3 consumers, each with
/// 2 producers below.
fn synthetic(count: usize) -> Vec<CapturedSpan> {
    let scope = InstrumentationScope::builder("bench").build();
    let span =
        |trace: u128, id: u64, parent: u64, name: &'static str, kind: SpanKind| CapturedSpan {
            service: format!("svc-{}", id % 3),
            data: SpanData {
                span_context: SpanContext::new(
                    TraceId::from(trace),
                    SpanId::from(id),
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::NONE,
                ),
                parent_span_id: SpanId::from(parent),
                parent_span_is_remote: false,
                span_kind: kind,
                name: Cow::Borrowed(name),
                start_time: SystemTime::UNIX_EPOCH,
                end_time: SystemTime::UNIX_EPOCH,
                attributes: vec![
                    KeyValue::new("messaging.system", "kafka"),
                    KeyValue::new("messaging.kafka.offset", id as i64),
                ],
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: scope.clone(),
            },
        };
    let mut spans = Vec::with_capacity(count);
    let mut id = 1u64;
    let mut trace = 1u128;
    while spans.len() < count {
        let root = id;
        spans.push(span(trace, root, 0, "send trades", SpanKind::Producer));
        id += 1;
        for _ in 0..3 {
            let consumer = id;
            spans.push(span(
                trace,
                consumer,
                root,
                "process trades",
                SpanKind::Consumer,
            ));
            id += 1;
            for _ in 0..2 {
                spans.push(span(
                    trace,
                    id,
                    consumer,
                    "send dollars",
                    SpanKind::Producer,
                ));
                id += 1;
            }
        }
        trace += 1;
    }
    spans.truncate(count);
    spans
}

fn forest(c: &mut Criterion) {
    let mut group = c.benchmark_group("forest");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for count in [1_000, 10_000, 100_000] {
        let spans = synthetic(count);
        // The copy of the input is set-up, not build: only `new` is timed.
        group.bench_with_input(BenchmarkId::new("build", count), &spans, |b, spans| {
            b.iter_batched(
                || spans.clone(),
                |spans| SpanForest::new(black_box(spans)),
                BatchSize::LargeInput,
            )
        });
        let built = SpanForest::new(spans);
        group.bench_with_input(BenchmarkId::new("render", count), &built, |b, forest| {
            b.iter(|| black_box(forest.render()))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = propagation, throughput, forest
}
criterion_main!(benches);
