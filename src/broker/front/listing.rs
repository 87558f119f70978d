//! The groups the fronts of a cluster have seen, answered to ListGroups
//! and DescribeGroups.
//!
//! librdkafka's mock cluster answers neither, so `kafka-consumer-groups
//! --list`, an admin client or the harness's own outside-group wait could
//! not find a group that nobody named. Every group request to a broker
//! passes through its front, so the front keeps what Kafka's group
//! coordinator would tell: each group that joined (JoinGroup) or committed
//! offsets (OffsetCommit, also without joining: protocol type "" and state
//! Empty, as on Kafka), its protocol type and state, and its members with
//! their client id, host, metadata and assignment. The coordinator
//! (`coordinator.rs`) tells it every change: members that joined, synced or
//! left, and each group's state after every request. It holds no group
//! state of its own, so the two cannot disagree.
//!
//! As on Kafka, a broker lists only the groups it coordinates: those whose
//! latest request came through its front (clients send group requests to
//! the coordinator FindCoordinator named), so that a client listing a
//! cluster's groups, which asks every broker, sees each group once.
//! DescribeGroups describes any group, on any broker. Errors injected for
//! either API answer the next requests (see `Coordinator::list_groups`).
//!
//! Memory is bounded: at most [`GROUPS_LISTED`] groups (past that, the one
//! idle longest is forgotten), [`MEMBERS_LISTED`] members in all (past
//! that, a new member is not listed until one leaves), and a member's
//! metadata and assignment are kept up to [`BLOB_KEPT`] bytes each (a
//! longer one is described as empty).
//!
//! The front answers ListGroups v0 to v4 and DescribeGroups v0 to v4, and
//! adds both to every ApiVersions answer. A group request larger than the
//! front reads whole (1 MiB) is relayed unread; its group is listed once a
//! smaller request names it.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Kafka's OffsetCommit api key.
pub(super) const OFFSET_COMMIT: i16 = 8;
/// Kafka's DescribeGroups api key.
pub(super) const DESCRIBE_GROUPS: i16 = 15;
/// Kafka's ListGroups api key.
pub(super) const LIST_GROUPS: i16 = 16;
/// Highest ListGroups version the front answers (v4 filters by state).
pub(super) const LIST_GROUPS_MAX: i16 = 4;
/// Highest DescribeGroups version the front answers (v5 is flexible).
pub(super) const DESCRIBE_GROUPS_MAX: i16 = 4;
/// The ranges the front adds to ApiVersions answers.
pub(super) const ANSWERED_RANGES: [(i16, i16, i16); 2] = [
    (DESCRIBE_GROUPS, 0, DESCRIBE_GROUPS_MAX),
    (LIST_GROUPS, 0, LIST_GROUPS_MAX),
];
/// Most groups the fronts of a cluster list.
const GROUPS_LISTED: usize = 10_000;
/// Most members the fronts of a cluster list, over all their groups.
const MEMBERS_LISTED: usize = 10_000;
/// Longest member metadata or assignment kept for DescribeGroups.
const BLOB_KEPT: usize = 4 * 1024;

/// A group's state, named as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Empty,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Empty => "Empty",
        }
    }
}

#[derive(Debug)]
struct Group {
    protocol_type: String,
    protocol: String,
    state: State,
    members: BTreeMap<String, Member>,
    last_active: Instant,
    /// The mock broker whose front took the group's latest request: its
    /// coordinator, which clients look up (FindCoordinator) before asking.
    coordinator: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    client_id: String,
    client_host: String,
    group_instance_id: Option<String>,
    metadata: Vec<u8>,
    assignment: Vec<u8>,
}

/// What a JoinGroup request says of its member, kept until its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Joining {
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) group_instance_id: Option<String>,
    /// The protocols offered, with this member's metadata for each.
    pub(super) protocols: Vec<(String, Vec<u8>)>,
}

/// A successful JoinGroup answer.
#[derive(Debug)]
pub(super) struct Joined<'a> {
    pub(super) member_id: &'a str,
    pub(super) protocol: &'a str,
    /// The members listed to the leader (empty for a follower).
    pub(super) members: &'a [(String, Option<String>, Vec<u8>)],
}

fn kept(blob: &[u8]) -> Vec<u8> {
    if blob.len() <= BLOB_KEPT {
        blob.to_vec()
    } else {
        Vec::new()
    }
}

/// The groups the fronts of a cluster list.
#[derive(Debug, Default)]
pub(super) struct Registry {
    groups: HashMap<String, Group>,
    members: usize,
}

impl Registry {
    /// The group `id`, made (Empty, of `protocol_type`) if new.
    fn group(&mut self, id: &str, protocol_type: &str, now: Instant) -> &mut Group {
        if !self.groups.contains_key(id) && self.groups.len() >= GROUPS_LISTED {
            let idle = self
                .groups
                .iter()
                .min_by_key(|(_, group)| group.last_active)
                .map(|(id, _)| id.clone());
            if let Some(idle) = idle
                && let Some(gone) = self.groups.remove(&idle)
            {
                self.members -= gone.members.len();
            }
        }
        let group = self.groups.entry(id.to_owned()).or_insert_with(|| Group {
            protocol_type: protocol_type.to_owned(),
            protocol: String::new(),
            state: State::Empty,
            members: BTreeMap::new(),
            last_active: now,
            coordinator: None,
        });
        group.last_active = now;
        group
    }

    /// A member asked something of `group`: the group is not idle.
    pub(super) fn touch(&mut self, group: &str) {
        if let Some(group) = self.groups.get_mut(group) {
            group.last_active = Instant::now();
        }
    }

    /// A request for `group` came through the front of mock broker
    /// `broker_id`, the group's coordinator to its clients.
    pub(super) fn coordinated_by(&mut self, group: &str, broker_id: i32) {
        if let Some(group) = self.groups.get_mut(group) {
            group.coordinator = Some(broker_id);
        }
    }

    /// A JoinGroup request of `protocol_type` came to the coordinator.
    pub(super) fn join_asked(&mut self, group: &str, protocol_type: &str) {
        let entry = self.group(group, protocol_type, Instant::now());
        entry.protocol_type = protocol_type.to_owned();
    }

    /// A successful JoinGroup answer to a member that asked as `joining` said.
    pub(super) fn joined(&mut self, group: &str, joining: &Joining, answer: &Joined<'_>) {
        let now = Instant::now();
        let mut room = MEMBERS_LISTED.saturating_sub(self.members);
        let entry = self.group(group, "", now);
        let before = entry.members.len();
        entry.protocol = answer.protocol.to_owned();
        if !answer.members.is_empty() {
            // The leader's list is the generation's membership.
            entry
                .members
                .retain(|id, _| answer.members.iter().any(|(listed, _, _)| listed == id));
            for (id, instance, metadata) in answer.members {
                if let Some(member) = entry.members.get_mut(id) {
                    member.metadata = kept(metadata);
                } else if room > 0 {
                    room -= 1;
                    entry.members.insert(
                        id.clone(),
                        Member {
                            client_id: String::new(),
                            client_host: String::new(),
                            group_instance_id: instance.clone(),
                            metadata: kept(metadata),
                            assignment: Vec::new(),
                        },
                    );
                }
            }
        }
        let metadata = joining
            .protocols
            .iter()
            .find(|(name, _)| name == answer.protocol)
            .map(|(_, metadata)| kept(metadata))
            .unwrap_or_default();
        let member = Member {
            client_id: joining.client_id.clone(),
            client_host: joining.client_host.clone(),
            group_instance_id: joining.group_instance_id.clone(),
            metadata,
            assignment: Vec::new(),
        };
        if let Some(known) = entry.members.get_mut(answer.member_id) {
            // A new generation: its assignment comes with the SyncGroup.
            *known = member;
        } else if room > 0 {
            entry.members.insert(answer.member_id.to_owned(), member);
        }
        let after = entry.members.len();
        self.members = self.members - before + after;
    }

    /// A successful SyncGroup answer gave `member_id` its `assignment`.
    pub(super) fn synced(&mut self, group: &str, member_id: &str, assignment: &[u8]) {
        self.touch(group);
        if let Some(member) = self
            .groups
            .get_mut(group)
            .and_then(|entry| entry.members.get_mut(member_id))
        {
            member.assignment = kept(assignment);
        }
    }

    /// `members` left `group`.
    pub(super) fn leave(&mut self, group: &str, members: &[String]) {
        if let Some(entry) = self.groups.get_mut(group) {
            for member in members {
                if entry.members.remove(member).is_some() {
                    self.members -= 1;
                }
            }
        }
    }

    /// An OffsetCommit for `group` (by `member_id`, empty for a simple
    /// consumer): the group exists from then on, as on Kafka.
    pub(super) fn committed(&mut self, group: &str) {
        self.group(group, "", Instant::now());
    }

    /// `group`'s state, as its coordinator has it after a request.
    pub(super) fn state_is(&mut self, group: &str, state: State) {
        if let Some(entry) = self.groups.get_mut(group) {
            entry.state = state;
        }
    }

    #[cfg(test)]
    pub(super) fn state_of(&self, group: &str) -> Option<State> {
        self.groups.get(group).map(|entry| entry.state)
    }

    #[cfg(test)]
    pub(super) fn members_of(&self, group: &str) -> Option<usize> {
        self.groups.get(group).map(|entry| entry.members.len())
    }

    /// The ListGroups answer body (response header's tagged fields
    /// included from v3) to a request `body` at `version` to mock broker
    /// `broker_id`; with an `error`, that error and no group. A broker
    /// lists the groups it coordinates, as on Kafka: a client listing a
    /// cluster's groups asks every broker, and librdkafka does not
    /// de-duplicate the answers.
    pub(super) fn list_answer(
        &mut self,
        body: &[u8],
        version: i16,
        broker_id: i32,
        error: i16,
    ) -> Vec<u8> {
        let filter = if version >= 4 {
            states_filter(body).unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut listed: Vec<(&String, &Group)> = self
            .groups
            .iter()
            .filter(|_| error == 0)
            .filter(|(_, g)| g.coordinator.is_none_or(|id| id == broker_id))
            .filter(|(_, g)| filter.is_empty() || filter.iter().any(|s| s == g.state.name()))
            .collect();
        listed.sort_by(|a, b| a.0.cmp(b.0));
        let flexible = version >= 3;
        let mut out = Vec::with_capacity(16 + listed.len() * 32);
        if flexible {
            out.push(0); // response header: no tagged fields
        }
        if version >= 1 {
            out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
        }
        out.extend_from_slice(&error.to_be_bytes());
        if flexible {
            put_uvarint(&mut out, listed.len() as u64 + 1);
        } else {
            put_i32_len(&mut out, listed.len());
        }
        for (id, group) in listed {
            let mut strings = vec![id.as_str(), group.protocol_type.as_str()];
            if version >= 4 {
                strings.push(group.state.name());
            }
            for s in strings {
                if flexible {
                    put_compact_string(&mut out, s);
                } else {
                    put_string(&mut out, s);
                }
            }
            if flexible {
                out.push(0);
            }
        }
        if flexible {
            out.push(0);
        }
        out
    }

    /// The DescribeGroups answer body (v0 to v4) for the groups `asked`;
    /// with an `error`, that error on each of them.
    pub(super) fn describe_answer(
        &mut self,
        asked: &[String],
        version: i16,
        error: i16,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * asked.len().max(1));
        if version >= 1 {
            out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
        }
        put_i32_len(&mut out, asked.len());
        for id in asked {
            out.extend_from_slice(&error.to_be_bytes());
            put_string(&mut out, id);
            let group = self.groups.get(id).filter(|_| error == 0);
            let Some(group) = group else {
                // Kafka's answer for a group it does not know ("Dead"), or
                // one it fails to describe (no state).
                put_string(&mut out, if error == 0 { "Dead" } else { "" });
                put_string(&mut out, "");
                put_string(&mut out, "");
                put_i32_len(&mut out, 0);
                if version >= 3 {
                    out.extend_from_slice(&i32::MIN.to_be_bytes()); // authorized_operations
                }
                continue;
            };
            put_string(&mut out, group.state.name());
            put_string(&mut out, &group.protocol_type);
            put_string(&mut out, &group.protocol);
            put_i32_len(&mut out, group.members.len());
            for (member_id, member) in &group.members {
                put_string(&mut out, member_id);
                if version >= 4 {
                    match &member.group_instance_id {
                        Some(instance) => put_string(&mut out, instance),
                        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
                    }
                }
                put_string(&mut out, &member.client_id);
                put_string(&mut out, &member.client_host);
                super::groups::put_bytes(&mut out, &member.metadata);
                super::groups::put_bytes(&mut out, &member.assignment);
            }
            if version >= 3 {
                out.extend_from_slice(&i32::MIN.to_be_bytes()); // authorized_operations
            }
        }
        out
    }
}

/// The groups a DescribeGroups request (v0 to v4) `body` asks for; `None`
/// if it cannot be read (it is then relayed).
pub(super) fn describe_request(body: &[u8]) -> Option<Vec<String>> {
    let mut r = super::groups::Reader::new(body);
    let count = r.count(2)?;
    let mut asked = Vec::with_capacity(count);
    for _ in 0..count {
        asked.push(r.string()?);
    }
    Some(asked)
}

/// A ListGroups v4 request body's states filter (compact array of compact
/// strings), past the request header's tagged fields.
fn states_filter(body: &[u8]) -> Option<Vec<String>> {
    let mut r = super::groups::Reader::new(body);
    let count = r.uvarint()?.checked_sub(1)?;
    let mut states = Vec::new();
    for _ in 0..count.min(16) {
        states.push(r.compact_string()?);
    }
    Some(states)
}

fn put_i32_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    super::groups::put_string(out, value);
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_compact_string(out: &mut Vec<u8>, value: &str) {
    put_uvarint(out, value.len() as u64 + 1);
    out.extend_from_slice(value.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::front::groups::Reader;

    fn joining(client: &str) -> Joining {
        Joining {
            client_id: client.into(),
            client_host: "/127.0.0.1".into(),
            group_instance_id: None,
            protocols: vec![("range".into(), b"subscription".to_vec())],
        }
    }

    fn listed(registry: &mut Registry, version: i16) -> Vec<(String, String)> {
        let answer = registry.list_answer(&[1, 0], version, 1, 0);
        let mut r = Reader::new(&answer);
        if version >= 1 {
            r.i32().unwrap();
        }
        assert_eq!(r.i16(), Some(0));
        let count = r.count(4).unwrap();
        (0..count)
            .map(|_| (r.string().unwrap(), r.string().unwrap()))
            .collect()
    }

    #[test]
    fn joined_and_committing_groups_are_listed_and_described() {
        let mut registry = Registry::default();
        registry.join_asked("joined", "consumer");
        let members = [("m1".to_owned(), None, b"subscription".to_vec())];
        let answer = Joined {
            member_id: "m1",
            protocol: "range",
            members: &members,
        };
        registry.joined("joined", &joining("rdkafka"), &answer);
        registry.synced("joined", "m1", b"partitions");
        registry.state_is("joined", State::Stable);
        registry.committed("simple");
        for version in 0..=2 {
            assert_eq!(
                listed(&mut registry, version),
                [
                    ("joined".to_owned(), "consumer".to_owned()),
                    ("simple".to_owned(), String::new())
                ]
            );
        }

        let mut request = 2i32.to_be_bytes().to_vec();
        put_string(&mut request, "joined");
        put_string(&mut request, "simple");
        let asked = describe_request(&request).unwrap();
        let described = registry.describe_answer(&asked, 0, 0);
        let mut r = Reader::new(&described);
        assert_eq!(r.count(2), Some(2));
        assert_eq!(r.i16(), Some(0));
        assert_eq!(r.string().as_deref(), Some("joined"));
        assert_eq!(r.string().as_deref(), Some("Stable"));
        assert_eq!(r.string().as_deref(), Some("consumer"));
        assert_eq!(r.string().as_deref(), Some("range"));
        assert_eq!(r.count(4), Some(1));
        assert_eq!(r.string().as_deref(), Some("m1"));
        assert_eq!(r.string().as_deref(), Some("rdkafka"));
        assert_eq!(r.string().as_deref(), Some("/127.0.0.1"));
        assert_eq!(r.bytes().as_deref(), Some(&b"subscription"[..]));
        assert_eq!(r.bytes().as_deref(), Some(&b"partitions"[..]));
        assert_eq!(r.i16(), Some(0));
        assert_eq!(r.string().as_deref(), Some("simple"));
        assert_eq!(r.string().as_deref(), Some("Empty"));

        registry.leave("joined", &["m1".to_owned()]);
        assert_eq!(registry.members, 0);
        assert!(registry.groups["joined"].members.is_empty());
    }

    #[test]
    fn list_v4_filters_by_state() {
        let mut registry = Registry::default();
        registry.committed("simple");
        registry.join_asked("joining", "consumer");
        registry.state_is("joining", State::PreparingRebalance);
        // Request v4: states_filter ["Empty"], tagged fields.
        let mut body = vec![2];
        put_compact_string(&mut body, "Empty");
        body.push(0);
        let answer = registry.list_answer(&body, 4, 1, 0);
        // tagged, throttle, error, count+1 = 2, "simple", "", "Empty", tagged, tagged
        let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 2];
        put_compact_string(&mut expected, "simple");
        put_compact_string(&mut expected, "");
        put_compact_string(&mut expected, "Empty");
        expected.extend_from_slice(&[0, 0]);
        assert_eq!(answer, expected);
    }

    #[test]
    fn a_broker_lists_only_the_groups_it_coordinates() {
        let mut registry = Registry::default();
        registry.committed("one");
        registry.coordinated_by("one", 1);
        registry.committed("two");
        registry.coordinated_by("two", 2);
        let names = |registry: &mut Registry, broker_id: i32| {
            let answer = registry.list_answer(&[], 0, broker_id, 0);
            let mut r = Reader::new(&answer);
            assert_eq!(r.i16(), Some(0));
            let count = r.count(4).unwrap();
            (0..count)
                .map(|_| {
                    let name = r.string().unwrap();
                    r.string().unwrap();
                    name
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&mut registry, 1), ["one"]);
        assert_eq!(names(&mut registry, 2), ["two"]);
        assert!(names(&mut registry, 3).is_empty());
        // Its requests moved (the coordinator changed): listed there.
        registry.coordinated_by("one", 3);
        assert_eq!(names(&mut registry, 3), ["one"]);
        assert!(names(&mut registry, 1).is_empty());
    }

    #[test]
    fn groups_and_members_are_bounded() {
        let mut registry = Registry::default();
        for i in 0..GROUPS_LISTED + 5 {
            registry.committed(&format!("g{i}"));
        }
        assert_eq!(registry.groups.len(), GROUPS_LISTED);
    }
}
