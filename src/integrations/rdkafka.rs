//! Services written with [rdkafka](https://docs.rs/rdkafka) (feature
//! `rdkafka`): the same W3C headers, span names and semantic-convention
//! attributes as [`TracedProducer`](crate::TracedProducer) and
//! [`TracedConsumer`](crate::TracedConsumer), so that rdkafka and rskafka
//! services share one trace.
//!
//! - [`inject`] / [`extract`] (and the OpenTelemetry adapters
//!   [`HeaderInjector`] / [`HeaderExtractor`]) over rdkafka's header lists,
//!   through the same checks as [`crate::propagation`].
//! - [`TracedFutureProducer`]: a `send <topic>` PRODUCER span around a
//!   [`FutureProducer`] send, ended at delivery.
//! - [`ConsumerTracer`]: a `process <topic>` CONSUMER span for a message
//!   from any consumer ([`StreamConsumer`](rdkafka::consumer::StreamConsumer),
//!   [`BaseConsumer`](rdkafka::consumer::BaseConsumer)), returned as a
//!   [`ConsumedMessage`].
//!
//! rdkafka's header lists differ from rskafka's map in two ways, handled so
//! that extraction reports the same [`ExtractProblem`](crate::ExtractProblem)s:
//!
//! - **Repeated names.** The last value counts (as in rskafka's map, where
//!   a later header replaces an earlier one), and repeated `traceparent`s
//!   that disagree are [`Ambiguous`](crate::ExtractProblem::Ambiguous),
//!   like look-alikes: no single parent can be trusted. Repeats that agree
//!   are fine.
//! - **Null values.** A null value reads as an empty one (rskafka's map has
//!   no null): a null `traceparent` is then rejected as malformed, a null
//!   `tracestate` or `baggage` is no state or baggage.
//! - **Names that are not UTF-8.** Kafka allows them; rdkafka 0.39's
//!   [`Headers::try_get`] panics on one. This module reads header lists
//!   through librdkafka itself ([`RdkafkaHeaders`]), so such a header is
//!   never a panic: extraction skips it (a trace header's name is ASCII)
//!   and injection keeps it, as it keeps every header it does not replace.
//!
//! **Runtime.** A group consumer leaves its group when dropped and waits
//! for the broker's answer, blocking its thread; the embedded broker is
//! served by tasks of the test's runtime. So a test with an rdkafka
//! consumer runs on a multi-thread runtime
//! (`#[tokio::test(flavor = "multi_thread")]`), or polls and drops a
//! `BaseConsumer` in `spawn_blocking`: on a current-thread runtime the
//! drop would wait forever.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kafka_trace_harness::integrations::rdkafka::{
//!     ConsumerTracer, TracedFutureProducer, consumer_config, producer_config,
//! };
//! use kafka_trace_harness::{Broker, ExpectedSpan, SpanCapture};
//! use opentelemetry::Context;
//! use rdkafka::consumer::{Consumer, StreamConsumer};
//! use rdkafka::producer::FutureRecord;
//!
//! let broker = Broker::builder().start().await?;
//! let topic = broker.create_unique_topic("orders", 1).await?;
//! let capture = SpanCapture::new();
//!
//! // The producing service: its own FutureProducer, traced.
//! let producer = TracedFutureProducer::new(
//!     producer_config(&broker).create()?,
//!     broker.bootstrap_servers(),
//!     capture.tracer("shop"),
//! );
//! producer
//!     .send(&Context::new(), FutureRecord::<str, str>::to(&topic).key("o-1").payload("{}"))
//!     .await?;
//!
//! // The consuming service: a consumer group, one process span per message.
//! let consumer: StreamConsumer = consumer_config(&broker, "billing").create()?;
//! consumer.subscribe(&[&topic])?;
//! let tracer = ConsumerTracer::new("billing", broker.bootstrap_servers(), capture.tracer("billing"));
//! let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await??;
//! let consumed = tracer.process(&message);
//! // Sends made with `consumed.context()` become children of the process span.
//! consumed.finish();
//!
//! capture.forest().assert_trace(
//!     &ExpectedSpan::producer(format!("send {topic}"))
//!         .service("shop")
//!         .child(ExpectedSpan::consumer(format!("process {topic}")).service("billing")),
//! );
//! # Ok(()) }
//! ```

use std::ffi::{CStr, CString};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use rdkafka::ClientConfig;
use rdkafka::bindings as rdsys;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{
    BorrowedHeaders, Header, Headers, Message, OwnedHeaders, OwnedMessage, ToBytes,
};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::{AsyncRuntime, DefaultRuntime, Timeout};
use rustc_hash::FxHashMap;

use crate::broker::{Broker, DEFAULT_CLIENT_DEADLINE};
use crate::propagation::{
    ExistingTraceparent, Extracted, HeaderMap, HeaderMapMut, Injected, MapInjector, extract_from,
    inject_into, readable,
};
use crate::traced::ConsumerParent;
use crate::traced::attributes::{
    SpanTemplate, attr, extraction_events, mark_failed, partition_id, server, shared,
};

mod sealed {
    pub trait Sealed {}
    impl Sealed for rdkafka::message::BorrowedHeaders {}
    impl Sealed for rdkafka::message::OwnedHeaders {}
}

/// rdkafka's two header lists, [`BorrowedHeaders`] (a received message's)
/// and [`OwnedHeaders`]: what this module's functions read. They are read
/// through librdkafka's own accessor, because rdkafka 0.39's
/// [`Headers::try_get`] unwraps each name's UTF-8 and panics on a name that
/// is not (Kafka allows any bytes). Sealed: only these two lists are
/// librdkafka's.
pub trait RdkafkaHeaders: Headers + sealed::Sealed {
    /// The list as rdkafka's borrowed view of librdkafka's header list.
    fn as_borrowed_headers(&self) -> &BorrowedHeaders;
}

impl RdkafkaHeaders for BorrowedHeaders {
    fn as_borrowed_headers(&self) -> &BorrowedHeaders {
        self
    }
}

impl RdkafkaHeaders for OwnedHeaders {
    fn as_borrowed_headers(&self) -> &BorrowedHeaders {
        self.as_borrowed()
    }
}

/// librdkafka's header list behind `headers`: rdkafka's `BorrowedHeaders`
/// is a zero-sized view whose address is that list (it casts the list's
/// pointer to `&BorrowedHeaders` and back the same way).
fn native(headers: &BorrowedHeaders) -> *const rdsys::rd_kafka_headers_t {
    std::ptr::from_ref(headers).cast()
}

/// Header `index` as librdkafka stores it: the name's bytes (any bytes
/// but NUL) and the value (`None` for null), or `None` past the end.
fn raw_header_at(headers: &BorrowedHeaders, index: usize) -> Option<(&[u8], Option<&[u8]>)> {
    let mut name = std::ptr::null();
    let mut value = std::ptr::null();
    let mut size = 0usize;
    // SAFETY: `native(headers)` is a live header list for as long as
    // `headers` is borrowed; librdkafka only reads it and writes the three
    // out-pointers, or returns an error past the end.
    let err = unsafe {
        rdsys::rd_kafka_header_get_all(native(headers), index, &mut name, &mut value, &mut size)
    };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
        return None;
    }
    // SAFETY: librdkafka keeps each name NUL-terminated and each value
    // `size` bytes long, inside the list, which outlives the borrow.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    let value =
        (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
    Some((name, value))
}

/// Header `index`, or `None` when it does not exist or its name is not
/// UTF-8: checked here, before anything would unwrap it. Such a header
/// cannot be a trace context header (their names are ASCII), so skipping
/// it changes no extraction.
fn header_at(headers: &BorrowedHeaders, index: usize) -> Option<Header<'_, &[u8]>> {
    let (name, value) = raw_header_at(headers, index)?;
    let key = std::str::from_utf8(name).ok()?;
    Some(Header { key, value })
}

/// An rdkafka header list read once into name/value pairs, null values as
/// empty ones, for the crate's extraction.
#[derive(Debug, Default)]
struct HeaderList<'a> {
    entries: Vec<(&'a str, &'a [u8])>,
}

impl<'a> HeaderList<'a> {
    fn new<H: RdkafkaHeaders + ?Sized>(headers: &'a H) -> Self {
        let headers = headers.as_borrowed_headers();
        let count = headers.count();
        let mut entries = Vec::with_capacity(count);
        for index in 0..count {
            if let Some(header) = header_at(headers, index) {
                entries.push((header.key, header.value.unwrap_or_default()));
            }
        }
        Self { entries }
    }
}

impl HeaderMap for HeaderList<'_> {
    fn value(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().copied()
    }
}

/// [`OwnedHeaders`] being written: rdkafka's `insert` takes the list by
/// value, so it is held in an `Option` while it is rebuilt.
struct OwnedList {
    headers: Option<OwnedHeaders>,
}

impl OwnedList {
    fn new(headers: OwnedHeaders) -> Self {
        Self {
            headers: Some(headers),
        }
    }

    fn into_inner(self) -> OwnedHeaders {
        self.headers.unwrap_or_default()
    }

    fn headers(&self) -> Option<&OwnedHeaders> {
        self.headers.as_ref()
    }
}

impl HeaderMap for OwnedList {
    fn value(&self, key: &str) -> Option<&[u8]> {
        let headers = self.headers()?.as_borrowed();
        (0..headers.count())
            .rev()
            .filter_map(|index| header_at(headers, index))
            .find(|header| header.key == key)
            .map(|header| header.value.unwrap_or_default())
    }

    fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let headers = self.headers();
        let count = headers.map_or(0, |h| h.count());
        (0..count).filter_map(move |index| {
            let header = header_at(headers?.as_borrowed(), index)?;
            Some((header.key, header.value.unwrap_or_default()))
        })
    }
}

impl HeaderMapMut for OwnedList {
    /// Removes every header named `key` in place, through librdkafka (the
    /// rdkafka crate has no remove): every other header stays as it was,
    /// whatever its name's bytes, null values null, in order.
    fn remove(&mut self, key: &str) {
        let Some(headers) = &mut self.headers else {
            return;
        };
        // A name with a NUL cannot be in the list: librdkafka's names end there.
        let Ok(name) = CString::new(key) else {
            return;
        };
        let list = native(headers.as_borrowed()).cast_mut();
        // SAFETY: `list` is the header list `headers` owns, writable (made
        // by `rd_kafka_headers_new` or `_copy`), and `&mut` here, so nothing
        // reads it meanwhile; `name` is NUL-terminated. The result is only
        // "none of that name", which is fine.
        unsafe {
            rdsys::rd_kafka_header_remove(list, name.as_ptr());
        }
    }

    fn insert(&mut self, key: &str, value: String) {
        self.remove(key);
        let headers = self.headers.take().unwrap_or_default();
        self.headers = Some(headers.insert(Header {
            key,
            value: Some(&value),
        }));
    }
}

/// [`Injector`] writing into rdkafka [`OwnedHeaders`]: one value per name,
/// replacing any header of that name, as
/// [`propagation::HeaderInjector`](crate::propagation::HeaderInjector) does
/// in rskafka's map (and an empty `tracestate` is skipped likewise).
///
/// [`inject`] is the usual way in; this adapter is for a propagator of
/// your own.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut OwnedHeaders);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let mut list = OwnedList::new(std::mem::take(self.0));
        MapInjector(&mut list).set(key, value);
        *self.0 = list.into_inner();
    }
}

/// [`Extractor`] reading any rdkafka header list
/// ([`BorrowedHeaders`] of a received message, [`OwnedHeaders`]).
///
/// A value that is not UTF-8, or longer than its header's limit, reads as
/// absent; a null value reads as empty; of repeated names, the last one
/// counts. [`extract`] says why a context was unusable; this adapter is
/// for a propagator of your own.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(HeaderList<'a>);

impl<'a> HeaderExtractor<'a> {
    /// Reads `headers` once.
    pub fn new<H: RdkafkaHeaders + ?Sized>(headers: &'a H) -> Self {
        Self(HeaderList::new(headers))
    }
}

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        readable(key, self.0.value(key)?)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.entries.iter().map(|(k, _)| *k).collect()
    }
}

/// Injects `cx`'s span context and baggage into `headers`, keeping a
/// `traceparent` already there; as [`crate::propagation::inject`] does for
/// rskafka.
///
/// ```
/// use kafka_trace_harness::Injected;
/// use kafka_trace_harness::integrations::rdkafka::{extract, inject};
/// use opentelemetry::Context;
/// use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
/// use rdkafka::message::OwnedHeaders;
///
/// let parent = SpanContext::new(TraceId::from(7), SpanId::from(9), TraceFlags::SAMPLED, false, TraceState::NONE);
/// let mut headers = OwnedHeaders::new();
/// assert_eq!(inject(&Context::new().with_remote_span_context(parent), &mut headers), Injected::Written);
/// assert_eq!(extract(&headers).span_context().span_id(), SpanId::from(9));
/// ```
pub fn inject(cx: &Context, headers: &mut OwnedHeaders) -> Injected {
    inject_with(cx, headers, ExistingTraceparent::Keep)
}

/// [`inject`] with an explicit choice for an existing `traceparent`
/// ([`ExistingTraceparent::Replace`] also removes repeated and look-alike
/// `traceparent` and `tracestate` headers).
pub fn inject_with(
    cx: &Context,
    headers: &mut OwnedHeaders,
    existing: ExistingTraceparent,
) -> Injected {
    let mut list = OwnedList::new(std::mem::take(headers));
    let injected = inject_into(cx, &mut list, existing);
    *headers = list.into_inner();
    injected
}

/// Extracts a message's context from its headers on top of an empty
/// context; never panics. The same checks and problems as
/// [`crate::propagation::extract`].
///
/// ```
/// use kafka_trace_harness::ExtractProblem;
/// use kafka_trace_harness::integrations::rdkafka::extract;
/// use rdkafka::message::{Header, OwnedHeaders};
///
/// let headers = OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(&b"\xff\xfe"[..]) });
/// let extracted = extract(&headers);
/// assert_eq!(extracted.problem, Some(ExtractProblem::NotUtf8 { header: "traceparent".into() }));
/// ```
pub fn extract<H: RdkafkaHeaders + ?Sized>(headers: &H) -> Extracted {
    extract_with(&Context::new(), headers)
}

/// [`extract`] on top of `ambient`: an unusable context leaves `ambient`
/// (see [`crate::propagation::extract_with`]).
pub fn extract_with<H: RdkafkaHeaders + ?Sized>(ambient: &Context, headers: &H) -> Extracted {
    extract_from(ambient, &HeaderList::new(headers))
}

/// [`extract_with`] from a message, which may have no headers at all
/// ([`ExtractProblem::Missing`](crate::ExtractProblem::Missing)).
pub fn extract_message<M>(ambient: &Context, message: &M) -> Extracted
where
    M: Message<Headers: RdkafkaHeaders>,
{
    match message.headers() {
        Some(headers) => extract_with(ambient, headers),
        None => extract_from(ambient, &HeaderList::default()),
    }
}

/// Every header of `headers` as librdkafka stores it, in order: the name's
/// bytes (which Kafka does not require to be UTF-8) and the value (`None`
/// for null). Never panics, unlike rdkafka's [`Headers::iter`] on a name
/// that is not UTF-8.
///
/// ```
/// use kafka_trace_harness::integrations::rdkafka::header_entries;
/// use rdkafka::message::{Header, OwnedHeaders};
///
/// let headers = OwnedHeaders::new().insert(Header { key: "k", value: None::<&[u8]> });
/// assert_eq!(header_entries(&headers).collect::<Vec<_>>(), [(&b"k"[..], None)]);
/// ```
pub fn header_entries<H: RdkafkaHeaders + ?Sized>(
    headers: &H,
) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    let headers = headers.as_borrowed_headers();
    (0..headers.count()).filter_map(move |index| raw_header_at(headers, index))
}

/// Settings for an rdkafka producer of `broker`: its bootstrap servers,
/// and `message.timeout.ms` set to its
/// [`client_deadline`](Broker::client_deadline), so that a delivery report
/// always comes within the deadline. Add your service's own settings, then
/// `create()`.
pub fn producer_config(broker: &Broker) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set(
            "message.timeout.ms",
            broker.client_deadline().as_millis().max(1).to_string(),
        );
    config
}

/// Settings for an rdkafka consumer of `broker` in consumer group `group`:
/// its bootstrap servers, and `auto.offset.reset=earliest`, so that a
/// group new to a topic reads what was produced before it joined (a test
/// usually produces first). Add your service's own settings, then
/// `create()`.
pub fn consumer_config(broker: &Broker, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest");
    config
}

/// Span templates per topic, built on first use.
#[derive(Debug)]
struct Templates {
    operation: &'static str,
    fixed: Vec<KeyValue>,
    by_topic: Mutex<FxHashMap<String, Arc<SpanTemplate>>>,
}

impl Templates {
    fn new(operation: &'static str, fixed: Vec<KeyValue>) -> Self {
        Self {
            operation,
            fixed,
            by_topic: Mutex::default(),
        }
    }

    fn get(&self, topic: &str) -> Arc<SpanTemplate> {
        let mut by_topic = self.by_topic.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(template) = by_topic.get(topic) {
            return Arc::clone(template);
        }
        let template = Arc::new(SpanTemplate::new(self.operation, topic, &self.fixed));
        by_topic.insert(topic.to_owned(), Arc::clone(&template));
        template
    }
}

/// Why a [`TracedFutureProducer::send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// rdkafka could not queue the record, or the broker refused it.
    #[error("sending a record to topic {topic:?} on {bootstrap}: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// The producer's bootstrap servers.
        bootstrap: String,
        /// rdkafka's error.
        source: KafkaError,
        /// The record, headers included, to send again if you wish.
        message: Box<OwnedMessage>,
    },
    /// No delivery report came within the producer's deadline.
    #[error(
        "sending a record to topic {topic:?} on {bootstrap}: no delivery report within \
         {deadline:?} (the record may still be delivered; set the producer's \
         message.timeout.ms below the deadline to have librdkafka give up first)"
    )]
    Timeout {
        /// The topic.
        topic: String,
        /// The producer's bootstrap servers.
        bootstrap: String,
        /// The deadline that passed.
        deadline: Duration,
    },
}

impl SendError {
    /// The `error.type` recorded on the send span: librdkafka's error code
    /// name (`MessageTimedOut`, `UnknownTopicOrPartition` …), `timeout`,
    /// or `_OTHER`.
    pub fn error_type(&self) -> String {
        match self {
            Self::Kafka { source, .. } => match source.rdkafka_error_code() {
                Some(code) => format!("{code:?}"),
                None => "_OTHER".into(),
            },
            Self::Timeout { .. } => "timeout".into(),
        }
    }
}

/// An rdkafka [`FutureProducer`] whose sends are `send <topic>` PRODUCER
/// spans, with the span's context injected into the record's headers. A
/// span ends at delivery with `messaging.destination.partition.id` and
/// `messaging.kafka.offset`, or with `error.type` and an Error status.
///
/// The attributes are those of [`TracedProducer`](crate::TracedProducer)'s
/// spans; unlike it, this producer does not retry (librdkafka does, within
/// `message.timeout.ms`). See the [module](self) for an example.
pub struct TracedFutureProducer<C = rdkafka::client::DefaultClientContext, R = DefaultRuntime>
where
    C: ClientContext + 'static,
{
    producer: FutureProducer<C, R>,
    bootstrap: String,
    templates: Templates,
    tracer: SdkTracer,
    existing: ExistingTraceparent,
    deadline: Duration,
}

impl<C: ClientContext + 'static, R> fmt::Debug for TracedFutureProducer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedFutureProducer")
            .field("bootstrap", &self.bootstrap)
            .field("existing", &self.existing)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl TracedFutureProducer {
    /// Wraps your service's `producer`; `bootstrap` feeds the `server.*`
    /// attributes and error messages. Each send may take
    /// [`DEFAULT_CLIENT_DEADLINE`] (see [`deadline`](Self::deadline)).
    pub fn new(producer: FutureProducer, bootstrap: &str, tracer: SdkTracer) -> Self {
        Self::from_producer(producer, bootstrap, tracer)
    }
}

impl<C, R> TracedFutureProducer<C, R>
where
    C: ClientContext + 'static,
    R: AsyncRuntime,
{
    /// [`new`](TracedFutureProducer::new) for a producer with a client
    /// context or runtime of its own.
    pub fn from_producer(
        producer: FutureProducer<C, R>,
        bootstrap: &str,
        tracer: SdkTracer,
    ) -> Self {
        Self {
            producer,
            bootstrap: bootstrap.to_owned(),
            templates: Templates::new("send", server(bootstrap)),
            tracer,
            existing: ExistingTraceparent::Keep,
            deadline: DEFAULT_CLIENT_DEADLINE,
        }
    }

    /// How long one send may wait for its delivery report before it fails
    /// with [`SendError::Timeout`]. Default [`DEFAULT_CLIENT_DEADLINE`].
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// What to do with a `traceparent` already in a record's headers.
    /// Default [`ExistingTraceparent::Keep`].
    #[must_use]
    pub fn existing_traceparent(mut self, existing: ExistingTraceparent) -> Self {
        self.existing = existing;
        self
    }

    /// The wrapped producer (to flush it, or to send untraced).
    pub fn producer(&self) -> &FutureProducer<C, R> {
        &self.producer
    }

    /// Sends `record` in a `send <topic>` span that is a child of
    /// `parent`'s span, and waits for its delivery: the partition and
    /// offset, or why it failed.
    pub async fn send<K, P>(
        &self,
        parent: &Context,
        mut record: FutureRecord<'_, K, P>,
    ) -> Result<Delivery, SendError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let topic = record.topic.to_owned();
        let template = self.templates.get(&topic);
        let mut attributes = Vec::with_capacity(template.attributes.len() + 4);
        attributes.extend(template.attributes.iter().cloned());
        // Without a partition, the partitioner picks one: it is set at delivery.
        if let Some(partition) = record.partition {
            attributes.push(KeyValue::new(attr::PARTITION_ID, partition_id(partition)));
        }
        if let Some(key) = record.key {
            attributes.push(KeyValue::new(
                attr::MESSAGE_KEY,
                String::from_utf8_lossy(key.to_bytes()).into_owned(),
            ));
        }
        let span = self
            .tracer
            .span_builder(template.name.clone())
            .with_kind(SpanKind::Producer)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        let cx = parent.with_span(span);
        let mut headers = OwnedList::new(record.headers.take().unwrap_or_default());
        if inject_into(&cx, &mut headers, self.existing) == Injected::KeptExisting {
            cx.span()
                .add_event("kept the record's existing traceparent", Vec::new());
        }
        record.headers = Some(headers.into_inner());
        let partition_known = record.partition.is_some();

        let sent = self.producer.send(record, Timeout::After(self.deadline));
        let result = match tokio::time::timeout(self.deadline, sent).await {
            Ok(Ok(delivery)) => Ok(delivery),
            Ok(Err((source, message))) => Err(SendError::Kafka {
                topic,
                bootstrap: self.bootstrap.clone(),
                source,
                message: Box::new(message),
            }),
            Err(_) => Err(SendError::Timeout {
                topic,
                bootstrap: self.bootstrap.clone(),
                deadline: self.deadline,
            }),
        };
        let span = cx.span();
        match &result {
            Ok(delivery) => {
                if !partition_known {
                    span.set_attribute(KeyValue::new(
                        attr::PARTITION_ID,
                        partition_id(delivery.partition),
                    ));
                }
                span.set_attribute(KeyValue::new(attr::OFFSET, delivery.offset));
            }
            Err(e) => mark_failed(&span, e.error_type(), e.to_string()),
        }
        span.end();
        result
    }
}

/// Starts a `process <topic>` CONSUMER span for each message a service
/// receives, with any rdkafka consumer: the attributes, parent (or link)
/// and problem events of [`TracedConsumer`](crate::TracedConsumer)'s
/// spans. Offsets stay rdkafka's business (commit as your service does).
///
/// With a [`BaseConsumer`](rdkafka::consumer::BaseConsumer), whose `poll`
/// blocks, poll in `tokio::task::spawn_blocking` (or a thread) with a
/// deadline:
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::{Duration, Instant};
/// use kafka_trace_harness::integrations::rdkafka::{ConsumerTracer, consumer_config};
/// use kafka_trace_harness::{Broker, SpanCapture, TracedProducer};
/// use opentelemetry::Context;
/// use rdkafka::consumer::{BaseConsumer, Consumer};
///
/// let broker = Broker::builder().start().await?;
/// let topic = broker.create_unique_topic("orders", 1).await?;
/// let capture = SpanCapture::new();
/// let record = rskafka::record::Record { key: None, value: Some(b"{}".to_vec()), headers: Default::default(), timestamp: chrono::Utc::now() };
/// TracedProducer::connect(&broker, capture.tracer("shop")).await?.send(&Context::new(), &topic, 0, record).await?;
///
/// let tracer = ConsumerTracer::new("audit", broker.bootstrap_servers(), capture.tracer("audit"));
/// let consumer: BaseConsumer = consumer_config(&broker, "audit").create()?;
/// consumer.subscribe(&[&topic])?;
/// let waited_for = format!("a message on {topic} within 10 s");
/// tokio::task::spawn_blocking(move || -> Result<(), String> {
///     let deadline = Instant::now() + Duration::from_secs(10);
///     while Instant::now() < deadline {
///         if let Some(message) = consumer.poll(Duration::from_millis(50)) {
///             let message = message.map_err(|e| format!("waiting for {waited_for}: {e}"))?;
///             tracer.process(&message).finish();
///             return Ok(());
///         }
///     }
///     Err(format!("no {waited_for}"))
/// })
/// .await??;
/// let forest = capture.forest();
/// let process = forest.named(&format!("process {topic}")).next().expect("a process span");
/// assert_eq!(process.parent().expect("a parent").name(), format!("send {topic}"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ConsumerTracer {
    group: String,
    templates: Templates,
    tracer: SdkTracer,
    parent: ConsumerParent,
}

impl ConsumerTracer {
    /// Process spans of consumer group `group` (the
    /// `messaging.consumer.group.name`), recorded with `tracer`;
    /// `bootstrap` feeds the `server.*` attributes. Spans are children of
    /// each message's context ([`ConsumerParent::Extracted`]).
    pub fn new(group: &str, bootstrap: &str, tracer: SdkTracer) -> Self {
        let mut fixed = server(bootstrap);
        fixed.push(KeyValue::new(attr::CONSUMER_GROUP, shared(group)));
        Self {
            group: group.to_owned(),
            templates: Templates::new("process", fixed),
            tracer,
            parent: ConsumerParent::Extracted,
        }
    }

    /// Parent or link. Default [`ConsumerParent::Extracted`].
    #[must_use]
    pub fn parent(mut self, parent: ConsumerParent) -> Self {
        self.parent = parent;
        self
    }

    /// The consumer group, reported as `messaging.consumer.group.name`.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Starts the process span of `message`: a child of (or, link-only,
    /// linked from) the message's context, else a root.
    pub fn process<M>(&self, message: &M) -> ConsumedMessage
    where
        M: Message<Headers: RdkafkaHeaders>,
    {
        self.process_in(&Context::new(), message)
    }

    /// [`process`](Self::process) with `ambient` as the fallback parent
    /// (and the parent in link-only mode).
    pub fn process_in<M>(&self, ambient: &Context, message: &M) -> ConsumedMessage
    where
        M: Message<Headers: RdkafkaHeaders>,
    {
        let extracted = extract_message(ambient, message);
        let template = self.templates.get(message.topic());
        let mut attributes =
            template.attributes(partition_id(message.partition()), message.key(), 2);
        attributes.push(KeyValue::new(attr::OFFSET, message.offset()));
        if let Some(problem) = &extracted.problem {
            attributes.push(KeyValue::new(attr::CONTEXT_PROBLEM, problem.kind()));
        }
        let mut builder = self
            .tracer
            .span_builder(template.name.clone())
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes);
        let parent = match self.parent {
            ConsumerParent::Extracted => &extracted.context,
            ConsumerParent::LinkOnly => {
                if extracted.is_usable() {
                    builder =
                        builder.with_links(vec![Link::with_context(extracted.span_context())]);
                }
                ambient
            }
        };
        let mut span = builder.start_with_context(&self.tracer, parent);
        for (name, attributes) in extraction_events(&extracted) {
            span.add_event(name, attributes);
        }
        // Keeps the message's baggage; the process span becomes the active span.
        let context = extracted.context.with_span(span);
        ConsumedMessage {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            extracted,
            context,
        }
    }
}

/// A message's open `process` span, from [`ConsumerTracer::process`]. The
/// span ends on [`finish`](Self::finish) or when this (and every clone of
/// its context) is dropped.
#[derive(Debug)]
pub struct ConsumedMessage {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// What extraction found in the headers.
    pub extracted: Extracted,
    context: Context,
}

impl ConsumedMessage {
    /// The context with the `process` span active and the message's
    /// baggage: pass it to [`TracedFutureProducer::send`] (or
    /// [`TracedProducer::send`](crate::TracedProducer::send)) so downstream
    /// sends become children of the process span.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The process span's context.
    pub fn span_context(&self) -> SpanContext {
        self.context.span().span_context().clone()
    }

    /// Marks the process span failed (`error.type` and Error status).
    pub fn fail(&self, error_type: &str, description: impl Into<String>) {
        mark_failed(
            &self.context.span(),
            error_type.to_owned(),
            description.into(),
        );
    }

    /// Adds an attribute to the process span.
    pub fn set_attribute(&self, attribute: KeyValue) {
        self.context.span().set_attribute(attribute);
    }

    /// Links the process span to `target`.
    pub fn add_link(&self, target: SpanContext) {
        self.context.span().add_link(target, Vec::new());
    }

    /// Ends the process span.
    pub fn finish(self) {
        self.context.span().end();
    }
}
