//! Stopping a pipeline whose broker stopped answering ends within the
//! stop deadline, with an error naming each service still running and the
//! step it was on.
#![cfg(feature = "stockapp")]

use std::time::Duration;

use kafka_trace_harness::stockapp::metrics::MetricsCapture;
use kafka_trace_harness::stockapp::pipeline::PipelineBuilder;
use kafka_trace_harness::{Broker, SpanCapture};

/// The test's own safety net: far above the stop deadline, below the
/// broker's client deadline (so a stop that only ends when the services'
/// requests time out fails here).
const SAFETY_NET: Duration = Duration::from_secs(25);

#[tokio::test]
async fn stop_against_a_frozen_broker_fails_naming_each_service_and_its_step() {
    let broker = Broker::builder()
        .client_deadline(Duration::from_secs(40))
        .start()
        .await
        .unwrap();
    let capture = SpanCapture::new();
    let metrics = MetricsCapture::new();
    // More trades than the test waits for: datagen is still sending, and
    // the services have outputs in flight, when the broker freezes.
    let mut pipeline = PipelineBuilder::new()
        .trades(100_000)
        .metrics(metrics.metrics().clone())
        .stop_deadline(Duration::from_secs(1))
        .start(&broker, &capture)
        .await
        .unwrap();
    pipeline
        .wait_for(
            "200 trades processed",
            |p| p.trades_processed >= 200,
            Duration::from_secs(20),
        )
        .await
        .unwrap();

    broker.stall(Duration::from_secs(3600)).unwrap();
    let stopped = tokio::time::timeout(SAFETY_NET, pipeline.stop())
        .await
        .expect("stop() against a frozen broker returned");
    let err = stopped.expect_err("the services could not finish");
    let text = err.to_string();
    assert!(text.contains("did not stop within 1s"), "{text}");
    assert!(
        text.contains("datagen (waiting for the broker to store its queued records)"),
        "datagen and its step are named: {text}"
    );

    broker.stall(Duration::ZERO).unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn stop_with_an_answering_broker_returns_the_counters() {
    let broker = Broker::builder().start().await.unwrap();
    let capture = SpanCapture::new();
    let mut pipeline = PipelineBuilder::new()
        .trades(20)
        .stop_deadline(Duration::from_secs(30))
        .start(&broker, &capture)
        .await
        .unwrap();
    pipeline
        .wait_until_complete(Duration::from_secs(30))
        .await
        .unwrap();
    let progress = tokio::time::timeout(SAFETY_NET, pipeline.stop())
        .await
        .expect("stop() returned")
        .unwrap();
    assert_eq!(progress.trades_processed, 20);
    broker.shutdown().await.unwrap();
}
