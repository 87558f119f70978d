//! W3C context extraction from arbitrary Kafka record headers.
//!
//! Input: one header per line, `name=value` split at the first `=`; names
//! are decoded lossily (rskafka's names are strings), values stay raw bytes
//! (so not UTF-8, too long, empty…). A repeated name keeps its last value,
//! as in rskafka's header map. A first line `!ambient` extracts on top of a
//! context that already has an active span.
#![no_main]

use kafka_trace_harness::propagation::{Headers, Injected, extract, extract_with, inject};
use libfuzzer_sys::fuzz_target;
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

fuzz_target!(|data: &[u8]| {
    let (ambient, data) = match data.strip_prefix(b"!ambient\n") {
        Some(rest) => (true, rest),
        None => (false, data),
    };
    let mut headers = Headers::new();
    for line in data.split(|&b| b == b'\n') {
        let (name, value) = match line.iter().position(|&b| b == b'=') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (line, &[][..]),
        };
        headers.insert(String::from_utf8_lossy(name).into_owned(), value.to_vec());
    }

    let extracted = extract(&headers);
    // Every report renders, whatever the input.
    for problem in extracted.problem.iter().chain(&extracted.ignored) {
        assert!(!problem.kind().is_empty());
        let _ = problem.to_string();
    }
    let span_context = extracted.span_context();
    assert_eq!(extracted.is_usable(), span_context.is_valid());
    if extracted.is_usable() {
        assert!(span_context.is_remote());
        // What was extracted injects and extracts back to the same parent.
        let mut again = Headers::new();
        assert_eq!(inject(&extracted.context, &mut again), Injected::Written);
        let back = extract(&again);
        assert!(back.is_usable(), "{:?} from {again:?}", back.problem);
        let back = back.span_context();
        assert_eq!(back.trace_id(), span_context.trace_id());
        assert_eq!(back.span_id(), span_context.span_id());
        assert_eq!(back.is_sampled(), span_context.is_sampled());
    }

    if ambient {
        let parent = SpanContext::new(
            TraceId::from(0x1234),
            SpanId::from(0x5678),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        );
        let ambient = Context::new().with_remote_span_context(parent.clone());
        let on_ambient = extract_with(&ambient, &headers);
        assert_eq!(on_ambient.problem, extracted.problem);
        let active = on_ambient.context.span().span_context().clone();
        if on_ambient.is_usable() {
            // The record's parent replaces the ambient one.
            assert_eq!(active.span_id(), span_context.span_id());
            assert_eq!(active.trace_id(), span_context.trace_id());
        } else {
            assert_eq!(active, parent);
        }
    }
});
