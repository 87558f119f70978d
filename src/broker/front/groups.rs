//! The group requests the front answers itself, read and written on the
//! wire; what they mean to a group is the [`coordinator`](super::coordinator)'s.
//!
//! JoinGroup (v0 to v5), SyncGroup (v0 to v3), Heartbeat (v0 to v3) and
//! LeaveGroup (v0 to v2) are answered here and never reach the mock, the
//! caps the front puts on them (see `MOCK_VERSION_CAPS`). An OffsetCommit
//! (v0 to v7) is checked against its group and relayed when valid, else
//! answered with the error on every partition, as Kafka does. ListGroups
//! and DescribeGroups are answered from the [`listing`]. Errors injected
//! for any of these (the broker's `request_errors`) are answered here.
//!
//! A join or a follower's sync may have to wait for other members; the
//! front then awaits it, handling nothing more from that client meanwhile,
//! as a Kafka broker does, and wakes when the coordinator says something
//! is due (a session or a rebalance timeout). It still watches the client's
//! socket (keeping what it reads, in order, for after the answer): a
//! client that closes drops its wait, so a new member that never had its
//! answer is not counted in the next generation (Kafka, since KIP-394,
//! never assigns such a member).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::coordinator::{self, Coordinator, JoinAnswer, JoinAsk, Reply, SyncAnswer};
use super::{listing, locked, read_i16};

/// Kafka's JoinGroup api key.
pub(super) const JOIN_GROUP: i16 = 11;
/// Kafka's Heartbeat api key.
pub(super) const HEARTBEAT: i16 = 12;
/// Kafka's LeaveGroup api key.
pub(super) const LEAVE_GROUP: i16 = 13;
/// Kafka's SyncGroup api key.
pub(super) const SYNC_GROUP: i16 = 14;
/// Highest JoinGroup version the front reads (its cap).
pub(super) const JOIN_GROUP_MAX: i16 = 5;
/// Highest SyncGroup version the front reads (its cap).
pub(super) const SYNC_GROUP_MAX: i16 = 3;
/// Highest Heartbeat version the front reads (its cap; v4 is flexible).
pub(super) const HEARTBEAT_MAX: i16 = 3;
/// Highest LeaveGroup version the front reads (its cap; v3 lists members).
pub(super) const LEAVE_GROUP_MAX: i16 = 2;
/// Highest OffsetCommit version the front reads (its cap; v8 is flexible).
pub(super) const OFFSET_COMMIT_MAX: i16 = 7;
/// The longest a waiting request sleeps before it asks the coordinator
/// again, whatever it said was due.
const RECHECK: Duration = Duration::from_secs(1);

/// The group requests of the fronts of one cluster.
#[derive(Debug)]
pub(crate) struct Groups {
    coordinator: Mutex<Coordinator>,
}

impl Default for Groups {
    fn default() -> Self {
        Self::new(Duration::ZERO)
    }
}

impl Groups {
    /// Groups whose first rebalance waits `initial_delay` for more members.
    pub(crate) fn new(initial_delay: Duration) -> Self {
        Self {
            coordinator: Mutex::new(Coordinator::new(initial_delay)),
        }
    }

    /// Whether the front answers requests of `api_key` itself, so that the
    /// mock would never see an error injected for them.
    pub(crate) fn answers(api_key: i16) -> bool {
        matches!(
            api_key,
            JOIN_GROUP
                | SYNC_GROUP
                | HEARTBEAT
                | LEAVE_GROUP
                | listing::LIST_GROUPS
                | listing::DESCRIBE_GROUPS
        )
    }

    /// The next requests of `api_key` are answered with `errors`.
    pub(crate) fn push_errors(&self, api_key: i16, errors: &[i16]) {
        locked(&self.coordinator).push_errors(api_key, errors);
    }

    /// Drops the errors still waiting for `api_key`.
    pub(crate) fn clear_errors(&self, api_key: i16) {
        locked(&self.coordinator).clear_errors(api_key);
    }

    /// The answer body (after the correlation id) the front of mock
    /// broker `broker_id` gives to a whole request `frame` (length prefix
    /// included) of `api_key` at `version` from a client at `client_host`,
    /// or `None` to relay it.
    pub(super) async fn answer(
        &self,
        frame: &[u8],
        api_key: i16,
        version: i16,
        client_host: &str,
        broker_id: i32,
    ) -> Option<Vec<u8>> {
        let flexible = api_key == listing::LIST_GROUPS && version >= 3;
        let body = request_body(frame, flexible)?;
        match api_key {
            JOIN_GROUP if (0..=JOIN_GROUP_MAX).contains(&version) => {
                let ask = JoinRequest::read(body, version)?.ask(client_id(frame), client_host);
                let group = ask.group.clone();
                let member_id = ask.member_id.clone();
                let reply = {
                    let mut coordinator = locked(&self.coordinator);
                    let reply = coordinator.join(api_key, ask, Instant::now());
                    coordinator.listed.coordinated_by(&group, broker_id);
                    reply
                };
                let lost = JoinAnswer {
                    error: coordinator::error::UNKNOWN_MEMBER_ID,
                    generation: -1,
                    member_id,
                    ..JoinAnswer::default()
                };
                Some(join_answer(
                    &self.settle(&group, reply, lost).await,
                    version,
                ))
            }
            SYNC_GROUP if (0..=SYNC_GROUP_MAX).contains(&version) => {
                let sync = SyncRequest::read(body, version)?;
                let reply = {
                    let mut coordinator = locked(&self.coordinator);
                    coordinator.listed.coordinated_by(&sync.group, broker_id);
                    coordinator.sync(
                        api_key,
                        &sync.group,
                        sync.generation,
                        &sync.member_id,
                        sync.instance_id.as_deref(),
                        sync.assignments,
                        Instant::now(),
                    )
                };
                let lost = SyncAnswer {
                    error: coordinator::error::REBALANCE_IN_PROGRESS,
                    assignment: Vec::new(),
                };
                Some(sync_answer(
                    &self.settle(&sync.group, reply, lost).await,
                    version,
                ))
            }
            HEARTBEAT if (0..=HEARTBEAT_MAX).contains(&version) => {
                let mut r = Reader::new(body);
                let group = r.string()?;
                let generation = r.i32()?;
                let member_id = r.string()?;
                let instance_id = if version >= 3 {
                    instance_id(r.nullable_string()?)
                } else {
                    None
                };
                let mut coordinator = locked(&self.coordinator);
                coordinator.listed.coordinated_by(&group, broker_id);
                let error = coordinator.heartbeat(
                    api_key,
                    &group,
                    generation,
                    &member_id,
                    instance_id.as_deref(),
                    Instant::now(),
                );
                Some(error_answer(error, version))
            }
            LEAVE_GROUP if (0..=LEAVE_GROUP_MAX).contains(&version) => {
                let mut r = Reader::new(body);
                let group = r.string()?;
                let member_id = r.string()?;
                let mut coordinator = locked(&self.coordinator);
                coordinator.listed.coordinated_by(&group, broker_id);
                let error = coordinator.leave(api_key, &group, &member_id, Instant::now());
                Some(error_answer(error, version))
            }
            listing::OFFSET_COMMIT if (0..=OFFSET_COMMIT_MAX).contains(&version) => {
                let commit = CommitRequest::read(body, version)?;
                let mut coordinator = locked(&self.coordinator);
                let error = coordinator.commit_error(
                    &commit.group,
                    commit.generation,
                    &commit.member_id,
                    commit.instance_id.as_deref(),
                    Instant::now(),
                );
                // After the commit: it lists a group it did not know.
                coordinator.listed.coordinated_by(&commit.group, broker_id);
                let error = error?;
                Some(commit.answer(error, version))
            }
            listing::LIST_GROUPS if (0..=listing::LIST_GROUPS_MAX).contains(&version) => {
                Some(locked(&self.coordinator).list_groups(
                    api_key,
                    body,
                    version,
                    broker_id,
                    Instant::now(),
                ))
            }
            listing::DESCRIBE_GROUPS if (0..=listing::DESCRIBE_GROUPS_MAX).contains(&version) => {
                let asked = listing::describe_request(body)?;
                Some(locked(&self.coordinator).describe_groups(
                    api_key,
                    &asked,
                    version,
                    Instant::now(),
                ))
            }
            _ => None,
        }
    }

    /// The answer `reply` gives, awaited if it must wait; `lost` if the
    /// coordinator dropped the wait (the member left or rejoined elsewhere).
    async fn settle<T>(&self, group: &str, reply: Reply<T>, lost: T) -> T {
        let receiver: oneshot::Receiver<T> = match reply {
            Reply::Now(answer) => return answer,
            Reply::Later(receiver) => receiver,
        };
        let mut waiting = Waiting {
            groups: self,
            group,
            receiver: Some(receiver),
        };
        loop {
            let now = Instant::now();
            let due = locked(&self.coordinator).tick(group, now);
            let wake = due.map_or(now + RECHECK, |due| due.min(now + RECHECK));
            let Some(receiver) = waiting.receiver.as_mut() else {
                return lost;
            };
            tokio::select! {
                answer = receiver => {
                    waiting.receiver = None;
                    return answer.unwrap_or(lost);
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }
}

/// A wait for the coordinator's answer. Dropped before the answer (its
/// client is gone), it tells the coordinator at once, so that the rest of
/// the group waits no more for that member.
struct Waiting<'a, T> {
    groups: &'a Groups,
    group: &'a str,
    receiver: Option<oneshot::Receiver<T>>,
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        if let Some(receiver) = self.receiver.take() {
            // Closed first: that is what the coordinator looks for.
            drop(receiver);
            locked(&self.groups.coordinator).tick(self.group, Instant::now());
        }
    }
}

/// The body of a request frame: past the length, the header (api key,
/// version, correlation id), the client id and, in a `flexible` header
/// (v2), its tagged fields. `None` if malformed.
fn request_body(frame: &[u8], flexible: bool) -> Option<&[u8]> {
    let client_id = usize::try_from(read_i16(frame, 12)?).unwrap_or(0);
    let body = frame.get(14 + client_id..)?;
    if !flexible {
        return Some(body);
    }
    let mut r = Reader::new(body);
    for _ in 0..r.uvarint()? {
        r.uvarint()?; // tag
        let size = usize::try_from(r.uvarint()?).ok()?;
        r.take(size)?;
    }
    body.get(r.at..)
}

/// A group instance id as read: null or empty is none (a dynamic member).
fn instance_id(read: Option<String>) -> Option<String> {
    read.filter(|id| !id.is_empty())
}

/// The client id in a request frame's header ("" if null or malformed).
fn client_id(frame: &[u8]) -> &str {
    let length = read_i16(frame, 12).and_then(|l| usize::try_from(l).ok());
    length
        .and_then(|l| frame.get(14..14 + l))
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .unwrap_or_default()
}

/// A cursor over Kafka encodings (classic, and the compact ones flexible
/// versions use).
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// An unsigned varint (at most 5 bytes, as Kafka writes them).
    pub(super) fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = *self.take(1)?.first()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A compact string (length + 1 as a varint); null reads as "".
    pub(super) fn compact_string(&mut self) -> Option<String> {
        let Some(length) = self.uvarint()?.checked_sub(1) else {
            return Some(String::new());
        };
        let bytes = self.take(usize::try_from(length).ok()?)?;
        String::from_utf8(bytes.to_vec()).ok()
    }

    /// Bytes read so far.
    pub(super) fn position(&self) -> usize {
        self.at
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    pub(super) fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    pub(super) fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A nullable string: `None` inside for null.
    fn nullable_string(&mut self) -> Option<Option<String>> {
        let length = self.i16()?;
        if length < 0 {
            return Some(None);
        }
        let bytes = self.take(usize::try_from(length).ok()?)?;
        Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
    }

    pub(super) fn string(&mut self) -> Option<String> {
        Some(self.nullable_string()?.unwrap_or_default())
    }

    pub(super) fn bytes(&mut self) -> Option<Vec<u8>> {
        let length = self.i32()?;
        if length < 0 {
            return Some(Vec::new());
        }
        Some(self.take(usize::try_from(length).ok()?)?.to_vec())
    }

    /// An array count, bounded by what the rest could hold at
    /// `min_item_bytes` each, so a malformed count allocates nothing.
    pub(super) fn count(&mut self, min_item_bytes: usize) -> Option<usize> {
        let count = usize::try_from(self.i32()?).unwrap_or(0);
        let left = self.bytes.len() - self.at;
        (count <= left / min_item_bytes.max(1)).then_some(count)
    }
}

#[derive(Debug)]
struct JoinRequest {
    group: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    member_id: String,
    group_instance_id: Option<String>,
    protocols: Vec<(String, Vec<u8>)>,
}

impl JoinRequest {
    fn read(body: &[u8], version: i16) -> Option<Self> {
        let mut r = Reader::new(body);
        let group = r.string()?;
        let millis = |ms: i32| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        let session_timeout = millis(r.i32()?);
        // v0 has none: the session timeout stands in, as on Kafka.
        let rebalance_timeout = if version >= 1 {
            millis(r.i32()?)
        } else {
            session_timeout
        };
        let member_id = r.string()?;
        let group_instance_id = if version >= 5 {
            instance_id(r.nullable_string()?)
        } else {
            None
        };
        let protocol_type = r.string()?;
        let count = r.count(6)?;
        let mut protocols = Vec::with_capacity(count);
        for _ in 0..count {
            protocols.push((r.string()?, r.bytes()?));
        }
        Some(Self {
            group,
            session_timeout,
            rebalance_timeout,
            protocol_type,
            member_id,
            group_instance_id,
            protocols,
        })
    }

    fn ask(self, client_id: &str, client_host: &str) -> JoinAsk {
        JoinAsk {
            group: self.group,
            member_id: self.member_id,
            group_instance_id: self.group_instance_id,
            protocol_type: self.protocol_type,
            protocols: self.protocols,
            session_timeout: self.session_timeout,
            rebalance_timeout: self.rebalance_timeout,
            client_id: client_id.to_owned(),
            client_host: client_host.to_owned(),
        }
    }
}

#[derive(Debug)]
struct SyncRequest {
    group: String,
    generation: i32,
    member_id: String,
    instance_id: Option<String>,
    assignments: Vec<(String, Vec<u8>)>,
}

impl SyncRequest {
    fn read(body: &[u8], version: i16) -> Option<Self> {
        let mut r = Reader::new(body);
        let group = r.string()?;
        let generation = r.i32()?;
        let member_id = r.string()?;
        let instance_id = if version >= 3 {
            instance_id(r.nullable_string()?)
        } else {
            None
        };
        let count = r.count(6)?;
        let mut assignments = Vec::with_capacity(count);
        for _ in 0..count {
            assignments.push((r.string()?, r.bytes()?));
        }
        Some(Self {
            group,
            generation,
            member_id,
            instance_id,
            assignments,
        })
    }
}

/// An OffsetCommit request (v0 to v7): who commits, and which partitions
/// (for an answer that refuses them all).
#[derive(Debug)]
struct CommitRequest {
    group: String,
    generation: i32,
    member_id: String,
    instance_id: Option<String>,
    topics: Vec<(String, Vec<i32>)>,
}

impl CommitRequest {
    fn read(body: &[u8], version: i16) -> Option<Self> {
        let mut r = Reader::new(body);
        let group = r.string()?;
        let (generation, member_id) = if version >= 1 {
            (r.i32()?, r.string()?)
        } else {
            (-1, String::new())
        };
        let instance_id = if version >= 7 {
            instance_id(r.nullable_string()?)
        } else {
            None
        };
        if (2..=4).contains(&version) {
            r.take(8)?; // retention_time_ms
        }
        let count = r.count(6)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.string()?;
            let count = r.count(14)?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                partitions.push(r.i32()?);
                r.take(8)?; // committed_offset
                if version >= 6 {
                    r.take(4)?; // committed_leader_epoch
                }
                if version == 1 {
                    r.take(8)?; // commit_timestamp
                }
                r.nullable_string()?; // committed_metadata
            }
            topics.push((name, partitions));
        }
        Some(Self {
            group,
            generation,
            member_id,
            instance_id,
            topics,
        })
    }

    /// The answer body giving `error` for every partition asked.
    fn answer(&self, error: i16, version: i16) -> Vec<u8> {
        let mut out = Vec::new();
        if version >= 3 {
            out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
        }
        put_count(&mut out, self.topics.len());
        for (name, partitions) in &self.topics {
            put_string(&mut out, name);
            put_count(&mut out, partitions.len());
            for partition in partitions {
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&error.to_be_bytes());
            }
        }
        out
    }
}

fn put_count(out: &mut Vec<u8>, count: usize) {
    out.extend_from_slice(&i32::try_from(count).unwrap_or(i32::MAX).to_be_bytes());
}

pub(super) fn put_string(out: &mut Vec<u8>, value: &str) {
    // Names the front writes came from the wire, within an i16 length.
    let length = i16::try_from(value.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&value.as_bytes()[..length as usize]);
}

fn put_nullable_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => put_string(out, value),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

pub(super) fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    let length = i32::try_from(value.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&value[..length as usize]);
}

/// The JoinGroup answer body (v0 to v5).
fn join_answer(answer: &JoinAnswer, version: i16) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    if version >= 2 {
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
    }
    out.extend_from_slice(&answer.error.to_be_bytes());
    out.extend_from_slice(&answer.generation.to_be_bytes());
    put_string(&mut out, &answer.protocol);
    put_string(&mut out, &answer.leader);
    put_string(&mut out, &answer.member_id);
    put_count(&mut out, answer.members.len());
    for (id, instance, metadata) in &answer.members {
        put_string(&mut out, id);
        if version >= 5 {
            put_nullable_string(&mut out, instance.as_deref());
        }
        put_bytes(&mut out, metadata);
    }
    out
}

/// The SyncGroup answer body (v0 to v3).
fn sync_answer(answer: &SyncAnswer, version: i16) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + answer.assignment.len());
    if version >= 1 {
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
    }
    out.extend_from_slice(&answer.error.to_be_bytes());
    put_bytes(&mut out, &answer.assignment);
    out
}

/// A Heartbeat (v0 to v3) or LeaveGroup (v0 to v2) answer body: the error
/// code, after the throttle time from v1.
fn error_answer(error: i16, version: i16) -> Vec<u8> {
    let mut out = Vec::with_capacity(6);
    if version >= 1 {
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
    }
    out.extend_from_slice(&error.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::super::{TcpFront, read_i32};
    use super::*;

    fn frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&api_key.to_be_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&7i32.to_be_bytes());
        put_string(&mut out, "client");
        out.extend_from_slice(body);
        let length = u32::try_from(out.len() - 4).unwrap();
        out[..4].copy_from_slice(&length.to_be_bytes());
        out
    }

    fn join_request(member: &str, version: i16) -> Vec<u8> {
        let mut body = Vec::new();
        put_string(&mut body, "g");
        body.extend_from_slice(&45_000i32.to_be_bytes());
        if version >= 1 {
            body.extend_from_slice(&300_000i32.to_be_bytes());
        }
        put_string(&mut body, member);
        if version >= 5 {
            body.extend_from_slice(&(-1i16).to_be_bytes());
        }
        put_string(&mut body, "consumer");
        body.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut body, "range");
        put_bytes(&mut body, b"subscription");
        frame(JOIN_GROUP, version, &body)
    }

    fn sync_request(member: &str, generation: i32, version: i16) -> Vec<u8> {
        let mut body = Vec::new();
        put_string(&mut body, "g");
        body.extend_from_slice(&generation.to_be_bytes());
        put_string(&mut body, member);
        if version >= 3 {
            body.extend_from_slice(&(-1i16).to_be_bytes());
        }
        body.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut body, member);
        put_bytes(&mut body, b"partitions");
        frame(SYNC_GROUP, version, &body)
    }

    fn commit_request(member: &str, generation: i32, version: i16) -> Vec<u8> {
        let mut body = Vec::new();
        put_string(&mut body, "g");
        if version >= 1 {
            body.extend_from_slice(&generation.to_be_bytes());
            put_string(&mut body, member);
        }
        if version >= 7 {
            body.extend_from_slice(&(-1i16).to_be_bytes());
        }
        if (2..=4).contains(&version) {
            body.extend_from_slice(&(-1i64).to_be_bytes());
        }
        body.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut body, "t");
        body.extend_from_slice(&2i32.to_be_bytes());
        for partition in [0i32, 1] {
            body.extend_from_slice(&partition.to_be_bytes());
            body.extend_from_slice(&42i64.to_be_bytes());
            if version >= 6 {
                body.extend_from_slice(&(-1i32).to_be_bytes());
            }
            if version == 1 {
                body.extend_from_slice(&(-1i64).to_be_bytes());
            }
            put_string(&mut body, "meta");
        }
        frame(listing::OFFSET_COMMIT, version, &body)
    }

    /// Error, generation and member id of a JoinGroup answer.
    fn read_join(answer: &[u8], version: i16) -> (i16, i32, String) {
        let mut r = Reader::new(answer);
        if version >= 2 {
            r.i32().unwrap();
        }
        let error = r.i16().unwrap();
        let generation = r.i32().unwrap();
        r.string().unwrap(); // protocol
        r.string().unwrap(); // leader
        (error, generation, r.string().unwrap())
    }

    #[tokio::test]
    async fn every_version_of_join_sync_heartbeat_and_leave_reads_and_answers() {
        for version in 0..=JOIN_GROUP_MAX {
            let groups = Groups::default();
            let join = join_request("", version);
            let answer = groups.answer(&join, JOIN_GROUP, version, "/h", 1).await;
            let (error, generation, member) = read_join(&answer.expect("answered"), version);
            assert_eq!((error, generation), (0, 1), "JoinGroup v{version}");
            for sync_version in 0..=SYNC_GROUP_MAX {
                let sync = sync_request(&member, 1, sync_version);
                let answer = groups
                    .answer(&sync, SYNC_GROUP, sync_version, "/h", 1)
                    .await;
                let answer = answer.expect("answered");
                let at = if sync_version >= 1 { 4 } else { 0 };
                assert_eq!(read_i16(&answer, at), Some(0), "SyncGroup v{sync_version}");
                assert!(answer.ends_with(b"partitions"), "SyncGroup v{sync_version}");
            }
            for heartbeat_version in 0..=HEARTBEAT_MAX {
                let mut body = Vec::new();
                put_string(&mut body, "g");
                body.extend_from_slice(&1i32.to_be_bytes());
                put_string(&mut body, &member);
                if heartbeat_version >= 3 {
                    body.extend_from_slice(&(-1i16).to_be_bytes()); // group_instance_id
                }
                let request = frame(HEARTBEAT, heartbeat_version, &body);
                let answer = groups
                    .answer(&request, HEARTBEAT, heartbeat_version, "/h", 1)
                    .await;
                let expected = error_answer(0, heartbeat_version);
                assert_eq!(answer, Some(expected), "Heartbeat v{heartbeat_version}");
            }
            let mut body = Vec::new();
            put_string(&mut body, "g");
            put_string(&mut body, &member);
            let leave = frame(LEAVE_GROUP, 1, &body);
            let answer = groups.answer(&leave, LEAVE_GROUP, 1, "/h", 1).await;
            assert_eq!(
                answer,
                Some(error_answer(0, 1)),
                "LeaveGroup after v{version}"
            );
        }
    }

    #[tokio::test]
    async fn a_valid_commit_is_relayed_and_a_stale_one_refused_on_every_partition() {
        for version in 1..=OFFSET_COMMIT_MAX {
            let groups = Groups::default();
            let join = join_request("", 5);
            let answer = groups.answer(&join, JOIN_GROUP, 5, "/h", 1).await;
            let (_, generation, member) = read_join(&answer.expect("answered"), 5);
            let sync = sync_request(&member, generation, 3);
            let during = commit_request(&member, generation, version);
            let answer = groups
                .answer(&during, listing::OFFSET_COMMIT, version, "/h", 1)
                .await;
            assert!(
                answer.is_some(),
                "v{version}: a commit before the sync is refused"
            );
            groups
                .answer(&sync, SYNC_GROUP, 3, "/h", 1)
                .await
                .expect("synced");
            let valid = commit_request(&member, generation, version);
            let relayed = groups
                .answer(&valid, listing::OFFSET_COMMIT, version, "/h", 1)
                .await;
            assert_eq!(
                relayed, None,
                "OffsetCommit v{version}: a valid commit is relayed"
            );
            let stale = commit_request(&member, generation - 1, version);
            let answer = groups
                .answer(&stale, listing::OFFSET_COMMIT, version, "/h", 1)
                .await;
            let answer = answer.expect("a stale commit is answered");
            let mut r = Reader::new(&answer);
            if version >= 3 {
                r.i32().unwrap();
            }
            assert_eq!(r.i32(), Some(1));
            assert_eq!(r.string().as_deref(), Some("t"));
            assert_eq!(r.i32(), Some(2));
            for partition in [0, 1] {
                assert_eq!(r.i32(), Some(partition));
                assert_eq!(r.i16(), Some(coordinator::error::ILLEGAL_GENERATION));
            }
            assert_eq!(r.position(), answer.len(), "OffsetCommit v{version}");
        }
    }

    #[tokio::test]
    async fn a_second_members_join_waits_for_the_first_to_rejoin() {
        let groups = Groups::default();
        let first = groups
            .answer(&join_request("", 5), JOIN_GROUP, 5, "/h", 1)
            .await;
        let (_, _, first) = read_join(&first.expect("answered"), 5);
        groups
            .answer(&sync_request(&first, 1, 3), SYNC_GROUP, 3, "/h", 1)
            .await
            .expect("synced");
        let second_join = join_request("", 5);
        let second = groups.answer(&second_join, JOIN_GROUP, 5, "/h", 1);
        let rejoin_request = join_request(&first, 5);
        let rejoin = async {
            // The second member's join is in before the first rejoins.
            tokio::task::yield_now().await;
            groups.answer(&rejoin_request, JOIN_GROUP, 5, "/h", 1).await
        };
        let (second, rejoin) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(second, rejoin)
        })
        .await
        .expect("both joins answered once the first member rejoined");
        assert_eq!(read_join(&second.expect("answered"), 5).1, 2);
        assert_eq!(read_join(&rejoin.expect("answered"), 5).1, 2);
    }

    #[tokio::test]
    async fn injected_errors_answer_every_version_of_list_and_describe_groups() {
        let groups = Groups::default();
        groups
            .answer(&join_request("", 5), JOIN_GROUP, 5, "/h", 1)
            .await
            .expect("a group to list");
        for version in 0..=listing::LIST_GROUPS_MAX {
            // From v3 the request header ends in tagged fields; v4 asks
            // for no particular state.
            let body: &[u8] = match version {
                0..=2 => &[],
                3 => &[0, 0],
                _ => &[0, 1, 0],
            };
            let request = frame(listing::LIST_GROUPS, version, body);
            groups.push_errors(listing::LIST_GROUPS, &[15]);
            let failed = groups
                .answer(&request, listing::LIST_GROUPS, version, "/h", 1)
                .await
                .expect("answered");
            let listed = groups
                .answer(&request, listing::LIST_GROUPS, version, "/h", 1)
                .await
                .expect("answered");
            // Response header tags (v3), throttle (v1), error, count.
            let at = usize::from(version >= 3) + if version >= 1 { 4 } else { 0 };
            let count = |answer: &[u8]| {
                if version >= 3 {
                    i32::from(answer[at + 2]) - 1
                } else {
                    super::super::read_i32(answer, at + 2).unwrap()
                }
            };
            assert_eq!(read_i16(&failed, at), Some(15), "ListGroups v{version}");
            assert_eq!(count(&failed), 0, "ListGroups v{version}: no group");
            assert_eq!(read_i16(&listed, at), Some(0), "ListGroups v{version}");
            assert_eq!(count(&listed), 1, "ListGroups v{version}: once only");
        }
        for version in 0..=listing::DESCRIBE_GROUPS_MAX {
            let mut body = 2i32.to_be_bytes().to_vec();
            put_string(&mut body, "g");
            put_string(&mut body, "unknown");
            let request = frame(listing::DESCRIBE_GROUPS, version, &body);
            groups.push_errors(listing::DESCRIBE_GROUPS, &[16]);
            let failed = groups
                .answer(&request, listing::DESCRIBE_GROUPS, version, "/h", 1)
                .await
                .expect("answered");
            let mut r = Reader::new(&failed);
            if version >= 1 {
                r.i32().unwrap();
            }
            assert_eq!(r.count(2), Some(2));
            for group in ["g", "unknown"] {
                assert_eq!(r.i16(), Some(16), "DescribeGroups v{version}");
                assert_eq!(r.string().as_deref(), Some(group));
                for _ in 0..3 {
                    assert_eq!(r.string().as_deref(), Some(""), "no state nor protocol");
                }
                assert_eq!(r.count(4), Some(0), "no member");
                if version >= 3 {
                    r.i32().unwrap(); // authorized_operations
                }
            }
            assert_eq!(r.position(), failed.len(), "DescribeGroups v{version}");
            let described = groups
                .answer(&request, listing::DESCRIBE_GROUPS, version, "/h", 1)
                .await
                .expect("answered");
            let at = if version >= 1 { 8 } else { 4 };
            assert_eq!(read_i16(&described, at), Some(0), "once only");
        }
    }

    /// A front relaying to a mock cluster of one broker and answering
    /// group requests with `groups`; the mock lives as long as its handle.
    async fn front_for(
        groups: &Arc<Groups>,
    ) -> (TcpFront, MockCluster<'static, DefaultProducerContext>) {
        let mock = MockCluster::new(1).expect("mock cluster");
        let upstream = mock
            .bootstrap_servers()
            .parse()
            .expect("the mock's address");
        let listen = "127.0.0.1:0".parse().expect("address");
        let front = TcpFront::start(listen, upstream, 1, Arc::clone(groups))
            .await
            .expect("front");
        (front, mock)
    }

    /// A stable group "g" of one member, joined at the coordinator; its id.
    async fn stable_member(groups: &Groups) -> String {
        let answer = groups
            .answer(&join_request("", 5), JOIN_GROUP, 5, "/h", 1)
            .await;
        let (_, generation, member) = read_join(&answer.expect("answered"), 5);
        groups
            .answer(
                &sync_request(&member, generation, 3),
                SYNC_GROUP,
                3,
                "/h",
                1,
            )
            .await
            .expect("synced");
        member
    }

    /// Waits, within a deadline, until group "g" has `count` members.
    async fn members_become(groups: &Groups, count: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while locked(&groups.coordinator).members_of("g") != Some(count) {
            assert!(Instant::now() < deadline, "{what}: not within 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The member ids a JoinGroup answer lists (to the leader).
    fn join_members(answer: &[u8], version: i16) -> Vec<String> {
        let mut r = Reader::new(answer);
        if version >= 2 {
            r.i32().unwrap();
        }
        r.take(6).unwrap(); // error, generation
        for _ in 0..3 {
            r.string().unwrap(); // protocol, leader, member id
        }
        let count = r.count(6).unwrap();
        (0..count)
            .map(|_| {
                let id = r.string().unwrap();
                if version >= 5 {
                    r.nullable_string().unwrap();
                }
                r.bytes().unwrap();
                id
            })
            .collect()
    }

    /// `frame` with correlation id `id`.
    fn numbered(mut frame: Vec<u8>, id: i32) -> Vec<u8> {
        frame[8..12].copy_from_slice(&id.to_be_bytes());
        frame
    }

    /// Reads one response frame (without its length) within a deadline.
    async fn response(stream: &mut TcpStream) -> Vec<u8> {
        let read = async {
            let mut length = [0u8; 4];
            stream.read_exact(&mut length).await?;
            let mut frame = vec![0u8; u32::from_be_bytes(length) as usize];
            stream.read_exact(&mut frame).await?;
            Ok::<_, std::io::Error>(frame)
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("a response within 5 s")
            .expect("reading a response")
    }

    #[tokio::test]
    async fn a_join_whose_client_closes_while_it_waits_is_not_in_the_next_generation() {
        let groups = Arc::new(Groups::default());
        let (front, mock) = front_for(&groups).await;
        let first = stable_member(&groups).await;
        // A new member's join waits for the first member to rejoin; its
        // client closes meanwhile (killed), never learning its member id.
        let mut client = TcpStream::connect(front.local_addr())
            .await
            .expect("connect");
        client.write_all(&join_request("", 5)).await.expect("send");
        members_become(&groups, 2, "the new member's join is in").await;
        drop(client);
        members_become(&groups, 1, "the closed client's join is forgotten").await;
        let rejoin = groups
            .answer(&join_request(&first, 5), JOIN_GROUP, 5, "/h", 1)
            .await;
        let rejoin = rejoin.expect("answered at once: every member rejoined");
        assert_eq!(read_join(&rejoin, 5).1, 2);
        assert_eq!(join_members(&rejoin, 5), [first]);
        front.shutdown().await;
        drop(mock);
    }

    #[tokio::test]
    async fn requests_sent_while_a_join_waits_are_answered_after_it_in_order() {
        let groups = Arc::new(Groups::default());
        let (front, mock) = front_for(&groups).await;
        let first = stable_member(&groups).await;
        let mut client = TcpStream::connect(front.local_addr())
            .await
            .expect("connect");
        client
            .write_all(&numbered(join_request("", 5), 1))
            .await
            .expect("send");
        members_become(&groups, 2, "the new member's join is in").await;
        // While the join waits: a heartbeat (answered by the front), split
        // across writes, then an ApiVersions request (relayed to the mock).
        let mut body = Vec::new();
        put_string(&mut body, "g");
        body.extend_from_slice(&2i32.to_be_bytes());
        put_string(&mut body, &first);
        let heartbeat = numbered(frame(HEARTBEAT, 1, &body), 2);
        let (head, tail) = heartbeat.split_at(7);
        for part in [head, tail, &super::super::api_versions_v0_request(3)[..]] {
            client.write_all(part).await.expect("send");
            // Lets the front read each part while the join waits.
            tokio::task::yield_now().await;
        }
        let rejoin = groups
            .answer(&join_request(&first, 5), JOIN_GROUP, 5, "/h", 1)
            .await;
        assert_eq!(join_members(&rejoin.expect("answered"), 5).len(), 2);
        let joined = response(&mut client).await;
        assert_eq!(read_i32(&joined, 0), Some(1), "the join's answer first");
        assert_eq!(read_join(&joined[4..], 5).1, 2);
        let heartbeat = response(&mut client).await;
        assert_eq!(read_i32(&heartbeat, 0), Some(2), "then the heartbeat's");
        assert_eq!(heartbeat[4..], error_answer(0, 1));
        let versions = response(&mut client).await;
        assert_eq!(read_i32(&versions, 0), Some(3), "then the mock's");
        assert_eq!(read_i16(&versions, 4), Some(0));
        front.shutdown().await;
        drop(mock);
    }

    #[test]
    fn malformed_requests_are_relayed_not_answered() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let groups = Groups::default();
        let join = join_request("", 5);
        for cut in [0, 10, 16, join.len() - 1] {
            let answer = runtime.block_on(groups.answer(&join[..cut], JOIN_GROUP, 5, "/h", 1));
            assert_eq!(answer, None, "a JoinGroup cut at {cut}");
        }
    }
}
