//! The whole stockapp on the embedded broker: traces, totals, poison records.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_trace_harness::stockapp::pipeline::{
    FILTERED_OUT_ATTRIBUTE, PipelineBuilder, PipelineProgress, RunningPipeline, TradeClock,
};
use kafka_trace_harness::stockapp::summary::showcase_traces;
use kafka_trace_harness::stockapp::{DLQ_TOPIC, StockTrade, TRADES_TOPIC, User};
use kafka_trace_harness::{Broker, ExpectedSpan, SpanCapture};
use opentelemetry::trace::SpanKind;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;

/// 2023-11-14T22:10:00Z, on a window boundary: windows are predictable.
const CLOCK: TradeClock = TradeClock {
    start_ms: 1_700_000_000_000 - 1_700_000_000_000 % 300_000,
    spacing_ms: 7_000,
};
const DEADLINE: Duration = Duration::from_secs(60);

#[path = "support/totals.rs"]
mod support_totals;
use support_totals::{RowKey, expected_rows, totals, users_by_id};

fn api(index: usize) -> ExpectedSpan {
    ExpectedSpan::consumer("process stockapp.dollarsbyzip").service(format!("api-{index}"))
}

fn trade_send() -> ExpectedSpan {
    ExpectedSpan::producer("send stockapp.trades").service("datagen")
}

fn trade_process() -> ExpectedSpan {
    ExpectedSpan::consumer("process stockapp.trades").service("stock-processor")
}

/// The Kafka Streams branch every trade has.
fn json_branch() -> ExpectedSpan {
    ExpectedSpan::consumer("process stockapp.trades")
        .service("kstream-service")
        .child(ExpectedSpan::producer("send stockapp.trades-json").service("kstream-service"))
}

/// (zip code, window start) → total in cents, on [`CLOCK`].
fn expected_totals(trades: &[StockTrade], users: &HashMap<String, User>) -> BTreeMap<RowKey, i128> {
    totals(expected_rows(trades, users, CLOCK))
}

/// Partition 0 of `topic`, for writing or reading records by hand.
async fn partition_zero(broker: &Broker, topic: &str) -> PartitionClient {
    broker
        .client()
        .await
        .expect("client")
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition")
}

/// A broker and a span capture of the test's own, and the pipeline on them.
async fn start(settings: PipelineBuilder) -> (Broker, SpanCapture, RunningPipeline) {
    let broker = Broker::builder().start().await.expect("broker");
    let capture = SpanCapture::new();
    let pipeline = settings.start(&broker, &capture).await.expect("pipeline");
    (broker, capture, pipeline)
}

async fn run_to_completion(settings: PipelineBuilder) -> (Broker, SpanCapture, RunningPipeline) {
    let (broker, capture, mut pipeline) = start(settings).await;
    pipeline
        .wait_until_complete(DEADLINE)
        .await
        .expect("complete");
    (broker, capture, pipeline)
}

/// The streaming check `run` uses over a long run agrees with the
/// in-memory forest: every trade's trace complete, none kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streaming_trace_check_finds_every_trade_trace_complete() {
    use kafka_trace_harness::stockapp::trace_check::TraceCheck;
    use std::sync::Arc;

    let trades = 400;
    let check = Arc::new(TraceCheck::new(2).sample(2));
    let capture = SpanCapture::builder().stream(check.clone()).build();
    let broker = Broker::builder().start().await.expect("broker");
    let mut pipeline = PipelineBuilder::new()
        .seed(11)
        .trades(trades)
        .start(&broker, &capture)
        .await
        .expect("start");
    let progress = pipeline
        .wait_until_complete(DEADLINE)
        .await
        .expect("complete");
    pipeline.stop().await.expect("stop");

    let report = check.finish();
    assert_eq!(report.summary.trade_traces, trades, "{report:?}");
    assert_eq!(
        report.summary.complete, trades,
        "{:?}",
        report.broken_examples
    );
    assert_eq!(report.summary.reached_api, progress.rows_sent);
    assert_eq!(report.other_traces, 9, "one per user profile");
    assert_eq!(report.other_broken, 0);
    // The user profiles' traces come first; the sample is of trades.
    let sampled = report.sample.traces();
    assert_eq!(sampled.len(), 2, "{sampled:?}");
    for trace in &sampled {
        let roots = trace.roots();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].name(), "send stockapp.trades");
    }
    assert_eq!(showcase_traces(&report.sample, 2).len(), 2);
    assert!(capture.spans().is_empty());
    broker.shutdown().await.expect("no record deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trade_leaves_the_reference_trace_and_the_api_serves_exact_totals() {
    let settings = PipelineBuilder::new()
        .seed(7)
        .trades(60)
        .users(6)
        .clock(CLOCK);
    let datagen = settings.datagen();
    let trades: Vec<StockTrade> = datagen.trades().collect();
    let users = users_by_id(datagen.users());
    let (_broker, capture, pipeline) = run_to_completion(settings).await;
    let states = pipeline.api_states().to_vec();
    pipeline.stop().await.expect("stop");

    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_every_parent(SpanKind::Consumer, SpanKind::Producer);

    let kept = |t: &&StockTrade| t.symbol.ends_with('T');
    let joined = |t: &&StockTrade| users.get(&t.userid).is_some_and(|u| u.zipcode().is_some());
    let kept_joined = trades.iter().filter(kept).filter(joined).count();
    let kept_unjoined = trades.iter().filter(kept).filter(|t| !joined(t)).count();
    let filtered = trades.iter().filter(|t| !kept(t)).count();
    assert!(
        kept_joined > 0 && filtered > 0,
        "the seed exercises both paths"
    );

    // The reference tree, exactly, for every kept trade with a known user:
    // a ksqlDB branch and a Kafka Streams branch.
    let reference = trade_send().children([
        trade_process().link_to("send stockapp.users").child(
            ExpectedSpan::producer("send stockapp.dollarsbyzip")
                .service("stock-processor")
                .children([api(1), api(2)]),
        ),
        json_branch(),
    ]);
    forest.assert_traces(kept_joined, &reference);
    // What `run` prints: full trees first, a filtered trade's last.
    let shown = showcase_traces(&forest, 3);
    assert_eq!(shown.len(), 3);
    assert_eq!(
        shown[0].len(),
        7,
        "the reference tree with two API consumers"
    );
    assert_eq!(shown[2].len(), 4, "a trade that ends at its process span");
    let one = showcase_traces(&forest, 1);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].len(), 7, "one trace shown: a whole reference tree");
    // Kept, but no profile to join: the ksqlDB branch ends at `process`.
    forest.assert_traces(
        kept_unjoined,
        &trade_send().children([
            trade_process().attr(FILTERED_OUT_ATTRIBUTE, "unknown_user"),
            json_branch(),
        ]),
    );
    // Filtered out: the ksqlDB branch ends at `process`, which says why;
    // the JSON hop is traced all the same.
    forest.assert_traces(
        filtered,
        &trade_send().children([
            trade_process().attr(FILTERED_OUT_ATTRIBUTE, "symbol_not_ending_in_t"),
            json_branch(),
        ]),
    );

    // Every API consumer serves the totals computed independently here.
    let expected = expected_totals(&trades, &users);
    for state in states {
        assert_eq!(state.totals_in_cents(), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_rows_link_to_the_earlier_trades_of_the_same_row() {
    let settings = PipelineBuilder::new()
        .seed(11)
        .trades(40)
        .users(9)
        .clock(CLOCK);
    let (_broker, capture, pipeline) = run_to_completion(settings).await;
    pipeline.stop().await.expect("stop");

    let forest = capture.forest();
    forest.assert_no_problems();
    let mut linked = 0;
    for send in forest.named("send stockapp.dollarsbyzip") {
        for (_, target) in send.links() {
            let target = target.expect("every link resolves to a captured span");
            assert_eq!(target.name(), "send stockapp.trades");
            assert_ne!(target.trace_id(), send.trace_id(), "links cross traces");
            linked += 1;
        }
    }
    assert!(linked > 0, "some window rows have earlier contributors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_get_error_spans_and_dead_letter_copies_and_good_ones_still_arrive() {
    let settings = PipelineBuilder::new()
        .seed(3)
        .trades(30)
        .users(9)
        .clock(CLOCK);
    let datagen = settings.datagen();
    let (broker, capture, mut pipeline) = start(settings).await;

    let poison: [(&str, Vec<u8>); 4] = [
        ("wrong_magic_byte", vec![7, 0, 0, 0, 1, 2, 3]),
        ("unknown_schema_id", vec![0, 0, 0, 0x30, 0x39, 2, 3]),
        ("too_short", vec![0, 1]),
        ("invalid_avro", vec![0, 0, 0, 0, 1, 0xff, 0xff, 0xff]),
    ];
    let trades = partition_zero(&broker, TRADES_TOPIC).await;
    for (_, value) in &poison {
        let record = Record {
            key: Some(b"poison".to_vec()),
            value: Some(value.clone()),
            headers: [("x-origin".to_owned(), b"test".to_vec())].into(),
            timestamp: chrono::Utc::now(),
        };
        trades
            .produce(vec![record], Compression::NoCompression)
            .await
            .unwrap();
    }

    // Done when the 30 good trades and the 4 bad ones are all through.
    let good_and_bad =
        |p: &PipelineProgress| p.datagen_done && p.trades_processed == 34 && p.dead_lettered == 4;
    pipeline
        .wait_for("30 good and 4 bad trades", good_and_bad, DEADLINE)
        .await
        .expect("processed");
    pipeline
        .wait_until_complete(DEADLINE)
        .await
        .expect("complete");
    let states = pipeline.api_states().to_vec();
    pipeline.stop().await.expect("stop");

    // Error spans with the reason.
    let forest = capture.forest();
    for (error_type, _) in &poison {
        let failed: Vec<_> = forest
            .named("process stockapp.trades")
            .filter(|s| {
                s.attribute("error.type").map(|v| v.to_string()) == Some((*error_type).to_owned())
            })
            .collect();
        // One per branch: ksqlDB dead-letters it, Kafka Streams writes nothing.
        assert_eq!(failed.len(), 2, "two {error_type} spans");
        let kstream: Vec<_> = failed
            .iter()
            .filter(|s| s.service() == "kstream-service")
            .collect();
        assert_eq!(kstream.len(), 1, "one {error_type} span in kstream-service");
        assert_eq!(kstream[0].children().count(), 0);
        let failed: Vec<_> = failed
            .into_iter()
            .filter(|s| s.service() == "stock-processor")
            .collect();
        assert_eq!(failed.len(), 1, "one {error_type} span in stock-processor");
        assert!(matches!(
            failed[0].status(),
            opentelemetry::trace::Status::Error { .. }
        ));
        let dlq: Vec<_> = failed[0].children().collect();
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].name(), format!("send {DLQ_TOPIC}"));
    }

    // The dead-letter topic holds the four records, bytes and headers intact.
    let dlq = partition_zero(&broker, DLQ_TOPIC).await;
    let mut copies = Vec::new();
    while copies.len() < poison.len() {
        // The mock cluster returns one batch per fetch: read on from the last.
        let next = copies
            .last()
            .map_or(0, |r: &rskafka::record::RecordAndOffset| r.offset + 1);
        let (batch, _) = dlq.fetch_records(next, 1..1_000_000, 1_000).await.unwrap();
        assert!(
            !batch.is_empty(),
            "only {} copies in the dead-letter topic",
            copies.len()
        );
        copies.extend(batch);
    }
    let mut values: Vec<Vec<u8>> = copies
        .iter()
        .map(|r| r.record.value.clone().unwrap())
        .collect();
    let mut sent: Vec<Vec<u8>> = poison.iter().map(|(_, v)| v.clone()).collect();
    values.sort();
    sent.sort();
    assert_eq!(values, sent);
    assert!(
        copies
            .iter()
            .all(|r| r.record.headers.get("x-origin") == Some(&b"test".to_vec()))
    );

    // Every good record still arrived.
    let trades: Vec<StockTrade> = datagen.trades().collect();
    let users = users_by_id(datagen.users());
    let expected = expected_totals(&trades, &users);
    assert_eq!(states[0].totals_in_cents(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_stage_and_measure_latency_and_lag() {
    use kafka_trace_harness::stockapp::metrics::{
        CONSUMER_GROUP, CONSUMER_LAG, END_TO_END_LATENCY, MetricsCapture, PROCESSING_DURATION,
        RECORDS_IN, RECORDS_OUT, SERVICE, TOPIC,
    };
    let metrics = MetricsCapture::new();
    let settings = PipelineBuilder::new()
        .seed(5)
        .trades(40)
        .users(9)
        .clock(CLOCK)
        .metrics(metrics.metrics().clone());
    let (_broker, _capture, pipeline) = run_to_completion(settings).await;
    let progress = pipeline.stop().await.expect("stop");

    let snapshot = metrics.collect().expect("metrics");
    let sum =
        |name: &str, filter: &[(&str, &str)]| snapshot.sum(name, filter).unwrap_or(0.0) as usize;
    assert_eq!(
        sum(
            RECORDS_OUT,
            &[(SERVICE, "datagen"), (TOPIC, "stockapp.trades")]
        ),
        40
    );
    assert_eq!(
        sum(
            RECORDS_IN,
            &[(SERVICE, "stock-processor"), (TOPIC, "stockapp.trades")]
        ),
        40
    );
    assert_eq!(
        sum(
            RECORDS_OUT,
            &[
                (SERVICE, "stock-processor"),
                (TOPIC, "stockapp.dollarsbyzip")
            ]
        ),
        progress.rows_sent
    );
    for api in ["api-1", "api-2"] {
        assert_eq!(sum(RECORDS_IN, &[(SERVICE, api)]), progress.rows_sent);
        let e2e = snapshot
            .histogram(END_TO_END_LATENCY, &[(SERVICE, api)])
            .expect("e2e");
        assert_eq!(e2e.count as usize, progress.rows_sent);
        // Caught up at the end: no lag left.
        assert_eq!(
            snapshot.sum(CONSUMER_LAG, &[(CONSUMER_GROUP, api)]),
            Some(0.0)
        );
    }
    let processing = snapshot
        .histogram(PROCESSING_DURATION, &[(SERVICE, "stock-processor")])
        .expect("processing latency");
    assert_eq!(processing.count, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_trade_leaves_the_same_trace_every_run() {
    let settings = |seed| {
        PipelineBuilder::new()
            .seed(seed)
            .trades(12)
            .users(9)
            .clock(CLOCK)
    };
    // The first trade that goes all the way to the API and is alone in its
    // zip code's window: trades on other partitions may be processed before
    // it, and one of the same zip would link its row to theirs. The first
    // seed from 7 on that has one (the same seed every run).
    let lone_joined_trade = |seed| {
        let datagen = settings(seed).datagen();
        let users = users_by_id(datagen.users());
        let trades: Vec<StockTrade> = datagen.trades().collect();
        let zip = |t: &StockTrade| {
            users
                .get(&t.userid)
                .and_then(|u| u.zipcode())
                .filter(|_| t.symbol.ends_with('T'))
                .map(str::to_owned)
        };
        (0..trades.len()).find(|&i| {
            zip(&trades[i]).is_some()
                && trades
                    .iter()
                    .enumerate()
                    .all(|(j, other)| j == i || zip(other) != zip(&trades[i]))
        })
    };
    let (seed, index) = (7..)
        .find_map(|seed| lone_joined_trade(seed).map(|index| (seed, index)))
        .expect("some seed has a joined trade alone in its window");
    let settings = settings(seed);
    let (_broker, capture, pipeline) = run_to_completion(settings).await;
    pipeline.stop().await.expect("stop");

    let forest = capture.forest();
    // Trades are sent one after the other: their roots in start order.
    let mut roots: Vec<_> = forest.named("send stockapp.trades").collect();
    roots.sort_by_key(|s| s.data().start_time);
    let trace = forest.trace(roots[index].trace_id()).expect("trace");
    insta::assert_snapshot!(kafka_trace_harness::Render::new().trace(&trace));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(feature = "container")]
#[ignore = "needs Docker and the local image (scripts/build-image.sh); .ci/run runs it"]
async fn the_pipeline_runs_on_the_container_broker_too() {
    use kafka_trace_harness::{Backend, ContainerImage};
    let broker = Broker::builder()
        .backend(Backend::Container(ContainerImage::local_harness()))
        .timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("container broker");
    let capture = SpanCapture::new();
    let settings = PipelineBuilder::new()
        .seed(7)
        .trades(30)
        .users(9)
        .clock(CLOCK);
    let datagen = settings.datagen();
    let mut pipeline = settings.start(&broker, &capture).await.expect("pipeline");
    pipeline
        .wait_until_complete(DEADLINE)
        .await
        .expect("complete");
    let states = pipeline.api_states().to_vec();
    pipeline.stop().await.expect("stop");

    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_every_parent(SpanKind::Consumer, SpanKind::Producer);
    let trades: Vec<StockTrade> = datagen.trades().collect();
    let expected = expected_totals(&trades, &users_by_id(datagen.users()));
    assert_eq!(states[0].totals_in_cents(), expected);
    broker.shutdown().await.expect("container removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_json_row_fails_its_api_spans_and_is_dead_lettered_by_each_consumer() {
    use kafka_trace_harness::stockapp::DOLLARS_BY_ZIP_TOPIC;
    let settings = PipelineBuilder::new()
        .seed(3)
        .trades(20)
        .users(9)
        .clock(CLOCK);
    let datagen = settings.datagen();
    let (broker, capture, mut pipeline) = start(settings).await;
    let rows = partition_zero(&broker, DOLLARS_BY_ZIP_TOPIC).await;
    let bad = Record {
        key: Some(b"94301".to_vec()),
        value: Some(b"{\"ZIPCODE\": 94301".to_vec()),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    };
    rows.produce(vec![bad], Compression::NoCompression)
        .await
        .unwrap();

    // Every trade processed, every row read, and each of the two API
    // consumers copied the bad row once.
    let all_read = |p: &PipelineProgress| {
        p.datagen_done
            && p.trades_processed == p.trades_sent
            && p.dead_lettered == 2
            && p.api_rows.iter().all(|&n| n == p.rows_sent + 1)
    };
    pipeline
        .wait_for("every row and the bad one read", all_read, DEADLINE)
        .await
        .expect("all read");
    let states = pipeline.api_states().to_vec();
    pipeline.stop().await.expect("stop");

    let forest = capture.forest();
    let failed: Vec<_> = forest
        .named("process stockapp.dollarsbyzip")
        .filter(|s| matches!(s.status(), opentelemetry::trace::Status::Error { .. }))
        .collect();
    assert_eq!(failed.len(), 2, "one failed span per API consumer");
    for span in failed {
        assert_eq!(
            span.attribute("error.type")
                .map(|v| v.to_string())
                .as_deref(),
            Some("invalid_json")
        );
        assert_eq!(
            span.children().map(|c| c.name()).collect::<Vec<_>>(),
            [format!("send {DLQ_TOPIC}")]
        );
    }
    // The good rows are all there.
    let trades: Vec<StockTrade> = datagen.trades().collect();
    let expected = expected_totals(&trades, &users_by_id(datagen.users()));
    for state in states {
        assert_eq!(state.totals_in_cents(), expected);
    }
}

/// A fault injected into a running pipeline, and how long it lasts.
#[derive(Debug, Clone, Copy)]
enum PipelineFault {
    ProduceErrors,
    FetchErrors,
    BrokerDownAndUp,
    RoundTripTime,
    CutConnections,
    Stall,
    Latency,
    /// Container: the broker's processes paused, then resumed.
    #[cfg(feature = "container")]
    Pause,
}

impl PipelineFault {
    /// The fault's duration, when it has one: how long it stays on.
    const HOLD: Duration = Duration::from_millis(400);

    async fn inject(self, broker: &Broker) {
        use kafka_trace_harness::broker::{ApiKey, ErrorCode};
        match self {
            Self::ProduceErrors => broker
                .request_errors(ApiKey::Produce, ErrorCode::NotLeaderForPartition, 5)
                .unwrap(),
            Self::FetchErrors => broker
                .request_errors(ApiKey::Fetch, ErrorCode::NotLeaderForPartition, 5)
                .unwrap(),
            Self::BrokerDownAndUp => {
                broker.broker_down(1).unwrap();
                tokio::time::sleep(Self::HOLD).await;
                broker.broker_up(1).unwrap();
            }
            Self::RoundTripTime => {
                broker
                    .round_trip_time(1, Duration::from_millis(50))
                    .unwrap();
                tokio::time::sleep(Self::HOLD).await;
                broker.round_trip_time(1, Duration::ZERO).unwrap();
            }
            Self::CutConnections => broker.cut_connections().unwrap(),
            Self::Stall => broker.stall(Self::HOLD).unwrap(),
            Self::Latency => {
                broker.add_latency(Duration::from_millis(20)).unwrap();
                tokio::time::sleep(Self::HOLD).await;
                broker.add_latency(Duration::ZERO).unwrap();
            }
            #[cfg(feature = "container")]
            Self::Pause => {
                broker.pause().await.unwrap();
                tokio::time::sleep(Self::HOLD).await;
                broker.unpause().await.unwrap();
            }
        }
    }
}

/// Runs the pipeline with `fault` injected once a quarter of the trades
/// are out, and checks that nothing acknowledged was lost: every trade
/// processed, totals exact, every trace whole.
async fn the_pipeline_survives(fault: PipelineFault) {
    let broker = Broker::builder().start().await.expect("broker");
    the_pipeline_survives_on(broker, fault).await;
}

async fn the_pipeline_survives_on(broker: Broker, fault: PipelineFault) {
    let settings = PipelineBuilder::new()
        .seed(5)
        .trades(120)
        .users(9)
        .clock(CLOCK);
    let datagen = settings.datagen();
    let capture = SpanCapture::new();
    let mut pipeline = settings.start(&broker, &capture).await.expect("pipeline");
    pipeline
        .wait_for("30 trades sent", |p| p.trades_sent >= 30, DEADLINE)
        .await
        .expect("progress before the fault");
    fault.inject(&broker).await;
    pipeline
        .wait_until_complete(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
    let progress = pipeline.progress();
    let states = pipeline.api_states().to_vec();
    pipeline.stop().await.expect("stop");

    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_every_parent(SpanKind::Consumer, SpanKind::Producer);
    // Each trade's send span processed once (duplicates are marked, not
    // processed again).
    let processed: std::collections::HashSet<_> = forest
        .named("process stockapp.trades")
        .filter(|s| s.attribute("stockapp.duplicate").is_none())
        .map(|s| s.parent().expect("parent send").span_id())
        .collect();
    assert_eq!(processed.len(), 120, "{fault:?}: {progress:?}");
    let trades: Vec<StockTrade> = datagen.trades().collect();
    let expected = expected_totals(&trades, &users_by_id(datagen.users()));
    for state in states {
        assert_eq!(state.totals_in_cents(), expected, "{fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_survives_produce_errors() {
    the_pipeline_survives(PipelineFault::ProduceErrors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_survives_fetch_errors() {
    the_pipeline_survives(PipelineFault::FetchErrors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_survives_a_broker_down_and_up() {
    the_pipeline_survives(PipelineFault::BrokerDownAndUp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_survives_added_round_trip_time() {
    the_pipeline_survives(PipelineFault::RoundTripTime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_survives_cut_connections() {
    the_pipeline_survives(PipelineFault::CutConnections).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_survives_a_stalled_broker() {
    the_pipeline_survives(PipelineFault::Stall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_survives_added_latency() {
    the_pipeline_survives(PipelineFault::Latency).await;
}

#[cfg(feature = "container")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker and the local image (scripts/build-image.sh); .ci/run runs it"]
async fn the_pipeline_survives_a_paused_container() {
    let broker = Broker::builder()
        .backend(kafka_trace_harness::Backend::Container(
            kafka_trace_harness::ContainerImage::local_harness(),
        ))
        .start()
        .await
        .expect("container broker");
    the_pipeline_survives_on(broker, PipelineFault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offered_rate_spaces_the_trades_out() {
    // 20 trades at 100 per second: the last is due 190 ms after the first.
    let settings = PipelineBuilder::new()
        .seed(2)
        .trades(20)
        .users(9)
        .rate(100.0)
        .clock(CLOCK);
    let started = std::time::Instant::now();
    let (_broker, capture, pipeline) = run_to_completion(settings).await;
    let elapsed = started.elapsed();
    pipeline.stop().await.expect("stop");
    assert!(
        elapsed >= Duration::from_millis(190),
        "20 trades at 100/s took only {elapsed:?}"
    );
    let forest = capture.forest();
    forest.assert_no_problems();
    assert_eq!(forest.named("send stockapp.trades").count(), 20);
}

/// A processor that runs elsewhere (here: a second pipeline with only the
/// processor) writes the rows; the API consumers of the first read them
/// to the end once it has caught up, before they are stopped.
#[tokio::test]
async fn api_consumers_read_the_rows_of_a_processor_elsewhere_before_they_stop() {
    use kafka_trace_harness::stockapp::SchemaRegistry;
    use kafka_trace_harness::stockapp::pipeline::Services;

    const TRADES: usize = 300;
    let broker = Broker::start().await.unwrap();
    let registry = SchemaRegistry::new();
    let (here_capture, elsewhere_capture) = (SpanCapture::new(), SpanCapture::new());
    let mut here = PipelineBuilder::new()
        .trades(TRADES)
        .registry(registry.clone())
        .services(Services {
            processor: false,
            ..Services::default()
        })
        .start(&broker, &here_capture)
        .await
        .unwrap();
    let mut elsewhere = PipelineBuilder::new()
        .trades(TRADES)
        .registry(registry)
        .services(Services {
            datagen: false,
            processor: true,
            kstream: false,
            api: false,
        })
        .start(&broker, &elsewhere_capture)
        .await
        .unwrap();
    here.wait_until_complete(Duration::from_secs(60))
        .await
        .unwrap();
    // What the run's outside wait learns from the processor's group.
    elsewhere
        .wait_for(
            "the processor elsewhere read every trade",
            |p| p.trades_processed >= TRADES,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let rows_written = elsewhere.stop().await.unwrap().rows_sent;
    assert!(rows_written > 0, "the processor elsewhere wrote rows");
    here.wait_until_rows_read(Duration::from_secs(30))
        .await
        .unwrap();
    let progress = here.stop().await.unwrap();
    for (n, rows) in progress.api_rows.iter().enumerate() {
        assert!(
            *rows >= rows_written,
            "api-{} read {rows} of the {rows_written} rows written elsewhere",
            n + 1
        );
    }
    broker.shutdown().await.unwrap();
}

/// Records the broker deleted before a reader here started (an existing
/// cluster's retention) are in the progress, by service: never read, and
/// not only told on a span.
#[tokio::test]
async fn records_deleted_before_a_reader_started_are_in_the_progress() {
    use kafka_trace_harness::stockapp::DOLLARS_BY_ZIP_TOPIC;
    use kafka_trace_harness::stockapp::pipeline::Services;

    let broker = Broker::start().await.unwrap();
    broker.create_topic(DOLLARS_BY_ZIP_TOPIC, 1).await.unwrap();
    let rows = broker
        .client()
        .await
        .unwrap()
        .partition_client(DOLLARS_BY_ZIP_TOPIC, 0, UnknownTopicHandling::Error)
        .await
        .unwrap();
    // 6 MiB: more than the embedded broker keeps per partition (5 MiB).
    for _ in 0..12 {
        let batch = (0..8)
            .map(|_| Record {
                key: None,
                value: Some(vec![b'x'; 64 * 1024]),
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            })
            .collect();
        rows.produce(batch, Compression::NoCompression)
            .await
            .unwrap();
    }
    let deleted = broker.check_deleted_records().await.unwrap();
    assert_eq!(deleted.len(), 1, "{deleted:?}");

    let capture = SpanCapture::new();
    let api_only = Services {
        datagen: false,
        processor: false,
        kstream: false,
        api: true,
    };
    let pipeline = PipelineBuilder::new()
        .services(api_only)
        .api_consumers(1)
        .start(&broker, &capture)
        .await
        .unwrap();
    let progress = pipeline.stop().await.unwrap();
    assert_eq!(
        progress.deleted_before_start,
        vec![("api-1".to_owned(), deleted[0].clone())]
    );
    broker.shutdown_listing_deleted().await.unwrap();
}
