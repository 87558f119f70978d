//! Panicking assertions point at the caller's line. A binary of its own:
//! the panic hook is process-wide.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use kafka_trace_harness::forest::conventions::MessagingConventions;
use kafka_trace_harness::{ExpectedSpan, SpanCapture};
use opentelemetry::trace::{SpanKind, Tracer};

#[test]
fn every_panicking_assertion_reports_the_callers_line() {
    let capture = SpanCapture::new();
    let tracer = capture.tracer("api");
    tracer
        .span_builder("process")
        .with_kind(SpanKind::Consumer)
        .start(&tracer);
    let forest = capture.forest();
    let missing = ExpectedSpan::new("missing");
    let partial = ExpectedSpan::new("process")
        .at_any_depth()
        .descendant(ExpectedSpan::new("missing"));
    let orphaned = {
        use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
        let remote = SpanContext::new(
            TraceId::from(1),
            SpanId::from(2),
            TraceFlags::SAMPLED,
            true,
            Default::default(),
        );
        let capture = SpanCapture::new();
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        capture.tracer("api").start_with_context("orphan", &cx);
        capture.forest()
    };

    let seen: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if let Some(l) = info.location() {
            sink.lock().unwrap().push((l.file().to_owned(), l.line()));
        }
    }));
    let mut expected_lines = Vec::new();
    let calls: [(u32, Box<dyn Fn()>); 7] = [
        (line!(), Box::new(|| forest.assert_trace(&missing))),
        (line!(), Box::new(|| forest.assert_trace(&partial))),
        (line!(), Box::new(|| forest.assert_traces(1, &missing))),
        (
            line!() + 1,
            Box::new(|| forest.assert_every_parent(SpanKind::Consumer, SpanKind::Producer)),
        ),
        // No span of the child kind at all.
        (
            line!() + 1,
            Box::new(|| forest.assert_every_parent(SpanKind::Server, SpanKind::Client)),
        ),
        (line!(), Box::new(|| orphaned.assert_no_problems())),
        (
            line!() + 1,
            Box::new(|| forest.assert_messaging_conventions(MessagingConventions::V1_44)),
        ),
    ];
    for (line, call) in &calls {
        expected_lines.push(*line);
        let _ = panic::catch_unwind(AssertUnwindSafe(call));
    }
    panic::set_hook(previous);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), calls.len(), "{seen:?}");
    for ((file, line), want) in seen.iter().zip(&expected_lines) {
        assert_eq!(file, file!());
        assert_eq!(line, want);
    }
}
