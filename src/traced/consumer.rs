//! The traced consumer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::SdkTracer;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use rustc_hash::FxHashMap;

use super::attributes::{
    SpanTemplate, attr, extraction_events, mark_failed, partition_id, server, shared,
};
use super::offsets::{OffsetStore, StartFrom};
use super::retry::{is_retriable_read_error, retry_backoff};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::propagation::{Extracted, extract_with};

/// How a `process` span relates to the context found in its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConsumerParent {
    /// The record's context is the parent (the default).
    #[default]
    Extracted,
    /// The span is a child of the ambient context (a root by default) and
    /// links to the record's context.
    LinkOnly,
}

/// Settings for a [`TracedConsumer`]; every default is set in
/// [`TracedConsumer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct TracedConsumerBuilder {
    group: String,
    topic: String,
    start: StartFrom,
    parent: ConsumerParent,
    max_wait: Option<Duration>,
    max_partition_records: usize,
    store: Option<OffsetStore>,
    deadline: Option<Duration>,
}

/// Name of the event on the first `process` span of a partition whose
/// head the broker deleted before a consumer starting from
/// [`StartFrom::Earliest`] could read it (see
/// [`TracedConsumer::deleted_unread`]). Its attributes: the partition
/// ([`attr::PARTITION_ID`]), [`DELETED_OFFSET_FIRST`],
/// [`DELETED_OFFSET_LAST`] and [`DELETED_COUNT`].
pub const RECORDS_DELETED_EVENT: &str = "records deleted";
/// First offset the broker deleted unread (on [`RECORDS_DELETED_EVENT`]).
pub const DELETED_OFFSET_FIRST: &str = "messaging.kafka.deleted.offset.first";
/// Last offset the broker deleted unread (on [`RECORDS_DELETED_EVENT`]).
pub const DELETED_OFFSET_LAST: &str = "messaging.kafka.deleted.offset.last";
/// How many records of the partition the broker deleted unread: on
/// [`RECORDS_DELETED_EVENT`], and as an attribute of the span it is on.
pub const DELETED_COUNT: &str = "messaging.kafka.deleted.count";

/// Default of [`TracedConsumerBuilder::max_wait`], for a broker that
/// answers a fetch as soon as records arrive.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(500);

/// Default of [`TracedConsumerBuilder::max_wait`] for the embedded broker
/// without its front, which answers an empty fetch only when the wait
/// runs out.
const LATE_ANSWER_MAX_WAIT: Duration = Duration::from_millis(50);

/// Default of [`TracedConsumerBuilder::max_partition_records`].
pub const DEFAULT_MAX_PARTITION_RECORDS: usize = 10_000;

impl TracedConsumerBuilder {
    /// How long building, one [`poll`](TracedConsumer::poll) or one fetch
    /// inside [`consume`](TracedConsumer::consume) may take before it fails
    /// with [`Error::Timeout`] naming the consumer and topic. Default: the
    /// broker's [`client_deadline`](Broker::client_deadline).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Resume from, and record into, `store`. Default: none, so every new
    /// consumer starts per [`start_from`](Self::start_from).
    pub fn offset_store(mut self, store: OffsetStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Where to start. Default [`StartFrom::Earliest`].
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Parent or link. Default [`ConsumerParent::Extracted`].
    pub fn parent(mut self, parent: ConsumerParent) -> Self {
        self.parent = parent;
        self
    }

    /// How long one fetch waits on an empty partition. Default
    /// [`DEFAULT_MAX_WAIT`] (500 ms, Kafka's `fetch.max.wait.ms`): the
    /// broker answers as soon as records arrive (Kafka does, and so does
    /// the embedded broker's front), so a longer wait costs no latency and
    /// an idle consumer asks less often. Each partition then fetches on
    /// its own connection, and a poll returns as soon as one partition
    /// brings records (the others keep waiting for the next poll), so that
    /// a waiting partition never holds up another; an empty poll still
    /// means every partition was empty. Against the embedded
    /// broker without its front (`stall_free(false)`), which answers an
    /// empty fetch only when the wait runs out, the default is 50 ms. A
    /// wait is at most half the [`deadline`](Self::deadline), so that an
    /// idle poll ends empty instead of failing.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// At most this many records per partition in one poll (more stay on
    /// the broker for the next): bounds the records, and open `process`
    /// spans, a poll hands out. Default [`DEFAULT_MAX_PARTITION_RECORDS`];
    /// at least 1.
    pub fn max_partition_records(mut self, records: usize) -> Self {
        self.max_partition_records = records.max(1);
        self
    }

    /// Connects to every partition of the topic and finds the start
    /// offsets, within the deadline. Any OpenTelemetry [`Tracer`] records
    /// the spans (see [`TracedProducer`](crate::TracedProducer)).
    pub fn build<'a, T>(
        self,
        broker: &'a Broker,
        tracer: T,
    ) -> impl Future<Output = Result<TracedConsumer<T>>> + 'a
    where
        T: Tracer<Span: Send + Sync + 'static> + Send + Sync + 'a,
    {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow(async move {
            let deadline = self.deadline.unwrap_or(broker.client_deadline());
            let what = format!(
                "building consumer {:?} of topic {:?}",
                self.group, self.topic
            );
            match tokio::time::timeout(deadline, self.connect(broker, tracer, deadline)).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    what,
                    bootstrap: broker.bootstrap_servers().to_owned(),
                    timeout: deadline,
                }),
            }
        })
    }

    async fn connect<T>(
        mut self,
        broker: &Broker,
        tracer: T,
        deadline: Duration,
    ) -> Result<TracedConsumer<T>> {
        let max_wait = *self
            .max_wait
            .get_or_insert(if broker.answers_fetches_early() {
                DEFAULT_MAX_WAIT
            } else {
                LATE_ANSWER_MAX_WAIT
            });
        let client = broker.client().await?;
        let bootstrap = broker.bootstrap_servers().to_owned();
        let client_error = |source| Error::Client {
            bootstrap: bootstrap.clone(),
            source,
        };
        // rskafka's futures are deep: behind a pointer (crate::shallow).
        let topics = crate::shallow::rskafka_calls::list_topics(&client)
            .await
            .map_err(client_error)?;
        let Some(topic) = topics.iter().find(|t| t.name == self.topic) else {
            return Err(Error::Topic {
                topic: self.topic,
                bootstrap,
                reason: "no such topic: create it before building the consumer".into(),
            });
        };
        let mut partitions = Vec::new();
        let mut offsets = BTreeMap::new();
        let mut redeliver_below = FxHashMap::default();
        let mut deleted_unread = BTreeMap::new();
        // A broker answers a connection's requests in order, so a fetch
        // waiting on one partition would hold up the next partition's on
        // the same connection: with a wait, each partition has its own.
        let own_connections = topic.partitions.len() > 1 && !max_wait.is_zero();
        for &id in &topic.partitions {
            let own;
            let client = if own_connections {
                own = broker.client().await?;
                &own
            } else {
                &client
            };
            let pc = crate::shallow::rskafka_calls::partition_client(
                client,
                self.topic.as_str(),
                id,
                UnknownTopicHandling::Error,
            )
            .await
            .map_err(client_error)?;
            let stored = self
                .store
                .as_ref()
                .and_then(|s| s.get(&self.group, &self.topic, id));
            let start = match (stored, self.start) {
                (Some(next), _) => next,
                (None, StartFrom::Earliest) => {
                    let log_start =
                        crate::shallow::rskafka_calls::get_offset(&pc, OffsetAt::Earliest)
                            .await
                            .map_err(client_error)?;
                    // Offsets start at 0: a log start above it means the
                    // broker deleted the partition's head (retention,
                    // DeleteRecords) before this consumer could read it.
                    if log_start > 0 {
                        deleted_unread.insert(id, log_start);
                    }
                    log_start
                }
                (None, StartFrom::Latest) => {
                    crate::shallow::rskafka_calls::get_offset(&pc, OffsetAt::Latest)
                        .await
                        .map_err(client_error)?
                }
            };
            offsets.insert(id, start);
            if let Some(delivered) = self
                .store
                .as_ref()
                .and_then(|s| s.delivered(&self.group, &self.topic, id))
            {
                redeliver_below.insert(id, delivered);
            }
            partitions.push((id, Arc::new(pc)));
        }
        let mut fixed = server(&bootstrap);
        fixed.push(KeyValue::new(attr::CONSUMER_GROUP, shared(&self.group)));
        let partition_ids = partitions
            .iter()
            .map(|(id, _)| (*id, partition_id(*id)))
            .collect();
        let acks = Arc::new(Acks {
            group: self.group.clone(),
            topic: self.topic.clone(),
            store: self.store.clone(),
            partitions: Mutex::new(
                offsets
                    .iter()
                    .map(|(&id, &start)| (id, PartitionAcks::starting_at(start)))
                    .collect(),
            ),
        });
        Ok(TracedConsumer {
            template: SpanTemplate::new("process", &self.topic, &fixed),
            bootstrap,
            tracer,
            partitions,
            partition_ids,
            handed: offsets.clone(),
            fetched: offsets,
            pending: VecDeque::new(),
            acks,
            redeliver_below,
            waiting: FxHashMap::default(),
            retrying: FxHashMap::default(),
            high_watermarks: FxHashMap::default(),
            unreported_deletions: deleted_unread.keys().copied().collect(),
            deleted_unread,
            deadline,
            settings: self,
        })
    }
}

/// Reads every partition of one topic under a consumer name, one
/// `process <topic>` CONSUMER span per record.
///
/// Delivery is **at-least-once**. A record is committed when it is
/// finished ([`ConsumedRecord::finish`]) or by
/// [`commit_handed_out`](Self::commit_handed_out), never when it is handed
/// out. With an [`OffsetStore`], a consumer built again under the same
/// name starts at the committed position, and a record handed out before
/// but not committed comes again with `redelivered` set (and the
/// `messaging.kafka.message.redelivered` attribute on its new span). A
/// fetch that fails with an error Kafka calls retriable
/// (`NotEnoughReplicas`, `RequestTimedOut`, a broken connection, ...) is
/// asked again after a backoff until it has failed for the
/// [`deadline`](TracedConsumerBuilder::deadline); then, or on any other
/// error, the call fails naming the last error. A
/// failed fetch keeps what was fetched before it, and
/// [`consume`](Self::consume) is cancel-safe. A next offset below the
/// partition's log start is an [`Error::RecordsDeleted`], never a silent
/// skip.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kafka_trace_harness::Result<()> {
/// use std::time::Duration;
/// use kafka_trace_harness::{Broker, SpanCapture, TracedConsumer, TracedProducer};
/// use opentelemetry::Context;
/// use rskafka::record::Record;
///
/// let broker = Broker::builder().start().await?;
/// let topic = broker.create_unique_topic("trades", 2).await?;
/// let capture = SpanCapture::new();
/// let producer = TracedProducer::connect(&broker, capture.tracer("datagen")).await?;
/// let mut consumer = TracedConsumer::builder("api", &topic).build(&broker, capture.tracer("api")).await?;
///
/// let record = Record { key: Some(b"ZVZZT".to_vec()), value: None, headers: Default::default(), timestamp: chrono::Utc::now() };
/// producer.send(&Context::new(), &topic, 1, record).await?;
///
/// for consumed in consumer.consume(1, Duration::from_secs(10)).await? {
///     // Sends made with `consumed.context()` become children of the process span.
///     consumed.finish();
/// }
/// let forest = capture.forest();
/// let process = forest.named(&format!("process {topic}")).next().unwrap();
/// assert_eq!(process.parent().unwrap().name(), format!("send {topic}"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TracedConsumer<T = SdkTracer> {
    settings: TracedConsumerBuilder,
    bootstrap: String,
    /// Name and fixed attributes of every `process` span.
    template: SpanTemplate,
    tracer: T,
    partitions: Vec<(i32, Arc<PartitionClient>)>,
    /// Each partition's id attribute value, formatted once.
    partition_ids: FxHashMap<i32, StringValue>,
    /// Next offset to fetch, per partition.
    fetched: BTreeMap<i32, i64>,
    /// Next offset to hand out, per partition.
    handed: BTreeMap<i32, i64>,
    /// Fetched but not yet handed out; their spans start on hand-out.
    /// Kept across failed fetches and cancelled calls.
    pending: VecDeque<Fetched>,
    /// Handed out and finished, shared with the records for `finish`.
    acks: Arc<Acks>,
    /// Offsets below these were handed out before a restart.
    redeliver_below: FxHashMap<i32, i64>,
    /// Per partition, a fetch an earlier poll started and left waiting
    /// (it returned with another partition's records), with the offset it
    /// fetches from: the next poll takes its answer.
    waiting: FxHashMap<i32, WaitingFetch>,
    /// Per partition, a fetch failing retriably since when, and how: its
    /// retry waits in `waiting`. Cleared by the partition's next answer.
    retrying: FxHashMap<i32, Retrying>,
    /// Per partition, the high watermark of its last answer, when that
    /// answer was not an error: what [`TracedConsumer::lag`] counts from.
    high_watermarks: FxHashMap<i32, i64>,
    /// Per partition, the log start found above 0 when this consumer
    /// started from the earliest record: offsets `0..log_start` were
    /// deleted before it could read them.
    deleted_unread: BTreeMap<i32, i64>,
    /// Partitions of `deleted_unread` whose first `process` span has yet
    /// to tell of the gap.
    unreported_deletions: BTreeSet<i32>,
    /// See [`TracedConsumerBuilder::deadline`].
    deadline: Duration,
}

impl TracedConsumer {
    /// Settings for consumer `group` of `topic`: from the earliest record,
    /// process spans parented by the record's context, 500 ms fetch wait
    /// (see [`TracedConsumerBuilder::max_wait`]), no [`OffsetStore`].
    pub fn builder(group: impl Into<String>, topic: impl Into<String>) -> TracedConsumerBuilder {
        TracedConsumerBuilder {
            group: group.into(),
            topic: topic.into(),
            start: StartFrom::Earliest,
            parent: ConsumerParent::Extracted,
            max_wait: None,
            max_partition_records: DEFAULT_MAX_PARTITION_RECORDS,
            store: None,
            deadline: None,
        }
    }
}

impl<T> TracedConsumer<T>
where
    T: Tracer<Span: Send + Sync + 'static> + Send + Sync,
{
    /// The consumer's name, reported as `messaging.consumer.group.name`.
    pub fn group(&self) -> &str {
        &self.settings.group
    }

    /// The next offset to hand out, per partition.
    pub fn offsets(&self) -> &BTreeMap<i32, i64> {
        &self.handed
    }

    /// How many records of `partition` the broker held beyond what this
    /// consumer has fetched, as of the partition's last answer (its high
    /// watermark minus the next offset to fetch). `Some(0)`: caught up.
    /// `None` while it is not known: before the partition's first
    /// answer, after a failed fetch, or for a partition this consumer
    /// does not read. A fetch still waiting keeps the last answer's
    /// figure, so records that arrived since are not counted yet.
    ///
    /// Kafka Streams asks the same of a partition before it lets a task
    /// process records of the others ahead of it (`max.task.idle.ms`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kafka_trace_harness::Result<()> {
    /// use kafka_trace_harness::{Broker, SpanCapture, TracedConsumer, TracedProducer};
    /// use opentelemetry::Context;
    /// use rskafka::record::Record;
    ///
    /// let broker = Broker::builder().start().await?;
    /// let topic = broker.create_unique_topic("lag", 1).await?;
    /// let capture = SpanCapture::new();
    /// let producer = TracedProducer::connect(&broker, capture.tracer("app")).await?;
    /// for n in 0..3 {
    ///     let value = Some(format!("v{n}").into_bytes());
    ///     let record = Record { key: None, value, headers: Default::default(), timestamp: chrono::Utc::now() };
    ///     producer.send(&Context::new(), &topic, 0, record).await?;
    /// }
    /// let mut consumer = TracedConsumer::builder("reader", &topic)
    ///     .max_partition_records(1)
    ///     .build(&broker, capture.tracer("reader"))
    ///     .await?;
    /// assert_eq!(consumer.lag(0), None); // no answer yet
    ///
    /// let first = consumer.poll().await?;
    /// assert_eq!(first.len(), 1);
    /// assert_eq!(consumer.lag(0), Some(2)); // 3 stored, 1 fetched
    /// assert_eq!(consumer.partitions().collect::<Vec<_>>(), vec![0]);
    /// # Ok(()) }
    /// ```
    pub fn lag(&self, partition: i32) -> Option<i64> {
        let high_watermark = self.high_watermarks.get(&partition)?;
        let next = self.fetched.get(&partition)?;
        Some((high_watermark - next).max(0))
    }

    /// The partitions this consumer reads, in ascending order.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.fetched.keys().copied()
    }

    /// Records the broker had deleted from the head of a partition before
    /// this consumer, starting from [`StartFrom::Earliest`], could read
    /// them (retention, DeleteRecords, the embedded broker's size limit):
    /// per partition, offsets `0..count`. Empty when nothing was missing.
    ///
    /// The first `process` span of such a partition also tells of it: an
    /// event [`RECORDS_DELETED_EVENT`] and the attribute
    /// [`DELETED_COUNT`]. A consumer that falls behind the log start later
    /// fails with [`Error::RecordsDeleted`] instead.
    pub fn deleted_unread(&self) -> Vec<crate::error::DeletedRecords> {
        self.deleted_unread
            .iter()
            .map(|(&partition, &count)| crate::error::DeletedRecords {
                topic: self.settings.topic.clone(),
                partition,
                count,
            })
            .collect()
    }

    /// How many records [`deleted_unread`](Self::deleted_unread) lists, in
    /// all partitions.
    pub fn deleted_unread_count(&self) -> i64 {
        self.deleted_unread.values().sum()
    }

    /// The committed position per partition: the next offset a consumer
    /// built again under this name (with the same [`OffsetStore`]) reads.
    /// Records at and after it were handed out but not all finished.
    pub fn committed(&self) -> BTreeMap<i32, i64> {
        self.acks.committed()
    }

    /// Commits every record handed out so far, finished or not (an
    /// explicit commit, as `commitSync` after a poll would).
    pub fn commit_handed_out(&self) {
        self.acks.commit_all();
    }

    /// One fetch on every partition at once; spans are children of (or,
    /// with [`ConsumerParent::LinkOnly`], linked from) each record's
    /// context, else roots.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>> {
        self.poll_in(&Context::new()).await
    }

    /// [`poll`](Self::poll) with `ambient` as the fallback parent (and the
    /// parent in link-only mode).
    pub async fn poll_in(&mut self, ambient: &Context) -> Result<Vec<ConsumedRecord>> {
        // Behind a pointer: see crate::shallow.
        let batch = crate::shallow::shallow(self.next_batch());
        let out = batch.await?;
        Ok(self.hand_out(ambient, out))
    }

    /// Starts the `process` spans of `records`; they count as handed out
    /// (and are committed as they finish).
    fn hand_out(&mut self, ambient: &Context, records: Vec<Fetched>) -> Vec<ConsumedRecord> {
        for r in &records {
            let next = self.handed.entry(r.partition).or_default();
            *next = (*next).max(r.offset + 1);
        }
        self.acks
            .handed_out(records.iter().map(|r| (r.partition, r.offset)));
        records
            .into_iter()
            .map(|r| {
                let deleted = match self.unreported_deletions.remove(&r.partition) {
                    true => self.deleted_unread.get(&r.partition).copied(),
                    false => None,
                };
                self.start_process(ambient, r.partition, r.offset, r.record, deleted)
            })
            .collect()
    }

    /// Records kept from an earlier call, else one fetch round, within
    /// the deadline.
    async fn next_batch(&mut self) -> Result<Vec<Fetched>> {
        if self.pending.is_empty() {
            let deadline = self.deadline;
            let round = self.fetch_round(round_end(deadline));
            match tokio::time::timeout(deadline, round).await {
                Ok(result) => result?,
                Err(_) => return Err(self.timeout("fetching", deadline)),
            }
        }
        Ok(self.pending.drain(..).collect())
    }

    fn timeout(&self, what: &str, deadline: Duration) -> Error {
        let mut retrying: Vec<_> = self.retrying.iter().collect();
        retrying.sort_by_key(|(id, _)| **id);
        let retrying: String = retrying
            .into_iter()
            .map(|(id, r)| format!("; partition {id} {}", r.describe()))
            .collect();
        Error::Timeout {
            what: format!(
                "consumer {:?} {what} topic {:?} (partitions {:?}, next offsets {:?}{retrying})",
                self.settings.group,
                self.settings.topic,
                self.fetched.keys().collect::<Vec<_>>(),
                self.fetched.values().collect::<Vec<_>>(),
            ),
            bootstrap: self.bootstrap.clone(),
            timeout: deadline,
        }
    }

    /// The error of a fetch of `partition` that failed retriably for
    /// longer than the deadline.
    fn retries_exhausted(&self, partition: i32) -> Error {
        let next = self.fetched.get(&partition).copied().unwrap_or_default();
        let retrying = self
            .retrying
            .get(&partition)
            .map(Retrying::describe)
            .unwrap_or_default();
        Error::Timeout {
            what: format!(
                "consumer {:?} fetching topic {:?} partition {partition} from offset {next} \
                 ({retrying})",
                self.settings.group, self.settings.topic,
            ),
            bootstrap: self.bootstrap.clone(),
            timeout: self.deadline,
        }
    }

    /// One fetch on every partition at once; what arrives goes to
    /// `pending`. Cancel-safe: nothing changes before every fetch has
    /// answered. A partition whose fetch failed keeps what it fetched
    /// before failing, and the first error is returned after that.
    ///
    /// A partition with a backlog fetches again (the mock answers one
    /// batch per fetch) only until `until`, so that a round ends with what
    /// it has well before the caller's deadline cancels it: otherwise, with
    /// a slow broker and many small batches, every round was cancelled
    /// and fetched again from the same offsets, and never advanced.
    ///
    /// The round ends as soon as one partition's fetch brings records,
    /// with every other answer there by then, or once every fetch has
    /// answered (so an empty round still means every partition is empty);
    /// a fetch still waiting (on an empty partition, up to `max_wait`) is
    /// kept for the next round, so that it delays no partition that has
    /// records, and is never asked twice.
    async fn fetch_round(&mut self, until: Instant) -> Result<()> {
        // An idle poll must end empty, not overrun the deadline.
        let max_wait = (self.settings.max_wait)
            .unwrap_or(DEFAULT_MAX_WAIT)
            .min(self.deadline / 2);
        let max_wait = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
        let most = self.settings.max_partition_records;
        for (id, client) in &self.partitions {
            if !self.waiting.contains_key(id) {
                let from = self.fetched[id];
                let client = Arc::clone(client);
                let fetch = async move { drain(&client, from, max_wait, most, until).await };
                self.waiting
                    .insert(*id, WaitingFetch::new(from, fetch.boxed()));
            }
        }
        // Without spawning: the fetches make progress while polled here,
        // and rskafka's connection task reads their answers meanwhile.
        // Ends once an answer brings records (or an error), or every fetch
        // has answered: an empty round still means every partition was
        // empty. An empty answer taken by a cancelled round is only asked
        // again.
        //
        // A fetch that failed retriably, with nothing fetched before the
        // error, is asked again after a backoff (as Kafka's clients do)
        // until it has failed for the deadline: it stays in `waiting`
        // meanwhile, so the round goes on and an empty round still means
        // every partition answered empty.
        let mut batches = Vec::new();
        let mut exhausted = None;
        std::future::poll_fn(|cx| {
            loop {
                let answered: Vec<(i32, i64, Drained)> = self
                    .waiting
                    .iter_mut()
                    .filter_map(|(id, waiting)| match waiting.fetch().as_mut().poll(cx) {
                        std::task::Poll::Ready(drained) => Some((*id, waiting.from, drained)),
                        std::task::Poll::Pending => None,
                    })
                    .collect();
                if answered.is_empty() {
                    break;
                }
                for (id, from, mut drained) in answered {
                    self.waiting.remove(&id);
                    let retriable = drained.error.as_ref().is_some_and(is_retriable_read_error);
                    if !retriable {
                        self.retrying.remove(&id);
                        batches.push((id, from, drained));
                        continue;
                    }
                    if !drained.records.is_empty() {
                        // Hands out what came; the next round fetches on
                        // from there, which retries.
                        self.retrying.remove(&id);
                        drained.error = None;
                        batches.push((id, from, drained));
                        continue;
                    }
                    let Some(error) = drained.error.take() else {
                        continue;
                    };
                    let retrying = self.retrying.entry(id).or_insert_with(|| Retrying {
                        since: Instant::now(),
                        attempts: 0,
                        last: None,
                    });
                    retrying.attempts += 1;
                    retrying.last = Some(error);
                    if retrying.since.elapsed() >= self.deadline {
                        exhausted.get_or_insert(id);
                        continue;
                    }
                    let backoff = retry_backoff(retrying.attempts - 1);
                    let Some((_, client)) = self.partitions.iter().find(|(p, _)| *p == id) else {
                        continue;
                    };
                    let client = Arc::clone(client);
                    let fetch = async move {
                        tokio::time::sleep(backoff).await;
                        drain(&client, from, max_wait, most, until).await
                    };
                    self.waiting
                        .insert(id, WaitingFetch::new(from, fetch.boxed()));
                }
            }
            if exhausted.is_some() {
                return std::task::Poll::Ready(());
            }
            let brought = batches
                .iter()
                .any(|(_, _, d)| !d.records.is_empty() || d.error.is_some());
            if brought || self.waiting.is_empty() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        // Partition order, then offset order: deterministic for tests.
        batches.sort_by_key(|(id, _, _)| *id);
        let mut first_error = None;
        for (id, from, drained) in batches {
            // None after any failed fetch, also one whose error was set
            // aside above for the records it brought.
            match drained.high_watermark {
                Some(high_watermark) => self.high_watermarks.insert(id, high_watermark),
                None => self.high_watermarks.remove(&id),
            };
            let mut records = drained.records;
            records.retain(|r| r.offset >= from);
            records.sort_by_key(|r| r.offset);
            records.dedup_by_key(|r| r.offset);
            if let Some(last) = records.last() {
                self.fetched.insert(id, last.offset + 1);
            }
            self.pending.extend(records.into_iter().map(|r| Fetched {
                partition: id,
                offset: r.offset,
                record: r.record,
            }));
            if let Some(error) = drained.error
                && first_error.is_none()
            {
                first_error = Some((id, error));
            }
        }
        if let Some(partition) = exhausted {
            let error = self.retries_exhausted(partition);
            self.retrying.remove(&partition);
            return Err(error);
        }
        match first_error {
            None => Ok(()),
            Some((partition, error)) => Err(self.fetch_error(partition, error).await),
        }
    }

    /// `error` from a fetch of `partition`, told in the consumer's terms:
    /// an offset out of range below the log start means records were
    /// deleted before this consumer read them.
    async fn fetch_error(&self, partition: i32, error: rskafka::client::error::Error) -> Error {
        use rskafka::client::error::{Error as E, ProtocolError as P};
        let next = self.fetched.get(&partition).copied().unwrap_or_default();
        if let E::ServerError {
            protocol_error: P::OffsetOutOfRange,
            ..
        } = &error
            && let Some((_, client)) = self.partitions.iter().find(|(id, _)| *id == partition)
            && let Ok(Ok(log_start)) = tokio::time::timeout(
                self.deadline,
                crate::shallow::rskafka_calls::get_offset(client, OffsetAt::Earliest),
            )
            .await
            && log_start > next
        {
            return Error::RecordsDeleted {
                topic: self.settings.topic.clone(),
                partition,
                next,
                log_start,
                bootstrap: self.bootstrap.clone(),
            };
        }
        Error::Fetch {
            group: self.settings.group.clone(),
            topic: self.settings.topic.clone(),
            partition,
            offset: next,
            bootstrap: self.bootstrap.clone(),
            source: Box::new(error),
        }
    }

    /// Polls until `count` records arrived or `deadline` passed; returns
    /// exactly `count` records and keeps any extra for the next call.
    ///
    /// The deadline holds during a fetch too. Cancel-safe: records fetched
    /// but not returned (on a timeout, an error, or when the future is
    /// dropped) stay buffered, and the next call returns them first.
    pub fn consume(
        &mut self,
        count: usize,
        deadline: Duration,
    ) -> impl Future<Output = Result<Vec<ConsumedRecord>>> {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow(async move {
            let started = Instant::now();
            while self.pending.len() < count {
                let remaining = deadline.saturating_sub(started.elapsed());
                let missing = count - self.pending.len();
                let what = format!("reading {count} records ({missing} missing) of");
                if remaining.is_zero() {
                    return Err(self.timeout(&what, deadline));
                }
                let round = self.fetch_round(round_end(remaining.min(self.deadline)));
                match tokio::time::timeout(remaining, round).await {
                    Ok(result) => result?,
                    Err(_) => return Err(self.timeout(&what, deadline)),
                }
            }
            let got: Vec<Fetched> = self.pending.drain(..count).collect();
            Ok(self.hand_out(&Context::new(), got))
        })
    }

    fn start_process(
        &self,
        ambient: &Context,
        partition: i32,
        offset: i64,
        record: Record,
        deleted_before: Option<i64>,
    ) -> ConsumedRecord {
        let topic = &self.settings.topic;
        let extracted = extract_with(ambient, &record.headers);
        let id = match self.partition_ids.get(&partition) {
            Some(id) => id.clone(),
            None => partition_id(partition),
        };
        let redelivered = self
            .redeliver_below
            .get(&partition)
            .is_some_and(|&below| offset < below);
        let mut attributes = self.template.attributes(id, record.key.as_deref(), 3);
        attributes.push(KeyValue::new(attr::OFFSET, offset));
        if redelivered {
            attributes.push(KeyValue::new(attr::REDELIVERED, true));
        }
        if let Some(problem) = &extracted.problem {
            attributes.push(KeyValue::new(attr::CONTEXT_PROBLEM, problem.kind()));
        }
        if let Some(count) = deleted_before {
            attributes.push(KeyValue::new(DELETED_COUNT, count));
        }
        let mut builder = self
            .tracer
            .span_builder(self.template.name.clone())
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes);
        let parent = match self.settings.parent {
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
        if let Some(count) = deleted_before {
            span.add_event(
                RECORDS_DELETED_EVENT,
                vec![
                    KeyValue::new(attr::PARTITION_ID, partition_id(partition)),
                    KeyValue::new(DELETED_OFFSET_FIRST, 0_i64),
                    KeyValue::new(DELETED_OFFSET_LAST, count - 1),
                    KeyValue::new(DELETED_COUNT, count),
                ],
            );
        }
        // Keeps the record's baggage; the process span becomes the active span.
        let context = extracted.context.with_span(span);
        ConsumedRecord {
            topic: topic.clone(),
            partition,
            offset,
            record,
            extracted,
            redelivered,
            context,
            acks: Arc::clone(&self.acks),
        }
    }
}

/// A partition's fetch failing retriably.
#[derive(Debug)]
struct Retrying {
    /// When its first error came.
    since: Instant,
    /// Failed attempts so far.
    attempts: u32,
    /// The last error (always set once an attempt failed).
    last: Option<rskafka::client::error::Error>,
}

impl Retrying {
    fn describe(&self) -> String {
        let last = match &self.last {
            Some(error) => error.to_string(),
            None => "none".into(),
        };
        format!(
            "retried a retriable error for {:?} ({} failed attempts), last error: {last}",
            self.since.elapsed(),
            self.attempts,
        )
    }
}

/// A partition's fetch left waiting by an earlier round.
struct WaitingFetch {
    /// The offset it fetches from.
    from: i64,
    /// Only ever reached through `&mut` (`get_mut`, no locking): the
    /// mutex makes the consumer `Sync`, as the future alone is not.
    fetch: Mutex<BoxFuture<'static, Drained>>,
}

impl WaitingFetch {
    fn new(from: i64, fetch: BoxFuture<'static, Drained>) -> Self {
        Self {
            from,
            fetch: Mutex::new(fetch),
        }
    }

    fn fetch(&mut self) -> &mut BoxFuture<'static, Drained> {
        self.fetch.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for WaitingFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitingFetch")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// What one partition's fetches brought: the records, and the error that
/// stopped them early, if one did (records fetched before it are kept).
struct Drained {
    records: Vec<rskafka::record::RecordAndOffset>,
    error: Option<rskafka::client::error::Error>,
    /// The high watermark of the last answer, unless a fetch failed.
    high_watermark: Option<i64>,
}

/// When a fetch round that may take `deadline` stops starting fetches:
/// half way, so that the fetch in flight then has the other half.
fn round_end(deadline: Duration) -> Instant {
    Instant::now() + deadline / 2
}

/// Fetches from `from` until the partition's high watermark, or until
/// `until` once something was fetched: the mock cluster answers one batch
/// per fetch, so a backlog takes several fetches, and only the first may
/// wait.
async fn drain(
    client: &PartitionClient,
    from: i64,
    max_wait_ms: i32,
    most: usize,
    until: Instant,
) -> Drained {
    let mut records = Vec::new();
    let mut next = from;
    loop {
        let wait = if records.is_empty() { max_wait_ms } else { 0 };
        let fetch = crate::shallow::rskafka_calls::fetch_records(client, next, 1..52_428_800, wait);
        let (batch, high_watermark) = match fetch.await {
            Ok(answer) => answer,
            Err(error) => {
                return Drained {
                    records,
                    error: Some(error),
                    high_watermark: None,
                };
            }
        };
        let before = records.len();
        for r in batch {
            if r.offset >= next {
                next = r.offset + 1;
                records.push(r);
            }
        }
        if records.len() == before
            || next >= high_watermark
            || records.len() >= most
            || Instant::now() >= until
        {
            // The rest of a batch is fetched again by the next poll.
            records.truncate(most);
            return Drained {
                records,
                error: None,
                high_watermark: Some(high_watermark),
            };
        }
    }
}

/// What a consumer handed out and which of it is finished, shared with
/// its records so that [`ConsumedRecord::finish`] can commit.
#[derive(Debug)]
struct Acks {
    group: String,
    topic: String,
    store: Option<OffsetStore>,
    partitions: Mutex<FxHashMap<i32, PartitionAcks>>,
}

/// One partition's commit bookkeeping.
#[derive(Debug)]
struct PartitionAcks {
    /// Next offset a restart reads: the first unfinished record, else
    /// `handed`.
    committed: i64,
    /// One past the last offset handed out.
    handed: i64,
    /// Handed out, not yet finished.
    unfinished: BTreeSet<i64>,
}

impl PartitionAcks {
    fn starting_at(offset: i64) -> Self {
        Self {
            committed: offset,
            handed: offset,
            unfinished: BTreeSet::new(),
        }
    }

    fn advance(&mut self) {
        self.committed = self.unfinished.first().copied().unwrap_or(self.handed);
    }
}

impl Acks {
    fn lock(&self) -> MutexGuard<'_, FxHashMap<i32, PartitionAcks>> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn handed_out(&self, records: impl Iterator<Item = (i32, i64)>) {
        let mut partitions = self.lock();
        let mut touched = Vec::new();
        for (partition, offset) in records {
            let p = partitions
                .entry(partition)
                .or_insert_with(|| PartitionAcks::starting_at(offset));
            p.unfinished.insert(offset);
            p.handed = p.handed.max(offset + 1);
            if !touched.contains(&partition) {
                touched.push(partition);
            }
        }
        if let Some(store) = &self.store {
            for partition in touched {
                store.mark_delivered(
                    &self.group,
                    &self.topic,
                    partition,
                    partitions[&partition].handed,
                );
            }
        }
    }

    fn finished(&self, partition: i32, offset: i64) {
        let mut partitions = self.lock();
        let Some(p) = partitions.get_mut(&partition) else {
            return;
        };
        if p.unfinished.remove(&offset) {
            let before = p.committed;
            p.advance();
            if p.committed != before
                && let Some(store) = &self.store
            {
                store.commit(&self.group, &self.topic, partition, p.committed);
            }
        }
    }

    fn commit_all(&self) {
        let mut partitions = self.lock();
        for (&partition, p) in partitions.iter_mut() {
            p.unfinished.clear();
            p.advance();
            if let Some(store) = &self.store {
                store.commit(&self.group, &self.topic, partition, p.committed);
            }
        }
    }

    fn committed(&self) -> BTreeMap<i32, i64> {
        self.lock()
            .iter()
            .map(|(&id, p)| (id, p.committed))
            .collect()
    }
}

/// A fetched record, not yet handed out.
#[derive(Debug)]
struct Fetched {
    partition: i32,
    offset: i64,
    record: Record,
}

/// A record handed out by a [`TracedConsumer`], with its open `process`
/// span. The span ends on [`finish`](Self::finish) or when the record (and
/// every clone of its context) is dropped.
#[derive(Debug)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The record, headers included.
    pub record: Record,
    /// What extraction found in the headers.
    pub extracted: Extracted,
    /// Whether this consumer name was handed this record before (a
    /// redelivery after a restart from committed offsets). The process
    /// span then carries `messaging.kafka.message.redelivered = true`.
    pub redelivered: bool,
    context: Context,
    acks: Arc<Acks>,
}

impl ConsumedRecord {
    /// The context with the `process` span active and the record's
    /// baggage: pass it to [`TracedProducer::send`](crate::TracedProducer::send) so downstream sends
    /// become children of the process span.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Marks the process span failed (`error.type` and Error status).
    pub fn fail(&self, error_type: &str, description: impl Into<String>) {
        mark_failed(
            &self.context.span(),
            error_type.to_owned(),
            description.into(),
        );
    }

    /// Adds an attribute to the process span (for example why a record was
    /// filtered out).
    pub fn set_attribute(&self, attribute: KeyValue) {
        self.context.span().set_attribute(attribute);
    }

    /// Links the process span to `target`, e.g. the `send` span of a
    /// record joined with this one.
    pub fn add_link(&self, target: SpanContext) {
        self.context.span().add_link(target, Vec::new());
    }

    /// Ends the process span and commits the record: once every earlier
    /// record of its partition is finished too, a restarted consumer
    /// starts after it. A record dropped without `finish` ends its span
    /// but stays uncommitted, so a restart delivers it again
    /// (at-least-once).
    pub fn finish(self) {
        self.context.span().end();
        self.acks.finished(self.partition, self.offset);
    }
}
