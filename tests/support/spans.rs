//! Hand-made captured spans, for the forest's tests (included by path, so
//! that these tests do not pull in the broker fixtures of `support`).

use std::borrow::Cow;
use std::time::SystemTime;

use kafka_trace_harness::CapturedSpan;
use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// A sampled, local context of `trace` and span `span`.
pub fn context(trace: u128, span: u64) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

/// An internal span of `trace` with id `id`, parent id `parent` (0 =
/// none), no attributes, events or links, at the epoch.
pub fn span(service: &str, name: &'static str, trace: u128, id: u64, parent: u64) -> CapturedSpan {
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
