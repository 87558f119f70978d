//! A stable group's sole member rejoining, answered by the front.
//!
//! The mock holds every JoinGroup to a stable group for the session
//! timeout less 1 s (44 s with kafka-python's default), waiting for
//! members that may come; Kafka ends a rebalance once every known member
//! has rejoined, at once for a group of one. kafka-python joins a group
//! before it knows the topic's partitions, assigns itself nothing, and
//! rejoins once it knows them, so it got no record for 44 s.
//!
//! The front answers such a rejoin itself. It follows each group's
//! JoinGroup and SyncGroup answers; a group whose last JoinGroup answer
//! listed one member, and whose SyncGroup then succeeded, is stable with
//! that sole member. A JoinGroup from that member (no static membership)
//! naming the group's protocol gets the answer the mock gives after its
//! wait: the same generation, the member as leader, its own metadata. Its
//! SyncGroup for that generation then gets the assignment it gave itself.
//! The mock's group stays stable at that generation, so heartbeats and
//! offset commits go on as before. Anything else (another member joining,
//! a leave, an error) forgets the group, and the mock decides as before.
//!
//! The front reads JoinGroup up to v5 and SyncGroup up to v3, the caps it
//! already puts on both (see `MOCK_VERSION_CAPS`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::listing::{self, Joined, Joining};
use super::{locked, read_i16, read_i32};

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
/// Most groups one front follows; past that it forgets them all (the mock
/// then decides every rejoin, as without the front).
const GROUPS_FOLLOWED: usize = 10_000;

/// The groups one front follows, by group id.
#[derive(Debug, Default)]
pub(super) struct Groups {
    groups: Mutex<HashMap<String, GroupState>>,
    /// Every group seen, for ListGroups and DescribeGroups (see
    /// [`listing`]). Locked after `groups` when both are.
    listed: Mutex<listing::Registry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GroupState {
    /// The last JoinGroup answer listed only `0.member_id`, the leader;
    /// its SyncGroup is on its way.
    Joined(Sole),
    /// That SyncGroup succeeded.
    Stable(Sole),
    /// The front answered the member's rejoin; its SyncGroup comes next.
    Rejoined(Sole),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sole {
    member_id: String,
    generation: i32,
    protocol_name: String,
}

/// A group request relayed to the mock, whose answer the front reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Watched {
    Join {
        group: String,
        version: i16,
        joining: Joining,
    },
    Sync {
        group: String,
        member_id: String,
        generation: i32,
    },
    /// A Heartbeat or a LeaveGroup of `member_id`: an error (or a leave)
    /// forgets the group.
    Other {
        group: String,
        member_id: String,
        leave: bool,
    },
}

/// What the front does with one group request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Relay it; read its answer as `Watched` says.
    Relay(Option<Watched>),
    /// Answer it with this response body (after the correlation id).
    Answer(Vec<u8>),
}

impl Groups {
    /// Decides on a whole request `frame` (length prefix included) of
    /// `api_key` at `version`.
    #[cfg(test)]
    pub(super) fn on_request(&self, frame: &[u8], api_key: i16, version: i16) -> Decision {
        self.on_request_from(frame, api_key, version, "/127.0.0.1")
    }

    /// Decides on a whole request `frame` (length prefix included) of
    /// `api_key` at `version`, from a client at `client_host`.
    pub(super) fn on_request_from(
        &self,
        frame: &[u8],
        api_key: i16,
        version: i16,
        client_host: &str,
    ) -> Decision {
        let flexible = match api_key {
            HEARTBEAT => version >= 4,
            listing::OFFSET_COMMIT => version >= 8,
            listing::LIST_GROUPS => version >= 3,
            _ => false,
        };
        let Some(body) = request_body(frame, flexible) else {
            return Decision::Relay(None);
        };
        match api_key {
            JOIN_GROUP if (0..=JOIN_GROUP_MAX).contains(&version) => {
                let client_id = client_id(frame);
                self.on_join(body, version, client_id, client_host)
            }
            SYNC_GROUP if (0..=SYNC_GROUP_MAX).contains(&version) => self.on_sync(body, version),
            HEARTBEAT | LEAVE_GROUP => {
                let mut r = Reader::new(body);
                let read = |r: &mut Reader<'_>| {
                    let group = if flexible {
                        r.compact_string()?
                    } else {
                        r.string()?
                    };
                    // The member, where the front can read it ("" if not:
                    // LeaveGroup v3+ lists its members).
                    let member = |r: &mut Reader<'_>| {
                        if api_key == HEARTBEAT {
                            r.i32()?; // generation_id
                        } else if version > 2 {
                            return None;
                        }
                        if flexible {
                            r.compact_string()
                        } else {
                            r.string()
                        }
                    };
                    Some((group, member(r).unwrap_or_default()))
                };
                match read(&mut r) {
                    Some((group, member_id)) if api_key == LEAVE_GROUP => {
                        // The member is gone once it asks to leave, as its
                        // client is (it may not wait for the answer).
                        locked(&self.listed).leave(&group, std::slice::from_ref(&member_id));
                        Decision::Relay(Some(Watched::Other {
                            group,
                            member_id,
                            leave: true,
                        }))
                    }
                    Some((group, member_id)) => Decision::Relay(Some(Watched::Other {
                        group,
                        member_id,
                        leave: api_key == LEAVE_GROUP,
                    })),
                    None => Decision::Relay(None),
                }
            }
            listing::OFFSET_COMMIT => {
                let mut r = Reader::new(body);
                let read = |r: &mut Reader<'_>| {
                    let group = if flexible {
                        r.compact_string()?
                    } else {
                        r.string()?
                    };
                    if version == 0 {
                        return Some((group, String::new()));
                    }
                    r.i32()?; // generation_id
                    let member = if flexible {
                        r.compact_string()
                    } else {
                        r.string()
                    };
                    Some((group, member.unwrap_or_default()))
                };
                if let Some((group, member_id)) = read(&mut r) {
                    locked(&self.listed).committed(&group, &member_id);
                }
                Decision::Relay(None)
            }
            listing::LIST_GROUPS if (0..=listing::LIST_GROUPS_MAX).contains(&version) => {
                Decision::Answer(locked(&self.listed).list_answer(body, version))
            }
            listing::DESCRIBE_GROUPS if (0..=listing::DESCRIBE_GROUPS_MAX).contains(&version) => {
                match locked(&self.listed).describe_answer(body, version) {
                    Some(answer) => Decision::Answer(answer),
                    None => Decision::Relay(None),
                }
            }
            _ => Decision::Relay(None),
        }
    }

    fn on_join(&self, body: &[u8], version: i16, client_id: &str, client_host: &str) -> Decision {
        let Some(join) = JoinRequest::read(body, version) else {
            return Decision::Relay(None);
        };
        let mut groups = locked(&self.groups);
        if let Some(GroupState::Stable(sole)) = groups.get(&join.group)
            && sole.member_id == join.member_id
            && join.group_instance_id.is_none()
            && let Some((_, metadata)) = join
                .protocols
                .iter()
                .find(|(name, _)| *name == sole.protocol_name)
        {
            let answer = join_answer(sole, metadata, version);
            let sole = sole.clone();
            locked(&self.listed).rejoined(&join.group, &sole.member_id);
            groups.insert(join.group, GroupState::Rejoined(sole));
            return Decision::Answer(answer);
        }
        groups.remove(&join.group);
        locked(&self.listed).join_asked(&join.group, &join.protocol_type, &join.member_id);
        Decision::Relay(Some(Watched::Join {
            group: join.group,
            version,
            joining: Joining {
                client_id: client_id.to_owned(),
                client_host: client_host.to_owned(),
                group_instance_id: join.group_instance_id,
                session_timeout: join.session_timeout,
                protocols: join.protocols,
            },
        }))
    }

    fn on_sync(&self, body: &[u8], version: i16) -> Decision {
        let Some(sync) = SyncRequest::read(body, version) else {
            return Decision::Relay(None);
        };
        let mut groups = locked(&self.groups);
        if let Some(GroupState::Rejoined(sole)) = groups.get(&sync.group)
            && sole.member_id == sync.member_id
            && sole.generation == sync.generation
        {
            let assignment = sync
                .assignments
                .iter()
                .find(|(member, _)| *member == sole.member_id)
                .map(|(_, assignment)| assignment.as_slice())
                .unwrap_or_default();
            let sole = sole.clone();
            locked(&self.listed).synced(&sync.group, &sole.member_id, assignment);
            groups.insert(sync.group, GroupState::Stable(sole));
            return Decision::Answer(sync_answer(assignment, version));
        }
        Decision::Relay(Some(Watched::Sync {
            group: sync.group,
            member_id: sync.member_id,
            generation: sync.generation,
        }))
    }

    /// Reads the answer `body` (after the correlation id) to a watched request.
    pub(super) fn on_answer(&self, watched: Watched, body: &[u8]) {
        let mut groups = locked(&self.groups);
        match watched {
            Watched::Join {
                group,
                version,
                joining,
            } => match JoinAnswer::read(body, version) {
                Some(answer) if answer.error == 0 => {
                    locked(&self.listed).joined(
                        &group,
                        &joining,
                        &Joined {
                            member_id: &answer.member_id,
                            generation: answer.generation,
                            protocol: &answer.protocol_name,
                            members: &answer.listed,
                        },
                    );
                    if answer.members != 1 || answer.leader != answer.member_id {
                        groups.remove(&group);
                        return;
                    }
                    if groups.len() >= GROUPS_FOLLOWED {
                        groups.clear();
                    }
                    groups.insert(
                        group,
                        GroupState::Joined(Sole {
                            member_id: answer.member_id,
                            generation: answer.generation,
                            protocol_name: answer.protocol_name,
                        }),
                    );
                }
                _ => {
                    groups.remove(&group);
                }
            },
            Watched::Sync {
                group,
                member_id,
                generation,
            } => {
                let error = sync_answer_error(body);
                if error == Some(0) {
                    let assignment = sync_answer_assignment(body).unwrap_or_default();
                    locked(&self.listed).synced(&group, &member_id, assignment);
                }
                match groups.get(&group) {
                    Some(GroupState::Joined(sole))
                        if error == Some(0)
                            && sole.member_id == member_id
                            && sole.generation == generation =>
                    {
                        let sole = sole.clone();
                        groups.insert(group, GroupState::Stable(sole));
                    }
                    Some(_) if error != Some(0) => {
                        groups.remove(&group);
                    }
                    _ => {}
                }
            }
            Watched::Other {
                group,
                member_id,
                leave,
            } => {
                // Heartbeat and LeaveGroup answers: throttle (v1+) and error
                // code; a flexible one (Heartbeat v4) has a tagged-fields
                // byte in its header and one after. A leave forgets the
                // group whatever the answer.
                let error = match body.len() {
                    2 | 6 => read_i16(body, body.len() - 2),
                    8 => read_i16(body, 5),
                    _ => None,
                };
                if !leave {
                    locked(&self.listed).heartbeat(&group, &member_id, error);
                }
                if leave || error != Some(0) {
                    groups.remove(&group);
                }
            }
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
    protocol_type: String,
    member_id: String,
    group_instance_id: Option<String>,
    protocols: Vec<(String, Vec<u8>)>,
}

impl JoinRequest {
    fn read(body: &[u8], version: i16) -> Option<Self> {
        let mut r = Reader::new(body);
        let group = r.string()?;
        let session_timeout = Duration::from_millis(u64::try_from(r.i32()?).unwrap_or(0));
        if version >= 1 {
            r.i32()?; // rebalance_timeout_ms
        }
        let member_id = r.string()?;
        let group_instance_id = if version >= 5 {
            r.nullable_string()?.filter(|id| !id.is_empty())
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
            protocol_type,
            member_id,
            group_instance_id,
            protocols,
        })
    }
}

#[derive(Debug)]
struct SyncRequest {
    group: String,
    generation: i32,
    member_id: String,
    assignments: Vec<(String, Vec<u8>)>,
}

impl SyncRequest {
    fn read(body: &[u8], version: i16) -> Option<Self> {
        let mut r = Reader::new(body);
        let group = r.string()?;
        let generation = r.i32()?;
        let member_id = r.string()?;
        if version >= 3 {
            r.nullable_string()?; // group_instance_id
        }
        let count = r.count(6)?;
        let mut assignments = Vec::with_capacity(count);
        for _ in 0..count {
            assignments.push((r.string()?, r.bytes()?));
        }
        Some(Self {
            group,
            generation,
            member_id,
            assignments,
        })
    }
}

#[derive(Debug)]
struct JoinAnswer {
    error: i16,
    generation: i32,
    protocol_name: String,
    leader: String,
    member_id: String,
    members: usize,
    /// The members listed (to the leader): id, group instance id, metadata.
    listed: Vec<(String, Option<String>, Vec<u8>)>,
}

impl JoinAnswer {
    fn read(body: &[u8], version: i16) -> Option<Self> {
        let mut r = Reader::new(body);
        if version >= 2 {
            r.i32()?; // throttle_time_ms
        }
        let mut answer = Self {
            error: r.i16()?,
            generation: r.i32()?,
            protocol_name: r.string()?,
            leader: r.string()?,
            member_id: r.string()?,
            members: usize::try_from(r.i32()?).unwrap_or(0),
            listed: Vec::new(),
        };
        // Bounded by what the body can hold, as Reader::count does.
        if answer.members <= body.len() / 6 {
            for _ in 0..answer.members {
                let id = r.string()?;
                let instance = if version >= 5 {
                    r.nullable_string()?
                } else {
                    None
                };
                answer.listed.push((id, instance, r.bytes()?));
            }
        }
        Some(answer)
    }
}

/// The error code of a SyncGroup answer (v0: first; v1+: after throttle).
/// Both layouts end in the assignment bytes, so read from the front by
/// trying the longer one only if the shorter does not add up.
fn sync_answer_error(body: &[u8]) -> Option<i16> {
    // v0: error (2) + bytes; v1+: throttle (4) + error (2) + bytes.
    let fits = |at: usize| {
        read_i32(body, at + 2).is_some_and(|length| {
            let length = usize::try_from(length).unwrap_or(0);
            at + 6 + length == body.len()
        })
    };
    if fits(4) {
        read_i16(body, 4)
    } else if fits(0) {
        read_i16(body, 0)
    } else {
        None
    }
}

/// The assignment bytes of a SyncGroup answer (layouts as in
/// [`sync_answer_error`]).
fn sync_answer_assignment(body: &[u8]) -> Option<&[u8]> {
    let at = match sync_answer_error(body) {
        Some(_) if read_i32(body, 6).is_some_and(|l| 10 + l.max(0) as usize == body.len()) => 10,
        Some(_) => 6,
        None => return None,
    };
    body.get(at..)
}

pub(super) fn put_string(out: &mut Vec<u8>, value: &str) {
    // Names the front writes came from the wire, within an i16 length.
    let length = i16::try_from(value.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&value.as_bytes()[..length as usize]);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    let length = i32::try_from(value.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&value[..length as usize]);
}

/// The JoinGroup answer body (v0 to v5) the mock gives a group of one
/// after its wait: same generation, the member leads and is listed alone.
fn join_answer(sole: &Sole, metadata: &[u8], version: i16) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + metadata.len());
    if version >= 2 {
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
    }
    out.extend_from_slice(&0i16.to_be_bytes()); // error_code
    out.extend_from_slice(&sole.generation.to_be_bytes());
    put_string(&mut out, &sole.protocol_name);
    put_string(&mut out, &sole.member_id); // leader
    put_string(&mut out, &sole.member_id);
    out.extend_from_slice(&1i32.to_be_bytes());
    put_string(&mut out, &sole.member_id);
    if version >= 5 {
        out.extend_from_slice(&(-1i16).to_be_bytes()); // group_instance_id: null
    }
    put_bytes(&mut out, metadata);
    out
}

/// The SyncGroup answer body (v0 to v3) carrying `assignment`.
fn sync_answer(assignment: &[u8], version: i16) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + assignment.len());
    if version >= 1 {
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
    }
    out.extend_from_slice(&0i16.to_be_bytes()); // error_code
    put_bytes(&mut out, assignment);
    out
}

#[cfg(test)]
mod tests {
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

    fn settle(groups: &Groups, version: i16) {
        let Decision::Relay(Some(join)) =
            groups.on_request(&join_request("", version), JOIN_GROUP, version)
        else {
            panic!("a first join goes to the mock");
        };
        let sole = Sole {
            member_id: "m1".into(),
            generation: 3,
            protocol_name: "range".into(),
        };
        groups.on_answer(join, &join_answer(&sole, b"subscription", version));
        let Decision::Relay(Some(sync)) =
            groups.on_request(&sync_request("m1", 3, 3), SYNC_GROUP, 3)
        else {
            panic!("the first sync goes to the mock");
        };
        groups.on_answer(sync, &sync_answer(b"partitions", 3));
    }

    #[test]
    fn a_sole_members_rejoin_is_answered_with_the_same_generation() {
        for version in 0..=JOIN_GROUP_MAX {
            let groups = Groups::default();
            settle(&groups, version);
            let Decision::Answer(answer) =
                groups.on_request(&join_request("m1", version), JOIN_GROUP, version)
            else {
                panic!("v{version}: the rejoin went to the mock");
            };
            let read = JoinAnswer::read(&answer, version).expect("answer reads");
            assert_eq!((read.error, read.generation, read.members), (0, 3, 1));
            assert_eq!(
                (read.leader.as_str(), read.member_id.as_str()),
                ("m1", "m1")
            );
            let Decision::Answer(sync) =
                groups.on_request(&sync_request("m1", 3, 1), SYNC_GROUP, 1)
            else {
                panic!("v{version}: the sync after the rejoin went to the mock");
            };
            assert_eq!(sync_answer_error(&sync), Some(0));
            assert!(sync.ends_with(b"partitions"));
        }
    }

    #[test]
    fn another_member_or_an_error_hands_the_group_back_to_the_mock() {
        let groups = Groups::default();
        settle(&groups, 5);
        assert!(matches!(
            groups.on_request(&join_request("m2", 5), JOIN_GROUP, 5),
            Decision::Relay(Some(_))
        ));
        // Forgotten: even the sole member's rejoin now goes to the mock.
        assert!(matches!(
            groups.on_request(&join_request("m1", 5), JOIN_GROUP, 5),
            Decision::Relay(Some(_))
        ));

        let groups = Groups::default();
        settle(&groups, 5);
        let mut heartbeat = Vec::new();
        put_string(&mut heartbeat, "g");
        let Decision::Relay(Some(watched)) =
            groups.on_request(&frame(HEARTBEAT, 1, &heartbeat), HEARTBEAT, 1)
        else {
            panic!("heartbeats go to the mock");
        };
        // throttle, REBALANCE_IN_PROGRESS
        groups.on_answer(watched, &[0, 0, 0, 0, 0, 27]);
        assert!(matches!(
            groups.on_request(&join_request("m1", 5), JOIN_GROUP, 5),
            Decision::Relay(Some(_))
        ));
    }

    #[test]
    fn a_flexible_heartbeats_error_hands_the_group_back_to_the_mock() {
        let groups = Groups::default();
        settle(&groups, 5);
        // Heartbeat v4: header tags, compact "g", generation 3, compact
        // "m1", null instance id, tags.
        let mut body = vec![0, 2, b'g'];
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(&[3, b'm', b'1', 0, 0]);
        let Decision::Relay(Some(watched)) =
            groups.on_request(&frame(HEARTBEAT, 4, &body), HEARTBEAT, 4)
        else {
            panic!("heartbeats go to the mock");
        };
        assert!(matches!(&watched, Watched::Other { member_id, .. } if member_id == "m1"));
        // Header tags, throttle, REBALANCE_IN_PROGRESS, tags.
        groups.on_answer(watched, &[0, 0, 0, 0, 0, 0, 27, 0]);
        assert!(matches!(
            groups.on_request(&join_request("m1", 5), JOIN_GROUP, 5),
            Decision::Relay(Some(_))
        ));
    }

    #[test]
    fn commits_register_their_group_in_classic_and_flexible_versions() {
        let groups = Groups::default();
        // OffsetCommit v2 (classic): group, generation, member, ...
        let mut classic = Vec::new();
        put_string(&mut classic, "classic");
        classic.extend_from_slice(&(-1i32).to_be_bytes());
        put_string(&mut classic, "");
        let commit = frame(listing::OFFSET_COMMIT, 2, &classic);
        assert_eq!(
            groups.on_request(&commit, listing::OFFSET_COMMIT, 2),
            Decision::Relay(None)
        );
        // OffsetCommit v8 (flexible): header tags, compact group, ...
        let mut flexible = vec![0, 9];
        flexible.extend_from_slice(b"flexible");
        flexible.extend_from_slice(&(-1i32).to_be_bytes());
        flexible.push(1); // member id ""
        let commit = frame(listing::OFFSET_COMMIT, 8, &flexible);
        groups.on_request(&commit, listing::OFFSET_COMMIT, 8);
        let Decision::Answer(list) = groups.on_request(
            &frame(listing::LIST_GROUPS, 0, &[]),
            listing::LIST_GROUPS,
            0,
        ) else {
            panic!("ListGroups is the front's to answer");
        };
        let mut r = Reader::new(&list);
        assert_eq!(r.i16(), Some(0));
        assert_eq!(r.count(4), Some(2));
        let names: Vec<_> = (0..2)
            .map(|_| {
                let name = r.string().unwrap();
                r.string().unwrap();
                name
            })
            .collect();
        assert_eq!(names, ["classic", "flexible"]);
    }

    #[test]
    fn malformed_requests_are_relayed_untouched() {
        let groups = Groups::default();
        for cut in 0..join_request("m1", 5).len() {
            let frame = &join_request("m1", 5)[..cut];
            assert!(matches!(
                groups.on_request(frame, JOIN_GROUP, 5),
                Decision::Relay(_)
            ));
        }
    }
}
