//! W3C Trace Context and Baggage carried in Kafka record headers.
//!
//! The encoding and decoding is done by `opentelemetry_sdk`'s
//! [`TraceContextPropagator`] and [`BaggagePropagator`]; this module only
//! adapts rskafka's header map to their [`Injector`] / [`Extractor`] traits
//! and explains, as data, why a record's context could not be used.

use std::collections::BTreeMap;
use std::fmt;

use opentelemetry::Context;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

/// rskafka's record headers: name → raw bytes.
pub type Headers = BTreeMap<String, Vec<u8>>;

/// Header carrying the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// Header carrying the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";
/// Header carrying W3C Baggage.
pub const BAGGAGE: &str = "baggage";

/// Longest `traceparent` value handed to the propagator. Version 00 is 55
/// bytes; later versions may append fields, but nothing legitimate needs
/// more than this, and refusing early bounds the work on hostile input.
pub const MAX_TRACEPARENT_LEN: usize = 512;
/// Longest `tracestate` value handed to the propagator (32 members of at
/// most 256 bytes each, as W3C allows).
pub const MAX_TRACESTATE_LEN: usize = 8192;
/// Longest `baggage` value handed to the propagator (the W3C limit).
pub const MAX_BAGGAGE_LEN: usize = 8192;

fn limit_for(header: &str) -> usize {
    match header {
        TRACEPARENT => MAX_TRACEPARENT_LEN,
        TRACESTATE => MAX_TRACESTATE_LEN,
        _ => MAX_BAGGAGE_LEN,
    }
}

/// The SDK's W3C propagators, trace context and baggage together.
/// The W3C propagators, built once: they hold no state, and building a
/// composite per record was a large part of injecting.
fn propagator() -> &'static TextMapCompositePropagator {
    static PROPAGATOR: std::sync::LazyLock<TextMapCompositePropagator> =
        std::sync::LazyLock::new(|| {
            TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ])
        });
    &PROPAGATOR
}

/// [`Injector`] writing into rskafka record headers (values as UTF-8 bytes).
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut Headers);

impl Injector for HeaderInjector<'_> {
    /// Skips an empty `tracestate`: the SDK writes one for every span
    /// context, and W3C lets a sender omit it, which saves every record a
    /// header.
    fn set(&mut self, key: &str, value: String) {
        MapInjector(&mut *self.0).set(key, value);
    }
}

/// [`Extractor`] reading rskafka record headers.
///
/// A value that is not UTF-8, or longer than the limit for its header
/// ([`MAX_TRACEPARENT_LEN`] …), reads as absent, so the propagator never
/// sees it; [`extract`] reports why.
#[derive(Debug, Clone, Copy)]
pub struct HeaderExtractor<'a>(pub &'a Headers);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        readable(key, self.0.get(key)?)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// `value` as the propagator may see it: UTF-8 and within `key`'s limit.
pub(crate) fn readable<'v>(key: &str, value: &'v [u8]) -> Option<&'v str> {
    if value.len() > limit_for(key) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// A record's headers as [`extract`] reads them. Implemented by
/// [`Headers`] and by the other clients' header lists (feature `rdkafka`),
/// so that every client's headers go through the same checks.
///
/// A list may repeat a name, as Kafka allows (rskafka's map cannot):
/// `value` is the last one, and `entries` shows every one, so that
/// repeated `traceparent`s that disagree are reported as
/// [`ExtractProblem::Ambiguous`], like look-alikes.
pub(crate) trait HeaderMap {
    /// The value of the last header named `key`.
    fn value(&self, key: &str) -> Option<&[u8]>;
    /// Every header, in order, repeated names included.
    fn entries(&self) -> impl Iterator<Item = (&str, &[u8])>;
}

/// Headers that [`inject`] can write: one value per name after `insert`.
pub(crate) trait HeaderMapMut: HeaderMap {
    /// Removes every header named `key`.
    fn remove(&mut self, key: &str);
    /// Sets `key` to `value`, replacing every header of that name.
    fn insert(&mut self, key: &str, value: String);
}

impl HeaderMap for Headers {
    fn value(&self, key: &str) -> Option<&[u8]> {
        self.get(key).map(Vec::as_slice)
    }

    fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

impl HeaderMapMut for Headers {
    fn remove(&mut self, key: &str) {
        BTreeMap::remove(self, key);
    }

    fn insert(&mut self, key: &str, value: String) {
        BTreeMap::insert(self, key.to_owned(), value.into_bytes());
    }
}

/// [`HeaderInjector`] over any [`HeaderMapMut`].
pub(crate) struct MapInjector<'a, H: ?Sized>(pub(crate) &'a mut H);

impl<H: HeaderMapMut + ?Sized> Injector for MapInjector<'_, H> {
    /// Skips an empty `tracestate`, as [`HeaderInjector`] does.
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() && key == TRACESTATE {
            return;
        }
        self.0.insert(key, value);
    }
}

/// [`HeaderExtractor`] over any [`HeaderMap`].
pub(crate) struct MapExtractor<'a, H: ?Sized>(pub(crate) &'a H);

impl<H: HeaderMap + ?Sized> Extractor for MapExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        readable(key, self.0.value(key)?)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.entries().map(|(k, _)| k).collect()
    }
}

/// What [`inject_with`] does when the headers already hold a `traceparent`
/// (or a look-alike differing only in case or surrounding spaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExistingTraceparent {
    /// Keep the caller's `traceparent` and `tracestate` (the default): a
    /// caller that set one on purpose, e.g. to forward a record, wins.
    #[default]
    Keep,
    /// Replace them with the context being injected, and drop any header
    /// that differs from `traceparent` only in case or surrounding spaces.
    Replace,
}

/// What [`inject`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Injected {
    /// `traceparent` (and `tracestate`, `baggage` when present) written.
    Written,
    /// A `traceparent` was already there and was kept; only baggage was
    /// written, and only if no `baggage` header existed.
    KeptExisting,
    /// The context holds no valid span; at most baggage was written.
    NoSpan,
}

/// Injects `cx`'s span context and baggage into `headers`, keeping a
/// `traceparent` the caller already set (see [`ExistingTraceparent`]).
///
/// ```
/// use kafka_trace_harness::propagation::{Headers, Injected, extract, inject};
/// use opentelemetry::Context;
/// use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
///
/// let parent = SpanContext::new(TraceId::from(7), SpanId::from(9), TraceFlags::SAMPLED, false, TraceState::NONE);
/// let mut headers = Headers::new();
/// assert_eq!(inject(&Context::new().with_remote_span_context(parent), &mut headers), Injected::Written);
///
/// let extracted = extract(&headers);
/// assert!(extracted.is_usable());
/// assert_eq!(extracted.span_context().span_id(), SpanId::from(9));
/// ```
pub fn inject(cx: &Context, headers: &mut Headers) -> Injected {
    inject_with(cx, headers, ExistingTraceparent::Keep)
}

/// [`inject`] with an explicit choice for an existing `traceparent`.
pub fn inject_with(cx: &Context, headers: &mut Headers, existing: ExistingTraceparent) -> Injected {
    inject_into(cx, headers, existing)
}

/// [`inject_with`] into any [`HeaderMapMut`].
pub(crate) fn inject_into<H: HeaderMapMut + ?Sized>(
    cx: &Context,
    headers: &mut H,
    existing: ExistingTraceparent,
) -> Injected {
    let lookalikes = lookalike_keys(headers, TRACEPARENT);
    if !lookalikes.is_empty() {
        match existing {
            ExistingTraceparent::Keep => {
                if headers.value(BAGGAGE).is_none() {
                    BaggagePropagator::new().inject_context(cx, &mut MapInjector(headers));
                }
                return Injected::KeptExisting;
            }
            ExistingTraceparent::Replace => {
                let stale: Vec<String> = lookalikes
                    .into_iter()
                    .chain(lookalike_keys(headers, TRACESTATE))
                    .collect();
                for key in stale {
                    headers.remove(&key);
                }
            }
        }
    }
    propagator().inject_context(cx, &mut MapInjector(headers));
    if cx.span().span_context().is_valid() {
        Injected::Written
    } else {
        Injected::NoSpan
    }
}

/// Keys equal to `name` once trimmed and lower-cased ("Traceparent",
/// " traceparent"): Kafka header names are case-sensitive, HTTP's are not,
/// and bridges between the two produce such duplicates.
fn lookalike_keys<H: HeaderMap + ?Sized>(headers: &H, name: &str) -> Vec<String> {
    let mut keys: Vec<String> = headers
        .entries()
        .filter(|(k, _)| is_lookalike(k, name))
        .map(|(k, _)| k.to_owned())
        .collect();
    // In name order, as rskafka's map lists them, whatever the client.
    keys.sort_unstable();
    keys
}

fn is_lookalike(key: &str, name: &str) -> bool {
    key.trim().eq_ignore_ascii_case(name)
}

/// Why a record's trace context could not be used as a parent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtractProblem {
    /// No `traceparent` header at all.
    Missing,
    /// The header's value is not UTF-8.
    NotUtf8 {
        /// Header name.
        header: String,
    },
    /// The header's value is longer than this module's limit for it.
    TooLong {
        /// Header name.
        header: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The W3C propagator rejected the `traceparent` value.
    Malformed {
        /// The value, shortened to 80 characters.
        value: String,
    },
    /// The W3C propagator dropped the `tracestate` value (the span context
    /// itself stays usable, with an empty trace state).
    MalformedTracestate {
        /// The value, shortened to 80 characters.
        value: String,
    },
    /// Several headers differ from `traceparent` only in case or spaces (or,
    /// in a client's header list, repeat the name) and disagree, so no
    /// single parent can be trusted.
    Ambiguous {
        /// The header names.
        keys: Vec<String>,
    },
    /// Only a look-alike (`Traceparent`, ` traceparent`) is present; W3C
    /// over Kafka uses the exact lower-case name.
    WrongCase {
        /// The header name found.
        key: String,
    },
}

impl ExtractProblem {
    /// A short stable identifier, used as a span attribute value.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotUtf8 { .. } => "not_utf8",
            Self::TooLong { .. } => "too_long",
            Self::Malformed { .. } => "malformed",
            Self::MalformedTracestate { .. } => "malformed_tracestate",
            Self::Ambiguous { .. } => "ambiguous",
            Self::WrongCase { .. } => "wrong_case",
        }
    }
}

impl fmt::Display for ExtractProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "no {TRACEPARENT} header"),
            Self::NotUtf8 { header } => write!(f, "header {header:?} is not UTF-8"),
            Self::TooLong { header, len, limit } => {
                write!(
                    f,
                    "header {header:?} is {len} bytes, over the {limit}-byte limit"
                )
            }
            Self::Malformed { value } => {
                write!(f, "the W3C propagator rejected {TRACEPARENT} {value:?}")
            }
            Self::MalformedTracestate { value } => {
                write!(f, "the W3C propagator dropped {TRACESTATE} {value:?}")
            }
            Self::Ambiguous { keys } => {
                write!(f, "conflicting trace context headers {keys:?}")
            }
            Self::WrongCase { key } => {
                write!(f, "found {key:?} but W3C over Kafka uses {TRACEPARENT:?}")
            }
        }
    }
}

/// The result of [`extract`]: a context to use, and what was wrong if the
/// record's span context could not be used.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The ambient context, plus the record's remote span context when
    /// usable, plus its baggage when readable.
    pub context: Context,
    /// Why the record's span context was not used; `None` when it was.
    pub problem: Option<ExtractProblem>,
    /// Non-fatal findings: `tracestate` or `baggage` that were dropped.
    pub ignored: Vec<ExtractProblem>,
}

impl Extracted {
    /// Whether the record carried a usable parent span context.
    pub fn is_usable(&self) -> bool {
        self.problem.is_none()
    }

    /// The record's span context (invalid when not usable).
    pub fn span_context(&self) -> SpanContext {
        if self.is_usable() {
            self.context.span().span_context().clone()
        } else {
            SpanContext::empty_context()
        }
    }
}

/// Extracts a record's context on top of an empty context; never panics.
pub fn extract(headers: &Headers) -> Extracted {
    extract_with(&Context::new(), headers)
}

/// Extracts a record's context on top of `ambient`; never panics.
///
/// When the record's `traceparent` is unusable the returned context is
/// `ambient` (so a consumer span becomes a root, or a child of the ambient
/// span) and [`Extracted::problem`] says why.
pub fn extract_with(ambient: &Context, headers: &Headers) -> Extracted {
    extract_from(ambient, headers)
}

/// [`extract_with`] from any [`HeaderMap`].
pub(crate) fn extract_from<H: HeaderMap + ?Sized>(ambient: &Context, headers: &H) -> Extracted {
    let mut ignored = Vec::new();
    for header in [TRACESTATE, BAGGAGE] {
        if let Some(problem) = unreadable(headers, header) {
            ignored.push(problem);
        }
    }
    let extractor = MapExtractor(headers);
    let has_baggage = headers.value(BAGGAGE).is_some();
    // Baggage is independent of the span context: kept if readable.
    let with_baggage = |cx: &Context| {
        if has_baggage {
            BaggagePropagator::new().extract_with_context(cx, &extractor)
        } else {
            cx.clone()
        }
    };
    let mut problem = traceparent_problem(headers);
    let context = if problem.is_some() {
        with_baggage(ambient)
    } else {
        // What the composite propagator does: the span context, then
        // baggage; `traceparent` is parsed once.
        let with_span = if ambient.has_active_span() {
            // Ask on an empty context, so that the ambient span cannot be
            // mistaken for the record's when the record's is rejected.
            let probe = TraceContextPropagator::new().extract(&extractor);
            let span_context = probe.span().span_context().clone();
            span_context
                .is_valid()
                .then(|| ambient.with_remote_span_context(span_context))
        } else {
            let cx = TraceContextPropagator::new().extract_with_context(ambient, &extractor);
            cx.has_active_span().then_some(cx)
        };
        match with_span {
            Some(with_span) => {
                let sent = extractor.get(TRACESTATE).map(str::trim).unwrap_or_default();
                let kept = with_span
                    .span()
                    .span_context()
                    .trace_state()
                    .into_iter()
                    .len();
                if !sent.is_empty() && kept == 0 {
                    ignored.push(ExtractProblem::MalformedTracestate {
                        value: shorten(sent),
                    });
                }
                with_baggage(&with_span)
            }
            None => {
                problem = Some(ExtractProblem::Malformed {
                    value: headers
                        .value(TRACEPARENT)
                        .map(|v| shorten(&String::from_utf8_lossy(v)))
                        .unwrap_or_default(),
                });
                with_baggage(ambient)
            }
        }
    };
    Extracted {
        context,
        problem,
        ignored,
    }
}

fn unreadable<H: HeaderMap + ?Sized>(headers: &H, header: &str) -> Option<ExtractProblem> {
    let value = headers.value(header)?;
    let limit = limit_for(header);
    if value.len() > limit {
        Some(ExtractProblem::TooLong {
            header: header.to_owned(),
            len: value.len(),
            limit,
        })
    } else if std::str::from_utf8(value).is_err() {
        Some(ExtractProblem::NotUtf8 {
            header: header.to_owned(),
        })
    } else {
        None
    }
}

/// Checks done before handing `traceparent` to the propagator, the
/// syntax included: the SDK's parser reads ids of any width up to 32 and
/// 16 digits (and a leading `+`), which Java's and Go's propagators
/// refuse, so a header that breaks the trace there must not pass here.
fn traceparent_problem<H: HeaderMap + ?Sized>(headers: &H) -> Option<ExtractProblem> {
    let Some(value) = headers.value(TRACEPARENT) else {
        return Some(
            match lookalike_keys(headers, TRACEPARENT).into_iter().next() {
                Some(key) => ExtractProblem::WrongCase { key },
                None => ExtractProblem::Missing,
            },
        );
    };
    // Checked without collecting: a record almost never has look-alikes.
    // The name itself counts, so that repeated `traceparent`s must agree.
    let disagree = headers
        .entries()
        .any(|(k, v)| is_lookalike(k, TRACEPARENT) && v.trim_ascii() != value.trim_ascii());
    if disagree {
        return Some(ExtractProblem::Ambiguous {
            keys: lookalike_keys(headers, TRACEPARENT),
        });
    }
    if let Some(problem) = unreadable(headers, TRACEPARENT) {
        return Some(problem);
    }
    let text = String::from_utf8_lossy(value);
    (!is_w3c_traceparent(text.trim())).then(|| ExtractProblem::Malformed {
        value: shorten(&text),
    })
}

/// Whether `value` is a `traceparent` as W3C Trace Context writes it:
/// `version-traceid-parentid-flags`, each part of exactly 2, 32, 16 and 2
/// lowercase hex digits, ids not all zero, version not `ff`; a later
/// version may add parts after the flags, version `00` none.
fn is_w3c_traceparent(value: &str) -> bool {
    fn hex(part: &str, width: usize) -> bool {
        part.len() == width
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
    let mut parts = value.splitn(5, '-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let rest = parts.next();
    hex(version, 2)
        && version != "ff"
        && (version != "00" || rest.is_none())
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2)
}

fn shorten(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut short: String = value.chars().take(MAX).collect();
        short.push('…');
        short
    }
}
