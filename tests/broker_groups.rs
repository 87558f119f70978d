//! Rebalances end as on Kafka, once every member has rejoined: a stable
//! group's sole member rejoins (a new subscription, or kafka-python
//! learning its topic's partitions after joining) and gets its records at
//! once; a second member gets its partition about one heartbeat after it
//! subscribed. The mock alone held both for the session timeout less 1 s
//! (44 s with librdkafka's default).

#[path = "support/clients.rs"]
mod clients;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use clients::group_consumer;
use kafka_trace_harness::Broker;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rskafka::client::partition::Compression;
use rskafka::record::Record;

/// Far below the 44 s the mock holds a rejoin.
const DEADLINE: Duration = Duration::from_secs(10);

/// Produces one record (the topic's name) to `partition` of `topic`.
async fn produce_to(broker: &Broker, topic: &str, partition: i32) {
    clients::partition(broker, topic, partition)
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
    produce_to(&broker, &first, 0).await;
    produce_to(&broker, &second, 0).await;
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

/// The partitions `consumer` holds.
fn assigned(consumer: &BaseConsumer) -> Vec<i32> {
    let mut partitions: Vec<i32> = consumer
        .assignment()
        .map(|list| list.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default();
    partitions.sort_unstable();
    partitions
}

/// A second member joining a stable group with librdkafka's defaults
/// (session 45 s, heartbeat 3 s): on Kafka the rebalance ends once the
/// first member rejoins, on its next heartbeat; the mock alone held it for
/// the session timeout less 1 s (44 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_gets_its_partition_within_a_heartbeat() {
    let broker = Broker::start().await.expect("broker");
    let topic = broker
        .create_unique_topic("second-member", 2)
        .await
        .expect("topic");
    let first = Arc::new(group_consumer(&broker, &topic, None));
    produce_to(&broker, &topic, 0).await;
    assert!(
        first_record_of(&first, &topic).await.is_some(),
        "no record for the first member within {DEADLINE:?}"
    );
    // The first member keeps polling (librdkafka rebalances from its
    // poll) until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let first_polls = {
        let (first, stop) = (Arc::clone(&first), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(Err(error)) = first.poll(Duration::from_millis(50)) {
                    panic!("first member: {error}");
                }
            }
        })
    };

    let second = Arc::new(group_consumer(&broker, &topic, None));
    let joined = Instant::now();
    // Records keep coming to both partitions while the second member waits.
    let producing = async {
        while !stop.load(Ordering::SeqCst) && joined.elapsed() < DEADLINE {
            produce_to(&broker, &topic, 0).await;
            produce_to(&broker, &topic, 1).await;
            // Pacing, not synchronisation: a record every 200 ms per partition.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (waited, ()) = tokio::join!(
        async {
            let got = first_record_of(&second, &topic).await;
            stop.store(true, Ordering::SeqCst);
            got
        },
        producing
    );
    let waited = waited.unwrap_or_else(|| {
        panic!("no record for the second member within {DEADLINE:?} of its joining")
    });
    println!(
        "second member's first record {:?} after it subscribed ({:?} since)",
        waited,
        joined.elapsed()
    );
    first_polls.join().expect("first member's poll thread");
    // Each member holds one of the two partitions.
    let (first_has, second_has) = (assigned(&first), assigned(&second));
    assert_eq!(
        first_has.len() + second_has.len(),
        2,
        "assignments {first_has:?} and {second_has:?}"
    );
    assert!(
        !first_has.is_empty() && !second_has.is_empty(),
        "assignments {first_has:?} and {second_has:?}: one member holds both"
    );
    tokio::task::spawn_blocking(move || {
        drop(first);
        drop(second);
    })
    .await
    .expect("closing the consumers");
    broker.shutdown().await.expect("shutdown");
}
