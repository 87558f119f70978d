//! proptest strategies for trace contexts and record headers.
//!
//! Valid values stay within what the W3C formats and the OpenTelemetry
//! SDK round-trip exactly; garbage covers what a Kafka topic may really
//! carry: wrong lengths, upper case, zero ids, unknown versions, oversized
//! and non-UTF-8 values, and header names that differ only in case.

use std::collections::BTreeMap;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use crate::propagation::{Headers, MAX_TRACEPARENT_LEN};

/// A non-zero trace id.
pub fn trace_id() -> impl Strategy<Value = TraceId> {
    (1..=u128::MAX).prop_map(TraceId::from)
}

/// A non-zero span id.
pub fn span_id() -> impl Strategy<Value = SpanId> {
    (1..=u64::MAX).prop_map(SpanId::from)
}

/// Sampled or not: the only flag W3C version 00 carries.
pub fn trace_flags() -> impl Strategy<Value = TraceFlags> {
    prop_oneof![Just(TraceFlags::SAMPLED), Just(TraceFlags::default())]
}

/// A W3C `tracestate` of up to 4 members, simple and multi-tenant keys.
pub fn trace_state() -> impl Strategy<Value = TraceState> {
    let simple = "[a-z][a-z0-9_*/-]{0,15}";
    let tenant = "[a-z0-9][a-z0-9_*/-]{0,8}@[a-z][a-z0-9_*/-]{0,9}";
    let key = prop_oneof![simple, tenant];
    // Printable ASCII without ',' and '=', no space at either end.
    let value = "[!-+\\x2D-<>-~]([ !-+\\x2D-<>-~]{0,14}[!-+\\x2D-<>-~])?";
    btree_map(key, value, 0..=4).prop_map(|members| {
        TraceState::from_key_value(members).expect("the strategy only builds valid members")
    })
}

/// A valid, non-remote span context.
pub fn span_context() -> impl Strategy<Value = SpanContext> {
    (trace_id(), span_id(), trace_flags(), trace_state())
        .prop_map(|(t, s, f, state)| SpanContext::new(t, s, f, false, state))
}

/// Up to 4 baggage entries whose values need percent-encoding at times
/// (spaces, commas, semicolons, equals signs).
pub fn baggage() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = "[a-zA-Z][a-zA-Z0-9_.-]{0,15}";
    let value = "[A-Za-z0-9_.:/,;=-]([A-Za-z0-9_.:/ ,;=-]{0,14}[A-Za-z0-9_.:/,;=-])?";
    btree_map(key, value, 0..=4).prop_map(|entries| entries.into_iter().collect())
}

/// A span context and baggage, as a producer would propagate them.
#[derive(Debug, Clone)]
pub struct PropagatedContext {
    /// The span context.
    pub span_context: SpanContext,
    /// Baggage entries, sorted by key.
    pub baggage: Vec<(String, String)>,
}

impl PropagatedContext {
    /// A [`Context`] holding both.
    pub fn to_context(&self) -> Context {
        let baggage: Vec<KeyValue> = self
            .baggage
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        Context::new()
            .with_remote_span_context(self.span_context.clone())
            .with_baggage(baggage)
    }
}

/// A valid span context with baggage.
pub fn propagated_context() -> impl Strategy<Value = PropagatedContext> {
    (span_context(), baggage()).prop_map(|(span_context, baggage)| PropagatedContext {
        span_context,
        baggage,
    })
}

fn regex(pattern: String) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&pattern).expect("the patterns here are valid")
}

fn bytes(pattern: String) -> impl Strategy<Value = Vec<u8>> {
    regex(pattern).prop_map(String::into_bytes)
}

fn hex(len: usize) -> String {
    format!("[0-9a-f]{{{len}}}")
}

/// A `traceparent` value the W3C propagator must reject.
pub fn invalid_traceparent() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        vec(any::<u8>(), 0..80),
        // One hex digit too many, not a leading zero: the SDK parses ids
        // as numbers, so only an overflowing length is invalid to it.
        bytes(format!("00-[1-9a-f]{}-{}-0[01]", hex(32), hex(16))),
        bytes(format!("00-{}-[1-9a-f]{}-0[01]", hex(32), hex(16))),
        bytes(format!("00-{}-{}", hex(32), hex(16))),
        bytes(format!("00-{}-{}-0[01]-[a-z]{{1,4}}", hex(32), hex(16))),
        bytes(format!("ff-{}-{}-01", hex(32), hex(16))),
        bytes(format!("00-AB{}-{}-01", hex(30), hex(16))),
        bytes(format!("00-{}-0000000000000000-01", hex(32))),
        bytes(format!(
            "00-00000000000000000000000000000000-{}-01",
            hex(16)
        )),
        bytes(format!("00-{}-{}-zz", hex(32), hex(16))),
        (regex(format!("00-{}-{}-01", hex(32), hex(16))), 3..50usize).prop_map(|(s, at)| {
            // A valid value with one byte that breaks UTF-8.
            let mut bytes = s.into_bytes();
            bytes.insert(at, 0xff);
            bytes
        }),
        (MAX_TRACEPARENT_LEN + 1..MAX_TRACEPARENT_LEN * 2).prop_map(|n| vec![b'0'; n]),
    ]
}

fn any_header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("tracestate".to_owned()),
        Just("baggage".to_owned()),
        "[a-z-]{1,8}",
        ".{0,12}",
    ]
}

fn traceparent_lookalike() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("traceparent".to_owned()),
        Just("Traceparent".to_owned()),
        Just("TRACEPARENT".to_owned()),
        Just(" traceparent".to_owned()),
        Just("traceparent ".to_owned()),
    ]
}

/// Headers that never carry a usable trace context: every
/// `traceparent`-like header holds an invalid value; other headers hold
/// anything, including oversized or non-UTF-8 `tracestate` and `baggage`.
pub fn garbage_headers() -> impl Strategy<Value = Headers> {
    let traceparents = vec((traceparent_lookalike(), invalid_traceparent()), 0..3);
    let others = vec((any_header_name(), vec(any::<u8>(), 0..64)), 0..5);
    let huge = prop::option::of((any_header_name(), 8000..9000usize));
    (traceparents, others, huge).prop_map(|(traceparents, others, huge)| {
        let mut headers: BTreeMap<String, Vec<u8>> = others.into_iter().collect();
        if let Some((name, len)) = huge {
            headers.insert(name, vec![b'x'; len]);
        }
        // Last, so that a random name cannot overwrite an invalid value
        // with a valid one.
        headers.extend(traceparents);
        headers
    })
}

/// Any header map: garbage, or a valid context injected among garbage.
pub fn arbitrary_headers() -> impl Strategy<Value = Headers> {
    prop_oneof![
        garbage_headers(),
        (propagated_context(), garbage_headers()).prop_map(|(cx, mut headers)| {
            headers.retain(|k, _| !k.trim().eq_ignore_ascii_case("traceparent"));
            crate::propagation::inject(&cx.to_context(), &mut headers);
            headers
        }),
    ]
}
