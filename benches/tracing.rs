//! Costs of the tracing core: propagation per record, traced vs untraced
//! produce→consume on the embedded broker, forest build and render.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kafka_trace_harness::propagation::{Headers, extract, inject};
use kafka_trace_harness::{
    Broker, CapturedSpan, SpanCapture, SpanForest, TracedConsumer, TracedProducer,
};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
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
}

struct Pipeline {
    _broker: Broker,
    topic: String,
    capture: SpanCapture,
    producer: TracedProducer,
    consumer: TracedConsumer,
    plain: PartitionClient,
    plain_next: i64,
}

impl Pipeline {
    async fn new() -> Self {
        let broker = Broker::builder().start().await.expect("broker");
        let topic = broker.create_unique_topic("bench", 1).await.expect("topic");
        let plain_topic = broker.create_unique_topic("plain", 1).await.expect("topic");
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("p"))
            .await
            .expect("producer");
        let consumer = TracedConsumer::builder("c", &topic)
            .build(&broker, capture.tracer("c"))
            .await
            .expect("consumer");
        let plain = broker
            .client()
            .await
            .expect("client")
            .partition_client(plain_topic, 0, UnknownTopicHandling::Retry)
            .await
            .expect("partition");
        Self {
            _broker: broker,
            topic,
            capture,
            producer,
            consumer,
            plain,
            plain_next: 0,
        }
    }

    /// RECORDS records, one produce call each, then read back.
    async fn untraced(&mut self) {
        for _ in 0..RECORDS {
            self.plain
                .produce(vec![record()], Compression::NoCompression)
                .await
                .expect("produce");
        }
        let mut got = 0;
        while got < RECORDS {
            let (records, _) = self
                .plain
                .fetch_records(self.plain_next, 1..52_428_800, 50)
                .await
                .expect("fetch");
            let from = self.plain_next;
            for r in records.into_iter().filter(|r| r.offset >= from) {
                self.plain_next = r.offset + 1;
                got += 1;
                black_box(r);
            }
        }
    }

    async fn traced(&mut self) {
        for _ in 0..RECORDS {
            self.producer
                .send(&Context::new(), &self.topic, 0, record())
                .await
                .expect("send");
        }
        let consumed = self
            .consumer
            .consume(RECORDS, Duration::from_secs(30))
            .await
            .expect("consume");
        for c in consumed {
            c.finish();
        }
        // Keeps memory flat across iterations.
        self.capture.clear();
    }
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut pipeline = rt.block_on(Pipeline::new());

    // One direct comparison in the same run, printed as a ratio.
    let rounds = 10;
    let started = Instant::now();
    for _ in 0..rounds {
        rt.block_on(pipeline.untraced());
    }
    let untraced = started.elapsed();
    let started = Instant::now();
    for _ in 0..rounds {
        rt.block_on(pipeline.traced());
    }
    let traced = started.elapsed();
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
    group.bench_function("untraced", |b| b.iter(|| rt.block_on(pipeline.untraced())));
    group.bench_function("traced", |b| b.iter(|| rt.block_on(pipeline.traced())));
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
        group.bench_with_input(BenchmarkId::new("build", count), &spans, |b, spans| {
            b.iter(|| SpanForest::new(black_box(spans.clone())))
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
