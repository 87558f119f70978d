//! A Kafka-protocol broker for one test: embedded, in a container, or external.
//!
//! [`Broker::start`] reads the environment (embedded unless told otherwise);
//! [`Broker::builder`] chooses in code. Every broker hands out rskafka
//! clients, creates topics, and cleans up when dropped.

mod admin;
#[cfg(feature = "container")]
mod container;
mod embedded;
mod faults;
mod front;
mod image;
mod watch;

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};

pub use admin::{AdminChannel, AdminCommand, AdminParseError, MAX_TOPIC_LEN};
use embedded::{EmbeddedCluster, EmbeddedOptions};
pub use faults::{ApiKey, ErrorCode};
pub use image::{
    ContainerImage, DEFAULT_KAFKA_IMAGE, DEFAULT_KAFKA_TAG, LOCAL_HARNESS_IMAGE, LOCAL_HARNESS_TAG,
};
use watch::DeletionWatch;

pub use crate::error::DeletedRecords;
use crate::error::{Error, Result};

/// Chooses the backend: `embedded` (default), `container` or `external`.
pub const BROKER_ENV: &str = "KAFKA_TRACE_HARNESS_BROKER";
/// Bootstrap list (`host:port[,host:port]`) of an existing cluster; setting
/// it alone selects the external backend.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";
/// `name[:tag]` of the image the container backend runs.
pub const IMAGE_ENV: &str = "KAFKA_TRACE_HARNESS_IMAGE";

/// Which kind of broker to run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// librdkafka's mock cluster inside this process (the default).
    Embedded,
    /// A broker container started through testcontainers (feature
    /// `container`; without it, starting one is an [`Error::Config`]).
    Container(ContainerImage),
    /// An existing cluster reached through a bootstrap list.
    External {
        /// `host:port[,host:port…]`.
        bootstrap: String,
    },
}

impl Backend {
    /// Reads [`BROKER_ENV`], [`BOOTSTRAP_ENV`] and [`IMAGE_ENV`].
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let bootstrap = var(BOOTSTRAP_ENV);
        let image = || {
            var(IMAGE_ENV)
                .map(|r| ContainerImage::parse(&r))
                .unwrap_or_default()
        };
        match var(BROKER_ENV).as_deref().map(str::trim) {
            None if bootstrap.is_some() => Ok(Self::External {
                bootstrap: bootstrap.unwrap_or_default(),
            }),
            None | Some("embedded") => Ok(Self::Embedded),
            Some("container") => Ok(Self::Container(image())),
            Some("external") => match bootstrap {
                Some(bootstrap) => Ok(Self::External { bootstrap }),
                None => Err(Error::Config {
                    variable: BROKER_ENV,
                    value: "external".into(),
                    reason: format!("the external backend needs {BOOTSTRAP_ENV}=host:port"),
                }),
            },
            Some(other) => Err(Error::Config {
                variable: BROKER_ENV,
                value: other.into(),
                reason: "expected embedded, container or external".into(),
            }),
        }
    }
}

/// Which backend a running [`Broker`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// See [`Backend::Embedded`].
    Embedded,
    /// See [`Backend::Container`].
    Container,
    /// See [`Backend::External`].
    External,
}

/// Settings for a [`Broker`]; every default is set in [`BrokerBuilder::new`].
#[derive(Debug, Clone)]
#[must_use]
pub struct BrokerBuilder {
    backend: Backend,
    embedded: EmbeddedOptions,
    timeout: Duration,
    client_deadline: Duration,
    watch_deleted_records: bool,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerBuilder {
    /// Embedded backend, one mock broker on a free loopback port behind the
    /// stall-free front, 10 s deadline for connecting and readiness, 10 s
    /// deadline for every client operation.
    pub fn new() -> Self {
        Self {
            backend: Backend::Embedded,
            embedded: EmbeddedOptions::default(),
            timeout: Duration::from_secs(10),
            client_deadline: DEFAULT_CLIENT_DEADLINE,
            watch_deleted_records: true,
        }
    }

    /// Chooses the backend from the environment (see [`Backend::from_env`]).
    pub fn from_env() -> Result<Self> {
        Ok(Self::new().backend(Backend::from_env()?))
    }

    /// The backend to start. Default: [`Backend::Embedded`].
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Number of brokers in the embedded mock cluster. Default 1; more are
    /// useful with the fault-injection API ([`Broker::mock_cluster`]).
    pub fn embedded_brokers(mut self, count: u16) -> Self {
        self.embedded.brokers = i32::from(count.max(1));
        self
    }

    /// Serve the embedded brokers through the harness's TCP front, which
    /// removes rskafka's 40 ms delayed-ACK stall. Default `true`; `false`
    /// exposes the mock brokers directly (for comparison benches).
    pub fn stall_free(mut self, enabled: bool) -> Self {
        self.embedded.stall_free_front = enabled;
        self
    }

    /// Where the embedded broker listens: host and first broker's port
    /// (0 = a free port). Default `127.0.0.1:0`. Only with the front.
    pub fn listen(mut self, host: IpAddr, port: u16) -> Self {
        self.embedded.listen_host = host;
        self.embedded.first_port = port;
        self
    }

    /// Host name the embedded broker advertises in metadata. Default: the
    /// listen host, or `127.0.0.1` when that is unspecified (`0.0.0.0`).
    pub fn advertised_host(mut self, host: impl Into<String>) -> Self {
        self.embedded.advertised_host = Some(host.into());
        self
    }

    /// How long a new consumer group of the embedded broker waits for more
    /// members before its first assignment (Kafka's
    /// `group.initial.rebalance.delay.ms`). Default 0, so a group's first
    /// record arrives at once; librdkafka's mock on its own waits 3 s.
    pub fn group_initial_rebalance_delay(mut self, delay: Duration) -> Self {
        self.embedded.group_initial_rebalance_delay = delay;
        self
    }

    /// Deadline for connecting, for readiness and for topic creation.
    /// Default 10 s; a container's first start may need more.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long any one operation of a client the harness creates (a
    /// produce with its retries, a fetch, a metadata lookup) may take
    /// before it fails with an error naming what it waited for. Default
    /// 10 s: long enough to ride out a broker that stalls for a few
    /// seconds, short enough that a test against a dead broker fails
    /// instead of hanging. rskafka's own default retries forever.
    pub fn client_deadline(mut self, deadline: Duration) -> Self {
        self.client_deadline = deadline;
        self
    }

    /// Watch the embedded broker for records it deletes. Default `true`.
    ///
    /// librdkafka's mock cluster keeps at most **5 MiB or 100,000 record
    /// batches per partition** and silently deletes the oldest beyond
    /// that. The watch makes it loud: [`Broker::deleted_records`] lists
    /// them, [`Broker::shutdown`] fails naming them, and a
    /// [`TracedConsumer`](crate::TracedConsumer) that falls behind the log
    /// start fails with [`Error::RecordsDeleted`]. The ways out: more
    /// partitions, producers that batch records (one batch per produce
    /// request), or the container or external backend. Turning the watch
    /// off only saves its periodic offset requests (see the `broker`
    /// bench).
    pub fn watch_deleted_records(mut self, enabled: bool) -> Self {
        self.watch_deleted_records = enabled;
        self
    }

    /// Starts the broker and waits until it answers metadata requests.
    pub fn start(self) -> impl Future<Output = Result<Broker>> {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow_local(async move {
            let (running, bootstrap) = match &self.backend {
                Backend::Embedded => {
                    let cluster = EmbeddedCluster::start(&self.embedded).await?;
                    let bootstrap = cluster.bootstrap().to_owned();
                    (Running::Embedded(cluster), bootstrap)
                }
                #[cfg(feature = "container")]
                Backend::Container(image) => {
                    let (container, bootstrap) = container::start(image, self.timeout).await?;
                    (Running::Container(Box::new(container)), bootstrap)
                }
                #[cfg(not(feature = "container"))]
                Backend::Container(image) => {
                    return Err(Error::Config {
                        variable: BROKER_ENV,
                        value: format!("container ({})", image.reference()),
                        reason: "this build of kafka-trace-harness has no `container` feature; \
                                 enable it in Cargo.toml to run brokers through testcontainers"
                            .into(),
                    });
                }
                Backend::External { bootstrap } => (Running::External, bootstrap.clone()),
            };
            let mut broker = Broker {
                running,
                bootstrap,
                timeout: self.timeout,
                client_deadline: self.client_deadline,
                watch: None,
            };
            let gate = match &broker.running {
                Running::Embedded(cluster) => {
                    Some(watch::ProduceGate::counting(cluster.produced_bytes()))
                }
                // The harness image runs the same mock cluster, limits included;
                // its produce traffic is not counted here, so the watch always looks.
                #[cfg(feature = "container")]
                Running::Container(c) if c.admin_address().is_some() => Some(Default::default()),
                _ => None,
            };
            if let Some(gate) = gate
                && self.watch_deleted_records
            {
                let bootstrap = broker.bootstrap_list();
                let deadline = self.client_deadline;
                let connect = move || {
                    ClientBuilder::new(bootstrap.clone())
                        .client_id("kafka-trace-harness-watch")
                        .backoff_config(retrying_backoff(deadline))
                        .build()
                };
                broker.watch = Some(DeletionWatch::start(connect, gate, self.client_deadline));
            }
            if broker.kind() != BackendKind::Embedded {
                // The mock cluster is ready once created; others prove it.
                let client = broker.client().await?;
                broker
                    .bounded(
                        || "listing the topics (readiness)".into(),
                        broker.timeout,
                        client.list_topics(),
                    )
                    .await?;
            }
            Ok(broker)
        })
    }
}

#[derive(Debug)]
enum Running {
    Embedded(EmbeddedCluster),
    // Boxed: a container handle is far larger than the other variants.
    #[cfg(feature = "container")]
    Container(Box<container::RunningContainer>),
    External,
}

/// A running Kafka-protocol broker owned by one test.
///
/// Dropping it stops it (embedded) or removes its container; call
/// [`Broker::shutdown`] to wait for that and see errors.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kafka_trace_harness::Result<()> {
/// use kafka_trace_harness::Broker;
///
/// let broker = Broker::builder().start().await?;
/// let topic = broker.create_unique_topic("orders", 3).await?;
///
/// let client = broker.client().await?;
/// let topics = client.list_topics().await.expect("metadata");
/// assert!(topics.iter().any(|t| t.name == topic && t.partitions.len() == 3));
/// broker.shutdown().await
/// # }
/// ```
#[derive(Debug)]
pub struct Broker {
    running: Running,
    bootstrap: String,
    timeout: Duration,
    client_deadline: Duration,
    watch: Option<DeletionWatch>,
}

impl Broker {
    /// Starts the broker the environment asks for; embedded by default.
    pub async fn start() -> Result<Self> {
        BrokerBuilder::from_env()?.start().await
    }

    /// Settings for a broker, starting from the defaults.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::new()
    }

    /// `host:port[,host:port…]` for any Kafka client.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Which backend runs this broker.
    pub fn kind(&self) -> BackendKind {
        match self.running {
            Running::Embedded(_) => BackendKind::Embedded,
            #[cfg(feature = "container")]
            Running::Container(_) => BackendKind::Container,
            Running::External => BackendKind::External,
        }
    }

    fn bootstrap_list(&self) -> Vec<String> {
        self.bootstrap.split(',').map(str::to_owned).collect()
    }

    /// Whether the broker answers a fetch as soon as records arrive, as
    /// Kafka does: all but the embedded broker without its front.
    pub(crate) fn answers_fetches_early(&self) -> bool {
        match &self.running {
            Running::Embedded(cluster) => cluster.has_fronts(),
            _ => true,
        }
    }

    /// The deadline of every client operation (see
    /// [`BrokerBuilder::client_deadline`]).
    pub fn client_deadline(&self) -> Duration {
        self.client_deadline
    }

    /// A new rskafka client connected to this broker, within the deadline.
    ///
    /// Its requests retry transient errors (a dropped connection, a leader
    /// moving) with a short backoff, and give up once the retries add up
    /// to [`client_deadline`](Self::client_deadline). A request to a broker
    /// that accepts it but never answers still waits: bound such calls
    /// with `tokio::time::timeout`, as the traced clients do.
    pub async fn client(&self) -> Result<Client> {
        self.client_with(retrying_backoff(self.client_deadline))
            .await
    }

    /// A client whose requests never retry on their own: the traced
    /// producer retries itself, so that each attempt shows on its span.
    pub(crate) async fn single_attempt_client(&self) -> Result<Client> {
        self.client_with(single_attempt_backoff()).await
    }

    async fn client_with(&self, backoff: BackoffConfig) -> Result<Client> {
        // rskafka's futures are deep: behind a pointer (crate::shallow).
        let build = crate::shallow::shallow(
            ClientBuilder::new(self.bootstrap_list())
                .client_id("kafka-trace-harness")
                .backoff_config(backoff)
                .build(),
        );
        match tokio::time::timeout(self.timeout, build).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(source)) => Err(Error::Client {
                bootstrap: self.bootstrap.clone(),
                source,
            }),
            Err(_) => Err(Error::Timeout {
                what: "connecting a client".into(),
                bootstrap: self.bootstrap.clone(),
                timeout: self.timeout,
            }),
        }
    }

    /// `work`, a raw rskafka request, within `deadline`; a failure names
    /// `what` the harness was doing.
    pub(crate) async fn bounded<T>(
        &self,
        what: impl FnOnce() -> String,
        deadline: Duration,
        work: impl Future<Output = std::result::Result<T, rskafka::client::error::Error>> + Send,
    ) -> Result<T> {
        // rskafka's futures are deep: behind a pointer (crate::shallow).
        match tokio::time::timeout(deadline, crate::shallow::shallow(work)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(Error::Request {
                what: what(),
                bootstrap: self.bootstrap.clone(),
                source: Box::new(source),
            }),
            Err(_) => Err(Error::Timeout {
                what: what(),
                bootstrap: self.bootstrap.clone(),
                timeout: deadline,
            }),
        }
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1).
    pub fn create_topic<'a>(
        &'a self,
        topic: &'a str,
        partitions: u16,
    ) -> impl Future<Output = Result<()>> + 'a {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow(async move {
            let partitions = i32::from(partitions.max(1));
            match &self.running {
                // The mock cluster has no CreateTopics handler: use its own API.
                Running::Embedded(cluster) => cluster.create_topic(topic, partitions),
                _ => {
                    let work = self.create_topic_through_kafka(topic, partitions);
                    tokio::time::timeout(self.timeout, work)
                        .await
                        .map_err(|_| Error::Timeout {
                            what: format!("creating topic {topic:?}"),
                            bootstrap: self.bootstrap.clone(),
                            timeout: self.timeout,
                        })?
                }
            }
        })
    }

    async fn create_topic_through_kafka(&self, topic: &str, partitions: i32) -> Result<()> {
        let topic_error = |reason: String| Error::Topic {
            topic: topic.to_owned(),
            bootstrap: self.bootstrap.clone(),
            reason,
        };
        #[cfg(feature = "container")]
        if let Running::Container(container) = &self.running
            && let Some(admin) = container.admin_address()
        {
            // A harness image runs the mock cluster, which has no
            // CreateTopics: it takes the request on its admin channel.
            return admin::create_topic(admin, topic, partitions as u16)
                .await
                .map_err(topic_error);
        }
        let client = self.client().await?;
        let controller = client
            .controller_client()
            .map_err(|e| topic_error(e.to_string()))?;
        crate::shallow::shallow(controller.create_topic(topic, partitions, 1, 5_000))
            .await
            .map_err(|e| topic_error(e.to_string()))
    }

    /// Creates a topic named by [`unique_topic_name`] and returns its name.
    pub async fn create_unique_topic(&self, prefix: &str, partitions: u16) -> Result<String> {
        let topic = unique_topic_name(prefix);
        self.create_topic(&topic, partitions).await?;
        Ok(topic)
    }

    /// librdkafka's mock-cluster API (broker down / up, request errors,
    /// round-trip time, leaders) for fault tests; `None` unless embedded.
    /// Behind the fronts (the default), consumer groups are coordinated by
    /// the fronts, not the mock: inject group request errors through
    /// [`Broker::request_errors`], which reaches them.
    pub fn mock_cluster(&self) -> Option<MockCluster<'_, DefaultClientContext>> {
        match &self.running {
            Running::Embedded(cluster) => Some(cluster.mock_cluster()),
            _ => None,
        }
    }

    /// Records the embedded broker deleted so far, per partition, as its
    /// watch last saw them (see [`BrokerBuilder::watch_deleted_records`]);
    /// also of the harness image in a container. Empty for other backends.
    pub fn deleted_records(&self) -> Vec<DeletedRecords> {
        self.watch
            .as_ref()
            .map(DeletionWatch::seen)
            .unwrap_or_default()
    }

    /// A receiver that changes whenever the watch finds more deleted
    /// records (the standalone `broker` command prints them); `None` when
    /// nothing is watched.
    pub fn watch_deleted(&self) -> Option<tokio::sync::watch::Receiver<Vec<DeletedRecords>>> {
        self.watch.as_ref().map(DeletionWatch::subscribe)
    }

    /// Why the deleted-records watch's last look failed, if it did: it
    /// cannot connect to the broker, or some partition did not answer. It
    /// keeps trying at every look; `None` once a look saw every partition
    /// (or before the first look: see [`BrokerBuilder::watch_deleted_records`]).
    pub fn deletion_watch_problem(&self) -> Option<String> {
        self.watch.as_ref().and_then(DeletionWatch::problem)
    }

    /// A receiver that changes whenever the deleted-records watch starts
    /// failing (with why) or sees every partition again (`None`); `None`
    /// when nothing is watched.
    pub fn watch_deletion_problem(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>> {
        self.watch.as_ref().map(DeletionWatch::subscribe_problem)
    }

    /// Looks for deleted records now (not waiting for the watch's next
    /// look) and returns every partition that lost some.
    ///
    /// Fails with [`Error::DeletionWatch`], naming each partition and why,
    /// when some partition could not be looked at.
    pub fn check_deleted_records(&self) -> impl Future<Output = Result<Vec<DeletedRecords>>> {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow(async move {
            let Some(watch) = &self.watch else {
                return Ok(Vec::new());
            };
            if !watch.may_have_deleted() {
                return Ok(Vec::new());
            }
            let client = self.client().await?;
            watch
                .check_now(&client, self.client_deadline)
                .await
                .map_err(|reason| Error::DeletionWatch {
                    bootstrap: self.bootstrap.clone(),
                    reason,
                })
        })
    }

    /// Stops the broker (embedded) or removes its container, and waits.
    ///
    /// Fails with [`Error::BrokerDeletedRecords`] if the embedded broker
    /// deleted records during its life, and with [`Error::DeletionWatch`]
    /// if it may have but the last look could not tell (it is stopped all
    /// the same).
    pub async fn shutdown(self) -> Result<()> {
        let bootstrap = self.bootstrap.clone();
        let deleted = self.shutdown_listing_deleted().await?;
        if deleted.is_empty() {
            Ok(())
        } else {
            Err(Error::BrokerDeletedRecords { bootstrap, deleted })
        }
    }

    /// Like [`shutdown`](Self::shutdown), returning the records the
    /// embedded broker deleted instead of failing on them: for a caller
    /// that knows each was read before it went (a [`TracedConsumer`](crate::TracedConsumer)
    /// that finds its next record deleted fails with
    /// [`Error::RecordsDeleted`]), or that reports them itself.
    ///
    /// Fails with [`Error::DeletionWatch`] when the broker may have deleted
    /// records (more was produced than one partition keeps) but the last
    /// look could not see every partition: a loss must not pass for none.
    pub fn shutdown_listing_deleted(self) -> impl Future<Output = Result<Vec<DeletedRecords>>> {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow(async move {
            // A failed look (the broker down on purpose, say) fails the
            // shutdown, naming what the watch saw before; the broker is
            // stopped all the same.
            let deleted = self.check_deleted_records().await.map_err(|e| match e {
                Error::DeletionWatch { bootstrap, reason } => {
                    let seen = self.deleted_records();
                    let reason = match seen.is_empty() {
                        true => reason,
                        false => format!(
                            "{reason}; seen deleted before: {}",
                            DeletedRecords::list(&seen)
                        ),
                    };
                    Error::DeletionWatch { bootstrap, reason }
                }
                other => other,
            });
            drop(self.watch);
            let stopped = match self.running {
                Running::Embedded(cluster) => {
                    cluster.shutdown().await;
                    Ok(())
                }
                #[cfg(feature = "container")]
                Running::Container(container) => container.remove().await,
                Running::External => Ok(()),
            };
            stopped.and(deleted)
        })
    }
}

/// Default of [`BrokerBuilder::client_deadline`].
pub const DEFAULT_CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// Retries from 10 ms, doubling up to 1 s, until they add up to `deadline`.
pub(crate) fn retrying_backoff(deadline: Duration) -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(1),
        base: 2.0,
        deadline: Some(deadline),
    }
}

/// No retry: the first error is returned (rskafka still drops a broken
/// connection, so the next request reconnects).
fn single_attempt_backoff() -> BackoffConfig {
    BackoffConfig {
        deadline: Some(Duration::ZERO),
        ..retrying_backoff(Duration::ZERO)
    }
}

/// A topic name no other test in this process (or another) will use:
/// `prefix`, a process-wide counter and a random suffix.
///
/// ```
/// let a = kafka_trace_harness::unique_topic_name("trades");
/// let b = kafka_trace_harness::unique_topic_name("trades");
/// assert!(a.starts_with("trades-"));
/// assert_ne!(a, b);
/// ```
pub fn unique_topic_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{n}-{}", &random[..12])
}
