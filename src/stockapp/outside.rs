//! Other programs in a run: after the run's own services are done, wait
//! for the consumer groups of other programs to catch up on what the run
//! wrote, and for their spans to stop arriving, each within one deadline.
//!
//! A group is waited for when it is not one of the run's own and
//! - the user named it ([`OutsideWait::group`]), or
//! - a span received from another program names it as its consumer
//!   group (`messaging.consumer.group.name`, or the 1.24-era
//!   `messaging.kafka.consumer.group`), or
//! - the broker lists it (ListGroups, as `kafka-consumer-groups --list`
//!   does), has members, and has committed an offset on a topic the run
//!   wrote. The harness's own broker lists groups too: librdkafka's mock
//!   cluster cannot, and the broker's front answers for it. A broker that
//!   refuses is said so in [`OutsideReport::listing_error`]; there a group
//!   is found by the first two ways only.
//!
//! A group has caught up when, on every topic the run wrote that it reads
//! (has committed on, or names in its spans), its committed offset is the
//! end offset of every partition (OffsetFetch and ListOffsets, as
//! `kafka-consumer-groups --describe` shows). A group that has not by the
//! deadline is named with its lag, and the wait fails.
//!
//! A query that fails (a broker's hiccup: a timeout, a leader moving) is
//! not an answer: what it would have told is unknown, not zero. A look
//! with a failed query cannot end the wait; the next look asks again, and
//! if the deadline comes first the report names what could not be learnt
//! (which query, about which topic, partition or group, and the error):
//! [`GroupLag::unknown`], [`OutsideReport::unknown`]. A group the broker
//! listed before stays waited for while its listing fails.
//!
//! Spans: with a receiver, the wait also lasts until no span has arrived
//! for a quiet period longer than the OpenTelemetry SDKs' batch delay
//! (5 s by default in every SDK), so that the last batch is not refused by
//! a receiver that closed. The quiet period is waited for when there is
//! something to wait for: a span or an outside group already seen, or the
//! caller expects spans ([`OutsideWait::always_quiet`]; `kafka-trace-harness
//! run` does with `--otlp-receiver`). A run with no receiver, and no
//! outside group, pays nothing.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kafka_trace_harness::Broker;
//! use kafka_trace_harness::stockapp::outside::{OutsideWait, WaitEnd};
//!
//! let broker = Broker::builder().start().await?;
//! let topic = broker.create_unique_topic("rows", 1).await?;
//! // A group named, but no program behind it ever reads: named at the deadline.
//! let report = OutsideWait::new(broker.bootstrap_servers(), [topic.as_str()])
//!     .group("billing-api")
//!     .deadline(Duration::from_millis(300))
//!     .wait(std::future::pending())
//!     .await;
//! assert_eq!(report.end, WaitEnd::Deadline);
//! assert!(report.problems()[0].contains("\"billing-api\" did not catch up"));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// Default of [`OutsideWait::deadline`]: 30 s.
pub const DEFAULT_OUTSIDE_DEADLINE: Duration = Duration::from_secs(30);

/// Default of [`OutsideWait::quiet`]: 6 s, longer than the 5 s batch delay
/// (`OTEL_BSP_SCHEDULE_DELAY`) of the OpenTelemetry SDKs' batch span
/// processors, so that a program still sending has sent again within it.
pub const DEFAULT_OUTSIDE_QUIET: Duration = Duration::from_secs(6);

/// How often the groups and the spans are looked at.
const POLL: Duration = Duration::from_millis(250);

/// Deadline of each request to the broker.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// What the spans of other programs look like so far (from an OTLP
/// receiver's arrivals).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutsideSpans {
    /// Spans received, by service.
    pub by_service: BTreeMap<String, usize>,
    /// When the last arrived: wall clock and monotonic clock.
    pub last_arrival: Option<(SystemTime, Instant)>,
    /// (consumer group, topic) pairs named by received consumer spans.
    pub consumer_groups: BTreeSet<(String, String)>,
}

impl OutsideSpans {
    /// Spans received in all.
    pub fn total(&self) -> usize {
        self.by_service.values().sum()
    }
}

/// Reads the outside spans received so far.
pub type SpansSource = Arc<dyn Fn() -> OutsideSpans + Send + Sync>;

/// Why a group is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupSource {
    /// The user named it.
    Named,
    /// A received span names it.
    Spans,
    /// The broker lists it.
    Listed,
}

/// Where one outside group stands on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLag {
    /// The topic.
    pub topic: String,
    /// Records committed, summed over partitions (from each partition's
    /// log start where nothing is committed).
    pub committed: i64,
    /// End offsets, summed over partitions.
    pub end: i64,
    /// Records not yet committed: end − committed, summed over partitions.
    pub lag: i64,
}

/// Where one outside group stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    /// The group id.
    pub group: String,
    /// Why it is waited for.
    pub source: GroupSource,
    /// The run's topics it reads (over the partitions whose offsets are
    /// known).
    pub topics: Vec<TopicLag>,
    /// What the last look could not learn about it, one line each (the
    /// query, what it was about, the error): its committed offsets, the
    /// end offsets of a partition it reads, the partitions of a topic it
    /// may read. While any is unknown it has not caught up.
    pub unknown: Vec<String>,
}

impl GroupLag {
    /// Committed up to the end of every topic it reads, it reads one, and
    /// nothing about it is unknown.
    pub fn caught_up(&self) -> bool {
        !self.topics.is_empty() && self.unknown.is_empty() && self.topics.iter().all(|t| t.lag == 0)
    }

    /// Behind where it is known (some lag, or nothing committed), as
    /// opposed to only not known to have caught up.
    fn known_behind(&self) -> bool {
        self.topics.iter().any(|t| t.lag > 0) || (self.topics.is_empty() && self.unknown.is_empty())
    }

    /// Records not yet committed, over its topics.
    pub fn lag(&self) -> i64 {
        self.topics.iter().map(|t| t.lag).sum()
    }

    /// "lag 12 on stockapp.dollarsbyzip (committed 3 of 15)", or that it
    /// committed nothing on the run's topics; then what could not be
    /// learnt, if anything ("; could not learn the end offsets of …").
    pub fn describe(&self) -> String {
        let known = if self.topics.is_empty() {
            if self.unknown.is_empty() {
                return "has committed no offset on a topic this run wrote".to_owned();
            }
            None
        } else {
            Some(
                self.topics
                    .iter()
                    .map(|t| {
                        format!(
                            "lag {} on {} (committed {} of {})",
                            t.lag, t.topic, t.committed, t.end
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        let unknown = (!self.unknown.is_empty())
            .then(|| format!("could not learn {}", self.unknown.join(", ")));
        known
            .into_iter()
            .chain(unknown)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// How the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// Nothing to wait for, or everything caught up and quiet.
    Done,
    /// The deadline passed first.
    Deadline,
    /// The caller stopped it (Ctrl-C).
    Stopped,
}

/// What the wait for other programs found.
#[derive(Debug, Clone)]
pub struct OutsideReport {
    /// Every outside group waited for, as last seen.
    pub groups: Vec<GroupLag>,
    /// Why the broker does not list its groups, if it refuses to (it does
    /// not support ListGroups, or does not allow it): groups are then found
    /// by name and by spans only. A listing that failed otherwise is
    /// retried on the next look, and is in [`unknown`](Self::unknown) if it
    /// still failed at the end.
    pub listing_error: Option<String>,
    /// What the last look could not learn beyond each group's own
    /// ([`GroupLag::unknown`]), one line each: the broker's groups
    /// (ListGroups failed), or the look itself. The wait does not end
    /// [`WaitEnd::Done`] while anything is unknown.
    pub unknown: Vec<String>,
    /// Outside spans received (`None` without a receiver).
    pub spans: Option<OutsideSpans>,
    /// Whether the quiet period applied.
    pub quiet_applied: bool,
    /// How long before the end of the wait the last outside span arrived.
    pub last_span_age: Option<Duration>,
    /// The quiet period.
    pub quiet: Duration,
    /// The deadline.
    pub deadline: Duration,
    /// How long the wait took.
    pub waited: Duration,
    /// How it ended.
    pub end: WaitEnd,
}

impl OutsideReport {
    /// Every outside group caught up and, if the quiet period applied,
    /// spans stopped arriving: nothing was left behind.
    pub fn is_complete(&self) -> bool {
        self.end == WaitEnd::Done
    }

    /// What was left behind, one line each: groups that did not catch up
    /// (named, with their lag and what could not be learnt about them),
    /// what else could not be learnt, and spans still arriving.
    pub fn problems(&self) -> Vec<String> {
        if self.end == WaitEnd::Done {
            return Vec::new();
        }
        let why = match self.end {
            WaitEnd::Stopped => "before the run was stopped".to_owned(),
            _ => format!("within --outside-deadline {}", seconds(self.deadline)),
        };
        let mut problems: Vec<String> = self
            .groups
            .iter()
            .filter(|g| !g.caught_up())
            .map(|g| {
                format!(
                    "outside consumer group {:?} {} {why}: {}",
                    g.group,
                    if g.known_behind() {
                        "did not catch up"
                    } else {
                        "was not seen to catch up"
                    },
                    g.describe()
                )
            })
            .collect();
        problems.extend(self.unknown.iter().map(|what| {
            format!("could not learn {what} {why}: a group of another program may be behind")
        }));
        if self.quiet_applied
            && let Some(age) = self.last_span_age
            && age < self.quiet
        {
            problems.push(format!(
                "outside spans were still arriving {why} (the last {} before, less than \
                 --outside-quiet {}): later ones are refused",
                seconds(age),
                seconds(self.quiet)
            ));
        }
        if problems.is_empty() {
            problems.push(format!("the wait for other programs did not end {why}"));
        }
        problems
    }

    /// The summary's lines on other programs; empty when there were none.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let spans = self.spans.as_ref().filter(|s| s.total() > 0);
        if self.groups.is_empty()
            && self.unknown.is_empty()
            && spans.is_none()
            && !self.quiet_applied
        {
            return out;
        }
        let _ = writeln!(
            out,
            "other programs   waited {} for them (deadline {}{})",
            seconds(self.waited),
            seconds(self.deadline),
            if self.quiet_applied {
                format!(", until no span for {}", seconds(self.quiet))
            } else {
                String::new()
            }
        );
        for group in &self.groups {
            let state = if group.caught_up() {
                "caught up"
            } else if group.known_behind() {
                "NOT caught up"
            } else {
                "NOT known to have caught up"
            };
            let _ = writeln!(
                out,
                "  group {:<16} {state}: {} ({})",
                group.group,
                group.describe(),
                match group.source {
                    GroupSource::Named => "named by --outside-group",
                    GroupSource::Spans => "named by its spans",
                    GroupSource::Listed => "listed by the broker",
                }
            );
        }
        for what in &self.unknown {
            let _ = writeln!(out, "  not learnt       {what}");
        }
        if let Some(spans) = spans {
            for (service, count) in &spans.by_service {
                let _ = writeln!(out, "  spans {service:<16} {count} received over OTLP");
            }
            if let (Some((wall, _)), Some(age)) = (spans.last_arrival, self.last_span_age) {
                let _ = writeln!(
                    out,
                    "  last span        arrived at {}, {} before the wait ended",
                    chrono::DateTime::<chrono::Utc>::from(wall).format("%H:%M:%S%.3f UTC"),
                    seconds(age)
                );
            }
        }
        out
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Settings of the wait for other programs; see [the module](self).
#[must_use]
pub struct OutsideWait {
    bootstrap: String,
    topics: Vec<String>,
    own_groups: BTreeSet<String>,
    named: Vec<String>,
    deadline: Duration,
    quiet: Duration,
    always_quiet: bool,
    list_groups: bool,
    spans: Option<SpansSource>,
}

impl std::fmt::Debug for OutsideWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutsideWait")
            .field("bootstrap", &self.bootstrap)
            .field("topics", &self.topics)
            .field("named", &self.named)
            .field("deadline", &self.deadline)
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl OutsideWait {
    /// A wait on the broker at `bootstrap` for groups reading `topics` (the
    /// topics the run wrote); default deadline and quiet period, no span
    /// source.
    pub fn new<'t>(
        bootstrap: impl Into<String>,
        topics: impl IntoIterator<Item = &'t str>,
    ) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            topics: topics.into_iter().map(str::to_owned).collect(),
            own_groups: BTreeSet::new(),
            named: Vec::new(),
            deadline: DEFAULT_OUTSIDE_DEADLINE,
            quiet: DEFAULT_OUTSIDE_QUIET,
            always_quiet: false,
            list_groups: true,
            spans: None,
        }
    }

    /// Groups that are the run's own, never waited for.
    pub fn own_groups(mut self, groups: impl IntoIterator<Item = String>) -> Self {
        self.own_groups.extend(groups);
        self
    }

    /// A group to wait for, whether or not the broker can list it.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.named.push(group.into());
        self
    }

    /// How long the whole wait may take. Default
    /// [`DEFAULT_OUTSIDE_DEADLINE`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How long no span may have arrived before the spans count as all
    /// in. Default [`DEFAULT_OUTSIDE_QUIET`].
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// Wait for the quiet period even when no outside span or group has
    /// been seen yet (a program that starts late).
    pub fn always_quiet(mut self, always: bool) -> Self {
        self.always_quiet = always;
        self
    }

    /// Whether to ask the broker for its groups (ListGroups). Default
    /// true, on every backend (the embedded broker's front answers for
    /// librdkafka's mock cluster); false for a broker that refuses it, or
    /// to spare a run that expects no other program a client.
    pub fn list_groups(mut self, list: bool) -> Self {
        self.list_groups = list;
        self
    }

    /// Where the outside spans are counted (an OTLP receiver's arrivals).
    pub fn spans(mut self, source: SpansSource) -> Self {
        self.spans = Some(source);
        self
    }

    /// Waits until every outside group caught up and, with spans, no span
    /// arrived for the quiet period, or the deadline passed, or `stop`
    /// resolved. A look whose queries failed does not end it: it looks
    /// again until the deadline.
    pub async fn wait(self, stop: impl std::future::Future<Output = ()>) -> OutsideReport {
        let started = Instant::now();
        let until = started + self.deadline;
        let settings = Arc::new(self);
        let mut probe: Option<GroupProbe> = None;
        let mut listing_error = None;
        // As last seen: a look that learnt nothing keeps the previous ones.
        let mut groups: Vec<GroupLag> = Vec::new();
        tokio::pin!(stop);
        loop {
            let spans = settings.spans.as_ref().map(|source| source());
            let span_groups = spans
                .as_ref()
                .map(|s| s.consumer_groups.clone())
                .unwrap_or_default();
            let anything_to_ask =
                settings.list_groups || !settings.named.is_empty() || !span_groups.is_empty();
            let looked = if !anything_to_ask {
                Ok((
                    None,
                    Look {
                        groups: Vec::new(),
                        listing_error: None,
                        unknown: Vec::new(),
                    },
                ))
            } else {
                let settings = Arc::clone(&settings);
                let mut taken = probe.take();
                tokio::task::spawn_blocking(move || {
                    let probe = match taken.take() {
                        Some(probe) => probe,
                        None => GroupProbe::new(&settings.bootstrap, settings.list_groups)
                            .map_err(|e| format!("the outside groups ({e})"))?,
                    };
                    let mut probe = probe;
                    let look = probe.look(&settings, &span_groups);
                    Ok::<_, String>((Some(probe), look))
                })
                .await
                .map_err(|e| format!("the outside groups (the look at them failed: {e})"))
                .and_then(|r| r)
            };
            let unknown = match looked {
                Ok((kept, look)) => {
                    probe = kept;
                    groups = look.groups;
                    if listing_error.is_none() {
                        listing_error = look.listing_error;
                    }
                    look.unknown
                }
                // Nothing learnt: not that nothing is outside.
                Err(e) => vec![e],
            };
            let quiet_applied = spans.is_some()
                && (settings.always_quiet
                    || spans.as_ref().is_some_and(|s| s.total() > 0)
                    || !groups.is_empty());
            let quiet_since = spans
                .as_ref()
                .and_then(|s| s.last_arrival)
                .map_or(started, |(_, at)| at.max(started));
            let quiet = !quiet_applied || quiet_since.elapsed() >= settings.quiet;
            let caught_up = unknown.is_empty() && groups.iter().all(GroupLag::caught_up);
            let now = Instant::now();
            let end = if caught_up && quiet {
                Some(WaitEnd::Done)
            } else if now >= until {
                Some(WaitEnd::Deadline)
            } else {
                None
            };
            let report = |end| OutsideReport {
                groups: groups.clone(),
                listing_error: listing_error.clone(),
                unknown: unknown.clone(),
                spans: spans.clone(),
                quiet_applied,
                last_span_age: spans
                    .as_ref()
                    .and_then(|s| s.last_arrival)
                    .map(|(_, at)| at.elapsed()),
                quiet: settings.quiet,
                deadline: settings.deadline,
                waited: started.elapsed(),
                end,
            };
            if let Some(end) = end {
                drop_probe(probe);
                return report(end);
            }
            // A poll interval, not synchronisation: each round looks again.
            let pause = POLL.min(until.saturating_duration_since(now));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = &mut stop => {
                    drop_probe(probe);
                    return report(WaitEnd::Stopped);
                }
            }
        }
    }
}

/// librdkafka clients close with blocking calls: off the async threads.
fn drop_probe(probe: Option<GroupProbe>) {
    if let Some(probe) = probe {
        tokio::task::spawn_blocking(move || drop(probe));
    }
}

/// One look at the groups.
struct Look {
    groups: Vec<GroupLag>,
    /// The broker refuses to list its groups (and is not asked again).
    listing_error: Option<String>,
    /// What this look could not learn beyond each group's own.
    unknown: Vec<String>,
}

/// Whether a failed ListGroups means the broker will not list groups at
/// all (it does not support the request, or does not allow it), as opposed
/// to a failure worth asking again (a timeout, a connection lost).
fn refuses_listing(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

/// librdkafka clients asking the broker about groups: one to list groups
/// and read end offsets, one per group to fetch its committed offsets
/// (OffsetFetch is asked as the group, without joining it).
struct GroupProbe {
    bootstrap: String,
    admin: BaseConsumer,
    by_group: BTreeMap<String, BaseConsumer>,
    can_list: bool,
    /// The groups the last listing that answered waited for.
    listed: BTreeSet<String>,
}

fn consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("log_level", "0")
        .create()
        .map_err(|e| format!("a client of {bootstrap} for group {group:?}: {e}"))
}

/// One partition of a topic the run wrote: its log start and end offsets,
/// or why they are not known.
struct PartitionEnds {
    topic: String,
    partition: i32,
    ends: Result<(i64, i64), String>,
}

/// A group's committed offsets, where it has one, and what could not be
/// learnt of them.
#[derive(Default)]
struct Committed {
    offsets: BTreeMap<(String, i32), i64>,
    unknown: Vec<String>,
}

impl GroupProbe {
    fn new(bootstrap: &str, settings_list: bool) -> Result<Self, String> {
        Ok(Self {
            bootstrap: bootstrap.to_owned(),
            admin: ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("log_level", "0")
                .create()
                .map_err(|e| format!("a client of {bootstrap}: {e}"))?,
            by_group: BTreeMap::new(),
            can_list: settings_list,
            listed: BTreeSet::new(),
        })
    }

    fn look(&mut self, settings: &OutsideWait, span_groups: &BTreeSet<(String, String)>) -> Look {
        let mut listing_error = None;
        let mut unknown = Vec::new();
        // Which groups, and why: the first reason wins (named, spans, listed).
        let mut wanted: BTreeMap<String, (GroupSource, BTreeSet<String>)> = BTreeMap::new();
        for group in &settings.named {
            wanted
                .entry(group.clone())
                .or_insert((GroupSource::Named, BTreeSet::new()));
        }
        for (group, topic) in span_groups {
            let entry = wanted
                .entry(group.clone())
                .or_insert((GroupSource::Spans, BTreeSet::new()));
            if settings.topics.contains(topic) {
                entry.1.insert(topic.clone());
            }
        }
        if self.can_list {
            match self.admin.fetch_group_list(None, REQUEST_DEADLINE) {
                Ok(list) => {
                    self.listed.clear();
                    for info in list.groups() {
                        // A group with no member (a past run's, say) reads
                        // nothing now: waiting for it would only time out.
                        let active = !matches!(info.state(), "Empty" | "Dead");
                        let consumer =
                            info.protocol_type() == "consumer" || info.protocol_type().is_empty();
                        if active && consumer {
                            self.listed.insert(info.name().to_owned());
                        }
                    }
                }
                Err(e) if refuses_listing(&e) => {
                    self.can_list = false;
                    self.listed.clear();
                    listing_error = Some(format!(
                        "the broker at {} does not list its consumer groups ({e}); name the \
                         groups of other programs with --outside-group",
                        self.bootstrap
                    ));
                }
                Err(e) => {
                    // Unknown this time, asked again next time; the groups
                    // it listed before may still be reading.
                    unknown.push(format!(
                        "the consumer groups of the broker at {} (ListGroups: {e})",
                        self.bootstrap
                    ));
                }
            }
            for group in &self.listed {
                wanted
                    .entry(group.clone())
                    .or_insert((GroupSource::Listed, BTreeSet::new()));
            }
        }
        wanted.retain(|group, _| !settings.own_groups.contains(group));
        if wanted.is_empty() {
            // Nothing outside: a run without other programs asks no more.
            return Look {
                groups: Vec::new(),
                listing_error,
                unknown,
            };
        }

        // Partitions and end offsets of the run's topics.
        let mut partitions = Vec::new();
        let mut topics_unknown = Vec::new();
        for topic in &settings.topics {
            match self.partitions(topic) {
                Ok(ids) => partitions.extend(ids.into_iter().map(|partition| PartitionEnds {
                    topic: topic.clone(),
                    partition,
                    ends: self
                        .admin
                        .fetch_watermarks(topic, partition, REQUEST_DEADLINE)
                        .map_err(|e| {
                            format!("the end offsets of {topic} partition {partition} (ListOffsets: {e})")
                        }),
                })),
                Err(e) => topics_unknown.push(e),
            }
        }

        let committed = wanted
            .keys()
            .map(|group| (group.clone(), self.committed(group, &partitions)))
            .collect();
        Look {
            groups: lags(wanted, &partitions, &topics_unknown, committed),
            listing_error,
            unknown,
        }
    }

    /// The partitions of `topic`: none if the broker says there is no such
    /// topic (nothing was written there to read).
    fn partitions(&self, topic: &str) -> Result<Vec<i32>, String> {
        let metadata = self
            .admin
            .fetch_metadata(Some(topic), REQUEST_DEADLINE)
            .map_err(|e| format!("the partitions of {topic} (Metadata: {e})"))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(format!(
                "the partitions of {topic} (Metadata: the answer did not name the topic)"
            ));
        };
        match found.error().map(RDKafkaErrorCode::from) {
            None => Ok(found.partitions().iter().map(|p| p.id()).collect()),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(Vec::new()),
            Some(code) => Err(format!("the partitions of {topic} (Metadata: {code})")),
        }
    }

    /// `group`'s committed offsets on `partitions`, where it has one.
    fn committed(&mut self, group: &str, partitions: &[PartitionEnds]) -> Committed {
        let mut out = Committed::default();
        if partitions.is_empty() {
            return out;
        }
        if !self.by_group.contains_key(group) {
            match consumer(&self.bootstrap, group) {
                Ok(c) => {
                    self.by_group.insert(group.to_owned(), c);
                }
                Err(e) => {
                    out.unknown.push(format!("its committed offsets ({e})"));
                    return out;
                }
            }
        }
        let Some(client) = self.by_group.get(group) else {
            return out;
        };
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition(&p.topic, p.partition);
        }
        match client.committed_offsets(list, REQUEST_DEADLINE) {
            Ok(committed) => {
                for element in committed.elements() {
                    if let Err(e) = element.error() {
                        out.unknown.push(format!(
                            "its committed offset on {} partition {} (OffsetFetch: {e})",
                            element.topic(),
                            element.partition()
                        ));
                    } else if let Offset::Offset(offset) = element.offset() {
                        out.offsets
                            .insert((element.topic().to_owned(), element.partition()), offset);
                    }
                }
            }
            Err(e) => out
                .unknown
                .push(format!("its committed offsets (OffsetFetch: {e})")),
        }
        out
    }
}

/// Where each wanted group stands, from what one look learnt: the run's
/// topics' `partitions` (each with its offsets or why they are not known),
/// the topics whose partitions are not known, and each group's committed
/// offsets. What was not learnt is the group's [`GroupLag::unknown`], never
/// a lag of zero.
fn lags(
    wanted: BTreeMap<String, (GroupSource, BTreeSet<String>)>,
    partitions: &[PartitionEnds],
    topics_unknown: &[String],
    mut committed: BTreeMap<String, Committed>,
) -> Vec<GroupLag> {
    let mut groups = Vec::new();
    for (group, (source, span_topics)) in wanted {
        let Committed {
            offsets,
            unknown: committed_unknown,
        } = committed.remove(&group).unwrap_or_default();
        let reads: BTreeSet<&str> = partitions
            .iter()
            .filter(|p| {
                span_topics.contains(&p.topic)
                    || offsets.contains_key(&(p.topic.clone(), p.partition))
            })
            .map(|p| p.topic.as_str())
            .collect();
        // Any topic whose partitions are unknown it may read; of those it
        // reads, any partition whose offsets are unknown.
        let mut unknown: Vec<String> = topics_unknown.to_vec();
        unknown.extend(committed_unknown);
        unknown.extend(
            partitions
                .iter()
                .filter(|p| reads.contains(p.topic.as_str()))
                .filter_map(|p| p.ends.as_ref().err().cloned()),
        );
        if reads.is_empty() && unknown.is_empty() && source != GroupSource::Named {
            // A group that reads nothing the run wrote (its spans name
            // other topics, or the broker lists it for other topics).
            continue;
        }
        let topics = reads
            .into_iter()
            .filter_map(|topic| {
                let mut lag = TopicLag {
                    topic: topic.to_owned(),
                    committed: 0,
                    end: 0,
                    lag: 0,
                };
                let mut known = false;
                for p in partitions.iter().filter(|p| p.topic == topic) {
                    let Ok((low, high)) = p.ends else { continue };
                    known = true;
                    let at = offsets
                        .get(&(topic.to_owned(), p.partition))
                        .copied()
                        .unwrap_or(low)
                        .min(high);
                    lag.committed += at;
                    lag.end += high;
                    lag.lag += high - at;
                }
                known.then_some(lag)
            })
            .collect();
        groups.push(GroupLag {
            group,
            source,
            topics,
            unknown,
        });
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(topic: &str, committed: i64, end: i64) -> TopicLag {
        TopicLag {
            topic: topic.to_owned(),
            committed,
            end,
            lag: end - committed,
        }
    }

    #[test]
    fn a_group_caught_up_reads_a_topic_to_its_end() {
        let mut group = GroupLag {
            group: "go-api".into(),
            source: GroupSource::Named,
            topics: vec![],
            unknown: vec![],
        };
        assert!(
            !group.caught_up(),
            "a group reading nothing has not caught up"
        );
        assert_eq!(
            group.describe(),
            "has committed no offset on a topic this run wrote"
        );
        group.topics = vec![lag("rows", 3, 15)];
        assert!(!group.caught_up());
        assert_eq!(group.lag(), 12);
        assert_eq!(group.describe(), "lag 12 on rows (committed 3 of 15)");
        group.topics = vec![lag("rows", 15, 15)];
        assert!(group.caught_up());
        group.unknown = vec!["the end offsets of rows partition 1 (ListOffsets: down)".into()];
        assert!(
            !group.caught_up(),
            "a group with a partition not known has not caught up"
        );
        assert_eq!(
            group.describe(),
            "lag 0 on rows (committed 15 of 15); could not learn the end offsets of rows \
             partition 1 (ListOffsets: down)"
        );
    }

    fn ends(topic: &str, partition: i32, ends: Result<(i64, i64), &str>) -> PartitionEnds {
        PartitionEnds {
            topic: topic.to_owned(),
            partition,
            ends: ends.map_err(str::to_owned),
        }
    }

    fn wanted(
        group: &str,
        source: GroupSource,
    ) -> BTreeMap<String, (GroupSource, BTreeSet<String>)> {
        [(group.to_owned(), (source, BTreeSet::new()))].into()
    }

    fn committed(group: &str, offsets: &[(&str, i32, i64)]) -> BTreeMap<String, Committed> {
        let offsets = offsets
            .iter()
            .map(|&(topic, partition, offset)| ((topic.to_owned(), partition), offset))
            .collect();
        [(
            group.to_owned(),
            Committed {
                offsets,
                unknown: vec![],
            },
        )]
        .into()
    }

    #[test]
    fn end_offsets_not_learnt_are_unknown_not_a_lag_of_zero() {
        // Committed 1 on partition 0, whose end offsets a failed ListOffsets
        // did not tell; partition 1 is known and caught up.
        let groups = lags(
            wanted("billing", GroupSource::Listed),
            &[
                ends(
                    "rows",
                    0,
                    Err("the end offsets of rows partition 0 (ListOffsets: down)"),
                ),
                ends("rows", 1, Ok((0, 4))),
            ],
            &[],
            committed("billing", &[("rows", 0, 1), ("rows", 1, 4)]),
        );
        assert_eq!(groups.len(), 1);
        assert!(!groups[0].caught_up(), "{groups:?}");
        assert_eq!(
            groups[0].describe(),
            "lag 0 on rows (committed 4 of 4); could not learn the end offsets of rows \
             partition 0 (ListOffsets: down)"
        );
        let report = OutsideReport {
            groups,
            ..report(WaitEnd::Deadline, vec![])
        };
        assert_eq!(
            report.problems(),
            [
                "outside consumer group \"billing\" was not seen to catch up within \
              --outside-deadline 2.0 s: lag 0 on rows (committed 4 of 4); could not learn the \
              end offsets of rows partition 0 (ListOffsets: down)"
            ]
        );
        assert!(
            report
                .render()
                .contains("billing          NOT known to have caught up"),
            "{}",
            report.render()
        );
    }

    #[test]
    fn a_listed_group_is_kept_while_the_partitions_of_a_topic_are_unknown() {
        // Metadata failed for the only topic: the listed group reads nothing
        // known, but may read it.
        let unknown = ["the partitions of rows (Metadata: timed out)".to_owned()];
        let groups = lags(
            wanted("billing", GroupSource::Listed),
            &[],
            &unknown,
            committed("billing", &[]),
        );
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert!(!groups[0].caught_up());
        assert_eq!(
            groups[0].describe(),
            "could not learn the partitions of rows (Metadata: timed out)"
        );
        // Known to read nothing of the run's: not waited for, as before.
        assert!(
            lags(
                wanted("billing", GroupSource::Listed),
                &[],
                &[],
                committed("billing", &[])
            )
            .is_empty()
        );
    }

    #[test]
    fn committed_offsets_not_learnt_keep_a_group_that_reads_nothing_known() {
        let mut failed = committed("billing", &[]);
        failed.get_mut("billing").unwrap().unknown =
            vec!["its committed offsets (OffsetFetch: timed out)".into()];
        let groups = lags(
            wanted("billing", GroupSource::Listed),
            &[ends("rows", 0, Ok((0, 3)))],
            &[],
            failed,
        );
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert!(!groups[0].caught_up());
        assert_eq!(
            groups[0].describe(),
            "could not learn its committed offsets (OffsetFetch: timed out)"
        );
    }

    #[test]
    fn what_else_was_not_learnt_is_a_problem_and_is_shown() {
        let mut report = report(WaitEnd::Deadline, vec![]);
        report.unknown =
            vec!["the consumer groups of the broker at b:9092 (ListGroups: timed out)".into()];
        assert_eq!(
            report.problems(),
            [
                "could not learn the consumer groups of the broker at b:9092 (ListGroups: timed \
              out) within --outside-deadline 2.0 s: a group of another program may be behind"
            ]
        );
        assert!(
            report
                .render()
                .contains("not learnt       the consumer groups of the broker at b:9092"),
            "{}",
            report.render()
        );
    }

    fn report(end: WaitEnd, groups: Vec<GroupLag>) -> OutsideReport {
        OutsideReport {
            groups,
            listing_error: None,
            unknown: vec![],
            spans: None,
            quiet_applied: false,
            last_span_age: None,
            quiet: DEFAULT_OUTSIDE_QUIET,
            deadline: Duration::from_secs(2),
            waited: Duration::from_secs(2),
            end,
        }
    }

    #[test]
    fn a_late_group_is_named_with_its_lag() {
        let slow = GroupLag {
            group: "slow".into(),
            source: GroupSource::Named,
            topics: vec![lag("rows", 1, 9)],
            unknown: vec![],
        };
        let report = report(WaitEnd::Deadline, vec![slow]);
        assert!(!report.is_complete());
        assert_eq!(
            report.problems(),
            [
                "outside consumer group \"slow\" did not catch up within --outside-deadline \
                 2.0 s: lag 8 on rows (committed 1 of 9)"
            ]
        );
        assert!(
            report.render().contains("group slow"),
            "{}",
            report.render()
        );
    }

    #[test]
    fn nothing_outside_prints_nothing() {
        let report = report(WaitEnd::Done, vec![]);
        assert!(report.is_complete());
        assert!(report.problems().is_empty());
        assert_eq!(report.render(), "");
    }

    #[test]
    fn spans_still_arriving_at_the_deadline_are_a_problem_and_the_last_is_dated() {
        let mut report = report(WaitEnd::Deadline, vec![]);
        report.quiet_applied = true;
        report.last_span_age = Some(Duration::from_millis(1500));
        report.spans = Some(OutsideSpans {
            by_service: [("go-api".to_owned(), 12)].into(),
            last_arrival: Some((SystemTime::UNIX_EPOCH, Instant::now())),
            consumer_groups: BTreeSet::new(),
        });
        assert_eq!(
            report.problems(),
            [
                "outside spans were still arriving within --outside-deadline 2.0 s (the last \
                 1.5 s before, less than --outside-quiet 6.0 s): later ones are refused"
            ]
        );
        let text = report.render();
        assert!(
            text.contains("spans go-api           12 received over OTLP"),
            "{text}"
        );
        assert!(
            text.contains(
                "last span        arrived at 00:00:00.000 UTC, 1.5 s before the wait ended"
            ),
            "{text}"
        );
    }
}
