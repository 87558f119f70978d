//! Connection faults of the embedded broker's TCP front, on [`Broker`].
//!
//! Thin forwarding to [`EmbeddedCluster`](super::embedded::EmbeddedCluster);
//! the fault API's home is `faults.rs`, which may take these over.

use std::time::Duration;

use super::{Broker, Running};
use crate::error::{Error, Result};

impl Broker {
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

    /// The embedded cluster, if it relays through fronts (these faults
    /// live there).
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
            #[cfg(feature = "container")]
            Running::Container(_) => Err(unsupported(fault, "container")),
            Running::External => Err(unsupported(fault, "external")),
        }
    }
}

fn unsupported(fault: &str, backend: &'static str) -> Error {
    Error::FaultUnsupported {
        fault: fault.to_owned(),
        backend,
        reason: "it works on the embedded backend".into(),
    }
}
