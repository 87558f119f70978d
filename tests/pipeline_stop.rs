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

/// Records datagen sent before a stop still fail the stop when the broker
/// refuses them: a stop waits for each one and counts it, it does not only
/// flush and forget.
#[tokio::test]
async fn records_refused_after_a_stop_fail_the_stop() {
    use kafka_trace_harness::broker::{ApiKey, ErrorCode};
    use kafka_trace_harness::stockapp::pipeline::Services;

    let broker = Broker::start().await.unwrap();
    let capture = SpanCapture::new();
    let datagen_only = Services {
        datagen: true,
        processor: false,
        kstream: false,
        api: false,
    };
    // Trades linger in the producer's batches (after the users', which the
    // test waits for) until the stop flushes them.
    let mut pipeline = PipelineBuilder::new()
        .trades(100_000)
        .rate(500.0)
        .linger(Duration::from_secs(3))
        .services(datagen_only)
        .stop_deadline(Duration::from_secs(20))
        .start(&broker, &capture)
        .await
        .unwrap();
    pipeline
        .wait_for(
            "the users stored",
            |p| p.users_sent > 0,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    broker
        .request_errors(ApiKey::Produce, ErrorCode::TopicAuthorizationFailed, 10_000)
        .unwrap();
    let stopped = tokio::time::timeout(SAFETY_NET, pipeline.stop())
        .await
        .expect("stop() returned");
    let err = stopped.expect_err("the queued trades were refused");
    assert!(
        err.to_string().contains("TopicAuthorizationFailed"),
        "the refusal is named: {err}"
    );
    broker.clear_request_errors(ApiKey::Produce).unwrap();
    broker.shutdown().await.unwrap();
}
