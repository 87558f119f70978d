//! Traced producer and consumer against the embedded broker.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_trace_harness::propagation::TRACEPARENT;
use kafka_trace_harness::traced::attr;
use kafka_trace_harness::{
    Broker, ConsumerParent, Render, SpanCapture, StartFrom, TracedConsumer, TracedProducer,
};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, Value};
use rskafka::record::Record;

const DEADLINE: Duration = Duration::from_secs(10);

fn record(key: &str, headers: &[(&str, &[u8])]) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(b"{}".to_vec()),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect::<BTreeMap<_, _>>(),
        timestamp: chrono::Utc::now(),
    }
}

struct Fixture {
    broker: Broker,
    topic: String,
    capture: SpanCapture,
}

async fn fixture(partitions: u16) -> Fixture {
    let broker = Broker::builder().start().await.expect("broker");
    let topic = broker
        .create_unique_topic("trades", partitions)
        .await
        .expect("topic");
    Fixture {
        broker,
        topic,
        capture: SpanCapture::new(),
    }
}

#[tokio::test]
async fn send_and_process_spans_follow_the_messaging_conventions() {
    let f = fixture(2).await;
    let producer = TracedProducer::connect(&f.broker, f.capture.tracer("datagen"))
        .await
        .unwrap();
    let mut consumer = TracedConsumer::builder("api-1", &f.topic)
        .build(&f.broker, f.capture.tracer("api-1"))
        .await
        .unwrap();

    let offset = producer
        .send(&Context::new(), &f.topic, 1, record("ZVZZT", &[]))
        .await
        .unwrap();
    let consumed = consumer.consume(1, DEADLINE).await.unwrap();
    assert_eq!((consumed[0].partition, consumed[0].offset), (1, offset));
    for c in consumed {
        c.finish();
    }

    let forest = f.capture.forest();
    let send = forest.named(&format!("send {}", f.topic)).next().unwrap();
    assert_eq!(send.kind(), &SpanKind::Producer);
    assert_eq!(send.attribute(attr::OFFSET), Some(&Value::I64(offset)));
    assert_eq!(
        send.attribute(attr::SERVER_PORT).is_some(),
        send.attribute(attr::SERVER_ADDRESS).is_some()
    );
    let process = send.children().next().expect("process span is a child");
    assert_eq!(process.kind(), &SpanKind::Consumer);
    assert_eq!(process.service(), "api-1");
    assert!(forest.problems().is_empty(), "{:?}", forest.problems());

    let text = Render::new().replace(&f.topic, "trades").forest(&forest);
    insta::assert_snapshot!(text);
}

#[tokio::test]
async fn downstream_sends_made_in_a_process_span_are_its_children() {
    let f = fixture(1).await;
    let out = f.broker.create_unique_topic("dollars", 1).await.unwrap();
    let source = TracedProducer::connect(&f.broker, f.capture.tracer("datagen"))
        .await
        .unwrap();
    let processor = TracedProducer::connect(&f.broker, f.capture.tracer("processor"))
        .await
        .unwrap();
    let mut consumer = TracedConsumer::builder("processor", &f.topic)
        .build(&f.broker, f.capture.tracer("processor"))
        .await
        .unwrap();
    source
        .send(&Context::new(), &f.topic, 0, record("ZT", &[]))
        .await
        .unwrap();
    for c in consumer.consume(1, DEADLINE).await.unwrap() {
        processor
            .send(c.context(), &out, 0, record("ZT", &[]))
            .await
            .unwrap();
        c.finish();
    }
    let forest = f.capture.forest();
    let downstream = forest.named(&format!("send {out}")).next().unwrap();
    let parent = downstream.parent().expect("has a parent");
    assert_eq!(parent.name(), format!("process {}", f.topic));
    assert_eq!(
        parent.parent().map(|p| p.name().to_owned()),
        Some(format!("send {}", f.topic))
    );
    assert_eq!(forest.traces().len(), 1);
}

#[tokio::test]
async fn link_only_mode_makes_a_root_that_links_to_the_send() {
    let f = fixture(1).await;
    let producer = TracedProducer::connect(&f.broker, f.capture.tracer("datagen"))
        .await
        .unwrap();
    let mut consumer = TracedConsumer::builder("api", &f.topic)
        .parent(ConsumerParent::LinkOnly)
        .build(&f.broker, f.capture.tracer("api"))
        .await
        .unwrap();
    producer
        .send(&Context::new(), &f.topic, 0, record("k", &[]))
        .await
        .unwrap();
    for c in consumer.consume(1, DEADLINE).await.unwrap() {
        c.finish();
    }
    let forest = f.capture.forest();
    let process = forest.of_kind(SpanKind::Consumer).next().unwrap();
    assert!(process.is_root());
    let (_, target) = process.links().next().expect("a link");
    assert_eq!(target.unwrap().kind(), &SpanKind::Producer);
    assert_eq!(forest.traces().len(), 2);
}

#[tokio::test]
async fn a_garbage_traceparent_gives_a_root_span_that_says_why() {
    let f = fixture(1).await;
    let client = f
        .broker
        .client()
        .await
        .unwrap()
        .partition_client(
            f.topic.as_str(),
            0,
            rskafka::client::partition::UnknownTopicHandling::Retry,
        )
        .await
        .unwrap();
    client
        .produce(
            vec![record("k", &[(TRACEPARENT, b"00-not-a-context")])],
            rskafka::client::partition::Compression::NoCompression,
        )
        .await
        .unwrap();
    let mut consumer = TracedConsumer::builder("api", &f.topic)
        .build(&f.broker, f.capture.tracer("api"))
        .await
        .unwrap();
    for c in consumer.consume(1, DEADLINE).await.unwrap() {
        assert_eq!(c.extracted.problem.as_ref().unwrap().kind(), "malformed");
        c.finish();
    }
    let forest = f.capture.forest();
    let process = forest.spans().next().unwrap();
    assert!(process.is_root());
    assert_eq!(
        process.attribute(attr::CONTEXT_PROBLEM),
        Some(&Value::from("malformed"))
    );
    let text = Render::new().replace(&f.topic, "trades").forest(&forest);
    insta::assert_snapshot!(text);
}

#[tokio::test]
async fn a_consumer_never_skips_or_repeats_a_record() {
    let f = fixture(3).await;
    let producer = TracedProducer::connect(&f.broker, f.capture.tracer("datagen"))
        .await
        .unwrap();
    for n in 0..5 {
        producer
            .send(
                &Context::new(),
                &f.topic,
                n % 3,
                record(&n.to_string(), &[]),
            )
            .await
            .unwrap();
    }
    let mut earliest = TracedConsumer::builder("from-earliest", &f.topic)
        .build(&f.broker, f.capture.tracer("api"))
        .await
        .unwrap();
    let mut latest = TracedConsumer::builder("from-latest", &f.topic)
        .start_from(StartFrom::Latest)
        .build(&f.broker, f.capture.tracer("api"))
        .await
        .unwrap();
    for n in 5..9 {
        producer
            .send(
                &Context::new(),
                &f.topic,
                n % 3,
                record(&n.to_string(), &[]),
            )
            .await
            .unwrap();
    }
    // Two calls, the first smaller than what one poll returns.
    let mut keys: Vec<String> = Vec::new();
    for batch in [2, 7] {
        for c in earliest.consume(batch, DEADLINE).await.unwrap() {
            keys.push(String::from_utf8(c.record.key.clone().unwrap()).unwrap());
        }
    }
    keys.sort();
    assert_eq!(keys, (0..9).map(|n| n.to_string()).collect::<Vec<_>>());
    assert!(
        earliest.poll().await.unwrap().is_empty(),
        "nothing repeated"
    );

    let mut late: Vec<String> = latest
        .consume(4, DEADLINE)
        .await
        .unwrap()
        .into_iter()
        .map(|c| String::from_utf8(c.record.key.clone().unwrap()).unwrap())
        .collect();
    late.sort();
    assert_eq!(late, ["5", "6", "7", "8"]);
    assert_eq!(latest.offsets().values().sum::<i64>(), 9);
}

#[tokio::test]
async fn a_failed_send_has_an_error_type_and_error_status() {
    let f = fixture(1).await;
    let producer = TracedProducer::connect(&f.broker, f.capture.tracer("datagen"))
        .await
        .unwrap();
    let mock = f.broker.mock_cluster().expect("embedded");
    // Produce = API key 0; the error repeats past rskafka's retries.
    mock.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 64],
    );
    let result = producer
        .send(&Context::new(), &f.topic, 0, record("k", &[]))
        .await;
    assert!(result.is_err());
    let forest = f.capture.forest();
    let send = forest.spans().next().unwrap();
    assert!(matches!(send.status(), Status::Error { .. }));
    assert!(send.attribute(attr::ERROR_TYPE).is_some());
}

#[tokio::test]
async fn the_producer_keeps_a_traceparent_set_by_the_caller() {
    let f = fixture(1).await;
    let capture = &f.capture;
    let producer = TracedProducer::connect(&f.broker, capture.tracer("forwarder"))
        .await
        .unwrap();
    let upstream = capture.tracer("upstream").start("upstream");
    let upstream_cx = Context::new().with_span(upstream);
    let mut headers = BTreeMap::new();
    kafka_trace_harness::inject(&upstream_cx, &mut headers);
    let mut r = record("k", &[]);
    r.headers = headers;
    producer
        .send(&Context::new(), &f.topic, 0, r)
        .await
        .unwrap();
    let mut consumer = TracedConsumer::builder("api", &f.topic)
        .build(&f.broker, capture.tracer("api"))
        .await
        .unwrap();
    for c in consumer.consume(1, DEADLINE).await.unwrap() {
        c.finish();
    }
    upstream_cx.span().end();
    let forest = capture.forest();
    let process = forest.of_kind(SpanKind::Consumer).next().unwrap();
    assert_eq!(process.parent().unwrap().name(), "upstream");
}

fn keys(records: &[kafka_trace_harness::ConsumedRecord]) -> Vec<String> {
    let mut keys: Vec<String> = records
        .iter()
        .map(|c| String::from_utf8(c.record.key.clone().unwrap()).unwrap())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_restarted_consumer_resumes_from_its_offset_store() {
    let f = fixture(2).await;
    let producer = TracedProducer::connect(&f.broker, f.capture.tracer("datagen"))
        .await
        .unwrap();
    for n in 0..6 {
        producer
            .send(
                &Context::new(),
                &f.topic,
                n % 2,
                record(&n.to_string(), &[]),
            )
            .await
            .unwrap();
    }
    let store = kafka_trace_harness::OffsetStore::new();
    let build = || {
        TracedConsumer::builder("api", &f.topic)
            .offset_store(store.clone())
            .build(&f.broker, f.capture.tracer("api"))
    };
    // Records are committed as they finish (at-least-once).
    let finish_all = |records: Vec<kafka_trace_harness::ConsumedRecord>| {
        let keys = keys(&records);
        records.into_iter().for_each(|r| r.finish());
        keys
    };
    let mut first = build().await.unwrap();
    let mut seen = finish_all(first.consume(4, DEADLINE).await.unwrap());
    drop(first);
    let mut second = build().await.unwrap();
    seen.extend(finish_all(second.consume(2, DEADLINE).await.unwrap()));
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "4", "5"], "no skip, no repeat");
    let processed = f.capture.forest().of_kind(SpanKind::Consumer).count();
    assert_eq!(
        processed, 6,
        "records fetched but never handed out leave no span"
    );
    assert_eq!(store.get("api", &f.topic, 0), Some(3));
    assert_eq!(store.get("api", &f.topic, 1), Some(3));
}

#[tokio::test]
async fn a_timed_out_consume_keeps_what_it_got_for_the_next_call() {
    let f = fixture(1).await;
    let producer = TracedProducer::connect(&f.broker, f.capture.tracer("datagen"))
        .await
        .unwrap();
    producer
        .send(&Context::new(), &f.topic, 0, record("only", &[]))
        .await
        .unwrap();
    let mut consumer = TracedConsumer::builder("api", &f.topic)
        .max_wait(Duration::from_millis(10))
        .build(&f.broker, f.capture.tracer("api"))
        .await
        .unwrap();
    let err = consumer
        .consume(2, Duration::from_millis(100))
        .await
        .expect_err("only one record exists");
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(consumer.offsets()[&0], 0, "nothing handed out");
    assert_eq!(
        keys(&consumer.consume(1, DEADLINE).await.unwrap()),
        ["only"]
    );
    assert_eq!(consumer.offsets()[&0], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_first_sends_at_once_share_one_connection() {
    let f = fixture(1).await;
    let producer = TracedProducer::connect(&f.broker, f.capture.tracer("datagen"))
        .await
        .unwrap();
    let root = Context::new();
    let sends = (0..500).map(|n| producer.send(&root, &f.topic, 0, record(&n.to_string(), &[])));
    let mut offsets: Vec<i64> = futures::future::join_all(sends)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every send acknowledged within its deadline");
    offsets.sort_unstable();
    assert_eq!(offsets, (0..500).collect::<Vec<i64>>());
}
