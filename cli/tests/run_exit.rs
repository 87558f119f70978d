//! How `kafka-trace-harness run` ends: a run stopped before it finished
//! exits non-zero saying why (unless `--allow-broken`), and Ctrl-C ends it
//! within 5 s even when the broker answers nothing.
// Signals through `kill`: the whole file is Unix only.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The run's grace after a stop signal is 5 s; this adds room for a slow
/// machine, and is far below a hang.
const EXIT_DEADLINE: Duration = Duration::from_secs(9);
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Starts a run that lasts long (slow, many trades) and returns it with
/// its standard error lines as they come.
fn start_run(extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
        .args([
            "run",
            "--trades",
            "1000000",
            "--rate",
            "200",
            "--schema-registry-port",
            "0",
            "--show-traces",
            "0",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the run");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (child, received)
}

/// Waits for a standard error line containing `needle`; returns every line
/// read so far.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => panic!("no line with {needle:?} within {START_DEADLINE:?}: {seen:?}"),
        }
    }
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for the run to exit within [`EXIT_DEADLINE`] (killing it if
/// not), then collects the rest of its standard error.
fn exit_of(mut child: Child, lines: &mpsc::Receiver<String>, seen: &mut Vec<String>) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            seen.extend(lines.iter());
            return status;
        }
        if started.elapsed() > EXIT_DEADLINE {
            child.kill().expect("kill the hung run");
            let _ = child.wait();
            panic!("the run did not exit within {EXIT_DEADLINE:?} of Ctrl-C: {seen:?}");
        }
        seen.extend(lines.try_iter());
        std::thread::sleep(Duration::from_millis(20));
    }
}

// SIGINT through `kill`: Unix only.
#[cfg(unix)]
#[test]
fn a_run_stopped_early_exits_non_zero_saying_why() {
    let (child, lines) = start_run(&[]);
    let mut seen = Vec::new();
    wait_for_line(&lines, "schema registry on", &mut seen);
    interrupt(&child);
    let status = exit_of(child, &lines, &mut seen);
    assert!(!status.success(), "exited {status}: {seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("error: the run is not clean")
                && l.contains("stopped before every generated record went through")),
        "no error line saying why: {seen:?}"
    );
}

#[cfg(unix)]
#[test]
fn allow_broken_reports_and_exits_zero() {
    let (child, lines) = start_run(&["--allow-broken"]);
    let mut seen = Vec::new();
    wait_for_line(&lines, "schema registry on", &mut seen);
    interrupt(&child);
    let status = exit_of(child, &lines, &mut seen);
    assert!(status.success(), "exited {status}: {seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("warning: stopped before every generated record")),
        "no warning naming the problem: {seen:?}"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_ends_the_run_within_its_grace_with_a_frozen_broker() {
    let (child, lines) = start_run(&["--stall-broker"]);
    let mut seen = Vec::new();
    wait_for_line(&lines, "the broker answers nothing", &mut seen);
    interrupt(&child);
    let status = exit_of(child, &lines, &mut seen);
    assert!(!status.success(), "exited {status}: {seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("error: the run did not end within")
                // The services the pipeline cut off, by name.
                && l.contains("not finished: ")
                && l.contains("were cut off")
                && l.contains("datagen (waiting for the broker")),
        "no error line naming what it could not finish: {seen:?}"
    );
}
