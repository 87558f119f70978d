//! Header injection and extraction, without a broker.

use kafka_trace_harness::propagation::{
    BAGGAGE, ExistingTraceparent, ExtractProblem, Headers, Injected, MAX_TRACEPARENT_LEN,
    TRACEPARENT, TRACESTATE, extract, extract_with, inject, inject_with,
};
use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn context(trace: u128, span: u64) -> Context {
    let state = TraceState::from_key_value([("vendor", "v1")]).unwrap();
    let sc = SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        false,
        state,
    );
    Context::new()
        .with_remote_span_context(sc)
        .with_baggage([KeyValue::new("user", "User_3")])
}

fn headers(pairs: &[(&str, &[u8])]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

#[test]
fn inject_then_extract_round_trips_ids_state_and_baggage() {
    let mut h = Headers::new();
    assert_eq!(inject(&context(0xabc, 0x123), &mut h), Injected::Written);
    assert_eq!(h[TRACESTATE], b"vendor=v1");
    assert_eq!(h[BAGGAGE], b"user=User_3");

    let got = extract(&h);
    assert_eq!(got.problem, None);
    let sc = got.span_context();
    assert_eq!(sc.trace_id(), TraceId::from(0xabc));
    assert_eq!(sc.span_id(), SpanId::from(0x123));
    assert!(sc.is_sampled() && sc.is_remote());
    assert_eq!(sc.trace_state().get("vendor"), Some("v1"));
    assert_eq!(
        got.context
            .baggage()
            .get("user")
            .map(|v| v.as_str().to_owned()),
        Some("User_3".to_owned())
    );
}

#[test]
fn an_existing_traceparent_is_kept_unless_replacing_is_asked() {
    let mut h = headers(&[(TRACEPARENT, VALID.as_bytes())]);
    assert_eq!(inject(&context(1, 2), &mut h), Injected::KeptExisting);
    assert_eq!(h[TRACEPARENT], VALID.as_bytes());
    assert!(h.contains_key(BAGGAGE), "baggage is still added");

    let mut h = headers(&[("Traceparent", VALID.as_bytes())]);
    let injected = inject_with(&context(1, 2), &mut h, ExistingTraceparent::Replace);
    assert_eq!(injected, Injected::Written);
    assert!(!h.contains_key("Traceparent"), "look-alike removed");
    assert_eq!(extract(&h).span_context().span_id(), SpanId::from(2));
}

#[test]
fn an_empty_context_injects_no_traceparent() {
    let mut h = Headers::new();
    assert_eq!(inject(&Context::new(), &mut h), Injected::NoSpan);
    assert!(h.is_empty());
}

#[test]
fn every_unusable_traceparent_says_why() {
    let long = vec![b'0'; MAX_TRACEPARENT_LEN + 1];
    let cases: Vec<(Headers, &str)> = vec![
        (Headers::new(), "missing"),
        (headers(&[(TRACEPARENT, &[0xff, 0xfe, b'0'])]), "not_utf8"),
        (headers(&[(TRACEPARENT, &long)]), "too_long"),
        (headers(&[(TRACEPARENT, b"00-abc")]), "malformed"),
        (
            headers(&[(
                TRACEPARENT,
                b"00-00000000000000000000000000000000-0000000000000000-01",
            )]),
            "malformed",
        ),
        (headers(&[("TRACEPARENT", VALID.as_bytes())]), "wrong_case"),
        (
            headers(&[
                (TRACEPARENT, VALID.as_bytes()),
                (
                    "Traceparent",
                    b"00-11111111111111111111111111111111-2222222222222222-01",
                ),
            ]),
            "ambiguous",
        ),
    ];
    for (h, kind) in cases {
        let got = extract(&h);
        let problem = got.problem.clone().expect("unusable");
        assert_eq!(problem.kind(), kind, "{h:?}: {problem}");
        assert!(!got.context.span().span_context().is_valid());
        assert!(!problem.to_string().is_empty());
    }
}

/// Headers other SDKs refuse are refused here too, though the Rust SDK's
/// parser alone would read them (ids of any width, a leading `+`).
#[test]
fn a_traceparent_outside_w3c_syntax_is_malformed() {
    let refused = [
        "00-1-2-01".to_owned(),
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        // An id printed without its leading zero: 31 digits.
        "00-bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        format!("{VALID}-"),
        VALID.to_uppercase(),
        VALID.replacen("00", "ff", 1),
        format!("{VALID}-extra"),
    ];
    for value in &refused {
        let got = extract(&headers(&[(TRACEPARENT, value.as_bytes())]));
        let problem = got.problem.clone().expect(value);
        assert_eq!(problem.kind(), "malformed", "{value}: {problem}");
        assert!(!got.context.span().span_context().is_valid(), "{value}");
    }
    // A later version may add parts after the flags.
    let later = format!("01{}-what-comes-later", &VALID[2..]);
    let got = extract(&headers(&[(TRACEPARENT, later.as_bytes())]));
    assert!(got.problem.is_none(), "{later}: {:?}", got.problem);
    let padded = format!(" {VALID} ");
    assert!(extract(&headers(&[(TRACEPARENT, padded.as_bytes())])).is_usable());
}

#[test]
fn agreeing_lookalikes_are_not_ambiguous() {
    let h = headers(&[
        (TRACEPARENT, VALID.as_bytes()),
        ("Traceparent", VALID.as_bytes()),
    ]);
    assert!(extract(&h).is_usable());
}

#[test]
fn unreadable_tracestate_and_baggage_are_reported_but_not_fatal() {
    let h = headers(&[
        (TRACEPARENT, VALID.as_bytes()),
        (TRACESTATE, &[0xc3, 0x28]),
        (BAGGAGE, &vec![b'a'; 9000]),
    ]);
    let got = extract(&h);
    assert!(got.is_usable());
    let kinds: Vec<&str> = got.ignored.iter().map(ExtractProblem::kind).collect();
    assert_eq!(kinds, ["not_utf8", "too_long"]);
}

#[test]
fn an_unusable_record_falls_back_to_the_ambient_context() {
    let ambient = context(5, 6);
    let got = extract_with(&ambient, &headers(&[(TRACEPARENT, b"junk")]));
    assert_eq!(
        got.problem.as_ref().map(ExtractProblem::kind),
        Some("malformed")
    );
    assert_eq!(got.context.span().span_context().span_id(), SpanId::from(6));
    assert!(
        got.span_context().span_id() == SpanId::INVALID,
        "the record's own context is reported invalid"
    );
}

#[test]
fn a_dropped_tracestate_is_reported_but_not_fatal() {
    let h = headers(&[
        (TRACEPARENT, VALID.as_bytes()),
        (TRACESTATE, b"no equals sign"),
    ]);
    let got = extract(&h);
    assert!(got.is_usable());
    let kinds: Vec<&str> = got.ignored.iter().map(ExtractProblem::kind).collect();
    assert_eq!(kinds, ["malformed_tracestate"]);
}
