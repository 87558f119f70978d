//! What `kafka-trace-harness run` prints: trace trees in an APM-like view
//! and a summary of the run.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanKind, Status, TraceId};

use super::pipeline::PipelineProgress;
use crate::forest::hops::{HopOperation, MessagingHop, messaging_hop};
use crate::forest::tree::{Problem, SpanForest, SpanView, Trace};
use crate::stockapp::metrics::{self, MetricsSnapshot};
use crate::stockapp::{DOLLARS_BY_ZIP_TOPIC, TRADES_TOPIC};

/// Name of the span that starts every trade's trace.
const TRADE_ROOT: &str = "send stockapp.trades";

/// Trace-level figures of a run, computed from the captured spans.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    /// Traces that start with a trade's `send` span.
    pub trade_traces: usize,
    /// Trade traces with no structural problem.
    pub complete: usize,
    /// Trade traces with an orphan, a dangling link, several roots or a
    /// parent from another trace.
    pub broken: usize,
    /// Trade traces that reached an API consumer.
    pub reached_api: usize,
    /// Median time from a trade's `send` start to its last API `process` end.
    pub end_to_end_p50: Option<Duration>,
    /// 99th percentile of the same.
    pub end_to_end_p99: Option<Duration>,
    /// Records each service read and sent, by topic, counted from its
    /// spans by the conventions: what the summary shows of services that
    /// are not played by the run itself. Empty when the spans were checked
    /// as they ended (a run playing every service, no other program).
    pub services: Vec<ServiceRecords>,
}

/// Records one service handled, counted from its messaging spans by the
/// conventions (span kind, `messaging.operation.type`,
/// `messaging.destination.name`, or their 1.24-era names), whatever the
/// spans are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecords {
    /// The service (its resource's `service.name`).
    pub service: String,
    /// Records read, by topic: its `process` spans, or its `receive` spans'
    /// records where it has no `process` span for that topic.
    pub read: Vec<(String, u64)>,
    /// Records sent, by topic.
    pub sent: Vec<(String, u64)>,
}

impl ServiceRecords {
    /// Tallies every messaging span of `forest`, by service, in service order.
    pub fn of(forest: &SpanForest) -> Vec<Self> {
        // (process, receive, send) records per (service, topic).
        let mut tally: BTreeMap<(&str, String), [u64; 3]> = BTreeMap::new();
        for span in forest.spans() {
            let Some(hop) = hop_of(&span) else { continue };
            let slot = match hop.operation {
                HopOperation::Process => 0,
                HopOperation::Receive => 1,
                HopOperation::Send => 2,
            };
            tally.entry((span.service(), hop.destination)).or_default()[slot] += hop.records;
        }
        let mut out: Vec<Self> = Vec::new();
        for ((service, topic), [process, receive, send]) in tally {
            if out.last().is_none_or(|s| s.service != service) {
                out.push(Self {
                    service: service.to_owned(),
                    read: Vec::new(),
                    sent: Vec::new(),
                });
            }
            let Some(entry) = out.last_mut() else {
                continue;
            };
            let read = if process > 0 { process } else { receive };
            if read > 0 {
                entry.read.push((topic.clone(), read));
            }
            if send > 0 {
                entry.sent.push((topic, send));
            }
        }
        out
    }
}

fn hop_of(span: &SpanView<'_>) -> Option<MessagingHop> {
    messaging_hop(span.kind(), span.attributes())
}

/// Whether `span` is an API hop: it processed (or received) a row of
/// `stockapp.dollarsbyzip`, by the conventions, in any service.
pub fn is_api_hop(span: &SpanView<'_>) -> bool {
    hop_of(span).is_some_and(|hop| {
        hop.operation != HopOperation::Send && hop.destination == DOLLARS_BY_ZIP_TOPIC
    })
}

impl TraceSummary {
    /// Computes the figures from `forest`.
    pub fn of(forest: &SpanForest) -> Self {
        let broken_traces = broken_traces(forest);
        let mut summary = Self {
            trade_traces: 0,
            complete: 0,
            broken: 0,
            reached_api: 0,
            end_to_end_p50: None,
            end_to_end_p99: None,
            services: ServiceRecords::of(forest),
        };
        let mut latencies = Vec::new();
        for trace in forest.traces() {
            let Some(root) = trade_root(&trace) else {
                continue;
            };
            summary.trade_traces += 1;
            if broken_traces.contains(&trace.id()) {
                summary.broken += 1;
            } else {
                summary.complete += 1;
            }
            let last_api_end = trace
                .spans()
                .filter(is_api_hop)
                .map(|s| s.data().end_time)
                .max();
            if let Some(end) = last_api_end {
                summary.reached_api += 1;
                if let Ok(latency) = end.duration_since(root.data().start_time) {
                    latencies.push(latency);
                }
            }
        }
        latencies.sort();
        summary.end_to_end_p50 = percentile(&latencies, 50);
        summary.end_to_end_p99 = percentile(&latencies, 99);
        summary
    }
}

fn trade_root<'f>(trace: &Trace<'f>) -> Option<SpanView<'f>> {
    // By name, or by what it does: another program's instrumentation may
    // name it by older conventions ("stockapp.trades send").
    trace.roots().into_iter().find(|r| {
        r.name() == TRADE_ROOT
            || hop_of(r).is_some_and(|hop| {
                hop.operation == HopOperation::Send && hop.destination == TRADES_TOPIC
            })
    })
}

fn broken_traces(forest: &SpanForest) -> HashSet<TraceId> {
    forest
        .problems()
        .iter()
        .filter_map(|problem| match problem {
            Problem::Orphan { span, .. }
            | Problem::DanglingLink { span, .. }
            | Problem::WrongTrace { span, .. } => forest.get(*span).map(|s| s.trace_id()),
            Problem::SeveralRoots { trace, .. }
            | Problem::DuplicateSpanId { trace, .. }
            | Problem::ParentCycle { trace, .. }
            | Problem::NoRoot { trace } => Some(*trace),
        })
        .collect()
}

/// The `p`-th percentile (nearest rank) of sorted `values`.
pub(crate) fn percentile(values: &[Duration], p: usize) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let rank = (p * values.len()).div_ceil(100).max(1);
    Some(values[rank - 1])
}

/// The trade traces worth showing, at most `count`: the ones that reached
/// the most services (a full reference tree), and last, when more than one
/// is shown, a shorter one (a filtered trade's) if there is one.
pub fn showcase_traces(forest: &SpanForest, count: usize) -> Vec<Trace<'_>> {
    let mut traces: Vec<Trace<'_>> = forest
        .traces()
        .into_iter()
        .filter(|t| trade_root(t).is_some())
        .collect();
    if count == 0 || traces.is_empty() {
        return Vec::new();
    }
    traces.sort_by_key(|t| std::cmp::Reverse(t.len()));
    let longest = traces[0].len();
    let shortest = traces[traces.len() - 1];
    let mut shown: Vec<Trace<'_>> = traces.iter().take(count).copied().collect();
    if count > 1 && shortest.len() < longest && shown.last().is_some_and(|t| t.len() == longest) {
        shown.pop();
        shown.push(shortest);
    }
    shown
}

/// Renders `trace` as an indented tree with services and durations, like an
/// APM trace view; ANSI colours when `colour` is set.
pub fn render_trace_tree(trace: &Trace<'_>, colour: bool) -> String {
    let mut out = String::new();
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let _ = writeln!(out, "{}", paint("1", &format!("trace {}", trace.id())));
    let mut roots = trace.roots();
    roots.sort_by_key(|s| s.data().start_time);
    let origin = roots.first().map(|r| r.data().start_time);
    for root in roots {
        render_span(&mut out, &root, None, origin, &paint);
    }
    out
}

/// Where a span sits under its parent: the prefix drawn for its ancestors
/// and whether it is the last child.
struct Branch<'p> {
    prefix: &'p str,
    last: bool,
}

fn render_span(
    out: &mut String,
    span: &SpanView<'_>,
    branch: Option<Branch<'_>>,
    origin: Option<SystemTime>,
    paint: &dyn Fn(&str, &str) -> String,
) {
    let data = span.data();
    let duration = data
        .end_time
        .duration_since(data.start_time)
        .unwrap_or_default();
    let offset = origin
        .and_then(|o| data.start_time.duration_since(o).ok())
        .unwrap_or_default();
    let kind = match span.kind() {
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
        SpanKind::Client => "CLIENT",
        SpanKind::Server => "SERVER",
        SpanKind::Internal => "INTERNAL",
    };
    let service_colour = match span.service() {
        "datagen" => "36",
        "stock-processor" => "35",
        _ => "33",
    };
    let (head, children_prefix) = match &branch {
        None => (String::new(), String::new()),
        Some(Branch { prefix, last }) => (
            format!("{prefix}{}", if *last { "└── " } else { "├── " }),
            format!("{prefix}{}", if *last { "    " } else { "│   " }),
        ),
    };
    let label = format!("{head}{}", span.name());
    let mut line = format!(
        "{label:<46} {kind:<8} {} +{:>9.3} ms {:>8.3} ms",
        paint(service_colour, &format!("{:<16}", span.service())),
        offset.as_secs_f64() * 1e3,
        duration.as_secs_f64() * 1e3,
    );
    if let Status::Error { description } = span.status() {
        line.push_str(&paint("31", &format!("  ERROR {description}")));
    }
    // Links grouped by target name: a window row may link 100+ trades.
    let mut links: Vec<(String, usize)> = Vec::new();
    for (_, target) in span.links() {
        let to = target.map_or_else(|| "a span not captured".to_owned(), |t| t.name().to_owned());
        match links.iter_mut().find(|(name, _)| *name == to) {
            Some((_, count)) => *count += 1,
            None => links.push((to, 1)),
        }
    }
    for (to, count) in links {
        let text = match count {
            1 => format!("  ↪ link to {to}"),
            n => format!("  ↪ {n} links to {to}"),
        };
        line.push_str(&paint("2", &text));
    }
    let _ = writeln!(out, "{line}");
    let mut children: Vec<SpanView<'_>> = span.children().collect();
    children.sort_by_key(|c| c.data().start_time);
    let count = children.len();
    for (i, child) in children.iter().enumerate() {
        let branch = Branch {
            prefix: &children_prefix,
            last: i + 1 == count,
        };
        render_span(out, child, Some(branch), origin, paint);
    }
}

/// The run's summary: records per stage, traces, latency, throughput.
///
/// Only the services that ran here are listed from the run's counters;
/// every other service that left messaging spans (another program, its
/// spans received over OTLP) is listed with what its spans say it read and
/// sent.
pub fn render_summary(progress: &PipelineProgress, traces: &TraceSummary) -> String {
    let mut out = String::new();
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_owned(), |d| {
            format!("{:.2} ms", d.as_secs_f64() * 1e3)
        })
    };
    let seconds = progress.elapsed.as_secs_f64().max(f64::EPSILON);
    let services = progress.services;
    let _ = writeln!(out, "records per stage");
    if services.datagen {
        let _ = writeln!(
            out,
            "  datagen          sent {} users, {} trades",
            progress.users_sent, progress.trades_sent
        );
    }
    if services.processor {
        let _ = writeln!(
            out,
            "  stock-processor  read {} users, {} trades; sent {} dollarsbyzip rows; \
             filtered out {} trades, {} of them late (window closed)",
            progress.users_processed,
            progress.trades_processed,
            progress.rows_sent,
            progress.trades_filtered_out,
            progress.trades_late
        );
    }
    if services.kstream {
        let _ = writeln!(
            out,
            "  kstream-service  read {} trades; sent {} trades-json",
            progress.kstream_trades_processed, progress.json_sent
        );
    }
    for (i, rows) in progress.api_rows.iter().enumerate() {
        let _ = writeln!(out, "  api-{:<13}read {rows} rows", i + 1);
    }
    let own = own_services(progress);
    for records in traces.services.iter().filter(|r| !own.contains(&r.service)) {
        let list = |counts: &[(String, u64)]| {
            counts
                .iter()
                .map(|(topic, n)| format!("{n} {topic}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut line = format!("  {:<16} ", records.service);
        if !records.read.is_empty() {
            let _ = write!(line, "read {}", list(&records.read));
        }
        if !records.sent.is_empty() {
            if !records.read.is_empty() {
                line.push_str("; ");
            }
            let _ = write!(line, "sent {}", list(&records.sent));
        }
        let _ = writeln!(out, "{line} (outside the run, from its spans)");
    }
    if services.processor || services.kstream || services.api {
        let _ = writeln!(out, "  dead letters     {}", progress.dead_lettered);
    }
    if services.processor {
        let _ = writeln!(
            out,
            "  at-least-once    {} duplicate trades skipped, {} records redelivered",
            progress.duplicates, progress.redeliveries
        );
    }
    let _ = writeln!(
        out,
        "traces           {} trade traces: {} complete, {} broken; {} reached the API",
        traces.trade_traces, traces.complete, traces.broken, traces.reached_api
    );
    let _ = writeln!(
        out,
        "end-to-end       p50 {}, p99 {} (trade send → last API process)",
        ms(traces.end_to_end_p50),
        ms(traces.end_to_end_p99)
    );
    let _ = writeln!(
        out,
        "throughput       {:.0} trades/s over {:.2} s",
        if services.processor {
            progress.trades_processed
        } else {
            progress.trades_sent
        } as f64
            / seconds,
        seconds
    );
    out
}

/// Names of the services the run played itself.
fn own_services(progress: &PipelineProgress) -> Vec<String> {
    progress.services.names(progress.api_rows.len())
}

/// The metrics a run recorded, in a few lines: latency per service and the
/// consumer lag left at the end.
pub fn render_metrics(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let mut services: Vec<String> = snapshot
        .points()
        .iter()
        .filter_map(|p| p.attributes.get(metrics::SERVICE).cloned())
        .collect();
    services.sort();
    services.dedup();
    let _ = writeln!(out, "metrics (OpenTelemetry, in memory)");
    for service in &services {
        let filter = [(metrics::SERVICE, service.as_str())];
        let records_in = snapshot.sum(metrics::RECORDS_IN, &filter).unwrap_or(0.0);
        let records_out = snapshot.sum(metrics::RECORDS_OUT, &filter).unwrap_or(0.0);
        let mut line = format!("  {service:<16} in {records_in:>6.0}  out {records_out:>6.0}");
        for (label, name) in [
            ("processing", metrics::PROCESSING_DURATION),
            ("end-to-end", metrics::END_TO_END_LATENCY),
        ] {
            if let Some(mean) = snapshot.histogram(name, &filter).and_then(|h| h.mean()) {
                let _ = write!(line, "  {label} mean {mean:.3} ms");
            }
        }
        if let Some(lag) = snapshot.sum(
            metrics::CONSUMER_LAG,
            &[(metrics::CONSUMER_GROUP, service.as_str())],
        ) {
            let _ = write!(line, "  lag {lag:.0}");
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _};
    use opentelemetry::{Context, KeyValue};

    use super::*;
    use crate::SpanCapture;
    use crate::stockapp::pipeline::Services;

    /// A trade's trace whose send and API hop come from other programs,
    /// named and attributed by the 1.24-era conventions.
    fn outside_trade(capture: &SpanCapture) {
        let span =
            |service: &str, name: &str, kind: SpanKind, attrs: Vec<KeyValue>, parent: &Context| {
                let tracer = capture.tracer(service);
                let span = tracer
                    .span_builder(name.to_owned())
                    .with_kind(kind)
                    .with_attributes(attrs)
                    .start_with_context(&tracer, parent);
                parent.with_span(span)
            };
        let legacy = |operation: &'static str, topic: &'static str| {
            vec![
                KeyValue::new("messaging.operation", operation),
                KeyValue::new("messaging.destination.name", topic),
            ]
        };
        let root = span(
            "py-producer",
            "stockapp.trades send",
            SpanKind::Producer,
            legacy("publish", TRADES_TOPIC),
            &Context::new(),
        );
        let row = span(
            "stock-processor",
            "send stockapp.dollarsbyzip",
            SpanKind::Producer,
            legacy("publish", DOLLARS_BY_ZIP_TOPIC),
            &root,
        );
        span(
            "go-api",
            "stockapp.dollarsbyzip process",
            SpanKind::Consumer,
            legacy("process", DOLLARS_BY_ZIP_TOPIC),
            &row,
        )
        .span()
        .end();
        row.span().end();
        root.span().end();
    }

    #[test]
    fn api_hops_are_counted_by_the_conventions_whatever_their_names() {
        let capture = SpanCapture::new();
        outside_trade(&capture);
        let summary = TraceSummary::of(&capture.forest());
        assert_eq!(summary.trade_traces, 1);
        assert_eq!(summary.reached_api, 1);
        assert!(summary.end_to_end_p50.is_some());
        let go = summary
            .services
            .iter()
            .find(|s| s.service == "go-api")
            .expect("go-api is tallied");
        assert_eq!(go.read, [(DOLLARS_BY_ZIP_TOPIC.to_owned(), 1)]);
        assert!(go.sent.is_empty());
        let producer = summary
            .services
            .iter()
            .find(|s| s.service == "py-producer")
            .expect("py-producer is tallied");
        assert_eq!(producer.sent, [(TRADES_TOPIC.to_owned(), 1)]);
    }

    #[test]
    fn the_summary_lists_services_that_ran_and_outside_ones_from_their_spans() {
        let capture = SpanCapture::new();
        outside_trade(&capture);
        let summary = TraceSummary::of(&capture.forest());
        let progress = PipelineProgress {
            services: Services::parse("processor").unwrap(),
            rows_sent: 1,
            trades_filtered_out: 3,
            trades_late: 2,
            ..PipelineProgress::default()
        };
        let text = render_summary(&progress, &summary);
        assert!(
            text.contains("filtered out 3 trades, 2 of them late (window closed)"),
            "{text}"
        );
        assert!(!text.contains("datagen"), "{text}");
        assert!(!text.contains("kstream-service"), "{text}");
        assert!(text.contains("stock-processor  read"), "{text}");
        assert!(
            text.contains("go-api           read 1 stockapp.dollarsbyzip (outside the run"),
            "{text}"
        );
        assert!(
            text.contains("py-producer      sent 1 stockapp.trades (outside the run"),
            "{text}"
        );
        assert!(text.contains("1 reached the API"), "{text}");
    }
}
