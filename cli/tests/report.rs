//! `kafka-trace-harness report` and `run --html`, as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
        .args(args)
        .output()
        .expect("run kafka-trace-harness")
}

fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()))
}

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/otlp/python-sdk.jsonl")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_python_sdk_file_with_broken_traces_is_reported_and_exits_1() {
    let html = scratch("python.html");

    let output = harness(&["report", &fixture(), "--html", html.to_str().unwrap()]);

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("8 spans in 5 traces; 2 traces complete, 3 broken"),
        "{stdout}"
    );
    for kind in [
        "orphan in trace",
        "dangling-link in trace",
        "error in trace",
    ] {
        assert!(stdout.contains(kind), "{kind}: {stdout}");
    }
    assert!(stdout.contains("process orders"), "a trace tree: {stdout}");
    let page = std::fs::read_to_string(&html).expect("the HTML report");
    let _ = std::fs::remove_file(&html);
    assert!(page.contains(r#"id="kth-data">{"resourceSpans":"#));
    // Python wrote base64 ids; the page holds them as OTLP/JSON's hex.
    assert!(page.contains(r#""traceId":"5eed0000000000000000000000000001""#));
}

#[test]
fn a_runs_spans_out_file_reports_whole_and_the_run_writes_its_own_report() {
    let spans = scratch("run-spans.jsonl");
    let run_html = scratch("run.html");
    let run = harness(&[
        "run",
        "--trades",
        "40",
        "--show-traces",
        "0",
        "--spans-out",
        spans.to_str().unwrap(),
        "--html",
        run_html.to_str().unwrap(),
        "--html-traces",
        "10",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let page = std::fs::read_to_string(&run_html).expect("run --html's report");
    let _ = std::fs::remove_file(&run_html);
    assert!(
        page.contains(r#""traces":{"total":49,"shown":10,"broken":0}"#),
        "40 trades and 9 users, 10 shown"
    );
    assert!(
        page.contains("records per stage"),
        "the run's summary is on the page"
    );

    let html = scratch("report.html");
    let output = harness(&[
        "report",
        spans.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&spans);

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("in 49 traces; 49 traces complete, 0 broken"),
        "{stdout}"
    );
    assert!(std::fs::metadata(&html).is_ok());
    let _ = std::fs::remove_file(&html);
}

#[test]
fn a_file_that_is_not_otlp_is_an_error_naming_the_line() {
    let path = scratch("not-otlp.jsonl");
    std::fs::write(&path, "{\"resourceSpans\":[]}\n{\"hello\":1}\n").unwrap();

    let output = harness(&["report", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("resourceSpans"),
        "{stderr}"
    );
}

#[test]
fn spans_left_out_are_said_on_the_page_and_exit_1() {
    let path = scratch("left-out.jsonl");
    let html = scratch("left-out.html");
    let span = |trace: &str, name: &str, id: &str, links: &str| {
        format!(
            r#"{{"traceId":"{trace}","spanId":"{id}","name":"{name}","kind":1,"startTimeUnixNano":"1000","endTimeUnixNano":"2000","links":[{links}]}}"#
        )
    };
    // Two whole traces, one with a link to an invalid context (dropped,
    // its span kept); a span with an all-zero id (left out).
    let spans = [
        span(
            "0af7651916cd43dd8448eb211c80319c",
            "good",
            "b7ad6b7169203331",
            "",
        ),
        span(
            "0af7651916cd43dd8448eb211c80319c",
            "zero span id",
            "0000000000000000",
            "",
        ),
        span(
            "1af7651916cd43dd8448eb211c80319c",
            "process",
            "b7ad6b7169203332",
            r#"{"traceId":"00000000000000000000000000000000","spanId":"0000000000000000","attributes":[{"key":"k","value":{"stringValue":"v"}}]}"#,
        ),
    ];
    std::fs::write(
        &path,
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"py"}}}}]}},"scopeSpans":[{{"scope":{{"name":"s"}},"spans":[{}]}}]}}]}}"#,
            spans.join(",")
        ) + "\n",
    )
    .unwrap();

    let output = harness(&[
        "report",
        path.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&path);

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 spans in 2 traces; 2 traces complete, 0 broken"),
        "the forest itself is whole: {stdout}"
    );
    assert!(
        stderr.contains(
            r#"error: 1 span(s) left out of the report, their ids unusable: service "py", span "zero span id": span id is all zeros"#
        ),
        "{stderr}"
    );
    let page = std::fs::read_to_string(&html).expect("the report is written first");
    let _ = std::fs::remove_file(&html);
    assert!(
        page.contains("(1 span(s) left out)</title>"),
        "in the title"
    );
    for said in [
        "1 span(s) left out (unusable ids, in no trace), 1 link(s) to no span dropped",
        r#"line 1: 1 span(s) left out: service \"py\", span \"zero span id\": span id is all zeros"#,
        r#"line 1: 1 link(s) to no span dropped: service \"py\", span \"process\": link 0's trace id is all zeros: dropped"#,
    ] {
        assert!(page.contains(said), "the summary on the page: {said}");
    }
}
