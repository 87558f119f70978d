//! A stable consumer group's sole member rejoins (a new subscription, or
//! kafka-python learning its topic's partitions after joining) and gets
//! its records at once, as on Kafka; the mock alone holds such a rejoin for
//! the session timeout less 1 s (44 s with librdkafka's default).

#[path = "support/clients.rs"]
mod clients;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clients::{group_consumer, partition};
use kafka_trace_harness::Broker;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rskafka::client::partition::Compression;
use rskafka::record::Record;

/// Far below the 44 s the mock holds a rejoin.
const DEADLINE: Duration = Duration::from_secs(10);

async fn produce(broker: &Broker, topic: &str) {
    partition(broker, topic)
        .await
        .produce(
            vec![Record {
                key: None,
                value: Some(topic.as_bytes().to_vec()),
                headers: Default::default(),
                timestamp: Utc::now(),
            }],
            Compression::NoCompression,
        )
        .await
        .expect("produce");
}

/// Polls until a record of `topic` comes, within [`DEADLINE`].
async fn first_record_of(consumer: &Arc<BaseConsumer>, topic: &str) -> Option<Duration> {
    let consumer = Arc::clone(consumer);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) if message.topic() == topic => return Some(started.elapsed()),
                Some(Err(error)) => panic!("consumer error: {error}"),
                _ => {}
            }
        }
        None
    })
    .await
    .expect("poll task")
}

// Two workers: closing a librdkafka consumer blocks its thread while it
// leaves the group, through the broker's front, which runs on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_members_rejoin_is_not_held_for_the_session_timeout() {
    let broker = Broker::start().await.expect("broker");
    let first = broker
        .create_unique_topic("rejoin-first", 1)
        .await
        .expect("topic");
    let second = broker
        .create_unique_topic("rejoin-second", 1)
        .await
        .expect("topic");
    produce(&broker, &first).await;
    produce(&broker, &second).await;
    let consumer = Arc::new(group_consumer(&broker, &first, None));
    assert!(
        first_record_of(&consumer, &first).await.is_some(),
        "no record of {first} within {DEADLINE:?} of joining"
    );
    // A new subscription: the group's only member rejoins.
    consumer.subscribe(&[&first, &second]).expect("subscribe");
    let waited = first_record_of(&consumer, &second).await;
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .expect("closing the consumer");
    assert!(
        waited.is_some(),
        "no record of {second} within {DEADLINE:?} of the rejoin"
    );
    broker.shutdown().await.expect("shutdown");
}
