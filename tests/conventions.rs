//! Messaging-convention conformance, on the harness's own spans and on
//! spans shaped like the OpenTelemetry Java agent's defaults.

use std::time::Duration;

use kafka_trace_harness::forest::conventions::{Finding, MessagingConventions};
use kafka_trace_harness::{Broker, SpanCapture, SpanForest, TracedConsumer, TracedProducer};
use opentelemetry::trace::{Link, Span as _, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use rskafka::record::Record;

/// A Java agent (2.x, default settings) trace of one record: `publish`,
/// then a `receive` CLIENT span for the poll and a `process` CONSUMER span
/// linked to the producer, with the 1.24-era attribute names.
fn java_agent_trace(capture: &SpanCapture, extra: &[KeyValue]) -> SpanForest {
    let producer = capture.tracer("java-producer");
    let consumer = capture.tracer("java-consumer");
    let mut publish_attributes = vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation", "publish"),
        KeyValue::new("messaging.destination.name", "orders"),
        KeyValue::new("messaging.kafka.destination.partition", 2_i64),
        KeyValue::new("messaging.kafka.message.offset", 41_i64),
        KeyValue::new("messaging.client_id", "producer-1"),
    ];
    publish_attributes.extend(extra.iter().cloned());
    let publish = producer
        .span_builder("orders publish")
        .with_kind(SpanKind::Producer)
        .with_attributes(publish_attributes)
        .start(&producer);
    let sent = publish.span_context().clone();
    drop(publish);

    let receive = consumer
        .span_builder("orders receive")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation", "receive"),
            KeyValue::new("messaging.destination.name", "orders"),
            KeyValue::new("messaging.kafka.consumer.group", "billing"),
            KeyValue::new("messaging.client_id", "consumer-1"),
        ])
        .start(&consumer);
    let cx = Context::new().with_span(receive);
    consumer
        .span_builder("orders process")
        .with_kind(SpanKind::Consumer)
        .with_links(vec![Link::with_context(sent)])
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation", "process"),
            KeyValue::new("messaging.destination.name", "orders"),
            KeyValue::new("messaging.kafka.destination.partition", 2_i64),
            KeyValue::new("messaging.kafka.message.offset", 41_i64),
            KeyValue::new("messaging.kafka.consumer.group", "billing"),
        ])
        .start_with_context(&consumer, &cx);
    drop(cx);
    capture.forest()
}

#[test]
fn java_agent_spans_conform_to_the_legacy_names() {
    let capture = SpanCapture::new();
    let forest = java_agent_trace(&capture, &[]);
    let report = forest.check_messaging_conventions(MessagingConventions::V1_24);
    assert_eq!(report.spans.len(), 3);
    assert!(report.is_conformant(), "{report}");
    forest.assert_messaging_conventions(MessagingConventions::V1_24);
}

#[test]
fn java_agent_spans_against_1_44_are_reported_per_span() {
    let capture = SpanCapture::new();
    let forest = java_agent_trace(&capture, &[]);
    let err = forest
        .try_assert_messaging_conventions(MessagingConventions::V1_44)
        .expect_err("the 1.24 names are not 1.44");
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn dup_mode_spans_are_flagged_for_their_old_names_and_span_name_only() {
    // "messaging/dup": old and new names side by side. 1.44 flags only the
    // deprecated names; 1.24 only what the new names break (the span name).
    let capture = SpanCapture::new();
    let forest = java_agent_trace(
        &capture,
        &[
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.destination.partition.id", "2"),
            KeyValue::new("messaging.kafka.offset", 41_i64),
        ],
    );
    let report = forest.check_messaging_conventions(MessagingConventions::V1_44);
    let publish = report
        .spans
        .iter()
        .find(|s| s.label.contains("orders publish"))
        .unwrap();
    assert!(
        publish.findings.contains(&Finding::Deprecated {
            attribute: "messaging.kafka.destination.partition",
            replacement: "messaging.destination.partition.id",
        }),
        "{report}"
    );
    assert!(
        publish.findings.contains(&Finding::WrongName {
            expected: "send orders".into(),
            actual: "orders publish".into(),
        }),
        "{report}"
    );
    assert!(
        !publish
            .findings
            .iter()
            .any(|f| matches!(f, Finding::MissingRequired { .. })),
        "{report}"
    );
}

#[test]
fn a_partition_id_of_the_wrong_type_is_named() {
    let capture = SpanCapture::new();
    let tracer = capture.tracer("svc");
    tracer
        .span_builder("send orders")
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.destination.name", "orders"),
            KeyValue::new("messaging.destination.partition.id", 3_i64),
        ])
        .start(&tracer);
    let report = capture
        .forest()
        .check_messaging_conventions(MessagingConventions::V1_44);
    assert_eq!(
        report.spans[0].findings,
        vec![Finding::WrongType {
            attribute: "messaging.destination.partition.id",
            expected: "string",
            actual: "int",
        }]
    );
}

#[test]
fn no_messaging_span_fails_the_assertion_saying_so() {
    let capture = SpanCapture::new();
    let tracer = capture.tracer("svc");
    tracer.span_builder("GET /").start(&tracer);
    let err = capture
        .forest()
        .try_assert_messaging_conventions(MessagingConventions::V1_44)
        .expect_err("nothing to judge");
    assert!(err.to_string().contains("found none"), "{err}");
}

#[tokio::test]
async fn the_harness_spans_follow_1_44_and_not_1_24() {
    let broker = Broker::builder().start().await.unwrap();
    let topic = broker.create_unique_topic("orders", 1).await.unwrap();
    let capture = SpanCapture::new();
    let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
        .await
        .unwrap();
    let mut consumer = TracedConsumer::builder("billing", &topic)
        .build(&broker, capture.tracer("billing"))
        .await
        .unwrap();
    let record = Record {
        key: Some(b"k".to_vec()),
        value: Some(b"v".to_vec()),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    };
    producer
        .send(&Context::new(), &topic, 0, record)
        .await
        .unwrap();
    for consumed in consumer.consume(1, Duration::from_secs(10)).await.unwrap() {
        consumed.finish();
    }

    let forest = capture.forest();
    forest.assert_messaging_conventions(MessagingConventions::V1_44);
    let legacy = forest.check_messaging_conventions(MessagingConventions::V1_24);
    assert_eq!(legacy.failing().count(), 2, "{legacy}");
    for span in legacy.failing() {
        assert!(
            span.findings.contains(&Finding::MissingRequired {
                attribute: "messaging.operation"
            }),
            "{legacy}"
        );
    }
}
