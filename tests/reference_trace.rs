//! The reference trace of the stockapp pipeline, reproduced through the
//! embedded broker with the traced producer and consumers.

use std::collections::HashMap;
use std::time::Duration;

use kafka_trace_harness::{
    Broker, Condition, ExpectedSpan, Render, SpanCapture, TracedConsumer, TracedProducer,
};
use opentelemetry::trace::{SpanContext, SpanKind};
use opentelemetry::{Context, KeyValue};
use rskafka::record::Record;

const DEADLINE: Duration = Duration::from_secs(10);

fn record(key: &str, value: &str) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    }
}

fn value(c: &kafka_trace_harness::ConsumedRecord) -> String {
    String::from_utf8_lossy(c.record.value.as_deref().unwrap_or_default()).into_owned()
}

struct Topics {
    trades: String,
    users: String,
    json: String,
    dollars: String,
}

#[tokio::test]
async fn a_trade_leaves_the_reference_trace() {
    let broker = Broker::builder().start().await.expect("broker");
    let mut topics = Vec::new();
    for prefix in ["trades", "users", "trades-json", "dollarsbyzip"] {
        topics.push(broker.create_unique_topic(prefix, 1).await.expect("topic"));
    }
    let t = Topics {
        trades: topics[0].clone(),
        users: topics[1].clone(),
        json: topics[2].clone(),
        dollars: topics[3].clone(),
    };
    let capture = SpanCapture::new();

    // datagen: one user, one trade kept (ends in T), one filtered out.
    let datagen = TracedProducer::connect(&broker, capture.tracer("datagen"))
        .await
        .unwrap();
    let root = Context::new();
    datagen
        .send(&root, &t.users, 0, record("User_1", "zip=94403"))
        .await
        .unwrap();
    datagen
        .send(&root, &t.trades, 0, record("ZVZZT", "user=User_1"))
        .await
        .unwrap();
    datagen
        .send(&root, &t.trades, 0, record("ZXZZA", "user=User_1"))
        .await
        .unwrap();

    // stock-processor: the users table, then the trades stream.
    let tracer = capture.tracer("stock-processor");
    let processor = TracedProducer::connect(&broker, tracer.clone())
        .await
        .unwrap();
    let mut users = TracedConsumer::builder("stock-processor", &t.users)
        .build(&broker, tracer.clone())
        .await
        .unwrap();
    let mut sent_by_user: HashMap<String, SpanContext> = HashMap::new();
    for c in users.consume(1, DEADLINE).await.unwrap() {
        let user = String::from_utf8(c.record.key.clone().unwrap()).unwrap();
        sent_by_user.insert(user, c.extracted.span_context());
        c.finish();
    }
    let mut trades = TracedConsumer::builder("stock-processor", &t.trades)
        .build(&broker, tracer.clone())
        .await
        .unwrap();
    for c in trades.consume(2, DEADLINE).await.unwrap() {
        let symbol = String::from_utf8(c.record.key.clone().unwrap()).unwrap();
        if !symbol.ends_with('T') {
            c.set_attribute(KeyValue::new(
                "stockapp.filtered",
                "symbol does not end in T",
            ));
            c.finish();
            continue;
        }
        let user = value(&c).trim_start_matches("user=").to_owned();
        if let Some(send) = sent_by_user.get(&user) {
            c.add_link(send.clone());
        }
        processor
            .send(c.context(), &t.dollars, 0, record(&symbol, "{}"))
            .await
            .unwrap();
        c.finish();
    }

    // kstream-service: every trade, kept or filtered, as JSON.
    let kstream = capture.tracer("kstream-service");
    let json_producer = TracedProducer::connect(&broker, kstream.clone())
        .await
        .unwrap();
    let mut json_trades = TracedConsumer::builder("kstream-service", &t.trades)
        .build(&broker, kstream)
        .await
        .unwrap();
    for c in json_trades.consume(2, DEADLINE).await.unwrap() {
        let symbol = String::from_utf8(c.record.key.clone().unwrap()).unwrap();
        json_producer
            .send(c.context(), &t.json, 0, record(&symbol, "{}"))
            .await
            .unwrap();
        c.finish();
    }

    // Two API services, each its own consumer of the dollars topic.
    for api in ["api-1", "api-2"] {
        let mut consumer = TracedConsumer::builder(api, &t.dollars)
            .build(&broker, capture.tracer(api))
            .await
            .unwrap();
        for c in consumer.consume(1, DEADLINE).await.unwrap() {
            c.finish();
        }
    }

    let forest = capture
        .wait_for(Condition::span_count(13), DEADLINE)
        .await
        .expect("every span ended");
    let json_branch = || {
        ExpectedSpan::consumer(format!("process {}", t.trades))
            .service("kstream-service")
            .child(ExpectedSpan::producer(format!("send {}", t.json)).service("kstream-service"))
    };
    let process_dollars = |api: &str| {
        ExpectedSpan::consumer(format!("process {}", t.dollars))
            .service(api)
            .attr("messaging.consumer.group.name", api.to_owned())
    };
    forest.assert_traces(
        1,
        &ExpectedSpan::producer(format!("send {}", t.trades))
            .service("datagen")
            .attr("messaging.kafka.message.key", "ZVZZT")
            .children([
                ExpectedSpan::consumer(format!("process {}", t.trades))
                    .service("stock-processor")
                    .link_to(format!("send {}", t.users))
                    .child(
                        ExpectedSpan::producer(format!("send {}", t.dollars))
                            .service("stock-processor")
                            .children([process_dollars("api-1"), process_dollars("api-2")]),
                    ),
                json_branch(),
            ]),
    );
    forest.assert_traces(
        1,
        &ExpectedSpan::producer(format!("send {}", t.trades))
            .attr("messaging.kafka.message.key", "ZXZZA")
            .children([
                ExpectedSpan::consumer(format!("process {}", t.trades))
                    .service("stock-processor")
                    .attr("stockapp.filtered", "symbol does not end in T"),
                json_branch(),
            ]),
    );
    forest.assert_every_parent(SpanKind::Consumer, SpanKind::Producer);
    forest.assert_no_problems();

    let text = Render::new()
        .replace(&t.trades, "stockapp.trades")
        .replace(&t.users, "stockapp.users")
        .replace(&t.json, "stockapp.trades-json")
        .replace(&t.dollars, "stockapp.dollarsbyzip")
        .only_attributes([
            "messaging.kafka.message.key",
            "messaging.consumer.group.name",
            "stockapp.filtered",
        ])
        .forest(&forest);
    insta::assert_snapshot!(text);
}
