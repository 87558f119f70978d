//! `TracedProducer` and `TracedConsumer` recording with the global
//! tracer (`opentelemetry::global::tracer`), captured per test through the
//! crate root's global-capture API.

use std::time::Duration;

use kafka_trace_harness::{
    Broker, ExpectedSpan, SpanCapture, TracedConsumer, TracedProducer, unrouted_spans,
};
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::trace::{TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use rskafka::record::Record;

const DEADLINE: Duration = Duration::from_secs(10);

fn record(n: usize) -> Record {
    Record {
        key: Some(format!("k{n}").into_bytes()),
        value: Some(b"{}".to_vec()),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn traced_clients_with_the_global_tracer_form_one_captured_tree() {
    kafka_trace_harness::install();
    let broker = Broker::builder().start().await.expect("embedded broker");
    let topic = broker
        .create_unique_topic("orders", 1)
        .await
        .expect("topic");
    let capture = SpanCapture::new();

    // The services only know the global API: their tracers are BoxedTracers.
    let shop: BoxedTracer = global::tracer("shop");
    let producer = TracedProducer::connect(&broker, global::tracer("shop"))
        .await
        .expect("producer");
    let mut consumer = TracedConsumer::builder("billing", &topic)
        .build(&broker, global::tracer("billing"))
        .await
        .expect("consumer");

    capture
        .scope(async {
            let order = shop
                .span_builder("place order")
                .with_attributes([KeyValue::new("order", 1)])
                .start(&shop);
            let cx = Context::new().with_span(order);
            producer
                .send(&cx, &topic, 0, record(1))
                .await
                .expect("sent");
            cx.span().end();
        })
        .await;
    // The consumer runs outside the scope: its spans follow their trace id.
    for consumed in consumer.consume(1, DEADLINE).await.expect("one record") {
        assert!(consumed.extracted.is_usable(), "{:?}", consumed.extracted);
        consumed.finish();
    }

    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_trace(
        &ExpectedSpan::new("place order").service("shop").child(
            ExpectedSpan::producer(format!("send {topic}"))
                .service("shop")
                .child(ExpectedSpan::consumer(format!("process {topic}")).service("billing")),
        ),
    );
    assert_eq!(forest.len(), 3, "exactly this test's spans");
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_global_send_outside_every_scope_is_counted_unrouted_not_captured() {
    kafka_trace_harness::install();
    let broker = Broker::builder().start().await.expect("embedded broker");
    let topic = broker
        .create_unique_topic("orders", 1)
        .await
        .expect("topic");
    let capture = SpanCapture::new();
    let producer = TracedProducer::connect(&broker, global::tracer("shop"))
        .await
        .expect("producer");

    let before = unrouted_spans();
    producer
        .send(&Context::new(), &topic, 0, record(2))
        .await
        .expect("sent");
    assert!(unrouted_spans() > before, "the root send span is unrouted");
    assert_eq!(capture.forest().len(), 0);
    broker.shutdown().await.expect("shutdown");
}
