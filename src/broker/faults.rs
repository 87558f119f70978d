//! One fault API on [`Broker`], whatever runs it.
//!
//! | fault | embedded | container | external |
//! | --- | --- | --- | --- |
//! | [`broker_down`](Broker::broker_down) / [`broker_up`](Broker::broker_up) | mock cluster | – | – |
//! | [`request_errors`](Broker::request_errors), [`clear_request_errors`](Broker::clear_request_errors) | mock cluster (group APIs: TCP front) | – | – |
//! | [`round_trip_time`](Broker::round_trip_time) | mock cluster | – | – |
//! | [`cut_connections`](Broker::cut_connections), [`stall`](Broker::stall), [`add_latency`](Broker::add_latency) | TCP front | – | – |
//! | [`pause`](Broker::pause) / [`unpause`](Broker::unpause) | – | Docker | – |
//! | [`stop`](Broker::stop) / [`restart`](Broker::restart) | – | Docker (Apache Kafka image) | – |
//!
//! A fault a backend cannot inject is an [`Error::FaultUnsupported`] that
//! says which backend would do it.

use std::time::Duration;

pub use rdkafka::types::{RDKafkaApiKey as ApiKey, RDKafkaErrorCode as ErrorCode};

use super::{Broker, Running};
use crate::error::{Error, Result};

impl Broker {
    fn backend_name(&self) -> &'static str {
        match self.running {
            Running::Embedded(_) => "embedded",
            #[cfg(feature = "container")]
            Running::Container(_) => "container",
            Running::External => "external",
        }
    }

    fn unsupported(&self, fault: &str, works_on: &str) -> Error {
        Error::FaultUnsupported {
            fault: fault.to_owned(),
            backend: self.backend_name(),
            reason: format!("it works on the {works_on} backend"),
        }
    }

    /// The embedded cluster, if it relays through fronts (the connection
    /// faults live there).
    fn front_fault(&self, fault: &str) -> Result<&super::embedded::EmbeddedCluster> {
        match &self.running {
            Running::Embedded(cluster) if cluster.has_fronts() => Ok(cluster),
            Running::Embedded(_) => Err(Error::FaultUnsupported {
                fault: fault.to_owned(),
                backend: "embedded",
                reason: "the broker was built with stall_free(false), so no TCP front \
                         relays its connections"
                    .into(),
            }),
            _ => Err(self.unsupported(fault, "embedded")),
        }
    }

    fn fault_error(&self, fault: &str, reason: impl ToString) -> Error {
        Error::Fault {
            fault: fault.to_owned(),
            bootstrap: self.bootstrap.clone(),
            reason: reason.to_string(),
        }
    }

    /// Embedded: takes mock broker `broker_id` (1-based) down. Its
    /// connections close and new ones are refused until
    /// [`broker_up`](Self::broker_up).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kafka_trace_harness::Result<()> {
    /// use kafka_trace_harness::Broker;
    ///
    /// let broker = Broker::builder().start().await?;
    /// broker.broker_down(1)?;
    /// broker.broker_up(1)?;
    /// # Ok(()) }
    /// ```
    pub fn broker_down(&self, broker_id: i32) -> Result<()> {
        let fault = format!("broker_down({broker_id})");
        match self.mock_cluster() {
            Some(mock) => mock
                .broker_down(broker_id)
                .map_err(|e| self.fault_error(&fault, e)),
            None => Err(self.unsupported(&fault, "embedded")),
        }
    }

    /// Embedded: brings mock broker `broker_id` back up.
    pub fn broker_up(&self, broker_id: i32) -> Result<()> {
        let fault = format!("broker_up({broker_id})");
        match self.mock_cluster() {
            Some(mock) => mock
                .broker_up(broker_id)
                .map_err(|e| self.fault_error(&fault, e)),
            None => Err(self.unsupported(&fault, "embedded")),
        }
    }

    /// Embedded: the next `count` requests of kind `api_key` (to any mock
    /// broker) fail with `error`, then requests succeed again. The fronts
    /// answer JoinGroup, SyncGroup, Heartbeat and LeaveGroup (they
    /// coordinate consumer groups), ListGroups (the error, and no group)
    /// and DescribeGroups (the error on every group asked) themselves, so
    /// errors for those are answered there.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kafka_trace_harness::Result<()> {
    /// use kafka_trace_harness::Broker;
    /// use kafka_trace_harness::broker::{ApiKey, ErrorCode};
    ///
    /// let broker = Broker::builder().start().await?;
    /// // Two produce requests fail with a retriable error.
    /// broker.request_errors(ApiKey::Produce, ErrorCode::NotLeaderForPartition, 2)?;
    /// # Ok(()) }
    /// ```
    pub fn request_errors(&self, api_key: ApiKey, error: ErrorCode, count: usize) -> Result<()> {
        let fault = format!("request_errors({api_key:?}, {error:?}, {count})");
        match &self.running {
            // Without fronts nothing answers these (the mock has neither
            // API): accepted, the fault would never happen.
            Running::Embedded(cluster)
                if !cluster.has_fronts()
                    && matches!(api_key, ApiKey::ListGroups | ApiKey::DescribeGroups) =>
            {
                Err(Error::FaultUnsupported {
                    fault,
                    backend: self.backend_name(),
                    reason: "without the fronts (stall_free(false)) no broker answers \
                             ListGroups or DescribeGroups"
                        .to_owned(),
                })
            }
            Running::Embedded(cluster) => {
                cluster.push_request_errors(api_key as i16, &vec![error as i32; count]);
                Ok(())
            }
            _ => Err(self.unsupported(&fault, "embedded")),
        }
    }

    /// Embedded: drops the request errors still waiting for `api_key`.
    pub fn clear_request_errors(&self, api_key: ApiKey) -> Result<()> {
        match &self.running {
            Running::Embedded(cluster) => {
                cluster.clear_request_errors(api_key);
                Ok(())
            }
            _ => Err(self.unsupported(&format!("clear_request_errors({api_key:?})"), "embedded")),
        }
    }

    /// Embedded: mock broker `broker_id` answers every request `rtt` late
    /// (zero removes the delay).
    pub fn round_trip_time(&self, broker_id: i32, rtt: Duration) -> Result<()> {
        let fault = format!("round_trip_time({broker_id}, {rtt:?})");
        match self.mock_cluster() {
            Some(mock) => mock
                .broker_round_trip_time(broker_id, rtt)
                .map_err(|e| self.fault_error(&fault, e)),
            None => Err(self.unsupported(&fault, "embedded")),
        }
    }

    /// Embedded: closes every client connection now (and its mock-broker
    /// side); clients reconnect on their next request. New connections are
    /// accepted as before.
    pub fn cut_connections(&self) -> Result<()> {
        self.front_fault("cut_connections()")?.cut_connections();
        Ok(())
    }

    /// Embedded: no byte moves, in either direction, on any connection
    /// (existing or new) for `duration`; then everything held follows, in
    /// order and complete. A later call replaces the stall's end.
    pub fn stall(&self, duration: Duration) -> Result<()> {
        self.front_fault(&format!("stall({duration:?})"))?
            .stall(duration);
        Ok(())
    }

    /// Embedded: every response reaches its client `latency` late, in
    /// order; zero removes the delay.
    pub fn add_latency(&self, latency: Duration) -> Result<()> {
        self.front_fault(&format!("add_latency({latency:?})"))?
            .set_latency(latency);
        Ok(())
    }

    /// Container: pauses every process of the broker's container (it keeps
    /// its connections and records, but answers nothing) until
    /// [`unpause`](Self::unpause).
    pub async fn pause(&self) -> Result<()> {
        self.container_fault("pause", true).await
    }

    /// Container: resumes a paused container.
    pub async fn unpause(&self) -> Result<()> {
        self.container_fault("unpause", false).await
    }

    /// Container (Apache Kafka image): stops the broker's container; its
    /// log stays on the container's disk for [`restart`](Self::restart).
    pub async fn stop(&self) -> Result<()> {
        self.container_run_state("stop", false).await
    }

    /// Container (Apache Kafka image): starts a stopped container again.
    pub async fn restart(&self) -> Result<()> {
        self.container_run_state("restart", true).await
    }

    async fn container_fault(&self, fault: &str, paused: bool) -> Result<()> {
        match &self.running {
            #[cfg(feature = "container")]
            Running::Container(container) => container
                .set_paused(paused)
                .await
                .map_err(|e| self.fault_error(fault, e)),
            _ => {
                let _ = paused;
                Err(self.unsupported(fault, "container"))
            }
        }
    }

    async fn container_run_state(&self, fault: &str, running: bool) -> Result<()> {
        match &self.running {
            #[cfg(feature = "container")]
            Running::Container(container) => container
                .set_running(running)
                .await
                .map_err(|e| self.fault_error(fault, e)),
            _ => {
                let _ = running;
                Err(self.unsupported(fault, "container"))
            }
        }
    }
}
