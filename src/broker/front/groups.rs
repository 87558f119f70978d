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
    },
    Sync {
        group: String,
        member_id: String,
        generation: i32,
    },
    /// A Heartbeat or a LeaveGroup: an error (or a leave) forgets the group.
    Other {
        group: String,
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
    pub(super) fn on_request(&self, frame: &[u8], api_key: i16, version: i16) -> Decision {
        let Some(body) = request_body(frame) else {
            return Decision::Relay(None);
        };
        match api_key {
            JOIN_GROUP if (0..=JOIN_GROUP_MAX).contains(&version) => self.on_join(body, version),
            SYNC_GROUP if (0..=SYNC_GROUP_MAX).contains(&version) => self.on_sync(body, version),
            HEARTBEAT | LEAVE_GROUP => match Reader::new(body).string() {
                Some(group) => Decision::Relay(Some(Watched::Other {
                    group,
                    leave: api_key == LEAVE_GROUP,
                })),
                None => Decision::Relay(None),
            },
            _ => Decision::Relay(None),
        }
    }

    fn on_join(&self, body: &[u8], version: i16) -> Decision {
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
            groups.insert(join.group, GroupState::Rejoined(sole));
            return Decision::Answer(answer);
        }
        groups.remove(&join.group);
        Decision::Relay(Some(Watched::Join {
            group: join.group,
            version,
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
            Watched::Join { group, version } => match JoinAnswer::read(body, version) {
                Some(answer)
                    if answer.error == 0
                        && answer.members == 1
                        && answer.leader == answer.member_id =>
                {
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
            Watched::Other { group, leave } => {
                // Heartbeat and LeaveGroup answers: throttle (v1+) and error
                // code; a leave forgets the group whatever the answer.
                let error = read_i16(body, body.len().saturating_sub(2));
                if leave || error != Some(0) {
                    groups.remove(&group);
                }
            }
        }
    }
}

/// The body of a request frame: past the length, the header (api key,
/// version, correlation id) and the client id. `None` if malformed.
fn request_body(frame: &[u8]) -> Option<&[u8]> {
    let client_id = usize::try_from(read_i16(frame, 12)?).unwrap_or(0);
    frame.get(14 + client_id..)
}

/// A cursor over classic (non-flexible) Kafka encodings.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
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

    fn string(&mut self) -> Option<String> {
        Some(self.nullable_string()?.unwrap_or_default())
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let length = self.i32()?;
        if length < 0 {
            return Some(Vec::new());
        }
        Some(self.take(usize::try_from(length).ok()?)?.to_vec())
    }

    /// An array count, bounded by what the rest could hold at
    /// `min_item_bytes` each, so a malformed count allocates nothing.
    fn count(&mut self, min_item_bytes: usize) -> Option<usize> {
        let count = usize::try_from(self.i32()?).unwrap_or(0);
        let left = self.bytes.len() - self.at;
        (count <= left / min_item_bytes.max(1)).then_some(count)
    }
}

#[derive(Debug)]
struct JoinRequest {
    group: String,
    member_id: String,
    group_instance_id: Option<String>,
    protocols: Vec<(String, Vec<u8>)>,
}

impl JoinRequest {
    fn read(body: &[u8], version: i16) -> Option<Self> {
        let mut r = Reader::new(body);
        let group = r.string()?;
        r.i32()?; // session_timeout_ms
        if version >= 1 {
            r.i32()?; // rebalance_timeout_ms
        }
        let member_id = r.string()?;
        let group_instance_id = if version >= 5 {
            r.nullable_string()?.filter(|id| !id.is_empty())
        } else {
            None
        };
        r.string()?; // protocol_type
        let count = r.count(6)?;
        let mut protocols = Vec::with_capacity(count);
        for _ in 0..count {
            protocols.push((r.string()?, r.bytes()?));
        }
        Some(Self {
            group,
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
}

impl JoinAnswer {
    fn read(body: &[u8], version: i16) -> Option<Self> {
        let mut r = Reader::new(body);
        if version >= 2 {
            r.i32()?; // throttle_time_ms
        }
        Some(Self {
            error: r.i16()?,
            generation: r.i32()?,
            protocol_name: r.string()?,
            leader: r.string()?,
            member_id: r.string()?,
            members: usize::try_from(r.i32()?).unwrap_or(0),
        })
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

fn put_string(out: &mut Vec<u8>, value: &str) {
    // Names the front writes came from the wire, within an i16 length.
    let length = i16::try_from(value.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&value.as_bytes()[..length as usize]);
}

fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
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
