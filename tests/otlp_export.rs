//! The live OTLP export as a library: each service under its own resource,
//! a full queue drops and counts rather than waiting, and shutdown keeps
//! its deadline against a collector that never answers.

use std::sync::Arc;
use std::time::Duration;

use kafka_trace_harness::integrations::otlp_export::{OtlpExport, Protocol, SpanCounts};
use kafka_trace_harness::{Condition, SpanCapture};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::Tracer as _;

/// Deadline of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_the_collector_under_their_services_resources() {
    let received = SpanCapture::new();
    let receiver = received.otlp_receiver().await.unwrap();
    let export = Arc::new(
        OtlpExport::builder()
            .endpoint(receiver.grpc_endpoint())
            .protocol(Protocol::Grpc)
            .start()
            .unwrap(),
    );
    let capture = SpanCapture::builder().stream(export.clone()).build();

    capture.tracer("datagen").in_span("send trades", |_| {});
    capture
        .tracer("api-1")
        .in_span("process dollarsbyzip", |_| {});
    export
        .meter_provider("api-1")
        .meter("test")
        .u64_counter("rows")
        .build()
        .add(3, &[]);
    let report = export.shutdown().await;

    assert_eq!(
        report.spans,
        SpanCounts {
            recorded: 2,
            exported: 2,
            ..SpanCounts::default()
        },
        "{report}"
    );
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.points.exported, 1, "{report}");
    let forest = received
        .wait_for(Condition::span_count(2), DEADLINE)
        .await
        .unwrap();
    assert_eq!(forest.of_service("datagen").count(), 1);
    assert_eq!(forest.of_service("api-1").count(), 1);
    assert_eq!(receiver.metric_points()["api-1"]["rows"], 1);
    receiver.shutdown().await.unwrap();
}

/// A collector that accepts connections and never answers (the
/// exporter's own timeout is 10 s): its URL, and the task holding them.
async fn silent_collector() -> (String, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    (url, held)
}

/// With a silent collector the export holds at most 4 requests of one
/// span in flight and one span in its queue: every other span must be
/// dropped and counted at once, never waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let (url, held) = silent_collector().await;
    let export = Arc::new(
        OtlpExport::builder()
            .endpoint(url)
            .protocol(Protocol::HttpProtobuf)
            .queue_capacity(1)
            .batch_size(1)
            .shutdown_deadline(Duration::from_millis(200))
            .start()
            .unwrap(),
    );
    let capture = SpanCapture::builder().stream(export.clone()).build();
    let tracer = capture.tracer("datagen");

    for _ in 0..999 {
        tracer.in_span("send trades", |_| {});
    }
    // A span another stream keeps, offered by reference.
    let kept = SpanCapture::new();
    kept.tracer("api-1").in_span("process", |_| {});
    export.offer(&Arc::from("api-1"), &kept.spans()[0].data);
    let report = export.shutdown().await;

    let spans = report.spans;
    assert_eq!(spans.recorded, 1_000, "{report}");
    assert_eq!((spans.exported, spans.failed), (0, 0), "{report}");
    assert!(spans.dropped >= 995, "{report}");
    assert_eq!(spans.dropped + spans.unsent, 1_000, "{report}");
    assert!(!report.is_complete());
    let problem = report.problem().unwrap();
    assert!(
        problem.contains("1000 of 1000 spans not exported"),
        "{problem}"
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_its_deadline_against_a_collector_that_never_answers() {
    let (url, held) = silent_collector().await;
    let deadline = Duration::from_millis(300);
    let export = Arc::new(
        OtlpExport::builder()
            .endpoint(url)
            .protocol(Protocol::HttpProtobuf)
            .shutdown_deadline(deadline)
            .start()
            .unwrap(),
    );
    let capture = SpanCapture::builder().stream(export.clone()).build();

    capture.tracer("datagen").in_span("send trades", |_| {});
    let report = export.shutdown().await;

    assert_eq!(
        report.spans,
        SpanCounts {
            recorded: 1,
            unsent: 1,
            ..SpanCounts::default()
        },
        "{report}"
    );
    // Well under the exporter's 10 s timeout: the deadline cut it.
    assert!(report.took < Duration::from_secs(5), "{:?}", report.took);
    // Spans after shutdown are dropped, and counted.
    capture.tracer("datagen").in_span("late", |_| {});
    assert_eq!(export.span_counts().dropped, 1);
    held.abort();
}
