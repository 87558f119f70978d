//! The broker fixture, on every backend this machine can reach.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use kafka_trace_harness::{Backend, BackendKind, Broker, ContainerImage, Error};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;

async fn partition(broker: &Broker, topic: &str, partition: i32) -> PartitionClient {
    broker
        .client()
        .await
        .expect("client")
        .partition_client(topic, partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition client")
}

fn record(n: u8) -> Record {
    let mut headers = BTreeMap::new();
    headers.insert("traceparent".to_owned(), b"00-abc".to_vec());
    // Every byte value, including ones that are not UTF-8.
    headers.insert("binary".to_owned(), (0..=255u8).rev().chain([n]).collect());
    headers.insert("empty".to_owned(), Vec::new());
    Record {
        key: Some(vec![b'k', n, 0, 0xff]),
        value: Some(format!("value-{n}").into_bytes()),
        headers,
        timestamp: Utc
            .timestamp_millis_opt(1_700_000_000_000 + i64::from(n))
            .unwrap(),
    }
}

async fn fetch_all(client: &PartitionClient, from: i64, expected: usize) -> Vec<(i64, Record)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut next = from;
    while got.len() < expected {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} records arrived",
            got.len()
        );
        let (records, _high_watermark) = client
            .fetch_records(next, 1..1_000_000, 100)
            .await
            .expect("fetch");
        for r in records {
            next = r.offset + 1;
            got.push((r.offset, r.record));
        }
    }
    got
}

async fn assert_records_round_trip(broker: &Broker) {
    let topic = broker
        .create_unique_topic("roundtrip", 1)
        .await
        .expect("topic");
    let client = partition(broker, &topic, 0).await;
    let sent: Vec<Record> = (0..10).map(record).collect();
    let offsets = client
        .produce(sent.clone(), Compression::NoCompression)
        .await
        .expect("produce");
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());

    let got = fetch_all(&client, 0, sent.len()).await;
    let got_records: Vec<Record> = got.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got_records, sent, "keys, values, headers and timestamps");
}

#[tokio::test]
async fn embedded_records_round_trip_byte_for_byte() {
    let broker = Broker::builder().start().await.expect("broker");
    assert_eq!(broker.kind(), BackendKind::Embedded);
    assert_records_round_trip(&broker).await;
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn direct_mock_cluster_round_trips_too() {
    let broker = Broker::builder()
        .stall_free(false)
        .start()
        .await
        .expect("broker");
    assert_records_round_trip(&broker).await;
}

#[tokio::test]
async fn fetch_from_the_middle_of_a_batch_returns_exactly_from_that_offset() {
    let broker = Broker::builder().start().await.expect("broker");
    let topic = broker
        .create_unique_topic("midbatch", 1)
        .await
        .expect("topic");
    let client = partition(&broker, &topic, 0).await;
    // One batch [0..=4], then a batch [5].
    client
        .produce((0..5).map(record).collect(), Compression::NoCompression)
        .await
        .expect("first batch");
    client
        .produce(vec![record(5)], Compression::NoCompression)
        .await
        .expect("second batch");

    let got = fetch_all(&client, 2, 4).await;
    let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, vec![2, 3, 4, 5]);
    let values: Vec<Vec<u8>> = got.into_iter().map(|(_, r)| r.value.unwrap()).collect();
    let expected: Vec<Vec<u8>> = (2..6).map(|n| format!("value-{n}").into_bytes()).collect();
    assert_eq!(values, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_brokers_started_concurrently_all_work() {
    let starts = (0..16).map(|_| async {
        let broker = Broker::builder().start().await.expect("broker");
        let topic = broker.create_unique_topic("many", 2).await.expect("topic");
        let client = partition(&broker, &topic, 1).await;
        let offsets = client
            .produce(vec![record(7)], Compression::NoCompression)
            .await
            .expect("produce");
        assert_eq!(offsets, vec![0]);
        let got = fetch_all(&client, 0, 1).await;
        assert_eq!(got[0].1, record(7));
        broker
    });
    let brokers = futures::future::join_all(starts).await;
    let mut addresses: Vec<&str> = brokers.iter().map(|b| b.bootstrap_servers()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 16, "every broker has its own address");
}

#[tokio::test]
async fn nothing_listening_fails_clearly_within_the_deadline() {
    // Bind then drop: the port is free and nothing accepts on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let result = Broker::builder()
        .backend(Backend::External {
            bootstrap: format!("127.0.0.1:{port}"),
        })
        .timeout(Duration::from_secs(2))
        .start()
        .await;
    let err = result.expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        matches!(err, Error::Client { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn dropping_an_embedded_broker_closes_its_sockets() {
    let broker = Broker::builder().start().await.expect("broker");
    let address = broker.bootstrap_servers().to_owned();
    assert!(tokio::net::TcpStream::connect(&address).await.is_ok());
    drop(broker);
    let deadline = Instant::now() + Duration::from_secs(5);
    // The accept loop ends on its next poll after the abort.
    loop {
        if tokio::net::TcpStream::connect(&address).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{address} still accepts after drop"
        );
        // A poll interval, not synchronisation: the loop checks a condition.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_external_backend_reaches_a_running_broker() {
    let embedded = Broker::builder().start().await.expect("broker");
    let topic = embedded
        .create_unique_topic("external", 1)
        .await
        .expect("topic");
    let external = Broker::builder()
        .backend(Backend::External {
            bootstrap: embedded.bootstrap_servers().to_owned(),
        })
        .start()
        .await
        .expect("external");
    assert_eq!(external.kind(), BackendKind::External);
    let client = partition(&external, &topic, 0).await;
    client
        .produce(vec![record(1)], Compression::NoCompression)
        .await
        .expect("produce");
    assert_eq!(fetch_all(&client, 0, 1).await[0].1, record(1));
}

#[tokio::test]
async fn fault_injection_stays_reachable() {
    let broker = Broker::builder()
        .embedded_brokers(3)
        .start()
        .await
        .expect("broker");
    assert_eq!(broker.bootstrap_servers().split(',').count(), 3);
    let mock = broker
        .mock_cluster()
        .expect("embedded brokers expose the mock API");
    mock.broker_down(2).expect("broker down");
    mock.broker_up(2).expect("broker up");
}

#[test]
fn container_image_references_parse() {
    assert_eq!(
        ContainerImage::parse("apache/kafka-native:4.1.1"),
        ContainerImage::ApacheKafka {
            native: true,
            tag: "4.1.1".into()
        }
    );
    assert_eq!(
        ContainerImage::parse("apache/kafka"),
        ContainerImage::default()
    );
    assert_eq!(
        ContainerImage::parse("kafka-trace-harness:local"),
        ContainerImage::local_harness()
    );
    assert_eq!(
        ContainerImage::parse("localhost:5000/harness"),
        ContainerImage::Harness {
            name: "localhost:5000/harness".into(),
            tag: "latest".into()
        }
    );
}

#[tokio::test]
#[cfg(feature = "container")]
#[ignore = "needs Docker and the local image (scripts/build-image.sh); .ci/run runs it"]
async fn container_records_round_trip_byte_for_byte() {
    let broker = Broker::builder()
        .backend(Backend::Container(ContainerImage::local_harness()))
        .timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("container broker");
    assert_eq!(broker.kind(), BackendKind::Container);
    assert_records_round_trip(&broker).await;
    broker.shutdown().await.expect("container removed");
}
