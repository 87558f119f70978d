//! The batching traced producer: one `send <topic>` span per record, one
//! produce request per batch of records for the same partition.

use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::SdkTracer;
use rskafka::client::Client;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::Record;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::attributes::{SpanTemplate, attr, mark_failed, partition_id, server};
use super::connect;
use super::retry::{
    SEND_ATTEMPT_FAILED_EVENT, failed_attempt, is_transient_error, retry_backoff, send_error_type,
};
use crate::broker::{Broker, DEFAULT_CLIENT_DEADLINE};
use crate::error::{Error, Result};
use crate::propagation::{ExistingTraceparent, Injected, inject_with};

/// Default of [`BatchingTracedProducerBuilder::linger`]: librdkafka's
/// `linger.ms` default.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// Longest [`BatchingTracedProducerBuilder::linger`]: librdkafka's bound
/// of `linger.ms` (15 minutes).
pub const MAX_LINGER: Duration = Duration::from_secs(15 * 60);
/// Default of [`BatchingTracedProducerBuilder::max_batch_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Default of [`BatchingTracedProducerBuilder::max_batch_records`]:
/// librdkafka's `batch.num.messages` default.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 10_000;

/// Kafka's record batch header (v2), counted once per batch so that a
/// full batch's wire size stays within `max_batch_bytes`.
const BATCH_OVERHEAD: usize = 61;

/// Settings for a [`BatchingTracedProducer`]; every default is stated on
/// its setter.
#[derive(Debug, Clone)]
#[must_use]
pub struct BatchingTracedProducerBuilder {
    linger: Duration,
    max_batch_bytes: usize,
    max_batch_records: usize,
    deadline: Option<Duration>,
    existing: ExistingTraceparent,
}

impl Default for BatchingTracedProducerBuilder {
    fn default() -> Self {
        Self {
            linger: DEFAULT_LINGER,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            deadline: None,
            existing: ExistingTraceparent::Keep,
        }
    }
}

impl BatchingTracedProducerBuilder {
    /// How long a partition's batch waits for more records after its first
    /// one before it is sent. Default [`DEFAULT_LINGER`] (5 ms, like
    /// librdkafka's `linger.ms`). Zero sends whatever is queued at once;
    /// a longer one than [`MAX_LINGER`] is taken as [`MAX_LINGER`].
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger.min(MAX_LINGER);
        self
    }

    /// A batch is sent once it holds this many bytes (an upper bound of the
    /// records' wire size, batch header included); a record that would
    /// cross it starts the next batch, and a record larger than it goes
    /// alone. Default [`DEFAULT_MAX_BATCH_BYTES`] (1 MiB).
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes.max(1);
        self
    }

    /// A batch is sent once it holds this many records. Default
    /// [`DEFAULT_MAX_BATCH_RECORDS`] (10,000, like librdkafka's
    /// `batch.num.messages`); at least 1.
    pub fn max_batch_records(mut self, records: usize) -> Self {
        self.max_batch_records = records.max(1);
        self
    }

    /// How long a record may take from [`send`](BatchingTracedProducer::send)
    /// to its acknowledgement, waiting in its batch and retries included,
    /// before it fails with [`Error::Timeout`]. Default: the broker's
    /// [`client_deadline`](Broker::client_deadline) for
    /// [`build`](Self::build), [`DEFAULT_CLIENT_DEADLINE`] for
    /// [`build_on`](Self::build_on).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// What to do with a `traceparent` already in a record's headers.
    /// Default [`ExistingTraceparent::Keep`].
    pub fn existing_traceparent(mut self, existing: ExistingTraceparent) -> Self {
        self.existing = existing;
        self
    }

    /// A producer on a new client of `broker`, recording with `tracer`.
    pub fn build(
        self,
        broker: &Broker,
        tracer: SdkTracer,
    ) -> impl Future<Output = Result<BatchingTracedProducer>> {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow(async move {
            let deadline = self.deadline.unwrap_or(broker.client_deadline());
            // Single attempts: the producer retries itself, so that each
            // failed attempt shows on the spans.
            let client = broker.single_attempt_client().await?;
            Ok(self
                .deadline(deadline)
                .build_on(client, broker.bootstrap_servers(), tracer))
        })
    }

    /// A producer on an existing client; `bootstrap` only feeds the
    /// `server.*` attributes and error messages. The client's own retries
    /// happen inside each of the producer's attempts.
    pub fn build_on(
        self,
        client: Client,
        bootstrap: &str,
        tracer: SdkTracer,
    ) -> BatchingTracedProducer {
        BatchingTracedProducer {
            shared: Arc::new(Shared {
                client,
                bootstrap: bootstrap.to_owned(),
                server: server(bootstrap),
                tracer,
                existing: self.existing,
                deadline: self.deadline.unwrap_or(DEFAULT_CLIENT_DEADLINE),
                linger: self.linger,
                max_batch_bytes: self.max_batch_bytes,
                max_batch_records: self.max_batch_records,
                stats: Counters::default(),
            }),
            routes: std::sync::Mutex::default(),
        }
    }
}

/// Produces records like [`TracedProducer`](crate::TracedProducer), one
/// `send <topic>` PRODUCER span per record with its context injected into
/// the record's headers, but sends the records of one partition together:
/// one produce request per batch.
///
/// Each partition has a background task that collects records until the
/// batch has lingered [`linger`](BatchingTracedProducerBuilder::linger), or
/// holds [`max_batch_bytes`](BatchingTracedProducerBuilder::max_batch_bytes)
/// or [`max_batch_records`](BatchingTracedProducerBuilder::max_batch_records),
/// then produces it in one request. Each span ends at the acknowledgement
/// with its record's offset, or with `error.type` and an Error status. A
/// batch that fails transiently is retried within the deadline, each failed
/// attempt a `send attempt failed` event on every span of the batch.
///
/// **Dropping the producer** stops its tasks: every record not yet
/// acknowledged fails, its future with an error saying the producer was
/// dropped and its span with `error.type = producer_dropped` (a record
/// whose request was in flight may still have been stored). Call
/// [`flush`](Self::flush) first to wait for them.
///
/// Each partition has one batch in flight at a time, so a retried batch
/// never lands after a later one: offsets follow the order of the calls.
/// Records queue without bound while a batch is in flight; the deadline
/// bounds how long each may wait.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kafka_trace_harness::Result<()> {
/// use kafka_trace_harness::traced::BatchingTracedProducer;
/// use kafka_trace_harness::{Broker, SpanCapture};
/// use opentelemetry::Context;
/// use rskafka::record::Record;
///
/// let broker = Broker::builder().start().await?;
/// let topic = broker.create_unique_topic("trades", 1).await?;
/// let capture = SpanCapture::new();
/// let producer = BatchingTracedProducer::builder()
///     .build(&broker, capture.tracer("datagen"))
///     .await?;
///
/// let record = |n: u8| Record { key: None, value: Some(vec![n]), headers: Default::default(), timestamp: chrono::Utc::now() };
/// // Started together, sent together: one produce request for both.
/// let first = producer.send(&Context::new(), &topic, 0, record(1));
/// let second = producer.send(&Context::new(), &topic, 0, record(2));
/// assert_eq!((first.await?, second.await?), (0, 1));
/// producer.flush().await?;
/// assert_eq!(producer.stats().produce_requests, 1);
/// assert_eq!(capture.forest().named(&format!("send {topic}")).count(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BatchingTracedProducer {
    shared: Arc<Shared>,
    /// Per topic: its span template and its partitions' queues. A std
    /// mutex held only for lookups and enqueueing, never across an await.
    routes: std::sync::Mutex<FxHashMap<String, Route>>,
}

/// What the partition tasks share with the producer.
#[derive(Debug)]
struct Shared {
    client: Client,
    bootstrap: String,
    /// `server.*` attributes, parsed once from `bootstrap`.
    server: Vec<KeyValue>,
    tracer: SdkTracer,
    existing: ExistingTraceparent,
    deadline: Duration,
    linger: Duration,
    max_batch_bytes: usize,
    max_batch_records: usize,
    stats: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    produce_requests: AtomicU64,
    batches_acknowledged: AtomicU64,
    records_acknowledged: AtomicU64,
    records_failed: AtomicU64,
}

/// What a [`BatchingTracedProducer`] has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchingStats {
    /// Produce requests sent, failed attempts included.
    pub produce_requests: u64,
    /// Batches the broker acknowledged.
    pub batches_acknowledged: u64,
    /// Records the broker acknowledged.
    pub records_acknowledged: u64,
    /// Records that failed (their futures returned an error).
    pub records_failed: u64,
}

#[derive(Debug)]
struct Route {
    template: SpanTemplate,
    partitions: FxHashMap<i32, PartitionQueue>,
}

/// A partition's id attribute, the queue to its task, and the task.
#[derive(Debug)]
struct PartitionQueue {
    id: StringValue,
    label: Arc<Label>,
    queue: mpsc::UnboundedSender<Message>,
    task: JoinHandle<()>,
}

/// Where a record goes, for error messages.
#[derive(Debug)]
struct Label {
    topic: String,
    partition: i32,
    bootstrap: String,
}

impl Label {
    /// The error of a record whose producer was dropped before its
    /// acknowledgement.
    fn dropped(&self) -> Error {
        Error::Topic {
            topic: self.topic.clone(),
            bootstrap: self.bootstrap.clone(),
            reason: format!(
                "partition {}: the BatchingTracedProducer was dropped before the record was \
                 acknowledged (call flush() before dropping it); it may or may not be stored",
                self.partition
            ),
        }
    }
}

enum Message {
    Record(Box<Record>, Pending),
    /// Send what is queued now and answer once it is acknowledged or failed.
    Flush(oneshot::Sender<()>),
}

/// A record's span and the answer its caller awaits. Dropped unanswered
/// (the producer dropped, its task aborted), it fails both: nothing lost
/// is silent.
struct Pending {
    cx: Context,
    reply: Option<oneshot::Sender<Result<i64>>>,
    enqueued: Instant,
    size: usize,
    label: Arc<Label>,
}

impl Pending {
    fn succeed(mut self, offset: i64, attempts: u32) {
        let span = self.cx.span();
        if attempts > 1 {
            span.set_attribute(KeyValue::new(attr::SEND_ATTEMPTS, i64::from(attempts)));
        }
        span.set_attribute(KeyValue::new(attr::OFFSET, offset));
        span.end();
        if let Some(reply) = self.reply.take() {
            // The caller may have dropped its future: nothing to tell.
            let _ = reply.send(Ok(offset));
        }
    }

    fn fail(mut self, error_type: &str, error: Error, attempts: u32) {
        self.fail_in_place(error_type, error, attempts);
    }

    fn fail_in_place(&mut self, error_type: &str, error: Error, attempts: u32) {
        let span = self.cx.span();
        if attempts > 1 {
            span.set_attribute(KeyValue::new(attr::SEND_ATTEMPTS, i64::from(attempts)));
        }
        mark_failed(&span, error_type.to_owned(), error.to_string());
        span.end();
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(error));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.reply.is_some() {
            let error = self.label.dropped();
            self.fail_in_place("producer_dropped", error, 0);
        }
    }
}

impl BatchingTracedProducer {
    /// Settings, starting from the defaults.
    pub fn builder() -> BatchingTracedProducerBuilder {
        BatchingTracedProducerBuilder::default()
    }

    /// Sends `record` to `topic`/`partition` in a `send <topic>` span that
    /// is a child of `parent`'s span; the future resolves to the record's
    /// offset.
    ///
    /// The span starts and the record is queued when `send` is called, not
    /// when the future is first polled: records sent to one partition are
    /// stored in the order of the calls, and many sends can be started
    /// before any is awaited. The future resolves within the deadline (plus
    /// the linger) of the call.
    pub fn send(
        &self,
        parent: &Context,
        topic: &str,
        partition: i32,
        record: Record,
    ) -> impl Future<Output = Result<i64>> + Send + use<> {
        self.send_linked(parent, topic, partition, record, Vec::new())
    }

    /// Like [`send`](Self::send), with `links` on the send span.
    pub fn send_linked(
        &self,
        parent: &Context,
        topic: &str,
        partition: i32,
        mut record: Record,
        links: Vec<Link>,
    ) -> impl Future<Output = Result<i64>> + Send + use<> {
        let shared = &self.shared;
        let (tx, rx) = oneshot::channel();
        // Held until the record is queued (no await): calls to one
        // partition queue their records in call order.
        let mut routes = self.routes();
        let Route {
            template,
            partitions,
        } = self.route(&mut routes, topic);
        let queued = self.partition_queue(partitions, topic, partition);
        let id = queued
            .as_ref()
            .map_or_else(|_| partition_id(partition), |q| q.id.clone());
        let span = shared
            .tracer
            .span_builder(template.name.clone())
            .with_kind(SpanKind::Producer)
            // One more for the offset, set once the broker acknowledges.
            .with_attributes(template.attributes(id, record.key.as_deref(), 1))
            .with_links(links)
            .start_with_context(&shared.tracer, parent);
        let cx = parent.with_span(span);
        if inject_with(&cx, &mut record.headers, shared.existing) == Injected::KeptExisting {
            cx.span()
                .add_event("kept the record's existing traceparent", Vec::new());
        }
        let label = match &queued {
            Ok(q) => Arc::clone(&q.label),
            Err(label) => Arc::clone(label),
        };
        let pending = Pending {
            cx,
            reply: Some(tx),
            enqueued: Instant::now(),
            size: record_size(&record),
            label: Arc::clone(&label),
        };
        match queued {
            // A closed queue hands the message back; dropping it fails the
            // record through `Pending`'s drop.
            Ok(q) => drop(q.queue.send(Message::Record(Box::new(record), pending))),
            Err(_) => {
                let error = Error::Topic {
                    topic: label.topic.clone(),
                    bootstrap: label.bootstrap.clone(),
                    reason: format!(
                        "partition {partition}: the BatchingTracedProducer needs a tokio \
                         runtime to send"
                    ),
                };
                pending.fail("no_runtime", error, 0);
            }
        }
        drop(routes);
        async move { rx.await.unwrap_or_else(|_| Err(label.dropped())) }
    }

    /// Waits until every record sent before the call is acknowledged or
    /// has failed (each record's own future says which), sending partly
    /// filled batches at once instead of letting them linger.
    ///
    /// Fails with [`Error::Timeout`] after the deadline plus the linger
    /// (records keep their own deadlines and futures).
    pub async fn flush(&self) -> Result<()> {
        let waits: Vec<_> = {
            let routes = self.routes();
            routes
                .values()
                .flat_map(|route| route.partitions.values())
                .filter_map(|queued| {
                    let (tx, rx) = oneshot::channel();
                    queued.queue.send(Message::Flush(tx)).ok().map(|_| rx)
                })
                .collect()
        };
        let limit = self.shared.deadline.saturating_add(self.shared.linger);
        // A dropped answer means the task is gone, and its records failed.
        let all = futures::future::join_all(waits);
        tokio::time::timeout(limit, all)
            .await
            .map(drop)
            .map_err(|_| Error::Timeout {
                what: "flushing the BatchingTracedProducer's pending records".into(),
                bootstrap: self.shared.bootstrap.clone(),
                timeout: limit,
            })
    }

    /// What the producer has done so far: produce requests, batches and
    /// records acknowledged, records failed.
    pub fn stats(&self) -> BatchingStats {
        let c = &self.shared.stats;
        BatchingStats {
            produce_requests: c.produce_requests.load(Ordering::Relaxed),
            batches_acknowledged: c.batches_acknowledged.load(Ordering::Relaxed),
            records_acknowledged: c.records_acknowledged.load(Ordering::Relaxed),
            records_failed: c.records_failed.load(Ordering::Relaxed),
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, FxHashMap<String, Route>> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `topic`'s route, made on first use.
    fn route<'r>(&self, routes: &'r mut FxHashMap<String, Route>, topic: &str) -> &'r mut Route {
        if !routes.contains_key(topic) {
            let route = Route {
                template: SpanTemplate::new("send", topic, &self.shared.server),
                partitions: FxHashMap::default(),
            };
            routes.insert(topic.to_owned(), route);
        }
        let Some(route) = routes.get_mut(topic) else {
            unreachable!("inserted above")
        };
        route
    }

    /// The partition's queue, starting its task on first use; `Err` with
    /// the partition's label when no tokio runtime can run the task.
    fn partition_queue<'r>(
        &self,
        partitions: &'r mut FxHashMap<i32, PartitionQueue>,
        topic: &str,
        partition: i32,
    ) -> std::result::Result<&'r PartitionQueue, Arc<Label>> {
        let vacant = match partitions.entry(partition) {
            Entry::Occupied(queued) => return Ok(queued.into_mut()),
            Entry::Vacant(vacant) => vacant,
        };
        let label = Arc::new(Label {
            topic: topic.to_owned(),
            partition,
            bootstrap: self.shared.bootstrap.clone(),
        });
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(label);
        };
        let (queue, rx) = mpsc::unbounded_channel();
        let task = runtime.spawn(run_partition(
            Arc::clone(&self.shared),
            Arc::clone(&label),
            rx,
        ));
        Ok(vacant.insert(PartitionQueue {
            id: partition_id(partition),
            label,
            queue,
            task,
        }))
    }
}

impl Drop for BatchingTracedProducer {
    fn drop(&mut self) {
        // Stopping the tasks drops their records' `Pending`s, which fail
        // each record's future and span: documented on the type.
        for route in self.routes().values() {
            for queued in route.partitions.values() {
                queued.task.abort();
            }
        }
    }
}

/// An upper bound of `record`'s size in a v2 record batch: its bytes plus
/// the largest varints around them.
fn record_size(record: &Record) -> usize {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum();
    41 + len(&record.key) + len(&record.value) + headers
}

/// One partition's task: collects a batch, produces it, answers its
/// records, and again, until the producer is dropped.
async fn run_partition(
    shared: Arc<Shared>,
    label: Arc<Label>,
    mut queue: mpsc::UnboundedReceiver<Message>,
) {
    let mut client: Option<PartitionClient> = None;
    // A record that did not fit in the previous batch starts the next.
    let mut carried: Option<(Box<Record>, Pending)> = None;
    loop {
        let (record, pending) = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(Message::Record(record, pending)) => (record, pending),
                // Nothing queued before it: flushed already.
                Some(Message::Flush(done)) => {
                    let _ = done.send(());
                    continue;
                }
                None => return,
            },
        };
        // Lingering from the record's send, as librdkafka does: a record
        // that queued behind the previous batch has waited already.
        let linger_end = pending.enqueued + shared.linger;
        let mut bytes = BATCH_OVERHEAD + pending.size;
        let mut records = vec![*record];
        let mut batch = vec![pending];
        let mut flushed = None;
        while batch.len() < shared.max_batch_records && bytes < shared.max_batch_bytes {
            // `timeout_at` polls the queue first, so a zero linger still
            // takes what is already queued.
            let Ok(Some(message)) = tokio::time::timeout_at(linger_end, queue.recv()).await else {
                break;
            };
            match message {
                Message::Record(record, pending) => {
                    if bytes + pending.size > shared.max_batch_bytes {
                        carried = Some((record, pending));
                        break;
                    }
                    bytes += pending.size;
                    records.push(*record);
                    batch.push(pending);
                }
                Message::Flush(done) => {
                    flushed = Some(done);
                    break;
                }
            }
        }
        produce_batch(&shared, &label, &mut client, records, batch).await;
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

/// Produces one batch in one request, retrying transient failures within
/// the deadline of its oldest record, and answers every record.
async fn produce_batch(
    shared: &Shared,
    label: &Label,
    client: &mut Option<PartitionClient>,
    records: Vec<Record>,
    batch: Vec<Pending>,
) {
    let oldest = batch.iter().map(|p| p.enqueued).min();
    let deadline_at = oldest.unwrap_or_else(Instant::now) + shared.deadline;
    let mut attempt = 1u32;
    let mut last_error: Option<Error> = None;
    let outcome = loop {
        let remaining = deadline_at.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            // The deadline passed before this attempt could start.
            attempt -= 1;
            break Err(last_error);
        }
        // Cloned: a retry sends the same records, the same headers (one
        // traceparent each).
        let try_once = attempt_once(shared, label, client, records.clone());
        let error = match tokio::time::timeout(remaining, try_once).await {
            Ok(Ok(offsets)) => break Ok(offsets),
            Ok(Err(error)) => error,
            Err(_) => break Err(last_error),
        };
        let backoff = retry_backoff(attempt);
        if !is_transient_error(&error) {
            last_error = Some(error);
            break Err(last_error);
        }
        if Instant::now() + backoff >= deadline_at {
            last_error = Some(error);
            break Err(last_error);
        }
        // Another attempt fits in the deadline: say so on every span.
        let event = failed_attempt(attempt, &error);
        for pending in &batch {
            pending
                .cx
                .span()
                .add_event(SEND_ATTEMPT_FAILED_EVENT, event.clone());
        }
        last_error = Some(error);
        tokio::time::sleep(backoff).await;
        attempt += 1;
    };
    let stats = &shared.stats;
    match outcome {
        Ok(offsets) if offsets.len() == batch.len() => {
            stats.batches_acknowledged.fetch_add(1, Ordering::Relaxed);
            stats
                .records_acknowledged
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for (pending, offset) in batch.into_iter().zip(offsets) {
                pending.succeed(offset, attempt);
            }
        }
        Ok(offsets) => {
            stats
                .records_failed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let reason = format!(
                "partition {}: the broker acknowledged a batch of {} records with {} offsets",
                label.partition,
                batch.len(),
                offsets.len()
            );
            for pending in batch {
                let error = Error::Topic {
                    topic: label.topic.clone(),
                    bootstrap: label.bootstrap.clone(),
                    reason: reason.clone(),
                };
                pending.fail("invalid_response", error, attempt);
            }
        }
        Err(last) => {
            stats
                .records_failed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let n = batch.len();
            let deadline = shared.deadline;
            let (error_type, make_error): (String, Box<dyn Fn() -> Error + Send>) = match last {
                Some(error) if !is_transient_error(&error) => {
                    let reason = format!(
                        "partition {}: a batch of {n} record(s) failed on attempt {attempt} \
                         with an error that is not retried (deadline {deadline:?}): {error}",
                        label.partition
                    );
                    let (topic, bootstrap) = (label.topic.clone(), label.bootstrap.clone());
                    (
                        send_error_type(&error),
                        Box::new(move || Error::Topic {
                            topic: topic.clone(),
                            bootstrap: bootstrap.clone(),
                            reason: reason.clone(),
                        }),
                    )
                }
                last => {
                    let what = format!(
                        "sending a batch of {n} record(s) to topic {:?} partition {} \
                         ({attempt} attempt(s); last: {})",
                        label.topic,
                        label.partition,
                        last.as_ref().map_or_else(
                            || "still waiting for the broker's answer".to_owned(),
                            ToString::to_string
                        )
                    );
                    let bootstrap = label.bootstrap.clone();
                    (
                        last.as_ref()
                            .map_or_else(|| "timeout".into(), send_error_type),
                        Box::new(move || Error::Timeout {
                            what: what.clone(),
                            bootstrap: bootstrap.clone(),
                            timeout: deadline,
                        }),
                    )
                }
            };
            for pending in batch {
                pending.fail(&error_type, make_error(), attempt);
            }
        }
    }
}

/// One produce request, connecting the partition first if needed.
async fn attempt_once(
    shared: &Shared,
    label: &Label,
    client: &mut Option<PartitionClient>,
    records: Vec<Record>,
) -> Result<Vec<i64>> {
    let client = match client {
        Some(client) => client,
        None => client.insert(connect_partition(shared, label).await?),
    };
    shared
        .stats
        .produce_requests
        .fetch_add(1, Ordering::Relaxed);
    // rskafka's futures are deep: behind a pointer (crate::shallow).
    crate::shallow::rskafka_calls::produce(client, records, Compression::NoCompression)
        .await
        .map_err(|source| client_error(label, source))
}

/// A client for the label's partition, after checking that it exists.
async fn connect_partition(shared: &Shared, label: &Label) -> Result<PartitionClient> {
    connect::partition_client(
        &shared.client,
        &label.bootstrap,
        &label.topic,
        label.partition,
    )
    .await
}

/// rskafka's `source`, or a topic error when the topic does not exist.
fn client_error(label: &Label, source: rskafka::client::error::Error) -> Error {
    connect::client_error(&label.topic, &label.bootstrap, source)
}
