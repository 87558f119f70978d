//! The traced producer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::SdkTracer;
use rskafka::client::Client;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::Record;
use rustc_hash::FxHashMap;

use super::attributes::{SpanTemplate, attr, mark_failed, partition_id, server};
use super::connect;
use super::retry::{
    SEND_ATTEMPT_FAILED_EVENT, failed_attempt, is_transient_error, retry_backoff, send_error_type,
};
use crate::broker::{Broker, DEFAULT_CLIENT_DEADLINE};
use crate::error::{Error, Result};
use crate::propagation::{ExistingTraceparent, Injected, inject_with};

/// Produces records, one `send <topic>` PRODUCER span per record, with the
/// span's context injected into the record's headers.
///
/// Any OpenTelemetry [`Tracer`] records the spans: a capture's
/// ([`SpanCapture::tracer`](crate::SpanCapture::tracer), the default type
/// parameter), your own provider's, or the global one
/// (`opentelemetry::global::tracer(..)`, captured per test by
/// [`SpanCapture::scope`](crate::SpanCapture::scope); see
/// [`capture::global`](crate::capture::global)).
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
pub struct TracedProducer<T = SdkTracer> {
    client: Client,
    bootstrap: String,
    /// `server.*` attributes, parsed once from `bootstrap`.
    server: Vec<KeyValue>,
    /// What each topic sent to needs again for every record. A std mutex
    /// held only for lookups: connecting happens outside it.
    routes: std::sync::Mutex<FxHashMap<String, Route>>,
    tracer: T,
    existing: ExistingTraceparent,
    /// How long one send may take, retries included.
    deadline: Duration,
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
    /// Held while connecting, so that many first sends at once make one
    /// connection (and one topic lookup), not one each.
    connecting: Arc<tokio::sync::Mutex<()>>,
}

/// A send span's name and attributes, and the partition's client if one
/// is connected: everything [`TracedProducer::send_linked`] needs from its
/// routes, read under one lock.
struct SendPlan {
    name: String,
    attributes: Vec<KeyValue>,
    client: Option<Arc<PartitionClient>>,
}

impl<T> TracedProducer<T>
where
    T: Tracer<Span: Send + Sync + 'static> + Send + Sync,
{
    /// A producer on a new client of `broker`, recording with `tracer`;
    /// each send may take the broker's
    /// [`client_deadline`](Broker::client_deadline), retries included.
    pub fn connect<'a>(broker: &'a Broker, tracer: T) -> impl Future<Output = Result<Self>> + 'a
    where
        T: 'a,
    {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow(async move {
            Ok(Self::new(
                broker.single_attempt_client().await?,
                broker.bootstrap_servers(),
                tracer,
            )
            .deadline(broker.client_deadline()))
        })
    }

    /// A producer on an existing client; `bootstrap` only feeds the
    /// `server.*` attributes and error messages. The client's own retries
    /// happen inside each of the producer's attempts.
    pub fn new(client: Client, bootstrap: &str, tracer: T) -> Self {
        Self {
            client,
            bootstrap: bootstrap.to_owned(),
            server: server(bootstrap),
            routes: std::sync::Mutex::default(),
            tracer,
            existing: ExistingTraceparent::Keep,
            deadline: DEFAULT_CLIENT_DEADLINE,
        }
    }

    /// How long one send may take, its retries included, before it fails
    /// with [`Error::Timeout`] (or the last attempt's error). Default: the
    /// broker's [`client_deadline`](Broker::client_deadline) for
    /// [`connect`](Self::connect), [`DEFAULT_CLIENT_DEADLINE`] for
    /// [`new`](Self::new).
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
                connecting: Arc::default(),
            });
        SendPlan {
            name: route.template.name.clone(),
            // One more for the offset, set once the broker acknowledges.
            attributes: route.template.attributes(target.id.clone(), key, 1),
            client: target.client.clone(),
        }
    }

    /// Connects to `topic`/`partition` and keeps the client for later
    /// sends; sends racing to connect wait for the first one's connection.
    async fn connect_partition(&self, topic: &str, partition: i32) -> Result<Arc<PartitionClient>> {
        let connecting = self
            .routes()
            .get(topic)
            .and_then(|route| route.partitions.get(&partition))
            .map(|target| Arc::clone(&target.connecting));
        let _connecting = match &connecting {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        if let Some(client) = self.connected(topic, partition) {
            return Ok(client);
        }
        let client =
            connect::partition_client(&self.client, &self.bootstrap, topic, partition).await?;
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
    pub fn send<'a>(
        &'a self,
        parent: &'a Context,
        topic: &'a str,
        partition: i32,
        record: Record,
    ) -> impl Future<Output = Result<i64>> + 'a {
        self.send_linked(parent, topic, partition, record, Vec::new())
    }

    /// Like [`send`](Self::send), with `links` on the send span (for
    /// example to the earlier records an aggregate was computed from).
    pub fn send_linked<'a>(
        &'a self,
        parent: &'a Context,
        topic: &'a str,
        partition: i32,
        mut record: Record,
        links: Vec<Link>,
    ) -> impl Future<Output = Result<i64>> + 'a {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow(async move {
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
            let started = Instant::now();
            let mut client = plan.client;
            let mut attempt = 1u32;
            let result = loop {
                let remaining = self.deadline.saturating_sub(started.elapsed());
                let try_once = self.attempt(topic, partition, client.take(), record.clone());
                let error = match tokio::time::timeout(remaining, try_once).await {
                    Ok(Ok(offset)) => break Ok(offset),
                    Ok(Err(error)) => error,
                    Err(_) => {
                        break Err(Error::Timeout {
                            what: format!(
                                "sending a record to topic {topic:?} partition {partition} \
                                 ({attempt} attempt(s))"
                            ),
                            bootstrap: self.bootstrap.clone(),
                            timeout: self.deadline,
                        });
                    }
                };
                let backoff = retry_backoff(attempt);
                if !is_transient_error(&error) || started.elapsed() + backoff >= self.deadline {
                    break Err(error);
                }
                // The attempt failed but another fits in the deadline: say so on
                // the span, with the same headers (one traceparent) next time.
                cx.span()
                    .add_event(SEND_ATTEMPT_FAILED_EVENT, failed_attempt(attempt, &error));
                tokio::time::sleep(backoff).await;
                attempt += 1;
            };
            let span = cx.span();
            if attempt > 1 {
                span.set_attribute(KeyValue::new(attr::SEND_ATTEMPTS, i64::from(attempt)));
            }
            match &result {
                Ok(offset) => span.set_attribute(KeyValue::new(attr::OFFSET, *offset)),
                Err(e) => mark_failed(&span, send_error_type(e), e.to_string()),
            }
            span.end();
            result
        })
    }
}

impl<T> TracedProducer<T>
where
    T: Tracer<Span: Send + Sync + 'static> + Send + Sync,
{
    /// One produce request: connects the partition first if needed.
    async fn attempt(
        &self,
        topic: &str,
        partition: i32,
        client: Option<Arc<PartitionClient>>,
        record: Record,
    ) -> Result<i64> {
        let client = match client {
            Some(client) => client,
            None => match self.connected(topic, partition) {
                Some(client) => client,
                None => self.connect_partition(topic, partition).await?,
            },
        };
        // rskafka's futures are deep: behind a pointer (crate::shallow).
        let offsets = crate::shallow::rskafka_calls::produce(
            &client,
            vec![record],
            Compression::NoCompression,
        )
        .await
        .map_err(|source| self.client_error(topic, source))?;
        offsets.first().copied().ok_or_else(|| Error::Topic {
            topic: topic.to_owned(),
            bootstrap: self.bootstrap.clone(),
            reason: "the broker acknowledged the record without an offset".into(),
        })
    }

    /// The partition's client, if one is connected.
    fn connected(&self, topic: &str, partition: i32) -> Option<Arc<PartitionClient>> {
        self.routes()
            .get(topic)
            .and_then(|route| route.partitions.get(&partition))
            .and_then(|target| target.client.clone())
    }

    /// rskafka's `source`, or a topic error when the topic does not exist.
    fn client_error(&self, topic: &str, source: rskafka::client::error::Error) -> Error {
        connect::client_error(topic, &self.bootstrap, source)
    }
}
