//! The traced consumer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::SdkTracer;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use rustc_hash::FxHashMap;

use super::attributes::{CONTEXT_UNUSABLE_EVENT, SpanTemplate, attr, partition_id, server, shared};
use super::offsets::{OffsetStore, StartFrom};
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
