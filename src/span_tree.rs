//! A span forest built from captured spans: traces, roots, parents,
//! children, links (resolved across traces too), lookups, and the
//! structural problems a broken propagation leaves behind.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceId};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

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
    children: Vec<Vec<usize>>,
    links: Vec<Vec<Option<usize>>>,
    /// Keyed by the trace id as a number: `TraceId` is not `Ord`.
    traces: BTreeMap<u128, Vec<usize>>,
    problems: Vec<Problem>,
}

impl SpanForest {
    /// Builds the forest; spans keep the order given.
    pub fn new(spans: Vec<CapturedSpan>) -> Self {
        // Flat maps, no per-span allocation: building 100k spans is
        // dominated by these lookups.
        let mut by_trace_and_id: HashMap<(TraceId, SpanId), usize> =
            HashMap::with_capacity(spans.len());
        let mut first_with_id: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
        let mut traces: BTreeMap<u128, Vec<usize>> = BTreeMap::new();
        for (i, span) in spans.iter().enumerate() {
            let context = &span.data.span_context;
            by_trace_and_id
                .entry((context.trace_id(), context.span_id()))
                .or_insert(i);
            first_with_id.entry(context.span_id()).or_insert(i);
            traces
                .entry(ordered(context.trace_id()))
                .or_default()
                .push(i);
        }
        let find = |trace: TraceId, id: SpanId| by_trace_and_id.get(&(trace, id)).copied();
        let mut parent = vec![None; spans.len()];
        let mut children = vec![Vec::new(); spans.len()];
        let mut links = Vec::with_capacity(spans.len());
        let mut problems = Vec::new();
        for (i, span) in spans.iter().enumerate() {
            let trace = span.data.span_context.trace_id();
            let parent_id = span.data.parent_span_id;
            if parent_id != SpanId::INVALID {
                if let Some(p) = find(trace, parent_id) {
                    parent[i] = Some(p);
                    children[p].push(i);
                } else if let Some(&other) = first_with_id.get(&parent_id) {
                    problems.push(Problem::WrongTrace {
                        span: i,
                        label: label(span),
                        parent_label: label(&spans[other]),
                    });
                } else {
                    problems.push(Problem::Orphan {
                        span: i,
                        label: label(span),
                        missing_parent: parent_id,
                    });
                }
            }
            let resolved: Vec<Option<usize>> = span
                .data
                .links
                .links
                .iter()
                .map(|link| {
                    let target = &link.span_context;
                    let found = find(target.trace_id(), target.span_id());
                    if found.is_none() {
                        problems.push(Problem::DanglingLink {
                            span: i,
                            label: label(span),
                            target: (target.trace_id(), target.span_id()),
                        });
                    }
                    found
                })
                .collect();
            links.push(resolved);
        }
        for (trace, members) in &traces {
            let roots: Vec<String> = members
                .iter()
                .filter(|&&m| spans[m].data.parent_span_id == SpanId::INVALID)
                .map(|&m| label(&spans[m]))
                .collect();
            if roots.len() > 1 {
                problems.push(Problem::SeveralRoots {
                    trace: TraceId::from(*trace),
                    roots,
                });
            }
        }
        Self {
            spans,
            parent,
            children,
            links,
            traces,
            problems,
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
            .map(|(id, members)| Trace {
                forest: self,
                id: TraceId::from(*id),
                members,
            })
            .collect()
    }

    /// The trace with this id, if any span of it was captured.
    pub fn trace(&self, id: TraceId) -> Option<Trace<'_>> {
        self.traces.get(&ordered(id)).map(|members| Trace {
            forest: self,
            id,
            members,
        })
    }

    /// Spans without a captured parent (true roots and orphans).
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
        let members = self.traces.get(&ordered(trace))?;
        members
            .iter()
            .find(|&&m| self.spans[m].data.span_context.span_id() == span)
            .map(|&index| SpanView {
                forest: self,
                index,
            })
    }

    /// Structural problems: orphans, dangling links, several roots in a
    /// trace, parents in another trace.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The captured spans, in capture order.
    pub fn captured(&self) -> &[CapturedSpan] {
        &self.spans
    }
}

fn ordered(id: TraceId) -> u128 {
    u128::from_be_bytes(id.to_bytes())
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

    /// The captured parent, if any.
    pub fn parent(&self) -> Option<SpanView<'f>> {
        self.forest.parent[self.index].map(|index| SpanView {
            forest: self.forest,
            index,
        })
    }

    /// Captured children, in capture order.
    pub fn children(&self) -> impl Iterator<Item = SpanView<'f>> + 'f {
        let forest = self.forest;
        forest.children[self.index]
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
            .zip(&forest.links[self.index])
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
