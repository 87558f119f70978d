//! Live OTLP export: every span a streaming [`SpanCapture`](crate::SpanCapture)
//! sees, and the metrics of each service, sent to an OpenTelemetry
//! collector (or Jaeger, Tempo, Elastic APM …) as they happen, each
//! service under its own resource (`service.name`). The exporters are
//! opentelemetry-otlp's, over gRPC, HTTP/protobuf or HTTP/JSON. Feature
//! `otlp-export`.
//!
//! The export never slows the code that ends spans: [`OtlpExport`] is a
//! [`SpanStream`] that puts each span in a bounded queue (a full queue
//! drops the span and counts it), and a thread of its own batches
//! spans per service and exports them, a few requests at a time. Metrics go
//! through one [`SdkMeterProvider`] per service
//! ([`OtlpExport::meter_provider`]) whose periodic reader exports through
//! the OTLP metric exporter. [`OtlpExport::shutdown`] sends what is left
//! within a deadline and reports what was recorded, exported, dropped,
//! failed and left unsent ([`ExportReport`]): nothing lost is silent.
//!
//! Where to send, read like the OpenTelemetry SDKs read it:
//!
//! | setting | signal-specific variable (wins) | generic | default |
//! | --- | --- | --- | --- |
//! | endpoint | `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`, the full URL | [`OtlpExportBuilder::endpoint`], else `OTEL_EXPORTER_OTLP_ENDPOINT`: a base URL, to which HTTP appends `/v1/traces` or `/v1/metrics` | `http://localhost:4318` (HTTP), `http://localhost:4317` (gRPC) |
//! | protocol | `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL` | [`OtlpExportBuilder::protocol`], else `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` |
//!
//! Headers (`OTEL_EXPORTER_OTLP_HEADERS` and the `_TRACES_` / `_METRICS_`
//! forms), timeouts (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s) and the
//! resource's extra attributes (`OTEL_RESOURCE_ATTRIBUTES`) are read by
//! opentelemetry-otlp and the SDK themselves. Compression is not built in:
//! `OTEL_EXPORTER_OTLP_COMPRESSION` is ignored, requests go uncompressed.
//!
//! ```
//! # #[cfg(feature = "otlp-receiver")]
//! # #[tokio::main]
//! # async fn main() -> kafka_trace_harness::Result<()> {
//! use std::sync::Arc;
//! use kafka_trace_harness::SpanCapture;
//! use kafka_trace_harness::integrations::otlp_export::{OtlpExport, Protocol};
//! use opentelemetry::trace::Tracer;
//!
//! // A collector: here the harness's own receiver (feature otlp-receiver).
//! let collector = SpanCapture::new();
//! let receiver = collector.otlp_receiver().await?;
//!
//! let export = Arc::new(
//!     OtlpExport::builder()
//!         .endpoint(receiver.grpc_endpoint())
//!         .protocol(Protocol::Grpc)
//!         .start()?,
//! );
//! let capture = SpanCapture::builder().stream(export.clone()).build();
//! capture.tracer("datagen").in_span("send stockapp.trades", |_| {});
//! let report = export.shutdown().await;
//!
//! assert_eq!(report.spans.exported, 1);
//! assert!(report.is_complete(), "{report}");
//! assert_eq!(collector.forest().of_service("datagen").count(), 1);
//! # receiver.shutdown().await?;
//! # Ok(()) }
//! # #[cfg(not(feature = "otlp-receiver"))]
//! # fn main() {}
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::SpanStream;
use crate::{Error, Result};

/// Spans the queue holds by default before it drops: about two seconds of
/// the stockapp pipeline at full speed.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// Spans per export request by default (a few hundred KiB: under the 4 MiB
/// that collectors accept over gRPC by default).
pub const DEFAULT_BATCH_SIZE: usize = 1_024;
/// How long a span waits at most for its batch to fill, by default.
pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_millis(500);
/// How long [`OtlpExport::shutdown`] may take by default.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// How often metrics are exported by default (`OTEL_METRIC_EXPORT_INTERVAL`,
/// in ms, overrides it), besides once more at shutdown.
pub const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(10);
/// Export requests of spans in flight at once.
const EXPORTS_IN_FLIGHT: usize = 4;

/// The OTLP transports, named as `OTEL_EXPORTER_OTLP_PROTOCOL` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc`: OTLP/gRPC (tonic), usually on port 4317.
    Grpc,
    /// `http/protobuf`: OTLP/HTTP with protobuf bodies, usually on port 4318.
    HttpProtobuf,
    /// `http/json`: OTLP/HTTP with JSON bodies.
    HttpJson,
}

impl Protocol {
    /// The protocol named `name` (`grpc`, `http/protobuf` or `http/json`,
    /// any case); `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            "http/json" => Some(Self::HttpJson),
            _ => None,
        }
    }

    /// The name `OTEL_EXPORTER_OTLP_PROTOCOL` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
        }
    }

    fn default_endpoint(self) -> &'static str {
        match self {
            Self::Grpc => "http://localhost:4317",
            Self::HttpProtobuf | Self::HttpJson => "http://localhost:4318",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two signals exported, with their variables and HTTP paths.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn endpoint_variable(self) -> &'static str {
        match self {
            Self::Traces => "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            Self::Metrics => "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        }
    }

    fn protocol_variable(self) -> &'static str {
        match self {
            Self::Traces => "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            Self::Metrics => "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        }
    }

    fn http_path(self) -> &'static str {
        match self {
            Self::Traces => "/v1/traces",
            Self::Metrics => "/v1/metrics",
        }
    }
}

/// Where one signal goes: transport and full URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The transport.
    pub protocol: Protocol,
    /// The URL requests go to (over HTTP, with the signal's path).
    pub url: String,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.url, self.protocol)
    }
}

/// A variable of the environment; unset and empty read alike, as
/// opentelemetry-otlp reads them.
fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn protocol_variable(name: &'static str) -> Result<Option<Protocol>> {
    match variable(name) {
        None => Ok(None),
        Some(value) => Protocol::parse(&value).map(Some).ok_or(Error::Config {
            variable: name,
            reason: "expected grpc, http/protobuf or http/json".to_owned(),
            value,
        }),
    }
}

/// A base URL with an HTTP signal path appended, as the SDKs append it to
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn with_path(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Settings of an [`OtlpExport`]; every default is set in
/// [`OtlpExportBuilder::new`].
#[derive(Debug, Clone)]
#[must_use]
pub struct OtlpExportBuilder {
    endpoint: Option<String>,
    protocol: Option<Protocol>,
    queue_capacity: usize,
    batch_size: usize,
    batch_delay: Duration,
    shutdown_deadline: Duration,
    metric_interval: Option<Duration>,
}

impl Default for OtlpExportBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl OtlpExportBuilder {
    /// Endpoint and protocol from the environment (see [the
    /// module](self)), a queue of [`DEFAULT_QUEUE_CAPACITY`] spans, batches
    /// of [`DEFAULT_BATCH_SIZE`] sent at least every
    /// [`DEFAULT_BATCH_DELAY`], a [`DEFAULT_SHUTDOWN_DEADLINE`], metrics
    /// every [`DEFAULT_METRIC_INTERVAL`] (or `OTEL_METRIC_EXPORT_INTERVAL`).
    pub fn new() -> Self {
        Self {
            endpoint: None,
            protocol: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            batch_size: DEFAULT_BATCH_SIZE,
            batch_delay: DEFAULT_BATCH_DELAY,
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
            metric_interval: None,
        }
    }

    /// The collector's base URL, exactly as `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (which it replaces): over HTTP `/v1/traces` and `/v1/metrics` are
    /// appended; a signal-specific `OTEL_EXPORTER_OTLP_*_ENDPOINT` still
    /// wins.
    pub fn endpoint(mut self, base_url: impl Into<String>) -> Self {
        self.endpoint = Some(base_url.into()).filter(|url| !url.trim().is_empty());
        self
    }

    /// The transport, exactly as `OTEL_EXPORTER_OTLP_PROTOCOL` (which it
    /// replaces); a signal-specific `OTEL_EXPORTER_OTLP_*_PROTOCOL` still
    /// wins.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Spans waiting to be exported at most; beyond, a span is dropped and
    /// counted. At least 1.
    pub fn queue_capacity(mut self, spans: usize) -> Self {
        self.queue_capacity = spans.max(1);
        self
    }

    /// Spans per export request at most. At least 1.
    pub fn batch_size(mut self, spans: usize) -> Self {
        self.batch_size = spans.max(1);
        self
    }

    /// How long a span waits at most for its batch to fill.
    pub fn batch_delay(mut self, delay: Duration) -> Self {
        self.batch_delay = delay.max(Duration::from_millis(1));
        self
    }

    /// How long [`OtlpExport::shutdown`] may take to send what is left.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// How often each service's metrics are exported (and once more at
    /// shutdown).
    pub fn metric_interval(mut self, interval: Duration) -> Self {
        self.metric_interval = Some(interval);
        self
    }

    /// Where `signal` goes, from the settings and the environment.
    fn destination(&self, signal: Signal) -> Result<Destination> {
        let protocol = match protocol_variable(signal.protocol_variable())? {
            Some(protocol) => protocol,
            None => match self.protocol {
                Some(protocol) => protocol,
                None => protocol_variable("OTEL_EXPORTER_OTLP_PROTOCOL")?
                    .unwrap_or(Protocol::HttpProtobuf),
            },
        };
        let url = match variable(signal.endpoint_variable()) {
            // The signal's own URL is taken as it is.
            Some(url) => url,
            None => {
                let base = self
                    .endpoint
                    .clone()
                    .or_else(|| variable("OTEL_EXPORTER_OTLP_ENDPOINT"))
                    .unwrap_or_else(|| protocol.default_endpoint().to_owned());
                match protocol {
                    Protocol::Grpc => base,
                    Protocol::HttpProtobuf | Protocol::HttpJson => {
                        with_path(&base, signal.http_path())
                    }
                }
            }
        };
        Ok(Destination { protocol, url })
    }

    /// Where spans go.
    pub fn traces_destination(&self) -> Result<Destination> {
        self.destination(Signal::Traces)
    }

    /// Where metrics go.
    pub fn metrics_destination(&self) -> Result<Destination> {
        self.destination(Signal::Metrics)
    }

    /// Checks the settings (an exporter of each signal is built once) and
    /// starts the span export on a thread of its own (with a
    /// single-threaded tokio runtime, so that encoding and sending never
    /// hold up the caller's runtime); metrics are sent through the current
    /// runtime. Errors: not in a tokio runtime, a bad protocol or endpoint
    /// ([`Error::Config`], [`Error::OtlpExport`]).
    pub fn start(self) -> Result<OtlpExport> {
        let runtime = Handle::try_current().map_err(|e| Error::OtlpExport {
            reason: format!("the export needs a tokio runtime: {e}"),
        })?;
        let traces = self.traces_destination()?;
        let metrics = self.metrics_destination()?;
        // Building checks what the exporters read themselves (headers,
        // timeouts, compression) now rather than at the first span.
        span_exporter(&traces, "check")?;
        metric_exporter(&metrics)?;

        let counts = Arc::new(SpanCounters::default());
        let (queue, queued) = mpsc::channel(self.queue_capacity);
        let (stop, stopped) = oneshot::channel();
        let (finished, task) = oneshot::channel();
        let failed = |e: std::io::Error| Error::OtlpExport {
            reason: format!("starting the span export's thread: {e}"),
        };
        let export_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let export = export_spans(
            queued,
            stopped,
            Batching {
                destination: traces.clone(),
                batch_size: self.batch_size,
                batch_delay: self.batch_delay,
            },
            Arc::clone(&counts),
        );
        std::thread::Builder::new()
            .name("otlp-span-export".to_owned())
            .spawn(move || {
                export_runtime.block_on(export);
                let _ = finished.send(());
            })
            .map_err(failed)?;
        Ok(OtlpExport {
            queue,
            closing: AtomicBool::new(false),
            counts,
            task: Mutex::new(Some((stop, task))),
            meters: Mutex::default(),
            point_counts: Arc::default(),
            runtime,
            traces,
            metrics,
            shutdown_deadline: self.shutdown_deadline,
            metric_interval: self.metric_interval,
        })
    }
}

/// opentelemetry-otlp's span exporter for `destination`, its resource the
/// service's.
fn span_exporter(destination: &Destination, service: &str) -> Result<SpanExporter> {
    let built = match destination.protocol {
        Protocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&destination.url)
            .build(),
        Protocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(&destination.url)
            .build(),
        Protocol::HttpJson => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
            .with_endpoint(&destination.url)
            .build(),
    };
    let mut exporter = built.map_err(|e| Error::OtlpExport {
        reason: format!("span exporter for {destination}: {e}"),
    })?;
    exporter.set_resource(&service_resource(service));
    Ok(exporter)
}

fn metric_exporter(destination: &Destination) -> Result<MetricExporter> {
    match destination.protocol {
        Protocol::Grpc => MetricExporter::builder()
            .with_tonic()
            .with_endpoint(&destination.url)
            .build(),
        Protocol::HttpProtobuf => MetricExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(&destination.url)
            .build(),
        Protocol::HttpJson => MetricExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
            .with_endpoint(&destination.url)
            .build(),
    }
    .map_err(|e| Error::OtlpExport {
        reason: format!("metric exporter for {destination}: {e}"),
    })
}

/// `service.name` = `service`, with the SDK's own attributes and those of
/// `OTEL_RESOURCE_ATTRIBUTES`.
fn service_resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

/// Span counters, updated by the threads that end spans and by the task.
#[derive(Debug, Default)]
struct SpanCounters {
    recorded: AtomicU64,
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Metric point counters of every service's exporter.
#[derive(Debug, Default)]
struct PointCounters {
    exported: AtomicU64,
    failed: AtomicU64,
    attempted: AtomicU64,
    first_error: Mutex<Option<String>>,
}

fn keep_first(slot: &Mutex<Option<String>>, error: impl FnOnce() -> String) {
    slot.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(error);
}

/// Sends spans to an OTLP collector as they end, and gives each service a
/// meter provider exporting its metrics there; made by
/// [`OtlpExport::builder`]. See [the module](self).
pub struct OtlpExport {
    queue: mpsc::Sender<(Arc<str>, SpanData)>,
    closing: AtomicBool,
    counts: Arc<SpanCounters>,
    #[allow(clippy::type_complexity)]
    task: Mutex<Option<(oneshot::Sender<Instant>, oneshot::Receiver<()>)>>,
    meters: Mutex<HashMap<String, SdkMeterProvider>>,
    point_counts: Arc<PointCounters>,
    runtime: Handle,
    traces: Destination,
    metrics: Destination,
    shutdown_deadline: Duration,
    metric_interval: Option<Duration>,
}

impl fmt::Debug for OtlpExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExport")
            .field("traces", &self.traces)
            .field("metrics", &self.metrics)
            .field("spans", &self.span_counts())
            .finish_non_exhaustive()
    }
}

impl SpanStream for OtlpExport {
    fn span_ended(&self, service: &Arc<str>, span: SpanData) {
        self.counts.recorded.fetch_add(1, Ordering::Relaxed);
        // Never waits: a full queue (or one closed by shutdown) drops.
        if self.closing.load(Ordering::Relaxed)
            || self.queue.try_send((Arc::clone(service), span)).is_err()
        {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl OtlpExport {
    /// Settings for an export.
    pub fn builder() -> OtlpExportBuilder {
        OtlpExportBuilder::new()
    }

    /// Like [`SpanStream::span_ended`], for a span the caller keeps too
    /// (another stream's): it is copied only when the queue has room, so
    /// an export that cannot keep up costs no copy of the spans it drops.
    pub fn offer(&self, service: &Arc<str>, span: &SpanData) {
        self.counts.recorded.fetch_add(1, Ordering::Relaxed);
        let room = !self.closing.load(Ordering::Relaxed) && self.queue.capacity() > 0;
        if !room
            || self
                .queue
                .try_send((Arc::clone(service), span.clone()))
                .is_err()
        {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Where spans go.
    pub fn traces_destination(&self) -> &Destination {
        &self.traces
    }

    /// Where metrics go.
    pub fn metrics_destination(&self) -> &Destination {
        &self.metrics
    }

    /// Queues `spans` for export, waiting for room in the queue rather than
    /// dropping: for spans kept until the end of a run, handed over at once.
    pub async fn send_all(&self, spans: impl IntoIterator<Item = (Arc<str>, SpanData)>) {
        for span in spans {
            self.counts.recorded.fetch_add(1, Ordering::Relaxed);
            if self.closing.load(Ordering::Relaxed) || self.queue.send(span).await.is_err() {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The span counts so far (`unsent` is 0 until shutdown).
    pub fn span_counts(&self) -> SpanCounts {
        SpanCounts {
            recorded: self.counts.recorded.load(Ordering::Relaxed),
            exported: self.counts.exported.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
            unsent: 0,
        }
    }

    /// The meter provider of `service`, created on first use: resource
    /// `service.name` = `service`, a periodic reader exporting over OTLP
    /// (counted in the [`ExportReport`]); shut down by
    /// [`shutdown`](Self::shutdown).
    pub fn meter_provider(&self, service: &str) -> SdkMeterProvider {
        let mut meters = self.meters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(provider) = meters.get(service) {
            return provider.clone();
        }
        // Building a tonic channel needs the runtime's context.
        let _runtime = self.runtime.enter();
        let exporter = CountingMetricExporter {
            inner: metric_exporter(&self.metrics),
            counts: Arc::clone(&self.point_counts),
            runtime: self.runtime.clone(),
        };
        let reader = match &exporter.inner {
            Ok(_) => {
                let mut reader = PeriodicReader::builder(exporter);
                // OTEL_METRIC_EXPORT_INTERVAL, read by the builder, wins.
                if variable("OTEL_METRIC_EXPORT_INTERVAL").is_none() {
                    reader = reader
                        .with_interval(self.metric_interval.unwrap_or(DEFAULT_METRIC_INTERVAL));
                }
                Some(reader.build())
            }
            // Checked at start, so not expected; said once in the report.
            Err(e) => {
                let e = e.to_string();
                keep_first(&self.point_counts.first_error, || e);
                None
            }
        };
        let mut builder = SdkMeterProvider::builder().with_resource(service_resource(service));
        if let Some(reader) = reader {
            builder = builder.with_reader(reader);
        }
        let provider = builder.build();
        meters.insert(service.to_owned(), provider.clone());
        provider
    }

    /// Stops taking spans, sends what is queued and every service's last
    /// metrics within the shutdown deadline, and reports. Spans ended after
    /// this count as dropped; what the deadline cut off counts as unsent.
    /// Calling it again reports the same spans, none sent anew.
    pub async fn shutdown(&self) -> ExportReport {
        let started = Instant::now();
        let deadline = started + self.shutdown_deadline;
        self.closing.store(true, Ordering::Relaxed);
        // Metrics and spans are flushed at the same time: against a
        // collector that is down, each waits out the exporter's retries.
        let meters = self.shut_meters_down();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, mut task)) = task {
            let _ = stop.send(deadline);
            // The task honours the deadline itself; this is a backstop.
            let backstop = self.shutdown_deadline + Duration::from_secs(1);
            // Past it, the thread is left to end with the process.
            let _ = tokio::time::timeout(backstop, &mut task).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let metrics_timed_out = tokio::time::timeout(left, futures::future::join_all(meters))
            .await
            .is_err();
        let mut spans = self.span_counts();
        spans.unsent = spans
            .recorded
            .saturating_sub(spans.exported + spans.dropped + spans.failed);
        let attempted = self.point_counts.attempted.load(Ordering::Relaxed);
        let mut points = PointCounts {
            exported: self.point_counts.exported.load(Ordering::Relaxed),
            failed: self.point_counts.failed.load(Ordering::Relaxed),
            unsent: 0,
        };
        points.unsent = attempted.saturating_sub(points.exported + points.failed);
        let first = |slot: &Mutex<Option<String>>| {
            slot.lock().unwrap_or_else(PoisonError::into_inner).clone()
        };
        ExportReport {
            traces: self.traces.clone(),
            metrics: self.metrics.clone(),
            spans,
            points,
            span_error: first(&self.counts.first_error),
            point_error: first(&self.point_counts.first_error).or_else(|| {
                metrics_timed_out.then(|| {
                    format!(
                        "the last metrics were not sent within {:?}",
                        self.shutdown_deadline
                    )
                })
            }),
            took: started.elapsed(),
        }
    }

    /// Shuts every meter provider down (a last export each), each on a
    /// thread of its own; each receiver resolves when its provider is done.
    fn shut_meters_down(&self) -> Vec<oneshot::Receiver<()>> {
        let providers: Vec<(String, SdkMeterProvider)> = self
            .meters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        providers
            .into_iter()
            .map(|(service, provider)| {
                let (done, finished) = oneshot::channel();
                // A plain thread, not spawn_blocking: if the deadline
                // passes, the runtime must not wait for it at exit. A
                // thread that cannot start leaves its receiver closed.
                let _ = std::thread::Builder::new()
                    .name(format!("otlp-metrics-{service}"))
                    .spawn(move || {
                        // Its failures are counted by the exporter.
                        let _ = provider.shutdown();
                        let _ = done.send(());
                    });
                finished
            })
            .collect()
    }
}

/// How the export task batches.
struct Batching {
    destination: Destination,
    batch_size: usize,
    batch_delay: Duration,
}

type InFlight = Pin<Box<dyn Future<Output = (usize, OTelSdkResult)> + Send>>;

/// The export task: batches queued spans per service and exports them,
/// [`EXPORTS_IN_FLIGHT`] requests at most at a time, until told to stop;
/// then sends what is left until the deadline it was given.
async fn export_spans(
    mut queue: mpsc::Receiver<(Arc<str>, SpanData)>,
    mut stop: oneshot::Receiver<Instant>,
    batching: Batching,
    counts: Arc<SpanCounters>,
) {
    let mut exporters: HashMap<Arc<str>, Arc<SpanExporter>> = HashMap::new();
    let mut batches: HashMap<Arc<str>, Vec<SpanData>> = HashMap::new();
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut ticks = tokio::time::interval(batching.batch_delay);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut launch =
        |service: Arc<str>, batch: Vec<SpanData>, in_flight: &mut FuturesUnordered<InFlight>| {
            let exporter = match exporters.get(&service) {
                Some(exporter) => Arc::clone(exporter),
                None => match span_exporter(&batching.destination, &service) {
                    Ok(exporter) => {
                        let exporter = Arc::new(exporter);
                        exporters.insert(Arc::clone(&service), Arc::clone(&exporter));
                        exporter
                    }
                    Err(e) => {
                        counts
                            .failed
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        keep_first(&counts.first_error, || e.to_string());
                        return;
                    }
                },
            };
            let spans = batch.len();
            in_flight.push(Box::pin(
                async move { (spans, exporter.export(batch).await) },
            ));
        };
    let settle = |(spans, result): (usize, OTelSdkResult)| match result {
        Ok(()) => {
            counts.exported.fetch_add(spans as u64, Ordering::Relaxed);
        }
        Err(e) => {
            counts.failed.fetch_add(spans as u64, Ordering::Relaxed);
            keep_first(&counts.first_error, || e.to_string());
        }
    };

    let deadline = loop {
        tokio::select! {
            biased;
            deadline = &mut stop => break deadline.unwrap_or_else(|_| Instant::now()),
            Some(done) = in_flight.next(), if !in_flight.is_empty() => settle(done),
            queued = queue.recv(), if in_flight.len() < EXPORTS_IN_FLIGHT => match queued {
                Some((service, span)) => {
                    let batch = batches.entry(Arc::clone(&service)).or_default();
                    batch.push(span);
                    if batch.len() >= batching.batch_size {
                        let batch = std::mem::take(batch);
                        launch(service, batch, &mut in_flight);
                    }
                }
                None => break Instant::now(),
            },
            _ = ticks.tick() => {
                for (service, batch) in &mut batches {
                    if !batch.is_empty() && in_flight.len() < EXPORTS_IN_FLIGHT {
                        launch(Arc::clone(service), std::mem::take(batch), &mut in_flight);
                    }
                }
            }
        }
    };

    // Shutting down: take what is queued, send it all, wait until the
    // deadline. What is cut off is counted as unsent by the caller.
    queue.close();
    while let Ok((service, span)) = queue.try_recv() {
        let batch = batches.entry(Arc::clone(&service)).or_default();
        batch.push(span);
        if batch.len() >= batching.batch_size {
            let batch = std::mem::take(batch);
            launch(service, batch, &mut in_flight);
        }
    }
    for (service, batch) in batches.drain() {
        if !batch.is_empty() {
            launch(service, batch, &mut in_flight);
        }
    }
    let deadline = tokio::time::Instant::from_std(deadline);
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, in_flight.next()).await {
        settle(done);
    }
}

/// The OTLP metric exporter, counting the data points it was given,
/// exported and failed; it runs each export in the tokio runtime's context
/// (the periodic reader calls it from a thread of its own, where tonic and
/// hyper would find no runtime).
struct CountingMetricExporter {
    inner: Result<MetricExporter>,
    counts: Arc<PointCounters>,
    runtime: Handle,
}

impl fmt::Debug for CountingMetricExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CountingMetricExporter")
    }
}

/// Data points in one export.
fn data_points(metrics: &ResourceMetrics) -> u64 {
    fn points<T>(data: &MetricData<T>) -> usize {
        match data {
            MetricData::Gauge(gauge) => gauge.data_points().count(),
            MetricData::Sum(sum) => sum.data_points().count(),
            MetricData::Histogram(histogram) => histogram.data_points().count(),
            MetricData::ExponentialHistogram(histogram) => histogram.data_points().count(),
        }
    }
    metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .map(|metric| match metric.data() {
            AggregatedMetrics::F64(data) => points(data),
            AggregatedMetrics::U64(data) => points(data),
            AggregatedMetrics::I64(data) => points(data),
        })
        .sum::<usize>() as u64
}

impl PushMetricExporter for CountingMetricExporter {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        let points = data_points(metrics);
        let counts = Arc::clone(&self.counts);
        counts.attempted.fetch_add(points, Ordering::Relaxed);
        let export = async move {
            let result = match &self.inner {
                Ok(inner) => inner.export(metrics).await,
                Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
            };
            match &result {
                Ok(()) => counts.exported.fetch_add(points, Ordering::Relaxed),
                Err(e) => {
                    keep_first(&counts.first_error, || e.to_string());
                    counts.failed.fetch_add(points, Ordering::Relaxed)
                }
            };
            result
        };
        InRuntime {
            runtime: self.runtime.clone(),
            future: Box::pin(export),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match &self.inner {
            Ok(inner) => inner.force_flush(),
            Err(_) => Ok(()),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match &self.inner {
            Ok(inner) => inner.shutdown_with_timeout(timeout),
            Err(_) => Ok(()),
        }
    }

    fn temporality(&self) -> Temporality {
        match &self.inner {
            Ok(inner) => inner.temporality(),
            Err(_) => Temporality::Cumulative,
        }
    }
}

/// Polls `future` inside the runtime's context.
struct InRuntime<F> {
    runtime: Handle,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _runtime = this.runtime.enter();
        this.future.as_mut().poll(cx)
    }
}

/// What became of the spans handed to an [`OtlpExport`]. After shutdown,
/// `recorded = exported + dropped + failed + unsent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanCounts {
    /// Spans handed to the export.
    pub recorded: u64,
    /// Spans the collector acknowledged.
    pub exported: u64,
    /// Spans dropped without being sent: the queue was full, or shutdown
    /// had begun.
    pub dropped: u64,
    /// Spans sent in a request that failed (after the exporter's retries):
    /// collector down, refusing, or answering an error.
    pub failed: u64,
    /// Spans still queued or awaiting the collector's answer when the
    /// shutdown deadline passed.
    pub unsent: u64,
}

impl SpanCounts {
    /// Spans recorded but not acknowledged.
    pub fn lost(&self) -> u64 {
        self.dropped + self.failed + self.unsent
    }
}

/// What became of the metric data points of every service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointCounts {
    /// Points the collector acknowledged (each export sends every point
    /// again: temporality is cumulative).
    pub exported: u64,
    /// Points in exports that failed.
    pub failed: u64,
    /// Points of the last exports still unanswered at the deadline.
    pub unsent: u64,
}

/// The outcome of an [`OtlpExport`], from [`OtlpExport::shutdown`].
/// `Display` writes the summary lines of a run.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// Where spans went.
    pub traces: Destination,
    /// Where metrics went.
    pub metrics: Destination,
    /// The spans.
    pub spans: SpanCounts,
    /// The metric points.
    pub points: PointCounts,
    /// The first export error of spans, if any.
    pub span_error: Option<String>,
    /// The first export error of metrics, if any.
    pub point_error: Option<String>,
    /// How long the shutdown took.
    pub took: Duration,
}

impl ExportReport {
    /// Every span recorded was acknowledged and no metric export failed.
    pub fn is_complete(&self) -> bool {
        self.spans.lost() == 0
            && self.points.failed == 0
            && self.points.unsent == 0
            && self.point_error.is_none()
    }

    /// One line saying what was lost and why, for standard error; `None`
    /// when nothing was.
    pub fn problem(&self) -> Option<String> {
        if self.is_complete() {
            return None;
        }
        let mut parts = Vec::new();
        if self.spans.lost() > 0 {
            parts.push(format!(
                "{} of {} spans not exported to {} ({} dropped, {} failed, {} unsent){}",
                self.spans.lost(),
                self.spans.recorded,
                self.traces,
                self.spans.dropped,
                self.spans.failed,
                self.spans.unsent,
                self.span_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        if self.points.failed + self.points.unsent > 0 || self.point_error.is_some() {
            parts.push(format!(
                "{} metric points failed and {} unsent to {}{}",
                self.points.failed,
                self.points.unsent,
                self.metrics,
                self.point_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        Some(format!("OTLP export incomplete: {}", parts.join("; ")))
    }
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.spans;
        writeln!(
            f,
            "OTLP export of spans to {}: {} recorded, {} exported, {} dropped, {} failed, {} unsent",
            self.traces, s.recorded, s.exported, s.dropped, s.failed, s.unsent
        )?;
        let p = &self.points;
        writeln!(
            f,
            "OTLP export of metrics to {}: {} points exported, {} failed, {} unsent",
            self.metrics, p.exported, p.failed, p.unsent
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_as_the_variable_names_them() {
        assert_eq!(Protocol::parse("grpc"), Some(Protocol::Grpc));
        assert_eq!(
            Protocol::parse(" HTTP/Protobuf "),
            Some(Protocol::HttpProtobuf)
        );
        assert_eq!(Protocol::parse("http/json"), Some(Protocol::HttpJson));
        assert_eq!(Protocol::parse("http"), None);
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson] {
            assert_eq!(Protocol::parse(protocol.as_str()), Some(protocol));
        }
    }

    #[test]
    fn http_paths_are_appended_to_a_base_url_once() {
        assert_eq!(
            with_path("http://c:4318", "/v1/traces"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            with_path("http://c:4318/otlp/", "/v1/metrics"),
            "http://c:4318/otlp/v1/metrics"
        );
    }
}
