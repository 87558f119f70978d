//! A normalised, deterministic text rendering of spans, for insta
//! snapshots and failure reports.
//!
//! Ids become ordinals (`T1`, `S1`) assigned in rendering order, times are
//! dropped, attributes are sorted, volatile values are redacted, and
//! siblings are ordered by their content, never by time: the same run
//! always renders to the same text.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use rustc_hash::{FxHashMap, FxHashSet};

use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry::{KeyValue, Value};

use crate::forest::tree::{Problem, SpanForest, SpanView, Trace};

/// Attributes redacted by default: they change from run to run.
pub const DEFAULT_REDACTED: &[&str] = &[
    "messaging.kafka.offset",
    "server.address",
    "server.port",
    "messaging.client.id",
    "messaging.message.id",
];

/// How to render; every default is set in [`Render::new`].
///
/// ```
/// use kafka_trace_harness::{Render, SpanCapture};
/// use opentelemetry::trace::{Tracer, TraceContextExt};
/// use opentelemetry::KeyValue;
///
/// let capture = SpanCapture::new();
/// let tracer = capture.tracer("datagen");
/// tracer.in_span("send orders-1-x", |cx| {
///     cx.span().set_attribute(KeyValue::new("messaging.kafka.offset", 42));
/// });
///
/// let text = Render::new().replace("orders-1-x", "orders").forest(&capture.forest());
/// assert_eq!(text, "trace T1\n  S1 \"send orders\" INTERNAL service=datagen\n    · messaging.kafka.offset = <redacted>\n");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Render {
    redacted: BTreeSet<String>,
    replacements: Vec<(String, String)>,
    events: bool,
    attributes: Option<BTreeSet<String>>,
}

impl Default for Render {
    fn default() -> Self {
        Self::new()
    }
}

impl Render {
    /// Redacts [`DEFAULT_REDACTED`], renders every attribute and event.
    pub fn new() -> Self {
        Self {
            redacted: DEFAULT_REDACTED.iter().map(|k| (*k).to_owned()).collect(),
            replacements: Vec::new(),
            events: true,
            attributes: None,
        }
    }

    /// Also redacts attribute `key`.
    pub fn redact(mut self, key: impl Into<String>) -> Self {
        self.redacted.insert(key.into());
        self
    }

    /// Shows attribute `key`'s value even if redacted by default.
    pub fn unredact(mut self, key: &str) -> Self {
        self.redacted.remove(key);
        self
    }

    /// Replaces `from` by `to` everywhere in the text: use it for the
    /// random part of unique topic names.
    pub fn replace(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.replacements.push((from.into(), to.into()));
        self
    }

    /// Whether events are rendered. Default `true`.
    pub fn events(mut self, enabled: bool) -> Self {
        self.events = enabled;
        self
    }

    /// Renders only these attributes (default: all).
    pub fn only_attributes<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.attributes = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Renders every trace of `forest`, then its problems.
    pub fn forest(&self, forest: &SpanForest) -> String {
        let (mut text, problems) = self.forest_parts(forest);
        if !problems.is_empty() {
            text.push_str("problems\n");
            for line in problems {
                let _ = writeln!(text, "  {line}");
            }
        }
        text
    }

    /// [`forest`](Self::forest)'s traces, and its problem lines apart, so
    /// that a report can shorten the first and keep the second.
    pub(crate) fn forest_parts(&self, forest: &SpanForest) -> (String, Vec<String>) {
        let roots: Vec<Vec<usize>> = forest
            .traces()
            .iter()
            .map(|t| t.roots().iter().map(SpanView::index).collect())
            .collect();
        self.render(forest, roots, true)
    }

    /// Renders one trace.
    pub fn trace(&self, trace: &Trace<'_>) -> String {
        let forest = match trace.spans().next() {
            Some(span) => span.forest(),
            None => return String::new(),
        };
        let roots = trace.roots().iter().map(SpanView::index).collect();
        self.render(forest, vec![roots], false).0
    }

    fn render(
        &self,
        forest: &SpanForest,
        traces: Vec<Vec<usize>>,
        problems: bool,
    ) -> (String, Vec<String>) {
        let layout = Layout::new(self, forest, &traces);
        let ordered = layout.order_traces(forest, traces);
        let rootless: FxHashSet<TraceId> = forest
            .problems()
            .iter()
            .filter_map(|p| match p {
                Problem::NoRoot { trace } => Some(*trace),
                _ => None,
            })
            .collect();

        // Ordinals in rendering order, assigned before rendering so that a
        // link can name a span rendered later.
        let mut ordinals = Ordinals::new(forest.len());
        for roots in &ordered {
            for &root in roots {
                ordinals.assign(forest, root, &layout);
            }
        }

        let mut out = String::with_capacity(layout.estimated_len());
        for roots in &ordered {
            // Every trace has a root once the forest has cut its cycles;
            // an empty list would only mean an empty trace.
            let Some(trace) = roots.first().and_then(|&r| forest.get(r)) else {
                continue;
            };
            let trace = trace.trace_id();
            let _ = write!(out, "trace T{}", ordinals.trace(trace));
            if rootless.contains(&trace) {
                out.push_str(" (no root)");
            }
            out.push('\n');
            for &root in roots {
                self.write_subtree(&mut out, forest, root, &ordinals, &layout);
            }
        }
        let mut lines = Vec::new();
        if problems {
            lines = forest
                .problems()
                .iter()
                .map(|p| self.apply_replacements(self.problem(forest, p, &ordinals)))
                .collect();
            lines.sort();
        }
        (self.apply_replacements(out), lines)
    }

    fn apply_replacements(&self, mut text: String) -> String {
        for (from, to) in &self.replacements {
            if !from.is_empty() {
                text = text.replace(from.as_str(), to);
            }
        }
        text
    }

    /// Appends the span's own text to `out`: its head line and attribute
    /// lines, then (for ordering only) its links, named by span name and
    /// service, and its events. Returns where the head and attributes end.
    fn span_text(&self, span: SpanView<'_>, out: &mut String, scratch: &mut Scratch) -> usize {
        write_quoted(span.name(), out);
        out.push(' ');
        out.push_str(kind(span.kind()));
        out.push_str(" service=");
        out.push_str(span.service());
        match span.status() {
            Status::Unset => {}
            Status::Ok => out.push_str(" status=ok"),
            Status::Error { description } => {
                let _ = write!(out, " status=error({description:?})");
            }
        }
        self.write_attributes(span.attributes(), "\n  · ", true, out, scratch);
        let base_len = out.len();
        if let Some(parent) = span.forest().cycle_parent(span.index()) {
            out.push_str("\n  ↺ parent ");
            if let Some(parent) = span.forest().get(parent) {
                let _ = write!(out, "{:?} ({})", parent.name(), parent.service());
            }
        }
        for (context, target) in span.links() {
            out.push_str("\n  → link ");
            match target {
                Some(t) => {
                    let _ = write!(out, "{:?} ({})", t.name(), t.service());
                }
                None => out.push_str(unresolved(context)),
            }
        }
        if self.events {
            for event in &span.data().events.events {
                out.push('\n');
                self.write_event(event, out, scratch);
            }
        }
        base_len
    }

    /// `  ! event "name" {k = v, …}`, attributes sorted.
    fn write_event(
        &self,
        event: &opentelemetry::trace::Event,
        out: &mut String,
        scratch: &mut Scratch,
    ) {
        let _ = write!(out, "  ! event {:?} {{", event.name);
        self.write_attributes(&event.attributes, ", ", false, out, scratch);
        out.push('}');
    }

    /// Writes the kept attributes as `key = value`, sorted by key then
    /// value, redacted where asked, separated by `separator` (also before
    /// the first one when `leading`).
    fn write_attributes(
        &self,
        attributes: &[KeyValue],
        separator: &str,
        leading: bool,
        out: &mut String,
        scratch: &mut Scratch,
    ) {
        scratch.values.clear();
        scratch.order.clear();
        for (i, kv) in attributes.iter().enumerate() {
            let key = kv.key.as_str();
            if !self
                .attributes
                .as_ref()
                .is_none_or(|keep| keep.contains(key))
            {
                continue;
            }
            let start = scratch.values.len();
            if self.redacted.contains(key) {
                scratch.values.push_str("<redacted>");
            } else {
                write_value(&kv.value, &mut scratch.values);
            }
            scratch.order.push((i, start, scratch.values.len()));
        }
        let values = &scratch.values;
        scratch.order.sort_unstable_by(|a, b| {
            attributes[a.0]
                .key
                .as_str()
                .cmp(attributes[b.0].key.as_str())
                .then_with(|| values[a.1..a.2].cmp(&values[b.1..b.2]))
        });
        for (n, &(i, start, end)) in scratch.order.iter().enumerate() {
            if n > 0 || leading {
                out.push_str(separator);
            }
            out.push_str(attributes[i].key.as_str());
            out.push_str(" = ");
            out.push_str(&values[start..end]);
        }
    }

    fn write_subtree(
        &self,
        out: &mut String,
        forest: &SpanForest,
        root: usize,
        ordinals: &Ordinals,
        layout: &Layout,
    ) {
        let mut scratch = Scratch::default();
        // Iterative, so that a very deep chain cannot overflow the stack.
        let mut stack = vec![(root, 1usize)];
        while let Some((index, depth)) = stack.pop() {
            let pad = depth * 2;
            push_spaces(out, pad);
            let _ = write!(out, "S{} ", ordinals.span(index));
            for (i, line) in layout.base(index).split('\n').enumerate() {
                if i > 0 {
                    push_spaces(out, pad);
                }
                out.push_str(line);
                out.push('\n');
            }
            stack.extend(layout.children(index).iter().rev().map(|&c| (c, depth + 1)));
            // Most spans have neither links nor events: their data, which
            // is scattered in memory in rendering order, is not read again.
            if !layout.has_tail(index) {
                continue;
            }
            let Some(span) = forest.get(index) else {
                continue;
            };
            if let Some(parent) = forest.cycle_parent(index) {
                push_spaces(out, pad);
                let _ = writeln!(
                    out,
                    "  ↺ parent S{} (a parent cycle, cut here)",
                    ordinals.span(parent)
                );
            }
            for (context, target) in span.links() {
                push_spaces(out, pad);
                out.push_str("  → link ");
                match target {
                    Some(t) => {
                        let ordinal = ordinals.span(t.index());
                        if ordinal == 0 {
                            let _ = write!(out, "{:?} (outside this rendering)", t.name());
                        } else if t.trace_id() == span.trace_id() {
                            let _ = write!(out, "S{ordinal}");
                        } else {
                            let _ =
                                write!(out, "S{ordinal} (trace T{})", ordinals.trace(t.trace_id()));
                        }
                    }
                    None => out.push_str(unresolved(context)),
                }
                out.push('\n');
            }
            if self.events {
                for event in &span.data().events.events {
                    push_spaces(out, pad);
                    self.write_event(event, out, &mut scratch);
                    out.push('\n');
                }
            }
        }
    }

    fn problem(&self, forest: &SpanForest, problem: &Problem, ordinals: &Ordinals) -> String {
        let name = |i: usize| match forest.get(i) {
            Some(span) => format!("S{} {:?}", ordinals.span(i), span.name()),
            None => format!("span #{i}"),
        };
        match problem {
            Problem::Orphan { span, .. } => {
                format!("orphan: {} names a parent never captured", name(*span))
            }
            Problem::DanglingLink { span, .. } => {
                format!(
                    "dangling link: {} links to a span never captured",
                    name(*span)
                )
            }
            Problem::SeveralRoots { trace, roots } => {
                format!(
                    "trace T{} has {} roots",
                    ordinals.trace(*trace),
                    roots.len()
                )
            }
            Problem::WrongTrace { span, .. } => {
                format!(
                    "wrong trace: {} names a parent in another trace",
                    name(*span)
                )
            }
            Problem::DuplicateSpanId { trace, spans, .. } => {
                let names: Vec<String> = spans.iter().map(|&s| name(s)).collect();
                format!(
                    "duplicate span id: {} share one id in trace T{}; children and links \
                     resolve to S{}",
                    names.join(", "),
                    ordinals.trace(*trace),
                    spans.first().map_or(0, |&s| ordinals.span(s))
                )
            }
            Problem::ParentCycle { spans, .. } => {
                let mut line = "parent cycle: ".to_owned();
                for &s in spans {
                    line.push_str(&name(s));
                    line.push_str(" → ");
                }
                let _ = write!(
                    line,
                    "S{} (each names the next as parent)",
                    spans.first().map_or(0, |&s| ordinals.span(s))
                );
                line
            }
            Problem::NoRoot { trace } => format!("trace T{} has no root", ordinals.trace(*trace)),
        }
    }
}

fn unresolved(context: &opentelemetry::trace::SpanContext) -> &'static str {
    if context.is_valid() {
        "<not captured>"
    } else {
        "<invalid>"
    }
}

fn push_spaces(out: &mut String, count: usize) {
    out.extend(std::iter::repeat_n(' ', count));
}

/// Buffers reused from span to span while rendering attributes.
#[derive(Default)]
struct Scratch {
    /// Rendered attribute values, back to back.
    values: String,
    /// (attribute index, value start, value end) of each kept attribute.
    order: Vec<(usize, usize, usize)>,
}

/// The shape of a rendering, fixed before any ordinal exists.
///
/// Siblings are ordered by content. Rather than building each subtree's
/// text (which costs memory in proportion to depth × size), every distinct
/// span text is interned once, and every distinct subtree gets a *class*:
/// its span text plus its children's classes in order. Two subtrees render
/// alike exactly when their classes are equal, and classes compare by span
/// text first, then child by child, so ordering costs integer comparisons.
struct Layout {
    /// Distinct span texts: head and attribute lines, then link and event
    /// lines; `base_len` marks the end of the attribute lines.
    texts: Vec<(String, usize)>,
    /// Per span index: its text id (`u32::MAX` when not rendered).
    text_of: Vec<u32>,
    /// Per span index: its subtree's class.
    class_of: Vec<u32>,
    /// Per class: its span text's rank, then its children's classes in order.
    classes: Vec<Box<[u32]>>,
    /// Per class: its rank in content order.
    class_rank: Vec<u32>,
    /// Per span index: where its ordered children sit in `ordered`.
    children: Vec<(u32, u32)>,
    ordered: Vec<usize>,
}

impl Layout {
    fn new(render: &Render, forest: &SpanForest, traces: &[Vec<usize>]) -> Self {
        let n = forest.len();
        // Children before parents, without recursion.
        let mut post = Vec::with_capacity(n);
        let mut stack: Vec<(usize, bool)> = Vec::new();
        for &root in traces.iter().flatten() {
            stack.push((root, false));
            while let Some((i, children_done)) = stack.pop() {
                if children_done {
                    post.push(i);
                } else {
                    stack.push((i, true));
                    let span = forest.get(i).expect("index from the forest");
                    stack.extend(span.children().map(|c| (c.index(), false)));
                }
            }
        }

        // Span texts, each distinct one stored once.
        let mut text_ids: FxHashMap<String, u32> = FxHashMap::default();
        let mut texts: Vec<(String, usize)> = Vec::new();
        let mut text_of = vec![u32::MAX; n];
        let mut buffer = String::new();
        let mut scratch = Scratch::default();
        for &i in &post {
            buffer.clear();
            let span = forest.get(i).expect("index from the forest");
            let base_len = render.span_text(span, &mut buffer, &mut scratch);
            let id = match text_ids.get(buffer.as_str()) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(texts.len()).expect("fewer than 2^32 texts");
                    text_ids.insert(buffer.clone(), id);
                    texts.push((buffer.clone(), base_len));
                    id
                }
            };
            text_of[i] = id;
        }
        drop(text_ids);
        let mut by_text: Vec<u32> = (0..texts.len() as u32).collect();
        by_text.sort_unstable_by(|&a, &b| texts[a as usize].0.cmp(&texts[b as usize].0));
        let mut text_rank = vec![0u32; texts.len()];
        for (rank, &id) in by_text.iter().enumerate() {
            text_rank[id as usize] = rank as u32;
        }

        // Classes, children first, so a parent's key holds known classes.
        let mut layout = Self {
            texts,
            text_of,
            class_of: vec![u32::MAX; n],
            classes: Vec::new(),
            class_rank: Vec::new(),
            children: vec![(0, 0); n],
            ordered: Vec::with_capacity(n),
        };
        let mut class_ids: FxHashMap<Box<[u32]>, u32> = FxHashMap::default();
        let mut key: Vec<u32> = Vec::new();
        let mut kids: Vec<usize> = Vec::new();
        for &i in &post {
            let span = forest.get(i).expect("index from the forest");
            kids.clear();
            kids.extend(span.children().map(|c| c.index()));
            let (class_of, classes) = (&layout.class_of, &layout.classes);
            kids.sort_unstable_by(|&a, &b| {
                compare_classes(classes, class_of[a], class_of[b])
                    .then_with(|| ids(forest, a).cmp(&ids(forest, b)))
                    .then(a.cmp(&b))
            });
            key.clear();
            key.push(text_rank[layout.text_of[i] as usize]);
            key.extend(kids.iter().map(|&c| class_of[c]));
            let class = match class_ids.get(key.as_slice()) {
                Some(&class) => class,
                None => {
                    let class =
                        u32::try_from(layout.classes.len()).expect("fewer than 2^32 classes");
                    class_ids.insert(key.clone().into_boxed_slice(), class);
                    layout.classes.push(key.clone().into_boxed_slice());
                    class
                }
            };
            layout.class_of[i] = class;
            let start = layout.ordered.len() as u32;
            layout.ordered.extend_from_slice(&kids);
            layout.children[i] = (start, kids.len() as u32);
        }
        let mut by_class: Vec<u32> = (0..layout.classes.len() as u32).collect();
        by_class.sort_unstable_by(|&a, &b| compare_classes(&layout.classes, a, b));
        layout.class_rank = vec![0; layout.classes.len()];
        for (rank, &class) in by_class.iter().enumerate() {
            layout.class_rank[class as usize] = rank as u32;
        }
        layout
    }

    /// The span's head and attribute lines.
    fn base(&self, index: usize) -> &str {
        let (text, base_len) = &self.texts[self.text_of[index] as usize];
        &text[..*base_len]
    }

    /// Whether the span has link or event lines after its attributes.
    fn has_tail(&self, index: usize) -> bool {
        let (text, base_len) = &self.texts[self.text_of[index] as usize];
        text.len() > *base_len
    }

    /// The span's children in rendering order.
    fn children(&self, index: usize) -> &[usize] {
        let (start, len) = self.children[index];
        &self.ordered[start as usize..(start + len) as usize]
    }

    /// Each trace's roots in content order, and the traces ordered by
    /// their roots' content. Traces that render alike are ordered by where
    /// the others first link to them, then by their roots' span and parent
    /// ids, then by trace id: never by capture order, so the same spans
    /// captured in another order get the same ordinals, and a span's links
    /// to alike traces name them in link order (ids are random, links are
    /// the code's own order).
    fn order_traces(&self, forest: &SpanForest, traces: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
        let rank = |i: usize| self.class_rank[self.class_of[i] as usize];
        let mut keyed: Vec<(TraceKey, Vec<usize>)> = traces
            .into_iter()
            .map(|mut roots| {
                roots.sort_unstable_by_key(|&r| (rank(r), ids(forest, r), r));
                let key = TraceKey {
                    ranks: roots.iter().map(|&r| rank(r)).collect(),
                    mention: u32::MAX,
                    ids: roots.iter().map(|&r| ids(forest, r)).collect(),
                    trace: roots
                        .first()
                        .and_then(|&r| forest.get(r))
                        .map(|span| span.trace_id().to_bytes()),
                };
                (key, roots)
            })
            .collect();
        keyed.sort_unstable();
        let mut tied = vec![false; keyed.len()];
        for (i, w) in keyed.windows(2).enumerate() {
            if w[0].0.ranks == w[1].0.ranks {
                tied[i] = true;
                tied[i + 1] = true;
            }
        }
        if !tied.contains(&true) {
            return keyed.into_iter().map(|(_, roots)| roots).collect();
        }
        let mut mentions: FxHashMap<[u8; 16], u32> = keyed
            .iter()
            .zip(&tied)
            .filter(|(_, tied)| **tied)
            .filter_map(|((key, _), _)| key.trace.map(|trace| (trace, u32::MAX)))
            .collect();
        // Links from the traces whose place is settled, in rendering order.
        let mut next = 0;
        let mut stack = Vec::new();
        for ((_, roots), _) in keyed.iter().zip(&tied).filter(|(_, tied)| !**tied) {
            stack.extend(roots.iter().rev());
            while let Some(index) = stack.pop() {
                stack.extend(self.children(index).iter().rev());
                if !self.has_tail(index) {
                    continue;
                }
                let Some(span) = forest.get(index) else {
                    continue;
                };
                for target in span.links().filter_map(|(_, target)| target) {
                    if let Some(mention) = mentions.get_mut(&target.trace_id().to_bytes())
                        && *mention == u32::MAX
                    {
                        *mention = next;
                        next += 1;
                    }
                }
            }
        }
        for (key, _) in &mut keyed {
            if let Some(&mention) = key.trace.as_ref().and_then(|t| mentions.get(t)) {
                key.mention = mention;
            }
        }
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, roots)| roots).collect()
    }

    /// A guess at the output's size, to allocate it once.
    fn estimated_len(&self) -> usize {
        self.text_of
            .iter()
            .filter(|&&t| t != u32::MAX)
            .map(|&t| self.texts[t as usize].1 + 16)
            .sum()
    }
}

/// What orders a trace among the others: its roots' content, where a
/// settled trace first links to it, its roots' ids, then its own id; all
/// independent of capture order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct TraceKey {
    ranks: Vec<u32>,
    mention: u32,
    ids: Vec<Option<([u8; 8], [u8; 8])>>,
    trace: Option<[u8; 16]>,
}

/// A span's id and its parent's: what tells apart spans whose content
/// renders alike.
fn ids(forest: &SpanForest, index: usize) -> Option<([u8; 8], [u8; 8])> {
    forest.get(index).map(|span| {
        (
            span.span_id().to_bytes(),
            span.data().parent_span_id.to_bytes(),
        )
    })
}

/// Content order of two classes: span text first, then children in order,
/// a missing child first. Descends along the first differing child only,
/// so it needs no recursion.
fn compare_classes(classes: &[Box<[u32]>], mut a: u32, mut b: u32) -> Ordering {
    loop {
        if a == b {
            return Ordering::Equal;
        }
        let (x, y) = (&classes[a as usize], &classes[b as usize]);
        match x[0].cmp(&y[0]) {
            Ordering::Equal => {}
            other => return other,
        }
        match x[1..].iter().zip(&y[1..]).find(|(p, q)| p != q) {
            Some((&p, &q)) => (a, b) = (p, q),
            None => return x.len().cmp(&y.len()),
        }
    }
}

struct Ordinals {
    /// Ordinal of each span by index; 0 until assigned.
    spans: Vec<usize>,
    assigned: usize,
    traces: HashMap<opentelemetry::trace::TraceId, usize>,
}

impl Ordinals {
    fn new(spans: usize) -> Self {
        Self {
            spans: vec![0; spans],
            assigned: 0,
            traces: HashMap::new(),
        }
    }

    fn assign(&mut self, forest: &SpanForest, root: usize, layout: &Layout) {
        // A child is always in its parent's trace (the forest looks parents
        // up by trace and span id), so the root names the trace.
        let trace = forest.get(root).expect("index from the forest").trace_id();
        let next_trace = self.traces.len() + 1;
        self.traces.entry(trace).or_insert(next_trace);
        // Iterative, so that a very deep chain cannot overflow the stack.
        let mut stack = vec![root];
        while let Some(i) = stack.pop() {
            if self.spans[i] == 0 {
                self.assigned += 1;
                self.spans[i] = self.assigned;
            }
            stack.extend(layout.children(i).iter().rev());
        }
    }

    fn span(&self, index: usize) -> usize {
        self.spans.get(index).copied().unwrap_or(0)
    }

    fn trace(&self, trace: opentelemetry::trace::TraceId) -> usize {
        self.traces.get(&trace).copied().unwrap_or(0)
    }
}

/// `SpanKind` in capitals, as the OpenTelemetry specification writes it.
pub(crate) fn kind(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "CLIENT",
        SpanKind::Server => "SERVER",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
        SpanKind::Internal => "INTERNAL",
    }
}

/// An attribute value as rendered: strings quoted, the rest as displayed.
pub(crate) fn value(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    let _ = match value {
        Value::String(s) => {
            write_quoted(s.as_str(), out);
            Ok(())
        }
        other => write!(out, "{other}"),
    };
}

/// `{:?}` of a string; printable ASCII without quotes or backslashes (most
/// names and values) is copied as is, which is what `{:?}` would print.
fn write_quoted(text: &str, out: &mut String) {
    if text
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

/// The default rendering of `forest` for a report: its traces cut after
/// `max_lines` lines, then every problem (up to `max_lines` of them), so
/// that many spans cannot hide a problem.
pub(crate) fn summary(forest: &SpanForest, max_lines: usize) -> String {
    if forest.is_empty() {
        return "no span captured".to_owned();
    }
    let (text, problems) = Render::new().forest_parts(forest);
    let mut out = format!("{} spans\n", forest.len());
    push_cut(
        &mut out,
        text.lines(),
        text.lines().count(),
        max_lines,
        "lines",
    );
    if !problems.is_empty() {
        out.push_str("problems\n");
        let lines = problems.iter().map(|p| format!("  {p}"));
        push_cut(&mut out, lines, problems.len(), max_lines, "problems");
    }
    out
}

/// Appends the first `max` of the `total` `lines`, then how many were
/// left out.
fn push_cut<S: AsRef<str>>(
    out: &mut String,
    lines: impl Iterator<Item = S>,
    total: usize,
    max: usize,
    what: &str,
) {
    for line in lines.take(max) {
        out.push_str(line.as_ref());
        out.push('\n');
    }
    if total > max {
        let _ = writeln!(out, "… {} more {what}", total - max);
    }
}

impl SpanForest {
    /// [`Render::new`]'s rendering of the whole forest.
    pub fn render(&self) -> String {
        Render::new().forest(self)
    }
}

#[cfg(test)]
mod tests {
    use super::write_quoted;

    #[test]
    fn quoting_matches_debug_formatting() {
        for text in [
            "",
            "send trades",
            "a\"b",
            "back\\slash",
            "tab\there",
            "line\nbreak",
            "café",
            "\u{7f}",
            "~ tilde",
        ] {
            let mut out = String::new();
            write_quoted(text, &mut out);
            assert_eq!(out, format!("{text:?}"));
        }
    }
}
