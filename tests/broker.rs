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
    // Bound but never listening: connections are refused, and no parallel
    // test's broker can take the port while this socket holds it.
    let unanswered = tokio::net::TcpSocket::new_v4().unwrap();
    unanswered.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = unanswered.local_addr().unwrap().port();
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
    drop(unanswered);
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

/// The harness image runs the mock cluster, whose retention deletes the
/// oldest records beyond 5 MiB per partition: the container backend
/// watches for that as the embedded one does. Also proves the published
/// ports: the client reaches the advertised address from the host.
#[tokio::test]
#[cfg(feature = "container")]
#[ignore = "needs Docker and the local image (scripts/build-image.sh); .ci/run runs it"]
async fn a_harness_container_watches_for_deleted_records() {
    let broker = Broker::builder()
        .backend(Backend::Container(ContainerImage::local_harness()))
        .timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("container broker");
    assert!(
        broker.bootstrap_servers().starts_with("127.0.0.1:"),
        "{}",
        broker.bootstrap_servers()
    );
    let mut seen = broker
        .watch_deleted()
        .expect("the harness container is watched");
    let topic = broker
        .create_unique_topic("retention", 1)
        .await
        .expect("topic");
    let client = partition(&broker, &topic, 0).await;
    // 12 batches of 512 KiB: more than the mock cluster's 5 MiB.
    for _ in 0..12 {
        let batch: Vec<Record> = (0..8)
            .map(|n| Record {
                value: Some(vec![b'x'; 64 * 1024]),
                ..record(n)
            })
            .collect();
        client
            .produce(batch, Compression::NoCompression)
            .await
            .expect("produced");
    }
    let deadline = Duration::from_secs(20);
    let waited = tokio::time::timeout(
        deadline,
        seen.wait_for(|deleted| deleted.iter().any(|d| d.topic == topic && d.count > 0)),
    )
    .await
    .map(|seen| seen.is_ok());
    assert_eq!(
        waited,
        Ok(true),
        "the watch saw no deleted record of {topic} within {deadline:?}"
    );
    match broker.shutdown().await {
        Err(Error::BrokerDeletedRecords { deleted, .. }) => {
            assert!(deleted.iter().any(|d| d.topic == topic), "{deleted:?}");
        }
        other => panic!("expected BrokerDeletedRecords, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The TCP front: ApiVersions from new clients, malformed frames, and the
// connection faults (cut, stall, latency).

/// Deadline for any one raw exchange with the front.
const RAW_DEADLINE: Duration = Duration::from_secs(5);

/// An ApiVersions request frame. v3 and later use the flexible request
/// header (v2) and body, as kafka-python 3 (v4) and Java clients (v3) send.
fn api_versions_request(version: i16, correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(18i16.to_be_bytes());
    body.extend(version.to_be_bytes());
    body.extend(correlation_id.to_be_bytes());
    // The header's client id is a classic nullable string at every version.
    body.extend(8i16.to_be_bytes());
    body.extend(b"raw-test");
    if version >= 3 {
        body.push(0); // header tagged fields
        // client_software_name and _version: compact strings (length + 1).
        for text in [&b"raw-test"[..], b"1.0"] {
            body.push(text.len() as u8 + 1);
            body.extend(text);
        }
        body.push(0); // body tagged fields
    }
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// An ApiVersions response, read as far as every version agrees.
#[derive(Debug)]
struct VersionsAnswer {
    correlation_id: i32,
    error_code: i16,
    /// (api_key, min, max).
    ranges: Vec<(i16, i16, i16)>,
    /// Bytes after the ranges: none in the v0 layout, the throttle time in v1, v2.
    trailing: usize,
}

fn parse_versions_answer(frame: &[u8]) -> VersionsAnswer {
    let i16_at = |at: usize| i16::from_be_bytes([frame[at], frame[at + 1]]);
    let i32_at = |at: usize| i32::from_be_bytes(frame[at..at + 4].try_into().unwrap());
    assert!(frame.len() >= 10, "short ApiVersions answer: {frame:?}");
    let count = usize::try_from(i32_at(6)).expect("a classic array count (v0 layout)");
    assert!(
        frame.len() >= 10 + 6 * count,
        "{count} ranges announced in {} bytes",
        frame.len()
    );
    VersionsAnswer {
        correlation_id: i32_at(0),
        error_code: i16_at(4),
        ranges: (0..count)
            .map(|i| {
                let at = 10 + 6 * i;
                (i16_at(at), i16_at(at + 2), i16_at(at + 4))
            })
            .collect(),
        trailing: frame.len() - 10 - 6 * count,
    }
}

/// Reads one response frame (without its length prefix) within the deadline.
async fn read_frame(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await?;
        let mut frame = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut frame).await?;
        Ok::<_, std::io::Error>(frame)
    };
    tokio::time::timeout(RAW_DEADLINE, read)
        .await
        .expect("a response frame within the deadline")
        .expect("reading a response frame")
}

async fn raw_connection(broker: &Broker) -> tokio::net::TcpStream {
    let stream = tokio::time::timeout(
        RAW_DEADLINE,
        tokio::net::TcpStream::connect(broker.bootstrap_servers()),
    )
    .await
    .expect("connecting within the deadline")
    .expect("connecting to the front");
    stream.set_nodelay(true).unwrap();
    stream
}

async fn ask_versions(stream: &mut tokio::net::TcpStream, version: i16, id: i32) -> VersionsAnswer {
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(&api_versions_request(version, id))
        .await
        .expect("sending ApiVersions");
    parse_versions_answer(&read_frame(stream).await)
}

/// KIP-511: an ApiVersions version above the broker's is answered with
/// UNSUPPORTED_VERSION (35) in the v0 layout, listing the supported ranges.
fn assert_unsupported_in_v0_layout(answer: &VersionsAnswer, asked: i16, id: i32) {
    assert_eq!(answer.correlation_id, id);
    assert_eq!(answer.error_code, 35, "UNSUPPORTED_VERSION for v{asked}");
    assert_eq!(answer.trailing, 0, "v0 layout: nothing after the ranges");
    let api_versions = answer
        .ranges
        .iter()
        .find(|(key, _, _)| *key == 18)
        .unwrap_or_else(|| panic!("ApiVersions itself is listed: {answer:?}"));
    assert_eq!(api_versions.1, 0, "{answer:?}");
    assert!(
        (2..asked).contains(&api_versions.2),
        "ApiVersions 0..=2 at least, below the v{asked} asked: {answer:?}"
    );
}

#[tokio::test]
async fn api_versions_above_the_mock_get_unsupported_version_in_the_v0_layout() {
    let broker = Broker::builder().start().await.expect("broker");
    let mut stream = raw_connection(&broker).await;

    let v3 = ask_versions(&mut stream, 3, 1).await;
    assert_unsupported_in_v0_layout(&v3, 3, 1);
    let v4 = ask_versions(&mut stream, 4, 2).await;
    assert_unsupported_in_v0_layout(&v4, 4, 2);

    // The client's retry at the version offered succeeds on the same connection.
    let v2 = ask_versions(&mut stream, 2, 3).await;
    assert_eq!(v2.correlation_id, 3);
    assert_eq!(v2.error_code, 0);
    assert_eq!(v2.trailing, 4, "v2: the throttle time follows the ranges");
    for key in [0, 1, 3, 18] {
        assert!(
            v2.ranges.iter().any(|(k, _, _)| *k == key),
            "API key {key} listed: {v2:?}"
        );
    }
    assert_eq!(
        v3.ranges, v2.ranges,
        "the error lists the mock's real ranges"
    );
    // Group APIs capped below the mock's broken flexible versions:
    // JoinGroup v5, LeaveGroup v2, SyncGroup v3.
    for (key, cap) in [(11, 5), (13, 2), (14, 3)] {
        let (_, _, max) = v2
            .ranges
            .iter()
            .find(|(k, _, _)| *k == key)
            .copied()
            .unwrap();
        assert!(max <= cap, "API key {key} offered up to v{max}");
    }
}

#[tokio::test]
async fn api_versions_answers_keep_request_order_even_when_pipelined_and_split() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::builder().start().await.expect("broker");
    let mut stream = raw_connection(&broker).await;
    let asked = [(4, 10), (2, 11), (3, 12), (0, 13), (4, 14)];
    let bytes: Vec<u8> = asked
        .iter()
        .flat_map(|&(version, id)| api_versions_request(version, id))
        .collect();
    // Uneven pieces, so that frame headers straddle the front's reads.
    for piece in bytes.chunks(3) {
        stream.write_all(piece).await.expect("sending a piece");
    }
    for &(version, id) in &asked {
        let answer = parse_versions_answer(&read_frame(&mut stream).await);
        if version > 2 {
            assert_unsupported_in_v0_layout(&answer, version, id);
        } else {
            assert_eq!((answer.correlation_id, answer.error_code), (id, 0));
        }
    }
}

#[tokio::test]
async fn malformed_frames_do_not_stop_the_front() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::builder().start().await.expect("broker");
    let garbage: [&[u8]; 4] = [
        &[0, 0, 0, 2, 0xff, 0xff],        // too short for a request header
        &[0xff, 0xff, 0xff, 0xff, 0, 18], // a negative length
        &[0, 0, 0, 8, 0, 18, 0x7f, 0x7f], // ApiVersions v32639, cut short
        &[0, 0],                          // half a length, then EOF
    ];
    for bytes in garbage {
        let mut stream = raw_connection(&broker).await;
        // The front or the mock may close on such bytes: only the front's
        // survival matters here.
        let _ = stream.write_all(bytes).await;
        drop(stream);
    }
    let mut stream = raw_connection(&broker).await;
    let answer = ask_versions(&mut stream, 4, 7).await;
    assert_unsupported_in_v0_layout(&answer, 4, 7);
    assert_records_round_trip(&broker).await;
}

/// Produces one record and returns how long the call took.
async fn timed_produce(client: &PartitionClient, n: u8) -> (Vec<i64>, Duration) {
    let started = Instant::now();
    let offsets = tokio::time::timeout(
        Duration::from_secs(10),
        client.produce(vec![record(n)], Compression::NoCompression),
    )
    .await
    .expect("produce within 10 s")
    .expect("produce");
    (offsets, started.elapsed())
}

#[tokio::test]
async fn cut_connections_closes_existing_connections_and_accepts_new_ones() {
    use tokio::io::AsyncReadExt;
    let broker = Broker::builder().start().await.expect("broker");
    let topic = broker.create_unique_topic("cut", 1).await.expect("topic");
    let client = partition(&broker, &topic, 0).await;
    assert_eq!(timed_produce(&client, 0).await.0, vec![0]);
    // An answered request proves the raw connection is relayed.
    let mut stream = raw_connection(&broker).await;
    assert_eq!(ask_versions(&mut stream, 2, 1).await.error_code, 0);

    broker.cut_connections().expect("cut");

    // The front closes the connection: EOF (or a reset), not silence.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(RAW_DEADLINE, stream.read(&mut byte))
        .await
        .expect("the cut connection closed within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "read after cut: {read:?}");
    // New connections are relayed, and rskafka reconnects on its own.
    let mut fresh = raw_connection(&broker).await;
    assert_eq!(ask_versions(&mut fresh, 2, 2).await.error_code, 0);
    assert_eq!(timed_produce(&client, 1).await.0, vec![1]);
    let got = fetch_all(&client, 0, 2).await;
    assert_eq!(
        got.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        vec![record(0), record(1)]
    );
}

#[tokio::test]
async fn stall_holds_every_byte_until_it_ends_then_delivers_all_in_order() {
    let broker = Broker::builder().start().await.expect("broker");
    let topic = broker.create_unique_topic("stall", 1).await.expect("topic");
    let client = partition(&broker, &topic, 0).await;
    assert_eq!(timed_produce(&client, 0).await.0, vec![0]);
    let stall = Duration::from_millis(300);

    // Taken before the stall starts, so elapsed >= stall is a hard bound.
    let started = Instant::now();
    broker.stall(stall).expect("stall");
    // A batch larger than the front's 64 KiB buffer, on an existing
    // connection, and a request on a connection opened during the stall.
    let batch: Vec<Record> = (0..=255u8).cycle().take(700).map(record).collect();
    let produce = client.produce(batch.clone(), Compression::NoCompression);
    let fresh = async {
        let mut stream = raw_connection(&broker).await;
        let answer = ask_versions(&mut stream, 2, 9).await;
        (answer.error_code, started.elapsed())
    };
    let (offsets, (fresh_error, fresh_elapsed)) = tokio::time::timeout(
        Duration::from_secs(10),
        futures::future::join(produce, fresh),
    )
    .await
    .expect("both finish within 10 s");
    let produce_elapsed = started.elapsed();
    assert_eq!(offsets.expect("produce"), (1..=700).collect::<Vec<i64>>());
    assert_eq!(fresh_error, 0);
    assert!(produce_elapsed >= stall, "produce took {produce_elapsed:?}");
    assert!(
        fresh_elapsed >= stall,
        "new connection answered in {fresh_elapsed:?}"
    );

    // Nothing lost or reordered: the records read back are the ones sent.
    let got: Vec<Record> = fetch_all(&client, 0, 701)
        .await
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(got[0], record(0));
    assert!(got[1..] == batch[..], "the stalled batch arrived intact");
}

#[tokio::test]
async fn latency_delays_every_response_in_order() {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::builder().start().await.expect("broker");
    let topic = broker
        .create_unique_topic("latency", 1)
        .await
        .expect("topic");
    let client = partition(&broker, &topic, 0).await;
    assert_eq!(timed_produce(&client, 0).await.0, vec![0]);
    let latency = Duration::from_millis(200);
    broker.add_latency(latency).expect("latency");

    let (offsets, elapsed) = timed_produce(&client, 1).await;
    assert_eq!(offsets, vec![1]);
    assert!(elapsed >= latency, "produce round trip {elapsed:?}");
    let started = Instant::now();
    let got = fetch_all(&client, 0, 2).await;
    assert!(
        started.elapsed() >= latency,
        "fetch round trip {:?}",
        started.elapsed()
    );
    assert_eq!(
        got.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        vec![record(0), record(1)]
    );

    // Pipelined requests: every answer late, all in request order.
    let mut stream = raw_connection(&broker).await;
    let started = Instant::now();
    let bytes: Vec<u8> = (20..25)
        .flat_map(|id| api_versions_request(2, id))
        .collect();
    stream.write_all(&bytes).await.expect("sending");
    for id in 20..25 {
        let answer = parse_versions_answer(&read_frame(&mut stream).await);
        assert_eq!((answer.correlation_id, answer.error_code), (id, 0));
    }
    assert!(
        started.elapsed() >= latency,
        "answers after {:?}",
        started.elapsed()
    );

    broker.add_latency(Duration::ZERO).expect("latency off");
    assert_eq!(timed_produce(&client, 2).await.0, vec![2]);
}

#[tokio::test]
async fn connection_faults_need_the_front() {
    let broker = Broker::builder()
        .stall_free(false)
        .start()
        .await
        .expect("broker");
    let err = broker.cut_connections().expect_err("no front, no cut");
    assert!(matches!(err, Error::FaultUnsupported { .. }), "{err:?}");
    assert!(broker.stall(Duration::from_millis(1)).is_err());
    assert!(broker.add_latency(Duration::from_millis(1)).is_err());
    // Nothing would answer them: refused, not accepted and never seen.
    use kafka_trace_harness::broker::{ApiKey, ErrorCode};
    for api in [ApiKey::ListGroups, ApiKey::DescribeGroups] {
        let err = broker
            .request_errors(api, ErrorCode::CoordinatorNotAvailable, 1)
            .expect_err("no front answers the group listing");
        assert!(matches!(err, Error::FaultUnsupported { .. }), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_initial_rebalance_delay_holds_a_new_groups_first_record() {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let delay = Duration::from_millis(1_500);
    let broker = Broker::builder()
        .group_initial_rebalance_delay(delay)
        .start()
        .await
        .expect("broker");
    let topic = broker.create_unique_topic("group", 1).await.expect("topic");
    let client = partition(&broker, &topic, 0).await;
    timed_produce(&client, 0).await;
    let bootstrap = broker.bootstrap_servers().to_owned();
    let first_record = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "delayed")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        let started = Instant::now();
        consumer.subscribe(&[&topic]).expect("subscribe");
        let deadline = started + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
                assert_eq!(message.payload(), Some(&b"value-0"[..]));
                return started.elapsed();
            }
        }
        panic!("no record for group \"delayed\" within 10 s from {bootstrap}");
    })
    .await
    .expect("consumer thread");
    assert!(first_record >= delay, "first record after {first_record:?}");
}
