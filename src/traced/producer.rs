//! The traced producer.

use std::sync::Arc;

use opentelemetry::trace::{Link, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::SdkTracer;
use rskafka::client::Client;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use rustc_hash::FxHashMap;

use super::attributes::{SpanTemplate, attr, error_type, partition_id, server};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::propagation::{ExistingTraceparent, Injected, inject_with};

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
