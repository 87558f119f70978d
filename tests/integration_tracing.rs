//! `tracing`-instrumented services through the embedded broker, and trace
//! context into and out of `tracing` spans. No test sets a global
//! subscriber: each service's future carries its own.

use std::sync::Arc;
use std::time::Duration;

use kafka_trace_harness::integrations::tracing::{extract_into_span, inject_span};
use kafka_trace_harness::propagation::{Headers, TRACEPARENT};
use kafka_trace_harness::traced::{CONTEXT_UNUSABLE_EVENT, attr};
use kafka_trace_harness::{
    Broker, Condition, ExpectedSpan, ExtractProblem, Injected, SpanCapture, TracedConsumer,
    TracedProducer,
};
use opentelemetry::Value;
use opentelemetry::context::FutureExt as _;
use rskafka::record::Record;
use tracing::Instrument as _;
use tracing::instrument::WithSubscriber as _;
use tracing_opentelemetry::{OpenTelemetrySpanExt as _, SetParentError};

const DEADLINE: Duration = Duration::from_secs(10);

/// The web service's entry point: spawns the order on another task.
#[tracing::instrument(skip_all)]
async fn checkout(
    producer: Arc<TracedProducer>,
    topic: String,
) -> kafka_trace_harness::Result<i64> {
    // A spawned task keeps the subscriber and the parent span only if told to.
    let order = async move { place_order(&producer, &topic, 7).await };
    tokio::spawn(order.in_current_span().with_current_subscriber())
        .await
        .expect("order task")
}

/// Sends through the harness: its span is the parent of the send span.
#[tracing::instrument(skip(producer, topic), err)]
async fn place_order(
    producer: &TracedProducer,
    topic: &str,
    order: u32,
) -> kafka_trace_harness::Result<i64> {
    let record = Record {
        key: Some(order.to_string().into_bytes()),
        value: Some(b"{}".to_vec()),
        headers: Headers::new(),
        timestamp: chrono::Utc::now(),
    };
    producer
        .send(&tracing::Span::current().context(), topic, 0, record)
        .await
}

/// The billing service: a harness consumer and an instrumented handler.
async fn billing(mut consumer: TracedConsumer) -> kafka_trace_harness::Result<()> {
    for record in consumer.consume(1, DEADLINE).await? {
        // The handler's span is created at its first poll; with the record's
        // context attached then, it is a child of the process span.
        let handler = handle_order(record.offset).with_context(record.context().clone());
        tokio::spawn(handler.with_current_subscriber())
            .await
            .expect("handler task");
        record.finish();
    }
    Ok(())
}

#[tracing::instrument]
async fn handle_order(offset: i64) {
    tokio::spawn(audit(offset).in_current_span().with_current_subscriber())
        .await
        .expect("audit task");
}

#[tracing::instrument]
async fn audit(offset: i64) {
    // A suspension point, so the span crosses polls (and maybe threads).
    tokio::task::yield_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instrumented_services_and_spawned_tasks_share_one_trace_through_the_broker() {
    let broker = Broker::builder().start().await.expect("embedded broker");
    let topic = broker
        .create_unique_topic("orders", 1)
        .await
        .expect("topic");
    let capture = SpanCapture::new();
    let producer = TracedProducer::connect(&broker, capture.tracer("web"))
        .await
        .expect("producer");
    let consumer = TracedConsumer::builder("billing", &topic)
        .build(&broker, capture.tracer("billing"))
        .await
        .expect("consumer");

    let web = tokio::spawn(
        checkout(Arc::new(producer), topic.clone())
            .with_subscriber(capture.tracing_subscriber("web")),
    );
    let billing =
        tokio::spawn(billing(consumer).with_subscriber(capture.tracing_subscriber("billing")));
    for (service, task) in [
        ("web", web.await.map(|r| r.map(drop))),
        ("billing", billing.await),
    ] {
        task.unwrap_or_else(|e| panic!("{service} task: {e}"))
            .unwrap_or_else(|e| panic!("{service}: {e}"));
    }

    let forest = capture
        .wait_for(Condition::span_count(6), DEADLINE)
        .await
        .expect("six spans");
    forest.assert_no_problems();
    assert!(
        forest.spans().all(|s| s.data().events.is_empty()),
        "the harness's own client events stay out of the services' spans"
    );
    forest.assert_trace(
        &ExpectedSpan::new("checkout").service("web").child(
            ExpectedSpan::new("place_order")
                .service("web")
                // `#[instrument]` records a u32 with its Debug form.
                .attr("order", "7")
                .error(false)
                .child(
                    ExpectedSpan::producer(format!("send {topic}"))
                        .service("web")
                        .child(
                            ExpectedSpan::consumer(format!("process {topic}"))
                                .service("billing")
                                .child(
                                    ExpectedSpan::new("handle_order")
                                        .service("billing")
                                        .attr("offset", 0i64)
                                        .child(ExpectedSpan::new("audit").service("billing")),
                                ),
                        ),
                ),
        ),
    );
    broker.shutdown().await.expect("shutdown");
}

#[test]
fn a_span_carries_its_context_through_rskafka_headers() {
    let capture = SpanCapture::new();
    let mut headers = Headers::new();
    tracing::subscriber::with_default(capture.tracing_subscriber("web"), || {
        let span = tracing::info_span!("publish");
        assert_eq!(inject_span(&span, &mut headers), Injected::Written);
    });
    tracing::subscriber::with_default(capture.tracing_subscriber("billing"), || {
        let span = tracing::info_span!("consume");
        let extracted = extract_into_span(&span, &headers).expect("parent set");
        assert!(extracted.is_usable());
        span.in_scope(|| tracing::info_span!("store").in_scope(|| {}));
    });
    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_trace(
        &ExpectedSpan::new("publish").service("web").child(
            ExpectedSpan::new("consume")
                .service("billing")
                .no_attr(attr::CONTEXT_PROBLEM)
                .child(ExpectedSpan::new("store")),
        ),
    );
}

#[test]
fn an_unusable_context_keeps_the_span_parent_and_says_why() {
    let capture = SpanCapture::new();
    let garbage: Headers = [(TRACEPARENT.to_owned(), b"00-garbage".to_vec())].into();
    let entered_too_early =
        tracing::subscriber::with_default(capture.tracing_subscriber("billing"), || {
            tracing::info_span!("poll loop").in_scope(|| {
                let span = tracing::info_span!("consume");
                let extracted = extract_into_span(&span, &garbage).expect("no parent to set");
                assert_eq!(
                    extracted.problem,
                    Some(ExtractProblem::Malformed {
                        value: "00-garbage".into()
                    })
                );
                span.in_scope(|| {});

                // A span already entered cannot take a parent: an error, no panic.
                let late = tracing::info_span!("late");
                late.in_scope(|| {});
                extract_into_span(
                    &late,
                    &Headers::from([(
                        TRACEPARENT.to_owned(),
                        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
                    )]),
                )
            })
        });
    assert!(matches!(
        entered_too_early,
        Err(SetParentError::AlreadyStarted)
    ));

    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_trace(&ExpectedSpan::new("poll loop").children([
        ExpectedSpan::new("consume").attr(attr::CONTEXT_PROBLEM, "malformed"),
        ExpectedSpan::new("late"),
    ]));
    let consume = forest.named("consume").next().expect("consume span");
    assert!(
        consume
            .data()
            .events
            .iter()
            .any(|e| e.name == CONTEXT_UNUSABLE_EVENT),
        "the span says why"
    );
    assert_eq!(
        consume.attribute(attr::CONTEXT_PROBLEM),
        Some(&Value::from("malformed"))
    );
}

#[cfg(feature = "rdkafka")]
#[test]
fn a_span_carries_its_context_through_rdkafka_headers() {
    use kafka_trace_harness::integrations::tracing::{
        extract_into_span_rdkafka, inject_span_rdkafka,
    };
    use rdkafka::message::OwnedHeaders;

    let capture = SpanCapture::new();
    let mut headers = OwnedHeaders::new();
    tracing::subscriber::with_default(capture.tracing_subscriber("web"), || {
        let span = tracing::info_span!("publish");
        assert_eq!(inject_span_rdkafka(&span, &mut headers), Injected::Written);
    });
    tracing::subscriber::with_default(capture.tracing_subscriber("billing"), || {
        let span = tracing::info_span!("consume");
        let extracted = extract_into_span_rdkafka(&span, &headers).expect("parent set");
        assert!(extracted.is_usable());
        span.in_scope(|| {});
    });
    capture.forest().assert_trace(
        &ExpectedSpan::new("publish")
            .service("web")
            .child(ExpectedSpan::new("consume").service("billing")),
    );
}
