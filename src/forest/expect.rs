//! Expected trace shapes and the assertions that compare them with a
//! [`SpanForest`], order-insensitively.
//!
//! An [`ExpectedSpan`] is exact by default: a matched span has exactly the
//! children listed. Real services add spans a test does not care about
//! (HTTP, database, `#[instrument]`ed functions, the Java agent's `receive`
//! spans), so a shape can be partial: [`ExpectedSpan::allow_extra_children`]
//! accepts unlisted children, [`ExpectedSpan::descendant`] finds a span at
//! any depth below, and [`ExpectedSpan::at_any_depth`] on the root finds
//! the shape anywhere in a trace.
//!
//! Every panicking assertion has a `try_` twin returning [`Result`]; both
//! report a unified diff of the expected trace and the closest actual one,
//! then the captured spans and their problems, then what to do.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::hash::{Hash as _, Hasher as _};
use std::ops::RangeInclusive;
use std::sync::Arc;

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{KeyValue, Value};
use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use similar::{DiffOp, TextDiff};

use crate::capture::Condition;
use crate::error::{Error, Result};
use crate::forest::render::{kind as kind_name, summary, value as value_text};
use crate::forest::tree::{SpanForest, SpanView, Trace};

/// Lines of captured spans (and of problems) shown in a failure report.
const EVIDENCE_LINES: usize = 60;
/// Lines of an expected or actual tree compared in a report.
const TREE_LINES: usize = 400;
/// Lines of the diff shown in a report.
const DIFF_LINES: usize = 150;
/// Distinct actual traces diffed to find the closest one; the others are
/// ranked by lines in common, a cheap upper bound.
const DIFF_CANDIDATES: usize = 200;
/// Offenders listed by [`SpanForest::assert_every_parent`].
const OFFENDER_LINES: usize = 20;
/// The line a partial expected span, and the actual span it aligns with,
/// carry in a report.
const PARTIAL_LINE: &str = "  (other children allowed)";

/// A test on one attribute (of a span or of a link).
///
/// Strings are tested as strings only: [`Prefix`](Self::Prefix) and
/// [`Contains`](Self::Contains) fail on an integer attribute, and
/// [`IntRange`](Self::IntRange) fails on a string one (the 1.44
/// conventions make `messaging.destination.partition.id` a string).
///
/// ```
/// use kafka_trace_harness::{AttributeMatcher, ExpectedSpan, SpanCapture};
/// use opentelemetry::KeyValue;
/// use opentelemetry::trace::Tracer;
///
/// let capture = SpanCapture::new();
/// let tracer = capture.tracer("shop");
/// tracer
///     .span_builder("send orders")
///     .with_attributes([
///         KeyValue::new("messaging.destination.name", "orders-eu-1"),
///         KeyValue::new("messaging.kafka.offset", 41_i64),
///         KeyValue::new("messaging.client.id", "producer-7"),
///     ])
///     .start(&tracer);
///
/// capture.forest().assert_trace(
///     &ExpectedSpan::new("send orders")
///         .attribute(AttributeMatcher::prefix("messaging.destination.name", "orders-"))
///         .attribute(AttributeMatcher::int_range("messaging.kafka.offset", 0..=100))
///         .attribute(AttributeMatcher::contains("messaging.client.id", "producer"))
///         .attribute(AttributeMatcher::any("messaging.destination.name"))
///         .attr_matches("messaging.kafka.offset", "an odd offset", |v| {
///             matches!(v, opentelemetry::Value::I64(n) if n % 2 == 1)
///         }),
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AttributeMatcher {
    /// The attribute is present and equals the value.
    Equals(String, Value),
    /// The attribute is present, whatever its value.
    Present(String),
    /// The attribute is absent.
    Absent(String),
    /// The attribute is a string starting with this text.
    Prefix(String, String),
    /// The attribute is a string containing this text.
    Contains(String, String),
    /// The attribute is an integer (`i64`) in this range.
    IntRange(String, RangeInclusive<i64>),
    /// The attribute is present and passes the predicate.
    Predicate(String, ValuePredicate),
}

impl AttributeMatcher {
    /// Attribute `key` equals `value`.
    pub fn equals(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::Equals(key.into(), value.into())
    }

    /// Attribute `key` is present, with any value.
    pub fn any(key: impl Into<String>) -> Self {
        Self::Present(key.into())
    }

    /// Attribute `key` is absent.
    pub fn absent(key: impl Into<String>) -> Self {
        Self::Absent(key.into())
    }

    /// Attribute `key` is a string starting with `prefix`.
    pub fn prefix(key: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self::Prefix(key.into(), prefix.into())
    }

    /// Attribute `key` is a string containing `part`.
    pub fn contains(key: impl Into<String>, part: impl Into<String>) -> Self {
        Self::Contains(key.into(), part.into())
    }

    /// Attribute `key` is an integer in `range`.
    pub fn int_range(key: impl Into<String>, range: RangeInclusive<i64>) -> Self {
        Self::IntRange(key.into(), range)
    }

    /// Attribute `key` is present and `test` accepts its value;
    /// `description` says what `test` checks, for failure reports.
    pub fn predicate(
        key: impl Into<String>,
        description: impl Into<String>,
        test: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::Predicate(key.into(), ValuePredicate::new(description, test))
    }

    /// The attribute key tested.
    pub fn key(&self) -> &str {
        match self {
            Self::Equals(k, _)
            | Self::Present(k)
            | Self::Absent(k)
            | Self::Prefix(k, _)
            | Self::Contains(k, _)
            | Self::IntRange(k, _)
            | Self::Predicate(k, _) => k,
        }
    }

    /// Whether the test passes for the attribute's value (`None` when the
    /// attribute is absent).
    ///
    /// ```
    /// use kafka_trace_harness::AttributeMatcher;
    /// use opentelemetry::Value;
    ///
    /// let matcher = AttributeMatcher::int_range("messaging.kafka.offset", 0..=9);
    /// assert!(matcher.accepts(Some(&Value::I64(3))));
    /// assert!(!matcher.accepts(Some(&Value::I64(10))));
    /// assert!(!matcher.accepts(None));
    /// ```
    pub fn accepts(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Self::Absent(_), value) => value.is_none(),
            (_, None) => false,
            (Self::Equals(_, want), Some(v)) => v == want,
            (Self::Present(_), Some(_)) => true,
            (Self::Prefix(_, prefix), Some(Value::String(s))) => s.as_str().starts_with(prefix),
            (Self::Contains(_, part), Some(Value::String(s))) => s.as_str().contains(part),
            (Self::IntRange(_, range), Some(Value::I64(n))) => range.contains(n),
            (Self::Predicate(_, predicate), Some(v)) => predicate.test(v),
            (Self::Prefix(..) | Self::Contains(..) | Self::IntRange(..), Some(_)) => false,
        }
    }
}

/// `key = value`, `key starts with "text"`, … as reports write them.
impl fmt::Display for AttributeMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Equals(k, v) => write!(f, "{k} = {}", value_text(v)),
            Self::Present(k) => write!(f, "{k} present"),
            Self::Absent(k) => write!(f, "{k} absent"),
            Self::Prefix(k, prefix) => write!(f, "{k} starts with {prefix:?}"),
            Self::Contains(k, part) => write!(f, "{k} contains {part:?}"),
            Self::IntRange(k, range) => write!(f, "{k} in {}..={}", range.start(), range.end()),
            Self::Predicate(k, predicate) => write!(f, "{k}: {}", predicate.description()),
        }
    }
}

/// A test on an attribute value with a description for reports: the
/// closure behind [`AttributeMatcher::predicate`].
///
/// Two predicates are equal when they share the description and the same
/// closure (clones of one predicate), since closures cannot be compared.
#[derive(Clone)]
pub struct ValuePredicate {
    description: String,
    test: Arc<dyn Fn(&Value) -> bool + Send + Sync>,
}

impl ValuePredicate {
    /// A predicate described by `description`.
    pub fn new(
        description: impl Into<String>,
        test: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            description: description.into(),
            test: Arc::new(test),
        }
    }

    /// What the predicate checks.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether `value` passes.
    pub fn test(&self, value: &Value) -> bool {
        (self.test)(value)
    }
}

impl fmt::Debug for ValuePredicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValuePredicate")
            .field(&self.description)
            .finish()
    }
}

impl PartialEq for ValuePredicate {
    fn eq(&self, other: &Self) -> bool {
        self.description == other.description && Arc::ptr_eq(&self.test, &other.test)
    }
}

/// The last value of `key` among `attributes`, as a span's own lookup does.
fn lookup<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .rev()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// An expected link: its target's name and tests on the link's own
/// attributes (those given to `Link::new`, not the target's).
///
/// ```
/// use kafka_trace_harness::forest::ExpectedLink;
/// use kafka_trace_harness::{ExpectedSpan, SpanCapture};
/// use opentelemetry::KeyValue;
/// use opentelemetry::trace::{Link, Span, Tracer};
///
/// let capture = SpanCapture::new();
/// let tracer = capture.tracer("processor");
/// let mut user = tracer.start("send users");
/// let user_cx = user.span_context().clone();
/// user.end();
/// tracer
///     .span_builder("process trades")
///     .with_links(vec![Link::new(user_cx, vec![KeyValue::new("join", "user")], 0)])
///     .start(&tracer);
///
/// capture.forest().assert_trace(
///     &ExpectedSpan::new("process trades")
///         .link(ExpectedLink::to("send users").attr("join", "user")),
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct ExpectedLink {
    target: String,
    attributes: Vec<AttributeMatcher>,
}

impl ExpectedLink {
    /// A link to a captured span named `target`, in any trace.
    pub fn to(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            attributes: Vec::new(),
        }
    }

    /// Requires link attribute `key` to equal `value`.
    pub fn attr(self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attribute(AttributeMatcher::equals(key, value))
    }

    /// Requires link attribute `key` to be present.
    pub fn has_attr(self, key: impl Into<String>) -> Self {
        self.attribute(AttributeMatcher::any(key))
    }

    /// Requires link attribute `key` to be absent.
    pub fn no_attr(self, key: impl Into<String>) -> Self {
        self.attribute(AttributeMatcher::absent(key))
    }

    /// Requires `matcher` to hold on the link's attributes.
    pub fn attribute(mut self, matcher: AttributeMatcher) -> Self {
        self.attributes.push(matcher);
        self
    }

    fn matches(&self, target: Option<&SpanView<'_>>, attributes: &[KeyValue]) -> bool {
        target.is_some_and(|t| t.name() == self.target)
            && self
                .attributes
                .iter()
                .all(|m| m.accepts(lookup(attributes, m.key())))
    }

    /// `→ link "target" with k = v, …` as reports write it.
    fn text(&self) -> String {
        let mut tests: Vec<String> = self.attributes.iter().map(ToString::to_string).collect();
        tests.sort();
        link_line(Some(&self.target), &tests)
    }
}

fn link_line(target: Option<&str>, attributes: &[String]) -> String {
    let mut line = match target {
        Some(name) => format!("  → link {name:?}"),
        None => "  → link <not captured>".to_owned(),
    };
    if !attributes.is_empty() {
        let _ = write!(line, " with {}", attributes.join(", "));
    }
    line
}

/// The expected shape of a span and, recursively, of its subtree.
///
/// A span matches when its name is equal, its kind and service are equal
/// when given, every attribute test holds, every expected link matches a
/// distinct link of the span (extra links are allowed), its status is
/// Error when [`error`](Self::error) asks, and its children match:
///
/// - by default exactly: the expected children match the actual ones one
///   to one, in any order, and no other child is allowed;
/// - with [`allow_extra_children`](Self::allow_extra_children), the
///   expected children match distinct actual ones and the rest are
///   ignored, whole subtrees included;
/// - an expected child added with [`descendant`](Self::descendant) may
///   match a span at any depth below, and other spans are allowed (the
///   ones in between, at least, are not listed).
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
    links: Vec<ExpectedLink>,
    error: Option<bool>,
    children: Vec<ExpectedSpan>,
    extra_children: bool,
    any_depth: bool,
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
            extra_children: false,
            any_depth: false,
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

    /// A CLIENT span named `name` (an outgoing call; the Java agent's
    /// `receive` spans).
    pub fn client(name: impl Into<String>) -> Self {
        Self::new(name).kind(SpanKind::Client)
    }

    /// A SERVER span named `name` (an incoming request).
    pub fn server(name: impl Into<String>) -> Self {
        Self::new(name).kind(SpanKind::Server)
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
    pub fn attr(self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attribute(AttributeMatcher::equals(key, value))
    }

    /// Requires attribute `key` to be present.
    pub fn has_attr(self, key: impl Into<String>) -> Self {
        self.attribute(AttributeMatcher::any(key))
    }

    /// Requires attribute `key` to be absent.
    pub fn no_attr(self, key: impl Into<String>) -> Self {
        self.attribute(AttributeMatcher::absent(key))
    }

    /// Requires `matcher` to hold (a prefix, a substring, an integer
    /// range, …: see [`AttributeMatcher`]).
    pub fn attribute(mut self, matcher: AttributeMatcher) -> Self {
        self.attributes.push(matcher);
        self
    }

    /// Requires attribute `key` to be present and `test` to accept its
    /// value; `description` says what `test` checks, for failure reports.
    ///
    /// ```
    /// use kafka_trace_harness::{ExpectedSpan, SpanCapture};
    /// use opentelemetry::{KeyValue, Value};
    /// use opentelemetry::trace::Tracer;
    ///
    /// let capture = SpanCapture::new();
    /// let tracer = capture.tracer("api");
    /// tracer
    ///     .span_builder("process trades")
    ///     .with_attributes([KeyValue::new("messaging.message.body.size", 312_i64)])
    ///     .start(&tracer);
    ///
    /// let small = |v: &Value| matches!(v, Value::I64(n) if *n < 1024);
    /// capture.forest().assert_trace(
    ///     &ExpectedSpan::new("process trades")
    ///         .attr_matches("messaging.message.body.size", "under 1 KiB", small),
    /// );
    /// ```
    pub fn attr_matches(
        self,
        key: impl Into<String>,
        description: impl Into<String>,
        test: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.attribute(AttributeMatcher::predicate(key, description, test))
    }

    /// Requires an Error status (`true`) or any other status (`false`).
    pub fn error(mut self, failed: bool) -> Self {
        self.error = Some(failed);
        self
    }

    /// Requires a link to a captured span named `target` (in any trace),
    /// whatever the link's attributes.
    pub fn link_to(self, target: impl Into<String>) -> Self {
        self.link(ExpectedLink::to(target))
    }

    /// Requires a link matching `link`: its target's name and its own
    /// attributes (see [`ExpectedLink`]).
    pub fn link(mut self, link: ExpectedLink) -> Self {
        self.links.push(link);
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

    /// Adds an expected span that may sit at any depth below this one
    /// (the same as `.child(descendant.at_any_depth())`).
    ///
    /// A span with a descendant allows other children: the spans between
    /// it and the descendant are children it does not list.
    ///
    /// ```
    /// use kafka_trace_harness::{ExpectedSpan, SpanCapture};
    /// use opentelemetry::trace::{TraceContextExt, Tracer};
    ///
    /// // send → receive → process, and an HTTP call the test ignores.
    /// let capture = SpanCapture::new();
    /// let tracer = capture.tracer("svc");
    /// tracer.in_span("send orders", |cx| {
    ///     tracer.start_with_context("GET /stock", &cx);
    ///     let receive = cx.with_span(tracer.start_with_context("orders receive", &cx));
    ///     tracer.start_with_context("orders process", &receive);
    /// });
    ///
    /// capture.forest().assert_trace(
    ///     &ExpectedSpan::new("send orders").descendant(ExpectedSpan::new("orders process")),
    /// );
    /// ```
    pub fn descendant(self, descendant: ExpectedSpan) -> Self {
        self.child(descendant.at_any_depth())
    }

    /// Lets this span sit at any depth below the span listing it (as
    /// [`descendant`](Self::descendant) does) or, on the expected root,
    /// anywhere in a trace: the trace may then have other spans above and
    /// beside it.
    ///
    /// ```
    /// use kafka_trace_harness::{ExpectedSpan, SpanCapture};
    /// use opentelemetry::trace::{TraceContextExt, Tracer};
    ///
    /// // The send happens inside an HTTP request the test does not list.
    /// let capture = SpanCapture::new();
    /// let tracer = capture.tracer("shop");
    /// tracer.in_span("POST /orders", |cx| {
    ///     let send = cx.with_span(tracer.start_with_context("send orders", &cx));
    ///     tracer.start_with_context("process orders", &send);
    /// });
    ///
    /// let send = ExpectedSpan::new("send orders").child(ExpectedSpan::new("process orders"));
    /// let forest = capture.forest();
    /// assert!(forest.try_assert_trace(&send).is_err()); // the root is the HTTP span
    /// forest.assert_trace(&send.at_any_depth());
    /// ```
    pub fn at_any_depth(mut self) -> Self {
        self.any_depth = true;
        self
    }

    /// Accepts children this span does not list (and their subtrees); the
    /// listed ones must still match distinct actual children.
    ///
    /// ```
    /// use kafka_trace_harness::{ExpectedSpan, SpanCapture};
    /// use opentelemetry::trace::{TraceContextExt, Tracer};
    ///
    /// let capture = SpanCapture::new();
    /// let tracer = capture.tracer("billing");
    /// tracer.in_span("process orders", |cx| {
    ///     tracer.start_with_context("SELECT accounts", &cx);
    ///     tracer.start_with_context("send invoices", &cx);
    /// });
    ///
    /// let process = ExpectedSpan::new("process orders").child(ExpectedSpan::new("send invoices"));
    /// let forest = capture.forest();
    /// assert!(forest.try_assert_trace(&process).is_err()); // exact: SELECT is not listed
    /// forest.assert_trace(&process.allow_extra_children());
    /// ```
    pub fn allow_extra_children(mut self) -> Self {
        self.extra_children = true;
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

    /// Whether `span` and its subtree match this description (whether the
    /// root is [`at_any_depth`](Self::at_any_depth) or not).
    pub fn matches(&self, span: &SpanView<'_>) -> bool {
        Matcher::default().matches(self, span)
    }

    /// Whether `trace` has this shape: its one root matches this
    /// description and, unless the description is partial, the trace has
    /// no other span. A root [`at_any_depth`](Self::at_any_depth) may
    /// match any span of the trace instead.
    pub fn matches_trace(&self, trace: &Trace<'_>) -> bool {
        Matcher::default().matches_trace(self, trace)
    }

    /// Whether unlisted spans below this one are allowed.
    fn partial(&self) -> bool {
        self.extra_children || self.children.iter().any(|c| c.any_depth)
    }

    /// Whether no span of the subtree is partial or placed at any depth.
    fn is_exact(&self) -> bool {
        !self.any_depth && !self.partial() && self.children.iter().all(ExpectedSpan::is_exact)
    }

    fn matches_self(&self, span: &SpanView<'_>) -> bool {
        span.name() == self.name
            && self.kind.as_ref().is_none_or(|k| k == span.kind())
            && self.service.as_deref().is_none_or(|s| s == span.service())
            && self
                .attributes
                .iter()
                .all(|m| m.accepts(span.attribute(m.key())))
            && self.error.is_none_or(|e| e == is_error(span))
            && self.links_match(span)
    }

    fn links_match(&self, span: &SpanView<'_>) -> bool {
        if self.links.is_empty() {
            return true;
        }
        perfect_matching(&self.link_fits(&actual_links(span)))
    }

    /// Which actual link each expected link accepts.
    fn link_fits(&self, actual: &[ActualLink<'_>]) -> Vec<Vec<bool>> {
        self.links
            .iter()
            .map(|l| {
                actual
                    .iter()
                    .map(|(t, attributes)| l.matches(t.as_ref(), attributes))
                    .collect()
            })
            .collect()
    }

    /// A short description, for conditions: the root's name and kind.
    fn describe(&self) -> String {
        let mut text = format!("{:?}", self.name);
        if let Some(kind) = &self.kind {
            let _ = write!(text, " {}", kind_name(kind));
        }
        let _ = write!(text, " ({} spans listed)", self.len());
        text
    }
}

/// A link's target (when captured) and the link's own attributes.
type ActualLink<'f> = (Option<SpanView<'f>>, &'f [KeyValue]);

fn actual_links<'f>(span: &SpanView<'f>) -> Vec<ActualLink<'f>> {
    span.links()
        .zip(&span.data().links.links)
        .map(|((_, target), link)| (target, link.attributes.as_slice()))
        .collect()
}

fn is_error(span: &SpanView<'_>) -> bool {
    matches!(span.status(), Status::Error { .. })
}

fn is_child(candidate: &SpanView<'_>, of: &SpanView<'_>) -> bool {
    candidate.parent().is_some_and(|p| p.index() == of.index())
}

/// Every span below `span`, parents before children; iterative, so that a
/// deep chain cannot overflow the stack.
fn descendants<'f>(span: &SpanView<'f>) -> Vec<SpanView<'f>> {
    let mut out = Vec::new();
    let mut stack: Vec<SpanView<'f>> = span.children().collect();
    stack.reverse();
    while let Some(at) = stack.pop() {
        let before = stack.len();
        stack.extend(at.children());
        stack[before..].reverse();
        out.push(at);
    }
    out
}

/// The spans an expected span's children may match: its children, or,
/// when one of them may sit at any depth, the spans below it that bear an
/// expected name (a partial span, so the others need not be counted).
fn candidates<'f>(expected: &ExpectedSpan, span: &SpanView<'f>) -> Vec<SpanView<'f>> {
    if expected.children.iter().any(|c| c.any_depth) {
        let mut below = descendants(span);
        below.retain(|s| expected.children.iter().any(|c| c.name == s.name()));
        below
    } else {
        span.children().collect()
    }
}

/// Matching with memory: a descendant is tried against every span below
/// its parent, so nested ones would otherwise cost a power of the trace's
/// size.
#[derive(Default)]
struct Matcher {
    /// (expected span's address, span index) → whether they match.
    memo: FxHashMap<(usize, usize), bool>,
}

impl Matcher {
    fn matches(&mut self, expected: &ExpectedSpan, span: &SpanView<'_>) -> bool {
        if span.name() != expected.name {
            return false;
        }
        let key = (std::ptr::from_ref(expected).addr(), span.index());
        if let Some(&known) = self.memo.get(&key) {
            return known;
        }
        let found = expected.matches_self(span) && self.children_match(expected, span);
        self.memo.insert(key, found);
        found
    }

    fn children_match(&mut self, expected: &ExpectedSpan, span: &SpanView<'_>) -> bool {
        let partial = expected.partial();
        if expected.children.is_empty() {
            return partial || span.children().next().is_none();
        }
        let candidates = candidates(expected, span);
        if candidates.len() < expected.children.len()
            || (!partial && candidates.len() != expected.children.len())
        {
            return false;
        }
        let fits = self.fits(expected, span, &candidates);
        perfect_matching(&fits)
    }

    /// Which candidate each expected child matches.
    fn fits(
        &mut self,
        expected: &ExpectedSpan,
        span: &SpanView<'_>,
        candidates: &[SpanView<'_>],
    ) -> Vec<Vec<bool>> {
        expected
            .children
            .iter()
            .map(|c| {
                candidates
                    .iter()
                    .map(|a| (c.any_depth || is_child(a, span)) && self.matches(c, a))
                    .collect()
            })
            .collect()
    }

    fn matches_trace(&mut self, expected: &ExpectedSpan, trace: &Trace<'_>) -> bool {
        if expected.any_depth {
            return trace.spans().any(|s| self.matches(expected, &s));
        }
        // A root that only exists because a parent cycle was cut is no
        // root: such a trace matches nothing.
        match trace.roots().as_slice() {
            [root] => {
                (!expected.is_exact() || trace.len() == expected.len())
                    && root.forest().cycle_parent(root.index()).is_none()
                    && self.matches(expected, root)
            }
            _ => false,
        }
    }
}

/// Kuhn's augmenting paths: for each column (actual), the row (expected)
/// it is given to, in a maximum matching.
fn maximum_matching(fits: &[Vec<bool>]) -> Vec<Option<usize>> {
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
    let mut seen = vec![false; actual];
    for e in 0..fits.len() {
        seen.fill(false);
        augment(e, fits, &mut seen, &mut owner);
    }
    owner
}

/// Whether every row gets a column of its own.
fn perfect_matching(fits: &[Vec<bool>]) -> bool {
    maximum_matching(fits).iter().flatten().count() == fits.len()
}

/// Renders the expected tree and the actual trees as lines for the diff.
///
/// An actual span aligned with an expected one is shown through the
/// expectation: a test that passes is written as the expectation writes it
/// and a test that fails shows the actual value, so the diff marks only
/// real differences. Spans a partial expectation allows are left out;
/// spans an exact one does not allow are shown whole.
///
/// Candidates are always taken in content order (their text, then a hash
/// of their subtree's), never capture order, so that the report is the
/// same from run to run: spans alike in both render alike.
struct Explain<'e> {
    matcher: Matcher,
    /// Every attribute key the expectation tests on spans: what an actual
    /// span aligned with nothing shows.
    keys: BTreeSet<&'e str>,
    /// Every attribute key the expectation tests on links.
    link_keys: BTreeSet<&'e str>,
    /// Content hash of each actual subtree seen so far, by span index.
    hashes: FxHashMap<usize, u64>,
    /// Lines left for actual spans aligned with nothing, in one trace.
    budget: usize,
}

impl<'e> Explain<'e> {
    fn new(expected: &'e ExpectedSpan) -> Self {
        let mut keys = BTreeSet::new();
        let mut link_keys = BTreeSet::new();
        let mut stack = vec![expected];
        while let Some(e) = stack.pop() {
            keys.extend(e.attributes.iter().map(AttributeMatcher::key));
            for link in &e.links {
                link_keys.extend(link.attributes.iter().map(AttributeMatcher::key));
            }
            stack.extend(&e.children);
        }
        Self {
            matcher: Matcher::default(),
            keys,
            link_keys,
            hashes: FxHashMap::default(),
            budget: TREE_LINES,
        }
    }

    fn expected_text(&self, e: &ExpectedSpan) -> String {
        let mut lines = vec![head(
            e.any_depth,
            &e.name,
            e.kind.as_ref(),
            e.service.as_deref(),
            e.error,
        )];
        let mut attributes: Vec<String> = e.attributes.iter().map(|m| format!("  · {m}")).collect();
        attributes.sort();
        lines.extend(attributes);
        let mut links: Vec<String> = e.links.iter().map(ExpectedLink::text).collect();
        links.sort();
        lines.extend(links);
        if e.partial() {
            lines.push(PARTIAL_LINE.to_owned());
        }
        let mut children: Vec<String> = e.children.iter().map(|c| self.expected_text(c)).collect();
        children.sort();
        join(lines, &children)
    }

    /// `span` seen through `e`, which it is aligned with.
    fn aligned_text(&mut self, e: &ExpectedSpan, span: &SpanView<'_>) -> String {
        let mut lines = vec![head(
            e.any_depth,
            span.name(),
            e.kind.as_ref().map(|_| span.kind()),
            e.service.as_ref().map(|_| span.service()),
            e.error.map(|_| is_error(span)),
        )];
        let mut attributes: Vec<String> = e
            .attributes
            .iter()
            .map(|m| {
                let value = span.attribute(m.key());
                if m.accepts(value) {
                    format!("  · {m}")
                } else {
                    format!("  · {}", actual_attribute(m.key(), value))
                }
            })
            .collect();
        attributes.sort();
        lines.extend(attributes);
        lines.extend(aligned_links(e, span));
        if e.partial() {
            lines.push(PARTIAL_LINE.to_owned());
        }
        let children = self.aligned_children(e, span);
        join(lines, &children)
    }

    /// The texts of `span`'s children as `e` sees them: each expected
    /// child's actual counterpart, and the children an exact `e` does not
    /// allow.
    fn aligned_children(&mut self, e: &ExpectedSpan, span: &SpanView<'_>) -> Vec<String> {
        let candidates = self.in_content_order(candidates(e, span));
        let fits = self.matcher.fits(e, span, &candidates);
        // Children that match go to their match first, so that a greedy
        // choice below cannot take a span another child needs.
        let mut given: Vec<Option<usize>> = vec![None; e.children.len()];
        for (a, owner) in maximum_matching(&fits).into_iter().enumerate() {
            if let Some(c) = owner {
                given[c] = Some(a);
            }
        }
        let mut taken: FxHashSet<usize> = given.iter().flatten().copied().collect();
        let mut order: Vec<(String, usize)> = e
            .children
            .iter()
            .enumerate()
            .map(|(i, c)| (self.expected_text(c), i))
            .collect();
        order.sort();
        for &(_, c) in &order {
            if given[c].is_some() {
                continue;
            }
            let child = &e.children[c];
            // The best score, the first in content order among equals.
            let best = (0..candidates.len())
                .filter(|&a| {
                    !taken.contains(&a)
                        && candidates[a].name() == child.name
                        && (child.any_depth || is_child(&candidates[a], span))
                })
                .min_by_key(|&a| (std::cmp::Reverse(score(child, &candidates[a])), a));
            if let Some(a) = best {
                given[c] = Some(a);
                taken.insert(a);
            }
        }
        let mut texts = Vec::new();
        let mut claimed = FxHashSet::default();
        for &(_, c) in &order {
            if let Some(a) = given[c] {
                claimed.insert(candidates[a].index());
                texts.push(self.aligned_text(&e.children[c], &candidates[a]));
            }
        }
        if !e.partial() {
            let extra: Vec<SpanView<'_>> = span
                .children()
                .filter(|c| !claimed.contains(&c.index()))
                .collect();
            for child in self.in_content_order(extra) {
                texts.push(self.unaligned_text(&child));
            }
        }
        texts.sort();
        texts
    }

    /// `spans` sorted by content.
    fn in_content_order<'f>(&mut self, spans: Vec<SpanView<'f>>) -> Vec<SpanView<'f>> {
        if spans.len() < 2 {
            return spans;
        }
        let mut keyed: Vec<((String, u64), SpanView<'f>)> = spans
            .into_iter()
            .map(|s| ((self.own_text(&s), self.content_hash(&s)), s))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.into_iter().map(|(_, s)| s).collect()
    }

    /// The head, attribute and link lines of a span aligned with nothing:
    /// everything the expectation could test, so that two spans with the
    /// same text look the same through any expected span.
    fn own_text(&self, span: &SpanView<'_>) -> String {
        let mut lines = vec![head(
            false,
            span.name(),
            Some(span.kind()),
            Some(span.service()),
            is_error(span).then_some(true),
        )];
        for key in &self.keys {
            if let Some(value) = span.attribute(key) {
                lines.push(format!("  · {}", actual_attribute(key, Some(value))));
            }
        }
        let mut links: Vec<String> = actual_links(span)
            .iter()
            .map(|(target, attributes)| {
                let shown: Vec<String> = self
                    .link_keys
                    .iter()
                    .filter_map(|k| lookup(attributes, k).map(|v| actual_attribute(k, Some(v))))
                    .collect();
                link_line(target.as_ref().map(SpanView::name), &shown)
            })
            .collect();
        links.sort();
        lines.extend(links);
        lines.join("\n")
    }

    /// A hash of the subtree's text, so that siblings alike at the top
    /// are still ordered by content. Children first, iteratively.
    fn content_hash(&mut self, span: &SpanView<'_>) -> u64 {
        if let Some(&hash) = self.hashes.get(&span.index()) {
            return hash;
        }
        let mut stack = vec![(*span, false)];
        while let Some((at, children_done)) = stack.pop() {
            if self.hashes.contains_key(&at.index()) {
                continue;
            }
            if !children_done {
                stack.push((at, true));
                stack.extend(at.children().map(|c| (c, false)));
                continue;
            }
            let mut children: Vec<u64> = at
                .children()
                .map(|c| self.hashes.get(&c.index()).copied().unwrap_or_default())
                .collect();
            children.sort_unstable();
            let mut hasher = FxHasher::default();
            self.own_text(&at).hash(&mut hasher);
            children.hash(&mut hasher);
            self.hashes.insert(at.index(), hasher.finish());
        }
        self.hashes.get(&span.index()).copied().unwrap_or_default()
    }

    /// A subtree aligned with nothing, whole, within the line budget;
    /// iterative, so that a deep chain cannot overflow the stack.
    fn unaligned_text(&mut self, span: &SpanView<'_>) -> String {
        let mut out = String::new();
        let mut stack = vec![(*span, 0usize)];
        while let Some((at, depth)) = stack.pop() {
            if self.budget == 0 {
                let _ = writeln!(out, "{}… more spans left out", "  ".repeat(depth));
                break;
            }
            for line in self.own_text(&at).lines() {
                let _ = writeln!(out, "{}{line}", "  ".repeat(depth));
                self.budget = self.budget.saturating_sub(1);
            }
            let children = self.in_content_order(at.children().collect());
            stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
        }
        out.truncate(out.trim_end().len());
        out
    }

    /// The text of `trace` as `e`, the expected root, sees it.
    fn trace_text(&mut self, e: &ExpectedSpan, trace: &Trace<'_>) -> String {
        self.budget = TREE_LINES;
        let named: Vec<SpanView<'_>> = if e.any_depth {
            trace.spans().filter(|s| s.name() == e.name).collect()
        } else {
            trace
                .roots()
                .into_iter()
                .filter(|s| s.name() == e.name)
                .collect()
        };
        let named = self.in_content_order(named);
        // A full match first, then the best score, then content order.
        let best = named
            .iter()
            .enumerate()
            .min_by_key(|&(i, s)| {
                let full = self.matcher.matches(e, s);
                (std::cmp::Reverse((full, score(e, s))), i)
            })
            .map(|(_, s)| *s);
        let mut texts = Vec::new();
        if let Some(root) = best {
            texts.push(self.aligned_text(e, &root));
        }
        // Beside an expected root that must be the trace's root, every
        // other root is unexpected.
        if !e.any_depth || best.is_none() {
            let others: Vec<SpanView<'_>> = trace
                .roots()
                .into_iter()
                .filter(|r| best.is_none_or(|b| b.index() != r.index()))
                .collect();
            for root in self.in_content_order(others) {
                texts.push(self.unaligned_text(&root));
            }
        }
        texts.sort();
        cut_lines(&texts.join("\n"), TREE_LINES)
    }
}

/// How well an actual span fits an expected one, besides its name: the
/// tests it passes and the expected children it has by name.
fn score(e: &ExpectedSpan, span: &SpanView<'_>) -> usize {
    let mut score = 0;
    score += 2 * usize::from(e.kind.as_ref().is_none_or(|k| k == span.kind()));
    score += 2 * usize::from(e.service.as_deref().is_none_or(|s| s == span.service()));
    score += usize::from(e.error.is_none_or(|x| x == is_error(span)));
    score += e
        .attributes
        .iter()
        .filter(|m| m.accepts(span.attribute(m.key())))
        .count();
    let names: BTreeSet<&str> = span.children().map(|c| c.name()).collect();
    score += e
        .children
        .iter()
        .filter(|c| names.contains(c.name.as_str()))
        .count();
    score
}

/// The link lines of `span` as `e` sees them: each expected link matched
/// is written as expected; if one is not, the unmatched actual links show
/// what is there instead.
fn aligned_links(e: &ExpectedSpan, span: &SpanView<'_>) -> Vec<String> {
    if e.links.is_empty() {
        return Vec::new();
    }
    let actual = actual_links(span);
    let owner = maximum_matching(&e.link_fits(&actual));
    let mut lines: Vec<String> = owner.iter().flatten().map(|&l| e.links[l].text()).collect();
    if lines.len() < e.links.len() {
        let matched: FxHashSet<usize> = owner.iter().flatten().copied().collect();
        let keys: BTreeSet<&str> = (0..e.links.len())
            .filter(|l| !matched.contains(l))
            .flat_map(|l| e.links[l].attributes.iter().map(AttributeMatcher::key))
            .collect();
        for (a, (target, attributes)) in actual.iter().enumerate() {
            if owner[a].is_none() {
                let shown: Vec<String> = keys
                    .iter()
                    .map(|k| actual_attribute(k, lookup(attributes, k)))
                    .collect();
                lines.push(link_line(target.as_ref().map(SpanView::name), &shown));
            }
        }
    }
    lines.sort();
    lines
}

/// `key = value`, or `key absent`.
fn actual_attribute(key: &str, value: Option<&Value>) -> String {
    match value {
        Some(v) => format!("{key} = {}", value_text(v)),
        None => format!("{key} absent"),
    }
}

/// A span's first line: `… ` when placed at any depth, the name, then
/// the kind, service and status when given.
fn head(
    any_depth: bool,
    name: &str,
    kind: Option<&SpanKind>,
    service: Option<&str>,
    error: Option<bool>,
) -> String {
    let mut head = String::new();
    if any_depth {
        head.push_str("… ");
    }
    let _ = write!(head, "{name:?}");
    if let Some(kind) = kind {
        let _ = write!(head, " {}", kind_name(kind));
    }
    if let Some(service) = service {
        let _ = write!(head, " service={service}");
    }
    match error {
        Some(true) => head.push_str(" status=error"),
        Some(false) => head.push_str(" status=not-error"),
        None => {}
    }
    head
}

fn join(mut lines: Vec<String>, children: &[String]) -> String {
    for child in children {
        lines.extend(child.lines().map(|l| format!("  {l}")));
    }
    lines.join("\n")
}

/// The first `max` lines of `text`, then how many were left out.
fn cut_lines(text: &str, max: usize) -> String {
    let total = text.lines().count();
    let mut out: Vec<&str> = text.lines().take(max).collect();
    let more = (total > max).then(|| format!("… {} more lines", total - max));
    out.extend(more.as_deref());
    out.join("\n")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// Lines two texts have in common, in order.
fn common_lines(a: &str, b: &str) -> usize {
    TextDiff::from_lines(a, b)
        .ops()
        .iter()
        .map(|op| match op {
            DiffOp::Equal { len, .. } => *len,
            _ => 0,
        })
        .sum()
}

/// How many lines of `a` appear in `b`, counted as multisets: an upper
/// bound of [`common_lines`], cheap enough to skip most diffs.
fn shared_lines(a: &FxHashMap<&str, usize>, b: &str) -> usize {
    let mut left = a.clone();
    let mut shared = 0;
    for line in b.lines() {
        if let Some(n) = left.get_mut(line)
            && *n > 0
        {
            *n -= 1;
            shared += 1;
        }
    }
    shared
}

/// A unified diff of `expected` and `actual`, cut to [`DIFF_LINES`].
fn unified_diff(expected: &str, actual: &str) -> String {
    let (expected, actual) = (format!("{expected}\n"), format!("{actual}\n"));
    let diff = TextDiff::from_lines(&expected, &actual);
    let text = diff
        .unified_diff()
        .context_radius(TREE_LINES)
        .missing_newline_hint(false)
        .header("expected", "actual")
        .to_string();
    cut_lines(&text, DIFF_LINES)
}

impl SpanForest {
    /// Panics with the assertion's report if `result` is an error, naming
    /// on the message's last line the HTML report of this forest that it
    /// wrote; writes that report after a passing assertion too when
    /// [`crate::report::REPORT_ENV`] says `always`.
    #[track_caller]
    pub(crate) fn conclude_assertion(&self, result: Result<()>) {
        #[cfg(feature = "report")]
        let line = crate::report::write_failure_report(self, result.is_err());
        #[cfg(not(feature = "report"))]
        let line: Option<String> = None;
        if let Err(error) = result {
            match line {
                Some(line) => panic!("{error}\n\n{line}"),
                None => panic!("{error}"),
            }
        }
    }

    /// Panics unless at least one trace has the `expected` shape.
    #[track_caller]
    pub fn assert_trace(&self, expected: &ExpectedSpan) {
        self.conclude_assertion(self.try_assert_trace(expected));
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
            false,
        ))
    }

    /// Panics unless exactly `count` traces have the `expected` shape.
    #[track_caller]
    pub fn assert_traces(&self, count: usize, expected: &ExpectedSpan) {
        self.conclude_assertion(self.try_assert_traces(count, expected));
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
            found < count,
        ))
    }

    /// Panics unless there is a span of kind `child` and every one has a
    /// parent of kind `parent` (e.g. every CONSUMER span is a child of a
    /// PRODUCER span).
    ///
    /// ```
    /// use kafka_trace_harness::SpanCapture;
    /// use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
    ///
    /// let capture = SpanCapture::new();
    /// let tracer = capture.tracer("svc");
    /// let send = tracer.span_builder("send x").with_kind(SpanKind::Producer).start(&tracer);
    /// let cx = opentelemetry::Context::new().with_span(send);
    /// tracer.span_builder("process x").with_kind(SpanKind::Consumer).start_with_context(&tracer, &cx);
    /// drop(cx);
    ///
    /// let forest = capture.forest();
    /// forest.assert_every_parent(SpanKind::Consumer, SpanKind::Producer);
    /// // No SERVER span at all: nothing proves the rule, so it fails.
    /// assert!(forest.try_assert_every_parent(SpanKind::Server, SpanKind::Client).is_err());
    /// ```
    #[track_caller]
    pub fn assert_every_parent(&self, child: SpanKind, parent: SpanKind) {
        self.conclude_assertion(self.try_assert_every_parent(child, parent));
    }

    /// [`assert_every_parent`](Self::assert_every_parent), returning the
    /// report instead.
    pub fn try_assert_every_parent(&self, child: SpanKind, parent: SpanKind) -> Result<()> {
        let total = self.of_kind(child.clone()).count();
        if total == 0 {
            // A rule about no span holds vacuously; a test asking for it
            // almost always lost its spans (not ended, wrong capture).
            return Err(Error::Assertion(format!(
                "expected every {} span to have a {} parent, but no {} span was captured \
                 ({} spans in all), so nothing was checked\n\ncaptured spans:\n{}\nwhat to \
                 do: check that the spans of that kind ended before the assertion (use \
                 SpanCapture::wait_for), that their service's tracer comes from this \
                 SpanCapture, and that the kinds are not swapped.",
                kind_name(&child),
                kind_name(&parent),
                kind_name(&child),
                self.len(),
                indent(&summary(self, EVIDENCE_LINES))
            )));
        }
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
        let mut report = format!(
            "expected every {} span to have a {} parent; {} of {total} do not\n\n",
            kind_name(&child),
            kind_name(&parent),
            offenders.len(),
        );
        for line in offenders.iter().take(OFFENDER_LINES) {
            let _ = writeln!(report, "  {line}");
        }
        if offenders.len() > OFFENDER_LINES {
            let _ = writeln!(report, "  … {} more", offenders.len() - OFFENDER_LINES);
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
        self.conclude_assertion(self.try_assert_no_problems());
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
        let mut matcher = Matcher::default();
        self.traces()
            .iter()
            .filter(|t| matcher.matches_trace(expected, t))
            .count()
    }

    /// The report of a shape assertion; `missing` when more traces should
    /// match, so that the closest trace shown is one that does not.
    fn shape_report(&self, expected: &ExpectedSpan, headline: &str, missing: bool) -> Error {
        let mut explain = Explain::new(expected);
        let want = cut_lines(&explain.expected_text(expected), TREE_LINES);
        let traces = self.traces();
        let mut report = format!(
            "{headline} among {} traces ({} spans)\n\n",
            traces.len(),
            self.len(),
        );
        let mut shown: Vec<&Trace<'_>> = traces.iter().collect();
        let mut among = "";
        if missing {
            let mut matcher = Matcher::default();
            let unmatched: Vec<&Trace<'_>> = traces
                .iter()
                .filter(|t| !matcher.matches_trace(expected, t))
                .collect();
            if !unmatched.is_empty() && unmatched.len() < traces.len() {
                shown = unmatched;
                among = " among those that do not match";
            }
        }
        // Each distinct text once, sorted, so that ties go to the first
        // text, never to the first trace id.
        let texts: BTreeSet<String> = shown
            .iter()
            .map(|t| explain.trace_text(expected, t))
            .collect();
        let mut counts: FxHashMap<&str, usize> = FxHashMap::default();
        for line in want.lines() {
            *counts.entry(line).or_default() += 1;
        }
        let mut ranked: Vec<(usize, &String)> = texts
            .iter()
            .map(|t| (shared_lines(&counts, t), t))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let mut closest: Option<(usize, &String)> = None;
        for (bound, text) in ranked.into_iter().take(DIFF_CANDIDATES) {
            if closest.is_some_and(|(best, _)| bound <= best) {
                break;
            }
            let common = common_lines(&want, text);
            if closest.is_none_or(|(best, _)| common > best) {
                closest = Some((common, text));
            }
        }
        match closest {
            None => {
                let _ = write!(
                    report,
                    "expected trace:\n{}\nno trace was captured\n",
                    indent(&want)
                );
            }
            Some((_, text)) if *text == want => {
                let _ = write!(
                    report,
                    "closest actual trace: no difference from the expected one, so the \
                     count differs or a problem below keeps it from matching\n{}",
                    indent(&want)
                );
            }
            Some((_, text)) => {
                let note = if expected.is_exact() {
                    ""
                } else {
                    "; the actual side leaves out the spans the expectation allows \
                     without listing them"
                };
                let _ = write!(
                    report,
                    "closest actual trace{among}: the diff from the expected one (-) to it \
                     (+){note}\n{}",
                    indent(&unified_diff(&want, text))
                );
            }
        }
        let _ = write!(
            report,
            "\ncaptured spans:\n{}\nwhat to do: if the diff shows a missing span, check that \
             it ended before the assertion (use SpanCapture::wait_for or Condition::trace) \
             and that it was started from the right context; if names, kinds, services or \
             attributes differ, fix the instrumentation or the expectation; if the trace has \
             spans the test does not care about, make the expectation partial \
             (allow_extra_children, descendant, at_any_depth).",
            indent(&summary(self, EVIDENCE_LINES))
        );
        Error::Assertion(report)
    }
}

impl Condition {
    /// At least one trace has the `expected` shape, as
    /// [`SpanForest::assert_trace`] checks it; at the deadline, the error
    /// carries the same report as the assertion.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use kafka_trace_harness::{Condition, Error, ExpectedSpan, SpanCapture};
    /// use opentelemetry::trace::{TraceContextExt, Tracer};
    ///
    /// let capture = SpanCapture::new();
    /// let tracer = capture.tracer("api");
    /// tokio::spawn(async move {
    ///     tracer.in_span("send x", |cx| tracer.start_with_context("process x", &cx));
    /// });
    /// let shape = ExpectedSpan::new("send x").child(ExpectedSpan::new("process x"));
    /// let forest = capture.wait_for(Condition::trace(shape), Duration::from_secs(5)).await.unwrap();
    /// assert_eq!(forest.len(), 2);
    ///
    /// // A shape that never comes: the error shows the diff.
    /// let never = ExpectedSpan::new("send x").child(ExpectedSpan::new("process y"));
    /// let err = capture.wait_for(Condition::trace(never), Duration::from_millis(20)).await.unwrap_err();
    /// assert!(matches!(&err, Error::Wait { seen, .. } if seen.contains("+  \"process x\"")), "{err}");
    /// # }
    /// ```
    pub fn trace(expected: ExpectedSpan) -> Self {
        let expected = Arc::new(expected);
        let check = Arc::clone(&expected);
        Self::new(
            format!("at least 1 trace like {}", expected.describe()),
            move |forest| forest.matching_traces(&check) > 0,
        )
        .with_report(move |forest| match forest.try_assert_trace(&expected) {
            Err(e) => e.to_string(),
            Ok(()) => summary(forest, EVIDENCE_LINES),
        })
    }

    /// Exactly `count` traces have the `expected` shape, as
    /// [`SpanForest::assert_traces`] checks it; at the deadline, the error
    /// carries the same report as the assertion.
    pub fn traces(count: usize, expected: ExpectedSpan) -> Self {
        let expected = Arc::new(expected);
        let check = Arc::clone(&expected);
        Self::new(
            format!("exactly {count} traces like {}", expected.describe()),
            move |forest| forest.matching_traces(&check) == count,
        )
        .with_report(
            move |forest| match forest.try_assert_traces(count, &expected) {
                Err(e) => e.to_string(),
                Ok(()) => summary(forest, EVIDENCE_LINES),
            },
        )
    }
}
