//! A TCP front that removes the 40 ms delayed-ACK stall.
//!
//! rskafka buffers each request in an 8 KiB write buffer, on a socket
//! without `TCP_NODELAY`. A larger request (a produce of some 60 records of
//! 100 bytes) leaves as two `write`s: the 4-byte length, then the body.
//! Nagle's algorithm then holds the body until the length is acknowledged,
//! and a Linux peer delays that ACK by up to 40 ms. The front sits between
//! the client and the broker and sets `TCP_QUICKACK` on its client-facing
//! socket after every read (Linux clears the flag again on its own), so the
//! ACK leaves at once and the body follows.
//!
//! `TCP_QUICKACK` exists on Linux (and Android, Fuchsia) only. Elsewhere
//! the front still relays, with `TCP_NODELAY` on both sides, and the
//! stall is whatever the platform's delayed ACK makes it: macOS acks every
//! other segment and its delayed-ACK timer is shorter, Windows delays an
//! ACK by up to 200 ms (and answers the second segment at once).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Size of the relay buffers: large enough for a fetch response of a few
/// thousand small records in one read.
const BUFFER_BYTES: usize = 64 * 1024;

/// One listening socket relaying every accepted connection to `upstream`.
///
/// Dropping it stops accepting and closes every relayed connection.
#[derive(Debug)]
pub(crate) struct TcpFront {
    local_addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl TcpFront {
    /// Binds `listen` (port 0 picks a free port) and relays to `upstream`.
    pub(crate) async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let accept_task = tokio::spawn(accept_loop(listener, upstream));
        Ok(Self {
            local_addr,
            accept_task,
        })
    }

    /// The address clients connect to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes every relayed connection, then waits for it.
    pub(crate) async fn shutdown(mut self) {
        self.accept_task.abort();
        // A cancelled task reports `JoinError::Cancelled`: that is the goal here.
        let _ = (&mut self.accept_task).await;
    }
}

impl Drop for TcpFront {
    fn drop(&mut self) {
        // Aborting drops the accept loop's JoinSet, which aborts every relay.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr) {
    let mut relays = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    relays.spawn(relay(client, upstream));
                }
                // Out of file descriptors or a reset before accept: the
                // listener itself is still fine, so keep serving.
                Err(_) => tokio::task::yield_now().await,
            },
            // Reap finished relays so the set does not grow without bound.
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();

    let requests = async {
        let mut buf = vec![0u8; BUFFER_BYTES];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                server_write.shutdown().await?;
                return Ok::<_, io::Error>(());
            }
            quick_ack(client_read.as_ref());
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let responses = async {
        let mut buf = vec![0u8; BUFFER_BYTES];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                client_write.shutdown().await?;
                return Ok::<_, io::Error>(());
            }
            client_write.write_all(&buf[..n]).await?;
        }
    };
    // Either side closing ends the relay: Kafka has no half-closed sessions.
    tokio::select! {
        r = requests => r,
        r = responses => r,
    }
}

/// Asks the kernel to acknowledge the next segment at once. Best effort:
/// a failure only keeps the stall.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
fn quick_ack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// No `TCP_QUICKACK` on this platform: see the module docs.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
fn quick_ack(_stream: &TcpStream) {}
