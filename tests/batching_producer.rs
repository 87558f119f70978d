//! The batching traced producer: records of one partition go out together,
//! each keeps its own span, offset and parent, retries show on every span
//! of a batch, and nothing pending is lost silently.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_trace_harness::broker::{ApiKey, ErrorCode};
use kafka_trace_harness::propagation::TRACEPARENT;
use kafka_trace_harness::traced::{BatchingTracedProducer, SEND_ATTEMPT_FAILED_EVENT, attr};
use kafka_trace_harness::{Broker, SpanCapture, SpanForest, SpanView, TracedConsumer};
use opentelemetry::trace::{Status, TraceContextExt, Tracer};
use opentelemetry::{Context, Value};

mod support;
use support::{DEADLINE, bounded, record};

fn int(span: &SpanView<'_>, key: &str) -> Option<i64> {
    match span.attribute(key) {
        Some(Value::I64(n)) => Some(*n),
        _ => None,
    }
}

fn text(span: &SpanView<'_>, key: &str) -> Option<String> {
    span.attribute(key).map(|v| v.as_str().into_owned())
}

/// The failed attempts on a span, as (attempt, error.type).
fn failed_attempts(span: &SpanView<'_>) -> Vec<(i64, String)> {
    span.data()
        .events
        .iter()
        .filter(|e| e.name == SEND_ATTEMPT_FAILED_EVENT)
        .map(|e| {
            let get = |key: &str| e.attributes.iter().find(|kv| kv.key.as_str() == key);
            let attempt = match get("attempt").map(|kv| &kv.value) {
                Some(Value::I64(n)) => *n,
                other => panic!("attempt attribute: {other:?}"),
            };
            let error_type = get(attr::ERROR_TYPE)
                .map(|kv| kv.value.as_str().into_owned())
                .expect("error.type on the event");
            (attempt, error_type)
        })
        .collect()
}

/// Consumes `count` records of `topic` and checks that each carries one
/// traceparent, that its process span's parent is the send span of the
/// same partition and offset, and that the forest has no problems.
async fn assert_consumed_whole(
    broker: &Broker,
    capture: &SpanCapture,
    topic: &str,
    count: usize,
) -> SpanForest {
    let mut consumer = TracedConsumer::builder("reader", topic)
        .build(broker, capture.tracer("reader"))
        .await
        .expect("consumer");
    let consumed = consumer
        .consume(count, DEADLINE)
        .await
        .expect("every acknowledged record is there");
    assert_eq!(consumed.len(), count);
    for c in consumed {
        let traceparents = c
            .record
            .headers
            .keys()
            .filter(|k| k.as_str() == TRACEPARENT)
            .count();
        assert_eq!(traceparents, 1, "record {} has one traceparent", c.offset);
        c.finish();
    }
    let forest = capture.forest();
    forest.assert_no_problems();
    let mut seen = 0;
    for span in forest.named(&format!("process {topic}")) {
        let parent = span.parent().expect("process span has a parent");
        assert_eq!(parent.name(), format!("send {topic}"));
        assert_eq!(
            text(&parent, attr::PARTITION_ID),
            text(&span, attr::PARTITION_ID)
        );
        assert_eq!(int(&parent, attr::OFFSET), int(&span, attr::OFFSET));
        seen += 1;
    }
    assert_eq!(seen, count);
    forest
}

#[tokio::test]
async fn a_thousand_concurrent_sends_go_out_in_few_requests_with_whole_traces() {
    bounded("1,000 concurrent sends", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("batching", 3).await.unwrap();
        let capture = SpanCapture::new();
        let producer = BatchingTracedProducer::builder()
            .build(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let app = capture.tracer("app");
        let root = app.start("produce all");
        let parent = Context::new().with_span(root);

        let sends: Vec<_> = (0..1_000)
            .map(|n| producer.send(&parent, &topic, (n % 3) as i32, record(n)))
            .collect();
        let offsets = futures::future::try_join_all(sends).await.unwrap();
        parent.span().end();

        // Order per partition is call order: record n is the (n / 3)th of
        // its partition.
        for (n, offset) in offsets.iter().enumerate() {
            assert_eq!(*offset, (n / 3) as i64, "record {n}");
        }
        let stats = producer.stats();
        assert_eq!(stats.records_acknowledged, 1_000);
        assert_eq!(stats.records_failed, 0);
        assert!(
            stats.produce_requests < 1_000 && stats.produce_requests >= 3,
            "{stats:?}"
        );
        assert_eq!(stats.batches_acknowledged, stats.produce_requests);

        let forest = capture.forest();
        let mut by_key = HashMap::new();
        for span in forest.named(&format!("send {topic}")) {
            assert_eq!(span.parent().map(|p| p.name()), Some("produce all"));
            assert!(failed_attempts(&span).is_empty());
            let key = text(&span, attr::MESSAGE_KEY).expect("key attribute");
            by_key.insert(key, int(&span, attr::OFFSET).expect("offset attribute"));
        }
        assert_eq!(by_key.len(), 1_000);
        for (n, offset) in offsets.iter().enumerate() {
            assert_eq!(by_key[&format!("key-{n}")], *offset);
        }
        assert_consumed_whole(&broker, &capture, &topic, 1_000).await;
    })
    .await;
}

#[tokio::test]
async fn batches_respect_max_records_and_max_bytes() {
    bounded("batch limits", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("batching", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = BatchingTracedProducer::builder()
            .max_batch_records(10)
            .linger(Duration::from_millis(50))
            .build(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let sends: Vec<_> = (0..100)
            .map(|n| producer.send(&Context::new(), &topic, 0, record(n)))
            .collect();
        let offsets = futures::future::try_join_all(sends).await.unwrap();
        assert_eq!(offsets, (0..100).collect::<Vec<i64>>());
        assert_eq!(producer.stats().produce_requests, 10);

        // 1,000-byte values, at most 4 to a 4 KiB batch.
        let producer = BatchingTracedProducer::builder()
            .max_batch_bytes(4096)
            .build(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let sends: Vec<_> = (0..20)
            .map(|_| {
                let mut r = record(0);
                r.value = Some(vec![b'x'; 1_000]);
                producer.send(&Context::new(), &topic, 0, r)
            })
            .collect();
        futures::future::try_join_all(sends).await.unwrap();
        let requests = producer.stats().produce_requests;
        assert!((5..20).contains(&requests), "{requests} requests");
    })
    .await;
}

#[tokio::test]
async fn flush_sends_a_lingering_batch_at_once() {
    bounded("flush", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("batching", 2).await.unwrap();
        let capture = SpanCapture::new();
        let producer = BatchingTracedProducer::builder()
            .linger(Duration::from_secs(30))
            .build(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let sends: Vec<_> = (0..6)
            .map(|n| producer.send(&Context::new(), &topic, (n % 2) as i32, record(n)))
            .collect();
        let started = Instant::now();
        producer.flush().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "flush lingered");
        let offsets = futures::future::try_join_all(sends).await.unwrap();
        assert_eq!(offsets, vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(producer.stats().produce_requests, 2);
        // Nothing pending: a second flush returns at once.
        producer.flush().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dropping_the_producer_fails_pending_records_loudly() {
    bounded("drop with records pending", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("batching", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = BatchingTracedProducer::builder()
            .linger(Duration::from_secs(30))
            .build(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let sends: Vec<_> = (0..3)
            .map(|n| producer.send(&Context::new(), &topic, 0, record(n)))
            .collect();
        // Let the partition's task take the records into its batch.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(producer);
        for result in futures::future::join_all(sends).await {
            let err = result.expect_err("a dropped producer fails its pending records");
            let text = err.to_string();
            assert!(text.contains("dropped") && text.contains(&topic), "{text}");
        }
        let forest = capture.forest();
        let spans: Vec<_> = forest.named(&format!("send {topic}")).collect();
        assert_eq!(spans.len(), 3);
        for span in spans {
            assert_eq!(
                text(&span, attr::ERROR_TYPE).as_deref(),
                Some("producer_dropped")
            );
            assert!(matches!(span.status(), Status::Error { .. }));
        }
    })
    .await;
}

#[tokio::test]
async fn request_errors_are_retried_and_show_on_every_span_of_the_batch() {
    bounded("request errors", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("batching", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = BatchingTracedProducer::builder()
            .linger(Duration::from_millis(50))
            .build(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        // Connect the partition first, so the errors hit produce requests.
        producer
            .send(&Context::new(), &topic, 0, record(0))
            .await
            .unwrap();

        broker
            .request_errors(ApiKey::Produce, ErrorCode::NotLeaderForPartition, 2)
            .unwrap();
        let sends: Vec<_> = (1..=10)
            .map(|n| producer.send(&Context::new(), &topic, 0, record(n)))
            .collect();
        let offsets = futures::future::try_join_all(sends)
            .await
            .expect("the third attempt succeeds");
        assert_eq!(offsets, (1..=10).collect::<Vec<i64>>());
        let stats = producer.stats();
        assert_eq!((stats.produce_requests, stats.batches_acknowledged), (4, 2));

        let forest = assert_consumed_whole(&broker, &capture, &topic, 11).await;
        let retried: Vec<_> = forest
            .named(&format!("send {topic}"))
            .filter(|s| int(s, attr::OFFSET) != Some(0))
            .collect();
        assert_eq!(retried.len(), 10);
        for span in retried {
            assert_eq!(
                failed_attempts(&span),
                vec![
                    (1, "NotLeaderOrFollower".to_owned()),
                    (2, "NotLeaderOrFollower".to_owned())
                ]
            );
            assert_eq!(int(&span, attr::SEND_ATTEMPTS), Some(3));
            assert!(span.attribute(attr::ERROR_TYPE).is_none());
        }
    })
    .await;
}

#[tokio::test]
async fn a_gone_broker_fails_every_pending_send_within_the_deadline() {
    bounded("gone broker", async {
        let deadline = Duration::from_millis(500);
        let broker = Broker::builder()
            .client_deadline(deadline)
            .watch_deleted_records(false)
            .start()
            .await
            .unwrap();
        let topic = broker.create_unique_topic("batching", 3).await.unwrap();
        let bootstrap = broker.bootstrap_servers().to_owned();
        let capture = SpanCapture::new();
        let producer = BatchingTracedProducer::builder()
            .build(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        producer
            .send(&Context::new(), &topic, 0, record(0))
            .await
            .unwrap();

        broker.broker_down(1).unwrap();
        let started = Instant::now();
        let sends: Vec<_> = (1..=30)
            .map(|n| producer.send(&Context::new(), &topic, (n % 3) as i32, record(n)))
            .collect();
        let results = futures::future::join_all(sends).await;
        let waited = started.elapsed();
        // The deadline, plus the last attempt's answer and the linger.
        assert!(waited < deadline + Duration::from_millis(500), "{waited:?}");
        for (n, result) in (1..=30).zip(results) {
            let text = result.expect_err("send to a gone broker").to_string();
            assert!(text.contains(&topic), "names the topic: {text}");
            assert!(
                text.contains(&format!("partition {}", n % 3)),
                "names the partition: {text}"
            );
            assert!(text.contains(&bootstrap), "names the broker: {text}");
            assert!(
                text.contains(&format!("{deadline:?}")),
                "names the deadline: {text}"
            );
        }
        let stats = producer.stats();
        assert_eq!((stats.records_acknowledged, stats.records_failed), (1, 30));
        let forest = capture.forest();
        let failed = forest
            .named(&format!("send {topic}"))
            .filter(|s| matches!(s.status(), Status::Error { .. }))
            .filter(|s| s.attribute(attr::ERROR_TYPE).is_some())
            .count();
        assert_eq!(failed, 30);

        // Back up: the producer works again.
        broker.broker_up(1).unwrap();
        let offset = producer
            .send(&Context::new(), &topic, 0, record(31))
            .await
            .unwrap();
        assert_eq!(offset, 1);
        producer.flush().await.unwrap();
    })
    .await;
}
