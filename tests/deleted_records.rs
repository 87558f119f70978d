//! Records the broker deleted are never skipped in silence: a consumer
//! starting from the earliest record after the head of a partition was
//! deleted tells of the gap (span event, attribute, counter), the broker's
//! watch reports it, and a watch that cannot look fails loudly.

use kafka_trace_harness::broker::{ApiKey, ErrorCode};
use kafka_trace_harness::traced::{
    DELETED_COUNT, DELETED_OFFSET_FIRST, DELETED_OFFSET_LAST, RECORDS_DELETED_EVENT, StartFrom,
    attr,
};
use kafka_trace_harness::{Broker, Error, SpanCapture, TracedConsumer};
use opentelemetry::{Key, Value};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;

mod support;
use support::{DEADLINE, bounded, record};

/// Batches of 512 KiB written to `partition`: 12 of them are more than
/// the embedded broker keeps per partition (5 MiB), so it deletes the
/// oldest. Returns how many records were written.
async fn overflow(partition: &PartitionClient, batches: usize) -> usize {
    let mut produced = 0;
    for _ in 0..batches {
        let batch: Vec<Record> = (0..8)
            .map(|n| Record {
                value: Some(vec![b'x'; 64 * 1024]),
                ..record(n)
            })
            .collect();
        produced += batch.len();
        partition
            .produce(batch, Compression::NoCompression)
            .await
            .expect("produce");
    }
    produced
}

async fn partition_client(broker: &Broker, topic: &str, partition: i32) -> PartitionClient {
    broker
        .client()
        .await
        .expect("client")
        .partition_client(topic, partition, UnknownTopicHandling::Error)
        .await
        .expect("partition client")
}

#[tokio::test]
async fn a_consumer_from_the_earliest_record_tells_of_the_deleted_head() {
    bounded("earliest after deletion", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("deleted-head", 2).await.unwrap();
        let produced = overflow(&partition_client(&broker, &topic, 1).await, 12).await;
        let watched = broker.check_deleted_records().await.unwrap();
        assert_eq!(
            watched.len(),
            1,
            "the broker's watch reports it: {watched:?}"
        );
        let deleted = watched[0].count;
        assert_eq!(
            (watched[0].topic.as_str(), watched[0].partition),
            (topic.as_str(), 1)
        );
        assert!(deleted > 0 && deleted < produced as i64, "{deleted}");

        let capture = SpanCapture::new();
        let mut consumer = TracedConsumer::builder("late", &topic)
            .start_from(StartFrom::Earliest)
            .build(&broker, capture.tracer("late"))
            .await
            .unwrap();
        assert_eq!(consumer.deleted_unread(), watched, "the consumer's counter");
        assert_eq!(consumer.deleted_unread_count(), deleted);

        let left = produced - deleted as usize;
        let read = consumer.consume(left, DEADLINE).await.unwrap();
        assert_eq!(read.first().map(|r| r.offset), Some(deleted));
        for consumed in read {
            consumed.finish();
        }

        let forest = capture.forest();
        let told: Vec<_> = forest
            .named(&format!("process {topic}"))
            .filter(|s| {
                s.data()
                    .events
                    .iter()
                    .any(|e| e.name == RECORDS_DELETED_EVENT)
            })
            .collect();
        assert_eq!(told.len(), 1, "only the partition's first span tells");
        let span = &told[0];
        assert_eq!(span.attribute(attr::OFFSET), Some(&Value::I64(deleted)));
        assert_eq!(span.attribute(DELETED_COUNT), Some(&Value::I64(deleted)));
        let event = span
            .data()
            .events
            .iter()
            .find(|e| e.name == RECORDS_DELETED_EVENT)
            .unwrap();
        let of = |key: &str| {
            event
                .attributes
                .iter()
                .find(|kv| kv.key == Key::from(key.to_owned()))
                .map(|kv| kv.value.clone())
        };
        assert_eq!(of(DELETED_OFFSET_FIRST), Some(Value::I64(0)));
        assert_eq!(of(DELETED_OFFSET_LAST), Some(Value::I64(deleted - 1)));
        assert_eq!(of(DELETED_COUNT), Some(Value::I64(deleted)));
        assert_eq!(of(attr::PARTITION_ID), Some(Value::from("1")));

        let err = broker
            .shutdown()
            .await
            .expect_err("shutdown reports the loss");
        assert!(matches!(err, Error::BrokerDeletedRecords { .. }), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_consumer_of_an_intact_partition_tells_nothing() {
    bounded("earliest, nothing deleted", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("intact", 1).await.unwrap();
        partition_client(&broker, &topic, 0)
            .await
            .produce(vec![record(0)], Compression::NoCompression)
            .await
            .unwrap();
        let capture = SpanCapture::new();
        let mut consumer = TracedConsumer::builder("reader", &topic)
            .build(&broker, capture.tracer("reader"))
            .await
            .unwrap();
        consumer
            .consume(1, DEADLINE)
            .await
            .unwrap()
            .pop()
            .unwrap()
            .finish();
        assert!(consumer.deleted_unread().is_empty());
        assert_eq!(consumer.deleted_unread_count(), 0);
        let forest = capture.forest();
        let span = forest.named(&format!("process {topic}")).next().unwrap();
        assert!(
            span.data()
                .events
                .iter()
                .all(|e| e.name != RECORDS_DELETED_EVENT)
        );
        assert_eq!(span.attribute(DELETED_COUNT), None);
        broker.shutdown().await.unwrap();
    })
    .await;
}

/// Every ListOffsets request fails: the watch cannot read any log start.
fn fail_every_log_start_request(broker: &Broker) {
    broker
        .request_errors(
            ApiKey::ListOffsets,
            ErrorCode::TopicAuthorizationFailed,
            100_000,
        )
        .unwrap();
}

#[tokio::test]
async fn a_shutdown_whose_last_look_fails_fails_naming_the_partition() {
    bounded("watch look fails", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("unlooked", 2).await.unwrap();
        fail_every_log_start_request(&broker);
        overflow(&partition_client(&broker, &topic, 1).await, 12).await;

        let err = broker
            .check_deleted_records()
            .await
            .expect_err("no log start could be read");
        let text = err.to_string();
        assert!(matches!(err, Error::DeletionWatch { .. }), "{text}");
        // Every partition is named, not only the first that failed.
        for partition in [0, 1] {
            assert!(
                text.contains(&format!("topic {topic:?} partition {partition}")),
                "{text}"
            );
        }

        // Records were deleted and no look could see it: never Ok.
        let err = broker
            .shutdown()
            .await
            .expect_err("the shutdown cannot tell what was deleted");
        let text = err.to_string();
        assert!(matches!(err, Error::DeletionWatch { .. }), "{text}");
        assert!(
            text.contains(&format!("topic {topic:?} partition 1")),
            "{text}"
        );
        assert!(
            text.contains("TopicAuthorizationFailed") || text.contains("uthorization"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_watch_that_cannot_look_says_so_and_recovers() {
    bounded("watch reports its trouble", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("watched", 1).await.unwrap();
        let mut problems = broker.watch_deletion_problem().expect("embedded: watched");
        fail_every_log_start_request(&broker);
        overflow(&partition_client(&broker, &topic, 0).await, 12).await;

        // The watch looks on its own, and tells why it cannot see.
        let problem = tokio::time::timeout(DEADLINE, problems.wait_for(Option::is_some))
            .await
            .expect("the watch reports within the deadline")
            .expect("watch alive")
            .clone()
            .unwrap();
        assert!(
            problem.contains(&format!("topic {topic:?} partition 0")),
            "{problem}"
        );
        assert_eq!(broker.deletion_watch_problem(), Some(problem));

        // Once the broker answers again, it sees the deletion and the
        // problem clears.
        broker.clear_request_errors(ApiKey::ListOffsets).unwrap();
        let mut seen = broker.watch_deleted().unwrap();
        tokio::time::timeout(DEADLINE, seen.wait_for(|d| !d.is_empty()))
            .await
            .expect("the watch sees the deletion within the deadline")
            .unwrap();
        tokio::time::timeout(DEADLINE, problems.wait_for(Option::is_none))
            .await
            .expect("the problem clears within the deadline")
            .unwrap();
        let err = broker.shutdown().await.expect_err("records were deleted");
        assert!(matches!(err, Error::BrokerDeletedRecords { .. }), "{err}");
    })
    .await;
}
