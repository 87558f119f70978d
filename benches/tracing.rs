//! Costs of the tracing core: propagation per record, traced vs untraced
//! produce→consume on the embedded broker, forest build and render.

#[path = "support/shared.rs"]
mod shared;

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use kafka_trace_harness::propagation::{HeaderExtractor, HeaderInjector, Headers, extract, inject};
use kafka_trace_harness::traced::attr;
use kafka_trace_harness::{
    Broker, CapturedSpan, SpanCapture, SpanForest, StartFrom, TracedConsumer, TracedProducer,
};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanEvents, SpanLinks,
};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::{Record, RecordAndOffset};
use shared::runtime;

const RECORDS: usize = 100;

fn record() -> Record {
    Record {
        key: Some(b"ZVZZT".to_vec()),
        value: Some(vec![b'x'; 100]),
        headers: Headers::new(),
        timestamp: chrono::Utc::now(),
    }
}

fn propagation(c: &mut Criterion) {
    let span = |state| {
        SpanContext::new(
            TraceId::from(0x1234),
            SpanId::from(0x5678),
            TraceFlags::SAMPLED,
            false,
            state,
        )
    };
    // What the stockapp's records carry: a traceparent and nothing else.
    let plain = Context::new().with_remote_span_context(span(TraceState::NONE));
    // Everything W3C can carry: two tracestate members and baggage.
    let state = TraceState::from_key_value([("vendor", "abc"), ("other", "1")]).unwrap();
    let full = Context::new()
        .with_remote_span_context(span(state))
        .with_baggage([KeyValue::new("user", "User_3")]);
    // The floor: the SDK's composite propagator alone, on the simplest
    // carrier, so the harness's share of each figure is visible.
    let sdk = sdk_propagator();
    let mut group = c.benchmark_group("inject+extract per record");
    for (case, cx) in [("traceparent", &plain), ("tracestate+baggage", &full)] {
        group.bench_function(format!("harness, {case}"), |b| {
            b.iter(|| {
                let mut headers = Headers::new();
                inject(black_box(cx), &mut headers);
                black_box(extract(&headers))
            })
        });
        group.bench_function(format!("sdk alone (HashMap carrier), {case}"), |b| {
            b.iter(|| {
                let mut carrier = std::collections::HashMap::<String, String>::new();
                sdk.inject_context(black_box(cx), &mut carrier);
                black_box(sdk.extract(&carrier))
            })
        });
    }
    group.finish();
}

/// One variant's setting: a fresh embedded broker, so that no measurement
/// pays for another's history (the mock cluster slows down as its logs and
/// topic list grow). Every variant talks to it over two connections, one
/// producing and one consuming, as a real pipeline does; the broker's cost
/// grows with its open connections, so the variants must match there.
struct Pipeline {
    broker: Broker,
    topic: String,
}

impl Pipeline {
    async fn new() -> Self {
        let broker = Broker::builder().start().await.expect("broker");
        let topic = broker.create_unique_topic("bench", 1).await.expect("topic");
        Self { broker, topic }
    }

    async fn partition(&self) -> PartitionClient {
        self.broker
            .client()
            .await
            .expect("client")
            .partition_client(self.topic.as_str(), 0, UnknownTopicHandling::Retry)
            .await
            .expect("partition")
    }

    /// A producing and a consuming connection for the raw variants, the
    /// producer warmed up with one untimed record, as the traced variant
    /// sends one.
    async fn raw_pair(&self) -> (PartitionClient, PartitionClient) {
        let producer = self.partition().await;
        let consumer = self.partition().await;
        producer
            .produce(vec![record()], Compression::NoCompression)
            .await
            .expect("produce");
        (producer, consumer)
    }

    /// RECORDS records, one produce call each, then read back; returns
    /// the time taken without the setup.
    async fn untraced(&self) -> Duration {
        let (producer, consumer) = self.raw_pair().await;
        let started = Instant::now();
        for _ in 0..RECORDS {
            producer
                .produce(vec![record()], Compression::NoCompression)
                .await
                .expect("produce");
        }
        read_back(&consumer, |r| {
            black_box(r);
        })
        .await;
        started.elapsed()
    }

    /// The same with a traced producer and consumer: a `send` span per
    /// record, context in the headers, a `process` span per record read.
    /// `recording` false gives them tracers whose sampler drops every span:
    /// contexts still travel, nothing is recorded, which splits the cost
    /// into propagation and recording.
    async fn traced(&self, recording: bool) -> Duration {
        let capture = SpanCapture::new();
        let topic = self.topic.as_str();
        let producer = TracedProducer::connect(&self.broker, tracer(&capture, recording, "p"))
            .await
            .expect("producer");
        // Untimed: the producer's first send to a topic looks up metadata.
        producer
            .send(&Context::new(), topic, 0, record())
            .await
            .expect("send");
        let mut consumer = TracedConsumer::builder("c", topic)
            .start_from(StartFrom::Latest)
            .build(&self.broker, tracer(&capture, recording, "c"))
            .await
            .expect("consumer");
        let started = Instant::now();
        for _ in 0..RECORDS {
            producer
                .send(&Context::new(), topic, 0, record())
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
        started.elapsed()
    }

    /// The floor any OpenTelemetry instrumentation pays: the untraced
    /// loop plus, per record, a span around the produce, the SDK's
    /// propagators on the headers, and a span per record read, recorded
    /// into the same kind of capture. `semconv` false gives bare spans;
    /// true gives them the attributes the harness records (written the
    /// plain way, one `KeyValue::new` each), so the harness's own share is
    /// what `traced` costs above this. Span names are static strings here,
    /// which only lowers the floor.
    async fn sdk_floor(&self, semconv: bool) -> Duration {
        let capture = SpanCapture::new();
        let (send_tracer, process_tracer) = (capture.tracer("p"), capture.tracer("c"));
        let sdk = sdk_propagator();
        let (producer, consumer) = self.raw_pair().await;
        let started = Instant::now();
        for _ in 0..RECORDS {
            let mut record = record();
            let attributes = if semconv {
                semconv_attributes(&self.topic, "send", record.key.as_deref())
            } else {
                Vec::new()
            };
            let span = send_tracer
                .span_builder("send")
                .with_kind(SpanKind::Producer)
                .with_attributes(attributes)
                .start(&send_tracer);
            let cx = Context::new().with_span(span);
            sdk.inject_context(&cx, &mut HeaderInjector(&mut record.headers));
            let offsets = producer
                .produce(vec![record], Compression::NoCompression)
                .await
                .expect("produce");
            if semconv {
                cx.span()
                    .set_attribute(KeyValue::new(attr::OFFSET, offsets[0]));
            }
            cx.span().end();
        }
        let mut spans = Vec::with_capacity(RECORDS);
        read_back(&consumer, |r| {
            let parent = sdk.extract(&HeaderExtractor(&r.record.headers));
            let attributes = if semconv {
                let mut a = semconv_attributes(&self.topic, "process", r.record.key.as_deref());
                a.push(KeyValue::new(attr::CONSUMER_GROUP, "c"));
                a.push(KeyValue::new(attr::OFFSET, r.offset));
                a
            } else {
                Vec::new()
            };
            spans.push(
                process_tracer
                    .span_builder("process")
                    .with_kind(SpanKind::Consumer)
                    .with_attributes(attributes)
                    .start_with_context(&process_tracer, &parent),
            );
        })
        .await;
        for mut span in spans {
            span.end();
        }
        started.elapsed()
    }
}

/// Reads RECORDS records back from offset 1 (after the warm-up record),
/// one fetch at a time, handing each to `each`.
async fn read_back(consumer: &PartitionClient, mut each: impl FnMut(RecordAndOffset)) {
    let (mut next, mut got) = (1, 0);
    while got < RECORDS {
        let (records, _) = consumer
            .fetch_records(next, 1..52_428_800, 50)
            .await
            .expect("fetch");
        let from = next;
        for r in records.into_iter().filter(|r| r.offset >= from) {
            next = r.offset + 1;
            got += 1;
            each(r);
        }
    }
}

/// The messaging attributes every traced record's span carries.
fn semconv_attributes(topic: &str, operation: &'static str, key: Option<&[u8]>) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new(attr::MESSAGING_SYSTEM, "kafka"),
        KeyValue::new(attr::OPERATION_NAME, operation),
        KeyValue::new(attr::OPERATION_TYPE, operation),
        KeyValue::new(attr::DESTINATION_NAME, topic.to_owned()),
        KeyValue::new(attr::PARTITION_ID, "0"),
        KeyValue::new(attr::SERVER_ADDRESS, "127.0.0.1"),
        KeyValue::new(attr::SERVER_PORT, 9092),
    ];
    if let Some(key) = key {
        attributes.push(KeyValue::new(
            attr::MESSAGE_KEY,
            String::from_utf8_lossy(key).into_owned(),
        ));
    }
    attributes
}

fn sdk_propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

fn tracer(capture: &SpanCapture, recording: bool, service: &str) -> SdkTracer {
    if recording {
        capture.tracer(service)
    } else {
        SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build()
            .tracer(service.to_owned())
    }
}

async fn untraced_round() -> Duration {
    Pipeline::new().await.untraced().await
}

async fn traced_round() -> Duration {
    Pipeline::new().await.traced(true).await
}

async fn unrecorded_round() -> Duration {
    Pipeline::new().await.traced(false).await
}

async fn sdk_floor_round(semconv: bool) -> Duration {
    Pipeline::new().await.sdk_floor(semconv).await
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();

    // One direct comparison in the same run: each round runs untraced,
    // traced, traced without recording, and the SDK floor with bare spans
    // and with the same attributes, each on its own broker, in an order
    // that rotates from round to round; printed as ratios of throughputs
    // (untraced time / variant time), total and median. Single rounds vary by ±30 % with the broker's latency, so
    // many are needed for the ratios to settle; THROUGHPUT_ROUNDS asks
    // for more.
    const VARIANTS: usize = 5;
    let rounds = std::env::var("THROUGHPUT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(201usize)
        .max(VARIANTS);
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut t = [Duration::ZERO; VARIANTS];
        for step in 0..VARIANTS {
            let variant = (round + step) % VARIANTS;
            t[variant] = rt.block_on(match variant {
                0 => Box::pin(untraced_round())
                    as std::pin::Pin<Box<dyn std::future::Future<Output = Duration>>>,
                1 => Box::pin(traced_round()),
                2 => Box::pin(unrecorded_round()),
                3 => Box::pin(sdk_floor_round(false)),
                _ => Box::pin(sdk_floor_round(true)),
            });
        }
        times.push(t);
    }
    let total = |v: usize| times.iter().map(|t| t[v]).sum::<Duration>();
    let ratio = |v: usize| {
        let mut ratios: Vec<f64> = times
            .iter()
            .map(|t| t[0].as_secs_f64() / t[v].as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        (
            total(0).as_secs_f64() / total(v).as_secs_f64(),
            ratios[rounds / 2],
        )
    };
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (rounds * RECORDS) as f64;
    let (traced, traced_median) = ratio(1);
    let (unrecorded, unrecorded_median) = ratio(2);
    let (floor, floor_median) = ratio(3);
    let (semconv, semconv_median) = ratio(4);
    println!(
        "produce→consume per record over {rounds} rounds: untraced {:.1} µs, traced {:.1} µs, \
         traced without recording {:.1} µs, SDK floor {:.1} µs, with attributes {:.1} µs\n\
         traced/untraced throughput = {traced:.3} (median round {traced_median:.3}); \
         without recording {unrecorded:.3} (median round {unrecorded_median:.3}); \
         SDK floor {floor:.3} (median round {floor_median:.3}), \
         with attributes {semconv:.3} (median round {semconv_median:.3})",
        per(total(0)),
        per(total(1)),
        per(total(2)),
        per(total(3)),
        per(total(4)),
    );

    let mut group = c.benchmark_group("produce→consume 100 records");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("untraced", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(untraced_round())).sum())
    });
    group.bench_function("traced", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(traced_round())).sum())
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
                    KeyValue::new(attr::MESSAGING_SYSTEM, "kafka"),
                    KeyValue::new(attr::OFFSET, id as i64),
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
