//! A trade later than the grace period is dropped, as ksqlDB drops it, and
//! the run says so: counted in the pipeline's progress and the summary
//! (`run` prints it, the HTML report shows it), and its span names the row
//! that lacks it.

#[path = "support/hand_trades.rs"]
mod hand_trades;

use std::time::Duration;

use hand_trades::{CLOCK, produce_trades, trade};

use kafka_trace_harness::stockapp::pipeline::{
    FILTERED_OUT_ATTRIBUTE, LATE_ZIPCODE_ATTRIBUTE, PipelineBuilder,
};
use kafka_trace_harness::stockapp::summary::{TraceSummary, render_summary};
use kafka_trace_harness::stockapp::{SchemaRegistry, StockTrade, TRADES_TOPIC};
use kafka_trace_harness::{Broker, SpanCapture};
use rskafka::record::Record;

const DEADLINE: Duration = Duration::from_secs(60);
/// Two days before the first generated trade: past ksqlDB's 24 h grace.
const TWO_DAYS_MS: i64 = 2 * 24 * 3600 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_later_than_the_grace_is_counted_and_named() {
    let registry = SchemaRegistry::new();
    let settings = PipelineBuilder::new()
        .seed(5)
        .trades(10)
        .users(9)
        .clock(CLOCK)
        .registry(registry.clone());
    // A user the generator sends, with a zip code: the trade is kept by
    // every step of the query but the window's.
    let user = settings
        .datagen()
        .users()
        .find(|u| u.contactinfo.contains_key("zipcode"))
        .expect("a user with a zip code");
    let broker = Broker::builder().start().await.expect("broker");
    let capture = SpanCapture::new();
    let mut pipeline = settings.start(&broker, &capture).await.expect("pipeline");
    pipeline
        .wait_for(
            "the 10 generated trades processed",
            |p| p.datagen_done && p.trades_processed == 10,
            DEADLINE,
        )
        .await
        .expect("processed");
    let before = pipeline.progress();

    // A trade in a symbol the query keeps, two days before the stream
    // time the generated trades set.
    let late = StockTrade {
        userid: user.userid,
        ..trade(3)
    };
    let timestamp =
        chrono::DateTime::from_timestamp_millis(CLOCK.start_ms - TWO_DAYS_MS).expect("timestamp");
    let record = Record {
        key: Some(b"ZVZZT".to_vec()),
        value: Some(registry.encode_value(TRADES_TOPIC, &late).expect("avro")),
        headers: Default::default(),
        timestamp,
    };
    produce_trades(&broker, vec![record]).await;
    pipeline
        .wait_for(
            "the late trade processed",
            |p| p.trades_processed == 11,
            DEADLINE,
        )
        .await
        .expect("processed");
    let progress = pipeline.progress();
    pipeline.stop().await.expect("stop");

    assert_eq!(progress.trades_late, before.trades_late + 1, "{progress:?}");
    assert_eq!(
        progress.trades_filtered_out,
        before.trades_filtered_out + 1,
        "{progress:?}"
    );
    let forest = capture.forest();
    let late_spans: Vec<_> = forest
        .spans()
        .filter(|s| {
            s.attribute(FILTERED_OUT_ATTRIBUTE)
                .is_some_and(|v| v.as_str() == "window_closed")
        })
        .collect();
    assert_eq!(
        late_spans.len(),
        progress.trades_late,
        "one span per late trade"
    );
    assert!(
        late_spans
            .iter()
            .all(|s| s.attribute(LATE_ZIPCODE_ATTRIBUTE).is_some()),
        "a late trade's span names its row"
    );
    let text = render_summary(&progress, &TraceSummary::of(&forest));
    let expected = format!(
        "filtered out {} trades, {} of them late (window closed)",
        progress.trades_filtered_out, progress.trades_late
    );
    assert!(text.contains(&expected), "{text}");
    broker.shutdown().await.expect("shutdown");
}
