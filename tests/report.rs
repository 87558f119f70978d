//! The HTML report as a library user meets it: one page per forest with
//! the spans embedded, and the report a failing trace assertion writes.

use std::panic::{self, AssertUnwindSafe};

use kafka_trace_harness::report::{HtmlReport, ServiceMap};
use kafka_trace_harness::{SpanCapture, SpanForest};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

#[path = "support/spans.rs"]
mod spans;

/// The text of the `<script type="application/json" id=…>` element.
fn script<'h>(html: &'h str, id: &str) -> &'h str {
    let start = format!(r#"<script type="application/json" id="{id}">"#);
    let from = html.find(&start).expect("the script element") + start.len();
    let len = html[from..].find("</script>").expect("its end");
    &html[from..from + len]
}

/// datagen sends, processor and api consume (api twice), one trace each.
fn pipeline(trades: usize) -> SpanCapture {
    let capture = SpanCapture::new();
    for _ in 0..trades {
        let datagen = capture.tracer("datagen");
        let send = datagen
            .span_builder("send trades")
            .with_kind(SpanKind::Producer)
            .with_attributes([KeyValue::new("messaging.destination.name", "trades")])
            .start(&datagen);
        let cx = Context::new().with_span(send);
        for service in ["processor", "api"] {
            let tracer = capture.tracer(service);
            tracer
                .span_builder("process trades")
                .with_kind(SpanKind::Consumer)
                .start_with_context(&tracer, &cx);
        }
    }
    capture
}

#[test]
fn the_page_embeds_every_span_it_shows_and_the_map_of_all_traces() {
    let forest = pipeline(5).forest();

    let html = HtmlReport::new().max_traces(2).to_html(&forest);

    let data: serde_json::Value = serde_json::from_str(script(&html, "kth-data")).unwrap();
    let shown: usize = data["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .map(|ss| ss["spans"].as_array().unwrap().len())
        .sum();
    assert_eq!(shown, 2 * 3, "two traces of three spans");
    let summary: serde_json::Value = serde_json::from_str(script(&html, "kth-summary")).unwrap();
    assert_eq!(summary["traces"]["total"], 5);
    assert_eq!(summary["traces"]["shown"], 2);
    let edges = summary["map"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{edges:?}");
    assert!(
        edges
            .iter()
            .all(|e| e["count"] == 5 && e["topic"] == "trades"),
        "counted over every trace: {edges:?}"
    );
}

#[test]
fn broken_traces_are_all_shown_and_their_problems_listed() {
    let mut spans: Vec<_> = (1..=4_u64)
        .map(|n| spans::span("datagen", "send", u128::from(n), n, 0))
        .collect();
    // Trace 9: a span whose parent was never captured.
    spans.push(spans::span("api", "process", 9, 90, 77));
    let forest = SpanForest::new(spans);

    let html = HtmlReport::new().max_traces(1).to_html(&forest);

    let summary: serde_json::Value = serde_json::from_str(script(&html, "kth-summary")).unwrap();
    assert_eq!(
        summary["traces"]["shown"], 2,
        "the broken trace and one other"
    );
    let problems = summary["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["kind"], "orphan");
    assert_eq!(problems[0]["spanId"], "000000000000005a");
    assert_eq!(problems[0]["traceId"], "00000000000000000000000000000009");
}

#[test]
fn values_cannot_end_the_script_element_that_holds_them() {
    let capture = SpanCapture::new();
    capture
        .tracer("api")
        .in_span("</script><script>alert(1)</script>", |cx| {
            cx.span()
                .set_attribute(KeyValue::new("note", "<!-- </script> \u{2028}"));
        });

    let html = HtmlReport::new()
        .title("</title><b>")
        .to_html(&capture.forest());

    let data = script(&html, "kth-data");
    assert!(!data.contains('<'), "{data}");
    let value: serde_json::Value = serde_json::from_str(data).unwrap();
    let span = &value["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["name"], "</script><script>alert(1)</script>");
    assert_eq!(
        span["attributes"][0]["value"]["stringValue"],
        "<!-- </script> \u{2028}"
    );
    assert!(html.contains("<title>&lt;/title&gt;&lt;b&gt;</title>"));
}

#[test]
fn a_service_map_counts_hops_with_their_topic() {
    let map = ServiceMap::of_forest(&pipeline(3).forest());

    let mut names: Vec<_> = map.services().iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["api", "datagen", "processor"]);
    let mut edges: Vec<_> = map
        .edges()
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str(), e.topic.as_str(), e.count))
        .collect();
    edges.sort_unstable();
    assert_eq!(
        edges,
        [
            ("datagen", "api", "trades", 3),
            ("datagen", "processor", "trades", 3)
        ]
    );
    assert!(map.edges()[0].latency_percentile(50).is_some());
}

#[test]
fn a_failing_assertion_names_the_html_report_of_its_traces() {
    let forest = SpanForest::new(vec![spans::span("api", "process", 9, 90, 77)]);

    let panic = panic::catch_unwind(AssertUnwindSafe(|| forest.assert_no_problems()))
        .expect_err("an orphan fails the assertion");

    let message = panic
        .downcast_ref::<String>()
        .expect("a formatted message")
        .clone();
    let line = message.lines().last().unwrap();
    let path = line
        .strip_prefix("HTML report of these traces: ")
        .and_then(|rest| rest.split(" (set ").next())
        .unwrap_or_else(|| panic!("no report named: {message}"));
    let path = std::path::Path::new(path);
    assert!(
        path.ends_with(
            "kafka-trace-harness/a_failing_assertion_names_the_html_report_of_its_traces.html"
        ),
        "{}",
        path.display()
    );
    let html = std::fs::read_to_string(path).unwrap();
    assert!(
        html.contains("000000000000005a"),
        "the failing span is in it"
    );
    assert!(
        message.starts_with("orphan") || message.contains("orphan"),
        "the assertion's own report comes first: {message}"
    );
}

#[test]
fn a_runs_sample_says_links_out_of_it_were_not_kept_and_marks_its_problems_on_the_map() {
    use opentelemetry::trace::Link;
    // A kept trace whose span links to a trace the run did not keep, and
    // a broken one whose parent was lost.
    let mut linking = spans::span("processor", "process", 1, 10, 0);
    linking
        .data
        .links
        .links
        .push(Link::with_context(spans::context(2, 20)));
    let orphan = spans::span("api", "process", 3, 30, 99);
    let forest = SpanForest::new(vec![linking, orphan]);
    let mut map = ServiceMap::new();
    map.add_span("processor", false);
    map.add_span("api", false);

    let html = HtmlReport::new()
        .run_traces(1_000)
        .service_map(map)
        .to_html(&forest);

    let summary: serde_json::Value = serde_json::from_str(script(&html, "kth-summary")).unwrap();
    let kinds: Vec<_> = summary["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["orphan"], "a link out of the sample is no problem");
    assert_eq!(
        summary["linkTargets"]["00000000000000000000000000000002/0000000000000014"],
        "not-kept"
    );
    assert_eq!(summary["traces"]["total"], 1_000);
    let api = summary["map"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap()
        .clone();
    assert_eq!(api["problems"], 1, "{api}");
}

/// A consumer span that could not use its record's context is named a new
/// trace only when it is one: under an ambient span it is that one's child.
#[test]
fn a_lost_context_says_where_the_span_went() {
    use kafka_trace_harness::traced::attr;

    let capture = SpanCapture::new();
    let tracer = capture.tracer("api");
    let lost = KeyValue::new(attr::CONTEXT_PROBLEM, "missing");
    tracer
        .span_builder("process alone")
        .with_attributes([lost.clone()])
        .start(&tracer);
    let ambient = Context::new().with_span(tracer.start("handle request"));
    tracer
        .span_builder("process under a request")
        .with_attributes([lost])
        .start_with_context(&tracer, &ambient);
    drop(ambient);

    let html = HtmlReport::new().to_html(&capture.forest());
    let summary: serde_json::Value = serde_json::from_str(script(&html, "kth-summary")).unwrap();
    let messages: Vec<&str> = summary["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "context-lost")
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("process alone") && m.ends_with("it started a new trace")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("process under a request")
                && m.ends_with("it became a child of handle request (api) instead")),
        "{messages:?}"
    );
}
