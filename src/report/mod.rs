//! The HTML trace report: one self-contained file (CSS, JavaScript and
//! data inline, no request to anything else when opened) with a service
//! map, the problems found, a trace list, a waterfall per trace with every
//! span's details, and the run's summary.
//!
//! The page's HTML, CSS and JavaScript are real files of this folder,
//! included at build time; the data is injected as JSON:
//!
//! * `<script type="application/json" id="kth-data">`: one OTLP/JSON
//!   export request (`{"resourceSpans": …}`, the shape of a `--spans-out`
//!   line) holding every span the page shows;
//! * `<script type="application/json" id="kth-summary">`: the service map
//!   and counts over *all* traces (also those not shown), the problems,
//!   and the summary text.
//!
//! The DOM contract users and tests can rely on is in the README
//! ("The HTML report").
//!
//! ```
//! use kafka_trace_harness::SpanCapture;
//! use kafka_trace_harness::report::HtmlReport;
//! use opentelemetry::trace::Tracer;
//!
//! // Arrange
//! let capture = SpanCapture::new();
//! capture.tracer("datagen").in_span("send trades", |_| {});
//!
//! // Act
//! let html = HtmlReport::new().title("my pipeline").to_html(&capture.forest());
//!
//! // Assert
//! assert!(html.starts_with("<!doctype html>"));
//! assert!(html.contains(r#"<script type="application/json" id="kth-data">{"resourceSpans":"#));
//! assert!(html.contains("send trades"));
//! # let path = std::env::temp_dir().join(format!("kth-doc-{}.html", std::process::id()));
//! # HtmlReport::new().write(&capture.forest(), &path)?;
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod failure;
pub(crate) mod json;
mod map;
mod problems;

use std::fmt::Write as _;
use std::path::Path;

use opentelemetry::trace::{SpanId, TraceId};
use rustc_hash::{FxHashMap, FxHashSet};

pub use failure::{REPORT_ENV, ReportWhen, failure_report_path, write_failure_report};
pub use map::{HopEdge, ServiceMap, ServiceNode, topic_from_name};
pub use problems::{ReportProblem, of_forest as problems};

use crate::SpanCapture;
use crate::forest::tree::SpanForest;

/// Traces shown besides the broken ones, unless set.
pub const DEFAULT_MAX_TRACES: usize = 200;

const PAGE: &str = include_str!("page.html");
const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// Builds a report; every default is set in [`HtmlReport::new`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HtmlReport {
    title: String,
    max_traces: usize,
    summary: Option<String>,
    map: Option<ServiceMap>,
    run_traces: Option<usize>,
    broken: Vec<(TraceId, String)>,
}

impl Default for HtmlReport {
    fn default() -> Self {
        Self::new()
    }
}

impl HtmlReport {
    /// Title "kafka-trace-harness report"; every broken trace and the
    /// first [`DEFAULT_MAX_TRACES`] others shown; the map counted from the
    /// forest; no summary text.
    pub fn new() -> Self {
        Self {
            title: "kafka-trace-harness report".to_owned(),
            max_traces: DEFAULT_MAX_TRACES,
            summary: None,
            map: None,
            run_traces: None,
            broken: Vec::new(),
        }
    }

    /// The page's title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Traces shown besides the broken ones (which are all shown), in the
    /// order their first span was captured. Default [`DEFAULT_MAX_TRACES`].
    pub fn max_traces(mut self, traces: usize) -> Self {
        self.max_traces = traces;
        self
    }

    /// Text shown as the run's summary (monospace, as printed).
    pub fn summary(mut self, text: impl Into<String>) -> Self {
        self.summary = Some(text.into());
        self
    }

    /// The service map counted elsewhere, e.g. over every span of a run
    /// whose forest holds only a sample. Default: counted from the forest.
    pub fn service_map(mut self, map: ServiceMap) -> Self {
        self.map = Some(map);
        self
    }

    /// The forest is a part of a run of `traces` traces (a sample): a link
    /// to a span outside it is not a problem but a trace not kept (a link
    /// to a span never captured is reported through
    /// [`broken_trace`](Self::broken_trace) by whoever checked the run).
    pub fn run_traces(mut self, traces: usize) -> Self {
        self.run_traces = Some(traces);
        self
    }

    /// Marks `trace` broken for `reason`, found by a check of the run; the
    /// reason is listed among the problems, on the trace's first span.
    pub fn broken_trace(mut self, trace: TraceId, reason: impl Into<String>) -> Self {
        self.broken.push((trace, reason.into()));
        self
    }

    /// The report of `forest` as one HTML page.
    pub fn to_html(&self, forest: &SpanForest) -> String {
        let partial = self.run_traces.is_some();
        let mut problems = problems::of_forest(forest);
        if partial {
            // Links to traces not kept: said on the link, not a problem.
            problems.retain(|p| p.kind != "dangling-link");
        }
        for (trace, reason) in &self.broken {
            let first = forest.trace(*trace).and_then(|t| t.spans().next());
            problems.push(ReportProblem {
                kind: "trace-check",
                trace: *trace,
                span: first.map(|s| s.index()),
                span_id: first.map_or(SpanId::INVALID, |s| s.span_id()),
                message: reason.clone(),
            });
        }
        let broken: FxHashSet<TraceId> = problems.iter().map(|p| p.trace).collect();

        // Traces in the order their first span was captured.
        let mut order = Vec::new();
        let mut seen = FxHashSet::default();
        for span in forest.spans() {
            if seen.insert(span.trace_id()) {
                order.push(span.trace_id());
            }
        }
        let mut others = 0;
        let shown: FxHashSet<TraceId> = order
            .iter()
            .copied()
            .filter(|trace| {
                broken.contains(trace) || {
                    others += 1;
                    others <= self.max_traces
                }
            })
            .collect();
        let shown_spans: Vec<_> = forest
            .captured()
            .iter()
            .filter(|c| shown.contains(&c.data.span_context.trace_id()))
            .collect();
        let shown_ids: FxHashSet<(TraceId, SpanId)> = shown_spans
            .iter()
            .map(|c| {
                (
                    c.data.span_context.trace_id(),
                    c.data.span_context.span_id(),
                )
            })
            .collect();

        // Why a link's target is not on the page.
        let mut link_targets: FxHashMap<(TraceId, SpanId), &str> = FxHashMap::default();
        for captured in &shown_spans {
            for link in captured.data.links.iter() {
                let target = (link.span_context.trace_id(), link.span_context.span_id());
                if shown_ids.contains(&target) {
                    continue;
                }
                let why = if partial || forest.find(target.0, target.1).is_some() {
                    "not-kept"
                } else {
                    "never-captured"
                };
                link_targets.insert(target, why);
            }
        }

        let data = json::export_request(shown_spans.iter().copied());
        let map = match &self.map {
            // Counted elsewhere over every span; the problems found here
            // (in the traces kept) mark their services too. Errors and a
            // run check's verdicts were counted, or name no service.
            Some(map) => {
                let mut map = map.clone();
                for problem in &problems {
                    if let ("error" | "trace-check", _) | (_, None) = (problem.kind, problem.span) {
                        continue;
                    }
                    if let Some(span) = problem.span.and_then(|index| forest.get(index)) {
                        map.add_problem(span.service());
                    }
                }
                map
            }
            None => ServiceMap::of_forest(forest),
        };

        let mut summary = String::with_capacity(4096);
        summary.push_str("{\"title\":");
        json::string(&mut summary, &self.title);
        let total = self.run_traces.unwrap_or(order.len());
        let _ = write!(
            summary,
            ",\"partial\":{partial},\"traces\":{{\"total\":{total},\"shown\":{},\"broken\":{}}},\"spans\":{{\"total\":{},\"shown\":{}}},\"map\":",
            shown.len(),
            broken.len(),
            forest.len(),
            shown_spans.len()
        );
        map.write_json(&mut summary);
        summary.push_str(",\"problems\":[");
        for (i, problem) in problems.iter().enumerate() {
            if i > 0 {
                summary.push(',');
            }
            let _ = write!(
                summary,
                "{{\"kind\":\"{}\",\"traceId\":\"{}\",\"spanId\":\"{}\",\"message\":",
                problem.kind, problem.trace, problem.span_id
            );
            json::string(&mut summary, &problem.message);
            summary.push('}');
        }
        summary.push_str("],\"linkTargets\":{");
        for (i, ((trace, span), why)) in link_targets.iter().enumerate() {
            if i > 0 {
                summary.push(',');
            }
            let _ = write!(summary, "\"{trace}/{span}\":\"{why}\"");
        }
        summary.push_str("},\"text\":");
        json::string(&mut summary, self.summary.as_deref().unwrap_or(""));
        summary.push('}');

        fill(
            PAGE,
            &[
                ("{{TITLE}}", &html_escape(&self.title)),
                ("/*KTH_CSS*/", CSS),
                ("{{KTH_DATA}}", &data),
                ("{{KTH_SUMMARY}}", &summary),
                ("/*KTH_JS*/", JS),
            ],
        )
    }

    /// Writes the report of `forest` to `path`, replacing any file there;
    /// an error names the path.
    pub fn write(&self, forest: &SpanForest, path: impl AsRef<Path>) -> std::io::Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_html(forest)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("writing the HTML report {}: {e}", path.display()),
            )
        })
    }

    /// Writes the report of every span `capture` holds to `path`.
    pub fn write_capture(
        &self,
        capture: &SpanCapture,
        path: impl AsRef<Path>,
    ) -> std::io::Result<()> {
        self.write(&capture.forest(), path)
    }
}

/// `template` with each marker replaced by its value, markers taken in
/// order; a value is never scanned for markers.
fn fill(template: &str, parts: &[(&str, &str)]) -> String {
    let size = template.len() + parts.iter().map(|(_, v)| v.len()).sum::<usize>();
    let mut out = String::with_capacity(size);
    let mut rest = template;
    for (marker, value) in parts {
        match rest.split_once(marker) {
            Some((before, after)) => {
                out.push_str(before);
                out.push_str(value);
                rest = after;
            }
            None => debug_assert!(false, "page.html lacks {marker}"),
        }
    }
    out.push_str(rest);
    out
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_filled_in_order_and_values_are_not_rescanned() {
        let out = fill("a{{X}}b{{Y}}c", &[("{{X}}", "{{Y}}"), ("{{Y}}", "2")]);
        assert_eq!(out, "a{{Y}}b2c");
    }

    #[test]
    fn the_page_has_every_marker_once() {
        for marker in [
            "{{TITLE}}",
            "/*KTH_CSS*/",
            "{{KTH_DATA}}",
            "{{KTH_SUMMARY}}",
            "/*KTH_JS*/",
        ] {
            assert_eq!(PAGE.matches(marker).count(), 1, "{marker}");
        }
    }
}
