//! Expected trace shapes and the assertions that compare them with a
//! [`SpanForest`], order-insensitively.
//!
//! Every panicking assertion has a `try_` twin returning [`Result`]; both
//! report expected vs actual as a diff, then the captured spans, then what
//! to do.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use opentelemetry::Value;
use opentelemetry::trace::SpanKind;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::forest::render::{kind as kind_name, summary, value as value_text};
use crate::forest::tree::{SpanForest, SpanView, Trace};

/// Spans and lines of evidence shown in a failure report.
const EVIDENCE_LINES: usize = 60;

/// A test on one attribute of a span.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AttributeMatcher {
    /// The attribute is present and equals the value.
    Equals(String, Value),
    /// The attribute is present, whatever its value.
    Present(String),
    /// The attribute is absent.
    Absent(String),
}

impl AttributeMatcher {
    /// The attribute key tested.
    pub fn key(&self) -> &str {
        match self {
            Self::Equals(k, _) | Self::Present(k) | Self::Absent(k) => k,
        }
    }

    fn holds(&self, span: &SpanView<'_>) -> bool {
        match self {
            Self::Equals(k, v) => span.attribute(k) == Some(v),
            Self::Present(k) => span.attribute(k).is_some(),
            Self::Absent(k) => span.attribute(k).is_none(),
        }
    }
}

/// The expected shape of a span and, recursively, of its subtree.
///
/// A span matches when its name is equal, its kind and service are equal
/// when given, every attribute matcher holds, every expected link points
/// at a distinct captured span with that name (extra links are allowed),
/// its status is Error when [`error`](Self::error) asks, and its children match the expected children one to one, in any order
/// (extra children are not allowed).
///
/// ```
/// use kafka_trace_harness::{ExpectedSpan, SpanCapture};
/// use opentelemetry::trace::{SpanKind, Tracer, TraceContextExt};
///
/// let capture = SpanCapture::new();
/// let datagen = capture.tracer("datagen");
/// let api = capture.tracer("api");
/// datagen.in_span("send trades", |cx| {
///     api.start_with_context("process trades", &cx);
/// });
///
/// capture.forest().assert_trace(
///     &ExpectedSpan::new("send trades")
///         .service("datagen")
///         .child(ExpectedSpan::new("process trades").kind(SpanKind::Internal).service("api")),
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct ExpectedSpan {
    name: String,
    kind: Option<SpanKind>,
    service: Option<String>,
    attributes: Vec<AttributeMatcher>,
    links: Vec<String>,
    error: Option<bool>,
    children: Vec<ExpectedSpan>,
}

impl ExpectedSpan {
    /// A span named `name`, any kind, any service, no children.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: None,
            service: None,
            attributes: Vec::new(),
            links: Vec::new(),
            error: None,
            children: Vec::new(),
        }
    }

    /// A PRODUCER span named `name`.
    pub fn producer(name: impl Into<String>) -> Self {
        Self::new(name).kind(SpanKind::Producer)
    }

    /// A CONSUMER span named `name`.
    pub fn consumer(name: impl Into<String>) -> Self {
        Self::new(name).kind(SpanKind::Consumer)
    }

    /// Requires this kind.
    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Requires this `service.name`.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// Requires attribute `key` to equal `value`.
    pub fn attr(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes
            .push(AttributeMatcher::Equals(key.into(), value.into()));
        self
    }

    /// Requires attribute `key` to be present.
    pub fn has_attr(mut self, key: impl Into<String>) -> Self {
        self.attributes.push(AttributeMatcher::Present(key.into()));
        self
    }

    /// Requires attribute `key` to be absent.
    pub fn no_attr(mut self, key: impl Into<String>) -> Self {
        self.attributes.push(AttributeMatcher::Absent(key.into()));
        self
    }

    /// Requires an Error status (`true`) or any other status (`false`).
    pub fn error(mut self, failed: bool) -> Self {
        self.error = Some(failed);
        self
    }

    /// Requires a link to a captured span named `target` (in any trace).
    pub fn link_to(mut self, target: impl Into<String>) -> Self {
        self.links.push(target.into());
        self
    }

    /// Adds an expected child.
    pub fn child(mut self, child: ExpectedSpan) -> Self {
        self.children.push(child);
        self
    }

    /// Adds expected children.
    pub fn children(mut self, children: impl IntoIterator<Item = ExpectedSpan>) -> Self {
        self.children.extend(children);
        self
    }

    /// Number of spans in this expected subtree.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(ExpectedSpan::len).sum::<usize>()
    }

    /// Always false: an expected tree has at least its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `span` and its subtree match this description.
    pub fn matches(&self, span: &SpanView<'_>) -> bool {
        self.matches_self(span) && self.children_match(span)
    }

    fn matches_self(&self, span: &SpanView<'_>) -> bool {
        span.name() == self.name
            && self.kind.as_ref().is_none_or(|k| k == span.kind())
            && self.service.as_deref().is_none_or(|s| s == span.service())
            && self.attributes.iter().all(|m| m.holds(span))
            && self.error.is_none_or(|e| e == is_error(span))
            && self.links_match(span)
    }

    fn links_match(&self, span: &SpanView<'_>) -> bool {
        let targets: Vec<Option<SpanView<'_>>> = span.links().map(|(_, t)| t).collect();
        let mut used = vec![false; targets.len()];
        self.links.iter().all(|wanted| {
            let found = targets
                .iter()
                .enumerate()
                .position(|(i, t)| !used[i] && t.as_ref().is_some_and(|t| t.name() == wanted));
            found.map(|i| used[i] = true).is_some()
        })
    }

    fn children_match(&self, span: &SpanView<'_>) -> bool {
        let actual: Vec<SpanView<'_>> = span.children().collect();
        if actual.len() != self.children.len() {
            return false;
        }
        let fits: Vec<Vec<bool>> = self
            .children
            .iter()
            .map(|e| actual.iter().map(|a| e.matches(a)).collect())
            .collect();
        perfect_matching(&fits)
    }

    /// Whether `trace` has exactly this shape: one root matching this
    /// description and no other span.
    pub fn matches_trace(&self, trace: &Trace<'_>) -> bool {
        // A root that only exists because a parent cycle was cut is no
        // root: such a trace matches nothing.
        match trace.roots().as_slice() {
            [root] => {
                trace.len() == self.len()
                    && root.forest().cycle_parent(root.index()).is_none()
                    && self.matches(root)
            }
            _ => false,
        }
    }
}

fn is_error(span: &SpanView<'_>) -> bool {
    matches!(span.status(), opentelemetry::trace::Status::Error { .. })
}

/// Kuhn's augmenting paths: can every expected child get its own actual one?
fn perfect_matching(fits: &[Vec<bool>]) -> bool {
    fn augment(
        e: usize,
        fits: &[Vec<bool>],
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        for a in 0..fits[e].len() {
            if fits[e][a] && !seen[a] {
                seen[a] = true;
                if owner[a].is_none_or(|other| augment(other, fits, seen, owner)) {
                    owner[a] = Some(e);
                    return true;
                }
            }
        }
        false
    }
    let actual = fits.first().map_or(0, Vec::len);
    let mut owner = vec![None; actual];
    (0..fits.len()).all(|e| augment(e, fits, &mut vec![false; actual], &mut owner))
}

/// What the expected trees talk about, so that actual spans are rendered
/// with the same fields and a line diff shows only real differences.
#[derive(Default)]
struct Projection {
    kind: bool,
    service: bool,
    error: bool,
    valued: BTreeSet<String>,
    presence: BTreeSet<String>,
    absence: BTreeSet<String>,
}

impl Projection {
    fn of(expected: &ExpectedSpan) -> Self {
        let mut p = Self::default();
        p.collect(expected);
        p
    }

    fn collect(&mut self, e: &ExpectedSpan) {
        self.kind |= e.kind.is_some();
        self.service |= e.service.is_some();
        self.error |= e.error.is_some();
        for m in &e.attributes {
            match m {
                AttributeMatcher::Equals(k, _) => self.valued.insert(k.clone()),
                AttributeMatcher::Present(k) => self.presence.insert(k.clone()),
                AttributeMatcher::Absent(k) => self.absence.insert(k.clone()),
            };
        }
        for c in &e.children {
            self.collect(c);
        }
    }

    fn head(
        &self,
        name: &str,
        kind: Option<&SpanKind>,
        service: Option<&str>,
        error: Option<bool>,
    ) -> String {
        let mut head = format!("{name:?}");
        if self.kind {
            head.push(' ');
            head.push_str(kind.map_or("(any kind)", kind_name));
        }
        if self.service {
            let _ = write!(head, " service={}", service.unwrap_or("(any)"));
        }
        if self.error {
            head.push_str(match error {
                Some(true) => " status=error",
                Some(false) => " status=not-error",
                None => " status=(any)",
            });
        }
        head
    }

    fn expected(&self, e: &ExpectedSpan) -> String {
        let head = self.head(&e.name, e.kind.as_ref(), e.service.as_deref(), e.error);
        let mut lines = vec![head];
        let mut attrs: Vec<String> = e
            .attributes
            .iter()
            .map(|m| match m {
                AttributeMatcher::Equals(k, v) => format!("  · {k} = {}", value_text(v)),
                AttributeMatcher::Present(k) if self.valued.contains(k) => {
                    format!("  · {k} = (any)")
                }
                AttributeMatcher::Present(k) => format!("  · {k} present"),
                AttributeMatcher::Absent(k) => format!("  · {k} absent"),
            })
            .collect();
        attrs.sort();
        lines.extend(attrs);
        let mut links: Vec<String> = e.links.iter().map(|l| format!("  → link {l:?}")).collect();
        links.sort();
        lines.extend(links);
        let mut children: Vec<String> = e.children.iter().map(|c| self.expected(c)).collect();
        children.sort();
        join(lines, children)
    }

    /// The projection of `span`'s subtree: its own lines, then each
    /// child's subtree indented, children sorted. Children first, on a
    /// stack of its own, so that a deep chain cannot overflow the thread's.
    fn actual(&self, span: &SpanView<'_>) -> String {
        let mut done: FxHashMap<usize, String> = FxHashMap::default();
        let mut stack = vec![(*span, false)];
        while let Some((at, children_done)) = stack.pop() {
            if !children_done {
                stack.push((at, true));
                stack.extend(at.children().map(|c| (c, false)));
                continue;
            }
            let mut children: Vec<String> = at
                .children()
                .filter_map(|c| done.remove(&c.index()))
                .collect();
            children.sort();
            done.insert(at.index(), join(self.own_lines(&at), children));
        }
        done.remove(&span.index()).unwrap_or_default()
    }

    /// The head, attribute and link lines of one actual span.
    fn own_lines(&self, span: &SpanView<'_>) -> Vec<String> {
        let head = self.head(
            span.name(),
            Some(span.kind()),
            Some(span.service()),
            Some(is_error(span)),
        );
        let mut lines = vec![head];
        let keys: BTreeSet<&String> = self
            .valued
            .iter()
            .chain(&self.presence)
            .chain(&self.absence)
            .collect();
        let mut attrs = Vec::new();
        for key in keys {
            match span.attribute(key) {
                Some(v) if self.valued.contains(key) => {
                    attrs.push(format!("  · {key} = {}", value_text(v)));
                }
                Some(_) if self.presence.contains(key) => attrs.push(format!("  · {key} present")),
                Some(v) => attrs.push(format!("  · {key} = {}", value_text(v))),
                None if self.absence.contains(key) => attrs.push(format!("  · {key} absent")),
                None => {}
            }
        }
        attrs.sort();
        lines.extend(attrs);
        let mut links: Vec<String> = span
            .links()
            .map(|(_, t)| match t {
                Some(t) => format!("  → link {:?}", t.name()),
                None => "  → link (not captured)".to_owned(),
            })
            .collect();
        links.sort();
        lines.extend(links);
        lines
    }

    fn actual_trace(&self, trace: &Trace<'_>) -> String {
        let mut roots: Vec<String> = trace.roots().iter().map(|r| self.actual(r)).collect();
        roots.sort();
        roots.join("\n")
    }
}

fn join(mut lines: Vec<String>, children: Vec<String>) -> String {
    for child in children {
        lines.extend(child.lines().map(|l| format!("  {l}")));
    }
    lines.join("\n")
}

/// A line diff (`-` expected, `+` actual, ` ` both) by longest common
/// subsequence; falls back to no diff when the inputs are huge.
fn diff(expected: &str, actual: &str) -> Option<(String, usize)> {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        return None;
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "    {}", a[i]);
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(out, "  + {}", b[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "  - {}", a[i]);
            i += 1;
        }
    }
    Some((out, lcs[0][0] as usize))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

impl SpanForest {
    /// Panics unless at least one trace has exactly the `expected` shape.
    #[track_caller]
    pub fn assert_trace(&self, expected: &ExpectedSpan) {
        if let Err(e) = self.try_assert_trace(expected) {
            panic!("{e}");
        }
    }

    /// [`assert_trace`](Self::assert_trace), returning the report instead.
    pub fn try_assert_trace(&self, expected: &ExpectedSpan) -> Result<()> {
        let found = self.matching_traces(expected);
        if found > 0 {
            return Ok(());
        }
        Err(self.shape_report(
            expected,
            &format!("expected at least 1 trace like this, found {found}"),
        ))
    }

    /// Panics unless exactly `count` traces have the `expected` shape.
    #[track_caller]
    pub fn assert_traces(&self, count: usize, expected: &ExpectedSpan) {
        if let Err(e) = self.try_assert_traces(count, expected) {
            panic!("{e}");
        }
    }

    /// [`assert_traces`](Self::assert_traces), returning the report instead.
    pub fn try_assert_traces(&self, count: usize, expected: &ExpectedSpan) -> Result<()> {
        let found = self.matching_traces(expected);
        if found == count {
            return Ok(());
        }
        Err(self.shape_report(
            expected,
            &format!("expected exactly {count} traces like this, found {found}"),
        ))
    }

    /// Panics unless every span of kind `child` has a parent of kind
    /// `parent` (e.g. every CONSUMER span is a child of a PRODUCER span).
    #[track_caller]
    pub fn assert_every_parent(&self, child: SpanKind, parent: SpanKind) {
        if let Err(e) = self.try_assert_every_parent(child, parent) {
            panic!("{e}");
        }
    }

    /// [`assert_every_parent`](Self::assert_every_parent), returning the
    /// report instead.
    pub fn try_assert_every_parent(&self, child: SpanKind, parent: SpanKind) -> Result<()> {
        let mut offenders: Vec<String> = self
            .of_kind(child.clone())
            .filter_map(|span| {
                let actual = span.parent();
                if actual.is_some_and(|p| p.kind() == &parent) {
                    return None;
                }
                let what = match actual {
                    Some(p) => format!("has parent {:?} {}", p.name(), kind_name(p.kind())),
                    None if span.is_root() => "is a root".to_owned(),
                    None if self.cycle_parent(span.index()).is_some() => {
                        "is in a parent cycle".to_owned()
                    }
                    None => "names a parent that was never captured".to_owned(),
                };
                Some(format!(
                    "{:?} (service {}) {what}",
                    span.name(),
                    span.service()
                ))
            })
            .collect();
        if offenders.is_empty() {
            return Ok(());
        }
        offenders.sort();
        let total = self.of_kind(child.clone()).count();
        let mut report = format!(
            "expected every {} span to have a {} parent; {} of {total} do not\n\n",
            kind_name(&child),
            kind_name(&parent),
            offenders.len(),
        );
        for line in offenders.iter().take(20) {
            let _ = writeln!(report, "  {line}");
        }
        if offenders.len() > 20 {
            let _ = writeln!(report, "  … {} more", offenders.len() - 20);
        }
        let _ = write!(
            report,
            "\ncaptured spans:\n{}\nwhat to do: a missing parent usually means the context \
             was not injected into the record headers or not extracted from them; check \
             that the producer injects inside its span and that the consumer starts its \
             span from the extracted context (not link-only).",
            indent(&summary(self, EVIDENCE_LINES))
        );
        Err(Error::Assertion(report))
    }

    /// Panics if the forest has any [`crate::Problem`].
    #[track_caller]
    pub fn assert_no_problems(&self) {
        if let Err(e) = self.try_assert_no_problems() {
            panic!("{e}");
        }
    }

    /// [`assert_no_problems`](Self::assert_no_problems), returning the
    /// report instead.
    pub fn try_assert_no_problems(&self) -> Result<()> {
        if self.problems().is_empty() {
            return Ok(());
        }
        Err(Error::Assertion(format!(
            "expected no structural problem, found {}\n\ncaptured spans:\n{}\nwhat to do: \
             an orphan or a wrong-trace parent means a context was lost or mixed between \
             records; a dangling link points at a span this test did not capture (end \
             that span, or capture its service); a duplicate span id, a parent cycle or a \
             trace without root means span ids were reused or set by hand (a fixed id in a \
             test, or one context copied into several spans).",
            self.problems().len(),
            indent(&summary(self, EVIDENCE_LINES))
        )))
    }

    fn matching_traces(&self, expected: &ExpectedSpan) -> usize {
        self.traces()
            .iter()
            .filter(|t| expected.matches_trace(t))
            .count()
    }

    fn shape_report(&self, expected: &ExpectedSpan, headline: &str) -> Error {
        let projection = Projection::of(expected);
        let want = projection.expected(expected);
        let mut report = format!(
            "{headline} among {} traces ({} spans)\n\nexpected trace:\n{}",
            self.traces().len(),
            self.len(),
            indent(&want)
        );
        // The closest trace: most lines in common with the expected one,
        // ties broken by text so that the report is deterministic.
        let closest = self
            .traces()
            .iter()
            .map(|t| projection.actual_trace(t))
            .filter_map(|text| diff(&want, &text).map(|(d, common)| (common, text, d)))
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
        match closest {
            Some((_, text, d)) => {
                let _ = write!(
                    report,
                    "\nclosest actual trace:\n{}\ndiff (- expected, + actual):\n{d}",
                    indent(&text)
                );
            }
            None => report.push_str("\nno trace was captured\n"),
        }
        let _ = write!(
            report,
            "\ncaptured spans:\n{}\nwhat to do: if the diff shows a missing child, check that \
             its span ended before the assertion (use SpanCapture::wait_for) and that it was \
             started from the right context; if names, kinds or services differ, fix the \
             instrumentation or the expectation.",
            indent(&summary(self, EVIDENCE_LINES))
        );
        Error::Assertion(report)
    }
}
