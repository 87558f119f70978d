//! `kafka-trace-harness report SPANS.jsonl… --html PATH`: OTLP JSON Lines
//! files (ours from `run --spans-out`, or an OpenTelemetry file exporter's
//! from any language) become one span forest: its trace trees and problems
//! are printed, and its HTML report written. Exit status 1 when a trace is
//! broken or a span was left out (unusable ids: in no forest), said on
//! standard error and in the HTML report; links to no span, dropped from
//! the spans kept, are said there too.

use std::io::{BufRead as _, BufReader, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kafka_trace_harness::integrations::otlp_receiver::captured_spans;
use kafka_trace_harness::report::{DEFAULT_MAX_TRACES, HtmlReport};
use kafka_trace_harness::stockapp::summary::{render_trace_tree, showcase_traces};
use kafka_trace_harness::stockapp::trace_check::{TraceCheck, TraceCheckReport};
use kafka_trace_harness::{CapturedSpan, SpanForest, Trace};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// OTLP JSON Lines files: one export request (`{"resourceSpans": …}`)
    /// per line, as `run --spans-out` and OpenTelemetry's file exporters
    /// write them.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Write the HTML report to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Traces the HTML report shows besides the broken ones (all shown).
    #[arg(long, default_value_t = DEFAULT_MAX_TRACES)]
    html_traces: usize,
    /// Trace trees to print.
    #[arg(long, default_value_t = 3)]
    show_traces: usize,
}

pub fn main(args: ReportArgs) -> ExitCode {
    match report(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Whether every trace is whole and every span was read.
fn report(args: &ReportArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let mut spans = Vec::new();
    let mut left_out = LeftOut::default();
    for file in &args.files {
        read_file(file, &mut spans, &mut left_out)?;
    }
    let forest = SpanForest::new(spans);
    let problems = kafka_trace_harness::report::problems(&forest);
    let colour = std::io::stdout().is_terminal();
    for trace in traces_to_show(&forest, &problems, args.show_traces) {
        println!("{}", render_trace_tree(&trace, colour));
    }
    let traces = forest.traces();
    let broken: std::collections::HashSet<_> = problems.iter().map(|p| p.trace).collect();
    // What is printed is also the HTML report's summary when something
    // was left out, so that the page says it too.
    let mut summary = format!(
        "{} spans in {} traces; {} traces complete, {} broken\n",
        forest.len(),
        traces.len(),
        traces.len() - broken.len(),
        broken.len()
    );
    for problem in &problems {
        summary.push_str(&format!(
            "  {} in trace {}: {}\n",
            problem.kind, problem.trace, problem.message
        ));
    }
    summary.push_str(&left_out.text());
    print!("{summary}");
    if let Some(path) = &args.html {
        let mut title = args
            .files
            .iter()
            .map(|f| f.file_name().unwrap_or_default().to_string_lossy())
            .collect::<Vec<_>>()
            .join(", ");
        let mut report = HtmlReport::new().max_traces(args.html_traces);
        if left_out.spans > 0 {
            // In the heading, not only in the summary further down: the
            // page shows fewer spans than the files hold.
            title.push_str(&format!(" ({} span(s) left out)", left_out.spans));
        }
        if left_out.spans > 0 || left_out.links > 0 {
            report = report.summary(summary);
        }
        report.title(title).write(&forest, path)?;
        eprintln!("wrote the HTML report to {}", path.display());
    }
    if left_out.spans > 0 {
        eprintln!(
            "error: {} span(s) left out of the report, their ids unusable: {}",
            left_out.spans,
            left_out.first_reasons()
        );
    }
    Ok(problems.is_empty() && left_out.spans == 0)
}

/// How many notes (lines that lost something) the summary lists.
const MAX_NOTES: usize = 20;

/// What the files held that the forest does not: spans with unusable ids,
/// and links to no span dropped from the spans kept.
#[derive(Debug, Default)]
struct LeftOut {
    spans: usize,
    links: usize,
    /// One per line that lost something, for the first [`MAX_NOTES`].
    notes: Vec<String>,
    /// Lines that lost something beyond those.
    more_lines: usize,
    /// Why spans were left out, from the first line that left any out.
    span_reasons: Vec<String>,
}

impl LeftOut {
    fn note(&mut self, note: String) {
        eprintln!("warning: {note}");
        if self.notes.len() < MAX_NOTES {
            self.notes.push(note);
        } else {
            self.more_lines += 1;
        }
    }

    /// The counts and notes, a line each; empty when nothing was lost.
    fn text(&self) -> String {
        if self.spans == 0 && self.links == 0 {
            return String::new();
        }
        let mut text = format!(
            "{} span(s) left out (unusable ids, in no trace), {} link(s) to no span dropped \
             (their spans kept)\n",
            self.spans, self.links
        );
        for note in &self.notes {
            text.push_str(&format!("  {note}\n"));
        }
        if self.more_lines > 0 {
            text.push_str(&format!("  … and {} more line(s)\n", self.more_lines));
        }
        text
    }

    fn first_reasons(&self) -> String {
        reasons(&self.span_reasons, self.spans)
    }
}

/// The first reasons of `count`, and `…` when there were more.
fn reasons(first: &[String], count: usize) -> String {
    let mut text = first.join("; ");
    if count > first.len() {
        text.push_str("; …");
    }
    text
}

/// Broken traces `run --html` keeps whole, at most: beyond that the page
/// would no longer open quickly (the count of the others is reported).
pub const MAX_BROKEN_KEPT: usize = 5_000;

/// The run's streaming trace check: with `html_traces`, it also keeps
/// every broken trace whole (up to [`MAX_BROKEN_KEPT`]) and a sample of
/// that many complete ones, and counts every trace into the service map.
pub fn run_check(api_consumers: usize, show: usize, html_traces: Option<usize>) -> TraceCheck {
    match html_traces {
        None => TraceCheck::new(api_consumers).sample(show),
        Some(traces) => TraceCheck::new(api_consumers)
            .sample(show.max(traces))
            .keep_broken(MAX_BROKEN_KEPT)
            .service_map(),
    }
}

/// Writes `run --html`'s report: from the trace check's kept traces and
/// map when the run streamed its spans, else from the whole capture.
pub fn write_run_report(
    path: &Path,
    html_traces: usize,
    trades: usize,
    check: Option<TraceCheckReport>,
    forest: impl FnOnce() -> SpanForest,
    summary: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let started = std::time::Instant::now();
    let report = HtmlReport::new()
        .title(format!("kafka-trace-harness run: {trades} trades"))
        .max_traces(html_traces)
        .summary(summary);
    let (report, forest) = match check {
        Some(check) => {
            let mut spans = check.broken_kept.captured().to_vec();
            spans.extend(check.sample.captured().iter().cloned());
            let mut report = report
                .run_traces(check.summary.trade_traces + check.other_traces)
                .service_map(check.service_map);
            for (trace, reason) in check.broken_reasons {
                report = report.broken_trace(trace, reason);
            }
            if check.broken_not_kept > 0 {
                eprintln!(
                    "note: the HTML report keeps {MAX_BROKEN_KEPT} broken traces; {} more are \
                     counted but not shown",
                    check.broken_not_kept
                );
            }
            (report, SpanForest::new(spans))
        }
        None => (report, forest()),
    };
    let html = report.to_html(&forest);
    std::fs::write(path, &html)
        .map_err(|e| format!("writing the HTML report {}: {e}", path.display()))?;
    eprintln!(
        "wrote the HTML report to {} ({:.1} MB, {} spans, in {} ms)",
        path.display(),
        html.len() as f64 / 1e6,
        forest.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// The stockapp's showcase if these are its traces, else the broken
/// traces first, then the others, in capture order.
fn traces_to_show<'f>(
    forest: &'f SpanForest,
    problems: &[kafka_trace_harness::report::ReportProblem],
    count: usize,
) -> Vec<Trace<'f>> {
    let showcase = showcase_traces(forest, count);
    if !showcase.is_empty() {
        return showcase;
    }
    let mut order: Vec<_> = Vec::new();
    for trace in problems
        .iter()
        .map(|p| p.trace)
        .chain(forest.spans().map(|s| s.trace_id()))
    {
        if !order.contains(&trace) {
            order.push(trace);
            if order.len() == count {
                break;
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| forest.trace(id))
        .collect()
}

fn read_file(
    path: &Path,
    spans: &mut Vec<CapturedSpan>,
    left_out: &mut LeftOut,
) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let at = || format!("{} line {}", path.display(), number + 1);
        let line = line.map_err(|e| format!("{}: {e}", at()))?;
        if line.trim().is_empty() {
            continue;
        }
        let request = parse_request(&line).map_err(|e| format!("{}: {e}", at()))?;
        let mut converted = captured_spans(request);
        if converted.rejected > 0 {
            left_out.spans += converted.rejected;
            left_out.note(format!(
                "{}: {} span(s) left out: {}",
                at(),
                converted.rejected,
                reasons(&converted.rejected_reasons, converted.rejected)
            ));
            if left_out.span_reasons.is_empty() {
                left_out.span_reasons = converted.rejected_reasons;
            }
        }
        if converted.links_dropped > 0 {
            left_out.links += converted.links_dropped;
            left_out.note(format!(
                "{}: {} link(s) to no span dropped: {}",
                at(),
                converted.links_dropped,
                reasons(&converted.links_dropped_reasons, converted.links_dropped)
            ));
        }
        spans.append(&mut converted.spans);
    }
    Ok(())
}

/// One line as an export request, accepting what protobuf's JSON mapping
/// allows besides the OTLP/JSON rules the parser follows: field names as
/// in the .proto (`trace_id`), ids in base64 (what protobuf's JSON writes
/// for bytes: Python's `MessageToJson`, Java's `JsonFormat`), enums by name
/// (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`), integers as strings.
pub fn parse_request(line: &str) -> Result<ExportTraceServiceRequest, String> {
    let mut value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    normalise(&mut value, None);
    if value.get("resourceSpans").is_none() {
        return Err("no resourceSpans: not an OTLP trace export request".into());
    }
    serde_json::from_value(value).map_err(|e| format!("not an OTLP trace export request: {e}"))
}

fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Rewrites `value` in place into the OTLP/JSON form; `field` is the
/// (normalised) name it sits under.
fn normalise(value: &mut Value, field: Option<&str>) {
    match value {
        Value::Object(map) => {
            let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            for (name, mut inner) in entries {
                let name = if name.contains('_') {
                    lower_camel(&name)
                } else {
                    name
                };
                normalise(&mut inner, Some(&name));
                map.insert(name, inner);
            }
        }
        Value::Array(items) => {
            for item in items {
                normalise(item, field);
            }
        }
        Value::String(text) => {
            let replacement = match field {
                Some("traceId") => Some(Value::from(hex_id(text, 16))),
                Some("spanId" | "parentSpanId") => Some(Value::from(hex_id(text, 8))),
                Some("kind") => enum_number(text, "SPAN_KIND_", &KINDS).map(Value::from),
                Some("code") => enum_number(text, "STATUS_CODE_", &CODES).map(Value::from),
                Some(
                    "droppedAttributesCount" | "droppedEventsCount" | "droppedLinksCount" | "flags",
                ) => text.parse::<u32>().ok().map(Value::from),
                _ => None,
            };
            if let Some(replacement) = replacement {
                *value = replacement;
            }
        }
        _ => {}
    }
}

const KINDS: [&str; 6] = [
    "UNSPECIFIED",
    "INTERNAL",
    "SERVER",
    "CLIENT",
    "PRODUCER",
    "CONSUMER",
];
const CODES: [&str; 3] = ["UNSET", "OK", "ERROR"];

fn enum_number(text: &str, prefix: &str, names: &[&str]) -> Option<u32> {
    if let Ok(number) = text.parse::<u32>() {
        return Some(number);
    }
    let name = text.strip_prefix(prefix).unwrap_or(text);
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| u32::try_from(i).ok())
}

/// An id as lower-case hex: kept if it is hex of `bytes` bytes already,
/// decoded from base64 if it is that, else left for the parser to reject.
fn hex_id(text: &str, bytes: usize) -> String {
    if text.is_empty() || (text.len() == 2 * bytes && text.bytes().all(|b| b.is_ascii_hexdigit())) {
        return text.to_ascii_lowercase();
    }
    match base64_decode(text) {
        Some(decoded) if decoded.len() == bytes => {
            decoded.iter().map(|b| format!("{b:02x}")).collect()
        }
        _ => text.to_owned(),
    }
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0_u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_json_as_other_languages_write_it_is_read() {
        // Python's MessageToJson: base64 ids, enum names, int64 as strings;
        // and a field in its .proto spelling.
        let line = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"py"}}]},
            "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"AAECAwQFBgcICQoLDA0ODw==","spanId":"AAECAwQFBgc=",
            "parent_span_id":"","name":"send t","kind":"SPAN_KIND_PRODUCER","startTimeUnixNano":"1000","endTimeUnixNano":2000,
            "status":{"code":"STATUS_CODE_ERROR","message":"boom"}}]}]}]}"#;
        let request = parse_request(line).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id, (0..16).collect::<Vec<u8>>());
        assert_eq!(span.span_id, (0..8).collect::<Vec<u8>>());
        assert_eq!(span.kind, 4);
        assert_eq!(
            (span.start_time_unix_nano, span.end_time_unix_nano),
            (1000, 2000)
        );
        assert_eq!(span.status.as_ref().unwrap().code, 2);
    }

    #[test]
    fn a_line_that_is_not_a_trace_request_says_so() {
        assert!(parse_request("{}").unwrap_err().contains("resourceSpans"));
        assert!(parse_request("nope").unwrap_err().contains("not JSON"));
    }
}
