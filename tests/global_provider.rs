//! Services that only know `opentelemetry::global`, in 32 tests running in
//! parallel: each capture sees exactly its own traces.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_trace_harness::propagation::{HeaderExtractor, HeaderInjector};
use kafka_trace_harness::{Broker, SpanCapture};
use opentelemetry::trace::{FutureExt, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, Value, global};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

const RECORDS: usize = 3;

/// A service written against the global API only: for each request a
/// root span, a record carrying its context through Kafka, and on the
/// other side a `process` span continuing the trace, plus a follow-up span
/// in a task spawned without any capture scope.
async fn service(broker: &Broker, topic: &str, test_id: i64) {
    let client = broker.client().await.unwrap();
    let partition = client
        .partition_client(topic, 0, UnknownTopicHandling::Error)
        .await
        .unwrap();
    let frontend = global::tracer("frontend");
    for n in 0..RECORDS {
        let span = frontend
            .span_builder(format!("request {n}"))
            .with_attributes([KeyValue::new("test.id", test_id)])
            .start(&frontend);
        let cx = Context::current_with_span(span);
        let mut headers = BTreeMap::new();
        global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(&mut headers))
        });
        let record = Record {
            key: None,
            value: Some(n.to_string().into_bytes()),
            headers,
            timestamp: chrono::Utc::now(),
        };
        partition
            .produce(vec![record], Compression::NoCompression)
            .await
            .unwrap();
        drop(cx);
    }

    let worker = global::tracer("worker");
    let mut next = 0;
    while next < RECORDS as i64 {
        let (records, _) = partition
            .fetch_records(next, 1..1_000_000, 100)
            .await
            .unwrap();
        for r in records {
            next = r.offset + 1;
            let parent =
                global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(&r.record.headers)));
            let span = worker
                .span_builder("process")
                .with_attributes([KeyValue::new("test.id", test_id)])
                .start_with_context(&worker, &parent);
            let cx = parent.with_span(span);
            // Outside the scope: the span follows its trace id.
            tokio::spawn(
                async move {
                    let tracer = global::tracer("auditor");
                    tracer
                        .span_builder("audit")
                        .with_attributes([KeyValue::new("test.id", test_id)])
                        .start_with_context(&tracer, &Context::current());
                }
                .with_context(cx),
            )
            .await
            .unwrap();
        }
    }
}

async fn one_test(test_id: i64) {
    let broker = Broker::builder().start().await.unwrap();
    let topic = broker.create_unique_topic("global", 1).await.unwrap();
    let capture = SpanCapture::new();

    tokio::time::timeout(
        Duration::from_secs(60),
        capture.scope(service(&broker, &topic, test_id)),
    )
    .await
    .expect("the service finished");

    let forest = capture.forest();
    forest.assert_no_problems();
    assert_eq!(forest.len(), 3 * RECORDS, "test {test_id}");
    assert_eq!(forest.traces().len(), RECORDS, "test {test_id}");
    for span in forest.spans() {
        assert_eq!(
            span.attribute("test.id"),
            Some(&Value::I64(test_id)),
            "test {test_id} captured {:?} of another test",
            span.name()
        );
    }
    let services: Vec<&str> = forest.named("audit").map(|s| s.service()).collect();
    assert_eq!(services, vec!["auditor"; RECORDS]);
}

macro_rules! parallel_tests {
    ($($name:ident = $id:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                one_test($id).await;
            }
        )*
    };
}

parallel_tests!(
    global_00 = 0,
    global_01 = 1,
    global_02 = 2,
    global_03 = 3,
    global_04 = 4,
    global_05 = 5,
    global_06 = 6,
    global_07 = 7,
    global_08 = 8,
    global_09 = 9,
    global_10 = 10,
    global_11 = 11,
    global_12 = 12,
    global_13 = 13,
    global_14 = 14,
    global_15 = 15,
    global_16 = 16,
    global_17 = 17,
    global_18 = 18,
    global_19 = 19,
    global_20 = 20,
    global_21 = 21,
    global_22 = 22,
    global_23 = 23,
    global_24 = 24,
    global_25 = 25,
    global_26 = 26,
    global_27 = 27,
    global_28 = 28,
    global_29 = 29,
    global_30 = 30,
    global_31 = 31,
);

#[test]
fn a_root_outside_every_scope_is_counted_not_captured() {
    kafka_trace_harness::capture::global::install();
    let capture = SpanCapture::new();
    let before = kafka_trace_harness::capture::global::unrouted_spans();
    global::tracer("stray").in_span("nobody's", |_| {});
    assert!(kafka_trace_harness::capture::global::unrouted_spans() > before);
    assert!(capture.forest().is_empty());
    {
        let _scope = capture.enter();
        global::tracer("sync").in_span("mine", |_| {});
    }
    assert_eq!(capture.forest().named("mine").count(), 1);
}
