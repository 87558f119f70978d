//! Services instrumented with [`tracing`](https://docs.rs/tracing)
//! (feature `tracing`): their spans go to a [`SpanCapture`] through
//! [tracing-opentelemetry](https://docs.rs/tracing-opentelemetry), one
//! service per subscriber, and their context travels in record headers.
//!
//! - [`SpanCapture::tracing_subscriber`] (a ready subscriber) and
//!   [`SpanCapture::tracing_layer`] (a layer for a subscriber of your own).
//! - [`inject_span`] / [`extract_into_span`]: a `tracing` span's context
//!   into rskafka headers, and a record's context as a span's parent (with
//!   feature `rdkafka` too: [`inject_span_rdkafka`] /
//!   [`extract_into_span_rdkafka`]).
//!
//! **No global subscriber.** Tests run in parallel threads of one
//! process, so each test gives its subscriber to the code it runs, never
//! to `tracing::subscriber::set_global_default`:
//!
//! - `future.with_subscriber(subscriber)`
//!   ([`WithSubscriber`](::tracing::instrument::WithSubscriber)) makes it
//!   the default while `future` is polled, on whichever worker thread.
//! - A task the future spawns does not inherit it: spawn
//!   `task.with_current_subscriber()` to carry it along (and
//!   `.in_current_span()` to keep the parent span). Without it the task's
//!   spans go to the global default, a no-op, and are lost.
//! - `tracing::subscriber::set_default` is thread-local: it suits a
//!   synchronous test or a current-thread runtime, never a task that may
//!   move to another worker thread.
//!
//! **Parents.** tracing-opentelemetry takes a new span's parent from the
//! OpenTelemetry context current when the span is created, which entering
//! a `tracing` span sets. So:
//!
//! - a harness send inside an instrumented function is the child of its
//!   span when given `tracing::Span::current().context()`
//!   ([`OpenTelemetrySpanExt::context`]);
//! - an instrumented handler becomes the child of a process span when its
//!   future runs with the record's context attached:
//!   `handle(&record).with_context(record.context().clone())`
//!   ([`FutureExt::with_context`](opentelemetry::context::FutureExt::with_context)),
//!   since an `async fn`'s span is created at its first poll.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> kafka_trace_harness::Result<()> {
//! use kafka_trace_harness::{ExpectedSpan, SpanCapture};
//! use tracing::instrument::WithSubscriber;
//! use tracing::Instrument;
//!
//! #[tracing::instrument]
//! async fn checkout(cart: u32) {
//!     // A spawned task keeps the subscriber, and the parent span.
//!     tokio::spawn(charge(cart).in_current_span().with_current_subscriber())
//!         .await
//!         .expect("charge task");
//! }
//!
//! #[tracing::instrument]
//! async fn charge(cart: u32) {}
//!
//! let capture = SpanCapture::new();
//! checkout(7).with_subscriber(capture.tracing_subscriber("shop")).await;
//!
//! capture.forest().assert_trace(
//!     &ExpectedSpan::new("checkout").service("shop").child(ExpectedSpan::new("charge")),
//! );
//! # Ok(()) }
//! ```

use ::tracing::{Metadata, Subscriber};
use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt, SetParentError};
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{FilterFn, Filtered};
use tracing_subscriber::layer::{Layer as _, Layered, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::capture::SpanCapture;
use crate::propagation::{self, Extracted, Headers, Injected};
use crate::traced::attr;
use crate::traced::attributes::extraction_events;

/// The layer [`SpanCapture::tracing_layer`] returns.
pub type CaptureLayer<S> = OpenTelemetryLayer<S, SdkTracer>;

/// The subscriber [`SpanCapture::tracing_subscriber`] returns: a
/// [`Registry`] with a [`CaptureLayer`] that skips the harness's own
/// Kafka client.
pub type CaptureSubscriber =
    Layered<Filtered<CaptureLayer<Registry>, FilterFn, Registry>, Registry>;

/// Whether a span or event is the service's, not rskafka's: the harness's
/// clients log through `tracing` too, and inside a service's future their
/// connection chatter (with ports that change every run) would become
/// events of the service's spans.
fn not_the_harness_client(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    target != "rskafka" && !target.starts_with("rskafka::")
}

impl SpanCapture {
    /// A tracing-opentelemetry layer recording `tracing` spans as spans of
    /// `service` in this capture, for a subscriber of your own (with your
    /// filters and formatters). Unlike
    /// [`tracing_subscriber`](Self::tracing_subscriber), it keeps the
    /// events of the harness's rskafka clients: filter target `rskafka`
    /// out if they are noise.
    ///
    /// Spans carry their fields and `target`, but no busy/idle times,
    /// thread ids or source lines, which change from run to run or with
    /// every edit and would churn snapshots. For those, build a layer from
    /// [`tracer`](Self::tracer) yourself.
    ///
    /// ```
    /// use kafka_trace_harness::SpanCapture;
    /// use tracing_subscriber::layer::SubscriberExt;
    ///
    /// let capture = SpanCapture::new();
    /// let subscriber = tracing_subscriber::registry().with(capture.tracing_layer("shop"));
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tracing::info_span!("checkout").in_scope(|| {});
    /// });
    /// assert_eq!(capture.forest().of_service("shop").count(), 1);
    /// ```
    pub fn tracing_layer<S>(&self, service: &str) -> CaptureLayer<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer(service))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
    }

    /// A subscriber recording every `tracing` span and event as a span (or
    /// span event) of `service` in this capture, except those of rskafka,
    /// the harness's own client. Give it to the service's future with
    /// `with_subscriber` (see the [module](crate::integrations::tracing)
    /// docs for spawned tasks).
    pub fn tracing_subscriber(&self, service: &str) -> CaptureSubscriber {
        let service_only = FilterFn::new(not_the_harness_client as fn(&Metadata<'_>) -> bool);
        Registry::default().with(self.tracing_layer(service).with_filter(service_only))
    }
}

/// Injects `span`'s context (and the baggage of its context) into rskafka
/// `headers`, keeping a `traceparent` already there; see
/// [`propagation::inject`]. A span no capture layer records injects
/// nothing ([`Injected::NoSpan`]).
///
/// ```
/// use kafka_trace_harness::Injected;
/// use kafka_trace_harness::integrations::tracing::inject_span;
/// use kafka_trace_harness::propagation::{Headers, TRACEPARENT};
/// use kafka_trace_harness::SpanCapture;
///
/// let capture = SpanCapture::new();
/// tracing::subscriber::with_default(capture.tracing_subscriber("shop"), || {
///     let span = tracing::info_span!("publish");
///     let mut headers = Headers::new();
///     assert_eq!(inject_span(&span, &mut headers), Injected::Written);
///     assert!(headers.contains_key(TRACEPARENT));
/// });
/// ```
pub fn inject_span(span: &::tracing::Span, headers: &mut Headers) -> Injected {
    propagation::inject(&span.context(), headers)
}

/// Makes the context in rskafka `headers` the parent of `span`, which
/// must not have been entered yet (create it, call this, then enter it
/// or `.instrument(span)`).
///
/// When the context is unusable, `span` keeps its own parent (the
/// current span, or none) and records why, as a process span does: the
/// `messaging.kafka.trace_context.problem` attribute and a
/// `trace context unusable` event. The returned [`Extracted`] says it
/// too. An error means the parent could not be set: the span was entered
/// already, is disabled, or no capture layer records it.
///
/// ```
/// use kafka_trace_harness::integrations::tracing::{extract_into_span, inject_span};
/// use kafka_trace_harness::propagation::Headers;
/// use kafka_trace_harness::{ExpectedSpan, SpanCapture};
///
/// let capture = SpanCapture::new();
/// let mut headers = Headers::new();
/// tracing::subscriber::with_default(capture.tracing_subscriber("shop"), || {
///     inject_span(&tracing::info_span!("publish"), &mut headers);
/// });
/// tracing::subscriber::with_default(capture.tracing_subscriber("billing"), || {
///     let span = tracing::info_span!("handle");
///     let extracted = extract_into_span(&span, &headers).expect("parent set");
///     assert!(extracted.is_usable());
///     span.in_scope(|| {});
/// });
/// capture.forest().assert_trace(
///     &ExpectedSpan::new("publish").service("shop").child(ExpectedSpan::new("handle").service("billing")),
/// );
/// ```
pub fn extract_into_span(
    span: &::tracing::Span,
    headers: &Headers,
) -> Result<Extracted, SetParentError> {
    set_parent(span, propagation::extract(headers))
}

/// [`inject_span`] into rdkafka [`OwnedHeaders`](rdkafka::message::OwnedHeaders)
/// (features `tracing` and `rdkafka`); see
/// [`integrations::rdkafka::inject`](crate::integrations::rdkafka::inject).
#[cfg(feature = "rdkafka")]
pub fn inject_span_rdkafka(
    span: &::tracing::Span,
    headers: &mut rdkafka::message::OwnedHeaders,
) -> Injected {
    crate::integrations::rdkafka::inject(&span.context(), headers)
}

/// [`extract_into_span`] from any rdkafka header list, such as a received
/// message's `headers()` (features `tracing` and `rdkafka`); see
/// [`integrations::rdkafka::extract`](crate::integrations::rdkafka::extract).
#[cfg(feature = "rdkafka")]
pub fn extract_into_span_rdkafka<H: crate::integrations::rdkafka::RdkafkaHeaders + ?Sized>(
    span: &::tracing::Span,
    headers: &H,
) -> Result<Extracted, SetParentError> {
    set_parent(span, crate::integrations::rdkafka::extract(headers))
}

/// Sets a usable context as `span`'s parent, or records why it is not.
fn set_parent(span: &::tracing::Span, extracted: Extracted) -> Result<Extracted, SetParentError> {
    match &extracted.problem {
        None => span.set_parent(extracted.context.clone())?,
        Some(problem) => span.set_attribute(attr::CONTEXT_PROBLEM, problem.kind()),
    }
    for (name, attributes) in extraction_events(&extracted) {
        span.add_event(name, attributes);
    }
    Ok(extracted)
}
