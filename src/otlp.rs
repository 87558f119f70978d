//! Captured spans as OTLP/JSON: the `{"resourceSpans": [...]}` body of an
//! OTLP/HTTP `ExportTraceServiceRequest`, which Jaeger, Tempo, the
//! OpenTelemetry Collector (`otlpjsonfile` receiver) and most APM backends
//! read, so a test's trace can be looked at in a real viewer.
//!
//! The encoding is `opentelemetry-proto`'s (its `with-serde` feature), and
//! follows the OTLP/JSON rules: lowerCamelCase keys, trace and span ids as
//! lower-case hex strings, enums (`kind`, `status.code`) as integers, 64-bit
//! integers (timestamps, `intValue`) as decimal strings.
//!
//! An SDK [`SpanData`] does not carry its resource (the provider hands it to
//! the exporter separately), so each span comes with the name of the service
//! that made it, or with its whole [`Resource`]; spans are grouped into one
//! `resourceSpans` entry per resource, in order of first appearance, then
//! per instrumentation scope.
//!
//! ```
//! use kafka_trace_harness::otlp::spans_to_otlp_json;
//! use opentelemetry::trace::{Tracer, TracerProvider};
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//!
//! // Arrange: spans of a "datagen" service.
//! let exporter = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//! provider.tracer("example").in_span("send stockapp.trades", |_| {});
//! let spans = exporter.get_finished_spans()?;
//!
//! // Act
//! let json = spans_to_otlp_json(spans.iter().map(|span| ("datagen", span)))?;
//!
//! // Assert
//! let value: serde_json::Value = serde_json::from_str(&json)?;
//! let resource_spans = &value["resourceSpans"][0];
//! assert_eq!(
//!     resource_spans["resource"]["attributes"][0],
//!     serde_json::json!({"key": "service.name", "value": {"stringValue": "datagen"}})
//! );
//! assert_eq!(resource_spans["scopeSpans"][0]["spans"][0]["name"], "send stockapp.trades");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

use crate::{Error, Result};

/// `service.name` given to spans whose service name is empty, as the
/// OpenTelemetry SDKs do when none is configured.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Spans gathered per resource, ready to encode as one OTLP request.
///
/// ```
/// use kafka_trace_harness::otlp::OtlpTraces;
/// use opentelemetry::trace::{Tracer, TracerProvider};
/// use opentelemetry_sdk::Resource;
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
///
/// let exporter = InMemorySpanExporter::default();
/// let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
/// provider.tracer("example").in_span("process stockapp.trades", |_| {});
/// let resource = Resource::builder_empty()
///     .with_service_name("stock-processor")
///     .with_attribute(opentelemetry::KeyValue::new("service.instance.id", "7"))
///     .build();
///
/// let mut traces = OtlpTraces::new();
/// traces.add_resource_spans(&resource, exporter.get_finished_spans()?);
/// let request = traces.to_request();
///
/// assert_eq!(request.resource_spans.len(), 1);
/// assert_eq!(request.resource_spans[0].resource.as_ref().unwrap().attributes.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct OtlpTraces {
    groups: Vec<(Resource, Vec<SpanData>)>,
}

fn service_resource(service: &str) -> Resource {
    let name = if service.is_empty() {
        UNKNOWN_SERVICE
    } else {
        service
    };
    Resource::builder_empty()
        .with_service_name(name.to_owned())
        .build()
}

impl OtlpTraces {
    /// No spans yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `span` of the service named `service`; its resource has only
    /// `service.name` ([`UNKNOWN_SERVICE`] for an empty name).
    pub fn add_service_span(&mut self, service: &str, span: SpanData) {
        let resource = service_resource(service);
        self.group(&resource).push(span);
    }

    /// Adds `spans`, all made under `resource`.
    pub fn add_resource_spans(
        &mut self,
        resource: &Resource,
        spans: impl IntoIterator<Item = SpanData>,
    ) {
        self.group(resource).extend(spans);
    }

    /// Number of spans added.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|(_, spans)| spans.len()).sum()
    }

    /// Whether no span was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn group(&mut self, resource: &Resource) -> &mut Vec<SpanData> {
        // A handful of services per test: a linear search is the simplest.
        let index = match self.groups.iter().position(|(r, _)| r == resource) {
            Some(index) => index,
            None => {
                self.groups.push((resource.clone(), Vec::new()));
                self.groups.len() - 1
            }
        };
        &mut self.groups[index].1
    }

    /// The spans as an OTLP `ExportTraceServiceRequest`.
    pub fn to_request(&self) -> ExportTraceServiceRequest {
        let resource_spans = self
            .groups
            .iter()
            .flat_map(|(resource, spans)| {
                let mut attributes = ResourceAttributesWithSchema::from(resource);
                // A Resource keeps its attributes in a HashMap; sorting makes
                // the output the same from run to run.
                attributes.attributes.0.sort_by(|a, b| a.key.cmp(&b.key));
                group_spans_by_resource_and_scope(spans.clone(), &attributes)
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }

    /// The spans as OTLP/JSON (see the [module docs](self)).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(&self.to_request()).map_err(|e| Error::OtlpEncode(e.to_string()))
    }

    /// Writes [`OtlpTraces::to_json`] to `path`, replacing any file there.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self.to_json()?;
        std::fs::write(path, json).map_err(|source| Error::OtlpWrite {
            path: path.to_owned(),
            source,
        })
    }
}

impl<'a, S: AsRef<str>> FromIterator<(S, &'a SpanData)> for OtlpTraces {
    fn from_iter<I: IntoIterator<Item = (S, &'a SpanData)>>(spans: I) -> Self {
        let mut traces = Self::new();
        for (service, span) in spans {
            traces.add_service_span(service.as_ref(), span.clone());
        }
        traces
    }
}

/// `(service name, span)` pairs as OTLP/JSON, one `resourceSpans` entry per
/// service (see the [module docs](self) for an example).
pub fn spans_to_otlp_json<'a, S: AsRef<str>>(
    spans: impl IntoIterator<Item = (S, &'a SpanData)>,
) -> Result<String> {
    spans.into_iter().collect::<OtlpTraces>().to_json()
}

/// Writes `(service name, span)` pairs as OTLP/JSON to `path`, replacing any
/// file there; a failure names the path.
///
/// ```
/// use kafka_trace_harness::otlp::write_otlp_json;
/// use opentelemetry_sdk::trace::SpanData;
///
/// let no_spans: Vec<(&str, &SpanData)> = Vec::new();
/// let err = write_otlp_json("/no/such/dir/trace.json", no_spans).unwrap_err();
///
/// assert!(err.to_string().contains("/no/such/dir/trace.json"), "{err}");
/// ```
pub fn write_otlp_json<'a, S: AsRef<str>>(
    path: impl AsRef<Path>,
    spans: impl IntoIterator<Item = (S, &'a SpanData)>,
) -> Result<()> {
    spans.into_iter().collect::<OtlpTraces>().write(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        Link, Span, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use serde_json::Value;

    /// A service: its own provider (resource `service.name`) exporting
    /// synchronously into its own in-memory exporter.
    struct Service {
        name: &'static str,
        provider: SdkTracerProvider,
        exporter: InMemorySpanExporter,
    }

    impl Service {
        fn new(name: &'static str) -> Self {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_resource(service_resource(name))
                .with_simple_exporter(exporter.clone())
                .build();
            Self {
                name,
                provider,
                exporter,
            }
        }

        fn spans(&self) -> Vec<(&'static str, SpanData)> {
            let spans = self.exporter.get_finished_spans().unwrap();
            spans.into_iter().map(|span| (self.name, span)).collect()
        }
    }

    struct Pipeline {
        spans: Vec<(&'static str, SpanData)>,
        send_trade: SpanContext,
        send_user: SpanContext,
        process: SpanContext,
    }

    /// datagen sends a user and a trade; the processor consumes the trade
    /// (remote parent: the trade's send span, link: the user's send span)
    /// and sends a window row.
    fn pipeline() -> Pipeline {
        let datagen = Service::new("datagen");
        let processor = Service::new("stock-processor");
        let datagen_tracer = datagen.provider.tracer("kafka-trace-harness");
        let processor_tracer = processor.provider.tracer("kafka-trace-harness");

        let mut send_user = datagen_tracer
            .span_builder("send stockapp.users")
            .with_kind(SpanKind::Producer)
            .start(&datagen_tracer);
        let send_user_context = send_user.span_context().clone();
        send_user.end();
        let mut send_trade = datagen_tracer
            .span_builder("send stockapp.trades")
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.kafka.offset", 42_i64),
            ])
            .start(&datagen_tracer);
        let send_trade_context = send_trade.span_context().clone();
        send_trade.end();

        // What a consumer does with the traceparent header it read: the
        // extracted context is marked remote.
        let extracted = SpanContext::new(
            send_trade_context.trace_id(),
            send_trade_context.span_id(),
            send_trade_context.trace_flags(),
            true,
            send_trade_context.trace_state().clone(),
        );
        let remote_parent = Context::new().with_remote_span_context(extracted);
        let process = processor_tracer
            .span_builder("process stockapp.trades")
            .with_kind(SpanKind::Consumer)
            .with_links(vec![Link::with_context(send_user_context.clone())])
            .start_with_context(&processor_tracer, &remote_parent);
        let process_context = process.span_context().clone();
        let process_cx = remote_parent.with_span(process);
        let mut send_row = processor_tracer
            .span_builder("send stockapp.dollarsbyzip")
            .with_kind(SpanKind::Producer)
            .start_with_context(&processor_tracer, &process_cx);
        send_row.set_status(Status::error("broker unreachable"));
        send_row.add_event("retry", vec![KeyValue::new("attempt", 2_i64)]);
        send_row.end();
        process_cx.span().end();

        let mut spans = datagen.spans();
        spans.extend(processor.spans());
        Pipeline {
            spans,
            send_trade: send_trade_context,
            send_user: send_user_context,
            process: process_context,
        }
    }

    fn json_of(pipeline: &Pipeline) -> Value {
        let json = spans_to_otlp_json(pipeline.spans.iter().map(|(s, span)| (*s, span))).unwrap();
        serde_json::from_str(&json).unwrap()
    }

    /// Every span of the request, by name.
    fn span<'a>(request: &'a Value, name: &str) -> &'a Value {
        request["resourceSpans"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["scopeSpans"].as_array().unwrap())
            .flat_map(|s| s["spans"].as_array().unwrap())
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no span {name:?} in {request:#}"))
    }

    #[test]
    fn spans_are_grouped_per_service_resource() {
        let pipeline = pipeline();

        let request = json_of(&pipeline);

        let resource_spans = request["resourceSpans"].as_array().unwrap();
        let services: Vec<&Value> = resource_spans
            .iter()
            .map(|r| &r["resource"]["attributes"])
            .collect();
        assert_eq!(
            services,
            [
                &serde_json::json!([{"key": "service.name", "value": {"stringValue": "datagen"}}]),
                &serde_json::json!([{"key": "service.name", "value": {"stringValue": "stock-processor"}}]),
            ]
        );
        let names: Vec<Vec<&str>> = resource_spans
            .iter()
            .map(|r| {
                let spans = r["scopeSpans"][0]["spans"].as_array().unwrap();
                spans.iter().map(|s| s["name"].as_str().unwrap()).collect()
            })
            .collect();
        assert_eq!(
            names,
            [
                vec!["send stockapp.users", "send stockapp.trades"],
                vec!["send stockapp.dollarsbyzip", "process stockapp.trades"],
            ]
        );
        assert_eq!(
            resource_spans[0]["scopeSpans"][0]["scope"]["name"],
            "kafka-trace-harness"
        );
    }

    #[test]
    fn ids_parentage_and_links_are_hex_strings() {
        let pipeline = pipeline();

        let request = json_of(&pipeline);

        let send_trade = span(&request, "send stockapp.trades");
        let process = span(&request, "process stockapp.trades");
        let send_row = span(&request, "send stockapp.dollarsbyzip");
        let trace_id = pipeline.send_trade.trace_id().to_string();
        assert_eq!(trace_id.len(), 32);
        for s in [send_trade, process, send_row] {
            assert_eq!(s["traceId"], trace_id.as_str(), "{s:#}");
        }
        assert_eq!(
            send_trade["spanId"],
            pipeline.send_trade.span_id().to_string()
        );
        assert_eq!(send_trade["parentSpanId"], "");
        assert_eq!(process["spanId"], pipeline.process.span_id().to_string());
        assert_eq!(process["parentSpanId"], send_trade["spanId"]);
        assert_eq!(send_row["parentSpanId"], process["spanId"]);
        let link = &process["links"][0];
        assert_eq!(link["traceId"], pipeline.send_user.trace_id().to_string());
        assert_eq!(link["spanId"], pipeline.send_user.span_id().to_string());
        assert_ne!(link["traceId"], process["traceId"]);
        // Sampled, with "has is-remote" set; the consumer's parent is remote.
        assert_eq!(send_trade["flags"], 0x101);
        assert_eq!(process["flags"], 0x301);
    }

    #[test]
    fn encoding_follows_the_otlp_json_rules() {
        let pipeline = pipeline();

        let request = json_of(&pipeline);

        fn keys_are_lower_camel_case(value: &Value) {
            match value {
                Value::Object(map) => {
                    for (key, inner) in map {
                        assert!(
                            key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                                && key.chars().all(|c| c.is_ascii_alphanumeric()),
                            "key {key:?}"
                        );
                        keys_are_lower_camel_case(inner);
                    }
                }
                Value::Array(items) => items.iter().for_each(keys_are_lower_camel_case),
                _ => {}
            }
        }
        keys_are_lower_camel_case(&request);
        let send_trade = span(&request, "send stockapp.trades");
        let process = span(&request, "process stockapp.trades");
        let send_row = span(&request, "send stockapp.dollarsbyzip");
        assert_eq!(send_trade["kind"], 4);
        assert_eq!(process["kind"], 5);
        let start = send_trade["startTimeUnixNano"].as_str().unwrap();
        let end = send_trade["endTimeUnixNano"].as_str().unwrap();
        assert!(start.parse::<u64>().unwrap() <= end.parse::<u64>().unwrap());
        assert_eq!(
            send_trade["attributes"],
            serde_json::json!([
                {"key": "messaging.system", "value": {"stringValue": "kafka"}},
                {"key": "messaging.kafka.offset", "value": {"intValue": "42"}},
            ])
        );
        assert_eq!(
            send_row["status"],
            serde_json::json!({"code": 2, "message": "broker unreachable"})
        );
        let event = &send_row["events"][0];
        assert_eq!(event["name"], "retry");
        assert!(
            event["timeUnixNano"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .is_ok()
        );
        assert_eq!(event["attributes"][0]["value"]["intValue"], "2");
    }

    #[test]
    fn the_json_reads_back_as_the_same_request() {
        let pipeline = pipeline();
        let traces: OtlpTraces = pipeline.spans.iter().map(|(s, span)| (*s, span)).collect();

        let json = traces.to_json().unwrap();
        let read_back: ExportTraceServiceRequest = serde_json::from_str(&json).unwrap();

        assert_eq!(read_back, traces.to_request());
        assert_eq!(traces.len(), 4);
        let first = &pipeline.spans[0].1;
        let span = &read_back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id, first.span_context.trace_id().to_bytes());
        let start = first
            .start_time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!(span.start_time_unix_nano, start.as_nanos() as u64);
    }

    #[test]
    fn write_replaces_the_file_and_failures_name_the_path() {
        let pipeline = pipeline();
        let traces: OtlpTraces = pipeline.spans.iter().map(|(s, span)| (*s, span)).collect();
        let path = std::env::temp_dir().join(format!("otlp-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, "stale").unwrap();

        write_otlp_json(&path, pipeline.spans.iter().map(|(s, span)| (*s, span))).unwrap();
        let written = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);

        assert_eq!(written.unwrap(), traces.to_json().unwrap());
        let err = traces.write(path.join("below-a-missing-dir")).unwrap_err();
        assert!(matches!(err, Error::OtlpWrite { .. }), "{err:?}");
        assert!(err.to_string().contains("below-a-missing-dir"), "{err}");
    }

    #[test]
    fn no_spans_and_nameless_services() {
        let pipeline = pipeline();

        let empty = OtlpTraces::new();
        let nameless: OtlpTraces = [("", &pipeline.spans[0].1)].into_iter().collect();

        assert!(empty.is_empty());
        assert_eq!(empty.to_json().unwrap(), r#"{"resourceSpans":[]}"#);
        let request: Value = serde_json::from_str(&nameless.to_json().unwrap()).unwrap();
        assert_eq!(
            request["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            UNKNOWN_SERVICE
        );
    }

    #[test]
    fn resource_attributes_are_sorted_by_key() {
        let pipeline = pipeline();
        let resource = Resource::builder_empty()
            .with_attributes((0..20).map(|i| KeyValue::new(format!("k{i:02}"), i64::from(i))))
            .with_service_name("api-1")
            .build();
        let mut traces = OtlpTraces::new();

        traces.add_resource_spans(&resource, pipeline.spans.into_iter().map(|(_, s)| s));

        let request = traces.to_request();
        let keys: Vec<&str> = request.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 21);
    }
}
