//! A Kafka-protocol broker for one test: embedded, in a container, or external.
//!
//! [`Broker::start`] reads the environment (embedded unless told otherwise);
//! [`Broker::builder`] chooses in code. Every broker hands out rskafka
//! clients, creates topics, and cleans up when dropped.

mod admin;
#[cfg(feature = "container")]
mod container;
mod embedded;
mod front;
mod image;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rskafka::client::{Client, ClientBuilder};

pub use admin::AdminChannel;
use embedded::{EmbeddedCluster, EmbeddedOptions};
pub use image::{
    ContainerImage, DEFAULT_KAFKA_IMAGE, DEFAULT_KAFKA_TAG, LOCAL_HARNESS_IMAGE, LOCAL_HARNESS_TAG,
};

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
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerBuilder {
    /// Embedded backend, one mock broker on a free loopback port behind the
    /// stall-free front, 10 s deadline for connecting and readiness.
    pub fn new() -> Self {
        Self {
            backend: Backend::Embedded,
            embedded: EmbeddedOptions::default(),
            timeout: Duration::from_secs(10),
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

    /// Deadline for connecting, for readiness and for topic creation.
    /// Default 10 s; a container's first start may need more.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the broker and waits until it answers metadata requests.
    pub async fn start(self) -> Result<Broker> {
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
        let broker = Broker {
            running,
            bootstrap,
            timeout: self.timeout,
        };
        if broker.kind() != BackendKind::Embedded {
            // The mock cluster is ready once created; others prove it.
            broker
                .client()
                .await?
                .list_topics()
                .await
                .map_err(|e| Error::Client {
                    bootstrap: broker.bootstrap.clone(),
                    source: e,
                })?;
        }
        Ok(broker)
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

    /// A new rskafka client connected to this broker, within the deadline.
    pub async fn client(&self) -> Result<Client> {
        let build = ClientBuilder::new(self.bootstrap_list())
            .client_id("kafka-trace-harness")
            .build();
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

    /// Creates `topic` with `partitions` partitions (replication factor 1).
    pub async fn create_topic(&self, topic: &str, partitions: u16) -> Result<()> {
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
        controller
            .create_topic(topic, partitions, 1, 5_000)
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
    pub fn mock_cluster(&self) -> Option<MockCluster<'_, DefaultClientContext>> {
        match &self.running {
            Running::Embedded(cluster) => Some(cluster.mock_cluster()),
            _ => None,
        }
    }

    /// Stops the broker (embedded) or removes its container, and waits.
    pub async fn shutdown(self) -> Result<()> {
        match self.running {
            Running::Embedded(cluster) => {
                cluster.shutdown().await;
                Ok(())
            }
            #[cfg(feature = "container")]
            Running::Container(container) => container.remove().await,
            Running::External => Ok(()),
        }
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
