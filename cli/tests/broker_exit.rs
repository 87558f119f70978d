//! `kafka-trace-harness broker` runs its final check on exit with every
//! option: records its retention deleted fail the exit status.
// SIGTERM through `kill`: the whole file is Unix only.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_trace_harness::{Backend, Broker};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

/// The embedded broker keeps 5 MiB per partition: 8 MiB deletes some.
const RECORDS: usize = 80;
const RECORD_BYTES: usize = 100 * 1024;
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

// SIGTERM through `kill`: Unix only.
#[cfg(unix)]
#[tokio::test]
async fn with_an_admin_channel_deleted_records_still_fail_the_exit() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
        .args(["broker", "--port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the broker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let bootstrap = lines.next().expect("bootstrap line").unwrap();
    lines.next().expect("admin line").unwrap();

    let broker = Broker::builder()
        .backend(Backend::External { bootstrap })
        .start()
        .await
        .expect("reach the standalone broker");
    let client = broker
        .client()
        .await
        .unwrap()
        .partition_client("exit-check", 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    for batch in 0..RECORDS / 5 {
        let records = (0..5)
            .map(|n| Record {
                key: Some(format!("{batch}-{n}").into_bytes()),
                value: Some(vec![b'x'; RECORD_BYTES]),
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            })
            .collect();
        client
            .produce(records, Compression::NoCompression)
            .await
            .expect("produce");
    }

    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < EXIT_DEADLINE,
            "the broker did not exit within {EXIT_DEADLINE:?} of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !status.success(),
        "exited {status} although records were deleted; stderr: {stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains("exit-check")),
        "no error line naming the topic: {stderr}"
    );
}
