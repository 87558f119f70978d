//! The container backend: a broker in Docker through testcontainers.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use testcontainers::core::ContainerPort;
use testcontainers::core::client::ClientError;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, TestcontainersError};
use testcontainers_modules::kafka::apache;
use tokio::io::AsyncBufReadExt;

use crate::error::{Error, Result};

use super::image::ContainerImage;

/// A started broker container; dropping it removes the container.
pub(crate) enum RunningContainer {
    Kafka(ContainerAsync<apache::Kafka>),
    Harness {
        container: ContainerAsync<GenericImage>,
        admin: String,
    },
}

impl std::fmt::Debug for RunningContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = match self {
            Self::Kafka(c) => c.id(),
            Self::Harness { container, .. } => container.id(),
        };
        f.debug_tuple("RunningContainer").field(&id).finish()
    }
}

fn container_error(image: &ContainerImage, err: TestcontainersError) -> Error {
    match err {
        TestcontainersError::Client(ClientError::Init(reason)) => Error::NoDocker {
            reason: reason.to_string(),
        },
        TestcontainersError::Client(
            ClientError::ListContainers(reason) | ClientError::CreateContainer(reason),
        ) if reason.to_string().contains("onnect") => Error::NoDocker {
            reason: reason.to_string(),
        },
        other => Error::Container {
            image: image.reference(),
            reason: other.to_string(),
        },
    }
}

/// Starts `image` and returns it with its bootstrap address.
pub(crate) async fn start(
    image: &ContainerImage,
    ready_timeout: Duration,
) -> Result<(RunningContainer, String)> {
    match image {
        ContainerImage::ApacheKafka { native, tag } => {
            let mut kafka = apache::Kafka::default();
            if !native {
                kafka = kafka.with_jvm_image();
            }
            let container = kafka
                .with_tag(tag.clone())
                .with_startup_timeout(ready_timeout)
                .start()
                .await
                .map_err(|e| container_error(image, e))?;
            let port = container
                .get_host_port_ipv4(apache::KAFKA_PORT)
                .await
                .map_err(|e| container_error(image, e))?;
            Ok((
                RunningContainer::Kafka(container),
                format!("127.0.0.1:{port}"),
            ))
        }
        ContainerImage::Harness { name, tag } => {
            let mut attempt = 1;
            loop {
                match start_harness(image, name, tag, ready_timeout).await {
                    // Another process took a port between picking and
                    // publishing it: pick again.
                    Err(Error::Container { reason, .. })
                        if attempt < PORT_ATTEMPTS && is_port_taken(&reason) =>
                    {
                        attempt += 1;
                    }
                    result => return result,
                }
            }
        }
    }
}

/// How many times a harness container is started on fresh ports when the
/// ones picked were taken meanwhile.
const PORT_ATTEMPTS: u32 = 3;

fn is_port_taken(reason: &str) -> bool {
    reason.contains("already allocated") || reason.contains("address already in use")
}

/// Host ports are picked from here: below Linux's ephemeral range
/// (32768–60999), from which the container's own sockets (the mock
/// cluster's listener, its connections) take theirs. The broker listens
/// on the same port inside the container, and a port picked from the
/// host's ephemeral range could already be one of those there.
const HOST_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A port of the host, in [`HOST_PORTS`], that is free now; else any
/// free port.
fn free_host_port() -> std::io::Result<u16> {
    let span = u32::from(HOST_PORTS.end - HOST_PORTS.start);
    // Different runs and tests start at different places (no RNG crate
    // for this); the step is prime to the span, so tries do not repeat.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos())
        ^ std::process::id().rotate_left(16);
    for attempt in 0..200u32 {
        let offset = (seed.wrapping_add(attempt.wrapping_mul(7_919))) % span;
        let port = HOST_PORTS.start + offset as u16;
        if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?
        .local_addr()?
        .port())
}

/// Runs the harness image with its broker and admin ports published on
/// the same port numbers of the host (no host networking, which Docker
/// Desktop lacks): the broker advertises `127.0.0.1:<port>` in metadata,
/// so that port must be the host's. Free host ports are picked first.
async fn start_harness(
    image: &ContainerImage,
    name: &str,
    tag: &str,
    ready_timeout: Duration,
) -> Result<(RunningContainer, String)> {
    let port_error = |e: std::io::Error| Error::Container {
        image: image.reference(),
        reason: format!("finding a free port of the host: {e}"),
    };
    let broker_port = free_host_port().map_err(port_error)?;
    let admin_port = free_host_port().map_err(port_error)?;
    let (broker_arg, admin_arg) = (broker_port.to_string(), admin_port.to_string());
    let container = GenericImage::new(name, tag)
        .with_cmd([
            "broker",
            "--host",
            "0.0.0.0",
            "--port",
            &broker_arg,
            "--advertised-host",
            "127.0.0.1",
            "--admin-port",
            &admin_arg,
        ])
        .with_mapped_port(broker_port, ContainerPort::Tcp(broker_port))
        .with_mapped_port(admin_port, ContainerPort::Tcp(admin_port))
        .with_startup_timeout(ready_timeout)
        .start()
        .await
        .map_err(|e| container_error(image, e))?;
    let (bootstrap, _admin_in_container) = read_addresses(&container, ready_timeout)
        .await
        .map_err(|reason| Error::Container {
            image: image.reference(),
            reason,
        })?;
    let expected = format!("127.0.0.1:{broker_port}");
    if bootstrap != expected {
        return Err(Error::Container {
            image: image.reference(),
            reason: format!(
                "the broker advertises {bootstrap}, not the published {expected}:                  clients of the host could not reach it"
            ),
        });
    }
    let admin = format!("127.0.0.1:{admin_port}");
    Ok((RunningContainer::Harness { container, admin }, bootstrap))
}

/// Reads the bootstrap line and the `admin <address>` line the standalone
/// broker prints once it listens.
async fn read_addresses(
    container: &ContainerAsync<GenericImage>,
    ready_timeout: Duration,
) -> std::result::Result<(String, String), String> {
    let mut stdout = container.stdout(true);
    let read_two_lines = async {
        let mut bootstrap = String::new();
        let mut admin = String::new();
        stdout.read_line(&mut bootstrap).await?;
        stdout.read_line(&mut admin).await?;
        Ok::<_, std::io::Error>((bootstrap, admin))
    };
    match tokio::time::timeout(ready_timeout, read_two_lines).await {
        Err(_) => Err(format!(
            "the broker printed no addresses within {ready_timeout:?}"
        )),
        Ok(Err(e)) => Err(format!("reading the broker's output: {e}")),
        Ok(Ok((bootstrap, admin))) => match admin.trim().strip_prefix("admin ") {
            Some(admin) if !bootstrap.trim().is_empty() => {
                Ok((bootstrap.trim().to_owned(), admin.to_owned()))
            }
            _ => Err(format!(
                "expected a bootstrap line and an admin line, got {bootstrap:?} and {admin:?}{}",
                why_it_ended(container).await
            )),
        },
    }
}

/// What the container said before its output ended: its exit code and
/// the end of its stderr, each within a bound (Docker may hang too).
async fn why_it_ended(container: &ContainerAsync<GenericImage>) -> String {
    const BOUND: Duration = Duration::from_secs(10);
    let exit = match tokio::time::timeout(BOUND, container.exit_code()).await {
        Ok(Ok(Some(code))) => format!("exited with code {code}"),
        Ok(Ok(None)) => "still running".to_owned(),
        Ok(Err(e)) => format!("exit code unknown: {e}"),
        Err(_) => format!("exit code unknown within {BOUND:?}"),
    };
    let stderr = match tokio::time::timeout(BOUND, container.stderr_to_vec()).await {
        Ok(Ok(bytes)) => {
            let text = String::from_utf8_lossy(&bytes);
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("stderr: {:?}", tail.join("\n"))
        }
        Ok(Err(e)) => format!("stderr unreadable: {e}"),
        Err(_) => format!("stderr unread within {BOUND:?}"),
    };
    format!(" (the container {exit}; {stderr})")
}

impl RunningContainer {
    /// The admin channel of a harness image; `None` for Apache Kafka.
    pub(crate) fn admin_address(&self) -> Option<&str> {
        match self {
            Self::Kafka(_) => None,
            Self::Harness { admin, .. } => Some(admin),
        }
    }

    /// Pauses (`true`) or unpauses every process of the container: the
    /// broker keeps its connections and records but answers nothing.
    pub(crate) async fn set_paused(&self, paused: bool) -> std::result::Result<(), String> {
        let result = match (self, paused) {
            (Self::Kafka(c), true) => c.pause().await,
            (Self::Kafka(c), false) => c.unpause().await,
            (Self::Harness { container, .. }, true) => container.pause().await,
            (Self::Harness { container, .. }, false) => container.unpause().await,
        };
        result.map_err(|e| e.to_string())
    }

    /// Stops (`false`) or starts (`true`) an Apache Kafka container, which
    /// keeps its log on the container's disk across the restart.
    pub(crate) async fn set_running(&self, running: bool) -> std::result::Result<(), String> {
        let Self::Kafka(c) = self else {
            return Err(
                "the harness image keeps its records in memory, so a restart would \
                        lose them all and bind a new port; pause it instead"
                    .into(),
            );
        };
        let before = c
            .get_host_port_ipv4(apache::KAFKA_PORT)
            .await
            .map_err(|e| e.to_string())?;
        if running {
            c.start().await.map_err(|e| e.to_string())?;
            let after = c
                .get_host_port_ipv4(apache::KAFKA_PORT)
                .await
                .map_err(|e| e.to_string())?;
            if after != before {
                return Err(format!(
                    "Docker mapped the broker to port {after} after the restart (was {before}); \
                     clients of the old address cannot reach it"
                ));
            }
            Ok(())
        } else {
            c.stop().await.map_err(|e| e.to_string())
        }
    }

    /// Removes the container and reports what Docker said.
    pub(crate) async fn remove(self) -> Result<()> {
        let (id, result) = match self {
            Self::Kafka(c) => (c.id().to_owned(), c.rm().await),
            Self::Harness { container, .. } => (container.id().to_owned(), container.rm().await),
        };
        result.map_err(|e| Error::Container {
            image: id,
            reason: format!("removing the container: {e}"),
        })
    }
}
