//! Per-test span capture: one tracer provider per service, all exporting
//! synchronously into one in-memory sink, and nothing global.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor};

use crate::error::{Error, Result};
use crate::forest::tree::{CapturedSpan, SpanForest};

pub mod global;

/// Instrumentation scope name of the tracers [`SpanCapture::tracer`] returns.
pub const SCOPE_NAME: &str = "kafka-trace-harness";

/// Ended spans with the service that recorded them, in the order they
/// ended; or, for a streaming capture, the [`SpanStream`] they go to.
///
/// Not the SDK's `InMemorySpanExporter` behind a simple processor: it
/// deep-copies every span it exports and does not know the span's service
/// (`SpanData` carries no resource), and the simple processor adds a lock,
/// an executor and a one-span batch per span; measured, these were a
/// large part of a traced record's overhead.
pub(crate) type Sink = Arc<SpanSink>;

#[derive(Debug, Default)]
pub(crate) struct SpanSink {
    kept: Mutex<Vec<(Arc<str>, SpanData)>>,
    stream: Option<Arc<dyn SpanStream>>,
}

impl SpanSink {
    pub(crate) fn push(&self, service: Arc<str>, span: SpanData) {
        match &self.stream {
            Some(stream) => stream.span_ended(&service, span),
            None => lock(&self.kept).push((service, span)),
        }
    }

    #[cfg(feature = "otlp-receiver")]
    pub(crate) fn extend(&self, spans: impl IntoIterator<Item = (Arc<str>, SpanData)>) {
        match &self.stream {
            Some(stream) => spans
                .into_iter()
                .for_each(|(service, span)| stream.span_ended(&service, span)),
            None => lock(&self.kept).extend(spans),
        }
    }

    /// The spans kept (none for a streaming capture).
    pub(crate) fn kept(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<str>, SpanData)>> {
        lock(&self.kept)
    }
}

/// Where a streaming [`SpanCapture`] hands each span as it ends, instead
/// of keeping it: for runs too long to hold every span (a summary, a
/// trace checker, a file writer). See [`SpanCaptureBuilder::stream`].
///
/// Called synchronously, on the thread that ended the span (or received
/// it over OTLP), so it should be quick.
pub trait SpanStream: Send + Sync {
    /// `span`, recorded by `service`, has ended.
    fn span_ended(&self, service: &Arc<str>, span: SpanData);
}

/// Settings for a [`SpanCapture`]; every default is set in
/// [`SpanCaptureBuilder::new`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SpanCaptureBuilder {
    #[cfg(feature = "stdout")]
    stdout: bool,
    poll_interval: Duration,
    stream: Option<Arc<dyn SpanStream>>,
}

impl fmt::Debug for dyn SpanStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpanStream")
    }
}

impl Default for SpanCaptureBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanCaptureBuilder {
    /// No stdout export, 2 ms polling interval for [`SpanCapture::wait_for`].
    pub fn new() -> Self {
        Self {
            #[cfg(feature = "stdout")]
            stdout: false,
            poll_interval: Duration::from_millis(2),
            stream: None,
        }
    }

    /// Also print every span with `opentelemetry-stdout` as it ends, for
    /// debugging a test. Default `false` (it is noisy and slow). Feature
    /// `stdout`.
    #[cfg(feature = "stdout")]
    pub fn stdout(mut self, enabled: bool) -> Self {
        self.stdout = enabled;
        self
    }

    /// How often [`SpanCapture::wait_for`] looks at the spans. Default
    /// 2 ms: short enough not to slow tests, long enough not to spin.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_micros(100));
        self
    }

    /// Hands every span to `stream` as it ends instead of keeping it, so
    /// memory stays flat however many spans a run makes; then
    /// [`spans`](SpanCapture::spans), [`forest`](SpanCapture::forest) and
    /// [`wait_for`](SpanCapture::wait_for) see nothing. Default: keep every
    /// span (what tests want).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use kafka_trace_harness::{SpanCapture, SpanStream};
    /// use opentelemetry::trace::Tracer;
    /// use opentelemetry_sdk::trace::SpanData;
    ///
    /// #[derive(Default)]
    /// struct Count(AtomicUsize);
    /// impl SpanStream for Count {
    ///     fn span_ended(&self, _service: &Arc<str>, _span: SpanData) {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// let count = Arc::new(Count::default());
    /// let capture = SpanCapture::builder().stream(count.clone()).build();
    /// capture.tracer("api").in_span("process x", |_| {});
    ///
    /// assert_eq!(count.0.load(Ordering::Relaxed), 1);
    /// assert!(capture.spans().is_empty());
    /// ```
    pub fn stream(mut self, stream: Arc<dyn SpanStream>) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Builds the capture.
    pub fn build(self) -> SpanCapture {
        SpanCapture {
            sink: Arc::new(SpanSink {
                kept: Mutex::default(),
                stream: self.stream.clone(),
            }),
            providers: Mutex::default(),
            settings: self,
        }
    }
}

/// The spans of one test.
///
/// Each service gets its own [`SdkTracerProvider`] with resource
/// `service.name`; all of them hand each span, synchronously as it ends,
/// to one in-memory sink, so a span is visible as soon as it ends. No
/// global provider or propagator is set, so captures of tests running in
/// parallel never mix.
///
/// ```
/// use kafka_trace_harness::SpanCapture;
/// use opentelemetry::trace::Tracer;
///
/// let capture = SpanCapture::new();
/// capture.tracer("datagen").in_span("send trades", |_| {});
///
/// let spans = capture.spans();
/// assert_eq!(spans.len(), 1);
/// assert_eq!(spans[0].service, "datagen");
/// ```
pub struct SpanCapture {
    sink: Sink,
    providers: Mutex<BTreeMap<String, SdkTracerProvider>>,
    settings: SpanCaptureBuilder,
}

impl fmt::Debug for SpanCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let services: Vec<String> = lock(&self.providers).keys().cloned().collect();
        f.debug_struct("SpanCapture")
            .field("services", &services)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Default for SpanCapture {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not hide the spans from the report.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SpanCapture {
    /// A capture with the default settings.
    pub fn new() -> Self {
        SpanCaptureBuilder::new().build()
    }

    /// Settings for a capture.
    pub fn builder() -> SpanCaptureBuilder {
        SpanCaptureBuilder::new()
    }

    /// The provider of `service`, created on first use.
    pub fn provider(&self, service: &str) -> SdkTracerProvider {
        let mut providers = lock(&self.providers);
        if let Some(provider) = providers.get(service) {
            return provider.clone();
        }
        let processor = self.span_processor(service);
        #[cfg_attr(not(feature = "stdout"), allow(unused_mut))]
        let mut builder = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .with_span_processor(processor);
        #[cfg(feature = "stdout")]
        if self.settings.stdout {
            builder = builder.with_simple_exporter(opentelemetry_stdout::SpanExporter::default());
        }
        let provider = builder.build();
        providers.insert(service.to_owned(), provider.clone());
        provider
    }

    /// A span processor that moves each span it sees, as it ends, into
    /// this capture as a span of `service`. Give it to a tracer provider
    /// of your own, which keeps its sampler, resource, limits and other
    /// processors:
    ///
    /// ```
    /// use kafka_trace_harness::SpanCapture;
    /// use opentelemetry::trace::{Tracer, TracerProvider};
    /// use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    ///
    /// let capture = SpanCapture::new();
    /// let provider = SdkTracerProvider::builder()
    ///     .with_sampler(Sampler::AlwaysOn)
    ///     .with_span_processor(capture.span_processor("billing"))
    ///     .build();
    /// provider.tracer("billing").in_span("charge", |_| {});
    ///
    /// assert_eq!(capture.forest().of_service("billing").count(), 1);
    /// ```
    pub fn span_processor(&self, service: &str) -> CaptureProcessor {
        CaptureProcessor {
            service: Arc::from(service),
            service_from_resource: false,
            sink: Arc::clone(&self.sink),
        }
    }

    /// Like [`span_processor`](Self::span_processor), taking the service
    /// name from the provider's resource (`service.name`) when the
    /// provider is built; `unknown_service` if it has none.
    pub fn span_processor_from_resource(&self) -> CaptureProcessor {
        CaptureProcessor {
            service: Arc::from("unknown_service"),
            service_from_resource: true,
            sink: Arc::clone(&self.sink),
        }
    }

    /// The sink, for the global router.
    pub(crate) fn sink(&self) -> &Sink {
        &self.sink
    }

    /// A tracer of `service` (scope [`SCOPE_NAME`]).
    pub fn tracer(&self, service: &str) -> SdkTracer {
        self.provider(service)
            .tracer_with_scope(InstrumentationScope::builder(SCOPE_NAME).build())
    }

    /// Every span ended so far, in the order they ended.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.sink
            .kept()
            .iter()
            .map(|(service, data)| CapturedSpan {
                service: service.to_string(),
                data: data.clone(),
            })
            .collect()
    }

    /// The spans ended so far, as a [`SpanForest`].
    pub fn forest(&self) -> SpanForest {
        SpanForest::new(self.spans())
    }

    /// Forgets every span captured so far.
    pub fn clear(&self) {
        self.sink.kept().clear();
    }

    /// Polls the captured spans until `condition` holds or `deadline`
    /// passes; returns the forest that satisfied it, or an error showing
    /// what was seen.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kafka_trace_harness::Result<()> {
    /// use std::time::Duration;
    /// use kafka_trace_harness::{Condition, SpanCapture};
    /// use opentelemetry::trace::Tracer;
    ///
    /// let capture = SpanCapture::new();
    /// let tracer = capture.tracer("api");
    /// tokio::spawn(async move { tracer.in_span("process x", |_| {}) });
    ///
    /// let forest = capture.wait_for(Condition::spans_named("process x", 1), Duration::from_secs(5)).await?;
    /// assert_eq!(forest.len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(&self, condition: Condition, deadline: Duration) -> Result<SpanForest> {
        let started = Instant::now();
        let mut ticks = tokio::time::interval(self.settings.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forest = self.forest();
            if (condition.check)(&forest) {
                return Ok(forest);
            }
            if started.elapsed() >= deadline {
                let seen = match &condition.report {
                    Some(report) => report(&forest),
                    None => crate::forest::render::summary(&forest, 40),
                };
                return Err(Error::Wait {
                    condition: condition.description,
                    waited: started.elapsed(),
                    seen,
                });
            }
            ticks.tick().await;
        }
    }

    /// Shuts every provider down and reports the first error. The captured
    /// spans stay readable: the sink is never cleared by a shutdown.
    pub fn shutdown(&self) -> Result<()> {
        let providers = std::mem::take(&mut *lock(&self.providers));
        let mut first_error = None;
        for (service, provider) in providers {
            if let Err(e) = provider.shutdown() {
                first_error.get_or_insert(Error::Telemetry {
                    service,
                    reason: e.to_string(),
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A condition on the captured spans, with a description for the error
/// shown when it does not hold in time and, optionally, a report of its
/// own for that error ([`with_report`](Self::with_report)).
pub struct Condition {
    description: String,
    check: Box<dyn Fn(&SpanForest) -> bool + Send + Sync>,
    report: Option<Report>,
}

/// What a [`Condition`] says about the spans seen at the deadline.
type Report = Box<dyn Fn(&SpanForest) -> String + Send + Sync>;

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.description).finish()
    }
}

impl Condition {
    /// A condition described by `description`.
    pub fn new(
        description: impl Into<String>,
        check: impl Fn(&SpanForest) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            description: description.into(),
            check: Box::new(check),
            report: None,
        }
    }

    /// Makes [`SpanCapture::wait_for`]'s error, when the deadline passes,
    /// show `report` of the last forest seen (its `seen` field) instead of
    /// a summary of the spans.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use kafka_trace_harness::{Condition, Error, SpanCapture};
    ///
    /// let condition = Condition::span_count(1)
    ///     .with_report(|forest| format!("{} spans, none ended in time", forest.len()));
    /// let err = SpanCapture::new().wait_for(condition, Duration::from_millis(5)).await.unwrap_err();
    /// assert!(matches!(err, Error::Wait { seen, .. } if seen == "0 spans, none ended in time"));
    /// # }
    /// ```
    pub fn with_report(
        mut self,
        report: impl Fn(&SpanForest) -> String + Send + Sync + 'static,
    ) -> Self {
        self.report = Some(Box::new(report));
        self
    }

    /// At least `count` spans in all.
    pub fn span_count(count: usize) -> Self {
        Self::new(format!("at least {count} spans"), move |f| f.len() >= count)
    }

    /// At least `count` spans named `name`.
    pub fn spans_named(name: impl Into<String>, count: usize) -> Self {
        let name = name.into();
        Self::new(format!("at least {count} spans named {name:?}"), move |f| {
            f.named(&name).count() >= count
        })
    }

    /// What the condition waits for.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Moves each ended span into a [`SpanCapture`], tagged with its service:
/// a processor rather than an exporter, so a span goes straight to the
/// capture as it ends, with no batch around it. Made by
/// [`SpanCapture::span_processor`].
#[derive(Debug)]
pub struct CaptureProcessor {
    service: Arc<str>,
    service_from_resource: bool,
    sink: Sink,
}

impl SpanProcessor for CaptureProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // What the SDK's simple processor does too: a span recorded but not
        // sampled (a `RecordOnly` sampler) is not exported.
        if span.span_context.is_sampled() {
            self.sink.push(Arc::clone(&self.service), span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    // A provider shuts down when its last clone drops; the spans must
    // outlive it, so shutting down leaves the sink alone.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        if self.service_from_resource
            && let Some(name) = resource.get(&opentelemetry::Key::new("service.name"))
        {
            self.service = Arc::from(name.as_str().as_ref());
        }
    }
}
