//! `kafka-trace-harness broker` as another program's clients see it.

// Only the Unix-only tests (signals) use these.
#[cfg(unix)]
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[cfg(unix)]
use kafka_trace_harness::{Backend, Broker};
#[cfg(unix)]
use rskafka::client::partition::{Compression, UnknownTopicHandling};
#[cfg(unix)]
use rskafka::record::Record;

// SIGTERM through `kill`: Unix only.
#[cfg(unix)]
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

/// Runs the binary with `args` until it exits, killing it after `deadline`;
/// returns its exit status and standard output.
fn run_with_deadline(args: &[&str], deadline: Duration) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the run command");
    let mut stdout = child.stdout.take().unwrap();
    // Read on a thread so a full pipe cannot stall the child.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    let until = std::time::Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`kafka-trace-harness {}` ran past {deadline:?}",
                args.join(" ")
            );
        }
        // A poll interval, not synchronisation: the loop checks a condition.
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap().expect("read stdout"))
}

fn is_hex_id(value: &serde_json::Value, len: usize) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn run_writes_the_summary_and_otlp_json_of_every_trace() {
    let spans_out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-run-spans-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&spans_out);

    let (status, stdout) = run_with_deadline(
        &[
            "run",
            "--trades",
            "50",
            "--users",
            "9",
            "--seed",
            "3",
            "--spans-out",
            spans_out.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );

    assert!(status.success(), "{status:?}\n{stdout}");
    assert!(stdout.contains("records per stage"), "{stdout}");
    assert!(
        stdout.contains("50 trade traces: 50 complete, 0 broken"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&spans_out).expect("the --spans-out file");
    let _ = std::fs::remove_file(&spans_out);
    // OTLP JSON Lines: one export request per line.
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line valid JSON"))
        .collect();
    assert!(!lines.is_empty(), "no line in the --spans-out file");
    let resource_spans: Vec<serde_json::Value> = lines
        .iter()
        .flat_map(|request| {
            request["resourceSpans"]
                .as_array()
                .expect("resourceSpans array")
                .clone()
        })
        .collect();
    let service_of = |rs: &serde_json::Value| {
        rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|kv| kv["key"] == "service.name")
            .and_then(|kv| kv["value"]["stringValue"].as_str())
            .map(str::to_owned)
    };
    let spans_of = |rs: &serde_json::Value| -> Vec<serde_json::Value> {
        rs["scopeSpans"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let datagen = resource_spans
        .iter()
        .find(|rs| service_of(rs).as_deref() == Some("datagen"))
        .expect("a datagen resource");
    let sends: Vec<_> = spans_of(datagen)
        .into_iter()
        .filter(|span| span["name"] == "send stockapp.trades")
        .collect();
    assert_eq!(sends.len(), 50, "one send span per trade");

    let all: Vec<_> = resource_spans.iter().flat_map(spans_of).collect();
    for span in &all {
        assert!(is_hex_id(&span["traceId"], 32), "{span}");
        assert!(is_hex_id(&span["spanId"], 16), "{span}");
    }
    let processes: Vec<_> = all
        .iter()
        .filter(|span| span["name"] == "process stockapp.trades")
        .collect();
    // Two branches each: ksqlDB's processor and the Kafka Streams app.
    assert_eq!(processes.len(), 100, "every trade was processed twice");
    for process in processes {
        let parent = sends
            .iter()
            .find(|send| send["spanId"] == process["parentSpanId"]);
        let parent = parent.unwrap_or_else(|| panic!("no send span is the parent of {process}"));
        assert_eq!(parent["traceId"], process["traceId"], "{process}");
    }
}

#[test]
fn an_untraced_run_moves_every_trade_and_records_no_trace() {
    let (status, stdout) = run_with_deadline(
        &["run", "--trades", "40", "--untraced", "--show-traces", "0"],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{status:?}\n{stdout}");
    assert!(stdout.contains("sent 9 users, 40 trades"), "{stdout}");
    assert!(
        stdout.contains("read 40 trades; sent 40 trades-json"),
        "{stdout}"
    );
    assert!(stdout.contains("0 trade traces"), "{stdout}");
}

/// Kills `child` when dropped, so a failed assertion leaves no broker
/// process behind.
#[cfg(unix)]
struct KillOnDrop(std::process::Child);

#[cfg(unix)]
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (`STOP`, `CONT`, …) to process `pid`.
#[cfg(unix)]
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status:?}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_rides_out_a_broker_that_stops_answering_for_a_few_seconds() {
    const TRADES: usize = 3_000;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
        .args(["broker", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the broker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let bootstrap = lines.next().expect("bootstrap line").unwrap();
    let broker_process = KillOnDrop(child);
    let broker_pid = broker_process.0.id();

    let run_args = [
        "run".to_owned(),
        "--bootstrap".to_owned(),
        bootstrap.clone(),
        "--trades".to_owned(),
        TRADES.to_string(),
        "--users".to_owned(),
        "9".to_owned(),
        "--seed".to_owned(),
        "5".to_owned(),
    ];
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = run_args.iter().map(String::as_str).collect();
        run_with_deadline(&args, Duration::from_secs(240))
    });

    // In the middle of the run: once some trades are in the broker.
    let watcher = Broker::builder()
        .backend(Backend::External {
            bootstrap: bootstrap.clone(),
        })
        .start()
        .await
        .expect("reach the standalone broker");
    let client = watcher.client().await.unwrap();
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run never sent 200 trades"
        );
        let mut sent = 0;
        if let Ok(topics) = client.list_topics().await
            && let Some(trades) = topics.iter().find(|t| t.name == "stockapp.trades")
        {
            for &partition in &trades.partitions {
                if let Ok(pc) = client
                    .partition_client("stockapp.trades", partition, UnknownTopicHandling::Error)
                    .await
                    && let Ok(high) = pc
                        .get_offset(rskafka::client::partition::OffsetAt::Latest)
                        .await
                {
                    sent += high;
                }
            }
        }
        if sent >= 200 {
            break;
        }
        // A poll interval, not synchronisation: the loop checks a condition.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(client);

    // The broker process stops answering for three seconds, then resumes.
    signal(broker_pid, "STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(broker_pid, "CONT");

    let (status, stdout) = run.await.unwrap();
    assert!(status.success(), "{status:?}\n{stdout}");
    assert!(
        stdout.contains(&format!("sent 9 users, {TRADES} trades")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("read 9 users, {TRADES} trades")),
        "every trade processed: {stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{TRADES} trade traces: {TRADES} complete, 0 broken"
        )),
        "{stdout}"
    );
    drop(broker_process);
}
