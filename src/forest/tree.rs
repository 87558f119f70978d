//! A span forest built from captured spans: traces, roots, parents,
//! children, links (resolved across traces too), lookups, and the
//! structural problems a broken propagation leaves behind.

use std::cell::OnceCell;
use std::fmt;
use std::ops::Range;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceId};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use rustc_hash::FxHashMap;

/// One finished span and the service (`service.name`) that recorded it.
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    /// The `service.name` of the provider that recorded the span.
    pub service: String,
    /// The span as the SDK exported it.
    pub data: SpanData,
}

/// A structural problem in a [`SpanForest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The span names a parent that was never captured: the context was
    /// lost or came from a process the test does not capture.
    Orphan {
        /// Index of the span in the forest.
        span: usize,
        /// `name (service)` of the span.
        label: String,
        /// The parent span id it names.
        missing_parent: SpanId,
    },
    /// A link points at a span that was never captured.
    DanglingLink {
        /// Index of the span holding the link.
        span: usize,
        /// `name (service)` of the span.
        label: String,
        /// The link's target.
        target: (TraceId, SpanId),
    },
    /// A trace has more than one root span.
    SeveralRoots {
        /// The trace.
        trace: TraceId,
        /// `name (service)` of every root.
        roots: Vec<String>,
    },
    /// The span's parent id names a span of another trace: the trace id
    /// and the span id travelled separately.
    WrongTrace {
        /// Index of the span in the forest.
        span: usize,
        /// `name (service)` of the span.
        label: String,
        /// `name (service)` of the span its parent id names.
        parent_label: String,
    },
    /// Several spans of one trace have the same span id, so a child or a
    /// link naming that id is ambiguous: the forest resolves it to the
    /// first one captured. Ids are random, so a repeat means one was
    /// copied or set by hand (e.g. two services given the same fixed id).
    DuplicateSpanId {
        /// The trace.
        trace: TraceId,
        /// The shared span id.
        span_id: SpanId,
        /// Index of every span with that id, in capture order (at least 2).
        spans: Vec<usize>,
        /// `name (service)` of each, in the same order.
        labels: Vec<String>,
    },
    /// Following parents from these spans comes back to where it started
    /// (a span may even name itself): ids were reused or forged.
    ///
    /// So that every span can still be walked and rendered, the forest
    /// cuts the cycle at its first span (the least by name, then service,
    /// then capture order): that span has no [`parent`](SpanView::parent)
    /// and counts among the roots.
    ParentCycle {
        /// The trace.
        trace: TraceId,
        /// Index of each span of the cycle, starting where it is cut; each
        /// span names the next one as parent, and the last names the first.
        spans: Vec<usize>,
        /// `name (service)` of each, in the same order.
        labels: Vec<String>,
    },
    /// Every span of the trace names a captured parent, so the trace has
    /// no root: its parents form at least one [`ParentCycle`](Self::ParentCycle).
    NoRoot {
        /// The trace.
        trace: TraceId,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Orphan {
                label,
                missing_parent,
                ..
            } => write!(
                f,
                "orphan: {label} names parent {missing_parent}, never captured"
            ),
            Self::DanglingLink { label, target, .. } => write!(
                f,
                "dangling link: {label} links to span {} of trace {}, never captured",
                target.1, target.0
            ),
            Self::SeveralRoots { trace, roots } => {
                write!(
                    f,
                    "trace {trace} has {} roots: {}",
                    roots.len(),
                    roots.join(", ")
                )
            }
            Self::WrongTrace {
                label,
                parent_label,
                ..
            } => write!(
                f,
                "wrong trace: {label} names {parent_label} as parent, but that span is in another trace"
            ),
            Self::DuplicateSpanId {
                trace,
                span_id,
                labels,
                ..
            } => write!(
                f,
                "duplicate span id: {} spans of trace {trace} have id {span_id} ({}); \
                 children and links resolve to the first",
                labels.len(),
                labels.join(", ")
            ),
            Self::ParentCycle { trace, labels, .. } => {
                write!(f, "parent cycle in trace {trace}: ")?;
                for label in labels {
                    write!(f, "{label} → ")?;
                }
                let first = labels.first().map_or("", String::as_str);
                write!(f, "{first} (each names the next as parent)")
            }
            Self::NoRoot { trace } => write!(
                f,
                "trace {trace} has no root: every span names a captured parent"
            ),
        }
    }
}

/// Captured spans arranged as traces of parent/child trees.
///
/// ```
/// use kafka_trace_harness::SpanCapture;
/// use opentelemetry::trace::{Tracer, TraceContextExt, SpanKind};
///
/// let capture = SpanCapture::new();
/// let tracer = capture.tracer("api");
/// tracer.in_span("parent", |cx| {
///     tracer.start_with_context("child", &cx);
/// });
///
/// let forest = capture.forest();
/// assert_eq!(forest.traces().len(), 1);
/// let parent = forest.named("parent").next().unwrap();
/// assert_eq!(parent.children().next().unwrap().name(), "child");
/// assert_eq!(parent.service(), "api");
/// assert!(forest.problems().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct SpanForest {
    spans: Vec<CapturedSpan>,
    parent: Vec<Option<usize>>,
    /// Children of each span, in capture order.
    children: Lists<usize>,
    /// Resolved link targets of each span, in link order.
    links: Lists<Option<usize>>,
    /// Ordered by trace id (as a number: `TraceId` is not `Ord`); each
    /// trace's members sit in `trace_members[range]`, in capture order.
    traces: Vec<(u128, Range<usize>)>,
    trace_members: Vec<usize>,
    problems: Vec<Problem>,
    /// Spans where a parent cycle was cut, with the parent each names;
    /// sorted by span.
    cycle_cuts: Vec<(usize, usize)>,
}

impl SpanForest {
    /// Builds the forest; spans keep the order given.
    pub fn new(spans: Vec<CapturedSpan>) -> Self {
        let n = spans.len();
        // Ids are random, so a fast non-keyed hash is safe here.
        let mut trace_slot: FxHashMap<TraceId, usize> = FxHashMap::default();
        let mut slot_ids: Vec<TraceId> = Vec::new();
        let mut slot_of = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for span in &spans {
            let context = &span.data.span_context;
            let slot = *trace_slot.entry(context.trace_id()).or_insert_with(|| {
                slot_ids.push(context.trace_id());
                slot_ids.len() - 1
            });
            slot_of.push(slot);
            ids.push(context.span_id());
        }
        let Grouped {
            traces,
            members: trace_members,
            slot_range,
        } = group_by_trace(&slot_ids, &slot_of);
        let index = SpanIndex {
            spans: &spans,
            ids,
            trace_slot,
            slot_range,
            members: &trace_members,
            large: OnceCell::new(),
        };
        let find = |trace: TraceId, id: SpanId| index.find(trace, id);
        // Only needed to tell a wrong-trace parent from a missing one.
        let mut first_with_id: Option<FxHashMap<SpanId, usize>> = None;
        let mut parent = vec![None; n];
        let mut links = Lists::with_capacity(n);
        let mut problems = Vec::new();
        for (i, span) in spans.iter().enumerate() {
            let trace = span.data.span_context.trace_id();
            let parent_id = span.data.parent_span_id;
            if parent_id != SpanId::INVALID {
                if let Some(p) = index.find_in(slot_of[i], trace, parent_id) {
                    parent[i] = Some(p);
                } else {
                    let first = first_with_id
                        .get_or_insert_with(|| first_index_by(&spans, SpanContext::span_id));
                    problems.push(match first.get(&parent_id) {
                        Some(&other) => Problem::WrongTrace {
                            span: i,
                            label: label(span),
                            parent_label: label(&spans[other]),
                        },
                        None => Problem::Orphan {
                            span: i,
                            label: label(span),
                            missing_parent: parent_id,
                        },
                    });
                }
            }
            for link in &span.data.links.links {
                let target = &link.span_context;
                let found = find(target.trace_id(), target.span_id());
                if found.is_none() {
                    problems.push(Problem::DanglingLink {
                        span: i,
                        label: label(span),
                        target: (target.trace_id(), target.span_id()),
                    });
                }
                links.push_item(found);
            }
            links.end_list();
        }
        let mut scratch = Vec::new();
        for (trace, range) in &traces {
            let members = &trace_members[range.clone()];
            let is_root = |&&m: &&usize| spans[m].data.parent_span_id == SpanId::INVALID;
            if members.iter().filter(is_root).nth(1).is_some() {
                problems.push(Problem::SeveralRoots {
                    trace: TraceId::from(*trace),
                    roots: members
                        .iter()
                        .filter(is_root)
                        .map(|&m| label(&spans[m]))
                        .collect(),
                });
            }
            for group in duplicate_ids(members, &index.ids, &mut scratch) {
                problems.push(Problem::DuplicateSpanId {
                    trace: TraceId::from(*trace),
                    span_id: index.ids[group[0]],
                    labels: group.iter().map(|&m| label(&spans[m])).collect(),
                    spans: group,
                });
            }
        }
        let cycle_cuts = cut_cycles(&index, &mut parent, &slot_of, &slot_ids, &mut problems);
        let children = children_of(&parent);
        Self {
            spans,
            parent,
            children,
            links,
            traces,
            trace_members,
            problems,
            cycle_cuts,
        }
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether no span was captured.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The span at `index` (see [`SpanView::index`]).
    pub fn get(&self, index: usize) -> Option<SpanView<'_>> {
        (index < self.spans.len()).then_some(SpanView {
            forest: self,
            index,
        })
    }

    /// Every span, in capture order.
    pub fn spans(&self) -> impl Iterator<Item = SpanView<'_>> + '_ {
        (0..self.spans.len()).map(|index| SpanView {
            forest: self,
            index,
        })
    }

    /// Every trace, ordered by trace id.
    pub fn traces(&self) -> Vec<Trace<'_>> {
        self.traces
            .iter()
            .map(|(id, range)| Trace {
                forest: self,
                id: TraceId::from(*id),
                members: &self.trace_members[range.clone()],
            })
            .collect()
    }

    /// The trace with this id, if any span of it was captured.
    pub fn trace(&self, id: TraceId) -> Option<Trace<'_>> {
        self.members(id).map(|members| Trace {
            forest: self,
            id,
            members,
        })
    }

    fn members(&self, id: TraceId) -> Option<&[usize]> {
        let key = ordered(id);
        let at = self.traces.binary_search_by_key(&key, |(t, _)| *t).ok()?;
        Some(&self.trace_members[self.traces[at].1.clone()])
    }

    /// Spans without a captured parent: true roots, orphans, and the span
    /// where a [`Problem::ParentCycle`] was cut.
    pub fn roots(&self) -> impl Iterator<Item = SpanView<'_>> + '_ {
        self.spans().filter(|s| s.parent().is_none())
    }

    /// Spans with this name.
    pub fn named<'f>(&'f self, name: &str) -> impl Iterator<Item = SpanView<'f>> + use<'f> {
        let name = name.to_owned();
        self.spans().filter(move |s| s.name() == name)
    }

    /// Spans of this kind.
    pub fn of_kind(&self, kind: SpanKind) -> impl Iterator<Item = SpanView<'_>> + '_ {
        self.spans().filter(move |s| s.kind() == &kind)
    }

    /// Spans recorded by this service.
    pub fn of_service<'f>(&'f self, service: &str) -> impl Iterator<Item = SpanView<'f>> + use<'f> {
        let service = service.to_owned();
        self.spans().filter(move |s| s.service() == service)
    }

    /// Spans whose attribute `key` equals `value`.
    pub fn with_attribute<'f>(
        &'f self,
        key: &str,
        value: Value,
    ) -> impl Iterator<Item = SpanView<'f>> + use<'f> {
        let key = key.to_owned();
        self.spans()
            .filter(move |s| s.attribute(&key).is_some_and(|v| *v == value))
    }

    /// The span with this trace and span id.
    pub fn find(&self, trace: TraceId, span: SpanId) -> Option<SpanView<'_>> {
        self.members(trace)?
            .iter()
            .find(|&&m| self.spans[m].data.span_context.span_id() == span)
            .map(|&index| SpanView {
                forest: self,
                index,
            })
    }

    /// Structural problems: orphans, dangling links, several roots in a
    /// trace, parents in another trace, duplicate span ids, parent cycles
    /// and traces without a root.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// For the span where a parent cycle was cut, the parent it names.
    pub(crate) fn cycle_parent(&self, index: usize) -> Option<usize> {
        let at = self
            .cycle_cuts
            .binary_search_by_key(&index, |&(span, _)| span)
            .ok()?;
        Some(self.cycle_cuts[at].1)
    }

    /// The captured spans, in capture order.
    pub fn captured(&self) -> &[CapturedSpan] {
        &self.spans
    }
}

fn ordered(id: TraceId) -> u128 {
    u128::from_be_bytes(id.to_bytes())
}

/// Members of each trace, grouped: traces ordered by id with their
/// range in `members`, and the same ranges by slot.
struct Grouped {
    traces: Vec<(u128, Range<usize>)>,
    members: Vec<usize>,
    slot_range: Vec<Range<usize>>,
}

/// Groups spans by trace; `slot_of[i]` is span `i`'s trace among
/// `slot_ids`. Members keep capture order.
fn group_by_trace(slot_ids: &[TraceId], slot_of: &[usize]) -> Grouped {
    let mut by_id: Vec<usize> = (0..slot_ids.len()).collect();
    by_id.sort_unstable_by_key(|&slot| ordered(slot_ids[slot]));
    let mut count = vec![0usize; slot_ids.len()];
    for &slot in slot_of {
        count[slot] += 1;
    }
    let mut next = vec![0usize; slot_ids.len()];
    let mut slot_range = vec![0..0; slot_ids.len()];
    let mut traces = Vec::with_capacity(slot_ids.len());
    let mut start = 0;
    for &slot in &by_id {
        next[slot] = start;
        slot_range[slot] = start..start + count[slot];
        traces.push((ordered(slot_ids[slot]), start..start + count[slot]));
        start += count[slot];
    }
    let mut members = vec![0; slot_of.len()];
    for (i, &slot) in slot_of.iter().enumerate() {
        members[next[slot]] = i;
        next[slot] += 1;
    }
    Grouped {
        traces,
        members,
        slot_range,
    }
}

/// Finds a span by trace and span id while the forest is built.
///
/// Most traces are small and their spans were captured close together, so
/// scanning a trace's members beats a forest-wide map, whose random
/// accesses miss the cache once a forest has many thousand spans. The map
/// is built only if a large trace is searched.
struct SpanIndex<'a> {
    spans: &'a [CapturedSpan],
    /// Span id of each span, by index: compact, for the scans.
    ids: Vec<SpanId>,
    trace_slot: FxHashMap<TraceId, usize>,
    slot_range: Vec<Range<usize>>,
    members: &'a [usize],
    large: OnceCell<FxHashMap<(TraceId, SpanId), usize>>,
}

impl SpanIndex<'_> {
    /// Traces up to this size are scanned.
    const SCAN_LIMIT: usize = 32;

    /// The first span captured with this trace and span id.
    fn find(&self, trace: TraceId, id: SpanId) -> Option<usize> {
        let slot = *self.trace_slot.get(&trace)?;
        self.find_in(slot, trace, id)
    }

    /// [`find`](Self::find) when the trace's slot is known.
    fn find_in(&self, slot: usize, trace: TraceId, id: SpanId) -> Option<usize> {
        let members = &self.members[self.slot_range[slot].clone()];
        if members.len() <= Self::SCAN_LIMIT {
            return members.iter().copied().find(|&m| self.ids[m] == id);
        }
        let map = self
            .large
            .get_or_init(|| first_index_by(self.spans, |c| (c.trace_id(), c.span_id())));
        map.get(&(trace, id)).copied()
    }
}

/// The index of the first span with each `key` of its span context.
fn first_index_by<K: std::hash::Hash + Eq>(
    spans: &[CapturedSpan],
    key: impl Fn(&SpanContext) -> K,
) -> FxHashMap<K, usize> {
    let mut map = FxHashMap::default();
    for (i, span) in spans.iter().enumerate() {
        map.entry(key(&span.data.span_context)).or_insert(i);
    }
    map
}

/// Groups of members (capture order) sharing a span id, each group in
/// capture order, groups ordered by their first member.
fn duplicate_ids(
    members: &[usize],
    ids: &[SpanId],
    scratch: &mut Vec<(u64, usize)>,
) -> Vec<Vec<usize>> {
    // Most traces are small and have no repeat: pairwise comparison finds
    // that without sorting or hashing.
    if members.len() <= SpanIndex::SCAN_LIMIT {
        let repeat = members
            .iter()
            .enumerate()
            .any(|(n, &m)| members[..n].iter().any(|&o| ids[o] == ids[m]));
        if !repeat {
            return Vec::new();
        }
    }
    scratch.clear();
    scratch.extend(
        members
            .iter()
            .map(|&m| (u64::from_be_bytes(ids[m].to_bytes()), m)),
    );
    scratch.sort_unstable();
    let mut groups: Vec<Vec<usize>> = scratch
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
        .map(|run| run.iter().map(|&(_, m)| m).collect())
        .collect();
    groups.sort_unstable_by_key(|group| group[0]);
    groups
}

/// Finds every cycle of `parent` links, reports it (and each trace left
/// without a root), and cuts it so that the forest is a forest: the cut
/// span loses its parent. Returns the cuts with the parent each named,
/// sorted by span. Linear: each span is walked once.
fn cut_cycles(
    index: &SpanIndex<'_>,
    parent: &mut [Option<usize>],
    slot_of: &[usize],
    slot_ids: &[TraceId],
    problems: &mut Vec<Problem>,
) -> Vec<(usize, usize)> {
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; parent.len()];
    let mut path = Vec::new();
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    for start in 0..parent.len() {
        let mut at = start;
        // Walks up until a root, or a span already seen: on this walk (a
        // cycle) or on an earlier one.
        let closes = loop {
            if state[at] != NEW {
                break state[at] == ON_PATH;
            }
            state[at] = ON_PATH;
            path.push(at);
            match parent[at] {
                Some(p) => at = p,
                None => break false,
            }
        };
        if closes && let Some(from) = path.iter().rposition(|&p| p == at) {
            cycles.push(path[from..].to_vec());
        }
        for &p in &path {
            state[p] = DONE;
        }
        path.clear();
    }
    if cycles.is_empty() {
        return Vec::new();
    }

    // Traces without a span lacking a parent, looked at before any cut.
    let mut rootless: Vec<usize> = cycles.iter().map(|cycle| slot_of[cycle[0]]).collect();
    rootless.sort_unstable();
    rootless.dedup();
    rootless.retain(|&slot| {
        index.members[index.slot_range[slot].clone()]
            .iter()
            .all(|&m| parent[m].is_some())
    });

    let spans = index.spans;
    let by_content = |&a: &usize, &b: &usize| {
        let (x, y) = (&spans[a], &spans[b]);
        (&x.data.name, &x.service, a).cmp(&(&y.data.name, &y.service, b))
    };
    let mut cuts = Vec::with_capacity(cycles.len());
    for mut cycle in cycles {
        let first = cycle
            .iter()
            .enumerate()
            .min_by(|a, b| by_content(a.1, b.1))
            .map_or(0, |(n, _)| n);
        cycle.rotate_left(first);
        let cut = cycle[0];
        if let Some(named) = parent[cut].take() {
            cuts.push((cut, named));
        }
        problems.push(Problem::ParentCycle {
            trace: slot_ids[slot_of[cut]],
            labels: cycle.iter().map(|&m| label(&spans[m])).collect(),
            spans: cycle,
        });
    }
    for slot in rootless {
        problems.push(Problem::NoRoot {
            trace: slot_ids[slot],
        });
    }
    cuts.sort_unstable();
    cuts
}

/// One short list per span, stored back to back, so that building a
/// forest allocates per forest rather than per span.
#[derive(Debug, Clone)]
struct Lists<T> {
    /// List `i` is `items[start[i]..start[i + 1]]`.
    start: Vec<usize>,
    items: Vec<T>,
}

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<T> Lists<T> {
    fn with_capacity(lists: usize) -> Self {
        let mut start = Vec::with_capacity(lists + 1);
        start.push(0);
        Self {
            start,
            items: Vec::new(),
        }
    }

    /// Adds an item to the list being built.
    fn push_item(&mut self, item: T) {
        self.items.push(item);
    }

    /// Closes the list being built; the next item starts the next list.
    fn end_list(&mut self) {
        self.start.push(self.items.len());
    }

    fn get(&self, list: usize) -> &[T] {
        &self.items[self.start[list]..self.start[list + 1]]
    }
}

/// Each span's children, in capture order.
fn children_of(parent: &[Option<usize>]) -> Lists<usize> {
    let mut start = vec![0usize; parent.len() + 1];
    for p in parent.iter().flatten() {
        start[p + 1] += 1;
    }
    for i in 0..parent.len() {
        start[i + 1] += start[i];
    }
    let mut next = start.clone();
    let mut items = vec![0; start[parent.len()]];
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            items[next[*p]] = i;
            next[*p] += 1;
        }
    }
    Lists { start, items }
}

fn label(span: &CapturedSpan) -> String {
    format!("{:?} ({})", span.data.name, span.service)
}

/// One trace of a [`SpanForest`].
#[derive(Debug, Clone, Copy)]
pub struct Trace<'f> {
    forest: &'f SpanForest,
    id: TraceId,
    members: &'f [usize],
}

impl<'f> Trace<'f> {
    /// The trace id.
    pub fn id(&self) -> TraceId {
        self.id
    }

    /// Its spans, in capture order.
    pub fn spans(&self) -> impl Iterator<Item = SpanView<'f>> + 'f {
        let forest = self.forest;
        self.members
            .iter()
            .map(move |&index| SpanView { forest, index })
    }

    /// Spans of this trace without a captured parent.
    pub fn roots(&self) -> Vec<SpanView<'f>> {
        self.spans().filter(|s| s.parent().is_none()).collect()
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the trace has no span (never true for a captured trace).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// One span of a [`SpanForest`], with its relations.
#[derive(Debug, Clone, Copy)]
pub struct SpanView<'f> {
    forest: &'f SpanForest,
    index: usize,
}

impl<'f> SpanView<'f> {
    fn captured(&self) -> &'f CapturedSpan {
        &self.forest.spans[self.index]
    }

    /// Position in the forest ([`SpanForest::get`]).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The SDK's record of the span.
    pub fn data(&self) -> &'f SpanData {
        &self.captured().data
    }

    /// Span name.
    pub fn name(&self) -> &'f str {
        &self.captured().data.name
    }

    /// Span kind.
    pub fn kind(&self) -> &'f SpanKind {
        &self.captured().data.span_kind
    }

    /// `service.name` of the recording provider.
    pub fn service(&self) -> &'f str {
        &self.captured().service
    }

    /// Span context (trace id, span id, flags, state).
    pub fn context(&self) -> &'f SpanContext {
        &self.captured().data.span_context
    }

    /// Trace id.
    pub fn trace_id(&self) -> TraceId {
        self.context().trace_id()
    }

    /// Span id.
    pub fn span_id(&self) -> SpanId {
        self.context().span_id()
    }

    /// Status.
    pub fn status(&self) -> &'f Status {
        &self.captured().data.status
    }

    /// Attributes as recorded.
    pub fn attributes(&self) -> &'f [KeyValue] {
        &self.captured().data.attributes
    }

    /// The value of attribute `key` (the last one if repeated).
    pub fn attribute(&self, key: &str) -> Option<&'f Value> {
        self.attributes()
            .iter()
            .rev()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    /// The captured parent, if any: `None` for a root, an orphan, a span
    /// whose parent is in another trace, and the span where a
    /// [`Problem::ParentCycle`] was cut (so walking up always ends).
    pub fn parent(&self) -> Option<SpanView<'f>> {
        self.forest.parent[self.index].map(|index| SpanView {
            forest: self.forest,
            index,
        })
    }

    /// Captured children, in capture order.
    pub fn children(&self) -> impl Iterator<Item = SpanView<'f>> + 'f {
        let forest = self.forest;
        forest
            .children
            .get(self.index)
            .iter()
            .map(move |&index| SpanView { forest, index })
    }

    /// Links: each target's context and, when captured, the target span.
    pub fn links(&self) -> impl Iterator<Item = (&'f SpanContext, Option<SpanView<'f>>)> + 'f {
        let forest = self.forest;
        let data = &forest.spans[self.index].data;
        data.links
            .links
            .iter()
            .zip(forest.links.get(self.index))
            .map(move |(link, target)| {
                (
                    &link.span_context,
                    target.map(|index| SpanView { forest, index }),
                )
            })
    }

    /// Whether the span was started without a parent.
    pub fn is_root(&self) -> bool {
        self.captured().data.parent_span_id == SpanId::INVALID
    }

    /// The forest this span belongs to.
    pub fn forest(&self) -> &'f SpanForest {
        self.forest
    }
}
