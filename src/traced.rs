//! A traced producer and consumer over rskafka, following the
//! OpenTelemetry messaging semantic conventions (1.44) for Kafka.
//!
//! rskafka has no consumer groups, so [`TracedConsumer`] keeps its own
//! offsets: each named consumer reads every partition of its topic from
//! where it started, and hands out each record exactly once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::SdkTracer;
use rskafka::client::Client;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use rustc_hash::FxHashMap;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::propagation::{ExistingTraceparent, Extracted, Injected, extract_with, inject_with};

/// Attribute names of the messaging semantic conventions used here.
pub mod attr {
    /// `kafka`.
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// `send` or `process`.
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    /// `send` or `process`.
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    /// The topic.
    pub const DESTINATION_NAME: &str = "messaging.destination.name";
    /// The partition, as a string.
    pub const PARTITION_ID: &str = "messaging.destination.partition.id";
    /// The record key, UTF-8 lossy.
    pub const MESSAGE_KEY: &str = "messaging.kafka.message.key";
    /// The record offset.
    pub const OFFSET: &str = "messaging.kafka.offset";
    /// The consumer's name (its "group").
    pub const CONSUMER_GROUP: &str = "messaging.consumer.group.name";
    /// Host of the first bootstrap server.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// Port of the first bootstrap server.
    pub const SERVER_PORT: &str = "server.port";
    /// Low-cardinality error class on failed spans.
    pub const ERROR_TYPE: &str = "error.type";
    /// On a consumer span: why the record's trace context was not used.
    pub const CONTEXT_PROBLEM: &str = "messaging.kafka.trace_context.problem";
}

/// Name of the event a consumer span gets when the record's trace context
/// was not usable.
pub const CONTEXT_UNUSABLE_EVENT: &str = "trace context unusable";

fn server(bootstrap: &str) -> Vec<KeyValue> {
    let first = bootstrap.split(',').next().unwrap_or_default().trim();
    match first.rsplit_once(':') {
        Some((host, port)) => {
            let mut out = vec![KeyValue::new(attr::SERVER_ADDRESS, shared(host))];
            if let Ok(port) = port.parse::<i64>() {
                out.push(KeyValue::new(attr::SERVER_PORT, port));
            }
            out
        }
        None => vec![KeyValue::new(attr::SERVER_ADDRESS, shared(first))],
    }
}

/// A string attribute value whose clones share one allocation.
fn shared(text: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(text))
}

/// The `messaging.destination.partition.id` value of `partition`.
fn partition_id(partition: i32) -> StringValue {
    shared(&partition.to_string())
}

fn error_type(error: &rskafka::client::error::Error) -> String {
    use rskafka::client::error::Error as E;
    match error {
        E::ServerError { protocol_error, .. } => format!("{protocol_error:?}"),
        E::Connection(_) => "connection".into(),
        E::Request(_) => "request".into(),
        E::InvalidResponse(_) => "invalid_response".into(),
        E::Timeout => "timeout".into(),
        _ => "_OTHER".into(),
    }
}

/// What every span of one topic and operation repeats, built once: its
/// name and the attributes that do not change from record to record, with
/// shared strings, so that a span copies reference counts, not text.
#[derive(Debug)]
struct SpanTemplate {
    name: String,
    attributes: Vec<KeyValue>,
}

impl SpanTemplate {
    fn new(operation: &'static str, topic: &str, fixed: &[KeyValue]) -> Self {
        let mut attributes = vec![
            KeyValue::new(attr::MESSAGING_SYSTEM, "kafka"),
            KeyValue::new(attr::OPERATION_NAME, operation),
            KeyValue::new(attr::OPERATION_TYPE, operation),
            KeyValue::new(attr::DESTINATION_NAME, shared(topic)),
        ];
        attributes.extend(fixed.iter().cloned());
        Self {
            name: format!("{operation} {topic}"),
            attributes,
        }
    }

    /// One record's attributes, with room for `extra` more (set later,
    /// such as the offset: growing the vector then would copy it).
    fn attributes(
        &self,
        partition_id: StringValue,
        key: Option<&[u8]>,
        extra: usize,
    ) -> Vec<KeyValue> {
        let mut out = Vec::with_capacity(self.attributes.len() + 2 + extra);
        out.extend(self.attributes.iter().cloned());
        out.push(KeyValue::new(attr::PARTITION_ID, partition_id));
        if let Some(key) = key {
            out.push(KeyValue::new(
                attr::MESSAGE_KEY,
                String::from_utf8_lossy(key).into_owned(),
            ));
        }
        out
    }
}

/// Produces records, one `send <topic>` PRODUCER span per record, with the
/// span's context injected into the record's headers.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kafka_trace_harness::Result<()> {
/// use kafka_trace_harness::{Broker, SpanCapture, TracedProducer};
/// use opentelemetry::Context;
/// use rskafka::record::Record;
///
/// let broker = Broker::builder().start().await?;
/// let topic = broker.create_unique_topic("trades", 1).await?;
/// let capture = SpanCapture::new();
/// let producer = TracedProducer::connect(&broker, capture.tracer("datagen")).await?;
///
/// let record = Record { key: None, value: Some(b"x".to_vec()), headers: Default::default(), timestamp: chrono::Utc::now() };
/// let offset = producer.send(&Context::new(), &topic, 0, record).await?;
/// assert_eq!(offset, 0);
/// assert_eq!(capture.forest().named(&format!("send {topic}")).count(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TracedProducer {
    client: Client,
    bootstrap: String,
    /// `server.*` attributes, parsed once from `bootstrap`.
    server: Vec<KeyValue>,
    /// What each topic sent to needs again for every record. A std mutex
    /// held only for lookups: connecting happens outside it.
    routes: std::sync::Mutex<FxHashMap<String, Route>>,
    tracer: SdkTracer,
    existing: ExistingTraceparent,
}

/// One topic's send-span template and its partitions.
#[derive(Debug)]
struct Route {
    template: SpanTemplate,
    partitions: FxHashMap<i32, RoutePartition>,
}

/// A partition's id attribute, formatted once, and its client once
/// connected.
#[derive(Debug)]
struct RoutePartition {
    id: StringValue,
    client: Option<Arc<PartitionClient>>,
}

/// A send span's name and attributes, and the partition's client if one
/// is connected: everything [`TracedProducer::send_linked`] needs from its
/// routes, read under one lock.
struct SendPlan {
    name: String,
    attributes: Vec<KeyValue>,
    client: Option<Arc<PartitionClient>>,
}

impl TracedProducer {
    /// A producer on a new client of `broker`, recording with `tracer`.
    pub async fn connect(broker: &Broker, tracer: SdkTracer) -> Result<Self> {
        Ok(Self::new(
            broker.client().await?,
            broker.bootstrap_servers(),
            tracer,
        ))
    }

    /// A producer on an existing client; `bootstrap` only feeds the
    /// `server.*` attributes and error messages.
    pub fn new(client: Client, bootstrap: &str, tracer: SdkTracer) -> Self {
        Self {
            client,
            bootstrap: bootstrap.to_owned(),
            server: server(bootstrap),
            routes: std::sync::Mutex::default(),
            tracer,
            existing: ExistingTraceparent::Keep,
        }
    }

    /// What to do with a `traceparent` already in a record's headers.
    /// Default [`ExistingTraceparent::Keep`].
    #[must_use]
    pub fn existing_traceparent(mut self, existing: ExistingTraceparent) -> Self {
        self.existing = existing;
        self
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, FxHashMap<String, Route>> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn plan(&self, topic: &str, partition: i32, key: Option<&[u8]>) -> SendPlan {
        let mut routes = self.routes();
        if !routes.contains_key(topic) {
            let route = Route {
                template: SpanTemplate::new("send", topic, &self.server),
                partitions: FxHashMap::default(),
            };
            routes.insert(topic.to_owned(), route);
        }
        let Some(route) = routes.get_mut(topic) else {
            unreachable!("inserted above")
        };
        let target = route
            .partitions
            .entry(partition)
            .or_insert_with(|| RoutePartition {
                id: partition_id(partition),
                client: None,
            });
        SendPlan {
            name: route.template.name.clone(),
            // One more for the offset, set once the broker acknowledges.
            attributes: route.template.attributes(target.id.clone(), key, 1),
            client: target.client.clone(),
        }
    }

    /// Connects to `topic`/`partition` and keeps the client for later
    /// sends. Two first sends racing both connect; the first kept wins.
    async fn connect_partition(&self, topic: &str, partition: i32) -> Result<Arc<PartitionClient>> {
        let client = self
            .client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .map_err(|source| Error::Client {
                bootstrap: self.bootstrap.clone(),
                source,
            })?;
        let client = Arc::new(client);
        let mut routes = self.routes();
        let kept = routes
            .get_mut(topic)
            .and_then(|route| route.partitions.get_mut(&partition))
            .map(|target| Arc::clone(target.client.get_or_insert(client.clone())));
        Ok(kept.unwrap_or(client))
    }

    /// Sends `record` to `topic`/`partition` in a `send <topic>` span that
    /// is a child of `parent`'s span; returns the record's offset.
    // Not an `async fn`: returning `send_linked`'s future saves moving it
    // into a wrapper's state once per record.
    pub fn send(
        &self,
        parent: &Context,
        topic: &str,
        partition: i32,
        record: Record,
    ) -> impl Future<Output = Result<i64>> {
        self.send_linked(parent, topic, partition, record, Vec::new())
    }

    /// Like [`send`](Self::send), with `links` on the send span (for
    /// example to the earlier records an aggregate was computed from).
    pub async fn send_linked(
        &self,
        parent: &Context,
        topic: &str,
        partition: i32,
        mut record: Record,
        links: Vec<Link>,
    ) -> Result<i64> {
        let plan = self.plan(topic, partition, record.key.as_deref());
        let span = self
            .tracer
            .span_builder(plan.name)
            .with_kind(SpanKind::Producer)
            .with_attributes(plan.attributes)
            .with_links(links)
            .start_with_context(&self.tracer, parent);
        let cx = parent.with_span(span);
        if inject_with(&cx, &mut record.headers, self.existing) == Injected::KeptExisting {
            cx.span()
                .add_event("kept the record's existing traceparent", Vec::new());
        }
        let client = match plan.client {
            Some(client) => Ok(client),
            None => self.connect_partition(topic, partition).await,
        };
        let result = match client {
            Ok(client) => client
                .produce(vec![record], Compression::NoCompression)
                .await
                .map_err(|source| Error::Client {
                    bootstrap: self.bootstrap.clone(),
                    source,
                }),
            Err(e) => Err(e),
        };
        let span = cx.span();
        let result = match result {
            Ok(offsets) => match offsets.first() {
                Some(&offset) => {
                    span.set_attribute(KeyValue::new(attr::OFFSET, offset));
                    Ok(offset)
                }
                None => Err(Error::Topic {
                    topic: topic.to_owned(),
                    bootstrap: self.bootstrap.clone(),
                    reason: "the broker acknowledged the record without an offset".into(),
                }),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            let kind = match e {
                Error::Client { source, .. } => error_type(source),
                _ => "_OTHER".into(),
            };
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, kind));
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
        result
    }
}

/// Where a new consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// The earliest record still kept (the default, as the stockapp API
    /// service does).
    #[default]
    Earliest,
    /// Only records produced after the consumer was built.
    Latest,
}

/// Positions of named consumers, so that a consumer built again under the
/// same name (a restart) resumes where the previous one stopped, as a
/// Kafka consumer group would. Owned by a test, never global.
///
/// ```
/// use kafka_trace_harness::traced::OffsetStore;
///
/// let store = OffsetStore::new();
/// assert_eq!(store.get("api", "trades", 0), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct OffsetStore(Arc<std::sync::Mutex<HashMap<GroupPartition, i64>>>);

/// (consumer name, topic, partition).
type GroupPartition = (String, String, i32);

impl OffsetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next offset `group` will read from `topic`/`partition`.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(group.to_owned(), topic.to_owned(), partition))
            .copied()
    }

    fn commit(&self, group: &str, topic: &str, partition: i32, next: i64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map
            .entry((group.to_owned(), topic.to_owned(), partition))
            .or_insert(next);
        *entry = (*entry).max(next);
    }
}

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
    max_wait: Duration,
    store: Option<OffsetStore>,
}

impl TracedConsumerBuilder {
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

    /// How long one fetch waits on an empty partition. Default 50 ms: a
    /// poll returns quickly when records exist, and an idle poll is cheap.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Connects to every partition of the topic and finds the start offsets.
    pub async fn build(self, broker: &Broker, tracer: SdkTracer) -> Result<TracedConsumer> {
        let client = broker.client().await?;
        let bootstrap = broker.bootstrap_servers().to_owned();
        let client_error = |source| Error::Client {
            bootstrap: bootstrap.clone(),
            source,
        };
        let topics = client.list_topics().await.map_err(client_error)?;
        let Some(topic) = topics.iter().find(|t| t.name == self.topic) else {
            return Err(Error::Topic {
                topic: self.topic,
                bootstrap,
                reason: "no such topic: create it before building the consumer".into(),
            });
        };
        let mut partitions = Vec::new();
        let mut offsets = BTreeMap::new();
        for &id in &topic.partitions {
            let pc = client
                .partition_client(self.topic.as_str(), id, UnknownTopicHandling::Retry)
                .await
                .map_err(client_error)?;
            let stored = self
                .store
                .as_ref()
                .and_then(|s| s.get(&self.group, &self.topic, id));
            let start = match (stored, self.start) {
                (Some(next), _) => next,
                (None, StartFrom::Earliest) => pc
                    .get_offset(OffsetAt::Earliest)
                    .await
                    .map_err(client_error)?,
                (None, StartFrom::Latest) => pc
                    .get_offset(OffsetAt::Latest)
                    .await
                    .map_err(client_error)?,
            };
            offsets.insert(id, start);
            partitions.push((id, Arc::new(pc)));
        }
        let mut fixed = server(&bootstrap);
        fixed.push(KeyValue::new(attr::CONSUMER_GROUP, shared(&self.group)));
        let partition_ids = partitions
            .iter()
            .map(|(id, _)| (*id, partition_id(*id)))
            .collect();
        Ok(TracedConsumer {
            template: SpanTemplate::new("process", &self.topic, &fixed),
            bootstrap,
            tracer,
            partitions,
            partition_ids,
            committed: offsets.clone(),
            fetched: offsets,
            pending: VecDeque::new(),
            settings: self,
        })
    }
}

/// Reads every partition of one topic under a consumer name, one
/// `process <topic>` CONSUMER span per record.
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
pub struct TracedConsumer {
    settings: TracedConsumerBuilder,
    bootstrap: String,
    /// Name and fixed attributes of every `process` span.
    template: SpanTemplate,
    tracer: SdkTracer,
    partitions: Vec<(i32, Arc<PartitionClient>)>,
    /// Each partition's id attribute value, formatted once.
    partition_ids: FxHashMap<i32, StringValue>,
    /// Next offset to fetch, per partition.
    fetched: BTreeMap<i32, i64>,
    /// Next offset to hand out, per partition.
    committed: BTreeMap<i32, i64>,
    /// Fetched but not yet handed out; their spans start on hand-out, so
    /// a record dropped here leaves no `process` span behind.
    pending: VecDeque<Fetched>,
}

impl TracedConsumer {
    /// Settings for consumer `group` of `topic`: from the earliest record,
    /// process spans parented by the record's context, 50 ms fetch wait,
    /// no [`OffsetStore`].
    pub fn builder(group: impl Into<String>, topic: impl Into<String>) -> TracedConsumerBuilder {
        TracedConsumerBuilder {
            group: group.into(),
            topic: topic.into(),
            start: StartFrom::Earliest,
            parent: ConsumerParent::Extracted,
            max_wait: Duration::from_millis(50),
            store: None,
        }
    }

    /// The consumer's name, reported as `messaging.consumer.group.name`.
    pub fn group(&self) -> &str {
        &self.settings.group
    }

    /// The next offset to hand out, per partition.
    pub fn offsets(&self) -> &BTreeMap<i32, i64> {
        &self.committed
    }

    /// Records `handed` as delivered: here and in the offset store.
    fn commit(&mut self, handed: &[Fetched]) {
        for r in handed {
            let next = self.committed.entry(r.partition).or_default();
            *next = (*next).max(r.offset + 1);
            if let Some(store) = &self.settings.store {
                store.commit(
                    &self.settings.group,
                    &self.settings.topic,
                    r.partition,
                    *next,
                );
            }
        }
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
        let out = self.next_batch().await?;
        Ok(self.hand_out(ambient, out))
    }

    /// Commits `records` and starts their `process` spans.
    fn hand_out(&mut self, ambient: &Context, records: Vec<Fetched>) -> Vec<ConsumedRecord> {
        self.commit(&records);
        records
            .into_iter()
            .map(|r| self.start_process(ambient, r.partition, r.offset, r.record))
            .collect()
    }

    /// Records kept from an earlier call, else one fetch round.
    async fn next_batch(&mut self) -> Result<Vec<Fetched>> {
        if !self.pending.is_empty() {
            return Ok(self.pending.drain(..).collect());
        }
        let max_wait = i32::try_from(self.settings.max_wait.as_millis()).unwrap_or(i32::MAX);
        // All partitions at once, without spawning: a fetch on an empty
        // partition waits `max_wait` and must not delay the others.
        let fetches = self.partitions.iter().map(|(id, client)| {
            let from = self.fetched[id];
            async move { (*id, from, drain(client, from, max_wait).await) }
        });
        let mut batches = Vec::new();
        for (id, from, fetched) in futures::future::join_all(fetches).await {
            let records = fetched.map_err(|source| Error::Client {
                bootstrap: self.bootstrap.clone(),
                source,
            })?;
            batches.push((id, from, records));
        }
        // Partition order, then offset order: deterministic for tests.
        batches.sort_by_key(|(id, _, _)| *id);
        let mut out = Vec::new();
        for (id, from, mut records) in batches {
            records.retain(|r| r.offset >= from);
            records.sort_by_key(|r| r.offset);
            records.dedup_by_key(|r| r.offset);
            if let Some(last) = records.last() {
                self.fetched.insert(id, last.offset + 1);
            }
            for r in records {
                out.push(Fetched {
                    partition: id,
                    offset: r.offset,
                    record: r.record,
                });
            }
        }
        Ok(out)
    }

    /// Polls until `count` records arrived or `deadline` passed; returns
    /// exactly `count` records and keeps any extra for the next call.
    pub async fn consume(
        &mut self,
        count: usize,
        deadline: Duration,
    ) -> Result<Vec<ConsumedRecord>> {
        let started = Instant::now();
        let mut got: Vec<Fetched> = Vec::new();
        while got.len() < count {
            if started.elapsed() >= deadline {
                // Not handed out: the next call returns them first.
                let missing = count - got.len();
                for record in got.into_iter().rev() {
                    self.pending.push_front(record);
                }
                return Err(Error::Timeout {
                    what: format!(
                        "consumer {:?} reading {count} records of topic {:?} ({missing} missing)",
                        self.settings.group, self.settings.topic,
                    ),
                    bootstrap: self.bootstrap.clone(),
                    timeout: deadline,
                });
            }
            let polled = self.next_batch().await?;
            let room = count - got.len();
            let mut polled = polled.into_iter();
            got.extend(polled.by_ref().take(room));
            // Records past `count` wait for the next call.
            self.pending.extend(polled);
        }
        Ok(self.hand_out(&Context::new(), got))
    }

    fn start_process(
        &self,
        ambient: &Context,
        partition: i32,
        offset: i64,
        record: Record,
    ) -> ConsumedRecord {
        let topic = &self.settings.topic;
        let extracted = extract_with(ambient, &record.headers);
        let id = match self.partition_ids.get(&partition) {
            Some(id) => id.clone(),
            None => partition_id(partition),
        };
        let mut attributes = self.template.attributes(id, record.key.as_deref(), 2);
        attributes.push(KeyValue::new(attr::OFFSET, offset));
        if let Some(problem) = &extracted.problem {
            attributes.push(KeyValue::new(attr::CONTEXT_PROBLEM, problem.kind()));
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
        if let Some(problem) = &extracted.problem {
            span.add_event(
                CONTEXT_UNUSABLE_EVENT,
                vec![
                    KeyValue::new("reason", problem.kind()),
                    KeyValue::new("description", problem.to_string()),
                ],
            );
        }
        for ignored in &extracted.ignored {
            span.add_event(
                "trace context header ignored",
                vec![
                    KeyValue::new("reason", ignored.kind()),
                    KeyValue::new("description", ignored.to_string()),
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
            context,
        }
    }
}

/// Fetches from `from` until the partition's high watermark: the mock
/// cluster answers one batch per fetch, so a backlog takes several fetches,
/// and only the first may wait.
async fn drain(
    client: &PartitionClient,
    from: i64,
    max_wait_ms: i32,
) -> std::result::Result<Vec<rskafka::record::RecordAndOffset>, rskafka::client::error::Error> {
    const MAX_PER_POLL: usize = 10_000;
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let wait = if out.is_empty() { max_wait_ms } else { 0 };
        let (records, high_watermark) = client.fetch_records(next, 1..52_428_800, wait).await?;
        let before = out.len();
        for r in records {
            if r.offset >= next {
                next = r.offset + 1;
                out.push(r);
            }
        }
        if out.len() == before || next >= high_watermark || out.len() >= MAX_PER_POLL {
            return Ok(out);
        }
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
    context: Context,
}

impl ConsumedRecord {
    /// The context with the `process` span active and the record's
    /// baggage: pass it to [`TracedProducer::send`] so downstream sends
    /// become children of the process span.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Marks the process span failed (`error.type` and Error status).
    pub fn fail(&self, error_type: &str, description: impl Into<String>) {
        let span = self.context.span();
        span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type.to_owned()));
        span.set_status(Status::error(description.into()));
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

    /// Ends the process span.
    pub fn finish(self) {
        self.context.span().end();
    }
}
