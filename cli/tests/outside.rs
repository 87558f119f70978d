//! `kafka-trace-harness run` with other programs: what it waits for and
//! what it says when they fall behind. (A real outside consumer and its
//! OTLP spans: tests/interop/outside_api_consumer.py, run by .ci/run.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary with `args` until it exits, killing it after `deadline`;
/// returns its exit status, standard output and standard error.
fn run(args: &[&str], deadline: Duration) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the run command");
    // Read on threads so a full pipe cannot stall the child.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).map(|_| text)
    });
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= until {
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
    (
        status,
        out.join().unwrap().expect("read stdout"),
        err.join().unwrap().expect("read stderr"),
    )
}

#[test]
fn a_named_outside_group_that_never_reads_fails_the_run_by_name() {
    let started = Instant::now();
    let (status, stdout, stderr) = run(
        &[
            "run",
            "--trades",
            "20",
            "--show-traces",
            "0",
            "--outside-group",
            "billing-api",
            "--outside-deadline",
            "1",
        ],
        Duration::from_secs(120),
    );
    assert!(!status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "outside consumer group \"billing-api\" did not catch up within \
             --outside-deadline 1.0 s: has committed no offset on a topic this run wrote"
        ),
        "{stderr}"
    );
    // The summary is still printed, with the group in it.
    assert!(stdout.contains("records per stage"), "{stdout}");
    assert!(
        stdout.contains("group billing-api") && stdout.contains("NOT caught up"),
        "{stdout}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_run_lists_only_the_services_it_ran() {
    let (status, stdout, stderr) = run(
        &[
            "run",
            "--trades",
            "20",
            "--show-traces",
            "0",
            "--services",
            "datagen,processor,kstream",
        ],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("datagen          sent"), "{stdout}");
    assert!(stdout.contains("stock-processor  read"), "{stdout}");
    assert!(!stdout.contains("api-1"), "{stdout}");
    // Nothing outside: no wait, no line about other programs.
    assert!(!stdout.contains("other programs"), "{stdout}");
}

#[test]
fn a_run_without_datagen_does_not_print_datagen() {
    // Without datagen the run goes on until stopped: SIGTERM (Unix) once
    // it has started.
    #[cfg(unix)]
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
            .args(["run", "--services", "processor,api", "--show-traces", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the run command");
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let until = Instant::now() + Duration::from_secs(60);
        while !line.starts_with("processing records from") {
            line.clear();
            assert!(Instant::now() < until, "no start line");
            let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
            assert!(read > 0, "the run closed its standard error early");
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("records per stage"), "{stdout}");
        assert!(!stdout.contains("datagen"), "{stdout}");
        assert!(!stdout.contains("kstream-service"), "{stdout}");
    }
}
