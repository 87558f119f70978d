//! A one-command admin channel for the standalone embedded broker.
//!
//! librdkafka's mock cluster has no CreateTopics handler, so a client outside
//! the process (the container backend running this crate's own image) creates
//! topics through this line protocol instead:
//! `create <topic> <partitions>\n` → `ok\n` or `error <reason>\n`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::Broker;
use crate::error::{Error, Result};

/// The admin channel of a standalone embedded broker; closed when dropped.
#[derive(Debug)]
pub struct AdminChannel {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminChannel {
    /// Serves topic creation for `broker` on `listen` (port 0 = a free port).
    pub async fn serve(broker: Arc<Broker>, listen: SocketAddr) -> Result<Self> {
        let (local_addr, task) = serve(broker, listen).await?;
        Ok(Self { local_addr, task })
    }

    /// Where the channel listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for AdminChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    broker: Arc<Broker>,
    listen: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Front {
            addr: listen.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Front {
        addr: listen.to_string(),
        source,
    })?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(Arc::clone(&broker), stream));
        }
    });
    Ok((local, task))
}

async fn answer(broker: Arc<Broker>, stream: TcpStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["create", topic, partitions] => match partitions.parse::<u16>() {
                Ok(partitions) => match broker.create_topic(topic, partitions).await {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("error {e}"),
                },
                Err(e) => format!("error partitions {partitions:?}: {e}"),
            },
            _ => format!("error unknown command {line:?}; expected: create <topic> <partitions>"),
        };
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Asks the admin channel at `admin` to create `topic`.
#[cfg(feature = "container")]
pub(crate) async fn create_topic(
    admin: &str,
    topic: &str,
    partitions: u16,
) -> std::result::Result<(), String> {
    let stream = TcpStream::connect(admin)
        .await
        .map_err(|e| format!("admin channel {admin}: {e}"))?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("create {topic} {partitions}\n").as_bytes())
        .await
        .map_err(|e| format!("admin channel {admin}: {e}"))?;
    let reply = BufReader::new(read)
        .lines()
        .next_line()
        .await
        .map_err(|e| format!("admin channel {admin}: {e}"))?
        .unwrap_or_default();
    match reply.strip_prefix("error ") {
        None if reply == "ok" => Ok(()),
        None => Err(format!("admin channel {admin} answered {reply:?}")),
        Some(reason) => Err(reason.to_owned()),
    }
}
