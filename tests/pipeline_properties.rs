//! Property: for any small sequence of users and trades, in any order and
//! over several partitions, every trace is linked right and the API serves
//! exactly the totals the sequence implies.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_trace_harness::stockapp::pipeline::{PipelineBuilder, PipelineProgress, Services};
use kafka_trace_harness::stockapp::processor::window_start;
use kafka_trace_harness::stockapp::{
    AvroRecord, SchemaRegistry, StockTrade, TRADES_TOPIC, USERS_TOPIC, User,
};
use kafka_trace_harness::{Broker, ExpectedSpan, SpanCapture, TracedProducer};
use opentelemetry::Context;
use opentelemetry::trace::SpanKind;
use proptest::prelude::*;
use rskafka::record::Record;

const PARTITIONS: u16 = 3;
const WINDOW_BASE_MS: i64 = 1_700_000_100_000;

#[derive(Debug, Clone)]
enum Step {
    User {
        user: User,
        partition: i32,
    },
    Trade {
        trade: StockTrade,
        timestamp_ms: i64,
        partition: i32,
    },
}

fn user() -> impl Strategy<Value = User> {
    let zip = prop_oneof![
        Just(None),
        prop::sample::select(vec!["94403", "92617", "94301"]).prop_map(Some),
    ];
    (1..=3u8, zip).prop_map(|(n, zip)| User {
        registertime: 1_500_000_000_000,
        userid: format!("User_{n}"),
        regionid: "Region_1".into(),
        gender: "OTHER".into(),
        interests: vec![],
        contactinfo: zip
            .map(|z| [("zipcode".to_owned(), z.to_owned())].into())
            .unwrap_or_default(),
    })
}

fn trade() -> impl Strategy<Value = StockTrade> {
    (
        prop::sample::select(vec!["ZVZZT", "ZTEST", "ZVV", "ZBZX"]),
        5..1000i32,
        1..5000i32,
        1..=4u8,
    )
        .prop_map(|(symbol, price, quantity, user)| StockTrade {
            side: "BUY".into(),
            quantity,
            symbol: symbol.into(),
            price,
            account: "ABC123".into(),
            userid: format!("User_{user}"),
        })
}

fn step() -> impl Strategy<Value = Step> {
    let partition = 0..i32::from(PARTITIONS);
    prop_oneof![
        (user(), partition.clone()).prop_map(|(user, partition)| Step::User { user, partition }),
        // Timestamps over three windows, in any order.
        (trade(), 0..900_000i64, partition).prop_map(|(trade, offset, partition)| Step::Trade {
            trade,
            timestamp_ms: WINDOW_BASE_MS + offset,
            partition
        }),
    ]
}

/// What the sequence implies: a trade joins the latest profile sent before it.
fn expected_totals(steps: &[Step]) -> BTreeMap<(String, i64), i128> {
    let mut users: HashMap<&str, &User> = HashMap::new();
    let mut totals = BTreeMap::new();
    for step in steps {
        match step {
            Step::User { user, .. } => {
                users.insert(&user.userid, user);
            }
            Step::Trade {
                trade,
                timestamp_ms,
                ..
            } => {
                let zip = users.get(trade.userid.as_str()).and_then(|u| u.zipcode());
                if let (true, Some(zip)) = (trade.symbol.ends_with('T'), zip) {
                    *totals
                        .entry((zip.to_owned(), window_start(*timestamp_ms)))
                        .or_default() += i128::from(trade.price) * i128::from(trade.quantity);
                }
            }
        }
    }
    totals
}

fn record<T: AvroRecord>(registry: &SchemaRegistry, topic: &str, value: &T, ts: i64) -> Record {
    Record {
        key: Some(value.key().as_bytes().to_vec()),
        value: Some(registry.encode_value(topic, value).expect("encode")),
        headers: Default::default(),
        timestamp: chrono::DateTime::from_timestamp_millis(ts).expect("timestamp"),
    }
}

async fn check(steps: Vec<Step>) {
    let broker = Broker::builder().start().await.expect("broker");
    let capture = SpanCapture::new();
    let registry = SchemaRegistry::new();
    let mut pipeline = PipelineBuilder::new()
        .partitions(PARTITIONS)
        .services(Services {
            datagen: false,
            processor: true,
            kstream: false,
            api: true,
        })
        .registry(registry.clone())
        .start(&broker, &capture)
        .await
        .expect("pipeline");
    let producer = TracedProducer::connect(&broker, capture.tracer("datagen"))
        .await
        .unwrap();

    // Lockstep: each record is processed before the next is sent, so the
    // order the processor sees is the sequence's order.
    let (mut trades, mut users) = (0, 0);
    for step in &steps {
        let (topic, record, partition) = match step {
            Step::User { user, partition } => {
                users += 1;
                (
                    USERS_TOPIC,
                    record(&registry, USERS_TOPIC, user, WINDOW_BASE_MS),
                    *partition,
                )
            }
            Step::Trade {
                trade,
                timestamp_ms,
                partition,
            } => {
                trades += 1;
                (
                    TRADES_TOPIC,
                    record(&registry, TRADES_TOPIC, trade, *timestamp_ms),
                    *partition,
                )
            }
        };
        producer
            .send(&Context::new(), topic, partition, record)
            .await
            .expect("send");
        let processed =
            |p: &PipelineProgress| p.trades_processed >= trades && p.users_processed >= users;
        pipeline
            .wait_for("the record just sent", processed, Duration::from_secs(20))
            .await
            .expect("processed");
    }
    let progress = pipeline
        .wait_until_complete(Duration::from_secs(20))
        .await
        .expect("complete");
    let states = pipeline.api_states().to_vec();
    pipeline.stop().await.expect("stop");

    // Linkage: no orphan, no dangling link; every consumer under a producer;
    // every window row's trace reaches both API consumers (this run has no
    // Kafka Streams service, so no JSON branch).
    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_every_parent(SpanKind::Consumer, SpanKind::Producer);
    let reaches_api = ExpectedSpan::producer("send stockapp.trades").child(
        ExpectedSpan::consumer("process stockapp.trades")
            .link_to("send stockapp.users")
            .child(
                ExpectedSpan::producer("send stockapp.dollarsbyzip").children([
                    ExpectedSpan::consumer("process stockapp.dollarsbyzip").service("api-1"),
                    ExpectedSpan::consumer("process stockapp.dollarsbyzip").service("api-2"),
                ]),
            ),
    );
    forest.assert_traces(progress.rows_sent, &reaches_api);

    // Totals: what the API serves is what the sequence implies.
    let expected = expected_totals(&steps);
    for state in states {
        assert_eq!(state.totals_in_cents(), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_users_and_trades_links_and_totals_right(
        steps in prop::collection::vec(step(), 1..10)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check(steps));
    }
}
