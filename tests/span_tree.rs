//! The span forest: relations, lookups and structural problems.

use std::borrow::Cow;
use std::time::SystemTime;

use kafka_trace_harness::{CapturedSpan, Problem, SpanForest};
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

fn context(trace: u128, span: u64) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

/// A span of `trace` with id `id`, parent id `parent` (0 = none).
fn span(service: &str, name: &'static str, trace: u128, id: u64, parent: u64) -> CapturedSpan {
    CapturedSpan {
        service: service.to_owned(),
        data: SpanData {
            span_context: context(trace, id),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(name),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        },
    }
}

fn with_link(mut s: CapturedSpan, trace: u128, id: u64) -> CapturedSpan {
    s.data
        .links
        .links
        .push(Link::with_context(context(trace, id)));
    s
}

#[test]
fn relations_and_lookups() {
    let mut send = span("datagen", "send", 1, 10, 0);
    send.data.span_kind = SpanKind::Producer;
    send.data
        .attributes
        .push(KeyValue::new("messaging.system", "kafka"));
    let forest = SpanForest::new(vec![
        span("api", "process", 1, 11, 10),
        send,
        with_link(span("api", "handle", 2, 20, 0), 1, 10),
    ]);
    assert_eq!(forest.len(), 3);
    assert_eq!(forest.traces().len(), 2);
    assert_eq!(forest.roots().count(), 2);
    let send = forest.named("send").next().unwrap();
    assert_eq!(
        send.children().map(|c| c.name()).collect::<Vec<_>>(),
        ["process"]
    );
    assert_eq!(
        forest
            .named("process")
            .next()
            .unwrap()
            .parent()
            .unwrap()
            .name(),
        "send"
    );
    let (_, target) = forest
        .named("handle")
        .next()
        .unwrap()
        .links()
        .next()
        .unwrap();
    assert_eq!(
        target.unwrap().name(),
        "send",
        "links resolve across traces"
    );
    assert_eq!(forest.of_kind(SpanKind::Producer).count(), 1);
    assert_eq!(forest.of_service("api").count(), 2);
    assert_eq!(
        forest
            .with_attribute("messaging.system", Value::from("kafka"))
            .count(),
        1
    );
    let found = forest.find(TraceId::from(1), SpanId::from(11)).unwrap();
    assert_eq!(found.name(), "process");
    assert!(forest.find(TraceId::from(2), SpanId::from(11)).is_none());
    assert!(forest.problems().is_empty());
}

#[test]
fn every_problem_is_detected() {
    let forest = SpanForest::new(vec![
        span("a", "root", 1, 1, 0),
        span("a", "second root", 1, 2, 0),
        span("a", "orphan", 1, 3, 99),
        span("b", "mixed", 2, 4, 1),
        with_link(span("b", "linker", 3, 5, 0), 7, 77),
    ]);
    let kinds: Vec<&str> = forest
        .problems()
        .iter()
        .map(|p| match p {
            Problem::Orphan { .. } => "orphan",
            Problem::DanglingLink { .. } => "dangling link",
            Problem::SeveralRoots { .. } => "several roots",
            Problem::WrongTrace { .. } => "wrong trace",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["orphan", "wrong trace", "dangling link", "several roots"]
    );
    for p in forest.problems() {
        assert!(!p.to_string().is_empty());
    }
    insta::assert_snapshot!(forest.render());
}

/// Traces both small and large (the forest resolves them differently),
/// with duplicated span ids across traces, links both ways, an orphan and a
/// parent named in another trace.
#[test]
fn large_and_small_traces_resolve_alike() {
    const LARGE: u64 = 100;
    let mut spans = vec![span("svc", "root", 1, 1, 0)];
    // Trace 1: a chain of LARGE spans, captured children first.
    for id in (2..=LARGE).rev() {
        spans.push(span("svc", "hop", 1, id, id - 1));
    }
    // Trace 2: small, reusing span ids of trace 1.
    spans.push(span("svc", "root", 2, 1, 0));
    spans.push(with_link(span("svc", "child", 2, 2, 1), 1, LARGE));
    spans.push(span("svc", "only in trace 2", 2, 777, 1));
    // Into the large trace: a link, an orphan and a parent from trace 2.
    spans.push(with_link(span("svc", "linked", 1, 500, LARGE), 2, 2));
    spans.push(span("svc", "orphan", 1, 501, 999));
    spans.push(span("svc", "misplaced", 1, 502, 777));
    let forest = SpanForest::new(spans);

    let large = forest.trace(TraceId::from(1)).expect("trace 1");
    assert_eq!(large.len(), LARGE as usize + 3);
    let last = forest
        .find(TraceId::from(1), SpanId::from(LARGE))
        .expect("last hop");
    assert_eq!(
        last.parent().map(|p| p.span_id()),
        Some(SpanId::from(LARGE - 1))
    );
    let linked = forest.named("linked").next().expect("linked");
    assert_eq!(linked.parent().map(|p| p.span_id()), Some(last.span_id()));
    let (_, target) = linked.links().next().expect("a link");
    assert_eq!(target.map(|t| t.name()), Some("child"));
    let child = forest.named("child").next().expect("child");
    assert_eq!(child.parent().map(|p| p.trace_id()), Some(TraceId::from(2)));
    let (_, target) = child.links().next().expect("a link");
    assert_eq!(target.map(|t| t.span_id()), Some(last.span_id()));

    let kinds: Vec<&str> = forest
        .problems()
        .iter()
        .map(|p| match p {
            Problem::Orphan { .. } => "orphan",
            Problem::WrongTrace { .. } => "wrong trace",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["orphan", "wrong trace"]);
    let misplaced = forest.named("misplaced").next().expect("misplaced");
    assert!(misplaced.parent().is_none());
}
