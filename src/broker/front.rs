//! A TCP front that removes the 40 ms delayed-ACK stall, answers new
//! clients' ApiVersions requests, and injects network faults.
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
//!
//! # ApiVersions
//!
//! Current clients open with an ApiVersions request newer than librdkafka's
//! mock supports (kafka-python 3: v4, Java: v3), and the mock answers it
//! with a body that mixes flexible and classic encodings, which such a
//! client cannot decode. KIP-511 says the answer is UNSUPPORTED_VERSION in
//! the v0 layout, listing the supported versions, so that the client
//! retries lower. The front reads only request and response headers: it
//! relays such a request upstream as an ApiVersions v0 request with the
//! same correlation id, and sets UNSUPPORTED_VERSION in the mock's v0
//! answer on its way back. The answer so lists the mock's real ranges and
//! keeps its place among the connection's responses. The mock's highest
//! ApiVersions version is asked once per front, on the first ApiVersions
//! request, and cached.
//!
//! Every ApiVersions answer also has the group APIs' ranges capped where
//! the mock's handlers mis-parse the newest versions it advertises (see
//! [`MOCK_VERSION_CAPS`]): without that, kafka-python 3 and Java consumers
//! could not join a group.
//!
//! # Fetch long-polling
//!
//! Kafka answers a fetch as soon as `min_bytes` are there, or when
//! `max_wait` runs out. The mock answers an empty fetch only when
//! `max_wait` runs out, even if records arrive meanwhile, so every client
//! paid the whole wait per round trip. The front long-polls for it: it
//! relays a fetch with `max_wait` 0, and an empty answer (no error, fewer
//! record bytes than `min_bytes`) is dropped and the fetch asked again as
//! soon as a produce through this front is answered (the records are then
//! in the log), at the latest every [`FETCH_POLL_INTERVAL`], until the
//! client's `max_wait` is over; then the last answer goes to the client.
//! Like a Kafka broker, the front reads nothing more from that client
//! while its fetch waits, so answers keep their order. Fetch is capped at
//! v11 (see [`MOCK_VERSION_CAPS`]), the last layout without compact
//! encodings, which the front reads.
//!
//! # Consumer groups
//!
//! The mock holds every rebalance of a stable group for the session
//! timeout less 1 s (44 s by librdkafka's default), for a kafka-python
//! consumer's rejoin once it knows its topic's partitions as for a second
//! member. The fronts of a cluster coordinate classic groups themselves,
//! as Kafka does (see [`coordinator`]): a rebalance ends once every member
//! has rejoined. The front's own answers take the place of an ApiVersions v0 request
//! it relays in their stead, so they keep their place among the
//! connection's answers.
//!
//! While a group answer waits (a join, a follower's sync), the front still
//! watches the client's socket: a client that closes drops its wait, so
//! the group waits no more for it, and what it sends meanwhile is kept, in
//! order, for after the answer.
//!
//! # Group listing
//!
//! The mock answers neither ListGroups nor DescribeGroups. The front keeps
//! the groups whose requests pass through it and answers both itself, in
//! place of an ApiVersions v0 request as above (see [`listing`]); every
//! ApiVersions answer lists their ranges. Each front lists only the groups
//! its mock broker coordinates, as a Kafka broker does.
//!
//! # Faults
//!
//! [`TcpFront::cut_connections`], [`TcpFront::stall`] and
//! [`TcpFront::set_latency`] act on every relayed connection. With no
//! stall or latency in force, a relay pays one atomic load per read.

mod coordinator;
mod groups;
mod listing;

pub(crate) use groups::Groups;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OnceCell, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Size of the relay buffers: large enough for a fetch response of a few
/// thousand small records in one read.
const BUFFER_BYTES: usize = 64 * 1024;

/// Kafka's API key of ApiVersions.
const API_VERSIONS: i16 = 18;
/// Kafka's Produce api key.
const PRODUCE: i16 = 0;
/// Kafka's Fetch api key.
const FETCH: i16 = 1;
/// Highest Fetch version the front offers, and so reads: v12 brings
/// compact encodings.
const FETCH_MAX_VERSION: i16 = 11;
/// Largest fetch request the front holds whole to long-poll (a request
/// names its partitions: some 1,400 of them fit). A larger one is relayed
/// as it is and waits as the mock makes it.
const FETCH_REQUEST_HOLD: usize = 23 * 1024;
/// Largest fetch answer the front holds whole to see whether it is empty;
/// a larger one carries records and goes on. The empty answer to any
/// request held must fit, or it would go on at once and its client fetch
/// again at once, busy (checked below).
const FETCH_ANSWER_HOLD: usize = 62 * 1024;
/// Most bytes a partition takes in an empty fetch answer (v11: index,
/// error, high watermark, last stable offset, log start, aborted
/// transactions, preferred replica, records) and least in a request (v4:
/// index, offset, max bytes); a topic's name is in both.
const EMPTY_ANSWER_BYTES_PER_PARTITION: usize = 42;
const REQUEST_BYTES_PER_PARTITION: usize = 16;
const _: () = assert!(
    FETCH_REQUEST_HOLD / REQUEST_BYTES_PER_PARTITION * EMPTY_ANSWER_BYTES_PER_PARTITION
        <= FETCH_ANSWER_HOLD
        && FETCH_ANSWER_HOLD <= BUFFER_BYTES
);
/// How often a waiting fetch is asked again when no produce through this
/// front wakes it (records written another way: `acks=0`, transactions).
pub(crate) const FETCH_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Kafka's error code UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;
/// Frame length, api_key, api_version and correlation_id of a request.
const REQUEST_HEADER_BYTES: usize = 12;
/// Frame length, correlation_id and error_code of an ApiVersions response.
const API_VERSIONS_RESPONSE_HEAD: usize = 10;
/// Largest ApiVersions answer the front holds back to adjust whole (the
/// mock's is under 400 bytes).
const VERSIONS_ANSWER_HOLD: usize = 4 * 1024;
/// Highest versions the front lets clients use, below what the mock
/// advertises: the last layouts without compact encodings, which the front
/// reads and writes (the group APIs, which it answers or checks itself, see
/// [`groups`]; Fetch, whose answers it reads, see the module docs). The
/// mock's own handlers also parsed the newer group requests wrongly.
const MOCK_VERSION_CAPS: [(i16, i16); 6] = [
    (FETCH, FETCH_MAX_VERSION),
    (listing::OFFSET_COMMIT, groups::OFFSET_COMMIT_MAX),
    (groups::JOIN_GROUP, groups::JOIN_GROUP_MAX),
    (groups::HEARTBEAT, groups::HEARTBEAT_MAX),
    (groups::LEAVE_GROUP, groups::LEAVE_GROUP_MAX),
    (groups::SYNC_GROUP, groups::SYNC_GROUP_MAX),
];
/// Deadline for learning the mock's ApiVersions range; the mock is in
/// process and answers in well under a millisecond.
const VERSIONS_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest ApiVersions v0 answer accepted while learning the range (the
/// mock's is under 400 bytes).
const VERSIONS_ANSWER_LIMIT: usize = 64 * 1024;

/// One listening socket relaying every accepted connection to `upstream`.
///
/// Dropping it stops accepting and closes every relayed connection.
#[derive(Debug)]
pub(crate) struct TcpFront {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

/// What every relay of one front reads: the upstream, the cached version
/// range and the fault switches.
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// The highest ApiVersions version the upstream answers, once learnt.
    api_versions_max: OnceCell<i16>,
    faults: Faults,
    /// Bytes of every Produce request relayed: the dropped-record watch
    /// needs to look only once this passes what the mock cluster keeps.
    produced_bytes: Arc<AtomicU64>,
    /// Bumped whenever the upstream answers a Produce request: a waiting
    /// fetch asks again.
    produced: watch::Sender<u64>,
    /// The classic groups, coordinated by the fronts of the cluster.
    groups: Arc<groups::Groups>,
    /// The id of the mock broker behind this front.
    broker_id: i32,
}

impl TcpFront {
    /// Binds `listen` (port 0 picks a free port) and relays to `upstream`,
    /// mock broker `broker_id`.
    pub(crate) async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        broker_id: i32,
        groups: Arc<groups::Groups>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            api_versions_max: OnceCell::new(),
            faults: Faults::new(),
            produced_bytes: Arc::default(),
            produced: watch::Sender::new(0),
            groups,
            broker_id,
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            local_addr,
            shared,
            accept_task,
        })
    }

    /// Bytes of Produce requests relayed so far, counted as they pass.
    pub(crate) fn produced_bytes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared.produced_bytes)
    }

    /// The address clients connect to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes every connection relayed now, both the client's and the
    /// upstream one; new connections are accepted as before.
    pub(crate) fn cut_connections(&self) {
        self.shared.faults.cut();
    }

    /// Forwards no byte, in either direction, on any connection (existing
    /// or new) for `duration` from now; then every held byte follows in
    /// order. A later call replaces the end of the stall.
    pub(crate) fn stall(&self, duration: Duration) {
        self.shared.faults.stall(duration);
    }

    /// Delays every response (upstream to client) by `latency` from the
    /// moment the front reads it, in order; zero turns the delay off.
    pub(crate) fn set_latency(&self, latency: Duration) {
        self.shared.faults.set_latency(latency);
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

/// The fault switches of one front.
#[derive(Debug)]
struct Faults {
    /// Set while a stall or a latency may be in force. Relays load only this
    /// flag per read and look at `state` when it is set; it is cleared
    /// under `state`'s lock, so a concurrent change is never lost.
    active: AtomicBool,
    state: watch::Sender<FaultState>,
    /// Bumped by every cut; each relay watches it.
    cut: watch::Sender<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct FaultState {
    stalled_until: Option<Instant>,
    latency: Duration,
}

impl Faults {
    fn new() -> Self {
        Self {
            active: AtomicBool::new(false),
            state: watch::Sender::new(FaultState::default()),
            cut: watch::Sender::new(0),
        }
    }

    fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn cut(&self) {
        self.cut
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    fn stall(&self, duration: Duration) {
        let now = Instant::now();
        // Duration::MAX would overflow an Instant: a century is "forever".
        let until = now
            .checked_add(duration)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        self.state.send_modify(|state| {
            state.stalled_until = Some(until);
            self.active.store(true, Ordering::Release);
        });
    }

    fn set_latency(&self, latency: Duration) {
        self.state.send_modify(|state| {
            state.latency = latency;
            if !latency.is_zero() {
                self.active.store(true, Ordering::Release);
            }
        });
    }

    /// Waits out a stall in force, then returns the response latency in
    /// force. Clears `active` once neither is.
    async fn gate(&self, state: &mut watch::Receiver<FaultState>) -> Duration {
        loop {
            let current = *state.borrow_and_update();
            match current.stalled_until {
                Some(until) if Instant::now() < until => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        // A new stall or latency: look again.
                        changed = state.changed() => {
                            if changed.is_err() {
                                // No sender left: nothing can change the end.
                                tokio::time::sleep_until(until).await;
                            }
                        }
                    }
                }
                _ => {
                    if current.latency.is_zero() {
                        self.settle();
                    }
                    return current.latency;
                }
            }
        }
    }

    /// Clears `active` if no fault is in force, under the state's lock.
    fn settle(&self) {
        let now = Instant::now();
        self.state.send_if_modified(|state| {
            let stalled = state.stalled_until.is_some_and(|until| now < until);
            if !stalled && state.latency.is_zero() {
                self.active.store(false, Ordering::Release);
            }
            // Nothing a relay waits on changed: wake no one.
            false
        });
    }
}

/// Pause after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut relays = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    // Subscribed here, so that only cuts after this accept
                    // close the connection.
                    let cut = shared.faults.cut.subscribe();
                    relays.spawn(relay(client, Arc::clone(&shared), cut));
                }
                // Out of file descriptors or a reset before accept: the
                // listener itself is still fine, so keep serving, after a
                // pause (out of descriptors, accept fails at once: without
                // one the loop would spin a core until a relay ends).
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_PAUSE).await,
            },
            // Reap finished relays so the set does not grow without bound.
            Some(_) = relays.join_next(), if !relays.is_empty() => {}
        }
    }
}

async fn relay(
    client: TcpStream,
    shared: Arc<Shared>,
    mut cut: watch::Receiver<u64>,
) -> io::Result<()> {
    tokio::select! {
        // Checked first, so no byte is relayed after a cut.
        biased;
        // Returning drops both connections, which closes them. An error
        // means the front is gone, which ends the relay all the same.
        _ = cut.changed() => Ok(()),
        result = relay_both_ways(client, &shared) => result,
    }
}

async fn relay_both_ways(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let server = TcpStream::connect(shared.upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    // The upstream connection closes with a reset, not a FIN: the mock
    // stops polling a connection for reads while it holds a JoinGroup or
    // SyncGroup there, and a FIN only makes the socket readable, so it
    // never saw the close. The member, rejoining on a new connection,
    // then still had an answer pending and the mock aborted the process
    // (`rd_kafka_mock_cgrp_classic_member_add: !member->resp`). A reset
    // is reported as an error even to such a connection, and the mock
    // drops the held answer. Only answers nobody reads are lost: the
    // client side is gone by then, and Linux hands the mock the requests
    // queued before the reset first.
    server.set_zero_linger()?;
    // As Kafka shows a member's host in DescribeGroups.
    let client_host = client
        .peer_addr()
        .map(|addr| format!("/{}", addr.ip()))
        .unwrap_or_default();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Both directions run in this one task, so the locks are never
    // contended (a RefCell would make the task's future !Send).
    let pending = Pending::default();
    let (fetch_tx, fetch_rx) = mpsc::unbounded_channel();
    // Either side closing ends the relay: Kafka has no half-closed sessions.
    tokio::select! {
        r = forward_requests(client_read, server_write, shared, &pending, fetch_rx, &client_host) => r,
        r = forward_responses(server_read, client_write, shared, &pending, fetch_tx) => r,
    }
}

/// Requests of one connection whose answers the front looks at.
#[derive(Debug, Default)]
struct Pending {
    /// ApiVersions requests relayed and not yet answered, oldest first.
    versions: Mutex<VecDeque<PendingVersions>>,
    /// Correlation ids of Produce requests relayed and not yet answered,
    /// oldest first (an `acks=0` one is never answered: it leaves when a
    /// later one is, or when the queue is full).
    produces: Mutex<VecDeque<i32>>,
    /// The fetch being long-polled: the client sends nothing else meanwhile.
    fetch: Mutex<Option<WaitingFetch>>,
    /// Answers the front gives itself, each in place of the answer to an
    /// ApiVersions v0 request relayed with the same correlation id.
    own_answers: Mutex<VecDeque<(i32, Vec<u8>)>>,
}

/// Largest group request the front reads whole (a leader's SyncGroup
/// carries every member's assignment); a larger one is relayed as it is,
/// and the mock, which then answers it, knows no such group.
const GROUP_REQUEST_HOLD: usize = 1024 * 1024;

/// Most Produce correlation ids remembered per connection.
const PRODUCES_REMEMBERED: usize = 1024;

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fetch relayed with `max_wait` 0, asked again until it has an answer
/// worth giving or its wait is over.
#[derive(Debug, Clone, Copy)]
struct WaitingFetch {
    correlation_id: i32,
    version: i16,
    min_bytes: i32,
    deadline: Instant,
}

/// What became of one relayed copy of a waiting fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchAnswer {
    /// Relayed to the client: the wait is over.
    Given,
    /// Empty and dropped: ask again.
    Empty,
}

/// An ApiVersions request on its way, whose answer the front adjusts.
#[derive(Debug, Clone, Copy)]
struct PendingVersions {
    correlation_id: i32,
    /// Relayed as v0 because the client asked above the upstream's range:
    /// the answer becomes UNSUPPORTED_VERSION.
    unsupported: bool,
    /// The answer has the classic layout (v0 to v2), whose ranges the
    /// front can clamp in place.
    classic: bool,
}

/// Client to upstream: relays bytes as read, except ApiVersions requests
/// above the upstream's range, which leave as ApiVersions v0, and fetches,
/// which the front long-polls (see the module docs).
async fn forward_requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    pending: &Pending,
    mut fetch_answers: mpsc::UnboundedReceiver<FetchAnswer>,
    client_host: &str,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER_BYTES];
    // buf[..held] is the start of a request header kept from the last read.
    let mut held = 0;
    // Bytes of the current request still to come, and whether to drop them.
    let mut remaining: u64 = 0;
    let mut dropping = false;
    let mut faults = shared.faults.state.subscribe();
    let mut produced = shared.produced.subscribe();
    loop {
        let n = from.read(&mut buf[held..]).await?;
        if n == 0 {
            to.write_all(&buf[..held]).await?;
            to.shutdown().await?;
            return Ok(());
        }
        quick_ack(from.as_ref());
        if shared.faults.is_active() {
            shared.faults.gate(&mut faults).await;
        }
        let mut end = held + n;
        // buf[sent..pos] is scanned and waits to be written.
        let mut pos = 0;
        let mut sent = 0;
        while pos < end {
            if remaining > 0 {
                let take = remaining.min((end - pos) as u64);
                remaining -= take;
                if dropping {
                    to.write_all(&buf[sent..pos]).await?;
                    sent = pos + take as usize;
                }
                pos += take as usize;
                continue;
            }
            let Some(header) = RequestHeader::parse(&buf[pos..end]) else {
                break; // an incomplete header: wait for the rest
            };
            if header.api_key == FETCH
                && (0..=FETCH_MAX_VERSION).contains(&header.api_version)
                && header.frame_bytes <= FETCH_REQUEST_HOLD as u64
            {
                let frame_end = pos + header.frame_bytes as usize;
                if frame_end > end {
                    break; // held whole: wait for the rest
                }
                if let Some(wait) = FetchWait::read(&buf[pos..frame_end]) {
                    to.write_all(&buf[sent..pos]).await?;
                    let request = &mut buf[pos..frame_end];
                    long_poll(
                        &mut to,
                        request,
                        header,
                        wait,
                        pending,
                        &mut fetch_answers,
                        &mut produced,
                    )
                    .await?;
                    pos = frame_end;
                    sent = pos;
                    continue;
                }
            }
            if matches!(
                header.api_key,
                groups::JOIN_GROUP
                    | groups::SYNC_GROUP
                    | groups::HEARTBEAT
                    | groups::LEAVE_GROUP
                    | listing::OFFSET_COMMIT
                    | listing::LIST_GROUPS
                    | listing::DESCRIBE_GROUPS
            ) && header.frame_bytes <= GROUP_REQUEST_HOLD as u64
            {
                let frame_end = pos + header.frame_bytes as usize;
                if frame_end > end {
                    if header.frame_bytes as usize > buf.len() {
                        // Room for the whole frame from the buffer's start.
                        buf.resize(header.frame_bytes as usize, 0);
                    }
                    break; // held whole: wait for the rest
                }
                // Earlier requests leave first: an answer may wait.
                to.write_all(&buf[sent..pos]).await?;
                sent = pos;
                let frame = &buf[pos..frame_end];
                let answer = shared.groups.answer(
                    frame,
                    header.api_key,
                    header.api_version,
                    client_host,
                    shared.broker_id,
                );
                let mut read_ahead = Vec::new();
                let Some(answer) = watching_client(&mut from, answer, &mut read_ahead).await?
                else {
                    // The client is gone: its wait was dropped with the
                    // answer, and Kafka answers nothing more on a closed
                    // connection.
                    return Ok(());
                };
                if !read_ahead.is_empty() {
                    // After what was read before, as if read now.
                    let grown = end + read_ahead.len();
                    if buf.len() < grown {
                        buf.resize(grown, 0);
                    }
                    buf[end..grown].copy_from_slice(&read_ahead);
                    end = grown;
                    if shared.faults.is_active() {
                        shared.faults.gate(&mut faults).await;
                    }
                }
                if let Some(body) = answer {
                    locked(&pending.own_answers).push_back((
                        header.correlation_id,
                        response_frame(header.correlation_id, &body),
                    ));
                    to.write_all(&api_versions_v0_request(header.correlation_id))
                        .await?;
                    pos = frame_end;
                    sent = pos;
                    continue;
                }
            }
            remaining = header.frame_bytes;
            dropping = false;
            if header.api_key == PRODUCE {
                shared
                    .produced_bytes
                    .fetch_add(header.frame_bytes, Ordering::Relaxed);
                let mut produces = locked(&pending.produces);
                if produces.len() == PRODUCES_REMEMBERED {
                    produces.pop_front();
                }
                produces.push_back(header.correlation_id);
            }
            if header.api_key != API_VERSIONS {
                continue;
            }
            let unsupported = shared
                .api_versions_max()
                .await
                .is_some_and(|max| header.api_version > max);
            // Recorded before the request leaves, so its answer is known.
            locked(&pending.versions).push_back(PendingVersions {
                correlation_id: header.correlation_id,
                unsupported,
                classic: unsupported || (0..=2).contains(&header.api_version),
            });
            if unsupported {
                to.write_all(&buf[sent..pos]).await?;
                sent = pos;
                to.write_all(&api_versions_v0_request(header.correlation_id))
                    .await?;
                dropping = true;
            }
        }
        to.write_all(&buf[sent..pos]).await?;
        buf.copy_within(pos..end, 0);
        held = end - pos;
    }
}

/// Most bytes read from a client while a group answer it waits for is
/// due; past that the front reads no more until the answer (the client's
/// sends wait in the kernel).
const READ_AHEAD_HOLD: usize = BUFFER_BYTES;

/// Awaits `answer` while noticing the client close its connection (`None`,
/// the answer dropped), so that a join whose client is gone is not waited
/// for nor counted. Kafka reads nothing more from a connection while a
/// request is in flight; the bytes read meanwhile go to `read_ahead`, in
/// order, to be handled after the answer.
async fn watching_client<T>(
    from: &mut OwnedReadHalf,
    answer: impl Future<Output = T>,
    read_ahead: &mut Vec<u8>,
) -> io::Result<Option<T>> {
    tokio::pin!(answer);
    loop {
        let room = READ_AHEAD_HOLD.saturating_sub(read_ahead.len());
        // Whole reads, not the few bytes an unreserved Vec offers.
        read_ahead.reserve(room.min(8 * 1024));
        let mut limited = (&mut *from).take(room as u64);
        tokio::select! {
            biased;
            answer = &mut answer => return Ok(Some(answer)),
            // Cancel safe: a read that loses the race took no byte.
            read = limited.read_buf(read_ahead), if room > 0 => {
                if read? == 0 {
                    return Ok(None);
                }
                quick_ack(from.as_ref());
            }
        }
    }
}

/// A response frame: length, `correlation_id`, then `body`.
fn response_frame(correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + body.len());
    let length = u32::try_from(4 + body.len()).unwrap_or(u32::MAX);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Relays one fetch `request` (a whole frame) with `max_wait` 0, again
/// whenever its answer comes back empty, until an answer went to the
/// client. Asks again once a produce through this front is answered, at
/// the latest every [`FETCH_POLL_INTERVAL`], and once more when the
/// client's wait is over, whose answer goes to the client whatever it is.
async fn long_poll(
    to: &mut OwnedWriteHalf,
    request: &mut [u8],
    header: RequestHeader,
    wait: FetchWait,
    pending: &Pending,
    answers: &mut mpsc::UnboundedReceiver<FetchAnswer>,
    produced: &mut watch::Receiver<u64>,
) -> io::Result<()> {
    request[wait.max_wait_at..wait.max_wait_at + 4].copy_from_slice(&0i32.to_be_bytes());
    let now = Instant::now();
    let deadline = now
        .checked_add(Duration::from_millis(u64::from(
            wait.max_wait_ms.unsigned_abs(),
        )))
        .unwrap_or(now);
    *locked(&pending.fetch) = Some(WaitingFetch {
        correlation_id: header.correlation_id,
        version: header.api_version,
        min_bytes: wait.min_bytes,
        deadline,
    });
    loop {
        // Produces answered before this copy leaves are in its answer.
        produced.borrow_and_update();
        to.write_all(request).await?;
        match answers.recv().await {
            Some(FetchAnswer::Empty) => {}
            // Given, or the responses' side is gone (the relay ends).
            Some(FetchAnswer::Given) | None => return Ok(()),
        }
        let next_poll = Instant::now() + FETCH_POLL_INTERVAL;
        tokio::select! {
            // An error means the front is gone: the deadline still holds.
            _ = produced.changed() => {}
            () = tokio::time::sleep_until(next_poll.min(deadline)) => {}
        }
    }
}

/// Where a fetch request (v0 to v11) keeps its wait, and what it asks.
#[derive(Debug, Clone, Copy)]
struct FetchWait {
    /// Offset of `max_wait_ms` in the frame, length prefix included.
    max_wait_at: usize,
    max_wait_ms: i32,
    min_bytes: i32,
}

impl FetchWait {
    /// `None` unless the fetch would wait: `max_wait` above 0, and
    /// `min_bytes` above 0 (a Kafka broker answers at once otherwise).
    fn read(frame: &[u8]) -> Option<Self> {
        // Length, api key, version, correlation id, client id (nullable).
        let client_id = usize::try_from(read_i16(frame, 12)?).unwrap_or(0);
        // The body opens with replica_id, then max_wait_ms and min_bytes.
        let max_wait_at = REQUEST_HEADER_BYTES + 2 + client_id + 4;
        let wait = Self {
            max_wait_at,
            max_wait_ms: read_i32(frame, max_wait_at)?,
            min_bytes: read_i32(frame, max_wait_at + 4)?,
        };
        (wait.max_wait_ms > 0 && wait.min_bytes > 0).then_some(wait)
    }
}

/// Whether a fetch answer `frame` (length prefix included, v0 to v11)
/// ends the wait, as a Kafka broker would decide: an error anywhere, at
/// least `min_bytes` of records, or no partition asked. An answer the
/// front cannot read ends it too: the client gets it as it is.
fn fetch_answer_ends_wait(frame: &[u8], version: i16, min_bytes: i32) -> bool {
    fetch_answer_read(frame, version, min_bytes).unwrap_or(true)
}

fn fetch_answer_read(frame: &[u8], version: i16, min_bytes: i32) -> Option<bool> {
    // Length and correlation id.
    let mut at = 8;
    if version >= 1 {
        at += 4; // throttle_time_ms
    }
    if version >= 7 {
        if read_i16(frame, at)? != 0 {
            return Some(true);
        }
        at += 6; // error_code, session_id
    }
    let topics = read_i32(frame, at)?;
    at += 4;
    let mut partitions_seen = 0usize;
    let mut record_bytes: u64 = 0;
    for _ in 0..topics.max(0) {
        let name = usize::try_from(read_i16(frame, at)?).unwrap_or(0);
        at += 2 + name;
        let partitions = read_i32(frame, at)?;
        at += 4;
        for _ in 0..partitions.max(0) {
            partitions_seen += 1;
            // partition_index, then error_code.
            if read_i16(frame, at + 4)? != 0 {
                return Some(true);
            }
            at += 4 + 2 + 8; // index, error, high_watermark
            if version >= 4 {
                at += 8; // last_stable_offset
            }
            if version >= 5 {
                at += 8; // log_start_offset
            }
            if version >= 4 {
                let aborted = usize::try_from(read_i32(frame, at)?).unwrap_or(0);
                at += 4 + aborted.checked_mul(16)?;
            }
            if version >= 11 {
                at += 4; // preferred_read_replica
            }
            let records = u64::try_from(read_i32(frame, at)?).unwrap_or(0);
            at = at.checked_add(4 + usize::try_from(records).ok()?)?;
            if at > frame.len() {
                return None;
            }
            record_bytes += records;
        }
    }
    Some(partitions_seen == 0 || record_bytes >= u64::try_from(min_bytes).unwrap_or(0))
}

/// Upstream to client: relays bytes as read, adjusts ApiVersions answers
/// (see [`adjust_versions_answer`]), drops empty answers of a long-polled
/// fetch, and applies the latency in force.
async fn forward_responses(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    pending: &Pending,
    fetch_answers: mpsc::UnboundedSender<FetchAnswer>,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER_BYTES];
    // buf[..held] is the start of a response header kept from the last read.
    let mut held = 0;
    let mut remaining: u64 = 0;
    // Responses held back by a latency, with the time each is due, in order.
    let mut delayed: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut faults = shared.faults.state.subscribe();
    loop {
        let read = match delayed.front() {
            None => from.read(&mut buf[held..]).await,
            Some(&(due, _)) => tokio::select! {
                biased;
                () = tokio::time::sleep_until(due) => {
                    if shared.faults.is_active() {
                        shared.faults.gate(&mut faults).await;
                    }
                    if let Some((_, chunk)) = delayed.pop_front() {
                        to.write_all(&chunk).await?;
                    }
                    continue;
                }
                read = from.read(&mut buf[held..]) => read,
            },
        };
        let n = read?;
        if n == 0 {
            // Upstream closed: what it sent still arrives, when due.
            while let Some((due, chunk)) = delayed.pop_front() {
                tokio::time::sleep_until(due).await;
                to.write_all(&chunk).await?;
            }
            to.write_all(&buf[..held]).await?;
            to.shutdown().await?;
            return Ok(());
        }
        let latency = if shared.faults.is_active() {
            shared.faults.gate(&mut faults).await
        } else {
            Duration::ZERO
        };
        let mut end = held + n;
        // Until no own answer is left to put in: the bytes after one are
        // scanned again without a read.
        loop {
            let scanned = scan_responses(&mut buf[..end], &mut remaining, pending, shared);
            let ready = scanned.ready;
            let mut out = [&buf[..ready], &[][..]];
            if let Some((_, own)) = &scanned.own_answer {
                out[1] = own;
            }
            for chunk in out.into_iter().filter(|chunk| !chunk.is_empty()) {
                if latency.is_zero() && delayed.is_empty() {
                    to.write_all(chunk).await?;
                } else {
                    delayed.push_back((Instant::now() + latency, chunk.to_vec()));
                }
            }
            if let Some(answer) = scanned.fetch {
                // The requests' side ended only if the relay is ending.
                let _ = fetch_answers.send(answer);
            }
            let consumed = ready + scanned.own_answer.as_ref().map_or(0, |(skip, _)| *skip);
            buf.copy_within(consumed..scanned.end, 0);
            end = scanned.end - consumed;
            if scanned.own_answer.is_none() {
                break;
            }
        }
        held = end;
    }
}

/// What [`scan_responses`] found in a buffer.
#[derive(Debug)]
struct Scanned {
    /// Leading bytes that may be forwarded.
    ready: usize,
    /// Where the buffer's bytes now end (a dropped fetch answer shortens it).
    end: usize,
    /// What became of the long-polled fetch, if its answer was seen.
    fetch: Option<FetchAnswer>,
    /// The front's own answer, to send after the `ready` bytes in place
    /// of the next `.0` bytes (the answer it stands in for).
    own_answer: Option<(usize, Vec<u8>)>,
}

/// Walks the response frames in `buf`, continuing a frame with `remaining`
/// bytes left from earlier reads: adjusts the answer to the oldest pending
/// ApiVersions request, notes answered produces, and drops an empty answer
/// to the long-polled fetch. Bytes it cannot judge yet (the start of a
/// frame the front must see whole, or an incomplete length) are kept for
/// the next read.
fn scan_responses(
    buf: &mut [u8],
    remaining: &mut u64,
    pending: &Pending,
    shared: &Shared,
) -> Scanned {
    let mut end = buf.len();
    let mut pos = 0;
    let mut fetch_answer = None;
    // Once per read; never held across an await.
    let mut versions = locked(&pending.versions);
    let mut produces = locked(&pending.produces);
    let mut fetch = locked(&pending.fetch);
    while pos < end {
        if *remaining > 0 {
            let take = (*remaining).min((end - pos) as u64);
            *remaining -= take;
            pos += take as usize;
            continue;
        }
        let (Some(length), Some(correlation_id)) = (read_u32(buf, pos), read_i32(buf, pos + 4))
        else {
            break;
        };
        let frame_bytes = 4 + u64::from(length);
        let mut own_answers = locked(&pending.own_answers);
        if let Some((id, _)) = own_answers.front()
            && *id == correlation_id
        {
            // The answer to the ApiVersions v0 request relayed in its
            // stead: small, and taken whole.
            if ((end - pos) as u64) < frame_bytes {
                break;
            }
            let (_, own) = own_answers.pop_front().unwrap_or_default();
            return Scanned {
                ready: pos,
                end,
                fetch: fetch_answer,
                own_answer: Some((frame_bytes as usize, own)),
            };
        }
        drop(own_answers);
        if let Some(&pending) = versions.front() {
            // A frame too large to be an ApiVersions answer is not one; the
            // front never holds more than this much back.
            let whole = frame_bytes <= VERSIONS_ANSWER_HOLD as u64;
            if whole && ((end - pos) as u64) < frame_bytes {
                break;
            }
            if whole && correlation_id == pending.correlation_id {
                let frame = &mut buf[pos..pos + frame_bytes as usize];
                adjust_versions_answer(frame, pending);
                versions.pop_front();
                if let Some(rebuilt) = versions_answer_with_listing(frame, pending) {
                    return Scanned {
                        ready: pos,
                        end,
                        fetch: fetch_answer,
                        own_answer: Some((frame_bytes as usize, rebuilt)),
                    };
                }
            }
        }
        if let Some(answered) = produces.iter().position(|&id| id == correlation_id) {
            // Earlier ones (acks=0) will never be answered.
            produces.drain(..=answered);
            shared
                .produced
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
        if let Some(waiting) = *fetch
            && waiting.correlation_id == correlation_id
        {
            let small = frame_bytes <= FETCH_ANSWER_HOLD as u64;
            if small && ((end - pos) as u64) < frame_bytes {
                break;
            }
            let frame_end = pos + frame_bytes as usize;
            let ends_wait = !small
                || Instant::now() >= waiting.deadline
                || fetch_answer_ends_wait(&buf[pos..frame_end], waiting.version, waiting.min_bytes);
            if ends_wait {
                *fetch = None;
                fetch_answer = Some(FetchAnswer::Given);
            } else {
                buf.copy_within(frame_end..end, pos);
                end -= frame_bytes as usize;
                fetch_answer = Some(FetchAnswer::Empty);
                continue;
            }
        }
        *remaining = frame_bytes;
    }
    Scanned {
        ready: pos,
        end,
        fetch: fetch_answer,
        own_answer: None,
    }
}

/// Adjusts one ApiVersions answer `frame` (length prefix included), in
/// place: UNSUPPORTED_VERSION if its request was relayed as v0, and in the
/// classic layout every range capped per [`MOCK_VERSION_CAPS`].
fn adjust_versions_answer(frame: &mut [u8], pending: PendingVersions) {
    // Length, correlation id, error code, range count: then the ranges.
    if frame.len() < API_VERSIONS_RESPONSE_HEAD {
        return;
    }
    if pending.unsupported {
        frame[8..10].copy_from_slice(&UNSUPPORTED_VERSION.to_be_bytes());
    }
    let count = match read_i32(frame, 10) {
        Some(count) if pending.classic => usize::try_from(count).unwrap_or(0),
        _ => return,
    };
    for range in frame[14..].chunks_exact_mut(6).take(count) {
        let (Some(key), Some(min), Some(max)) =
            (read_i16(range, 0), read_i16(range, 2), read_i16(range, 4))
        else {
            return;
        };
        if let Some(&(_, cap)) = MOCK_VERSION_CAPS.iter().find(|(k, _)| *k == key)
            && max > cap
        {
            range[4..6].copy_from_slice(&cap.max(min).to_be_bytes());
        }
    }
}

/// The ApiVersions answer `frame` (length prefix included) with the
/// ranges of the APIs the front answers itself (see [`listing`]) added,
/// in the answer's layout; `None` if it lists them already or cannot be
/// read (it then goes on as it is).
fn versions_answer_with_listing(frame: &[u8], pending: PendingVersions) -> Option<Vec<u8>> {
    // Length, correlation id, error code: then the ranges.
    let head = API_VERSIONS_RESPONSE_HEAD;
    let mut r = groups::Reader::new(frame.get(head..)?);
    let count = if pending.classic {
        usize::try_from(r.i32()?).ok()?
    } else {
        usize::try_from(r.uvarint()?.checked_sub(1)?).ok()?
    };
    let entries_at = head + r.position();
    // A count larger than the frame holds fails below, at its end.
    let mut keys = Vec::with_capacity(count.min(frame.len() / 6));
    for _ in 0..count {
        let at = head + r.position();
        r.take(6)?; // api_key, min_version, max_version
        if !pending.classic {
            // The entry's tagged fields.
            for _ in 0..r.uvarint()? {
                r.uvarint()?;
                let size = usize::try_from(r.uvarint()?).ok()?;
                r.take(size)?;
            }
        }
        keys.push(read_i16(frame, at)?);
    }
    let entries_end = head + r.position();
    let added: Vec<_> = listing::ANSWERED_RANGES
        .iter()
        .filter(|(key, _, _)| !keys.contains(key))
        .collect();
    if added.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(frame.len() + added.len() * 7 + 4);
    out.extend_from_slice(&frame[..head]);
    let total = count + added.len();
    if pending.classic {
        out.extend_from_slice(&i32::try_from(total).ok()?.to_be_bytes());
    } else {
        let mut value = total as u64 + 1;
        while value >= 0x80 {
            out.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    out.extend_from_slice(&frame[entries_at..entries_end]);
    for (key, min, max) in added {
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&min.to_be_bytes());
        out.extend_from_slice(&max.to_be_bytes());
        if !pending.classic {
            out.push(0); // no tagged fields
        }
    }
    out.extend_from_slice(&frame[entries_end..]);
    let length = u32::try_from(out.len() - 4).ok()?;
    out[..4].copy_from_slice(&length.to_be_bytes());
    Some(out)
}

/// The start of a request frame.
#[derive(Debug, Clone, Copy)]
struct RequestHeader {
    /// The whole frame, length prefix included.
    frame_bytes: u64,
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
}

impl RequestHeader {
    /// `None` while `bytes` holds too little to tell. A frame too short for
    /// a header (malformed) reads as API key -1, so it is relayed as it is.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let length = read_u32(bytes, 0)?;
        let frame_bytes = 4 + u64::from(length);
        if frame_bytes < REQUEST_HEADER_BYTES as u64 {
            return Some(Self {
                frame_bytes,
                api_key: -1,
                api_version: -1,
                correlation_id: -1,
            });
        }
        Some(Self {
            frame_bytes,
            api_key: read_i16(bytes, 4)?,
            api_version: read_i16(bytes, 6)?,
            correlation_id: read_i32(bytes, 8)?,
        })
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_i16(bytes: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// An ApiVersions v0 request frame: header v1 with an empty client id, no body.
fn api_versions_v0_request(correlation_id: i32) -> [u8; 14] {
    let mut frame = [0u8; 14];
    frame[..4].copy_from_slice(&10u32.to_be_bytes());
    frame[4..6].copy_from_slice(&API_VERSIONS.to_be_bytes());
    // api_version 0 and a zero-length client id: bytes 6..8 and 12..14 stay 0.
    frame[8..12].copy_from_slice(&correlation_id.to_be_bytes());
    frame
}

impl Shared {
    /// The highest ApiVersions version the upstream answers, asked once;
    /// `None` if it could not be learnt, and the request is relayed as is.
    async fn api_versions_max(&self) -> Option<i16> {
        self.api_versions_max
            .get_or_try_init(|| query_api_versions_max(self.upstream))
            .await
            .ok()
            .copied()
    }
}

/// Asks `upstream` for its ApiVersions range with a v0 request.
async fn query_api_versions_max(upstream: SocketAddr) -> io::Result<i16> {
    let ask = async {
        let mut stream = TcpStream::connect(upstream).await?;
        stream.write_all(&api_versions_v0_request(0)).await?;
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await?;
        let length = u32::from_be_bytes(length) as usize;
        if length > VERSIONS_ANSWER_LIMIT {
            return Err(invalid(format!(
                "ApiVersions v0 answer of {length} bytes from {upstream}"
            )));
        }
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await?;
        api_versions_max_in(&body).ok_or_else(|| {
            invalid(format!(
                "no ApiVersions range in the ApiVersions v0 answer from {upstream}"
            ))
        })
    };
    tokio::time::timeout(VERSIONS_QUERY_TIMEOUT, ask)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no ApiVersions v0 answer from {upstream} within {VERSIONS_QUERY_TIMEOUT:?}"
                ),
            ))
        })
}

/// The ApiVersions max in an ApiVersions v0 response body (correlation id,
/// error code, then an array of (api_key, min, max)), if it is a success.
fn api_versions_max_in(body: &[u8]) -> Option<i16> {
    if read_i16(body, 4)? != 0 {
        return None;
    }
    let count = usize::try_from(read_i32(body, 6)?).ok()?;
    // A count larger than the body holds is malformed: read what is there.
    let count = count.min(body.len().saturating_sub(10) / 6);
    (0..count).find_map(|i| {
        let at = 10 + i * 6;
        (read_i16(body, at)? == API_VERSIONS).then(|| read_i16(body, at + 4))?
    })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(classic: bool) -> PendingVersions {
        PendingVersions {
            correlation_id: 9,
            unsupported: false,
            classic,
        }
    }

    /// A frame: length, correlation id 9, then `body`.
    fn frame(body: &[u8]) -> Vec<u8> {
        response_frame(9, body)
    }

    #[test]
    fn the_group_listing_ranges_join_a_classic_versions_answer() {
        // v1: error, [ (18, 0, 3) ], throttle 7.
        let mut body = vec![0, 0, 0, 0, 0, 1, 0, 18, 0, 0, 0, 3];
        body.extend_from_slice(&7i32.to_be_bytes());
        let answer = versions_answer_with_listing(&frame(&body), pending(true)).unwrap();
        let mut expected = vec![0, 0, 0, 0, 0, 3, 0, 18, 0, 0, 0, 3];
        expected.extend_from_slice(&[0, 15, 0, 0, 0, 4, 0, 16, 0, 0, 0, 4]);
        expected.extend_from_slice(&7i32.to_be_bytes());
        assert_eq!(answer, frame(&expected));
        // Already listed: left as it is.
        assert_eq!(versions_answer_with_listing(&answer, pending(true)), None);
    }

    #[test]
    fn the_group_listing_ranges_join_a_flexible_versions_answer() {
        // v3: error, compact [ (18, 0, 3, no tags) ], throttle, tags.
        let mut body = vec![0, 0, 2, 0, 18, 0, 0, 0, 3, 0];
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
        let answer = versions_answer_with_listing(&frame(&body), pending(false)).unwrap();
        let mut expected = vec![0, 0, 4, 0, 18, 0, 0, 0, 3, 0];
        expected.extend_from_slice(&[0, 15, 0, 0, 0, 4, 0, 0, 16, 0, 0, 0, 4, 0]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert_eq!(answer, frame(&expected));
        // A count past the frame's end: not read, left as it is.
        let mut broken = body.clone();
        broken[2] = 9;
        assert_eq!(
            versions_answer_with_listing(&frame(&broken), pending(false)),
            None
        );
    }
}
