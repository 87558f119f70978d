//! `run --otlp-endpoint`: a run exporting live to the harness's own OTLP
//! receiver in another process (`kafka-trace-harness receive`), over gRPC
//! and HTTP, and to collectors that are down or answer 503.

// The receiver is stopped with SIGTERM through `kill`: Unix only.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kafka-trace-harness");
const DEADLINE: Duration = Duration::from_secs(120);
/// The services of a default run, as their spans and metrics name them.
const SERVICES: [&str; 5] = [
    "api-1",
    "api-2",
    "datagen",
    "kstream-service",
    "stock-processor",
];

/// A file in a directory of this test's own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kth-otlp-export-{test}-{}-{}",
            std::process::id(),
            uuid_like()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A command of the binary with no OTEL_* variable of the test's
/// environment: each test sets its own.
fn harness(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
}

/// Waits for `child` to exit, killing it after `deadline`.
fn wait(child: &mut Child, deadline: Duration, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {deadline:?}");
        }
        // A poll interval, not synchronisation: the loop checks a condition.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a `run` printed, and how it ended.
struct RunOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], env: &[(&str, &str)]) -> RunOutput {
    let mut command = harness(&["run"]);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn the run");
    // Read both pipes on threads, so that neither fills and blocks the run.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        text
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        err.read_to_string(&mut text).unwrap();
        text
    });
    let status = wait(&mut child, DEADLINE, "the run");
    RunOutput {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `kafka-trace-harness receive` in a process of its own.
struct Receiver {
    child: Child,
    stdout: BufReader<ChildStdout>,
    http: String,
    grpc: String,
    spans_out: PathBuf,
}

/// What the receiver got: every span as (service, trace id, span id), and
/// metric points per service and instrument.
struct Received {
    spans: Vec<(String, String, String)>,
    printed_spans: usize,
    metrics: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Receiver {
    fn start(dir: &TempDir) -> Self {
        let spans_out = dir.file("received.jsonl");
        let mut child = harness(&["receive", "--spans-out", spans_out.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the receiver");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = |prefix: &str| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
                .to_owned()
        };
        let http = line("http ");
        let grpc = line("grpc ");
        Self {
            child,
            stdout,
            http,
            grpc,
            spans_out,
        }
    }

    /// SIGTERM, then what it printed and wrote.
    fn stop(mut self) -> Received {
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let exit = wait(&mut self.child, Duration::from_secs(30), "the receiver");
        assert!(exit.success(), "receiver: {exit:?}\n{rest}");
        let mut printed_spans = None;
        let mut losses = (None, None);
        let mut metrics: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for line in rest.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["spans", n] => printed_spans = Some(n.parse().unwrap()),
                ["rejected", n] => losses.0 = Some(n.parse::<u64>().unwrap()),
                ["links-dropped", n] => losses.1 = Some(n.parse::<u64>().unwrap()),
                ["metric", service, name, points] => {
                    metrics
                        .entry((*service).to_owned())
                        .or_default()
                        .insert((*name).to_owned(), points.parse().unwrap());
                }
                _ => panic!("unexpected receiver line {line:?}"),
            }
        }
        // A run's own spans are all well formed: nothing left out.
        assert_eq!(
            losses,
            (Some(0), Some(0)),
            "rejected, links dropped:\n{rest}"
        );
        Received {
            spans: spans_of(&self.spans_out),
            printed_spans: printed_spans.expect("a spans line"),
            metrics,
        }
    }
}

/// Every span of an OTLP JSON Lines file as (service, trace id, span id),
/// sorted.
fn spans_of(path: &Path) -> Vec<(String, String, String)> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut spans = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let request: serde_json::Value = serde_json::from_str(line).unwrap();
        for resource_spans in request["resourceSpans"].as_array().unwrap() {
            let service = resource_spans["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|kv| kv["key"] == "service.name")
                .map(|kv| kv["value"]["stringValue"].as_str().unwrap().to_owned())
                .expect("a service.name");
            for scope in resource_spans["scopeSpans"].as_array().unwrap() {
                for span in scope["spans"].as_array().unwrap() {
                    spans.push((
                        service.clone(),
                        span["traceId"].as_str().unwrap().to_owned(),
                        span["spanId"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    spans.sort();
    spans
}

/// The numbers of the summary line `OTLP export of spans to …: R recorded,
/// E exported, D dropped, F failed, U unsent`.
fn span_counts(stdout: &str) -> [u64; 5] {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("OTLP export of spans to "))
        .unwrap_or_else(|| panic!("no span export line in:\n{stdout}"));
    let counts = line.rsplit_once(": ").unwrap().1;
    let numbers: Vec<u64> = counts
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    numbers.try_into().unwrap()
}

/// Exports a run over `protocol` to a receiver in another process and
/// checks that every span arrived once, with its service, and that every
/// service's metrics arrived.
fn a_run_exports_everything_to_a_receiver(
    test: &str,
    endpoint: impl Fn(&Receiver) -> Vec<(String, String)>,
    args: &[&str],
    expected_destination: &str,
) {
    let dir = TempDir::new(test);
    let receiver = Receiver::start(&dir);
    let sent_file = dir.file("sent.jsonl");
    let env = endpoint(&receiver);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut run_args = vec![
        "--trades",
        "300",
        "--spans-out",
        sent_file.to_str().unwrap(),
    ];
    // `{http}` and `{grpc}` in the arguments are the receiver's URLs.
    let args: Vec<String> = args
        .iter()
        .map(|arg| {
            arg.replace("{http}", &receiver.http)
                .replace("{grpc}", &receiver.grpc)
        })
        .collect();
    run_args.extend(args.iter().map(String::as_str));

    let output = run(&run_args, &env);
    let received = receiver.stop();

    assert!(
        output.status.success(),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
    assert!(
        output.stderr.contains(expected_destination),
        "expected the export to say it sends to {expected_destination:?}:\n{}",
        output.stderr
    );
    let sent = spans_of(&sent_file);
    assert!(sent.len() > 1_000, "{} spans sent", sent.len());
    let [recorded, exported, dropped, failed, unsent] = span_counts(&output.stdout);
    assert_eq!(
        (recorded, exported, dropped, failed, unsent),
        (sent.len() as u64, sent.len() as u64, 0, 0, 0),
        "{}",
        output.stdout
    );
    // Every span once, under its own service's resource.
    assert_eq!(received.printed_spans, sent.len());
    if received.spans != sent {
        let missing: Vec<_> = sent
            .iter()
            .filter(|s| !received.spans.contains(s))
            .take(5)
            .collect();
        panic!(
            "{} spans sent, {} received; first missing or different: {missing:?}",
            sent.len(),
            received.spans.len()
        );
    }
    // Each service's metrics, under its own resource.
    for service in SERVICES {
        let metrics = received
            .metrics
            .get(service)
            .unwrap_or_else(|| panic!("no metrics of {service}: {:?}", received.metrics));
        let records = if service == "datagen" {
            "stockapp.records.out"
        } else {
            "stockapp.records.in"
        };
        assert!(
            metrics.get(records).is_some_and(|points| *points > 0),
            "{service}: {metrics:?}"
        );
    }
    let points: u64 = received.metrics.values().flat_map(|m| m.values()).sum();
    assert!(
        output
            .stdout
            .contains("points exported, 0 failed, 0 unsent")
            && output
                .stdout
                .contains(&format!(": {points} points exported")),
        "{points} points received:\n{}",
        output.stdout
    );
}

#[test]
fn a_run_exports_every_span_and_metric_over_grpc_to_a_receiver_in_another_process() {
    a_run_exports_everything_to_a_receiver(
        "grpc",
        // The base URL from its variable, the protocol from the flag.
        |receiver| vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.grpc.clone())],
        &["--otlp-protocol", "grpc"],
        "(grpc)",
    );
}

#[test]
fn a_run_exports_every_span_and_metric_over_http_protobuf_by_default() {
    a_run_exports_everything_to_a_receiver(
        "http-protobuf",
        |_| vec![],
        &["--otlp-endpoint", "{http}"],
        "/v1/traces (http/protobuf)",
    );
}

/// The signal-specific variables alone: full URLs taken as they are, and
/// a protocol per signal.
#[test]
fn signal_variables_alone_export_over_http_json() {
    a_run_exports_everything_to_a_receiver(
        "http-json",
        |receiver| {
            vec![
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
                    format!("{}/v1/traces", receiver.http),
                ),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT".into(),
                    format!("{}/v1/metrics", receiver.http),
                ),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL".into(),
                    "http/json".into(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL".into(),
                    "http/json".into(),
                ),
                // Overridden by the signals' own variables.
                ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
            ]
        },
        &[],
        "/v1/traces (http/json)",
    );
}

/// The trace summary of a run: every trade's trace complete.
fn assert_traces_complete(output: &RunOutput) {
    assert!(
        output
            .stdout
            .contains("300 trade traces: 300 complete, 0 broken"),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
}

/// A run whose collector took nothing: it succeeded with every trace
/// whole, and every span it recorded is counted as lost. Returns how many
/// spans it recorded.
fn assert_whole_run_that_exported_nothing(output: &RunOutput) -> u64 {
    assert!(
        output.status.success(),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
    assert_traces_complete(output);
    let [recorded, exported, dropped, failed, unsent] = span_counts(&output.stdout);
    assert!(recorded > 1_000, "{}", output.stdout);
    assert_eq!(exported, 0);
    assert_eq!(dropped + failed + unsent, recorded, "{}", output.stdout);
    recorded
}

#[test]
fn a_collector_that_is_down_costs_the_run_only_a_reported_count() {
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let args = ["--trades", "300", "--otlp-endpoint", endpoint.as_str()];

    let output = run(&args, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);

    let recorded = assert_whole_run_that_exported_nothing(&output);
    let warnings: Vec<&str> = output
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: OTLP export incomplete"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", output.stderr);
    assert!(
        warnings[0].contains("Connection refused"),
        "{}",
        warnings[0]
    );

    // Asked to, the same run fails, once it has written its spans.
    let dir = TempDir::new("required");
    let spans_out = dir.file("spans.jsonl");
    let mut required = args.to_vec();
    required.extend([
        "--otlp-required",
        "--spans-out",
        spans_out.to_str().unwrap(),
    ]);
    let output = run(&required, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
    assert!(!output.status.success(), "{}", output.stdout);
    assert_traces_complete(&output);
    assert_eq!(spans_of(&spans_out).len() as u64, recorded);
    assert!(
        output.stderr.contains("error: OTLP export incomplete"),
        "{}",
        output.stderr
    );
}

/// An HTTP server that answers every request with 503, keeping each
/// request's headers.
fn unavailable_collector() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                seen.lock().unwrap().push(head);
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            });
        }
    });
    (url, requests)
}

#[test]
fn a_collector_answering_503_costs_the_run_only_a_reported_count() {
    let (url, requests) = unavailable_collector();

    let output = run(
        &["--trades", "300", "--otlp-endpoint", url.as_str()],
        &[("OTEL_EXPORTER_OTLP_HEADERS", "x-team=payments")],
    );

    assert_whole_run_that_exported_nothing(&output);
    assert!(
        output
            .stderr
            .lines()
            .any(|l| l.starts_with("warning: OTLP export incomplete") && l.contains("503")),
        "{}",
        output.stderr
    );
    // The requests went to the signals' paths, with the configured header.
    let requests = requests.lock().unwrap();
    for path in ["POST /v1/traces ", "POST /v1/metrics "] {
        let request = requests
            .iter()
            .find(|r| r.starts_with(path))
            .unwrap_or_else(|| panic!("no {path}request among {}", requests.len()));
        assert!(
            request.to_ascii_lowercase().contains("x-team: payments"),
            "{request}"
        );
    }
}
