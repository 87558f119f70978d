//! A consumer's fetch that fails retriably is retried within the
//! consumer's deadline: a poll neither fails nor skips or repeats a
//! record; an error Kafka calls fatal still fails the poll, and a
//! retriable one that outlasts the deadline fails it naming the error.

use std::collections::BTreeSet;
use std::time::Duration;

use kafka_trace_harness::broker::{ApiKey, ErrorCode};
use kafka_trace_harness::{Broker, SpanCapture, TracedConsumer, TracedProducer};
use opentelemetry::Context;

mod support;
use support::{DEADLINE, bounded, record};

/// Polls until `expected` records came (each at most once), within
/// [`DEADLINE`]; every poll must succeed.
async fn poll_all(
    consumer: &mut TracedConsumer,
    expected: &BTreeSet<(i32, i64)>,
) -> BTreeSet<(i32, i64)> {
    let mut got = BTreeSet::new();
    let started = tokio::time::Instant::now();
    while got.len() < expected.len() {
        assert!(
            started.elapsed() < DEADLINE,
            "only {got:?} of {expected:?} within {DEADLINE:?}"
        );
        let records = consumer
            .poll()
            .await
            .expect("a retriable error fails no poll");
        for r in records {
            assert!(
                got.insert((r.partition, r.offset)),
                "record {}/{} handed out twice",
                r.partition,
                r.offset
            );
            r.finish();
        }
    }
    got
}

#[tokio::test]
async fn retriable_fetch_errors_are_retried_and_every_record_comes_once() {
    bounded("retried fetches", async {
        let broker = Broker::builder().start().await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let cases = [
            (ErrorCode::NotEnoughReplicas, 1),
            (ErrorCode::NotEnoughReplicas, 4),
            (ErrorCode::RequestTimedOut, 3),
            (ErrorCode::NetworkException, 2),
            (ErrorCode::KafkaStorageError, 2),
        ];
        for (error, count) in cases {
            retried_case(&broker, &producer, &capture, error, count).await;
        }
    })
    .await;
}

/// Every record of two partitions comes once although `count` fetches
/// fail with `error`, first with records waiting, then while idle.
async fn retried_case(
    broker: &Broker,
    producer: &TracedProducer,
    capture: &SpanCapture,
    error: ErrorCode,
    count: usize,
) {
    let topic = broker.create_unique_topic("fetch-retry", 2).await.unwrap();
    let mut consumer = TracedConsumer::builder("reader", &topic)
        .build(broker, capture.tracer("reader"))
        .await
        .unwrap();
    let mut expected = BTreeSet::new();
    for n in 0..3 {
        for partition in 0..2 {
            producer
                .send(&Context::new(), &topic, partition, record(n))
                .await
                .unwrap();
            expected.insert((partition, i64::try_from(n).unwrap()));
        }
    }
    broker.request_errors(ApiKey::Fetch, error, count).unwrap();
    let got = poll_all(&mut consumer, &expected).await;
    assert_eq!(got, expected, "{error:?} x{count}: each record once");

    // Errors while the consumer waits on empty partitions: the
    // fetches carried between polls are retried too.
    broker.request_errors(ApiKey::Fetch, error, count).unwrap();
    assert!(consumer.poll().await.expect("an idle poll").is_empty());
    let mut later = BTreeSet::new();
    for partition in 0..2 {
        producer
            .send(&Context::new(), &topic, partition, record(3))
            .await
            .unwrap();
        later.insert((partition, 3));
    }
    let got = poll_all(&mut consumer, &later).await;
    assert_eq!(got, later, "{error:?} x{count} while idle");
    broker.clear_request_errors(ApiKey::Fetch).unwrap();
}

#[tokio::test]
async fn a_fatal_fetch_error_fails_the_poll_and_loses_nothing() {
    bounded("fatal fetch error", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("fetch-fatal", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let mut consumer = TracedConsumer::builder("reader", &topic)
            .build(&broker, capture.tracer("reader"))
            .await
            .unwrap();
        producer
            .send(&Context::new(), &topic, 0, record(0))
            .await
            .unwrap();

        broker
            .request_errors(ApiKey::Fetch, ErrorCode::TopicAuthorizationFailed, 1)
            .unwrap();
        let err = consumer
            .poll()
            .await
            .expect_err("a fatal error fails the poll");
        let text = err.to_string();
        assert!(text.contains(&topic), "names the topic: {text}");
        assert!(
            text.contains("TopicAuthorizationFailed"),
            "names the error: {text}"
        );

        let got = poll_all(&mut consumer, &BTreeSet::from([(0, 0)])).await;
        assert_eq!(got, BTreeSet::from([(0, 0)]));
    })
    .await;
}

#[tokio::test]
async fn a_retriable_error_past_the_deadline_fails_naming_it() {
    bounded("persistent retriable error", async {
        let deadline = Duration::from_secs(1);
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("fetch-stuck", 1).await.unwrap();
        let capture = SpanCapture::new();
        let mut consumer = TracedConsumer::builder("reader", &topic)
            .deadline(deadline)
            .build(&broker, capture.tracer("reader"))
            .await
            .unwrap();

        broker
            .request_errors(ApiKey::Fetch, ErrorCode::NotEnoughReplicas, 100_000)
            .unwrap();
        let started = tokio::time::Instant::now();
        let err = consumer
            .poll()
            .await
            .expect_err("the error outlasts the deadline");
        let elapsed = started.elapsed();
        broker.clear_request_errors(ApiKey::Fetch).unwrap();
        let text = err.to_string();
        assert!(
            text.contains(&topic) && text.contains("reader"),
            "names the consumer and topic: {text}"
        );
        assert!(
            text.contains("NotEnoughReplicas"),
            "names the last error: {text}"
        );
        assert!(text.contains("retried"), "says it retried: {text}");
        assert!(
            elapsed >= deadline / 2,
            "gave up after {elapsed:?}, before retrying for long: {text}"
        );

        // The same consumer reads on once the broker recovers.
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        producer
            .send(&Context::new(), &topic, 0, record(0))
            .await
            .unwrap();
        let got = poll_all(&mut consumer, &BTreeSet::from([(0, 0)])).await;
        assert_eq!(got, BTreeSet::from([(0, 0)]));
    })
    .await;
}
