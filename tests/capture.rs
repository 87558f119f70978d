//! Span capture: services, isolation, waiting.

use std::time::Duration;

use kafka_trace_harness::{Condition, Error, SpanCapture};
use opentelemetry::trace::{Span as _, Tracer};

#[test]
fn each_service_has_its_own_provider_and_one_exporter_sees_all() {
    let capture = SpanCapture::new();
    capture.tracer("datagen").in_span("a", |_| {});
    capture.tracer("api").in_span("b", |_| {});
    let mut got: Vec<(String, String)> = capture
        .spans()
        .into_iter()
        .map(|s| (s.service, s.data.name.to_string()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("api".into(), "b".into()), ("datagen".into(), "a".into())]
    );
}

#[test]
fn spans_survive_provider_shutdown_and_drop() {
    let capture = SpanCapture::new();
    capture.tracer("svc").start("ended by drop");
    capture.shutdown().expect("shutdown");
    assert_eq!(capture.spans().len(), 1);
    drop(capture.provider("svc"));
    assert_eq!(capture.spans().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_parallel_captures_never_see_each_other() {
    let tasks = (0..32).map(|n| {
        tokio::spawn(async move {
            let capture = SpanCapture::new();
            let tracer = capture.tracer(&format!("svc-{n}"));
            for i in 0..20 {
                let mut span = tracer.start(format!("span-{n}-{i}"));
                tokio::task::yield_now().await;
                span.end();
            }
            let forest = capture
                .wait_for(Condition::span_count(20), Duration::from_secs(10))
                .await
                .expect("own spans");
            assert_eq!(forest.len(), 20);
            assert!(forest.spans().all(|s| s.service() == format!("svc-{n}")
                && s.name().starts_with(&format!("span-{n}-"))));
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.expect("no capture saw another's spans");
    }
}

#[tokio::test]
async fn waiting_for_spans_that_never_come_fails_with_what_was_seen() {
    let capture = SpanCapture::new();
    capture.tracer("svc").in_span("the only span", |_| {});
    let err = capture
        .wait_for(
            Condition::spans_named("missing", 1),
            Duration::from_millis(50),
        )
        .await
        .expect_err("never holds");
    assert!(matches!(err, Error::Wait { .. }));
    let text = err.to_string();
    assert!(
        text.contains("at least 1 spans named \"missing\""),
        "{text}"
    );
    assert!(text.contains("the only span"), "{text}");
}

#[tokio::test]
async fn waiting_returns_as_soon_as_the_condition_holds() {
    let capture = std::sync::Arc::new(SpanCapture::new());
    let producer = std::sync::Arc::clone(&capture);
    tokio::spawn(async move {
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        producer.tracer("svc").in_span("late", |_| {});
    });
    let forest = capture
        .wait_for(Condition::spans_named("late", 1), Duration::from_secs(10))
        .await
        .expect("arrives");
    assert_eq!(forest.len(), 1);
}
