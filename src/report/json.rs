//! A small JSON writer, and the spans of a report as one OTLP/JSON export
//! request (`{"resourceSpans": …}`), written by hand so that the report
//! needs no crate beyond the core's: it is on by default, and a failing
//! assertion in any user's test can write it.
//!
//! The encoding is the one `opentelemetry-proto` (feature `otlp`, see
//! [`crate::otlp`]) produces: lowerCamelCase keys, ids as lower-case hex,
//! `kind` and `status.code` as integers, 64-bit integers as decimal
//! strings; a test checks that both parse to the same request.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

use crate::forest::tree::CapturedSpan;

/// `service.name` of spans whose service name is empty, as the SDKs say.
const UNKNOWN_SERVICE: &str = "unknown_service";

/// Appends `text` as a JSON string. `<` is written `\u003c`, so that the
/// JSON can sit inside a `<script>` element whatever it holds (no `</script>`
/// or `<!--` can end it early).
pub(crate) fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            // Line and paragraph separators are valid JSON but not valid
            // in older JavaScript string literals: escaped, to be safe.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `"key":` (after a comma unless `first`).
pub(crate) fn key(out: &mut String, first: bool, name: &str) {
    if !first {
        out.push(',');
    }
    string(out, name);
    out.push(':');
}

/// Appends a finite number, or `null` (JSON has no NaN nor infinity).
pub(crate) fn number(out: &mut String, value: f64) {
    if value.is_finite() {
        let _ = write!(out, "{value}");
    } else {
        out.push_str("null");
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn any_value(out: &mut String, value: &Value) {
    match value {
        Value::Bool(b) => {
            let _ = write!(out, "{{\"boolValue\":{b}}}");
        }
        Value::I64(i) => {
            let _ = write!(out, "{{\"intValue\":\"{i}\"}}");
        }
        Value::F64(f) => {
            out.push_str("{\"doubleValue\":");
            number(out, *f);
            out.push('}');
        }
        Value::String(s) => {
            out.push_str("{\"stringValue\":");
            string(out, s.as_str());
            out.push('}');
        }
        Value::Array(array) => {
            out.push_str("{\"arrayValue\":{\"values\":[");
            let values: Vec<Value> = match array {
                Array::Bool(v) => v.iter().map(|b| Value::Bool(*b)).collect(),
                Array::I64(v) => v.iter().map(|i| Value::I64(*i)).collect(),
                Array::F64(v) => v.iter().map(|f| Value::F64(*f)).collect(),
                Array::String(v) => v.iter().map(|s| Value::String(s.clone())).collect(),
                other => vec![Value::String(other.to_string().into())],
            };
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                any_value(out, value);
            }
            out.push_str("]}}");
        }
        other => {
            out.push_str("{\"stringValue\":");
            string(out, &other.to_string());
            out.push('}');
        }
    }
}

fn attributes<'a>(out: &mut String, kvs: impl IntoIterator<Item = &'a KeyValue>) {
    out.push('[');
    for (i, kv) in kvs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        string(out, kv.key.as_str());
        out.push_str(",\"value\":");
        any_value(out, &kv.value);
        out.push('}');
    }
    out.push(']');
}

/// OTLP's span flags: the W3C trace flags, plus "has is-remote" and
/// "is remote" bits, as opentelemetry-proto sets them.
fn span_flags(trace_flags: u8, remote: bool) -> u32 {
    u32::from(trace_flags) | 0x100 | if remote { 0x200 } else { 0 }
}

fn kind(kind: &SpanKind) -> u8 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn span(out: &mut String, span: &SpanData) {
    let cx = &span.span_context;
    let _ = write!(
        out,
        "{{\"traceId\":\"{}\",\"spanId\":\"{}\",\"traceState\":",
        cx.trace_id(),
        cx.span_id()
    );
    string(out, &cx.trace_state().header());
    out.push_str(",\"parentSpanId\":\"");
    if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        let _ = write!(out, "{}", span.parent_span_id);
    }
    let _ = write!(
        out,
        "\",\"flags\":{},\"name\":",
        span_flags(cx.trace_flags().to_u8(), span.parent_span_is_remote)
    );
    string(out, &span.name);
    let _ = write!(
        out,
        ",\"kind\":{},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":",
        kind(&span.span_kind),
        nanos(span.start_time),
        nanos(span.end_time)
    );
    attributes(out, &span.attributes);
    let _ = write!(
        out,
        ",\"droppedAttributesCount\":{},\"events\":[",
        span.dropped_attributes_count
    );
    for (i, event) in span.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"timeUnixNano\":\"{}\",\"name\":",
            nanos(event.timestamp)
        );
        string(out, &event.name);
        out.push_str(",\"attributes\":");
        attributes(out, &event.attributes);
        let _ = write!(
            out,
            ",\"droppedAttributesCount\":{}}}",
            event.dropped_attributes_count
        );
    }
    let _ = write!(
        out,
        "],\"droppedEventsCount\":{},\"links\":[",
        span.events.dropped_count
    );
    for (i, link) in span.links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let lcx = &link.span_context;
        let _ = write!(
            out,
            "{{\"traceId\":\"{}\",\"spanId\":\"{}\",\"traceState\":",
            lcx.trace_id(),
            lcx.span_id()
        );
        string(out, &lcx.trace_state().header());
        out.push_str(",\"attributes\":");
        attributes(out, &link.attributes);
        let _ = write!(
            out,
            ",\"droppedAttributesCount\":{},\"flags\":{}}}",
            link.dropped_attributes_count,
            span_flags(lcx.trace_flags().to_u8(), lcx.is_remote())
        );
    }
    let _ = write!(
        out,
        "],\"droppedLinksCount\":{},\"status\":{{\"message\":",
        span.links.dropped_count
    );
    let (code, message) = match &span.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    string(out, message);
    let _ = write!(out, ",\"code\":{code}}}}}");
}

/// One instrumentation scope's spans.
type ScopeGroup<'a> = (&'a opentelemetry::InstrumentationScope, Vec<&'a SpanData>);

/// The spans as one OTLP/JSON export request: one `resourceSpans` entry
/// per service (in order of first appearance) with `service.name` as its
/// only resource attribute, then one `scopeSpans` entry per
/// instrumentation scope, as [`crate::otlp::OtlpTraces`] groups them.
pub(crate) fn export_request<'a>(spans: impl IntoIterator<Item = &'a CapturedSpan>) -> String {
    // service → scopes → spans, each in order of first appearance.
    let mut groups: Vec<(&str, Vec<ScopeGroup<'_>>)> = Vec::new();
    for captured in spans {
        let service = if captured.service.is_empty() {
            UNKNOWN_SERVICE
        } else {
            captured.service.as_str()
        };
        let index = match groups.iter().position(|(s, _)| *s == service) {
            Some(index) => index,
            None => {
                groups.push((service, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[index].1;
        let scope = &captured.data.instrumentation_scope;
        match scopes.iter_mut().find(|(s, _)| *s == scope) {
            Some((_, spans)) => spans.push(&captured.data),
            None => scopes.push((scope, vec![&captured.data])),
        }
    }
    let mut out = String::with_capacity(1024);
    out.push_str("{\"resourceSpans\":[");
    for (g, (service, scopes)) in groups.iter().enumerate() {
        if g > 0 {
            out.push(',');
        }
        out.push_str(
            "{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":",
        );
        string(&mut out, service);
        out.push_str("}}],\"droppedAttributesCount\":0},\"scopeSpans\":[");
        for (s, (scope, spans)) in scopes.iter().enumerate() {
            if s > 0 {
                out.push(',');
            }
            out.push_str("{\"scope\":{\"name\":");
            string(&mut out, scope.name());
            out.push_str(",\"version\":");
            string(&mut out, scope.version().unwrap_or(""));
            out.push_str(",\"attributes\":");
            attributes(&mut out, scope.attributes());
            out.push_str(",\"droppedAttributesCount\":0},\"spans\":[");
            for (i, data) in spans.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                span(&mut out, data);
            }
            out.push_str("],\"schemaUrl\":");
            string(&mut out, scope.schema_url().unwrap_or(""));
            out.push('}');
        }
        out.push_str("],\"schemaUrl\":\"\"}");
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_for_json_inside_a_script_element() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\n</script><!--\u{1}\u{2028}");
        assert_eq!(
            out, r#""a\"b\\c\n\u003c/script>\u003c!--\u0001\u2028""#,
            "no `<` survives, controls are escaped"
        );
    }

    /// Spans with every field set: attribute types, events, links, error
    /// status, a remote parent, trace state; two services, two scopes.
    #[cfg(feature = "otlp")]
    fn varied_spans() -> Vec<CapturedSpan> {
        use std::borrow::Cow;
        use std::time::Duration;

        use opentelemetry::trace::{Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        use opentelemetry::{InstrumentationScope, StringValue};
        use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

        let at = |ms: u64| UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789 + ms);
        let cx = |trace: u128, span: u64, remote| {
            SpanContext::new(
                TraceId::from(trace),
                SpanId::from(span),
                TraceFlags::SAMPLED,
                remote,
                TraceState::from_key_value([("vendor", "x")]).unwrap(),
            )
        };
        let mut events = SpanEvents::default();
        events.events.push(opentelemetry::trace::Event::new(
            "retry",
            at(5),
            vec![KeyValue::new("attempt", 2)],
            1,
        ));
        events.dropped_count = 3;
        let mut links = SpanLinks::default();
        links.links.push(Link::new(
            cx(2, 20, true),
            vec![KeyValue::new("why", "join")],
            0,
        ));
        let scope = |name: &'static str| {
            InstrumentationScope::builder(name)
                .with_version("1.2")
                .with_attributes([KeyValue::new("scope.attr", true)])
                .build()
        };
        let span = |service: &str, id: u64, parent: u64, kind, scope_name, status| CapturedSpan {
            service: service.to_owned(),
            data: SpanData {
                span_context: cx(1, id, false),
                parent_span_id: SpanId::from(parent),
                parent_span_is_remote: parent != 0,
                span_kind: kind,
                name: Cow::Owned(format!("span {id} \"quoted\" <b>")),
                start_time: at(0),
                end_time: at(1_000_000),
                attributes: vec![
                    KeyValue::new("s", "text\nline"),
                    KeyValue::new("i", -7_i64),
                    KeyValue::new("f", 1.25),
                    KeyValue::new("b", false),
                    KeyValue::new(
                        "a",
                        Value::Array(Array::String(vec![StringValue::from("x"), "y".into()])),
                    ),
                    KeyValue::new("ai", Value::Array(Array::I64(vec![1, 2]))),
                ],
                dropped_attributes_count: 4,
                events: events.clone(),
                links: links.clone(),
                status,
                instrumentation_scope: scope(scope_name),
            },
        };
        vec![
            span("datagen", 10, 0, SpanKind::Producer, "a", Status::Ok),
            span(
                "api",
                11,
                10,
                SpanKind::Consumer,
                "a",
                Status::error("boom"),
            ),
            span("datagen", 12, 0, SpanKind::Internal, "b", Status::Unset),
            span("", 13, 99, SpanKind::Server, "a", Status::Unset),
        ]
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn the_report_request_parses_to_what_the_otlp_module_writes() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

        let spans = varied_spans();
        let ours = export_request(&spans);
        let theirs =
            crate::otlp::spans_to_otlp_json(spans.iter().map(|c| (c.service.as_str(), &c.data)))
                .unwrap();

        let ours: ExportTraceServiceRequest = serde_json::from_str(&ours).unwrap();
        let theirs: ExportTraceServiceRequest = serde_json::from_str(&theirs).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(
            ours.resource_spans.len(),
            3,
            "datagen, api, unknown_service"
        );
    }

    #[test]
    fn numbers_that_json_cannot_hold_are_null() {
        let mut out = String::new();
        number(&mut out, f64::NAN);
        out.push(',');
        number(&mut out, 1.5);
        assert_eq!(out, "null,1.5");
    }
}
