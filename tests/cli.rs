//! `kafka-trace-harness broker` as another program's clients see it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use kafka_trace_harness::{Backend, Broker};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

#[tokio::test]
async fn standalone_broker_serves_clients_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
        .args(["broker", "--port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the broker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let bootstrap = lines.next().expect("bootstrap line").unwrap();
    let admin = lines.next().expect("admin line").unwrap();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");
    assert!(admin.starts_with("admin 127.0.0.1:"), "{admin}");

    let broker = Broker::builder()
        .backend(Backend::External {
            bootstrap: bootstrap.clone(),
        })
        .start()
        .await
        .expect("reach the standalone broker");
    // The mock cluster auto-creates a topic on its first metadata request.
    let client = broker
        .client()
        .await
        .unwrap()
        .partition_client("cli-topic", 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    let record = Record {
        key: Some(b"k".to_vec()),
        value: Some(b"v".to_vec()),
        headers: [("traceparent".to_owned(), vec![0, 159, 255])].into(),
        timestamp: chrono::Utc::now(),
    };
    client
        .produce(vec![record.clone()], Compression::NoCompression)
        .await
        .expect("produce");
    let (records, _) = client
        .fetch_records(0, 1..1_000_000, 1_000)
        .await
        .expect("fetch");
    assert_eq!(records[0].record.headers, record.headers);

    // SIGTERM, then the process must exit cleanly within a deadline.
    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "broker ignored SIGTERM"
        );
        // A poll interval, not synchronisation: the loop checks a condition.
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(exit.success(), "{exit:?}");
}
