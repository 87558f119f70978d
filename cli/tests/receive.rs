//! `kafka-trace-harness receive` as a user runs it: what it could not keep
//! is printed, and what it received is written even when its shutdown
//! fails.

// The receiver is stopped with SIGTERM through `kill`: Unix only.
#![cfg(unix)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Deadline of every wait in these tests; the receiver's own shutdown
/// deadline (5 s) fits well within it.
const DEADLINE: Duration = Duration::from_secs(60);

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// One span of service "python" as OTLP/JSON.
fn span(name: &str, span_id: &str, links: &str) -> String {
    format!(
        r#"{{"traceId":"{TRACE}","spanId":"{span_id}","name":"{name}","kind":5,"startTimeUnixNano":"1000","endTimeUnixNano":"2000","links":[{links}]}}"#
    )
}

fn request(spans: &[String]) -> String {
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"python"}}}}]}},"scopeSpans":[{{"scope":{{"name":"s"}},"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
}

/// A link to an invalid (all-zero) context with an attribute, as SDKs may
/// record for a messaging batch.
const LINK_TO_NO_SPAN: &str = r#"{"traceId":"00000000000000000000000000000000","spanId":"0000000000000000","attributes":[{"key":"k","value":{"stringValue":"v"}}]}"#;

/// `receive --spans-out` in a process of its own, and its HTTP address.
struct Receiver {
    child: Child,
    stdout: BufReader<ChildStdout>,
    http: String,
    spans_out: PathBuf,
}

impl Receiver {
    fn start(test: &str) -> Self {
        let spans_out =
            std::env::temp_dir().join(format!("kth-receive-{test}-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&spans_out);
        let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
            .args(["receive", "--spans-out", spans_out.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the receiver");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let http = line
            .trim()
            .strip_prefix("http http://")
            .unwrap_or_else(|| panic!("expected the http line, got {line:?}"))
            .to_owned();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("grpc "), "{line:?}");
        Self {
            child,
            stdout,
            http,
            spans_out,
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.http).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
    }

    /// POSTs an OTLP/JSON request; the answer's status line and body.
    fn post(&self, body: &str) -> String {
        let mut stream = self.connect();
        write!(
            stream,
            "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.http,
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    /// SIGTERM, then how it ended, what it printed on each stream and the
    /// file it wrote (`None` if none).
    fn stop(mut self) -> (ExitStatus, String, String, Option<String>) {
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let mut stderr = self.child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            stderr.read_to_string(&mut text).unwrap();
            text
        });
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let started = Instant::now();
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            if started.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("the receiver did not exit within {DEADLINE:?}");
            }
            // A poll interval, not synchronisation: the loop checks a condition.
            std::thread::sleep(Duration::from_millis(10));
        };
        let written = std::fs::read_to_string(&self.spans_out).ok();
        let _ = std::fs::remove_file(&self.spans_out);
        (exit, rest, stderr.join().unwrap(), written)
    }
}

#[test]
fn rejected_spans_and_dropped_links_are_printed() {
    let receiver = Receiver::start("losses");

    let answer = receiver.post(&request(&[
        span("good", "b7ad6b7169203331", ""),
        span("zero span id", "0000000000000000", ""),
        span("process", "b7ad6b7169203332", LINK_TO_NO_SPAN),
    ]));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (exit, stdout, stderr, written) = receiver.stop();

    assert!(exit.success(), "{exit:?}\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["spans 2", "rejected 1", "links-dropped 1"],
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"1 span(s) rejected (unusable ids), not kept: service "python", span "zero span id": span id is all zeros"#),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"1 link(s) to no span dropped, their spans kept: service "python", span "process": link 0's trace id is all zeros"#),
        "{stderr}"
    );
    let written = written.expect("the spans file");
    assert!(written.contains(r#""name":"good""#), "{written}");
    assert!(written.contains(r#""name":"process""#), "{written}");
    assert!(written.contains(r#""droppedLinksCount":1"#), "{written}");
}

#[test]
fn spans_received_are_written_when_the_shutdown_fails() {
    let receiver = Receiver::start("cut");
    let answer = receiver.post(&request(&[span("good", "b7ad6b7169203331", "")]));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A slow exporter: its request's headers are in, the body never ends.
    // The server's "100 Continue" says the handler is reading the body, so
    // the request is open when the receiver is asked to stop.
    let mut slow = receiver.connect();
    write!(
        slow,
        "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        receiver.http
    )
    .unwrap();
    let mut continue_line = String::new();
    BufReader::new(&slow)
        .read_line(&mut continue_line)
        .expect("an answer to Expect");
    assert!(
        continue_line.starts_with("HTTP/1.1 100"),
        "{continue_line:?}"
    );
    slow.write_all(b"{\"resourceSpans\":").unwrap();

    let (exit, stdout, stderr, written) = receiver.stop();
    drop(slow);

    assert!(!exit.success(), "the cut request is an error: {stderr}");
    assert!(stderr.contains("still open"), "{stderr}");
    assert!(stdout.starts_with("spans 1\n"), "{stdout}\n{stderr}");
    let written = written.expect("the spans received before the cut are written");
    assert!(written.contains(r#""name":"good""#), "{written}");
}
