//! An OTLP receiver on loopback: spans that another program exports over
//! OTLP/HTTP (`POST /v1/traces`, protobuf or JSON) or OTLP/gRPC
//! (`TraceService/Export`) land in a [`SpanCapture`], in the same forest
//! as the spans the test made itself, each tagged with its resource's
//! `service.name` (`unknown_service` without one). So a Python, Java-agent,
//! Go or containerised service that exports OTLP joins the trees a test
//! asserts on. Feature `otlp-receiver`.
//!
//! Point the other program's exporter at it with the standard variables:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=<http_endpoint>/v1/traces` and
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf` (or `http/json`), or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=<grpc_endpoint>` and
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc`. Request bodies may be
//! gzip-compressed. Metrics sent to the same endpoints (`/v1/metrics`,
//! gRPC `MetricsService/Export`) are counted, not kept
//! ([`OtlpReceiver::metric_points`]).
//!
//! What a received span becomes: an SDK [`SpanData`] with its ids, parent,
//! kind, times, attributes, events, links (with their attributes), status,
//! trace state and instrumentation scope. Attribute values the SDK's
//! [`Value`] cannot hold are kept as text: bytes as base64, key-value lists
//! and mixed or nested arrays as JSON. A span is marked sampled, since
//! exporters only send sampled spans (and some, like Python's, leave the
//! trace-flags byte at zero). A span with an unusable trace, span or
//! parent id is skipped and counted in the response's `partial_success`.
//! A link with an unusable (e.g. all-zero) trace or span id points to no
//! span: SDKs may record such links for their attributes (a messaging
//! batch's consumer, say), so the span is kept without that link, which
//! is counted in the span's dropped links, in
//! [`ArrivalsSnapshot::links_dropped`] and in the `partial_success`
//! message (with zero spans rejected). A body that is not an
//! `ExportTraceServiceRequest` is answered with HTTP 400 or gRPC
//! `InvalidArgument`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kafka_trace_harness::otlp::OtlpTraces;
//! use kafka_trace_harness::{ExpectedSpan, SpanCapture};
//! use opentelemetry::Context;
//! use opentelemetry::trace::{Span, TraceContextExt, Tracer};
//! use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
//!
//! // Arrange: the test's capture, listening for OTLP.
//! let capture = SpanCapture::new();
//! let receiver = capture.otlp_receiver().await?;
//!
//! // Act: another program, "billing", exports its span over OTLP/gRPC …
//! let billing = SpanCapture::new();
//! let charge = billing
//!     .tracer("billing")
//!     .in_span("charge", |cx| cx.span().span_context().clone());
//! let request = billing
//!     .spans()
//!     .iter()
//!     .map(|s| (s.service.as_str(), &s.data))
//!     .collect::<OtlpTraces>()
//!     .to_request();
//! TraceServiceClient::connect(receiver.grpc_endpoint())
//!     .await?
//!     .export(request)
//!     .await?;
//! // … and its context reaches the test's "api" (in a Kafka header, say).
//! let parent = Context::new().with_remote_span_context(charge);
//! capture.tracer("api").start_with_context("refund", &parent).end();
//!
//! // Assert: one tree across both programs.
//! capture.forest().assert_trace(
//!     &ExpectedSpan::new("charge")
//!         .service("billing")
//!         .child(ExpectedSpan::new("refund").service("api")),
//! );
//! receiver.shutdown().await?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope as ProtoScope, KeyValue as ProtoKeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::tonic::trace::v1::{Span as ProtoSpan, span, status};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use prost::Message as _;
use prost::bytes::Buf as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Service, http};

use crate::capture::{Sink, SpanCapture};
use crate::otlp::UNKNOWN_SERVICE;
use crate::{Error, Result};

mod metrics;
pub use metrics::{GRPC_METRICS_PATH, HTTP_METRICS_PATH, MetricPoints};

/// Path of OTLP/HTTP trace exports.
pub const HTTP_TRACES_PATH: &str = "/v1/traces";

/// Path (service and method) of OTLP/gRPC trace exports.
pub const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Largest request accepted, after decompression: well above what an SDK's
/// batch (512 spans by default) takes, well below what hurts a test run.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How long [`OtlpReceiver::shutdown`] lets open requests finish.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// How many rejected spans (and how many dropped links) a partial-success
/// message describes.
const MAX_REASONS: usize = 5;

/// OTLP span flags: bit 8 says whether bit 9 ("the parent, or the linked
/// context, is remote") is known.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

impl SpanCapture {
    /// Starts an [`OtlpReceiver`] feeding this capture, on loopback with
    /// free ports; [`OtlpReceiver::builder`] chooses address and ports.
    /// Feature `otlp-receiver`; see [the module](crate::integrations::otlp_receiver)
    /// for an example.
    pub async fn otlp_receiver(&self) -> Result<OtlpReceiver> {
        OtlpReceiver::builder().start(self).await
    }
}

/// Settings for an [`OtlpReceiver`]: listen address and ports.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kafka_trace_harness::Result<()> {
/// use kafka_trace_harness::SpanCapture;
/// use kafka_trace_harness::integrations::otlp_receiver::OtlpReceiver;
///
/// let capture = SpanCapture::new();
/// let receiver = OtlpReceiver::builder().http_port(0).grpc_port(0).start(&capture).await?;
///
/// assert!(receiver.http_endpoint().starts_with("http://127.0.0.1:"));
/// assert_ne!(receiver.http_addr().port(), receiver.grpc_addr().port());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct OtlpReceiverBuilder {
    ip: IpAddr,
    http_port: u16,
    grpc_port: u16,
}

impl Default for OtlpReceiverBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl OtlpReceiverBuilder {
    /// `127.0.0.1`, a free port for each protocol.
    pub fn new() -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_port: 0,
            grpc_port: 0,
        }
    }

    /// Address to listen on. Default `127.0.0.1`: only programs on this
    /// machine can send; use `0.0.0.0` for a container that reaches the
    /// host through its bridge.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = ip;
        self
    }

    /// Port of OTLP/HTTP. Default 0, a free port (4318 is the standard one).
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = port;
        self
    }

    /// Port of OTLP/gRPC. Default 0, a free port (4317 is the standard one).
    pub fn grpc_port(mut self, port: u16) -> Self {
        self.grpc_port = port;
        self
    }

    /// Listens on both ports and serves until the receiver is shut down or
    /// dropped. Needs a tokio runtime; an address in use is an
    /// [`Error::OtlpReceiver`] naming it.
    pub async fn start(self, capture: &SpanCapture) -> Result<OtlpReceiver> {
        let http_listener = bind("HTTP", SocketAddr::new(self.ip, self.http_port)).await?;
        let grpc_listener = bind("gRPC", SocketAddr::new(self.ip, self.grpc_port)).await?;
        let http_addr = local_addr("HTTP", &http_listener)?;
        let grpc_addr = local_addr("gRPC", &grpc_listener)?;
        let (stop, _) = watch::channel(());
        let metric_points = metrics::Counts::default();
        let arrivals = SpanArrivals::default();
        let intake = Intake {
            sink: Arc::clone(capture.sink()),
            arrivals: arrivals.clone(),
        };

        let router = Router::new()
            .route(HTTP_TRACES_PATH, post(export_http))
            .route(
                HTTP_METRICS_PATH,
                post(metrics::export_http).with_state(Arc::clone(&metric_points)),
            )
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(intake.clone());
        let http_signal = stopped(stop.subscribe());
        let http = tokio::spawn(async move {
            axum::serve(http_listener, router)
                .with_graceful_shutdown(http_signal)
                .await
                .map_err(|e| e.to_string())
        });

        let incoming =
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let grpc_signal = stopped(stop.subscribe());
        let grpc_metrics = Arc::clone(&metric_points);
        let grpc = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(
                    GrpcExport {
                        intake,
                        metrics: grpc_metrics,
                    },
                    incoming,
                    grpc_signal,
                )
                .await
                .map_err(|e| error_chain(&e))
        });

        Ok(OtlpReceiver {
            http_addr,
            grpc_addr,
            metric_points,
            arrivals,
            stop,
            servers: vec![("HTTP", http_addr, http), ("gRPC", grpc_addr, grpc)],
        })
    }
}

async fn bind(protocol: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::OtlpReceiver {
            protocol,
            addr: addr.to_string(),
            reason: format!("cannot listen: {e}"),
        })
}

fn local_addr(protocol: &'static str, listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|e| Error::OtlpReceiver {
        protocol,
        addr: "a bound socket".to_owned(),
        reason: format!("no local address: {e}"),
    })
}

/// Resolves when the receiver asks its servers to stop, or is dropped.
async fn stopped(mut stop: watch::Receiver<()>) {
    // Err means the sender is gone (the receiver was dropped): stop too.
    let _ = stop.changed().await;
}

/// An error and its sources on one line: tonic's transport error alone
/// says only "transport error".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// OTLP/HTTP and OTLP/gRPC endpoints feeding a [`SpanCapture`]; stops on
/// [`shutdown`](Self::shutdown) or when dropped. See [the
/// module](self) for what it accepts and an example.
pub struct OtlpReceiver {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    metric_points: metrics::Counts,
    arrivals: SpanArrivals,
    /// Sending, or dropping it, stops both servers.
    stop: watch::Sender<()>,
    servers: Vec<Server>,
}

/// A server task: its protocol, address and outcome.
type Server = (
    &'static str,
    SocketAddr,
    JoinHandle<std::result::Result<(), String>>,
);

impl fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .finish_non_exhaustive()
    }
}

impl OtlpReceiver {
    /// Settings for a receiver.
    pub fn builder() -> OtlpReceiverBuilder {
        OtlpReceiverBuilder::new()
    }

    /// A receiver with the default settings (loopback, free ports), the
    /// same as [`SpanCapture::otlp_receiver`].
    pub async fn start(capture: &SpanCapture) -> Result<Self> {
        Self::builder().start(capture).await
    }

    /// Base URL of OTLP/HTTP, `http://127.0.0.1:PORT`: what
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` takes (the SDK appends `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Full URL of trace exports over OTLP/HTTP,
    /// `http://127.0.0.1:PORT/v1/traces`: what
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` takes.
    pub fn http_traces_url(&self) -> String {
        format!("http://{}{HTTP_TRACES_PATH}", self.http_addr)
    }

    /// URL of OTLP/gRPC, `http://127.0.0.1:PORT` (plain text, no TLS).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// What this receiver has taken in so far, and goes on taking in: a
    /// handle that stays valid after [`shutdown`](Self::shutdown).
    pub fn arrivals(&self) -> SpanArrivals {
        self.arrivals.clone()
    }

    /// The address OTLP/HTTP listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address OTLP/gRPC listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Metric data points received so far, per service (resource
    /// `service.name`) and instrument name.
    pub fn metric_points(&self) -> MetricPoints {
        self.metric_points
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops both servers: no new connections, requests in progress finish
    /// (within 5 s, then they are cut). Reports a server that failed or
    /// overran, naming its address. Spans already received stay in the
    /// capture.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.send_replace(());
        let mut first_error = None;
        for (protocol, addr, mut server) in self.servers {
            let reason = match tokio::time::timeout(SHUTDOWN_DEADLINE, &mut server).await {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(reason))) => reason,
                Ok(Err(join)) => format!("the server task failed: {join}"),
                Err(_) => {
                    server.abort();
                    format!(
                        "requests were still open {SHUTDOWN_DEADLINE:?} after it was asked to \
                         stop; they were cut"
                    )
                }
            };
            first_error.get_or_insert(Error::OtlpReceiver {
                protocol,
                addr: addr.to_string(),
                reason,
            });
        }
        first_error.map_or(Ok(()), Err)
    }
}

// ---------------------------------------------------------------------------
// OTLP/HTTP

/// The two encodings of OTLP/HTTP; the answer uses the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn of(headers: &HeaderMap) -> Result<Self, String> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        match media_type.to_ascii_lowercase().as_str() {
            "application/x-protobuf" => Ok(Self::Protobuf),
            "application/json" => Ok(Self::Json),
            _ => Err(format!(
                "Content-Type {content_type:?} is not OTLP/HTTP: send application/x-protobuf \
                 or application/json"
            )),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    fn decode(self, body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
        match self {
            Self::Protobuf => ExportTraceServiceRequest::decode(body)
                .map_err(|e| format!("not a protobuf ExportTraceServiceRequest: {e}")),
            Self::Json => serde_json::from_slice(body)
                .map_err(|e| format!("not an OTLP/JSON ExportTraceServiceRequest: {e}")),
        }
    }

    fn respond(self, status: StatusCode, body: Vec<u8>) -> Response {
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type()),
        );
        response
    }

    fn success(self, answer: &ExportTraceServiceResponse) -> Response {
        let body = match self {
            Self::Protobuf => answer.encode_to_vec(),
            // Serialising generated messages to a Vec cannot fail.
            Self::Json => serde_json::to_vec(answer).unwrap_or_default(),
        };
        self.respond(StatusCode::OK, body)
    }

    /// An error answer: OTLP/HTTP wants a `google.rpc.Status` in the
    /// request's encoding.
    fn failure(self, status: StatusCode, grpc_code: tonic::Code, message: String) -> Response {
        let body = match self {
            Self::Protobuf => RpcStatus {
                code: grpc_code as i32,
                message,
            }
            .encode_to_vec(),
            Self::Json => serde_json::json!({ "code": grpc_code as i32, "message": message })
                .to_string()
                .into_bytes(),
        };
        self.respond(status, body)
    }
}

/// `google.rpc.Status`, without its `details`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn export_http(State(intake): State<Intake>, headers: HeaderMap, body: Bytes) -> Response {
    let format = match Format::of(&headers) {
        Ok(format) => format,
        Err(message) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response(),
    };
    let body = match decompress(&headers, body) {
        Ok(body) => body,
        Err((status, message)) => {
            return format.failure(status, tonic::Code::InvalidArgument, message);
        }
    };
    match format.decode(&body) {
        Ok(request) => format.success(&accept(&intake, request)),
        Err(message) => format.failure(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            message,
        ),
    }
}

/// The body without its `Content-Encoding` (gzip, or none).
fn decompress(headers: &HeaderMap, body: Bytes) -> Result<Bytes, (StatusCode, String)> {
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(body),
        Some("gzip") => {
            let mut plain = Vec::new();
            // One byte over the limit tells a too-large body from one that
            // fits exactly, without inflating a gzip bomb any further.
            let limit = MAX_REQUEST_BYTES as u64 + 1;
            flate2::read::GzDecoder::new(&body[..])
                .take(limit)
                .read_to_end(&mut plain)
                .map_err(|e| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("the gzip body does not decompress: {e}"),
                    )
                })?;
            if plain.len() > MAX_REQUEST_BYTES {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body decompresses to more than {MAX_REQUEST_BYTES} bytes"),
                ));
            }
            Ok(plain.into())
        }
        Some(other) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {other:?} is not supported: send gzip or none"),
        )),
    }
}

// ---------------------------------------------------------------------------
// OTLP/gRPC
//
// Served by hand rather than through opentelemetry-proto's generated
// server, whose prost codec answers an undecodable message with INTERNAL:
// OTLP wants INVALID_ARGUMENT, so this codec hands the decoding error on.

/// A request as decoded: the message, or why it is not one.
type Decoded = std::result::Result<ExportTraceServiceRequest, String>;

#[derive(Debug, Clone, Copy, Default)]
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Decoded;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for ExportCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: ExportTraceServiceResponse,
        dst: &mut EncodeBuf<'_>,
    ) -> std::result::Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(format!("encoding the response: {e}")))
    }
}

impl Decoder for ExportCodec {
    type Item = Decoded;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> std::result::Result<Option<Decoded>, tonic::Status> {
        // Take the whole frame first, so that a decoding error cannot
        // leave bytes behind to be read as the next message.
        let frame = src.copy_to_bytes(src.remaining());
        Ok(Some(ExportTraceServiceRequest::decode(frame).map_err(
            |e| format!("not a protobuf ExportTraceServiceRequest: {e}"),
        )))
    }
}

/// The gRPC server's one service.
#[derive(Clone)]
struct GrpcExport {
    intake: Intake,
    metrics: metrics::Counts,
}

type BoxedResponse = Pin<
    Box<
        dyn Future<Output = std::result::Result<http::Response<tonic::body::Body>, Infallible>>
            + Send,
    >,
>;

impl Service<http::Request<tonic::body::Body>> for GrpcExport {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() == GRPC_METRICS_PATH {
            return metrics::export_grpc(&self.metrics, request);
        }
        if request.uri().path() != GRPC_EXPORT_PATH {
            let status = tonic::Status::unimplemented(format!(
                "{} is not served here, only {GRPC_EXPORT_PATH} and {GRPC_METRICS_PATH}",
                request.uri().path()
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let handler = ExportHandler {
            intake: self.intake.clone(),
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ExportCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_REQUEST_BYTES);
            Ok(grpc.unary(handler, request).await)
        })
    }
}

/// Handles one decoded Export call.
struct ExportHandler {
    intake: Intake,
}

impl Service<tonic::Request<Decoded>> for ExportHandler {
    type Response = tonic::Response<ExportTraceServiceResponse>;
    type Error = tonic::Status;
    type Future = std::future::Ready<std::result::Result<Self::Response, tonic::Status>>;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Decoded>) -> Self::Future {
        std::future::ready(match request.into_inner() {
            Ok(export) => Ok(tonic::Response::new(accept(&self.intake, export))),
            Err(message) => Err(tonic::Status::invalid_argument(message)),
        })
    }
}

// ---------------------------------------------------------------------------
// Received spans into the capture

/// Where received spans go: the capture, and the tally of arrivals.
#[derive(Clone)]
struct Intake {
    sink: Sink,
    arrivals: SpanArrivals,
}

/// What an [`OtlpReceiver`] has taken in: spans per service, when the last
/// arrived, and the consumer groups its consumer spans name; the spans it
/// rejected (unusable ids), which are in no forest; and the links it
/// dropped from the spans it kept (they point to no span). A cheap handle
/// (clones share it), from [`OtlpReceiver::arrivals`].
///
/// This is what lets a caller keep the receiver open while another
/// program's exporter is still sending, and say what came from where.
#[derive(Debug, Clone, Default)]
pub struct SpanArrivals(Arc<std::sync::Mutex<ArrivalsSnapshot>>);

/// A copy of a receiver's [`SpanArrivals`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArrivalsSnapshot {
    /// Spans accepted, by the `service.name` of their resource.
    pub by_service: std::collections::BTreeMap<String, usize>,
    /// When the last span was accepted, by the wall clock.
    pub last: Option<SystemTime>,
    /// The same on the monotonic clock, for measuring quiet periods.
    pub last_instant: Option<std::time::Instant>,
    /// (consumer group, topic) of every received consumer span that names
    /// its group, by the conventions (1.24-era names too).
    pub consumer_groups: std::collections::BTreeSet<(String, String)>,
    /// Spans rejected (an unusable trace, span or parent id), by the
    /// `service.name` of their resource: they are in no capture, and each
    /// exporter was told in its response's `partial_success`.
    pub rejected_by_service: std::collections::BTreeMap<String, usize>,
    /// Why, for the first few rejected spans.
    pub rejected_reasons: Vec<String>,
    /// Links dropped from accepted spans because their trace or span id is
    /// unusable (all zeros, say: a link to no span), by the `service.name`
    /// of their resource. Their spans are kept, with the links counted in
    /// their dropped links; each exporter was told in its response's
    /// `partial_success`.
    pub links_dropped_by_service: std::collections::BTreeMap<String, usize>,
    /// Why, for the first few dropped links.
    pub links_dropped_reasons: Vec<String>,
}

impl ArrivalsSnapshot {
    /// Spans accepted in all.
    pub fn total(&self) -> usize {
        self.by_service.values().sum()
    }

    /// Spans rejected in all.
    pub fn rejected(&self) -> usize {
        self.rejected_by_service.values().sum()
    }

    /// Links dropped (pointing to no span) in all.
    pub fn links_dropped(&self) -> usize {
        self.links_dropped_by_service.values().sum()
    }
}

impl SpanArrivals {
    /// What has arrived so far.
    pub fn snapshot(&self) -> ArrivalsSnapshot {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Counts the request's rejected spans and dropped links.
    fn record_losses(&self, received: &Received) {
        let mut arrivals = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let arrivals = &mut *arrivals;
        for (losses, by_service, reasons) in [
            (
                &received.rejected,
                &mut arrivals.rejected_by_service,
                &mut arrivals.rejected_reasons,
            ),
            (
                &received.links_dropped,
                &mut arrivals.links_dropped_by_service,
                &mut arrivals.links_dropped_reasons,
            ),
        ] {
            for (service, count) in &losses.by_service {
                *by_service.entry(service.to_string()).or_default() += count;
            }
            let room = MAX_REASONS.saturating_sub(reasons.len());
            reasons.extend(losses.reasons.iter().take(room).cloned());
        }
    }

    fn record(&self, spans: &[(Arc<str>, SpanData)]) {
        let mut arrivals = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut previous: Option<&Arc<str>> = None;
        let mut run = 0;
        let flush = |arrivals: &mut ArrivalsSnapshot, service: Option<&Arc<str>>, n: usize| {
            if let Some(service) = service {
                *arrivals.by_service.entry(service.to_string()).or_default() += n;
            }
        };
        for (service, span) in spans {
            if previous.is_some_and(|p| p == service) {
                run += 1;
            } else {
                flush(&mut arrivals, previous, run);
                previous = Some(service);
                run = 1;
            }
            if let Some(hop) = crate::forest::hops::messaging_hop(&span.span_kind, &span.attributes)
                && hop.operation != crate::forest::hops::HopOperation::Send
                && let Some(group) = hop.consumer_group
                && !arrivals
                    .consumer_groups
                    .contains(&(group.clone(), hop.destination.clone()))
            {
                arrivals.consumer_groups.insert((group, hop.destination));
            }
        }
        flush(&mut arrivals, previous, run);
        arrivals.last = Some(SystemTime::now());
        arrivals.last_instant = Some(std::time::Instant::now());
    }
}

/// Converts the request's spans, pushes the good ones into the sink and
/// answers with the count and reasons of the rejected spans and dropped
/// links.
fn accept(intake: &Intake, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse {
    let received = convert(request);
    if received.rejected.count > 0 || received.links_dropped.count > 0 {
        intake.arrivals.record_losses(&received);
    }
    if !received.spans.is_empty() {
        intake.arrivals.record(&received.spans);
        intake.sink.extend(received.spans);
    }
    // OTLP lets a full success carry a warning: `rejected_spans` 0 and a
    // message. A dropped link is said that way, so the exporter logs it.
    let message = [
        received.rejected.describe("span(s) rejected"),
        received
            .links_dropped
            .describe("link(s) to no span dropped, their spans kept"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(". ");
    let partial_success = (!message.is_empty()).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(received.rejected.count).unwrap_or(i64::MAX),
        error_message: message,
    });
    ExportTraceServiceResponse { partial_success }
}

/// The spans of one request, with their services, and what was lost.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<(Arc<str>, SpanData)>,
    /// Spans rejected.
    rejected: Losses,
    /// Links dropped from the spans kept.
    links_dropped: Losses,
}

/// Things of one request left out (spans, or links), counted.
#[derive(Debug, Default)]
struct Losses {
    count: usize,
    /// Their services, in the order met (runs of one service counted
    /// together).
    by_service: Vec<(Arc<str>, usize)>,
    /// Why, for the first [`MAX_REASONS`].
    reasons: Vec<String>,
}

impl Losses {
    fn add(&mut self, service: &Arc<str>, reason: &str) {
        self.count += 1;
        match self.by_service.last_mut() {
            Some((last, count)) if last == service => *count += 1,
            _ => self.by_service.push((Arc::clone(service), 1)),
        }
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(format!("service {service:?}, {reason}"));
        }
    }

    /// `N what: reason; reason; …`, or `None` when nothing was lost.
    fn describe(&self, what: &str) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let mut message = format!("{} {what}: {}", self.count, self.reasons.join("; "));
        if self.count > self.reasons.len() {
            message.push_str("; …");
        }
        Some(message)
    }
}

/// An OTLP export request (as read from an OTLP JSON Lines file, say)
/// converted as the receiver converts it: from [`captured_spans`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct CapturedRequest {
    /// The spans kept, each with its resource's `service.name`.
    pub spans: Vec<crate::CapturedSpan>,
    /// Spans rejected (an unusable trace, span or parent id): in no forest.
    pub rejected: usize,
    /// Why, for the first few rejected spans.
    pub rejected_reasons: Vec<String>,
    /// Links dropped from the spans kept, because their trace or span id is
    /// unusable (a link to no span); each is counted in its span's dropped
    /// links too.
    pub links_dropped: usize,
    /// Why, for the first few dropped links.
    pub links_dropped_reasons: Vec<String>,
}

/// The spans of an OTLP export request (as read from an OTLP JSON Lines
/// file, say), converted as the receiver converts them, each with its
/// resource's `service.name`; the spans rejected (bad ids) and the links
/// dropped (pointing to no span), with the reasons of the first few.
///
/// ```
/// use kafka_trace_harness::integrations::otlp_receiver::captured_spans;
/// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
///
/// let converted = captured_spans(ExportTraceServiceRequest::default());
/// assert!(converted.spans.is_empty());
/// assert_eq!((converted.rejected, converted.links_dropped), (0, 0));
/// ```
pub fn captured_spans(request: ExportTraceServiceRequest) -> CapturedRequest {
    let received = convert(request);
    CapturedRequest {
        spans: received
            .spans
            .into_iter()
            .map(|(service, data)| crate::CapturedSpan {
                service: service.to_string(),
                data,
            })
            .collect(),
        rejected: received.rejected.count,
        rejected_reasons: received.rejected.reasons,
        links_dropped: received.links_dropped.count,
        links_dropped_reasons: received.links_dropped.reasons,
    }
}

fn convert(request: ExportTraceServiceRequest) -> Received {
    let mut received = Received::default();
    for resource_spans in request.resource_spans {
        let service = service_name(resource_spans.resource.as_ref());
        for scope_spans in resource_spans.scope_spans {
            let scope = instrumentation_scope(scope_spans.scope, scope_spans.schema_url);
            for span in scope_spans.spans {
                match span_data(span, &scope) {
                    Ok((data, dropped_links)) => {
                        for reason in &dropped_links {
                            received.links_dropped.add(&service, reason);
                        }
                        received.spans.push((Arc::clone(&service), data));
                    }
                    Err(reason) => received.rejected.add(&service, &reason),
                }
            }
        }
    }
    received
}

/// The resource's `service.name`, or [`UNKNOWN_SERVICE`].
fn service_name(resource: Option<&ProtoResource>) -> Arc<str> {
    resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(name) if !name.is_empty() => {
                Some(Arc::from(name.as_str()))
            }
            _ => None,
        })
        .unwrap_or_else(|| Arc::from(UNKNOWN_SERVICE))
}

fn instrumentation_scope(scope: Option<ProtoScope>, schema_url: String) -> InstrumentationScope {
    let scope = scope.unwrap_or_default();
    let mut dropped = 0;
    let mut builder = InstrumentationScope::builder(scope.name)
        .with_attributes(attributes(scope.attributes, &mut dropped));
    if !scope.version.is_empty() {
        builder = builder.with_version(scope.version);
    }
    if !schema_url.is_empty() {
        builder = builder.with_schema_url(schema_url);
    }
    builder.build()
}

/// One received span as the SDK's [`SpanData`] with why each of its links
/// that point to no span was dropped; or why the span is unusable.
fn span_data(
    span: ProtoSpan,
    scope: &InstrumentationScope,
) -> std::result::Result<(SpanData, Vec<String>), String> {
    let name = span.name;
    let invalid = |what: String| format!("span {name:?}: {what}");
    let trace_id = parse_trace_id(&span.trace_id, "trace id").map_err(invalid)?;
    let span_id = parse_span_id(&span.span_id, "span id").map_err(invalid)?;
    let parent_span_id = match span.parent_span_id.as_slice() {
        [] => SpanId::INVALID,
        // Some senders write eight zero bytes for "no parent".
        bytes if bytes.iter().all(|b| *b == 0) && bytes.len() == 8 => SpanId::INVALID,
        bytes => parse_span_id(bytes, "parent span id").map_err(invalid)?,
    };
    let mut links = SpanLinks::default();
    links.dropped_count = span.dropped_links_count;
    let mut dropped_links = Vec::new();
    for (index, link) in span.links.into_iter().enumerate() {
        let what = format!("link {index}");
        // SDKs may record a link to an invalid (all-zero) context for its
        // attributes (OpenTelemetry spec PR #3928): it points to no span,
        // so it is no edge of the forest, but the span is whole. Dropped,
        // counted on the span and reported, never silent.
        let ids =
            parse_trace_id(&link.trace_id, &format!("{what}'s trace id")).and_then(|trace_id| {
                parse_span_id(&link.span_id, &format!("{what}'s span id"))
                    .map(|span_id| (trace_id, span_id))
            });
        let (trace_id, span_id) = match ids {
            Ok(ids) => ids,
            Err(reason) => {
                links.dropped_count = links.dropped_count.saturating_add(1);
                dropped_links.push(invalid(format!("{reason}: dropped")));
                continue;
            }
        };
        let context = SpanContext::new(
            trace_id,
            span_id,
            // A linked context's flags are its own: kept as sent.
            TraceFlags::new((link.flags & 0xff) as u8),
            is_remote(link.flags),
            trace_state(&link.trace_state),
        );
        let mut dropped = link.dropped_attributes_count;
        let attributes = attributes(link.attributes, &mut dropped);
        links.links.push(Link::new(context, attributes, dropped));
    }

    let mut events = SpanEvents::default();
    events.dropped_count = span.dropped_events_count;
    events.events = span
        .events
        .into_iter()
        .map(|event| {
            let mut dropped = event.dropped_attributes_count;
            let attributes = attributes(event.attributes, &mut dropped);
            Event::new(event.name, time(event.time_unix_nano), attributes, dropped)
        })
        .collect();

    let mut dropped_attributes_count = span.dropped_attributes_count;
    let attributes = attributes(span.attributes, &mut dropped_attributes_count);
    let span_status = span.status.unwrap_or_default();
    let data = SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            // Exporters send only sampled spans; Python's leaves the
            // trace-flags byte at 0, so "sampled" is set, other bits kept.
            TraceFlags::new((span.flags & 0xff) as u8) | TraceFlags::SAMPLED,
            false,
            trace_state(&span.trace_state),
        ),
        parent_span_id,
        parent_span_is_remote: is_remote(span.flags),
        span_kind: span_kind(span.kind),
        name: Cow::Owned(name),
        start_time: time(span.start_time_unix_nano),
        end_time: time(span.end_time_unix_nano),
        attributes,
        dropped_attributes_count,
        events,
        links,
        status: match status::StatusCode::try_from(span_status.code) {
            Ok(status::StatusCode::Ok) => Status::Ok,
            Ok(status::StatusCode::Error) => Status::error(span_status.message),
            _ => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    };
    Ok((data, dropped_links))
}

fn parse_trace_id(bytes: &[u8], what: &str) -> std::result::Result<TraceId, String> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| format!("{what} has {} bytes, not 16", bytes.len()))?;
    let id = TraceId::from_bytes(array);
    if id == TraceId::INVALID {
        return Err(format!("{what} is all zeros"));
    }
    Ok(id)
}

fn parse_span_id(bytes: &[u8], what: &str) -> std::result::Result<SpanId, String> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("{what} has {} bytes, not 8", bytes.len()))?;
    let id = SpanId::from_bytes(array);
    if id == SpanId::INVALID {
        return Err(format!("{what} is all zeros"));
    }
    Ok(id)
}

fn is_remote(flags: u32) -> bool {
    flags & FLAG_HAS_IS_REMOTE != 0 && flags & FLAG_IS_REMOTE != 0
}

/// A malformed trace state is dropped rather than failing the span: it
/// does not change the tree.
fn trace_state(header: &str) -> TraceState {
    header.parse().unwrap_or_default()
}

fn span_kind(kind: i32) -> SpanKind {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Server) => SpanKind::Server,
        Ok(span::SpanKind::Client) => SpanKind::Client,
        Ok(span::SpanKind::Producer) => SpanKind::Producer,
        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
        // OTLP: an unspecified kind is read as internal.
        _ => SpanKind::Internal,
    }
}

fn time(unix_nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_nanos)
}

/// The attributes that have a value; each one without is counted in
/// `dropped`, as the SDK counts the attributes it drops.
fn attributes(kvs: Vec<ProtoKeyValue>, dropped: &mut u32) -> Vec<KeyValue> {
    let mut kept = Vec::with_capacity(kvs.len());
    for kv in kvs {
        match kv.value.and_then(|v| v.value).and_then(attribute_value) {
            Some(value) => kept.push(KeyValue::new(kv.key, value)),
            None => *dropped = dropped.saturating_add(1),
        }
    }
    kept
}

/// An OTLP value as an SDK [`Value`]; what `Value` cannot hold as text.
/// `None` for an empty value or a string-table reference (profiles only).
fn attribute_value(value: any_value::Value) -> Option<Value> {
    Some(match value {
        any_value::Value::StringValue(s) => Value::String(s.into()),
        any_value::Value::BoolValue(b) => Value::Bool(b),
        any_value::Value::IntValue(i) => Value::I64(i),
        any_value::Value::DoubleValue(d) => Value::F64(d),
        any_value::Value::BytesValue(bytes) => Value::String(base64(&bytes).into()),
        any_value::Value::ArrayValue(array) => {
            let values: Vec<any_value::Value> =
                array.values.into_iter().filter_map(|v| v.value).collect();
            match homogeneous_array(&values) {
                Some(array) => Value::Array(array),
                None => Value::String(json_array(&values).to_string().into()),
            }
        }
        any_value::Value::KvlistValue(list) => {
            Value::String(json_kvlist(&list.values).to_string().into())
        }
        any_value::Value::StringValueStrindex(_) => return None,
    })
}

/// An array of one scalar type as the SDK's [`Array`]; `None` for mixed,
/// nested or non-scalar items. An empty array is an empty string array.
fn homogeneous_array(values: &[any_value::Value]) -> Option<Array> {
    fn all<T>(
        values: &[any_value::Value],
        f: impl Fn(&any_value::Value) -> Option<T>,
    ) -> Option<Vec<T>> {
        values.iter().map(f).collect()
    }
    if let Some(strings) = all(values, |v| match v {
        any_value::Value::StringValue(s) => Some(StringValue::from(s.clone())),
        _ => None,
    }) {
        return Some(Array::String(strings));
    }
    if let Some(bools) = all(values, |v| match v {
        any_value::Value::BoolValue(b) => Some(*b),
        _ => None,
    }) {
        return Some(Array::Bool(bools));
    }
    if let Some(ints) = all(values, |v| match v {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }) {
        return Some(Array::I64(ints));
    }
    all(values, |v| match v {
        any_value::Value::DoubleValue(d) => Some(*d),
        _ => None,
    })
    .map(Array::F64)
}

fn json_value(value: &any_value::Value) -> serde_json::Value {
    match value {
        any_value::Value::StringValue(s) => serde_json::Value::from(s.as_str()),
        any_value::Value::BoolValue(b) => serde_json::Value::from(*b),
        any_value::Value::IntValue(i) => serde_json::Value::from(*i),
        // JSON has no NaN or infinity: those become their names.
        any_value::Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or_else(
            || serde_json::Value::from(d.to_string()),
            serde_json::Value::Number,
        ),
        any_value::Value::BytesValue(bytes) => serde_json::Value::from(base64(bytes)),
        any_value::Value::ArrayValue(array) => {
            let values: Vec<any_value::Value> = array
                .values
                .iter()
                .filter_map(|v| v.value.clone())
                .collect();
            json_array(&values)
        }
        any_value::Value::KvlistValue(list) => json_kvlist(&list.values),
        any_value::Value::StringValueStrindex(_) => serde_json::Value::Null,
    }
}

fn json_array(values: &[any_value::Value]) -> serde_json::Value {
    serde_json::Value::Array(values.iter().map(json_value).collect())
}

fn json_kvlist(kvs: &[ProtoKeyValue]) -> serde_json::Value {
    let object = kvs
        .iter()
        .map(|kv| {
            let value = kv
                .value
                .as_ref()
                .and_then(|v: &AnyValue| v.value.as_ref())
                .map_or(serde_json::Value::Null, json_value);
            (kv.key.clone(), value)
        })
        .collect();
    serde_json::Value::Object(object)
}

/// Standard base64 with padding, as OTLP/JSON writes bytes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn any(value: any_value::Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    fn kv(key: &str, value: any_value::Value) -> ProtoKeyValue {
        ProtoKeyValue {
            key: key.to_owned(),
            value: any(value),
            ..Default::default()
        }
    }

    fn good_span(name: &str) -> ProtoSpan {
        ProtoSpan {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: name.to_owned(),
            kind: span::SpanKind::Producer as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            ..Default::default()
        }
    }

    fn request(service: Option<&str>, spans: Vec<ProtoSpan>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(ProtoResource {
                    attributes: service
                        .map(|s| kv("service.name", any_value::Value::StringValue(s.into())))
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(ProtoScope {
                        name: "lib".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: "https://opentelemetry.io/schemas/1.11.0".into(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn every_field_of_a_span_is_converted() {
        let mut span = good_span("send trades");
        span.parent_span_id = vec![3; 8];
        span.flags = FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE;
        span.trace_state = "vendor=value".into();
        span.attributes = vec![kv(
            "messaging.system",
            any_value::Value::StringValue("kafka".into()),
        )];
        span.events = vec![span::Event {
            time_unix_nano: 1_500,
            name: "retry".into(),
            attributes: vec![kv("attempt", any_value::Value::IntValue(2))],
            dropped_attributes_count: 1,
        }];
        span.links = vec![span::Link {
            trace_id: vec![4; 16],
            span_id: vec![5; 8],
            flags: FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE | 1,
            attributes: vec![kv("why", any_value::Value::StringValue("join".into()))],
            ..Default::default()
        }];
        span.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
            code: status::StatusCode::Error as i32,
            message: "broker down".into(),
        });

        let received = convert(request(Some("python"), vec![span]));

        assert_eq!(received.rejected.count, 0);
        let (service, data) = &received.spans[0];
        assert_eq!(&**service, "python");
        assert_eq!(data.span_context.trace_id(), TraceId::from_bytes([1; 16]));
        assert_eq!(data.span_context.span_id(), SpanId::from_bytes([2; 8]));
        assert!(data.span_context.is_sampled());
        assert_eq!(data.span_context.trace_state().get("vendor"), Some("value"));
        assert_eq!(data.parent_span_id, SpanId::from_bytes([3; 8]));
        assert!(data.parent_span_is_remote);
        assert_eq!(data.span_kind, SpanKind::Producer);
        assert_eq!(data.start_time, UNIX_EPOCH + Duration::from_nanos(1_000));
        assert_eq!(data.end_time, UNIX_EPOCH + Duration::from_nanos(2_000));
        assert_eq!(
            data.attributes,
            [KeyValue::new("messaging.system", "kafka")]
        );
        assert_eq!(data.events[0].name, "retry");
        assert_eq!(data.events[0].attributes, [KeyValue::new("attempt", 2_i64)]);
        assert_eq!(data.events[0].dropped_attributes_count, 1);
        let link = &data.links[0];
        assert_eq!(link.span_context.trace_id(), TraceId::from_bytes([4; 16]));
        assert!(link.span_context.is_remote());
        assert!(link.span_context.is_sampled());
        assert_eq!(link.attributes, [KeyValue::new("why", "join")]);
        assert_eq!(data.status, Status::error("broker down"));
        assert_eq!(data.instrumentation_scope.name(), "lib");
        assert_eq!(data.instrumentation_scope.version(), Some("1.2"));
        assert_eq!(
            data.instrumentation_scope.schema_url(),
            Some("https://opentelemetry.io/schemas/1.11.0")
        );
    }

    #[test]
    fn values_the_sdk_cannot_hold_become_text() {
        let array = |values: Vec<any_value::Value>| {
            any_value::Value::ArrayValue(ArrayValue {
                values: values
                    .into_iter()
                    .map(|v| AnyValue { value: Some(v) })
                    .collect(),
            })
        };
        let mut span = good_span("s");
        span.attributes = vec![
            kv("bool", any_value::Value::BoolValue(true)),
            kv("double", any_value::Value::DoubleValue(1.5)),
            kv("bytes", any_value::Value::BytesValue(b"hello".to_vec())),
            kv(
                "ints",
                array(vec![
                    any_value::Value::IntValue(1),
                    any_value::Value::IntValue(2),
                ]),
            ),
            kv(
                "mixed",
                array(vec![
                    any_value::Value::IntValue(1),
                    any_value::Value::StringValue("a".into()),
                ]),
            ),
            kv(
                "map",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", any_value::Value::DoubleValue(f64::NAN))],
                }),
            ),
            ProtoKeyValue {
                key: "empty".into(),
                value: None,
                ..Default::default()
            },
        ];

        let received = convert(request(None, vec![span]));

        let (service, data) = &received.spans[0];
        assert_eq!(&**service, UNKNOWN_SERVICE);
        assert_eq!(
            data.attributes,
            [
                KeyValue::new("bool", true),
                KeyValue::new("double", 1.5),
                KeyValue::new("bytes", "aGVsbG8="),
                KeyValue::new("ints", Value::Array(Array::I64(vec![1, 2]))),
                KeyValue::new("mixed", r#"[1,"a"]"#),
                KeyValue::new("map", r#"{"k":"NaN"}"#),
            ]
        );
        assert_eq!(data.dropped_attributes_count, 1);
    }

    #[test]
    fn bad_ids_reject_only_their_span_and_a_link_to_no_span_only_the_link() {
        let mut short = good_span("short trace id");
        short.trace_id = vec![1; 15];
        let mut zero = good_span("zero span id");
        zero.span_id = vec![0; 8];
        let mut bad_link = good_span("bad link");
        bad_link.links = vec![span::Link {
            trace_id: vec![1; 16],
            span_id: vec![9; 3],
            ..Default::default()
        }];
        let mut zero_parent = good_span("zero parent");
        zero_parent.parent_span_id = vec![0; 8];

        let answer = {
            let sink = Sink::default();
            let arrivals = SpanArrivals::default();
            let intake = Intake {
                sink: Arc::clone(&sink),
                arrivals: arrivals.clone(),
            };
            let answer = accept(
                &intake,
                request(
                    Some("svc"),
                    vec![short, good_span("fine"), zero, bad_link, zero_parent],
                ),
            );
            let names: Vec<String> = sink
                .kept()
                .iter()
                .map(|(_, s)| s.name.to_string())
                .collect();
            assert_eq!(names, ["fine", "bad link", "zero parent"]);
            let kept = sink.kept();
            let (_, bad_link) = &kept[1];
            assert!(bad_link.links.is_empty());
            assert_eq!(bad_link.links.dropped_count, 1, "said on the span too");
            let arrived = arrivals.snapshot();
            assert_eq!(arrived.by_service.get("svc"), Some(&3), "{arrived:?}");
            assert_eq!(arrived.rejected_by_service.get("svc"), Some(&2));
            assert_eq!(arrived.rejected_reasons.len(), 2, "{arrived:?}");
            assert_eq!(arrived.links_dropped_by_service.get("svc"), Some(&1));
            assert_eq!(arrived.links_dropped_reasons.len(), 1, "{arrived:?}");
            assert!(arrived.last.is_some());
            answer
        };

        let partial = answer.partial_success.unwrap();
        assert_eq!(partial.rejected_spans, 2);
        for expected in [
            "2 span(s) rejected",
            "\"short trace id\": trace id has 15 bytes, not 16",
            "\"zero span id\": span id is all zeros",
            "1 link(s) to no span dropped",
            "\"bad link\": link 0's span id has 3 bytes, not 8: dropped",
        ] {
            assert!(
                partial.error_message.contains(expected),
                "{}",
                partial.error_message
            );
        }
    }

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0xfc]), "//79/A==");
    }
}
