//! Users' own async code awaits the harness's futures: those must stay
//! shallow enough for the default recursion limit (128), against which
//! rustc and clippy count the nesting of every awaited future's layout.
//! This file builds, and passes clippy, at 80, with every feature or the
//! default ones. (Below that, with the container feature, proving
//! `Broker: Sync` through testcontainers' and hyper's types alone takes
//! more.)
#![recursion_limit = "80"]

use std::time::Duration;

use kafka_trace_harness::{
    BatchingTracedProducer, Broker, SpanCapture, TracedConsumer, TracedProducer,
};
use opentelemetry::Context;
use rskafka::record::Record;

fn record(n: usize) -> Record {
    Record {
        key: None,
        value: Some(format!("v{n}").into_bytes()),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    }
}

/// What a user's test does: a broker, a producer, a consumer, a round trip.
async fn round_trip() -> kafka_trace_harness::Result<usize> {
    let broker = Broker::start().await?;
    let topic = broker.create_unique_topic("depth", 1).await?;
    let capture = SpanCapture::new();
    let producer = TracedProducer::connect(&broker, capture.tracer("producer")).await?;
    producer.send(&Context::new(), &topic, 0, record(0)).await?;
    let batching = BatchingTracedProducer::builder()
        .build(&broker, capture.tracer("batching"))
        .await?;
    batching.send(&Context::new(), &topic, 0, record(1)).await?;
    let mut consumer = TracedConsumer::builder("depth", &topic)
        .max_wait(Duration::from_millis(50))
        .build(&broker, capture.tracer("consumer"))
        .await?;
    let mut read = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read < 2 && std::time::Instant::now() < deadline {
        for consumed in consumer.poll().await? {
            consumed.finish();
            read += 1;
        }
    }
    broker.shutdown().await?;
    Ok(read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_round_trip_fits_a_small_recursion_limit() {
    assert_eq!(round_trip().await.expect("round trip"), 2);
}

/// The whole stockapp, started, completed and stopped from a user's own
/// async function.
#[cfg(feature = "stockapp")]
async fn pipeline_run() -> Result<usize, Box<dyn std::error::Error>> {
    use kafka_trace_harness::stockapp::pipeline::PipelineBuilder;

    let broker = Broker::start().await?;
    let capture = SpanCapture::new();
    let mut pipeline = PipelineBuilder::new()
        .trades(20)
        .start(&broker, &capture)
        .await?;
    pipeline
        .wait_until_complete(Duration::from_secs(60))
        .await?;
    let progress = pipeline.stop().await?;
    broker.shutdown().await?;
    Ok(progress.trades_sent)
}

#[cfg(feature = "stockapp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_pipeline_run_fits_a_small_recursion_limit() {
    let sent = pipeline_run().await.map_err(|e| e.to_string());
    assert_eq!(sent, Ok(20));
}
