//! The rendering is deterministic and normalised.

use kafka_trace_harness::{CapturedSpan, Render, SpanCapture, SpanForest};
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

/// A small pipeline; `flip` starts the siblings in the other order.
fn pipeline(flip: bool) -> SpanForest {
    let capture = SpanCapture::new();
    let datagen = capture.tracer("datagen");
    let api = capture.tracer("api");
    let users = datagen.start("send users");
    let users_cx = Context::new().with_span(users);
    let send = datagen
        .span_builder("send trades")
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.kafka.offset", if flip { 7 } else { 3 }),
            KeyValue::new("server.port", if flip { 40_001 } else { 50_002 }),
            KeyValue::new("messaging.destination.name", "trades"),
            KeyValue::new("b.second", true),
            KeyValue::new("a.first", 1.5),
        ])
        .start(&datagen);
    let cx = Context::new().with_span(send);
    let mut names = vec!["process a", "process b", "process c"];
    if flip {
        names.reverse();
    }
    for name in names {
        api.span_builder(name)
            .with_kind(SpanKind::Consumer)
            .with_links(vec![Link::with_context(
                users_cx.span().span_context().clone(),
            )])
            .start_with_context(&api, &cx);
    }
    drop((cx, users_cx));
    capture.forest()
}

#[test]
fn a_forest_renders_without_ids_times_or_volatile_values() {
    insta::assert_snapshot!(pipeline(false).render());
}

#[test]
fn the_same_run_renders_the_same_text_100_times() {
    let forest = pipeline(false);
    let first = forest.render();
    for _ in 0..100 {
        assert_eq!(forest.render(), first);
    }
}

#[test]
fn start_order_ids_and_redacted_values_do_not_change_the_text() {
    assert_eq!(pipeline(false).render(), pipeline(true).render());
}

#[test]
fn capture_order_does_not_change_the_text() {
    let forest = pipeline(false);
    let mut spans: Vec<CapturedSpan> = forest.captured().to_vec();
    spans.reverse();
    spans.rotate_left(2);
    assert_eq!(SpanForest::new(spans).render(), forest.render());
}

#[test]
fn redaction_and_replacement_are_settings() {
    let forest = pipeline(false);
    let text = Render::new()
        .unredact("messaging.kafka.offset")
        .redact("a.first")
        .replace("trades", "TOPIC")
        .events(false)
        .forest(&forest);
    assert!(text.contains("messaging.kafka.offset = 3"), "{text}");
    assert!(text.contains("a.first = <redacted>"), "{text}");
    assert!(text.contains("\"send TOPIC\""), "{text}");
    let only = Render::new().only_attributes(["b.second"]).forest(&forest);
    assert!(
        only.contains("b.second = true") && !only.contains("a.first"),
        "{only}"
    );
}

#[test]
fn one_trace_renders_alone() {
    let forest = pipeline(false);
    let traces = forest.traces();
    let users = traces
        .iter()
        .find(|t| t.spans().any(|s| s.name() == "send users"))
        .unwrap();
    assert_eq!(
        Render::new().trace(users),
        "trace T1\n  S1 \"send users\" INTERNAL service=datagen\n"
    );
}

/// Two siblings with the same own text, told apart by their children: the
/// order follows the whole subtree, whatever the capture order.
fn twins(first_child_first: bool) -> String {
    let capture = SpanCapture::new();
    let tracer = capture.tracer("svc");
    let root = Context::new().with_span(tracer.start("send trades"));
    let mut children = ["send z", "send a"];
    if first_child_first {
        children.reverse();
    }
    for child in children {
        let process = root.with_span(tracer.start_with_context("process", &root));
        tracer.start_with_context(child, &process);
    }
    drop(root);
    Render::new().forest(&capture.forest())
}

#[test]
fn siblings_with_equal_spans_are_ordered_by_their_subtrees() {
    let text = twins(false);
    assert_eq!(text, twins(true));
    let a = text.find("\"send a\"").expect("send a rendered");
    let z = text.find("\"send z\"").expect("send z rendered");
    assert!(a < z, "{text}");
}

#[test]
fn a_deep_chain_renders_every_level() {
    const DEPTH: usize = 3_000;
    let capture = SpanCapture::new();
    let tracer = capture.tracer("svc");
    let mut contexts = vec![Context::new()];
    for _ in 0..DEPTH {
        let parent = contexts.last().expect("a parent");
        let span = tracer.start_with_context("hop", parent);
        contexts.push(parent.with_span(span));
    }
    for cx in contexts.iter().rev() {
        cx.span().end();
    }
    let text = Render::new().forest(&capture.forest());
    assert_eq!(text.lines().count(), DEPTH + 1);
    let last = text.lines().last().expect("a last line");
    assert_eq!(
        last.trim_start(),
        format!("S{DEPTH} \"hop\" INTERNAL service=svc")
    );
    assert_eq!(last.len() - last.trim_start().len(), 2 * DEPTH);
}
