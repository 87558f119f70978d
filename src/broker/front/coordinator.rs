//! The classic consumer-group coordinator of the fronts of one cluster.
//!
//! librdkafka's mock elects a group's leader only when its rebalance timer
//! fires, and sets that timer to the session timeout less 1 s whenever a
//! member joins a stable group: a second consumer waited 44 s (librdkafka's
//! default session) where Kafka ends the rebalance as soon as every known
//! member has rejoined, about one heartbeat (3 s) later. So the fronts
//! coordinate classic groups themselves, as Kafka's group coordinator
//! does, and never relay JoinGroup, SyncGroup, Heartbeat or LeaveGroup:
//!
//! - A join to an empty group starts a rebalance that waits the initial
//!   delay (`group.initial.rebalance.delay.ms`, the builder's setting).
//! - A rebalance ends once every known member has rejoined, or at the
//!   longest rebalance timeout of its members; members that did not rejoin
//!   by then are dropped. Members of a stable group learn of a rebalance
//!   from their heartbeat's REBALANCE_IN_PROGRESS.
//! - The leader stays leader while it is a member (else the member that
//!   joined first leads); the protocol is the leader's first one that every
//!   member offers.
//! - A member not heard from within its session timeout is dropped, checked
//!   whenever the group is asked something and while a join or sync waits.
//! - A follower rejoining with unchanged metadata gets the current
//!   generation back without a rebalance (as on Kafka); the leader, or a
//!   member whose metadata changed, starts one.
//!
//! Offsets stay the mock's: an OffsetCommit is checked here (member,
//! generation, state) and, if valid, relayed to the mock, which holds no
//! classic group and so stores it.
//!
//! Static members (`group.instance.id`) follow Kafka's rules: a join with
//! a known instance id and no member id takes the instance's member over
//! under a new member id (in a stable group whose protocol stays, without
//! a rebalance), and the old member id is fenced: its waiting join or
//! sync, and any later join, sync, heartbeat or commit naming that
//! instance, get FENCED_INSTANCE_ID.
//!
//! The core below is synchronous and takes the time as an argument, so
//! tests drive timeouts without waiting; the front awaits answers that
//! must wait (a join during a rebalance, a follower's sync before the
//! leader's) on the channels it hands out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::listing::{self, Joined, Joining, State};

/// Kafka's error codes the coordinator answers with.
pub(super) mod error {
    pub(in super::super) const NONE: i16 = 0;
    pub(in super::super) const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub(in super::super) const ILLEGAL_GENERATION: i16 = 22;
    pub(in super::super) const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub(in super::super) const UNKNOWN_MEMBER_ID: i16 = 25;
    pub(in super::super) const REBALANCE_IN_PROGRESS: i16 = 27;
    pub(in super::super) const FENCED_INSTANCE_ID: i16 = 82;
}

/// Most groups one cluster coordinates; past that a join to a new group is
/// refused with COORDINATOR_NOT_AVAILABLE (retriable) until one empties.
const GROUPS_COORDINATED: usize = 10_000;

/// What a JoinGroup request asks.
#[derive(Debug, Clone)]
pub(super) struct JoinAsk {
    pub(super) group: String,
    pub(super) member_id: String,
    pub(super) group_instance_id: Option<String>,
    pub(super) protocol_type: String,
    pub(super) protocols: Vec<(String, Vec<u8>)>,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) client_id: String,
    pub(super) client_host: String,
}

/// A JoinGroup answer, before encoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct JoinAnswer {
    pub(super) error: i16,
    pub(super) generation: i32,
    pub(super) protocol: String,
    pub(super) leader: String,
    pub(super) member_id: String,
    /// Every member (id, group instance id, metadata), to the leader only.
    pub(super) members: Vec<(String, Option<String>, Vec<u8>)>,
}

impl JoinAnswer {
    fn error(error: i16, member_id: &str) -> Self {
        Self {
            error,
            generation: -1,
            member_id: member_id.to_owned(),
            ..Self::default()
        }
    }
}

/// A SyncGroup answer, before encoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct SyncAnswer {
    pub(super) error: i16,
    pub(super) assignment: Vec<u8>,
}

impl SyncAnswer {
    fn error(error: i16) -> Self {
        Self {
            error,
            assignment: Vec::new(),
        }
    }
}

/// An answer now, or one to await.
#[derive(Debug)]
pub(super) enum Reply<T> {
    Now(T),
    /// Comes on this channel; meanwhile call [`Coordinator::tick`] for the
    /// group at the instant it returns.
    Later(oneshot::Receiver<T>),
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    protocol_type: String,
    protocols: Vec<(String, Vec<u8>)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    assignment: Vec<u8>,
    /// Whether a JoinGroup answer reached the front's connection to it, so
    /// that its client knows its member id.
    answered: bool,
    /// A JoinGroup waiting for the rebalance to end.
    join_waiter: Option<oneshot::Sender<JoinAnswer>>,
    /// A follower's SyncGroup waiting for the leader's.
    sync_waiter: Option<oneshot::Sender<SyncAnswer>>,
}

impl Member {
    fn joining(&self) -> Joining {
        Joining {
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            group_instance_id: self.instance_id.clone(),
            protocols: self.protocols.clone(),
        }
    }

    /// Whether a request of its waits for an answer on a connection that
    /// is still open.
    fn waiting(&self) -> bool {
        self.join_waiter.as_ref().is_some_and(|w| !w.is_closed())
            || self.sync_waiter.as_ref().is_some_and(|w| !w.is_closed())
    }

    /// Whether its session ran out at `now` (a member waiting for an answer
    /// is kept alive by its request, as on Kafka, while its client is).
    fn expired(&self, now: Instant) -> bool {
        !self.waiting() && now.saturating_duration_since(self.last_seen) >= self.session_timeout
    }
}

#[derive(Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol: String,
    leader: Option<String>,
    /// In join order.
    members: Vec<Member>,
    /// While preparing a rebalance: when members that have not rejoined
    /// are dropped and the rebalance ends anyway.
    rebalance_deadline: Option<Instant>,
    /// While preparing the first rebalance of an empty group: the initial
    /// delay, before which it does not end.
    initial_until: Option<Instant>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            protocol: String::new(),
            leader: None,
            members: Vec::new(),
            rebalance_deadline: None,
            initial_until: None,
        }
    }

    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    /// Whether a request of `member_id` naming static `instance_id` comes
    /// from a member id the instance no longer has (Kafka fences it).
    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id.is_some_and(|instance| {
            self.members
                .iter()
                .any(|m| m.instance_id.as_deref() == Some(instance) && m.id != member_id)
        })
    }

    /// The protocol the members vote for, as Kafka's coordinator picks it:
    /// of those every member offers, each member votes for the first in its
    /// own order, and the most votes win (a tie goes to the leader's order).
    fn select_protocol(&self) -> Option<String> {
        let offered_by_all = |name: &String| {
            self.members
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        };
        let mut votes: HashMap<&String, usize> = HashMap::new();
        for member in &self.members {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| offered_by_all(n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        let leader = self
            .leader
            .as_ref()
            .and_then(|id| self.members.iter().find(|m| m.id == *id))
            .or_else(|| self.members.first())?;
        let most = votes.values().copied().max()?;
        leader
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| votes.get(name) == Some(&most))
            .cloned()
    }
}

/// The classic groups of one cluster, shared by its fronts.
#[derive(Debug)]
pub(super) struct Coordinator {
    initial_delay: Duration,
    groups: HashMap<String, Group>,
    /// Errors to answer the next requests of an api key with (the
    /// broker's `request_errors` fault for the group APIs).
    injected: HashMap<i16, VecDeque<i16>>,
    /// What ListGroups and DescribeGroups tell.
    pub(super) listed: listing::Registry,
}

impl Coordinator {
    pub(super) fn new(initial_delay: Duration) -> Self {
        Self {
            initial_delay,
            groups: HashMap::new(),
            injected: HashMap::new(),
            listed: listing::Registry::default(),
        }
    }

    /// The next requests of `api_key` are answered with these `errors`.
    pub(super) fn push_errors(&mut self, api_key: i16, errors: &[i16]) {
        self.injected.entry(api_key).or_default().extend(errors);
    }

    /// Drops the errors still waiting for `api_key`.
    pub(super) fn clear_errors(&mut self, api_key: i16) {
        self.injected.remove(&api_key);
    }

    fn injected(&mut self, api_key: i16) -> Option<i16> {
        self.injected.get_mut(&api_key)?.pop_front()
    }

    /// Tells the listing `group_id`'s state after a request changed it.
    fn publish(&mut self, group_id: &str) {
        if let Some(group) = self.groups.get(group_id) {
            self.listed.state_is(group_id, group.state);
        }
    }

    /// The listing, every group brought up to `now` first (members whose
    /// session ran out dropped, rebalances that are due ended), so that it
    /// tells what Kafka's coordinator would also when nobody asked since.
    pub(super) fn listing(&mut self, now: Instant) -> &mut listing::Registry {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            self.tick(&id, now);
        }
        &mut self.listed
    }

    /// The ListGroups answer body to a request `body` at `version` to
    /// mock broker `broker_id`: the groups it coordinates (`api_key`, for
    /// injected errors: the error and no group, as Kafka answers a
    /// ListGroups it fails).
    pub(super) fn list_groups(
        &mut self,
        api_key: i16,
        body: &[u8],
        version: i16,
        broker_id: i32,
        now: Instant,
    ) -> Vec<u8> {
        let error = self.injected(api_key).unwrap_or(error::NONE);
        self.listing(now)
            .list_answer(body, version, broker_id, error)
    }

    /// The DescribeGroups answer body for the groups `asked` (`api_key`,
    /// for injected errors: the error on every group asked).
    pub(super) fn describe_groups(
        &mut self,
        api_key: i16,
        asked: &[String],
        version: i16,
        now: Instant,
    ) -> Vec<u8> {
        let error = self.injected(api_key).unwrap_or(error::NONE);
        self.listing(now).describe_answer(asked, version, error)
    }

    /// How many members `group_id` has, if it is known.
    #[cfg(test)]
    pub(super) fn members_of(&self, group_id: &str) -> Option<usize> {
        self.groups.get(group_id).map(|group| group.members.len())
    }

    /// A JoinGroup (`api_key`, for injected errors).
    pub(super) fn join(&mut self, api_key: i16, ask: JoinAsk, now: Instant) -> Reply<JoinAnswer> {
        let group_id = ask.group.clone();
        let reply = self.join_group(api_key, ask, now);
        self.publish(&group_id);
        reply
    }

    fn join_group(&mut self, api_key: i16, ask: JoinAsk, now: Instant) -> Reply<JoinAnswer> {
        if let Some(error) = self.injected(api_key) {
            return Reply::Now(JoinAnswer::error(error, &ask.member_id));
        }
        if !self.groups.contains_key(&ask.group) && self.groups.len() >= GROUPS_COORDINATED {
            self.groups.retain(|_, g| !g.members.is_empty());
            if self.groups.len() >= GROUPS_COORDINATED {
                return Reply::Now(JoinAnswer::error(
                    error::COORDINATOR_NOT_AVAILABLE,
                    &ask.member_id,
                ));
            }
        }
        self.listed.join_asked(&ask.group, &ask.protocol_type);
        let initial_delay = self.initial_delay;
        let group = self
            .groups
            .entry(ask.group.clone())
            .or_insert_with(Group::new);
        expire(group, &ask.group, &mut self.listed, now);
        // Some protocol the joining member offers must be one every member
        // offers, of the same protocol type.
        let consistent = group
            .members
            .iter()
            .all(|m| m.protocol_type == ask.protocol_type)
            && ask.protocols.iter().any(|(name, _)| {
                group
                    .members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            });
        if ask.protocols.is_empty() || !consistent {
            return Reply::Now(JoinAnswer::error(
                error::INCONSISTENT_GROUP_PROTOCOL,
                &ask.member_id,
            ));
        }
        let mut member_id = ask.member_id.clone();
        if let Some(instance) = ask.group_instance_id.as_deref() {
            let current = group
                .members
                .iter()
                .find(|m| m.instance_id.as_deref() == Some(instance))
                .map(|m| m.id.clone());
            match current {
                Some(old) if member_id.is_empty() => {
                    return replace_static(group, &old, ask, &mut self.listed, initial_delay, now);
                }
                Some(current) if current != member_id => {
                    return Reply::Now(JoinAnswer::error(error::FENCED_INSTANCE_ID, &member_id));
                }
                // Kafka's answer to a member id claiming an instance id the
                // group does not know: join again without it.
                None if !member_id.is_empty() => {
                    return Reply::Now(JoinAnswer::error(error::UNKNOWN_MEMBER_ID, &member_id));
                }
                _ => {}
            }
        }
        let known = !member_id.is_empty() && group.member(&member_id).is_some();
        if !member_id.is_empty() && !known {
            return Reply::Now(JoinAnswer::error(error::UNKNOWN_MEMBER_ID, &member_id));
        }
        if member_id.is_empty() {
            member_id = new_member_id(&ask.client_id);
        }
        let (sender, receiver) = oneshot::channel();
        if known {
            let is_leader = group.leader.as_ref() == Some(&member_id);
            let unchanged = group
                .members
                .iter()
                .any(|m| m.id == member_id && m.protocols == ask.protocols);
            if unchanged
                && (group.state == State::CompletingRebalance
                    || (group.state == State::Stable && !is_leader))
            {
                // Kafka answers such a rejoin with the current generation.
                let answer = JoinAnswer {
                    error: error::NONE,
                    generation: group.generation,
                    protocol: group.protocol.clone(),
                    leader: group.leader.clone().unwrap_or_default(),
                    member_id: member_id.clone(),
                    members: if is_leader {
                        members_listed(group)
                    } else {
                        Vec::new()
                    },
                };
                if let Some(member) = group.member(&member_id) {
                    member.last_seen = now;
                    member.answered = true;
                }
                self.listed.touch(&ask.group);
                return Reply::Now(answer);
            }
            let Some(member) = group.member(&member_id) else {
                return Reply::Now(JoinAnswer::error(error::UNKNOWN_MEMBER_ID, &member_id));
            };
            member.last_seen = now;
            member.protocols = ask.protocols;
            member.session_timeout = ask.session_timeout;
            member.rebalance_timeout = ask.rebalance_timeout;
            member.client_id = ask.client_id;
            member.client_host = ask.client_host;
            // A second join from the same member (a reconnect) replaces
            // the first, whose connection is gone.
            member.join_waiter = Some(sender);
        } else {
            group.members.push(Member {
                id: member_id,
                instance_id: ask.group_instance_id,
                client_id: ask.client_id,
                client_host: ask.client_host,
                protocol_type: ask.protocol_type,
                protocols: ask.protocols,
                session_timeout: ask.session_timeout,
                rebalance_timeout: ask.rebalance_timeout,
                last_seen: now,
                assignment: Vec::new(),
                answered: false,
                join_waiter: Some(sender),
                sync_waiter: None,
            });
        }
        if group.state != State::PreparingRebalance {
            prepare_rebalance(group, initial_delay, now);
        }
        try_complete(group, &ask.group, &mut self.listed, now);
        Reply::Later(receiver)
    }

    /// A SyncGroup from `member_id` of `generation`; the leader's carries
    /// every member's `assignments`.
    #[allow(clippy::too_many_arguments)] // a SyncGroup's fields, as read
    pub(super) fn sync(
        &mut self,
        api_key: i16,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Vec<u8>)>,
        now: Instant,
    ) -> Reply<SyncAnswer> {
        let reply = self.sync_group(
            api_key,
            group_id,
            generation,
            member_id,
            instance_id,
            assignments,
            now,
        );
        self.publish(group_id);
        reply
    }

    #[allow(clippy::too_many_arguments)] // a SyncGroup's fields, as read
    fn sync_group(
        &mut self,
        api_key: i16,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Vec<u8>)>,
        now: Instant,
    ) -> Reply<SyncAnswer> {
        if let Some(error) = self.injected(api_key) {
            return Reply::Now(SyncAnswer::error(error));
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return Reply::Now(SyncAnswer::error(error::UNKNOWN_MEMBER_ID));
        };
        expire(group, group_id, &mut self.listed, now);
        if group.fenced(member_id, instance_id) {
            return Reply::Now(SyncAnswer::error(error::FENCED_INSTANCE_ID));
        }
        let state = group.state;
        let current = group.generation;
        let is_leader = group.leader.as_deref() == Some(member_id);
        let Some(member) = group.member(member_id) else {
            return Reply::Now(SyncAnswer::error(error::UNKNOWN_MEMBER_ID));
        };
        member.last_seen = now;
        if generation != current {
            return Reply::Now(SyncAnswer::error(error::ILLEGAL_GENERATION));
        }
        match state {
            State::Empty | State::PreparingRebalance => {
                Reply::Now(SyncAnswer::error(error::REBALANCE_IN_PROGRESS))
            }
            State::Stable => Reply::Now(SyncAnswer {
                error: error::NONE,
                assignment: member.assignment.clone(),
            }),
            State::CompletingRebalance if !is_leader => {
                let (sender, receiver) = oneshot::channel();
                member.sync_waiter = Some(sender);
                Reply::Later(receiver)
            }
            State::CompletingRebalance => {
                let mut own = Vec::new();
                for member in &mut group.members {
                    member.assignment = assignments
                        .iter()
                        .find(|(id, _)| *id == member.id)
                        .map(|(_, assignment)| assignment.clone())
                        .unwrap_or_default();
                    self.listed.synced(group_id, &member.id, &member.assignment);
                    if member.id == member_id {
                        own.clone_from(&member.assignment);
                    }
                    if let Some(waiter) = member.sync_waiter.take() {
                        // A waiter whose connection is gone reads nothing.
                        let _ = waiter.send(SyncAnswer {
                            error: error::NONE,
                            assignment: member.assignment.clone(),
                        });
                    }
                }
                group.state = State::Stable;
                Reply::Now(SyncAnswer {
                    error: error::NONE,
                    assignment: own,
                })
            }
        }
    }

    /// A Heartbeat; its error code.
    pub(super) fn heartbeat(
        &mut self,
        api_key: i16,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> i16 {
        let error =
            self.heartbeat_error(api_key, group_id, generation, member_id, instance_id, now);
        self.listed.touch(group_id);
        self.publish(group_id);
        error
    }

    fn heartbeat_error(
        &mut self,
        api_key: i16,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> i16 {
        if let Some(error) = self.injected(api_key) {
            return error;
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return error::UNKNOWN_MEMBER_ID;
        };
        expire(group, group_id, &mut self.listed, now);
        if group.fenced(member_id, instance_id) {
            return error::FENCED_INSTANCE_ID;
        }
        let state = group.state;
        let current = group.generation;
        let Some(member) = group.member(member_id) else {
            return error::UNKNOWN_MEMBER_ID;
        };
        member.last_seen = now;
        match state {
            State::PreparingRebalance => error::REBALANCE_IN_PROGRESS,
            _ if generation != current => error::ILLEGAL_GENERATION,
            _ => error::NONE,
        }
    }

    /// A LeaveGroup of `member_id`; its error code.
    pub(super) fn leave(
        &mut self,
        api_key: i16,
        group_id: &str,
        member_id: &str,
        now: Instant,
    ) -> i16 {
        let error = self.leave_group(api_key, group_id, member_id, now);
        self.publish(group_id);
        error
    }

    fn leave_group(&mut self, api_key: i16, group_id: &str, member_id: &str, now: Instant) -> i16 {
        if let Some(error) = self.injected(api_key) {
            return error;
        }
        // The member is gone once it asks to leave, as its client is.
        self.listed
            .leave(group_id, std::slice::from_ref(&member_id.to_owned()));
        let initial_delay = self.initial_delay;
        let Some(group) = self.groups.get_mut(group_id) else {
            return error::UNKNOWN_MEMBER_ID;
        };
        let Some(at) = group.members.iter().position(|m| m.id == member_id) else {
            return error::UNKNOWN_MEMBER_ID;
        };
        group.members.remove(at);
        if group.state != State::PreparingRebalance {
            prepare_rebalance(group, initial_delay, now);
        }
        try_complete(group, group_id, &mut self.listed, now);
        error::NONE
    }

    /// Whether an OffsetCommit by `member_id` of `generation` (-1 for a
    /// consumer outside any group) may be stored; the error if not.
    pub(super) fn commit_error(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Option<i16> {
        let error = self.check_commit(group_id, generation, member_id, instance_id, now);
        self.publish(group_id);
        error
    }

    fn check_commit(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Option<i16> {
        self.listed.committed(group_id);
        let group = self.groups.get_mut(group_id)?;
        expire(group, group_id, &mut self.listed, now);
        if group.fenced(member_id, instance_id) {
            return Some(error::FENCED_INSTANCE_ID);
        }
        if generation < 0 && group.members.is_empty() {
            return None;
        }
        let state = group.state;
        let current = group.generation;
        let Some(member) = group.member(member_id) else {
            return Some(error::UNKNOWN_MEMBER_ID);
        };
        member.last_seen = now;
        if generation != current {
            return Some(error::ILLEGAL_GENERATION);
        }
        (state == State::CompletingRebalance).then_some(error::REBALANCE_IN_PROGRESS)
    }

    /// Drops expired members and ends a rebalance that is due; the next
    /// instant something is due in `group_id` (a waiting request calls
    /// again then).
    pub(super) fn tick(&mut self, group_id: &str, now: Instant) -> Option<Instant> {
        let group = self.groups.get_mut(group_id)?;
        expire(group, group_id, &mut self.listed, now);
        try_complete(group, group_id, &mut self.listed, now);
        self.listed.state_is(group_id, group.state);
        let mut due: Option<Instant> = None;
        let mut consider = |at: Instant| due = Some(due.map_or(at, |d| d.min(at)));
        if group.state == State::PreparingRebalance {
            // Past, the initial delay no longer holds the rebalance back.
            if let Some(at) = group.initial_until.filter(|at| *at > now) {
                consider(at);
            }
            if let Some(at) = group.rebalance_deadline {
                consider(at);
            }
        }
        for member in &group.members {
            if !member.waiting() {
                consider(member.last_seen + member.session_timeout);
            }
        }
        due
    }
}

/// A member id as Kafka makes them: the client id and a unique suffix.
fn new_member_id(client_id: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{client_id}-{nanos:08x}-{n:08x}")
}

/// A JoinGroup with no member id from static member `old`'s instance (a
/// restarted client), as Kafka takes it: the member is the new client's
/// under a new member id, and the old id is fenced, with any join or sync
/// it still waits on. A stable group whose protocol stays is not
/// rebalanced: the new member gets the current generation, and the
/// leader's old id as leader, so that it syncs as a follower and gets its
/// assignment back. Otherwise the join waits for a rebalance.
fn replace_static(
    group: &mut Group,
    old: &str,
    ask: JoinAsk,
    listed: &mut listing::Registry,
    initial_delay: Duration,
    now: Instant,
) -> Reply<JoinAnswer> {
    let group_id = ask.group.clone();
    let new_id = new_member_id(&ask.client_id);
    let leader_before = group.leader.clone().unwrap_or_default();
    if group.leader.as_deref() == Some(old) {
        group.leader = Some(new_id.clone());
    }
    listed.leave(&group_id, &[old.to_owned()]);
    let Some(member) = group.member(old) else {
        return Reply::Now(JoinAnswer::error(error::UNKNOWN_MEMBER_ID, ""));
    };
    if let Some(waiter) = member.join_waiter.take() {
        // The old client, if still there, learns it was replaced.
        let _ = waiter.send(JoinAnswer::error(error::FENCED_INSTANCE_ID, old));
    }
    if let Some(waiter) = member.sync_waiter.take() {
        let _ = waiter.send(SyncAnswer::error(error::FENCED_INSTANCE_ID));
    }
    member.id.clone_from(&new_id);
    member.protocols = ask.protocols;
    member.session_timeout = ask.session_timeout;
    member.rebalance_timeout = ask.rebalance_timeout;
    member.client_id = ask.client_id;
    member.client_host = ask.client_host;
    member.last_seen = now;
    member.answered = false;
    let protocol_stays = group.select_protocol().as_deref() == Some(group.protocol.as_str());
    if group.state == State::Stable && protocol_stays {
        let protocol = group.protocol.clone();
        let generation = group.generation;
        let Some(member) = group.member(&new_id) else {
            return Reply::Now(JoinAnswer::error(error::UNKNOWN_MEMBER_ID, ""));
        };
        member.answered = true;
        let joined = Joined {
            member_id: &new_id,
            protocol: &protocol,
            members: &[],
        };
        listed.joined(&group_id, &member.joining(), &joined);
        listed.synced(&group_id, &new_id, &member.assignment);
        return Reply::Now(JoinAnswer {
            error: error::NONE,
            generation,
            protocol,
            leader: leader_before,
            member_id: new_id,
            members: Vec::new(),
        });
    }
    let (sender, receiver) = oneshot::channel();
    if let Some(member) = group.member(&new_id) {
        member.join_waiter = Some(sender);
    }
    // Completing a rebalance, the leader may be assigning to the old id:
    // a new one follows, as on Kafka.
    if group.state != State::PreparingRebalance {
        prepare_rebalance(group, initial_delay, now);
    }
    try_complete(group, &group_id, listed, now);
    Reply::Later(receiver)
}

/// Every member with its metadata for the group's protocol.
fn members_listed(group: &Group) -> Vec<(String, Option<String>, Vec<u8>)> {
    group
        .members
        .iter()
        .map(|m| {
            let metadata = m
                .protocols
                .iter()
                .find(|(name, _)| *name == group.protocol)
                .map(|(_, metadata)| metadata.clone())
                .unwrap_or_default();
            (m.id.clone(), m.instance_id.clone(), metadata)
        })
        .collect()
}

/// Starts a rebalance: a pending sync learns of it at once.
fn prepare_rebalance(group: &mut Group, initial_delay: Duration, now: Instant) {
    for member in &mut group.members {
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncAnswer::error(error::REBALANCE_IN_PROGRESS));
        }
    }
    group.initial_until = (group.state == State::Empty).then(|| now + initial_delay);
    let longest = group
        .members
        .iter()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or_default();
    group.rebalance_deadline = Some(now + longest);
    group.state = State::PreparingRebalance;
}

/// Joins whose connection is gone (cut, or closed) wait no more. A dynamic
/// member that never had an answer cannot know its member id: it joins
/// again as a new one, so it is dropped (Kafka, since KIP-394, never counts
/// such a member); any other rejoins with its id, or a static one as its
/// instance, or its session runs out.
fn forget_gone_joins(group: &mut Group, group_id: &str, listed: &mut listing::Registry) {
    let mut gone = Vec::new();
    group.members.retain_mut(|m| {
        if !m
            .join_waiter
            .as_ref()
            .is_some_and(oneshot::Sender::is_closed)
        {
            return true;
        }
        m.join_waiter = None;
        let kept = m.answered || m.instance_id.is_some();
        if !kept {
            gone.push(m.id.clone());
        }
        kept
    });
    if !gone.is_empty() {
        listed.leave(group_id, &gone);
        if group.leader.as_ref().is_some_and(|id| gone.contains(id)) {
            group.leader = None;
        }
    }
}

/// Drops members whose session ran out; a stable group then rebalances.
fn expire(group: &mut Group, group_id: &str, listed: &mut listing::Registry, now: Instant) {
    forget_gone_joins(group, group_id, listed);
    let gone: Vec<String> = group
        .members
        .iter()
        .filter(|m| m.expired(now))
        .map(|m| m.id.clone())
        .collect();
    if gone.is_empty() {
        return;
    }
    group.members.retain(|m| !gone.contains(&m.id));
    listed.leave(group_id, &gone);
    if group.state != State::PreparingRebalance {
        // Never from Empty: a group with members to expire has members.
        prepare_rebalance(group, Duration::ZERO, now);
    }
    // A group left with no members is Empty at once.
    try_complete(group, group_id, listed, now);
}

/// Ends a rebalance once every member has rejoined, or at its deadline.
fn try_complete(group: &mut Group, group_id: &str, listed: &mut listing::Registry, now: Instant) {
    if group.state != State::PreparingRebalance {
        return;
    }
    if group.initial_until.is_some_and(|until| now < until) {
        return;
    }
    forget_gone_joins(group, group_id, listed);
    let all_rejoined = group.members.iter().all(|m| m.join_waiter.is_some());
    let overdue = group.rebalance_deadline.is_none_or(|at| now >= at);
    if !all_rejoined && !overdue {
        return;
    }
    if !all_rejoined {
        let gone: Vec<String> = group
            .members
            .iter()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        group.members.retain(|m| m.join_waiter.is_some());
        listed.leave(group_id, &gone);
    }
    group.generation += 1;
    group.rebalance_deadline = None;
    group.initial_until = None;
    if group.members.is_empty() {
        group.state = State::Empty;
        group.leader = None;
        return;
    }
    if !group
        .leader
        .as_ref()
        .is_some_and(|id| group.members.iter().any(|m| m.id == *id))
    {
        group.leader = group.members.first().map(|m| m.id.clone());
    }
    group.protocol = group.select_protocol().unwrap_or_default();
    group.state = State::CompletingRebalance;
    let everyone = members_listed(group);
    let leader = group.leader.clone().unwrap_or_default();
    for member in &mut group.members {
        member.assignment.clear();
        member.last_seen = now;
        let members = if member.id == leader {
            everyone.clone()
        } else {
            Vec::new()
        };
        listed.joined(
            group_id,
            &member.joining(),
            &Joined {
                member_id: &member.id,
                protocol: &group.protocol,
                members: &members,
            },
        );
        if let Some(waiter) = member.join_waiter.take() {
            // An answer whose connection is gone reaches nobody.
            member.answered |= waiter
                .send(JoinAnswer {
                    error: error::NONE,
                    generation: group.generation,
                    protocol: group.protocol.clone(),
                    leader: leader.clone(),
                    member_id: member.id.clone(),
                    members,
                })
                .is_ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOIN: i16 = 11;
    const SYNC: i16 = 14;
    const HEARTBEAT: i16 = 12;
    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(60);

    fn ask(member_id: &str, metadata: &[u8]) -> JoinAsk {
        JoinAsk {
            group: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), metadata.to_vec())],
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    fn now_answer<T: std::fmt::Debug>(reply: Reply<T>) -> T {
        match reply {
            Reply::Now(answer) => answer,
            Reply::Later(_) => panic!("the answer waits"),
        }
    }

    fn later<T>(reply: Reply<T>) -> oneshot::Receiver<T> {
        match reply {
            Reply::Later(receiver) => receiver,
            Reply::Now(_) => panic!("answered at once"),
        }
    }

    fn received<T>(receiver: &mut oneshot::Receiver<T>) -> Option<T> {
        receiver.try_recv().ok()
    }

    /// A group of one member, joined and synced at `t0`; its member id.
    fn stable_group(coordinator: &mut Coordinator, t0: Instant) -> String {
        let mut join = later(coordinator.join(JOIN, ask("", b"a"), t0));
        let answer = received(&mut join).expect("a first join ends at once (no initial delay)");
        assert_eq!((answer.error, answer.generation), (0, 1));
        assert_eq!(answer.leader, answer.member_id);
        let sync = now_answer(coordinator.sync(
            SYNC,
            "g",
            1,
            &answer.member_id,
            None,
            vec![(answer.member_id.clone(), b"p0,p1".to_vec())],
            t0,
        ));
        assert_eq!(sync.assignment, b"p0,p1");
        answer.member_id
    }

    /// A stable group of one, and a second member's join waiting: the
    /// coordinator, the time, the first member's id and the second's answer.
    fn second_member_joining() -> (Coordinator, Instant, String, oneshot::Receiver<JoinAnswer>) {
        let t0 = Instant::now();
        let mut coordinator = Coordinator::new(Duration::ZERO);
        let first = stable_group(&mut coordinator, t0);
        let second = later(coordinator.join(JOIN, ask("", b"b"), t0));
        (coordinator, t0, first, second)
    }

    #[test]
    fn a_second_member_is_answered_as_soon_as_the_first_rejoins() {
        let (mut coordinator, t0, first, mut second) = second_member_joining();
        assert!(
            received(&mut second).is_none(),
            "the first member has not rejoined"
        );
        // The first member learns of the rebalance from its heartbeat.
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 1, &first, None, t1),
            error::REBALANCE_IN_PROGRESS
        );
        let mut rejoin = later(coordinator.join(JOIN, ask(&first, b"a"), t1));
        let leader = received(&mut rejoin).expect("every member rejoined: the rebalance ends");
        let follower = received(&mut second).expect("the second member is answered too");
        assert_eq!((leader.generation, follower.generation), (2, 2));
        assert_eq!(leader.leader, first, "the leader stays leader");
        assert_eq!(leader.members.len(), 2, "the leader sees every member");
        assert!(follower.members.is_empty(), "a follower sees none");

        // The follower's sync waits for the leader's, which assigns both.
        let mut follower_sync =
            later(coordinator.sync(SYNC, "g", 2, &follower.member_id, None, Vec::new(), t1));
        let assignments = vec![
            (first.clone(), b"p0".to_vec()),
            (follower.member_id.clone(), b"p1".to_vec()),
        ];
        let own = now_answer(coordinator.sync(SYNC, "g", 2, &first, None, assignments, t1));
        assert_eq!(own.assignment, b"p0");
        let theirs = received(&mut follower_sync).expect("the leader's sync ends the wait");
        assert_eq!((theirs.error, theirs.assignment), (0, b"p1".to_vec()));
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 2, &first, None, t1),
            0
        );
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 1, &first, None, t1),
            error::ILLEGAL_GENERATION
        );
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_when_its_session_ends() {
        let (mut coordinator, t0, first, mut second) = second_member_joining();
        // Nothing more from the first member: due when its session ends.
        let due = coordinator.tick("g", t0).expect("something is due");
        assert_eq!(due, t0 + SESSION);
        assert!(received(&mut second).is_none());
        coordinator.tick("g", due);
        let answer = received(&mut second).expect("the rebalance ends without the first");
        assert_eq!(answer.leader, answer.member_id, "the second member leads");
        assert_eq!(answer.members.len(), 1);
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 2, &first, None, due),
            error::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn a_rebalance_ends_at_its_timeout_without_members_that_keep_heartbeating() {
        let (mut coordinator, t0, first, mut second) = second_member_joining();
        // Alive but never rejoining: heartbeats keep its session.
        let mut t = t0;
        while t < t0 + REBALANCE {
            t += Duration::from_secs(3);
            coordinator.heartbeat(HEARTBEAT, "g", 1, &first, None, t);
            coordinator.tick("g", t);
        }
        let answer = received(&mut second).expect("ended at the rebalance timeout");
        assert_eq!(answer.members.len(), 1, "{answer:?}");
    }

    #[test]
    fn a_follower_rejoining_unchanged_keeps_its_generation() {
        let (mut coordinator, t0, first, mut second) = second_member_joining();
        let _waiting = later(coordinator.join(JOIN, ask(&first, b"a"), t0));
        let follower = received(&mut second).expect("answered").member_id;
        now_answer(coordinator.sync(
            SYNC,
            "g",
            2,
            &first,
            None,
            vec![(follower.clone(), b"p1".to_vec())],
            t0,
        ));
        let again = now_answer(coordinator.join(JOIN, ask(&follower, b"b"), t0));
        assert_eq!((again.error, again.generation), (0, 2));
        // Changed metadata starts a rebalance instead.
        let _waiting = later(coordinator.join(JOIN, ask(&follower, b"b2"), t0));
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 2, &first, None, t0),
            error::REBALANCE_IN_PROGRESS
        );
    }

    #[test]
    fn the_initial_delay_holds_a_new_groups_first_rebalance() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(3);
        let mut coordinator = Coordinator::new(delay);
        let mut first = later(coordinator.join(JOIN, ask("", b"a"), t0));
        let mut second = later(coordinator.join(JOIN, ask("", b"b"), t0 + Duration::from_secs(1)));
        assert_eq!(coordinator.tick("g", t0), Some(t0 + delay));
        assert!(received(&mut first).is_none());
        coordinator.tick("g", t0 + delay);
        let (first, second) = (received(&mut first), received(&mut second));
        assert_eq!(first.expect("first answered").generation, 1);
        assert_eq!(second.expect("second answered").generation, 1);
    }

    #[test]
    fn commits_are_checked_against_member_generation_and_state() {
        let t0 = Instant::now();
        let mut coordinator = Coordinator::new(Duration::ZERO);
        assert_eq!(coordinator.commit_error("other", -1, "", None, t0), None);
        let first = stable_group(&mut coordinator, t0);
        assert_eq!(coordinator.commit_error("g", 1, &first, None, t0), None);
        assert_eq!(
            coordinator.commit_error("g", 0, &first, None, t0),
            Some(error::ILLEGAL_GENERATION)
        );
        assert_eq!(
            coordinator.commit_error("g", 1, "stranger", None, t0),
            Some(error::UNKNOWN_MEMBER_ID)
        );
        assert_eq!(
            coordinator.commit_error("g", -1, "", None, t0),
            Some(error::UNKNOWN_MEMBER_ID)
        );
        // While a rebalance is prepared, the old generation still commits.
        let _waiting = later(coordinator.join(JOIN, ask("", b"b"), t0));
        assert_eq!(coordinator.commit_error("g", 1, &first, None, t0), None);
    }

    #[test]
    fn injected_errors_answer_the_next_requests_then_stop() {
        let t0 = Instant::now();
        let mut coordinator = Coordinator::new(Duration::ZERO);
        coordinator.push_errors(JOIN, &[error::COORDINATOR_NOT_AVAILABLE]);
        let refused = now_answer(coordinator.join(JOIN, ask("", b"a"), t0));
        assert_eq!(refused.error, error::COORDINATOR_NOT_AVAILABLE);
        stable_group(&mut coordinator, t0);
    }

    #[test]
    fn a_leave_ends_the_rebalance_for_the_rest() {
        let (mut coordinator, t0, first, mut second) = second_member_joining();
        assert_eq!(coordinator.leave(13, "g", &first, t0), 0);
        let answer = received(&mut second).expect("the only member left has rejoined");
        assert_eq!(answer.leader, answer.member_id);
        assert_eq!(
            coordinator.leave(13, "g", &first, t0),
            error::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn the_listing_tells_the_coordinators_state() {
        let (mut coordinator, t0, first, mut second) = second_member_joining();
        let _rejoined = later(coordinator.join(JOIN, ask(&first, b"a"), t0));
        let follower = received(&mut second).expect("answered").member_id;
        let assignments = vec![(follower.clone(), b"p1".to_vec())];
        now_answer(coordinator.sync(SYNC, "g", 2, &first, None, assignments, t0));
        assert_eq!(coordinator.listed.state_of("g"), Some(State::Stable));
        // A member leaves: the other has yet to rejoin, so the group
        // prepares a rebalance (the listing alone would still say Stable).
        assert_eq!(coordinator.leave(13, "g", &follower, t0), 0);
        assert_eq!(
            coordinator.listed.state_of("g"),
            Some(State::PreparingRebalance)
        );
    }

    #[test]
    fn the_listing_drops_members_whose_session_ran_out_unasked() {
        let t0 = Instant::now();
        let mut coordinator = Coordinator::new(Duration::ZERO);
        stable_group(&mut coordinator, t0);
        assert_eq!(coordinator.listing(t0).state_of("g"), Some(State::Stable));
        // No request since: the listing still ends the member's session.
        let after_session = t0 + SESSION + Duration::from_secs(1);
        assert_eq!(
            coordinator.listing(after_session).state_of("g"),
            Some(State::Empty)
        );
        assert_eq!(coordinator.listed.members_of("g"), Some(0));
    }

    #[test]
    fn a_join_whose_connection_is_gone_is_not_waited_for() {
        let (mut coordinator, t0, first, second) = second_member_joining();
        // The second member's connection is cut before its answer: its
        // client never learnt its member id and joins again as a new one.
        drop(second);
        let mut again = later(coordinator.join(JOIN, ask("", b"b"), t0));
        let mut rejoined = later(coordinator.join(JOIN, ask(&first, b"a"), t0));
        let leader = received(&mut rejoined).expect("the rebalance ends");
        assert!(received(&mut again).is_some(), "the new join is answered");
        assert_eq!(
            leader.members.len(),
            2,
            "no member is left from the cut join: {leader:?}"
        );
    }

    fn static_ask(member_id: &str, instance: &str) -> JoinAsk {
        JoinAsk {
            group_instance_id: Some(instance.into()),
            ..ask(member_id, b"a")
        }
    }

    #[test]
    fn a_static_members_new_client_takes_over_and_its_old_member_id_is_fenced() {
        let t0 = Instant::now();
        let mut coordinator = Coordinator::new(Duration::ZERO);
        let mut join = later(coordinator.join(JOIN, static_ask("", "i1"), t0));
        let old = received(&mut join).expect("answered").member_id;
        let assigned = vec![(old.clone(), b"p0,p1".to_vec())];
        now_answer(coordinator.sync(SYNC, "g", 1, &old, Some("i1"), assigned, t0));

        // The instance restarts: no member id. A stable group whose
        // protocol stays is not rebalanced; the old leader id is named as
        // leader, so the new client syncs as a follower.
        let new = now_answer(coordinator.join(JOIN, static_ask("", "i1"), t0));
        assert_eq!((new.error, new.generation), (0, 1));
        assert_ne!(new.member_id, old);
        assert_eq!(new.leader, old);
        assert!(new.members.is_empty());
        let own =
            now_answer(coordinator.sync(SYNC, "g", 1, &new.member_id, Some("i1"), Vec::new(), t0));
        assert_eq!((own.error, own.assignment), (0, b"p0,p1".to_vec()));
        let id = new.member_id.as_str();
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 1, id, Some("i1"), t0),
            0
        );

        // The old member id, naming the instance: fenced everywhere.
        let fenced = error::FENCED_INSTANCE_ID;
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 1, &old, Some("i1"), t0),
            fenced
        );
        let sync = now_answer(coordinator.sync(SYNC, "g", 1, &old, Some("i1"), Vec::new(), t0));
        assert_eq!(sync.error, fenced);
        assert_eq!(
            coordinator.commit_error("g", 1, &old, Some("i1"), t0),
            Some(fenced)
        );
        let rejoin = now_answer(coordinator.join(JOIN, static_ask(&old, "i1"), t0));
        assert_eq!((rejoin.error, rejoin.member_id), (fenced, old.clone()));
        // Without the instance id (versions before static membership) it
        // is only a member id the group does not know.
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 1, &old, None, t0),
            error::UNKNOWN_MEMBER_ID
        );
        // A member id naming an instance the group does not know.
        let unknown = now_answer(coordinator.join(JOIN, static_ask(id, "i2"), t0));
        assert_eq!(unknown.error, error::UNKNOWN_MEMBER_ID);
        // None of this disturbed the new member.
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 1, id, Some("i1"), t0),
            0
        );
        assert_eq!(coordinator.listed.members_of("g"), Some(1));
    }

    #[test]
    fn a_static_members_waiting_join_is_fenced_by_its_new_client() {
        // The join waits out the initial delay.
        let t0 = Instant::now();
        let delay = Duration::from_secs(3);
        let mut coordinator = Coordinator::new(delay);
        let mut old_join = later(coordinator.join(JOIN, static_ask("", "i1"), t0));
        let mut new_join = later(coordinator.join(JOIN, static_ask("", "i1"), t0));
        let fenced = received(&mut old_join).expect("the old join is answered at once");
        assert_eq!(fenced.error, error::FENCED_INSTANCE_ID);
        coordinator.tick("g", t0 + delay);
        let joined = received(&mut new_join).expect("the rebalance ends");
        assert_eq!((joined.error, joined.generation), (0, 1));
        assert_eq!(joined.leader, joined.member_id);
        let members: Vec<_> = joined.members.iter().map(|m| &m.0).collect();
        assert_eq!(members, [&joined.member_id]);
    }

    #[test]
    fn a_static_members_waiting_sync_is_fenced_and_the_group_rebalances() {
        let t0 = Instant::now();
        let mut coordinator = Coordinator::new(Duration::ZERO);
        let leader = stable_group(&mut coordinator, t0);
        let mut static_join = later(coordinator.join(JOIN, static_ask("", "i1"), t0));
        let _rejoined = later(coordinator.join(JOIN, ask(&leader, b"a"), t0));
        let old = received(&mut static_join).expect("every member rejoined");
        assert_eq!(old.generation, 2);
        // The static follower's sync waits for the leader's; its instance
        // restarts meanwhile.
        let mut old_sync =
            later(coordinator.sync(SYNC, "g", 2, &old.member_id, Some("i1"), Vec::new(), t0));
        let mut new_join = later(coordinator.join(JOIN, static_ask("", "i1"), t0));
        let fenced = received(&mut old_sync).expect("the old sync is answered at once");
        assert_eq!(fenced.error, error::FENCED_INSTANCE_ID);
        // The leader may be assigning to the old member id: a rebalance.
        assert_eq!(
            coordinator.heartbeat(HEARTBEAT, "g", 2, &leader, None, t0),
            error::REBALANCE_IN_PROGRESS
        );
        let mut rejoined = later(coordinator.join(JOIN, ask(&leader, b"a"), t0));
        let answer = received(&mut rejoined).expect("every member rejoined");
        let new = received(&mut new_join).expect("answered with the rest");
        assert_eq!((answer.generation, new.generation), (3, 3));
        let mut members: Vec<_> = answer.members.iter().map(|m| m.0.clone()).collect();
        members.sort();
        let mut expected = vec![leader, new.member_id];
        expected.sort();
        assert_eq!(members, expected, "the old member id is gone");
    }

    #[test]
    fn a_static_members_join_whose_connection_is_gone_keeps_its_place() {
        let t0 = Instant::now();
        let mut coordinator = Coordinator::new(Duration::ZERO);
        let leader = stable_group(&mut coordinator, t0);
        // Kafka keeps a static member until its session ends: its client
        // rejoins as its instance, whatever member id it was given.
        drop(later(coordinator.join(JOIN, static_ask("", "i1"), t0)));
        let mut rejoined = later(coordinator.join(JOIN, ask(&leader, b"a"), t0));
        assert!(
            received(&mut rejoined).is_none(),
            "the static member is waited for"
        );
        let mut again = later(coordinator.join(JOIN, static_ask("", "i1"), t0));
        let answer = received(&mut rejoined).expect("every member rejoined");
        assert_eq!(answer.members.len(), 2, "{answer:?}");
        assert!(received(&mut again).is_some());
    }

    #[test]
    fn the_protocol_most_members_prefer_is_chosen_as_on_kafka() {
        let t0 = Instant::now();
        // The initial delay gathers all three joins into one generation.
        let delay = Duration::from_secs(3);
        let mut coordinator = Coordinator::new(delay);
        let offering = |names: [&str; 2]| {
            let mut member = ask("", b"m");
            member.protocols = names.iter().map(|n| ((*n).into(), Vec::new())).collect();
            member
        };
        let mut leader = later(coordinator.join(JOIN, offering(["range", "roundrobin"]), t0));
        let _second = later(coordinator.join(JOIN, offering(["roundrobin", "range"]), t0));
        let _third = later(coordinator.join(JOIN, offering(["roundrobin", "range"]), t0));
        coordinator.tick("g", t0 + delay);
        let answer = received(&mut leader).expect("the rebalance ends after the delay");
        assert_eq!(answer.members.len(), 3, "{answer:?}");
        assert_eq!(answer.protocol, "roundrobin", "two votes to one");
    }

    #[test]
    fn members_without_a_common_protocol_are_refused() {
        let t0 = Instant::now();
        let mut coordinator = Coordinator::new(Duration::ZERO);
        stable_group(&mut coordinator, t0);
        let mut other = ask("", b"b");
        other.protocols = vec![("roundrobin".into(), Vec::new())];
        let refused = now_answer(coordinator.join(JOIN, other, t0));
        assert_eq!(refused.error, error::INCONSISTENT_GROUP_PROTOCOL);
        // Each member shares a protocol with the joiner, but none shares
        // the same one: no protocol would serve the whole group.
        let offering = |names: [&str; 2]| {
            let mut member = ask("", b"m");
            member.group = "h".into();
            member.protocols = names.iter().map(|n| ((*n).into(), Vec::new())).collect();
            member
        };
        let _first = later(coordinator.join(JOIN, offering(["range", "sticky"]), t0));
        let _second = later(coordinator.join(JOIN, offering(["sticky", "roundrobin"]), t0));
        let refused = now_answer(coordinator.join(JOIN, offering(["range", "roundrobin"]), t0));
        assert_eq!(refused.error, error::INCONSISTENT_GROUP_PROTOCOL);
        let mut unknown = ask("ghost", b"b");
        unknown.group = "g".into();
        assert_eq!(
            now_answer(coordinator.join(JOIN, unknown, t0)).error,
            error::UNKNOWN_MEMBER_ID
        );
    }
}
