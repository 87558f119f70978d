//! The OTLP receiver: spans another program exports over OTLP/HTTP
//! (protobuf, JSON, gzip) and OTLP/gRPC join the capture's forest, with
//! their resource's service name; malformed requests are refused with
//! HTTP 400 or gRPC InvalidArgument, bad spans reported as partial success.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kafka_trace_harness::integrations::otlp_receiver::{
    GRPC_EXPORT_PATH, HTTP_TRACES_PATH, OtlpReceiver,
};
use kafka_trace_harness::otlp::OtlpTraces;
use kafka_trace_harness::{Condition, Error, ExpectedSpan, SpanCapture};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, TraceContextExt as _, Tracer as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Deadline of every network exchange in these tests.
const DEADLINE: Duration = Duration::from_secs(10);

/// An HTTP answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`): a
/// client small enough to show exactly what goes over the wire.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer from {addr} to {method} {path} within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"));
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(length) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(length);
    }
    Answer {
        status,
        headers,
        body,
    }
}

async fn post(receiver: &OtlpReceiver, content_type: &str, body: &[u8]) -> Answer {
    http(
        receiver.http_addr(),
        "POST",
        HTTP_TRACES_PATH,
        &[("Content-Type", content_type)],
        body,
    )
    .await
}

/// The spans of `other` as the request its OTLP exporter would send.
fn export_of(other: &SpanCapture) -> ExportTraceServiceRequest {
    other
        .spans()
        .iter()
        .map(|s| (s.service.as_str(), &s.data))
        .collect::<OtlpTraces>()
        .to_request()
}

/// What a consumer makes of a `traceparent` header: the context, marked
/// remote.
fn remote(context: &SpanContext) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        context.trace_id(),
        context.span_id(),
        context.trace_flags(),
        true,
        context.trace_state().clone(),
    ))
}

/// What a test's trace looks like across two programs: the harness's
/// `datagen` sends (a user, then a trade); the other program (service
/// `python`, its own SDK) processes the trade, child of the trade's send,
/// linked to the user's; the harness's `api` sends a row, child of the
/// other program's span.
struct CrossProgram {
    capture: SpanCapture,
    other: SpanCapture,
    process: SpanContext,
}

impl CrossProgram {
    fn new() -> Self {
        let capture = SpanCapture::new();
        let other = SpanCapture::new();
        let datagen = capture.tracer("datagen");
        let mut send_user = datagen
            .span_builder("send users")
            .with_kind(SpanKind::Producer)
            .start(&datagen);
        let user = send_user.span_context().clone();
        send_user.end();
        let mut send_trade = datagen
            .span_builder("send trades")
            .with_kind(SpanKind::Producer)
            .start(&datagen);
        let trade = send_trade.span_context().clone();
        send_trade.end();

        let python = other.tracer("python");
        let mut process = python
            .span_builder("process trades")
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.kafka.offset", 42_i64),
                KeyValue::new("ratio", 0.5),
                KeyValue::new("retried", true),
                KeyValue::new("partitions", Value::Array(vec![0_i64, 3].into())),
            ])
            .with_links(vec![Link::new(
                user,
                vec![KeyValue::new("join", "user")],
                0,
            )])
            .start_with_context(&python, &remote(&trade));
        process.add_event("committed", vec![KeyValue::new("offset", 43_i64)]);
        let process_context = process.span_context().clone();
        process.end();
        Self {
            capture,
            other,
            process: process_context,
        }
    }

    /// The harness's `api` continues the other program's trace.
    fn continue_in_the_harness(&self) {
        let api = self.capture.tracer("api");
        api.span_builder("send rows")
            .with_kind(SpanKind::Producer)
            .start_with_context(&api, &remote(&self.process))
            .end();
    }

    fn expected() -> ExpectedSpan {
        ExpectedSpan::producer("send trades")
            .service("datagen")
            .child(
                ExpectedSpan::consumer("process trades")
                    .service("python")
                    .attr("messaging.system", "kafka")
                    .attr("messaging.kafka.offset", 42_i64)
                    .attr("ratio", 0.5)
                    .attr("retried", true)
                    .attr("partitions", Value::Array(vec![0_i64, 3].into()))
                    .link_to("send users")
                    .child(ExpectedSpan::producer("send rows").service("api")),
            )
    }

    /// The received span, checked field by field against what was sent.
    fn assert_received_faithfully(&self) {
        let sent = self.other.spans();
        let forest = self.capture.forest();
        let received = forest
            .named("process trades")
            .next()
            .expect("the received span is in the capture");
        let received = received.data();
        let sent = &sent[0].data;
        assert_eq!(
            received.span_context.trace_id(),
            sent.span_context.trace_id()
        );
        assert_eq!(received.span_context.span_id(), sent.span_context.span_id());
        assert_eq!(received.parent_span_id, sent.parent_span_id);
        assert!(received.parent_span_is_remote);
        assert_eq!(received.span_kind, SpanKind::Consumer);
        assert_eq!(received.start_time, sent.start_time);
        assert_eq!(received.end_time, sent.end_time);
        assert_eq!(received.attributes, sent.attributes);
        assert_eq!(received.events.len(), 1);
        assert_eq!(received.events[0].name, "committed");
        assert_eq!(received.events[0].attributes, sent.events[0].attributes);
        assert_eq!(
            received.links[0].span_context.span_id(),
            sent.links[0].span_context.span_id()
        );
        assert_eq!(
            received.links[0].attributes,
            [KeyValue::new("join", "user")]
        );
        assert_eq!(received.instrumentation_scope.name(), "kafka-trace-harness");
    }
}

#[tokio::test]
async fn protobuf_over_http_joins_the_harness_trace() {
    let scenario = CrossProgram::new();
    let receiver = scenario.capture.otlp_receiver().await.unwrap();

    let answer = post(
        &receiver,
        "application/x-protobuf",
        &export_of(&scenario.other).encode_to_vec(),
    )
    .await;
    scenario.continue_in_the_harness();

    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.header("content-type"),
        Some("application/x-protobuf")
    );
    let response = ExportTraceServiceResponse::decode(answer.body.as_slice()).unwrap();
    assert_eq!(response.partial_success, None);
    let forest = scenario.capture.forest();
    forest.assert_no_problems();
    forest.assert_trace(&CrossProgram::expected());
    scenario.assert_received_faithfully();
    receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_over_http_reads_hex_ids_back() {
    let scenario = CrossProgram::new();
    let receiver = scenario.capture.otlp_receiver().await.unwrap();
    let json = export_of(&scenario.other);
    let json = serde_json::to_vec(&json).unwrap();
    // The ids travel as hex strings, as src/otlp.rs writes them.
    let text = String::from_utf8_lossy(&json).into_owned();
    assert!(
        text.contains(&scenario.process.span_id().to_string()),
        "{text}"
    );

    let answer = post(&receiver, "application/json; charset=utf-8", &json).await;
    scenario.continue_in_the_harness();

    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let response: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert!(
        response.get("partialSuccess").is_none_or(|p| p.is_null()),
        "{response}"
    );
    scenario
        .capture
        .forest()
        .assert_trace(&CrossProgram::expected());
    scenario.assert_received_faithfully();
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let scenario = CrossProgram::new();
    let receiver = scenario.capture.otlp_receiver().await.unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&export_of(&scenario.other).encode_to_vec())
        .unwrap();
    let body = gzip.finish().unwrap();

    let answer = http(
        receiver.http_addr(),
        "POST",
        HTTP_TRACES_PATH,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &body,
    )
    .await;
    scenario.continue_in_the_harness();

    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    scenario
        .capture
        .forest()
        .assert_trace(&CrossProgram::expected());
}

#[tokio::test]
async fn grpc_export_joins_the_harness_trace() {
    let scenario = CrossProgram::new();
    let receiver = scenario.capture.otlp_receiver().await.unwrap();
    let mut client = tokio::time::timeout(
        DEADLINE,
        TraceServiceClient::connect(receiver.grpc_endpoint()),
    )
    .await
    .expect("gRPC connect within the deadline")
    .unwrap();

    let response = tokio::time::timeout(DEADLINE, client.export(export_of(&scenario.other)))
        .await
        .expect("gRPC export within the deadline")
        .unwrap()
        .into_inner();
    scenario.continue_in_the_harness();

    assert_eq!(response.partial_success, None);
    let forest = scenario.capture.forest();
    forest.assert_no_problems();
    forest.assert_trace(&CrossProgram::expected());
    scenario.assert_received_faithfully();
    // The client's connection is still open: shutdown closes it, in time.
    receiver.shutdown().await.unwrap();
    drop(client);
}

/// A request with one good span and two bad ones (a 15-byte trace id, an
/// all-zero span id).
fn partly_bad_request(other: &SpanCapture) -> ExportTraceServiceRequest {
    other.tracer("python").in_span("good", |_| {});
    other.tracer("python").in_span("short trace id", |_| {});
    other.tracer("python").in_span("zero span id", |_| {});
    let mut request = export_of(other);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[1].trace_id.pop();
    spans[2].span_id = vec![0; 8];
    request
}

#[tokio::test]
async fn bad_spans_are_skipped_and_reported_as_partial_success() {
    let capture = SpanCapture::new();
    let receiver = capture.otlp_receiver().await.unwrap();
    let mut client = TraceServiceClient::connect(receiver.grpc_endpoint())
        .await
        .unwrap();

    let over_grpc = client
        .export(partly_bad_request(&SpanCapture::new()))
        .await
        .unwrap()
        .into_inner();
    let over_http = post(
        &receiver,
        "application/x-protobuf",
        &partly_bad_request(&SpanCapture::new()).encode_to_vec(),
    )
    .await;

    let over_http = ExportTraceServiceResponse::decode(over_http.body.as_slice()).unwrap();
    for response in [over_grpc, over_http] {
        let partial = response.partial_success.expect("a partial success");
        assert_eq!(partial.rejected_spans, 2);
        let message = &partial.error_message;
        assert!(
            message.contains(r#"span "short trace id": trace id has 15 bytes, not 16"#),
            "{message}"
        );
        assert!(
            message.contains(r#"span "zero span id": span id is all zeros"#),
            "{message}"
        );
        assert!(message.contains(r#"service "python""#), "{message}");
    }
    let names: Vec<String> = capture
        .spans()
        .iter()
        .map(|s| s.data.name.to_string())
        .collect();
    assert_eq!(names, ["good", "good"]);
    // Counted where the receiver reports what it took in, not only told
    // to the exporter.
    let arrived = receiver.arrivals().snapshot();
    assert_eq!(arrived.total(), 2, "{arrived:?}");
    assert_eq!(arrived.rejected(), 4, "{arrived:?}");
    assert_eq!(arrived.rejected_by_service.get("python"), Some(&4));
    assert!(
        arrived
            .rejected_reasons
            .iter()
            .any(|r| r.contains("trace id has 15 bytes")),
        "{arrived:?}"
    );
}

/// A request with one good span, "process", carrying a link to an invalid
/// (all-zero) context with an attribute: what OpenTelemetry lets SDKs
/// record for a messaging batch (spec PR #3928), and Python's keeps.
fn span_with_a_link_to_no_span(other: &SpanCapture) -> ExportTraceServiceRequest {
    other.tracer("python").in_span("process", |_| {});
    let mut request = export_of(other);
    request.resource_spans[0].scope_spans[0].spans[0].links =
        vec![opentelemetry_proto::tonic::trace::v1::span::Link {
            trace_id: vec![0; 16],
            span_id: vec![0; 8],
            attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                key: "k".into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            "v".into(),
                        ),
                    ),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }];
    request
}

#[tokio::test]
async fn a_link_to_no_span_is_dropped_and_counted_and_its_span_kept() {
    let capture = SpanCapture::new();
    let receiver = capture.otlp_receiver().await.unwrap();
    let mut client = TraceServiceClient::connect(receiver.grpc_endpoint())
        .await
        .unwrap();

    let over_grpc = client
        .export(span_with_a_link_to_no_span(&SpanCapture::new()))
        .await
        .unwrap()
        .into_inner();
    // OTLP/JSON too: all-zero hex ids must parse, then be dropped alike.
    let over_json = post(
        &receiver,
        "application/json",
        &serde_json::to_vec(&span_with_a_link_to_no_span(&SpanCapture::new())).unwrap(),
    )
    .await;

    let partial = over_grpc.partial_success.expect("the dropped link is said");
    assert_eq!(partial.rejected_spans, 0);
    let expected = r#"1 link(s) to no span dropped, their spans kept: service "python", span "process": link 0's trace id is all zeros: dropped"#;
    assert!(
        partial.error_message.contains(expected),
        "{}",
        partial.error_message
    );
    assert_eq!(over_json.status, 200);
    let over_json: serde_json::Value = serde_json::from_slice(&over_json.body).unwrap();
    assert!(
        over_json["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains(expected)),
        "{over_json}"
    );
    let spans = capture.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.data.name.as_ref()).collect();
    assert_eq!(names, ["process", "process"]);
    for span in &spans {
        assert!(span.data.links.is_empty(), "{:?}", span.data.links);
        assert_eq!(span.data.links.dropped_count, 1, "said on the span too");
    }
    let arrived = receiver.arrivals().snapshot();
    assert_eq!(arrived.total(), 2, "{arrived:?}");
    assert_eq!(arrived.rejected(), 0, "{arrived:?}");
    assert_eq!(arrived.links_dropped(), 2, "{arrived:?}");
    assert_eq!(arrived.links_dropped_by_service.get("python"), Some(&2));
    assert!(
        arrived
            .links_dropped_reasons
            .iter()
            .all(|r| r.contains("link 0's trace id is all zeros")),
        "{arrived:?}"
    );
    receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_http_requests_get_an_error_answer() {
    let capture = SpanCapture::new();
    let receiver = capture.otlp_receiver().await.unwrap();
    let addr = receiver.http_addr();

    let protobuf = post(&receiver, "application/x-protobuf", &[0xff, 0xff, 0xff]).await;
    let json = post(
        &receiver,
        "application/json",
        br#"{"resourceSpans": [{"scopeSpans": 3}]}"#,
    )
    .await;
    let bad_hex = post(
        &receiver,
        "application/json",
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
    )
    .await;
    let text = post(&receiver, "text/plain", b"hello").await;
    let no_type = http(addr, "POST", HTTP_TRACES_PATH, &[], b"").await;
    let bad_gzip = http(
        addr,
        "POST",
        HTTP_TRACES_PATH,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        b"not gzip",
    )
    .await;
    let brotli = http(
        addr,
        "POST",
        HTTP_TRACES_PATH,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "br"),
        ],
        b"",
    )
    .await;
    let get = http(addr, "GET", HTTP_TRACES_PATH, &[], b"").await;
    // Metrics are counted (tests/otlp_export.rs); logs are not served.
    let logs = http(
        addr,
        "POST",
        "/v1/logs",
        &[("Content-Type", "application/x-protobuf")],
        b"",
    )
    .await;

    // OTLP/HTTP: 400 with a google.rpc.Status (code 3, INVALID_ARGUMENT)
    // in the request's encoding.
    assert_eq!(protobuf.status, 400);
    assert_eq!(
        protobuf.header("content-type"),
        Some("application/x-protobuf")
    );
    let status = decode_rpc_status(&protobuf.body);
    assert_eq!(status.0, 3);
    assert!(
        status
            .1
            .contains("not a protobuf ExportTraceServiceRequest"),
        "{}",
        status.1
    );
    for answer in [&json, &bad_hex] {
        assert_eq!(answer.status, 400);
        let status: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(status["code"], 3, "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("not an OTLP/JSON ExportTraceServiceRequest"),
            "{status}"
        );
    }
    assert_eq!(text.status, 415);
    assert!(String::from_utf8_lossy(&text.body).contains("application/x-protobuf"));
    assert_eq!(no_type.status, 415);
    assert_eq!(bad_gzip.status, 400);
    assert_eq!(brotli.status, 415);
    assert_eq!(get.status, 405);
    assert_eq!(logs.status, 404);
    assert!(capture.spans().is_empty());
    // Still serving.
    let fine = post(&receiver, "application/json", b"{}").await;
    assert_eq!(fine.status, 200);
}

/// `google.rpc.Status` fields 1 (code) and 2 (message), read by hand.
fn decode_rpc_status(bytes: &[u8]) -> (i32, String) {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let status = RpcStatus::decode(bytes).unwrap();
    (status.code, status.message)
}

/// Sends raw bytes as the Export request: what a broken client would.
async fn grpc_raw(receiver: &OtlpReceiver, path: &'static str, message: Vec<u8>) -> tonic::Status {
    use prost::bytes::{Buf as _, BufMut as _};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }

    let channel = tonic::transport::Endpoint::from_shared(receiver.grpc_endpoint())
        .unwrap()
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    client
        .unary(
            tonic::Request::new(message),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            Raw,
        )
        .await
        .expect_err("a malformed call fails")
}

#[tokio::test]
async fn malformed_grpc_requests_are_invalid_argument() {
    let capture = SpanCapture::new();
    let receiver = capture.otlp_receiver().await.unwrap();

    let garbage = grpc_raw(&receiver, GRPC_EXPORT_PATH, vec![0xff, 0xff, 0xff]).await;
    let elsewhere = grpc_raw(
        &receiver,
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        Vec::new(),
    )
    .await;

    assert_eq!(garbage.code(), tonic::Code::InvalidArgument, "{garbage:?}");
    assert!(
        garbage
            .message()
            .contains("not a protobuf ExportTraceServiceRequest"),
        "{garbage:?}"
    );
    assert_eq!(
        elsewhere.code(),
        tonic::Code::Unimplemented,
        "{elsewhere:?}"
    );
    assert!(capture.spans().is_empty());
    // Still serving.
    let mut client = TraceServiceClient::connect(receiver.grpc_endpoint())
        .await
        .unwrap();
    client
        .export(ExportTraceServiceRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_resource_without_service_name_is_unknown_service() {
    let capture = SpanCapture::new();
    let receiver = capture.otlp_receiver().await.unwrap();
    let other = SpanCapture::new();
    other.tracer("named").in_span("anonymous work", |_| {});
    let mut request = export_of(&other);
    request.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .clear();

    let answer = post(
        &receiver,
        "application/x-protobuf",
        &request.encode_to_vec(),
    )
    .await;

    assert_eq!(answer.status, 200);
    let forest = capture
        .wait_for(Condition::spans_named("anonymous work", 1), DEADLINE)
        .await
        .unwrap();
    forest.assert_trace(&ExpectedSpan::new("anonymous work").service("unknown_service"));
}

#[tokio::test]
async fn ports_are_settable_and_a_taken_one_is_named() {
    let capture = SpanCapture::new();
    let first = OtlpReceiver::start(&capture).await.unwrap();
    let taken = first.http_addr();

    let err = OtlpReceiver::builder()
        .http_port(taken.port())
        .start(&capture)
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            Error::OtlpReceiver {
                protocol: "HTTP",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
    assert_eq!(first.http_endpoint(), format!("http://{taken}"));
    assert_eq!(first.http_traces_url(), format!("http://{taken}/v1/traces"));
    assert_eq!(
        first.grpc_endpoint(),
        format!("http://{}", first.grpc_addr())
    );
}

#[tokio::test]
async fn dropping_the_receiver_stops_it() {
    let capture = SpanCapture::new();
    let receiver = capture.otlp_receiver().await.unwrap();
    let (http_addr, grpc_addr) = (receiver.http_addr(), receiver.grpc_addr());
    assert_eq!(post(&receiver, "application/json", b"{}").await.status, 200);

    drop(receiver);

    for addr in [http_addr, grpc_addr] {
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(
                started.elapsed() < DEADLINE,
                "{addr} still accepts connections {DEADLINE:?} after the receiver was dropped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
