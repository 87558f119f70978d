//! Checks each trade's trace against the reference tree as its spans end,
//! keeping only the traces not yet complete: what lets `run` take a
//! million trades through the pipeline in flat memory. Tests keep every
//! span in a [`SpanCapture`](crate::SpanCapture) and check forests instead.
//!
//! The reference tree (README, `reference_trace` test), for `N` API
//! consumers:
//!
//! ```text
//! send stockapp.trades                      datagen
//! ├── process stockapp.trades               stock-processor
//! │   └── send stockapp.dollarsbyzip        stock-processor   (none if filtered out)
//! │       └── process stockapp.dollarsbyzip api-1 … api-N
//! └── process stockapp.trades               kstream-service
//!     └── send stockapp.trades-json         kstream-service
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{SpanId, Status, TraceId};
use opentelemetry_sdk::trace::SpanData;
use rustc_hash::{FxHashMap, FxHashSet};

use super::DOLLARS_BY_ZIP_TOPIC;
use super::pipeline::{
    DATAGEN_SERVICE, FILTERED_OUT_ATTRIBUTE, KSTREAM_SERVICE, PROCESSOR_SERVICE,
};
use super::summary::TraceSummary;
use crate::SpanStream;
use crate::capture::lock;
use crate::forest::tree::{CapturedSpan, SpanForest};
use crate::report::ServiceMap;

const TRADE_SEND: &str = "send stockapp.trades";
const TRADE_PROCESS: &str = "process stockapp.trades";
const ROW_SEND: &str = "send stockapp.dollarsbyzip";
const ROW_PROCESS: &str = "process stockapp.dollarsbyzip";
const JSON_SEND: &str = "send stockapp.trades-json";

/// Spans of a filtered trade's trace: send, two process spans, JSON send.
const MIN_TRADE_SPANS: usize = 4;

/// Link targets remembered as found before the set starts again.
const LINKED_CACHE: usize = 16_384;

/// Unresolved link targets kept before the ones resolved since are pruned.
const PRUNE_UNRESOLVED: usize = 10_000;

/// Broken traces whose reasons are kept for the report.
const BROKEN_EXAMPLES: usize = 10;

/// A [`SpanStream`] that checks every trade trace of a stockapp run
/// against the reference tree as its spans arrive, and forgets each trace
/// once it is complete.
///
/// Another program's consumer of `stockapp.dollarsbyzip` (recognised by the
/// conventions, whatever its span's name) is an API hop beside `api-1` …
/// `api-N`, or the only one with `TraceCheck::new(0)`. A trace is judged
/// once the run's own spans are in, so such a hop counts if it arrived
/// before them: other programs' spans, which come over OTLP seconds later,
/// are fed first when checking a kept forest (as `kafka-trace-harness run`
/// does with `--otlp-receiver`).
///
/// Memory: the traces still open, one span id per `send` span (link
/// targets), one latency per trade, and a bounded sample of whole traces.
///
/// ```
/// use std::sync::Arc;
/// use kafka_trace_harness::SpanCapture;
/// use kafka_trace_harness::stockapp::trace_check::TraceCheck;
///
/// let check = Arc::new(TraceCheck::new(2).sample(1));
/// let capture = SpanCapture::builder().stream(check.clone()).build();
/// // … run a pipeline with `capture` …
/// let report = check.finish();
/// assert_eq!(report.summary.trade_traces, 0);
/// # drop(capture);
/// ```
#[derive(Debug)]
pub struct TraceCheck {
    judge: Arc<Judge>,
    /// Spans go to the checking thread, started with the first span; `None`
    /// if it could not start (spans are then judged where they end).
    queue: OnceLock<Option<SyncSender<Message>>>,
    /// Ended spans not yet queued, already reduced to what a verdict
    /// needs: they go to the thread [`BATCH`] at a time, so that a span
    /// costs a push rather than a channel message and a wake-up.
    batch: Mutex<Batch>,
}

/// Ended spans on their way to the checking thread. Each span is reduced
/// where it ended and dropped there, while it is still in that core's
/// cache: the checking thread reads a few flat vectors instead of cold
/// `SpanData` it would also have to free across threads.
#[derive(Debug, Default)]
struct Batch {
    spans: Vec<(TraceId, Seen)>,
    /// The root `send` spans among them: what links point at.
    sends: Vec<SpanId>,
    /// Their links' targets, with the linking span's trace.
    links: Vec<(TraceId, SpanId)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.sends.is_empty() && self.links.is_empty()
    }
}

/// The checking itself, shared with the checking thread.
#[derive(Debug)]
struct Judge {
    api_consumers: usize,
    sample_size: usize,
    /// Broken traces kept whole, at most (0: none), for the HTML report.
    keep_broken: usize,
    /// Whether concluded traces are counted into a service map.
    map: bool,
    /// Whether ending spans are still kept whole, for the sample: cleared
    /// once the sample is complete, so that the rest of the run only
    /// reduces spans.
    sampling: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
enum Message {
    Spans(Batch),
    /// Answered once every span queued before it is judged.
    Flush(SyncSender<()>),
}

/// Spans sent to the checking thread at once.
const BATCH: usize = 64;

/// Batches queued for the checking thread before an ending span waits: a
/// bound on memory (4,096 spans), not a loss (a full queue blocks, it
/// never drops).
const QUEUE: usize = 64;

#[derive(Debug, Default)]
struct State {
    /// Spans of traces not yet judged, by trace.
    open: FxHashMap<TraceId, Vec<Seen>>,
    /// Every root `send` span seen (a trade's or a user profile's): what
    /// the stockapp's links point at. Span ids only (random 64 bits): a
    /// million trades cost about 18 MB here.
    sends: FxHashSet<SpanId>,
    /// Link targets not seen yet when their trace was judged; checked
    /// again at the end (a target may end after the span linking to it).
    unresolved: Vec<(TraceId, SpanId)>,
    /// Link targets found in `sends` lately: a small set that stays in
    /// cache, where `sends` (a million entries) does not.
    linked: FxHashSet<SpanId>,
    /// Size of `unresolved` at which the targets that ended since are
    /// dropped from it, so that it holds only what is still missing.
    prune_at: usize,
    trade_traces: usize,
    complete: usize,
    broken: usize,
    reached_api: usize,
    /// Trade send start → last API process end, in microseconds.
    latencies_us: Vec<u32>,
    sample: Vec<CapturedSpan>,
    sampled: usize,
    /// Open traces kept whole for the sample: the first ones seen, and a
    /// later one in the place of each that concluded or turned out not to
    /// be a trade's (user profiles come first).
    candidates: FxHashSet<TraceId>,
    broken_examples: Vec<(TraceId, String)>,
    other_traces: usize,
    other_broken: usize,
    /// Broken traces kept whole, and why each is broken.
    broken_kept: Vec<CapturedSpan>,
    broken_reasons: Vec<(TraceId, String)>,
    /// Broken traces not kept once `keep_broken` were.
    broken_not_kept: usize,
    service_map: ServiceMap,
}

/// What a verdict needs of one span; the span itself only while the
/// sample is being taken. An open trace costs a few hundred bytes, not the
/// spans' attributes and links (a window row's send has up to 127 links): the
/// span is boxed, since a `SpanData` held in place would make every `Seen`
/// its size (several hundred bytes), sampled or not.
#[derive(Debug)]
struct Seen {
    service: Arc<str>,
    name: std::borrow::Cow<'static, str>,
    kind: opentelemetry::trace::SpanKind,
    span: SpanId,
    parent: SpanId,
    start: std::time::SystemTime,
    end: std::time::SystemTime,
    error: bool,
    filtered: bool,
    /// It read a row of `stockapp.dollarsbyzip`, by the conventions: an
    /// API hop, in the run's API consumers or another program.
    api_hop: bool,
    whole: Option<Box<SpanData>>,
}

/// What a [`TraceCheck`] found over a run.
#[derive(Debug, Clone)]
pub struct TraceCheckReport {
    /// Trade traces, complete and broken, and end-to-end latency.
    pub summary: TraceSummary,
    /// Up to 10 broken traces and why.
    pub broken_examples: Vec<(TraceId, String)>,
    /// Traces that are not a trade's (user profiles, dead letters).
    pub other_traces: usize,
    /// Of those, the ones with a missing parent or several roots.
    pub other_broken: usize,
    /// The sampled complete trade traces, whole.
    pub sample: SpanForest,
    /// Broken traces kept whole ([`TraceCheck::keep_broken`]).
    pub broken_kept: SpanForest,
    /// Why each trace of `broken_kept` is broken.
    pub broken_reasons: Vec<(TraceId, String)>,
    /// Broken traces not kept whole, once the limit was reached.
    pub broken_not_kept: usize,
    /// Every span and hop of every trace judged
    /// ([`TraceCheck::service_map`]; empty unless asked).
    pub service_map: ServiceMap,
}

enum Verdict {
    /// Spans are still to come.
    Open,
    /// The reference tree; end-to-end latency if a row reached the API.
    Complete(Option<Duration>),
    Broken(String),
    /// Not a trade's trace.
    Other,
}

impl TraceCheck {
    /// A check for a run with `api_consumers` API consumers, sampling no
    /// trace.
    pub fn new(api_consumers: usize) -> Self {
        Self {
            judge: Arc::new(Judge {
                api_consumers,
                sample_size: 0,
                keep_broken: 0,
                map: false,
                sampling: AtomicBool::new(false),
                state: Mutex::default(),
            }),
            queue: OnceLock::new(),
            batch: Mutex::default(),
        }
    }

    /// Keeps the first `traces` complete trade traces whole, to show.
    #[must_use]
    pub fn sample(mut self, traces: usize) -> Self {
        // Before the first span, nothing else holds the judge.
        if let Some(judge) = Arc::get_mut(&mut self.judge) {
            judge.sample_size = traces;
            judge.sampling = AtomicBool::new(traces > 0);
        }
        self
    }

    /// Also keeps up to `traces` broken traces, for the HTML report: each
    /// span as the check saw it (name, service, kind, ids, times, error),
    /// whole only if it was being sampled. Keeping every span whole until
    /// its trace is judged cost a run a quarter more CPU; a span's
    /// attributes, events and links are in `--spans-out`.
    #[must_use]
    pub fn keep_broken(mut self, traces: usize) -> Self {
        if let Some(judge) = Arc::get_mut(&mut self.judge) {
            judge.keep_broken = traces;
        }
        self
    }

    /// Also counts every judged trace's spans and hops into a
    /// [`ServiceMap`] (parent hops only: links between traces are not
    /// followed here).
    #[must_use]
    pub fn service_map(mut self) -> Self {
        if let Some(judge) = Arc::get_mut(&mut self.judge) {
            judge.map = true;
        }
        self
    }

    /// Trade traces judged so far and traces still open, once every span
    /// ended before the call is judged.
    pub fn judged(&self) -> (usize, usize) {
        self.flush();
        let state = lock(&self.judge.state);
        (state.trade_traces, state.open.len())
    }

    /// Judges every trace still open (a trade trace missing spans is
    /// broken) and every link not resolved before, and reports; call it
    /// once every span has ended.
    pub fn finish(&self) -> TraceCheckReport {
        self.flush();
        self.judge.finish()
    }

    /// Waits until the checking thread has judged every span ended so far.
    fn flush(&self) {
        let batch = std::mem::take(&mut *lock(&self.batch));
        self.judge_batch(batch);
        if let Some(Some(queue)) = self.queue.get() {
            let (done, wait) = sync_channel(1);
            if queue.send(Message::Flush(done)).is_ok() {
                // The thread ends only when the queue is dropped.
                let _ = wait.recv();
            }
        }
    }

    /// Queues spans for the checking thread, or judges them here if it
    /// could not start: judged late rather than lost.
    fn judge_batch(&self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let message = Message::Spans(batch);
        let unsent = match self.queue() {
            Some(queue) => queue.send(message).err().map(|e| e.0),
            None => Some(message),
        };
        if let Some(Message::Spans(spans)) = unsent {
            self.judge.take_all(&mut lock(&self.judge.state), spans);
        }
    }

    /// The checking thread's queue: spans are judged off the threads that
    /// end them, which are the pipeline's.
    fn queue(&self) -> Option<&SyncSender<Message>> {
        self.queue
            .get_or_init(|| {
                let (queue, spans) = sync_channel::<Message>(QUEUE);
                let judge = Arc::clone(&self.judge);
                std::thread::Builder::new()
                    .name("trace-check".into())
                    .spawn(move || judge.run(&spans))
                    .ok()
                    .map(|_| queue)
            })
            .as_ref()
    }
}

impl Judge {
    fn run(&self, spans: &Receiver<Message>) {
        while let Ok(first) = spans.recv() {
            let mut state = lock(&self.state);
            let mut next = Some(first);
            // Whatever else is queued, under one lock.
            while let Some(message) = next {
                match message {
                    Message::Spans(spans) => self.take_all(&mut state, spans),
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                }
                next = spans.try_recv().ok();
            }
        }
    }

    fn finish(&self) -> TraceCheckReport {
        let mut state = lock(&self.state);
        let open: Vec<_> = state.open.drain().collect();
        for (trace, spans) in open {
            let verdict = self.judge(&spans);
            self.conclude(&mut state, trace, spans, verdict);
        }
        let unresolved = std::mem::take(&mut state.unresolved);
        let mut dangling = FxHashSet::default();
        for (trace, target) in unresolved {
            if !state.sends.contains(&target) && dangling.insert(trace) {
                state.complete = state.complete.saturating_sub(1);
                state.broken += 1;
                note_broken(
                    &mut state,
                    trace,
                    format!("a link to span {target} that never ended"),
                );
            }
        }
        let mut latencies: Vec<Duration> = state
            .latencies_us
            .iter()
            .map(|&us| Duration::from_micros(u64::from(us)))
            .collect();
        latencies.sort();
        TraceCheckReport {
            summary: TraceSummary {
                trade_traces: state.trade_traces,
                complete: state.complete,
                broken: state.broken,
                reached_api: state.reached_api,
                end_to_end_p50: super::summary::percentile(&latencies, 50),
                end_to_end_p99: super::summary::percentile(&latencies, 99),
                services: Vec::new(),
            },
            broken_examples: state.broken_examples.clone(),
            other_traces: state.other_traces,
            other_broken: state.other_broken,
            sample: SpanForest::new(std::mem::take(&mut state.sample)),
            broken_kept: SpanForest::new(std::mem::take(&mut state.broken_kept)),
            broken_reasons: std::mem::take(&mut state.broken_reasons),
            broken_not_kept: state.broken_not_kept,
            service_map: std::mem::take(&mut state.service_map),
        }
    }

    /// Counts `trace`'s verdict; its spans are dropped or sampled. A trace
    /// still open at the end is broken.
    fn conclude(&self, state: &mut State, trace: TraceId, spans: Vec<Seen>, verdict: Verdict) {
        state.candidates.remove(&trace);
        if self.map && !matches!(verdict, Verdict::Open) {
            count_hops(&mut state.service_map, &spans);
        }
        match verdict {
            Verdict::Open => {
                let reason = missing(&spans);
                self.conclude(state, trace, spans, Verdict::Broken(reason));
            }
            Verdict::Other => {
                state.other_traces += 1;
                if let Some(problem) = structure_problem(&spans) {
                    state.other_broken += 1;
                    self.keep_broken_trace(state, trace, spans, problem);
                }
            }
            Verdict::Complete(latency) => {
                state.trade_traces += 1;
                state.complete += 1;
                if let Some(latency) = latency {
                    state.reached_api += 1;
                    state
                        .latencies_us
                        .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                }
                if state.sampled < self.sample_size && spans.iter().all(|s| s.whole.is_some()) {
                    state.sampled += 1;
                    if state.sampled == self.sample_size {
                        self.sampling.store(false, Ordering::Relaxed);
                    }
                    state.sample.extend(spans.into_iter().filter_map(|s| {
                        s.whole.map(|data| CapturedSpan {
                            service: s.service.to_string(),
                            data: *data,
                        })
                    }));
                }
            }
            Verdict::Broken(reason) => {
                state.trade_traces += 1;
                state.broken += 1;
                self.keep_broken_trace(state, trace, spans, reason.clone());
                note_broken(state, trace, reason);
            }
        }
    }

    /// Keeps a broken trace whole, if asked and there is room.
    fn keep_broken_trace(
        &self,
        state: &mut State,
        trace: TraceId,
        spans: Vec<Seen>,
        reason: String,
    ) {
        if self.keep_broken == 0 {
            return;
        }
        if state.broken_reasons.len() >= self.keep_broken {
            state.broken_not_kept += 1;
            return;
        }
        state.broken_reasons.push((trace, reason));
        state
            .broken_kept
            .extend(spans.into_iter().map(|s| s.into_captured(trace)));
    }

    fn judge(&self, spans: &[Seen]) -> Verdict {
        let mut roots = spans.iter().filter(|s| s.parent == SpanId::INVALID);
        let root = match (roots.next(), roots.next()) {
            (None, _) => return Verdict::Open,
            (Some(root), None) if root.name == TRADE_SEND => root,
            (Some(_), None) => return Verdict::Other,
            (Some(_), Some(_)) => {
                let count = 2 + roots.count();
                return Verdict::Broken(format!("{count} roots"));
            }
        };
        // A handful of spans: linear searches beat building sets.
        let has = |id: SpanId| spans.iter().any(|s| s.span == id);
        if spans
            .iter()
            .any(|s| s.parent != SpanId::INVALID && !has(s.parent))
        {
            return Verdict::Open;
        }
        let children = |parent: &Seen, name: &'static str| {
            let id = parent.span;
            spans
                .iter()
                .filter(move |s| s.parent == id && s.name == name)
        };
        let process_of =
            |service: &str| only(children(root, TRADE_PROCESS).filter(|s| &*s.service == service));
        let (Some(processor), Some(kstream)) =
            (process_of(PROCESSOR_SERVICE), process_of(KSTREAM_SERVICE))
        else {
            return self.open_or_broken(spans, "one process span of each trade reader");
        };
        let filtered = processor.filtered;
        // Another program's API consumer is a hop of the tree too, beside
        // (or instead of) the run's own.
        let outside_hops = spans
            .iter()
            .filter(|s| s.api_hop && !self.is_own_api(&s.service))
            .count();
        let expected = 4 + if filtered {
            0
        } else {
            1 + self.api_consumers + outside_hops
        };
        if spans.len() < expected {
            return Verdict::Open;
        }
        if spans.len() > expected {
            return Verdict::Broken(format!(
                "{} spans where the reference tree has {expected}",
                spans.len()
            ));
        }
        if only(children(kstream, JSON_SEND)).is_none() {
            return Verdict::Broken("the Kafka Streams process span has no JSON send".into());
        }
        let mut latency = None;
        if !filtered {
            let Some(row) = only(children(processor, ROW_SEND)) else {
                return Verdict::Broken("a trade neither filtered out nor sent as a row".into());
            };
            let hops = || spans.iter().filter(|s| s.parent == row.span && s.api_hop);
            if hops().count() != self.api_consumers + outside_hops {
                return Verdict::Broken("an API hop not under the row's send span".into());
            }
            let mut services: Vec<&str> = hops()
                .filter(|s| self.is_own_api(&s.service))
                .map(|s| &*s.service)
                .collect();
            let reached = services.len();
            services.sort_unstable();
            services.dedup();
            if reached != self.api_consumers || services.len() != self.api_consumers {
                return Verdict::Broken(format!(
                    "the row reached {} API consumers of {}",
                    services.len(),
                    self.api_consumers
                ));
            }
            latency = hops()
                .map(|s| s.end)
                .max()
                .and_then(|end| end.duration_since(root.start).ok());
        }
        if let Some(failed) = spans.iter().find(|s| s.error) {
            return Verdict::Broken(format!(
                "{} of {} has error status",
                failed.name, failed.service
            ));
        }
        Verdict::Complete(latency)
    }

    /// Whether `service` is one of the run's API consumers, `api-1` … `api-N`.
    fn is_own_api(&self, service: &str) -> bool {
        service
            .strip_prefix("api-")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| (1..=self.api_consumers).contains(&n))
    }

    /// Too few spans yet, or already too many for the reference tree.
    fn open_or_broken(&self, spans: &[Seen], what: &str) -> Verdict {
        if spans.len() >= 5 + self.api_consumers {
            Verdict::Broken(format!("not {what}"))
        } else {
            Verdict::Open
        }
    }
}

/// Counts the spans of a judged trace, and each hop in it: a consumer
/// span whose parent is a producer span of another service (the topic
/// taken from the consumer's name, `process <topic>`).
fn count_hops(map: &mut ServiceMap, spans: &[Seen]) {
    use opentelemetry::trace::SpanKind;
    for span in spans {
        map.add_span(&span.service, span.error);
        if span.kind != SpanKind::Consumer || span.parent == SpanId::INVALID {
            continue;
        }
        if let Some(producer) = spans
            .iter()
            .find(|p| p.span == span.parent && p.kind == SpanKind::Producer)
            && producer.service != span.service
        {
            map.add_hop(
                &producer.service,
                &span.service,
                crate::report::topic_from_name(&span.name),
                producer.start,
                span.start,
                span.error,
            );
        }
    }
}

/// The one item of `items`, if there is exactly one.
fn only<T>(mut items: impl Iterator<Item = T>) -> Option<T> {
    match (items.next(), items.next()) {
        (Some(item), None) => Some(item),
        _ => None,
    }
}

fn note_broken(state: &mut State, trace: TraceId, reason: String) {
    if state.broken_examples.len() < BROKEN_EXAMPLES {
        state.broken_examples.push((trace, reason));
    }
}

/// What an incomplete trace lacks, for the report.
fn missing(spans: &[Seen]) -> String {
    let names: Vec<String> = spans
        .iter()
        .map(|s| format!("{} ({})", s.name, s.service))
        .collect();
    match structure_problem(spans) {
        Some(problem) => format!("{problem}; it has {}", names.join(", ")),
        None => format!(
            "spans missing at the end of the run; it has {}",
            names.join(", ")
        ),
    }
}

/// A missing root or parent, or several roots.
fn structure_problem(spans: &[Seen]) -> Option<String> {
    let ids: FxHashSet<SpanId> = spans.iter().map(|s| s.span).collect();
    let roots = spans.iter().filter(|s| s.parent == SpanId::INVALID).count();
    if roots != 1 {
        return Some(format!("{roots} roots"));
    }
    spans
        .iter()
        .find(|s| s.parent != SpanId::INVALID && !ids.contains(&s.parent))
        .map(|orphan| format!("{} ({}) has no parent here", orphan.name, orphan.service))
}

impl SpanStream for TraceCheck {
    fn span_ended(&self, service: &Arc<str>, mut span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let trace = span.span_context.trace_id();
        let whole = self.judge.sampling.load(Ordering::Relaxed);
        let mut seen = Seen::of(service, &mut span, whole);
        let (full, dropped) = {
            let mut batch = lock(&self.batch);
            batch.note_targets(trace, &span);
            let dropped = if whole {
                seen.whole = Some(Box::new(span));
                None
            } else {
                Some(span)
            };
            batch.spans.push((trace, seen));
            let full = (batch.spans.len() >= BATCH).then(|| std::mem::take(&mut *batch));
            (full, dropped)
        };
        // Freed here, still in this core's cache, and outside the lock.
        drop(dropped);
        if let Some(full) = full {
            self.judge_batch(full);
        }
    }
}

/// The attribute a span kept without its attributes says that in.
pub const ATTRIBUTES_NOT_KEPT: &str = "kafka_trace_harness.attributes_not_kept";

impl Seen {
    /// The span, whole if it was kept so, else rebuilt from what the check
    /// holds, saying so in [`ATTRIBUTES_NOT_KEPT`].
    fn into_captured(self, trace: TraceId) -> CapturedSpan {
        let data = match self.whole {
            Some(data) => *data,
            None => SpanData {
                span_context: opentelemetry::trace::SpanContext::new(
                    trace,
                    self.span,
                    opentelemetry::trace::TraceFlags::SAMPLED,
                    false,
                    opentelemetry::trace::TraceState::NONE,
                ),
                parent_span_id: self.parent,
                parent_span_is_remote: false,
                span_kind: self.kind,
                name: self.name,
                start_time: self.start,
                end_time: self.end,
                attributes: vec![opentelemetry::KeyValue::new(
                    ATTRIBUTES_NOT_KEPT,
                    "the run keeps what its trace check needs of each span; \
                     write --spans-out and run `kafka-trace-harness report` on that file \
                     to see every attribute, event and link",
                )],
                dropped_attributes_count: 0,
                events: opentelemetry_sdk::trace::SpanEvents::default(),
                links: opentelemetry_sdk::trace::SpanLinks::default(),
                status: if self.error {
                    Status::error("")
                } else {
                    Status::Unset
                },
                instrumentation_scope: opentelemetry::InstrumentationScope::builder(
                    "kafka-trace-harness",
                )
                .build(),
            },
        };
        CapturedSpan {
            service: self.service.to_string(),
            data,
        }
    }

    /// What a verdict needs of `span`; its name is taken unless the span
    /// is to be kept `whole`.
    fn of(service: &Arc<str>, span: &mut SpanData, whole: bool) -> Self {
        Self {
            service: Arc::clone(service),
            span: span.span_context.span_id(),
            parent: span.parent_span_id,
            kind: span.span_kind.clone(),
            start: span.start_time,
            end: span.end_time,
            error: matches!(span.status, Status::Error { .. }),
            // Only the processor says why it filtered a trade out.
            filtered: &**service == PROCESSOR_SERVICE
                && span
                    .attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == FILTERED_OUT_ATTRIBUTE),
            // The run's trade readers never read rows: their spans (most
            // of a run's) are not scanned.
            api_hop: span.name == ROW_PROCESS
                || (!matches!(
                    &**service,
                    DATAGEN_SERVICE | PROCESSOR_SERVICE | KSTREAM_SERVICE
                ) && crate::forest::hops::reads_topic(
                    &span.span_kind,
                    &span.attributes,
                    DOLLARS_BY_ZIP_TOPIC,
                )),
            name: if whole {
                span.name.clone()
            } else {
                std::mem::take(&mut span.name)
            },
            whole: None,
        }
    }
}

impl Batch {
    /// Notes `span` as a link target if it is a root `send`, and the
    /// targets of its links.
    fn note_targets(&mut self, trace: TraceId, span: &SpanData) {
        if span.span_kind == opentelemetry::trace::SpanKind::Producer
            && span.parent_span_id == SpanId::INVALID
        {
            self.sends.push(span.span_context.span_id());
        }
        self.links.extend(
            span.links
                .iter()
                .map(|link| (trace, link.span_context.span_id())),
        );
    }
}

impl Judge {
    /// Takes a batch of ended spans, in the order they ended.
    fn take_all(&self, state: &mut State, batch: Batch) {
        state.sends.extend(batch.sends);
        // Links are checked now; a target that has not ended yet is checked
        // again at the end.
        for (trace, target) in batch.links {
            // A window row links the same recent trades as the rows before
            // it: found once in the large set, then in the small one.
            if state.linked.contains(&target) {
                continue;
            }
            if state.sends.contains(&target) {
                if state.linked.len() >= LINKED_CACHE {
                    state.linked.clear();
                }
                state.linked.insert(target);
            } else {
                state.unresolved.push((trace, target));
            }
        }
        if state.unresolved.len() >= state.prune_at.max(PRUNE_UNRESOLVED) {
            let State {
                unresolved, sends, ..
            } = &mut *state;
            unresolved.retain(|(_, target)| !sends.contains(target));
            state.prune_at = 2 * state.unresolved.len();
        }
        for (trace, seen) in batch.spans {
            self.take(state, trace, seen);
        }
    }

    /// Takes one ended span into its trace, judging the trace once it may
    /// be whole.
    fn take(&self, state: &mut State, trace: TraceId, mut seen: Seen) {
        if seen.whole.is_some() && !self.keeps_whole(state, trace, &seen) {
            seen.whole = None;
        }
        // Room for a whole trade trace with two API consumers at once.
        let spans = state
            .open
            .entry(trace)
            .or_insert_with(|| Vec::with_capacity(MIN_TRADE_SPANS + 4));
        spans.push(seen);
        // No trade trace has fewer spans (a filtered trade's): judging
        // earlier could only say "open".
        if spans.len() < MIN_TRADE_SPANS {
            return;
        }
        // Judged in place: only a verdict takes the trace out. Traces that
        // are not a trade's (user profiles get a process span later) are
        // judged at the end.
        let verdict = self.judge(spans);
        if matches!(verdict, Verdict::Open | Verdict::Other) {
            return;
        }
        if let Some(spans) = state.open.remove(&trace) {
            self.conclude(state, trace, spans, verdict);
        }
    }

    /// Whether `seen`, which came whole, stays whole for the sample: a
    /// trace is a candidate from its first span while there is room, and
    /// gives its place up once its root shows it is not a trade's.
    fn keeps_whole(&self, state: &mut State, trace: TraceId, seen: &Seen) -> bool {
        if state.sampled >= self.sample_size {
            return false;
        }
        if !state.candidates.contains(&trace) {
            let first = !state.open.contains_key(&trace);
            if !(first && state.candidates.len() < 2 * self.sample_size) {
                return false;
            }
            state.candidates.insert(trace);
        }
        if seen.parent == SpanId::INVALID && seen.name != TRADE_SEND {
            state.candidates.remove(&trace);
            if let Some(spans) = state.open.get_mut(&trace) {
                for span in spans {
                    span.whole = None;
                }
            }
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::trace::{Span as _, SpanContext, SpanKind, TraceContextExt, Tracer as _};
    use opentelemetry::{Context, KeyValue};

    use super::*;
    use crate::SpanCapture;

    /// Ends the spans of one trade's trace (API consumer `api-1` only);
    /// `json: false` leaves out the Kafka Streams send.
    /// `link`: a span the processor's process span links to (a joined
    /// user's send, say).
    fn trade(capture: &SpanCapture, filtered: bool, json: bool, link: Option<SpanContext>) {
        let span = |service: &str, name: &str, kind: SpanKind, parent: &Context| {
            let tracer = capture.tracer(service);
            let span = tracer
                .span_builder(name.to_owned())
                .with_kind(kind)
                .start_with_context(&tracer, parent);
            parent.with_span(span)
        };
        let root = span("datagen", TRADE_SEND, SpanKind::Producer, &Context::new());
        let processor = span(PROCESSOR_SERVICE, TRADE_PROCESS, SpanKind::Consumer, &root);
        let kstream = span(KSTREAM_SERVICE, TRADE_PROCESS, SpanKind::Consumer, &root);
        if let Some(target) = link {
            processor.span().add_link(target, Vec::new());
        }
        if json {
            span(KSTREAM_SERVICE, JSON_SEND, SpanKind::Producer, &kstream)
                .span()
                .end();
        }
        if filtered {
            processor
                .span()
                .set_attribute(KeyValue::new(FILTERED_OUT_ATTRIBUTE, "symbol"));
        } else {
            let row = span(PROCESSOR_SERVICE, ROW_SEND, SpanKind::Producer, &processor);
            span("api-1", ROW_PROCESS, SpanKind::Consumer, &row)
                .span()
                .end();
            row.span().end();
        }
        kstream.span().end();
        processor.span().end();
        root.span().end();
    }

    #[test]
    fn whole_traces_are_complete_and_forgotten_as_they_end() {
        let check = Arc::new(TraceCheck::new(1).sample(1));
        let capture = SpanCapture::builder().stream(check.clone()).build();
        trade(&capture, false, true, None);
        trade(&capture, true, true, None);
        assert_eq!(check.judged(), (2, 0), "judged, still open");
        let report = check.finish();
        assert_eq!(report.summary.complete, 2);
        assert_eq!(report.summary.broken, 0);
        assert_eq!(report.summary.reached_api, 1);
        assert!(report.summary.end_to_end_p50.is_some());
        assert_eq!(report.sample.len(), 6, "the first trace, whole");
        assert!(
            capture.spans().is_empty(),
            "a streaming capture keeps nothing"
        );
    }

    #[test]
    fn for_the_html_report_broken_traces_are_kept_whole_and_every_trace_is_mapped() {
        let check = Arc::new(TraceCheck::new(1).sample(1).keep_broken(10).service_map());
        let capture = SpanCapture::builder().stream(check.clone()).build();
        trade(&capture, false, true, None);
        trade(&capture, false, true, None);
        trade(&capture, false, false, None); // no JSON send: broken
        let report = check.finish();
        assert_eq!((report.summary.complete, report.summary.broken), (2, 1));
        assert_eq!(
            report.sample.traces().len(),
            1,
            "the sample of complete ones"
        );
        assert_eq!(report.broken_kept.traces().len(), 1);
        assert_eq!(
            report.broken_kept.len(),
            5,
            "every span of the broken trace"
        );
        let kept: Vec<_> = report
            .broken_kept
            .spans()
            .map(|s| s.name().to_owned())
            .collect();
        assert!(kept.contains(&ROW_SEND.to_owned()), "{kept:?}");
        assert!(
            report.broken_kept.problems().is_empty(),
            "parents as captured: {:?}",
            report.broken_kept.problems()
        );
        assert_eq!(report.broken_reasons.len(), 1);
        assert_eq!(report.broken_not_kept, 0);
        let count = |from: &str, to: &str| {
            report
                .service_map
                .edges()
                .iter()
                .find(|e| e.from == from && e.to == to)
                .map(|e| (e.topic.clone(), e.count))
        };
        assert_eq!(
            count("datagen", PROCESSOR_SERVICE),
            Some(("stockapp.trades".into(), 3)),
            "every trace counted, sampled or not"
        );
        assert_eq!(count(KSTREAM_SERVICE, "api-1"), None);
        assert_eq!(
            count(PROCESSOR_SERVICE, "api-1"),
            Some(("stockapp.dollarsbyzip".into(), 3))
        );
    }

    #[test]
    fn traces_that_are_not_a_trades_give_their_place_in_the_sample_up() {
        // As in a run: user profiles' sends end before any trade's span.
        let check = Arc::new(TraceCheck::new(1).sample(1));
        let capture = SpanCapture::builder().stream(check.clone()).build();
        let tracer = capture.tracer("datagen");
        for _ in 0..3 {
            tracer
                .span_builder("send stockapp.users")
                .with_kind(SpanKind::Producer)
                .start(&tracer)
                .end();
        }
        trade(&capture, false, true, None);
        trade(&capture, true, true, None);
        let report = check.finish();
        assert_eq!(report.summary.complete, 2);
        assert_eq!(report.other_traces, 3);
        let sampled = report.sample.traces();
        assert_eq!(sampled.len(), 1, "{sampled:?}");
        assert_eq!(sampled[0].len(), 6, "the first trade's trace, whole");
        assert!(
            !check.judge.sampling.load(Ordering::Relaxed),
            "spans are no longer kept whole once the sample is taken"
        );
    }

    #[test]
    fn an_open_span_costs_what_a_verdict_needs_not_a_whole_span() {
        // Open traces are what the check holds (up to some 15,000 of them
        // in a run): a span kept in place would make each of their spans
        // several hundred bytes.
        let seen = std::mem::size_of::<Seen>();
        assert!(seen <= 128, "Seen takes {seen} bytes");
        assert!(std::mem::size_of::<SpanData>() > 2 * seen);
    }

    #[test]
    fn spans_ended_on_many_threads_at_once_are_all_judged() {
        // More spans than a batch, ended concurrently, and a count that
        // leaves a partial batch behind: none may wait unjudged or be lost.
        const THREADS: usize = 8;
        const TRADES: usize = 37;
        let check = Arc::new(TraceCheck::new(1));
        let capture = SpanCapture::builder().stream(check.clone()).build();
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let capture = &capture;
                scope.spawn(move || {
                    for n in 0..TRADES {
                        trade(capture, (thread + n) % 3 == 0, true, None);
                    }
                });
            }
        });
        assert_eq!(check.judged(), (THREADS * TRADES, 0), "judged, still open");
        let report = check.finish();
        assert_eq!(
            (report.summary.complete, report.summary.broken),
            (THREADS * TRADES, 0),
            "{:?}",
            report.broken_examples
        );
    }

    #[test]
    fn a_trace_missing_a_hop_is_broken_at_the_end_and_says_what_it_has() {
        let check = Arc::new(TraceCheck::new(1));
        let capture = SpanCapture::builder().stream(check.clone()).build();
        trade(&capture, false, false, None);
        assert_eq!(check.judged(), (0, 1), "it waits for the missing span");
        let report = check.finish();
        assert_eq!((report.summary.complete, report.summary.broken), (0, 1));
        let (_, reason) = &report.broken_examples[0];
        assert!(reason.contains("spans missing"), "{reason}");
        assert!(
            reason.contains("process stockapp.trades (kstream-service)"),
            "{reason}"
        );
    }

    #[test]
    fn a_link_to_a_send_that_ended_is_fine_and_one_to_a_span_never_seen_breaks_the_trace() {
        let check = Arc::new(TraceCheck::new(1));
        let capture = SpanCapture::builder().stream(check.clone()).build();
        let tracer = capture.tracer("datagen");
        let user_send = tracer
            .span_builder("send stockapp.users")
            .with_kind(SpanKind::Producer)
            .start(&tracer);
        let user = user_send.span_context().clone();
        drop(user_send);
        trade(&capture, false, true, Some(user));
        let never = SpanContext::new(
            TraceId::from(7_u128),
            SpanId::from(9_u64),
            opentelemetry::trace::TraceFlags::SAMPLED,
            false,
            Default::default(),
        );
        trade(&capture, false, true, Some(never));
        let report = check.finish();
        assert_eq!(
            (report.summary.complete, report.summary.broken),
            (1, 1),
            "{:?}",
            report.broken_examples
        );
        assert!(
            report.broken_examples[0].1.contains("never ended"),
            "{:?}",
            report.broken_examples
        );
        assert_eq!(report.other_traces, 1, "the user profile's send");
    }

    #[test]
    fn an_extra_span_breaks_a_trace() {
        let check = Arc::new(TraceCheck::new(1));
        let capture = SpanCapture::builder().stream(check.clone()).build();
        // The reference tree with one API process span too many.
        let tracer = capture.tracer("datagen");
        let root = Context::new().with_span(
            tracer
                .span_builder(TRADE_SEND)
                .with_kind(SpanKind::Producer)
                .start(&tracer),
        );
        let child = |service: &str, name: &str, parent: &Context| {
            parent.with_span(
                capture
                    .tracer(service)
                    .start_with_context(name.to_owned(), parent),
            )
        };
        let processor = child(PROCESSOR_SERVICE, TRADE_PROCESS, &root);
        let row = child(PROCESSOR_SERVICE, ROW_SEND, &processor);
        // api-1 twice (an "api-2" would be another program: this run has
        // one API consumer).
        child("api-1", ROW_PROCESS, &row).span().end();
        child("api-1", ROW_PROCESS, &row).span().end();
        let kstream = child(KSTREAM_SERVICE, TRADE_PROCESS, &root);
        let json = child(KSTREAM_SERVICE, JSON_SEND, &kstream);
        for cx in [json, kstream, row, processor, root] {
            cx.span().end();
        }
        let report = check.finish();
        assert_eq!(report.summary.broken, 1);
        assert!(
            report.broken_examples[0].1.contains("reference tree has 6"),
            "{:?}",
            report.broken_examples
        );
    }

    /// Ends a trade's trace whose row is read by the run's `api-1` (if
    /// `own_api`) and by another program's consumer named and attributed
    /// by the 1.24-era conventions.
    fn trade_with_outside_hop(capture: &SpanCapture, own_api: bool) {
        let span = |service: &str, name: &str, kind: SpanKind, parent: &Context| {
            let tracer = capture.tracer(service);
            let span = tracer
                .span_builder(name.to_owned())
                .with_kind(kind)
                .start_with_context(&tracer, parent);
            parent.with_span(span)
        };
        let root = span("datagen", TRADE_SEND, SpanKind::Producer, &Context::new());
        let processor = span(PROCESSOR_SERVICE, TRADE_PROCESS, SpanKind::Consumer, &root);
        let kstream = span(KSTREAM_SERVICE, TRADE_PROCESS, SpanKind::Consumer, &root);
        span(KSTREAM_SERVICE, JSON_SEND, SpanKind::Producer, &kstream)
            .span()
            .end();
        let row = span(PROCESSOR_SERVICE, ROW_SEND, SpanKind::Producer, &processor);
        let tracer = capture.tracer("go-api");
        tracer
            .span_builder("stockapp.dollarsbyzip process")
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("messaging.operation", "process"),
                KeyValue::new("messaging.destination.name", DOLLARS_BY_ZIP_TOPIC),
            ])
            .start_with_context(&tracer, &row)
            .end();
        if own_api {
            span("api-1", ROW_PROCESS, SpanKind::Consumer, &row)
                .span()
                .end();
        }
        row.span().end();
        kstream.span().end();
        processor.span().end();
        root.span().end();
    }

    /// The check's report on one such trade, with `run_api_consumers` API
    /// consumers in the run.
    fn check_trade_with_outside_hop(run_api_consumers: usize, own_api: bool) -> TraceCheckReport {
        let check = Arc::new(TraceCheck::new(run_api_consumers));
        let capture = SpanCapture::builder().stream(check.clone()).build();
        trade_with_outside_hop(&capture, own_api);
        check.finish()
    }

    /// The trade's trace is complete and reached the API.
    fn assert_complete_through_the_api(report: &TraceCheckReport) {
        assert_eq!(
            (report.summary.complete, report.summary.broken),
            (1, 0),
            "{:?}",
            report.broken_examples
        );
        assert_eq!(report.summary.reached_api, 1);
    }

    #[test]
    fn another_programs_consumer_is_an_api_hop_beside_the_runs() {
        assert_complete_through_the_api(&check_trade_with_outside_hop(1, true));
    }

    #[test]
    fn another_programs_consumer_can_be_the_only_api() {
        let report = check_trade_with_outside_hop(0, false);
        assert_complete_through_the_api(&report);
        assert!(report.summary.end_to_end_p50.is_some());
    }

    #[test]
    fn a_missing_run_api_consumer_is_not_made_up_for_by_another_program() {
        // Two API consumers in the run, only api-1 and another program read.
        let report = check_trade_with_outside_hop(2, true);
        assert_eq!(report.summary.broken, 1, "{:?}", report.broken_examples);
    }
}
