//! Errors injected for ListGroups and DescribeGroups reach their clients.
//! The fronts answer both APIs themselves (librdkafka's mock answers
//! neither), so `request_errors` for them was accepted and never
//! delivered: the mock, which held the errors, never saw such a request.

use std::time::Duration;

use kafka_trace_harness::Broker;
use kafka_trace_harness::broker::{ApiKey, ErrorCode};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound of any one raw exchange, or client call, here.
const DEADLINE: Duration = Duration::from_secs(10);
const LIST_GROUPS: i16 = 16;
const DESCRIBE_GROUPS: i16 = 15;

/// A request frame: header v1 (client id "raw-test"), then `body`.
fn request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![0; 4];
    frame.extend(api_key.to_be_bytes());
    frame.extend(version.to_be_bytes());
    frame.extend(correlation_id.to_be_bytes());
    frame.extend(8i16.to_be_bytes());
    frame.extend(b"raw-test");
    frame.extend(body);
    let length = u32::try_from(frame.len() - 4).unwrap();
    frame[..4].copy_from_slice(&length.to_be_bytes());
    frame
}

/// Sends `frame` and reads one response frame (without its length prefix,
/// correlation id checked and dropped) within the deadline.
async fn exchange(stream: &mut TcpStream, frame: &[u8]) -> Vec<u8> {
    let exchange = async {
        stream.write_all(frame).await?;
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await?;
        let mut answer = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("an answer within the deadline")
        .expect("a raw exchange with the front");
    assert_eq!(answer[..4], frame[8..12], "the answer's correlation id");
    answer[4..].to_vec()
}

async fn raw_connection(broker: &Broker) -> TcpStream {
    tokio::time::timeout(DEADLINE, TcpStream::connect(broker.bootstrap_servers()))
        .await
        .expect("connecting within the deadline")
        .expect("connecting to the front")
}

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// A ListGroups v1 exchange: (error code, groups listed).
async fn list_groups(stream: &mut TcpStream, correlation_id: i32) -> (i16, i32) {
    let answer = exchange(stream, &request(LIST_GROUPS, 1, correlation_id, &[])).await;
    // throttle_time_ms, error_code, groups count.
    (i16_at(&answer, 4), i32_at(&answer, 6))
}

/// A DescribeGroups v0 exchange for `groups`: each group's (error code, id, state).
async fn describe_groups(
    stream: &mut TcpStream,
    correlation_id: i32,
    groups: &[&str],
) -> Vec<(i16, String, String)> {
    let mut body = i32::try_from(groups.len()).unwrap().to_be_bytes().to_vec();
    for group in groups {
        body.extend(i16::try_from(group.len()).unwrap().to_be_bytes());
        body.extend(group.as_bytes());
    }
    let answer = exchange(stream, &request(DESCRIBE_GROUPS, 0, correlation_id, &body)).await;
    let mut at = 0;
    let string = |at: &mut usize| {
        let length = usize::try_from(i16_at(&answer, *at)).unwrap();
        let text = String::from_utf8(answer[*at + 2..*at + 2 + length].to_vec()).unwrap();
        *at += 2 + length;
        text
    };
    let count = i32_at(&answer, at);
    at += 4;
    let mut described = Vec::new();
    for _ in 0..count {
        let error = i16_at(&answer, at);
        at += 2;
        let id = string(&mut at);
        let state = string(&mut at);
        string(&mut at); // protocol_type
        string(&mut at); // protocol
        assert_eq!(i32_at(&answer, at), 0, "no member described");
        at += 4;
        described.push((error, id, state));
    }
    described
}

#[tokio::test]
async fn injected_list_and_describe_group_errors_answer_the_next_requests() {
    let broker = Broker::start().await.expect("broker");
    let mut stream = raw_connection(&broker).await;

    broker
        .request_errors(ApiKey::ListGroups, ErrorCode::CoordinatorNotAvailable, 1)
        .expect("ListGroups errors");
    assert_eq!(
        list_groups(&mut stream, 1).await,
        (15, 0),
        "the injected error"
    );
    assert_eq!(list_groups(&mut stream, 2).await, (0, 0), "once only");

    broker
        .request_errors(
            ApiKey::DescribeGroups,
            ErrorCode::CoordinatorLoadInProgress,
            1,
        )
        .expect("DescribeGroups errors");
    let failed = describe_groups(&mut stream, 3, &["a", "b"]).await;
    assert_eq!(
        failed,
        [
            (14, "a".to_owned(), String::new()),
            (14, "b".to_owned(), String::new())
        ],
        "the injected error on every group asked, with no state"
    );
    let described = describe_groups(&mut stream, 4, &["a"]).await;
    assert_eq!(described, [(0, "a".to_owned(), "Dead".to_owned())]);

    // Cleared errors are not answered.
    broker
        .request_errors(ApiKey::ListGroups, ErrorCode::CoordinatorNotAvailable, 2)
        .expect("ListGroups errors");
    broker
        .request_errors(
            ApiKey::DescribeGroups,
            ErrorCode::CoordinatorNotAvailable,
            2,
        )
        .expect("DescribeGroups errors");
    broker
        .clear_request_errors(ApiKey::ListGroups)
        .expect("cleared");
    broker
        .clear_request_errors(ApiKey::DescribeGroups)
        .expect("cleared");
    assert_eq!(list_groups(&mut stream, 5).await, (0, 0));
    assert_eq!(describe_groups(&mut stream, 6, &["a"]).await[0].0, 0);
    broker.shutdown().await.expect("shutdown");
}

// Two workers: librdkafka's call blocks its thread while the broker's
// front, on this runtime, answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_librdkafka_group_listing_gets_the_injected_error() {
    let broker = Broker::start().await.expect("broker");
    broker
        .request_errors(ApiKey::ListGroups, ErrorCode::CoordinatorNotAvailable, 1)
        .expect("ListGroups errors");
    let bootstrap = broker.bootstrap_servers().to_owned();
    let (failed, listed) = tokio::task::spawn_blocking(move || {
        let admin: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("log_level", "0")
            .create()
            .expect("client");
        let failed = admin.fetch_group_list(None, DEADLINE).map(|_| ());
        let listed = admin.fetch_group_list(None, DEADLINE).map(|_| ());
        (failed, listed)
    })
    .await
    .expect("the client's thread");
    assert!(
        matches!(
            failed,
            Err(KafkaError::GroupListFetch(
                RDKafkaErrorCode::CoordinatorNotAvailable
            ))
        ),
        "{failed:?}"
    );
    assert!(listed.is_ok(), "{listed:?}");
    broker.shutdown().await.expect("shutdown");
}
