//! A normalised, deterministic text rendering of spans, for insta
//! snapshots and failure reports.
//!
//! Ids become ordinals (`T1`, `S1`) assigned in rendering order, times are
//! dropped, attributes are sorted, volatile values are redacted, and
//! siblings are ordered by their content, never by time: the same run
//! always renders to the same text.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{KeyValue, Value};

use crate::span_tree::{Problem, SpanForest, SpanView, Trace};

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
        self.render(forest, vec![roots], false)
    }

    fn render(&self, forest: &SpanForest, traces: Vec<Vec<usize>>, problems: bool) -> String {
        let mut content = Contents {
            subtree: vec![None; forest.len()],
            base: vec![None; forest.len()],
        };
        for &root in traces.iter().flatten() {
            self.content(forest, root, &mut content);
        }
        let text = |i: usize| content.subtree[i].as_deref().unwrap_or_default();
        let keyed: Vec<(Cow<'_, str>, Vec<usize>)> = traces
            .into_iter()
            .map(|mut roots| {
                roots.sort_by(|&a, &b| text(a).cmp(text(b)).then(a.cmp(&b)));
                // One root, the usual case: its content is the key, uncopied.
                let key = match roots.as_slice() {
                    [root] => Cow::Borrowed(text(*root)),
                    _ => Cow::Owned(roots.iter().map(|&r| text(r)).collect::<String>()),
                };
                (key, roots)
            })
            .collect();
        let ordered = order_by_content(keyed);

        // Ordinals in rendering order, assigned before rendering so that a
        // link can name a span rendered later.
        let mut ordinals = Ordinals::new(forest.len());
        for roots in &ordered {
            for &root in roots {
                ordinals.assign(forest, root, &content);
            }
        }

        let mut out = String::new();
        for roots in &ordered {
            let trace = forest.get(roots[0]).map(|s| s.trace_id());
            let _ = writeln!(out, "trace T{}", trace.map_or(0, |t| ordinals.trace(t)));
            for &root in roots {
                self.write_subtree(&mut out, forest, root, 1, &ordinals, &content);
            }
        }
        if problems && !forest.problems().is_empty() {
            out.push_str("problems\n");
            let mut lines: Vec<String> = forest
                .problems()
                .iter()
                .map(|p| self.problem(forest, p, &ordinals))
                .collect();
            lines.sort();
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
        }
        self.apply_replacements(out)
    }

    fn apply_replacements(&self, mut text: String) -> String {
        for (from, to) in &self.replacements {
            if !from.is_empty() {
                text = text.replace(from.as_str(), to);
            }
        }
        text
    }

    /// The node's head line and attribute lines, joined by newlines: the
    /// part of its rendering that needs no ordinals, computed once.
    fn base_text(&self, span: SpanView<'_>) -> String {
        let mut text = format!(
            "{:?} {} service={}",
            span.name(),
            kind(span.kind()),
            span.service()
        );
        match span.status() {
            Status::Unset => {}
            Status::Ok => text.push_str(" status=ok"),
            Status::Error { description } => {
                let _ = write!(text, " status=error({description:?})");
            }
        }
        for kv in self.sorted(span.attributes()) {
            text.push_str("\n  · ");
            text.push_str(&kv);
        }
        text
    }

    /// The node's link and event lines; links named by `link_names`.
    fn tail_lines(
        &self,
        span: SpanView<'_>,
        link_names: &dyn Fn(&SpanView<'_>) -> String,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        for (context, target) in span.links() {
            let target = match target {
                Some(t) => link_names(&t),
                None if context.is_valid() => "<not captured>".to_owned(),
                None => "<invalid>".to_owned(),
            };
            lines.push(format!("  → link {target}"));
        }
        if self.events {
            for event in &span.data().events.events {
                let attrs: Vec<String> = self.sorted(&event.attributes);
                lines.push(format!(
                    "  ! event {:?} {{{}}}",
                    event.name,
                    attrs.join(", ")
                ));
            }
        }
        lines
    }

    fn sorted(&self, attributes: &[KeyValue]) -> Vec<String> {
        let mut out: Vec<String> = attributes
            .iter()
            .filter(|kv| {
                self.attributes
                    .as_ref()
                    .is_none_or(|keep| keep.contains(kv.key.as_str()))
            })
            .map(|kv| {
                let value = if self.redacted.contains(kv.key.as_str()) {
                    "<redacted>".to_owned()
                } else {
                    value(&kv.value)
                };
                format!("{} = {value}", kv.key.as_str())
            })
            .collect();
        out.sort();
        out
    }

    /// Content of the subtree rooted at `index`, used only for ordering:
    /// its own lines, then its children's contents in order, each line
    /// indented by depth. Filled children first, without recursion, so a
    /// deep chain cannot overflow the stack and no text is copied twice.
    fn content(&self, forest: &SpanForest, index: usize, memo: &mut Contents) {
        let describe = |t: &SpanView<'_>| format!("{:?} ({})", t.name(), t.service());
        let mut stack = vec![(index, false)];
        while let Some((i, children_done)) = stack.pop() {
            if memo.subtree[i].is_some() {
                continue;
            }
            let span = forest.get(i).expect("index from the forest");
            if !children_done {
                stack.push((i, true));
                stack.extend(span.children().map(|c| (c.index(), false)));
                continue;
            }
            let base = self.base_text(span);
            let mut text = base.clone();
            for line in self.tail_lines(span, &describe) {
                text.push('\n');
                text.push_str(&line);
            }
            let mut children: Vec<&str> = span
                .children()
                .map(|c| memo.subtree[c.index()].as_deref().unwrap_or_default())
                .collect();
            children.sort_unstable();
            for child in children {
                for line in child.lines() {
                    text.push_str("\n  ");
                    text.push_str(line);
                }
            }
            memo.subtree[i] = Some(text);
            memo.base[i] = Some(base);
        }
    }

    fn write_subtree(
        &self,
        out: &mut String,
        forest: &SpanForest,
        index: usize,
        depth: usize,
        ordinals: &Ordinals,
        content: &Contents,
    ) {
        let span = forest.get(index).expect("index from the forest");
        let name_link = |t: &SpanView<'_>| {
            let same_trace = t.trace_id() == span.trace_id();
            let span_ordinal = ordinals.span(t.index());
            if span_ordinal == 0 {
                format!("{:?} (outside this rendering)", t.name())
            } else if same_trace {
                format!("S{span_ordinal}")
            } else {
                format!("S{span_ordinal} (trace T{})", ordinals.trace(t.trace_id()))
            }
        };
        let pad = "  ".repeat(depth);
        let base = content.base[index].as_deref().unwrap_or_default();
        let _ = write!(out, "{pad}S{} ", ordinals.span(index));
        for (i, line) in base.lines().enumerate() {
            if i > 0 {
                out.push_str(&pad);
            }
            out.push_str(line);
            out.push('\n');
        }
        for line in self.tail_lines(span, &name_link) {
            let _ = writeln!(out, "{pad}{line}");
        }
        for child in sorted_children(span, content) {
            self.write_subtree(out, forest, child, depth + 1, ordinals, content);
        }
    }

    fn problem(&self, forest: &SpanForest, problem: &Problem, ordinals: &Ordinals) -> String {
        let name = |i: usize| {
            let span = forest.get(i).expect("index from the forest");
            format!("S{} {:?}", ordinals.span(i), span.name())
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
        }
    }
}

fn sorted_children(span: SpanView<'_>, content: &Contents) -> Vec<usize> {
    let mut children: Vec<(&str, usize)> = span
        .children()
        .map(|c| {
            (
                content.subtree[c.index()].as_deref().unwrap_or_default(),
                c.index(),
            )
        })
        .collect();
    children.sort();
    children.into_iter().map(|(_, i)| i).collect()
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

    fn assign(&mut self, forest: &SpanForest, index: usize, content: &Contents) {
        // Iterative, so that a very deep chain cannot overflow the stack.
        let mut stack = vec![index];
        while let Some(i) = stack.pop() {
            let span = forest.get(i).expect("index from the forest");
            let next_trace = self.traces.len() + 1;
            self.traces.entry(span.trace_id()).or_insert(next_trace);
            if self.spans[i] == 0 {
                self.assigned += 1;
                self.spans[i] = self.assigned;
            }
            let mut children = sorted_children(span, content);
            children.reverse();
            stack.extend(children);
        }
    }

    fn span(&self, index: usize) -> usize {
        self.spans.get(index).copied().unwrap_or(0)
    }

    fn trace(&self, trace: opentelemetry::trace::TraceId) -> usize {
        self.traces.get(&trace).copied().unwrap_or(0)
    }
}

/// The roots of each trace, ordered as sorting the `(content, roots)`
/// pairs would order them, but comparing each distinct content once: many
/// traces of a run render identically, and comparing those long equal texts
/// over and over is wasted work.
fn order_by_content(traces: Vec<(Cow<'_, str>, Vec<usize>)>) -> Vec<Vec<usize>> {
    let mut groups: HashMap<Cow<'_, str>, Vec<Vec<usize>>> = HashMap::new();
    for (content, roots) in traces {
        groups.entry(content).or_default().push(roots);
    }
    let mut groups: Vec<(Cow<'_, str>, Vec<Vec<usize>>)> = groups.into_iter().collect();
    groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    groups
        .into_iter()
        .flat_map(|(_, mut members)| {
            members.sort_unstable();
            members
        })
        .collect()
}

/// Per span index, filled by [`Render::content`]: the subtree's content
/// (for ordering) and the span's own head and attribute lines.
struct Contents {
    subtree: Vec<Option<String>>,
    base: Vec<Option<String>>,
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
    match value {
        Value::String(s) => format!("{:?}", s.as_str()),
        other => other.to_string(),
    }
}

/// The default rendering of `forest`, cut after `max_lines` lines.
pub(crate) fn summary(forest: &SpanForest, max_lines: usize) -> String {
    if forest.is_empty() {
        return "no span captured".to_owned();
    }
    let text = Render::new().forest(forest);
    let total = text.lines().count();
    if total <= max_lines {
        return format!("{} spans\n{text}", forest.len());
    }
    let mut cut: String = text
        .lines()
        .take(max_lines)
        .flat_map(|l| [l, "\n"])
        .collect();
    let _ = writeln!(cut, "… {} more lines", total - max_lines);
    format!("{} spans\n{cut}", forest.len())
}

impl SpanForest {
    /// [`Render::new`]'s rendering of the whole forest.
    pub fn render(&self) -> String {
        Render::new().forest(self)
    }
}
