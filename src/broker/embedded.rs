//! The embedded backend: librdkafka's mock cluster, in process.

use std::ffi::CString;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey as ApiKey, RDKafkaType};

use super::front::{Groups, TcpFront};
use crate::error::{Error, Result};

/// How an embedded broker is laid out; defaults live in [`Default`].
#[derive(Debug, Clone)]
pub(crate) struct EmbeddedOptions {
    pub(crate) brokers: i32,
    pub(crate) stall_free_front: bool,
    pub(crate) listen_host: IpAddr,
    pub(crate) first_port: u16,
    pub(crate) advertised_host: Option<String>,
    /// How long a new consumer group waits for more members before its
    /// first assignment. The mock's own default is 3 s (Kafka's
    /// `group.initial.rebalance.delay.ms`); the harness uses 0, so a test's
    /// consumer gets its first record at once.
    pub(crate) group_initial_rebalance_delay: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            brokers: 1,
            stall_free_front: true,
            listen_host: IpAddr::from([127, 0, 0, 1]),
            first_port: 0,
            advertised_host: None,
            group_initial_rebalance_delay: Duration::ZERO,
        }
    }
}

/// A running mock cluster and, unless disabled, one TCP front per mock broker.
pub(crate) struct EmbeddedCluster {
    // The mock cluster lives as long as this client handle.
    client: Client<DefaultClientContext>,
    fronts: Vec<TcpFront>,
    /// The classic groups, coordinated by the fronts (unused without them).
    groups: Arc<Groups>,
    bootstrap: String,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("bootstrap", &self.bootstrap)
            .field("fronts", &self.fronts)
            .finish_non_exhaustive()
    }
}

fn embedded_error(context: &str, err: impl std::fmt::Display) -> Error {
    Error::Embedded(format!("{context}: {err}"))
}

impl EmbeddedCluster {
    pub(crate) async fn start(options: &EmbeddedOptions) -> Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("test.mock.num.brokers", options.brokers.to_string())
            // The handle only owns the cluster; it never talks to it, so its
            // own connection logs would be noise.
            .set("log_level", "0");
        let native = config
            .create_native_config()
            .map_err(|e| embedded_error("configuring the mock cluster", e))?;
        let client = Client::new(
            &config,
            native,
            RDKafkaType::RD_KAFKA_PRODUCER,
            DefaultClientContext,
        )
        .map_err(|e| embedded_error("creating the mock cluster", e))?;
        let direct = client
            .mock_cluster()
            .ok_or_else(|| Error::Embedded("librdkafka created no mock cluster".into()))?
            .bootstrap_servers();

        let mut cluster = Self {
            client,
            fronts: Vec::new(),
            groups: Arc::new(Groups::new(options.group_initial_rebalance_delay)),
            bootstrap: direct.clone(),
        };
        // Whole milliseconds, saturating: the mock takes an i32.
        let delay_ms =
            i32::try_from(options.group_initial_rebalance_delay.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the cluster belongs to `cluster.client`, alive here; the
        // call sets a default under the cluster's lock.
        unsafe {
            rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster.raw_cluster(), delay_ms);
        }
        if options.stall_free_front {
            cluster.put_fronts(&direct, options).await?;
        }
        Ok(cluster)
    }

    /// Serves every mock broker through a [`TcpFront`] and advertises the
    /// fronts' addresses in metadata, so clients never bypass them.
    async fn put_fronts(&mut self, direct: &str, options: &EmbeddedOptions) -> Result<()> {
        let advertised_host =
            options
                .advertised_host
                .clone()
                .unwrap_or_else(|| match options.listen_host {
                    ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
                    ip => ip.to_string(),
                });
        let host_c = CString::new(advertised_host.clone())
            .map_err(|e| embedded_error("advertised host", e))?;
        let raw_cluster = self.raw_cluster();

        let mut advertised = Vec::new();
        // librdkafka lists the mock brokers in id order, 1..=N.
        for (index, upstream) in direct.split(',').enumerate() {
            let upstream: SocketAddr = upstream
                .parse()
                .map_err(|e| embedded_error(&format!("mock broker address {upstream:?}"), e))?;
            let port = if index == 0 { options.first_port } else { 0 };
            let listen = SocketAddr::new(options.listen_host, port);
            let broker_id = index as i32 + 1;
            let front = TcpFront::start(listen, upstream, broker_id, Arc::clone(&self.groups))
                .await
                .map_err(|source| Error::Front {
                    addr: listen.to_string(),
                    source,
                })?;
            // SAFETY: `raw_cluster` belongs to `self.client`, alive here; the
            // call copies the host string under the cluster's lock.
            unsafe {
                rdsys::rd_kafka_mock_broker_set_host_port(
                    raw_cluster,
                    broker_id,
                    host_c.as_ptr(),
                    i32::from(front.local_addr().port()),
                );
            }
            advertised.push(format!("{advertised_host}:{}", front.local_addr().port()));
            self.fronts.push(front);
        }
        self.bootstrap = advertised.join(",");
        Ok(())
    }

    /// The mock cluster's C handle; valid while `self.client` lives.
    fn raw_cluster(&self) -> *mut rdsys::rd_kafka_mock_cluster_t {
        // SAFETY: the client was created with test.mock.num.brokers, so it
        // owns a mock cluster; the call only reads the handle's field.
        unsafe { rdsys::rd_kafka_handle_mock_cluster(self.client.native_ptr()) }
    }

    /// Whether clients reach the mock brokers through [`TcpFront`]s, which
    /// the connection faults below need (without them those are no-ops).
    /// Each front's count of Produce request bytes; empty without fronts.
    pub(crate) fn produced_bytes(&self) -> Vec<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        self.fronts.iter().map(TcpFront::produced_bytes).collect()
    }

    pub(crate) fn has_fronts(&self) -> bool {
        !self.fronts.is_empty()
    }

    /// Closes every connection relayed now (client and mock side) on every
    /// front; new connections are accepted as before.
    pub(crate) fn cut_connections(&self) {
        for front in &self.fronts {
            front.cut_connections();
        }
    }

    /// Forwards no byte in either direction, on every connection (existing
    /// and new), for `duration`; then every held byte follows in order.
    pub(crate) fn stall(&self, duration: Duration) {
        for front in &self.fronts {
            front.stall(duration);
        }
    }

    /// Delays every response by `latency` (zero: no delay), in order.
    pub(crate) fn set_latency(&self, latency: Duration) {
        for front in &self.fronts {
            front.set_latency(latency);
        }
    }

    pub(crate) fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub(crate) fn mock_cluster(&self) -> MockCluster<'_, DefaultClientContext> {
        self.client
            .mock_cluster()
            .expect("the client was created with test.mock.num.brokers")
    }

    /// The next `codes.len()` requests of kind `api_key` fail with these
    /// Kafka error codes, in order.
    pub(crate) fn push_request_errors(&self, api_key: i16, codes: &[i32]) {
        if self.has_fronts() && Groups::answers(api_key) {
            // The fronts answer these; the mock never sees one.
            let codes: Vec<i16> = codes
                .iter()
                .map(|&code| i16::try_from(code).unwrap_or(i16::MAX))
                .collect();
            self.groups.push_errors(api_key, &codes);
            return;
        }
        // Through the C API with plain integers: rdkafka's wrapper takes
        // its raw error enum, which a caller's code number cannot become
        // soundly when librdkafka has no name for it.
        // SAFETY: the mock cluster belongs to `self.client`, alive here;
        // librdkafka copies the codes, which are C ints, before returning.
        unsafe {
            let raw = rdsys::rd_kafka_handle_mock_cluster(self.client.native_ptr());
            rdsys::rd_kafka_mock_push_request_errors_array(
                raw,
                api_key,
                codes.len(),
                codes.as_ptr().cast(),
            );
        }
    }

    /// Drops the request errors still waiting for `api_key`.
    pub(crate) fn clear_request_errors(&self, api_key: ApiKey) {
        self.groups.clear_errors(api_key as i16);
        self.mock_cluster().clear_request_errors(api_key);
    }

    pub(crate) fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.mock_cluster()
            .create_topic(topic, partitions, 1)
            .map_err(|e| Error::Topic {
                topic: topic.to_owned(),
                bootstrap: self.bootstrap.clone(),
                reason: e.to_string(),
            })
    }

    pub(crate) async fn shutdown(mut self) {
        for front in self.fronts.drain(..) {
            front.shutdown().await;
        }
        // Dropping the client destroys the mock cluster and joins its thread,
        // which blocks: keep it off the async workers.
        let client = self.client;
        let _ = tokio::task::spawn_blocking(move || drop(client)).await;
    }
}
