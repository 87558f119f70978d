//! The embedded broker answers a waiting fetch as soon as records arrive,
//! like Kafka, not when the fetch's `max_wait` runs out.
//!
//! Every fetch here waits up to 30 s, and each round must end well before
//! the test's 10 s deadline: only an early answer passes.

#[path = "support/clients.rs"]
mod clients;

use std::time::Duration;

use chrono::Utc;
use clients::{group_consumer, partition};
use kafka_trace_harness::Broker;
use rdkafka::Message;
use rskafka::client::partition::Compression;
use rskafka::record::Record;

/// How long every fetch may wait at the broker.
const FETCH_WAIT: Duration = Duration::from_secs(30);
/// How long a test waits for a record that was produced: a third of the
/// fetch's wait, so a fetch answered only at its end fails.
const DEADLINE: Duration = Duration::from_secs(10);
const ROUNDS: i64 = 5;

fn record(n: i64) -> Record {
    Record {
        key: Some(format!("k{n}").into_bytes()),
        value: Some(format!("v{n}").into_bytes()),
        headers: Default::default(),
        timestamp: Utc::now(),
    }
}

// Two workers: the fetch leaves from one while the produce leaves from
// the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_fetch_is_answered_when_records_arrive() {
    let broker = Broker::start().await.expect("broker");
    let topic = broker
        .create_unique_topic("long-poll-raw", 1)
        .await
        .expect("topic");
    let producer = partition(&broker, &topic, 0).await;
    let consumer = std::sync::Arc::new(partition(&broker, &topic, 0).await);
    let wait_ms = i32::try_from(FETCH_WAIT.as_millis()).expect("wait");
    for offset in 0..ROUNDS {
        // The fetch for the next offset is on its way (or waiting at the
        // broker) while the record is produced.
        let (asking, asked) = tokio::sync::oneshot::channel();
        let fetch = tokio::spawn({
            let consumer = std::sync::Arc::clone(&consumer);
            async move {
                let _ = asking.send(());
                consumer.fetch_records(offset, 1..1_000_000, wait_ms).await
            }
        });
        asked.await.expect("the fetch task started");
        producer
            .produce(vec![record(offset)], Compression::NoCompression)
            .await
            .expect("produce");
        let (records, _) = tokio::time::timeout(DEADLINE, fetch)
            .await
            .unwrap_or_else(|_| {
                panic!("round {offset}: no fetch answer within {DEADLINE:?} of the produce")
            })
            .expect("fetch task")
            .expect("fetch");
        assert_eq!(
            records.first().map(|r| r.offset),
            Some(offset),
            "round {offset}"
        );
    }
    broker.shutdown().await.expect("shutdown");
}

// Two workers: closing a librdkafka consumer blocks its thread while it
// leaves the group, through the broker's front, which runs on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_librdkafka_group_consumer_gets_each_record_before_its_fetch_wait_ends() {
    let broker = Broker::start().await.expect("broker");
    let topic = broker
        .create_unique_topic("long-poll-librdkafka", 1)
        .await
        .expect("topic");
    let producer = partition(&broker, &topic, 0).await;
    let consumer = std::sync::Arc::new(group_consumer(&broker, &topic, Some(FETCH_WAIT)));
    for offset in 0..ROUNDS {
        producer
            .produce(vec![record(offset)], Compression::NoCompression)
            .await
            .expect("produce");
        let polling = std::sync::Arc::clone(&consumer);
        let got = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + DEADLINE;
            while std::time::Instant::now() < deadline {
                match polling.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => return Some(message.offset()),
                    Some(Err(error)) => panic!("consumer error: {error}"),
                    None => {}
                }
            }
            None
        })
        .await
        .expect("poll task");
        assert_eq!(
            got,
            Some(offset),
            "round {offset}: no record within {DEADLINE:?} of its produce"
        );
    }
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .expect("closing the consumer");
    broker.shutdown().await.expect("shutdown");
}

/// A fetch of many empty partitions waits its `max_wait` too: its empty
/// answer (about 36 KiB here) is held and read like a small one, not sent
/// on at once, which would make the client fetch again at once, busy.
#[tokio::test]
async fn a_fetch_of_many_empty_partitions_waits_like_a_small_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PARTITIONS: i32 = 1_200;
    const MAX_WAIT_MS: i32 = 500;
    let broker = Broker::builder()
        .embedded_brokers(1)
        .start()
        .await
        .expect("broker");
    let topic = broker
        .create_unique_topic("long-poll-wide", PARTITIONS as u16)
        .await
        .expect("topic");
    // Fetch v4: header, then replica -1, max_wait, min_bytes 1, max_bytes,
    // isolation level, one topic with every partition from offset 0.
    let mut body = Vec::new();
    body.extend_from_slice(&1i16.to_be_bytes()); // api key: Fetch
    body.extend_from_slice(&4i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&1i16.to_be_bytes());
    body.push(b't'); // client id
    body.extend_from_slice(&(-1i32).to_be_bytes());
    body.extend_from_slice(&MAX_WAIT_MS.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(50i32 << 20).to_be_bytes());
    body.push(0);
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&PARTITIONS.to_be_bytes());
    for partition in 0..PARTITIONS {
        body.extend_from_slice(&partition.to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.extend_from_slice(&(1i32 << 20).to_be_bytes());
    }
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);

    let mut stream = tokio::net::TcpStream::connect(broker.bootstrap_servers())
        .await
        .expect("connect");
    let asked = std::time::Instant::now();
    stream.write_all(&request).await.expect("send");
    let answer = tokio::time::timeout(DEADLINE, async {
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await?;
        let mut frame = vec![0u8; i32::from_be_bytes(length) as usize];
        stream.read_exact(&mut frame).await?;
        Ok::<_, std::io::Error>(frame)
    })
    .await
    .expect("an answer within the deadline")
    .expect("reading the answer");
    let waited = asked.elapsed();
    assert!(
        answer.len() > 32 * 1024,
        "an answer larger than the old hold: {} bytes",
        answer.len()
    );
    assert!(
        waited >= Duration::from_millis(400),
        "the empty answer came after {waited:?}, not after the fetch's {MAX_WAIT_MS} ms"
    );
}
