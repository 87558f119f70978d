//! The processor's de-duplication skips a record stored twice by a retried
//! send, and only that: different trades that share a send span (an
//! upstream that forwards one context into several records) all count.

#[path = "support/hand_trades.rs"]
mod hand_trades;

use std::time::Duration;

use hand_trades::{CLOCK, produce_trades, trade};

use kafka_trace_harness::propagation::{self, ExistingTraceparent};
use kafka_trace_harness::stockapp::pipeline::{DUPLICATE_ATTRIBUTE, PipelineBuilder};
use kafka_trace_harness::stockapp::{SchemaRegistry, TRADES_TOPIC};
use kafka_trace_harness::{Broker, SpanCapture};
use opentelemetry::Context;
use opentelemetry::trace::{TraceContextExt, Tracer};
use rskafka::record::Record;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_record_stored_twice_is_a_duplicate_not_another_trade_of_its_send_span() {
    let registry = SchemaRegistry::new();
    let settings = PipelineBuilder::new()
        .seed(11)
        .trades(10)
        .users(9)
        .clock(CLOCK)
        .registry(registry.clone());
    let broker = Broker::builder().start().await.expect("broker");
    let capture = SpanCapture::new();
    let mut pipeline = settings.start(&broker, &capture).await.expect("pipeline");

    // One upstream span whose context goes into three records: two
    // different trades, and the first one again byte for byte (as a retried
    // send stores it).
    let upstream = capture.tracer("upstream").start("forward batch");
    let cx = Context::new().with_span(upstream);
    let timestamp = chrono::DateTime::from_timestamp_millis(CLOCK.start_ms).expect("timestamp");
    let record = |quantity| {
        let mut headers = Default::default();
        propagation::inject_with(&cx, &mut headers, ExistingTraceparent::Keep);
        Record {
            key: Some(b"ZVZZT".to_vec()),
            value: Some(
                registry
                    .encode_value(TRADES_TOPIC, &trade(quantity))
                    .expect("avro"),
            ),
            headers,
            timestamp,
        }
    };
    let first = record(1);
    let records = vec![first.clone(), record(2), first];
    produce_trades(&broker, records).await;
    cx.span().end();

    pipeline
        .wait_for(
            "10 generated trades and 3 forwarded ones processed",
            |p| p.datagen_done && p.trades_processed == 13,
            DEADLINE,
        )
        .await
        .expect("processed");
    let progress = pipeline.progress();
    pipeline.stop().await.expect("stop");

    assert_eq!(progress.duplicates, 1, "{progress:?}");
    let forest = capture.forest();
    let forwarded: Vec<_> = forest
        .named(&format!("process {TRADES_TOPIC}"))
        .filter(|s| s.service() == "stock-processor")
        .filter(|s| s.parent().is_some_and(|p| p.name() == "forward batch"))
        .collect();
    assert_eq!(forwarded.len(), 3);
    let duplicates = forwarded
        .iter()
        .filter(|s| s.attribute(DUPLICATE_ATTRIBUTE).is_some())
        .count();
    assert_eq!(
        duplicates, 1,
        "the second trade of the span is no duplicate"
    );
    broker.shutdown().await.expect("shutdown");
}
