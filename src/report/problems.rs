//! What the page lists first: the forest's structural problems, spans
//! with error status and spans whose incoming trace context was unusable,
//! each tied to one span, in words a newcomer understands.

use opentelemetry::trace::{SpanId, Status, TraceId};

use crate::forest::tree::{Problem, SpanForest};
use crate::traced::attr;

/// One entry of the report's problem list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportProblem {
    /// Its kind, as the page's `data-problem` says: `orphan`,
    /// `dangling-link`, `several-roots`, `wrong-trace`,
    /// `duplicate-span-id`, `parent-cycle`, `no-root`, `error` (a span
    /// with error status), `context-lost` (a consumer that could not use
    /// the context it received) or `trace-check` (a run's check).
    pub kind: &'static str,
    /// The trace it is in.
    pub trace: TraceId,
    /// The span it is about (index in the forest), if it has one.
    pub span: Option<usize>,
    /// That span's id ([`SpanId::INVALID`] if none).
    pub span_id: SpanId,
    /// What is wrong, in words.
    pub message: String,
}

fn first_of_trace(forest: &SpanForest, trace: TraceId) -> (Option<usize>, SpanId) {
    forest
        .trace(trace)
        .and_then(|t| t.spans().next())
        .map_or((None, SpanId::INVALID), |s| (Some(s.index()), s.span_id()))
}

/// Every problem of `forest` the report lists: the forest's
/// [`Problem`]s in its order, then spans with error status and spans that
/// lost their context, in capture order.
pub fn of_forest(forest: &SpanForest) -> Vec<ReportProblem> {
    let mut problems = Vec::new();
    let at = |kind, span: usize, message: String| {
        let view = forest.get(span)?;
        Some(ReportProblem {
            kind,
            trace: view.trace_id(),
            span: Some(span),
            span_id: view.span_id(),
            message,
        })
    };
    for problem in forest.problems() {
        let entry = match problem {
            Problem::Orphan {
                span,
                label,
                missing_parent,
            } => at(
                "orphan",
                *span,
                format!(
                    "{label} names parent span {missing_parent}, which was never captured: \
                     the context came from a span this report does not hold"
                ),
            ),
            Problem::DanglingLink {
                span,
                label,
                target,
            } => at(
                "dangling-link",
                *span,
                format!(
                    "{label} links to span {} of trace {}, which was never captured",
                    target.1, target.0
                ),
            ),
            Problem::WrongTrace {
                span,
                label,
                parent_label,
            } => at(
                "wrong-trace",
                *span,
                format!(
                    "{label} names {parent_label} as parent, but that span is in another trace"
                ),
            ),
            Problem::SeveralRoots { trace, .. } => {
                let (span, span_id) = first_of_trace(forest, *trace);
                Some(ReportProblem {
                    kind: "several-roots",
                    trace: *trace,
                    span,
                    span_id,
                    message: problem.to_string(),
                })
            }
            Problem::NoRoot { trace } => {
                let (span, span_id) = first_of_trace(forest, *trace);
                Some(ReportProblem {
                    kind: "no-root",
                    trace: *trace,
                    span,
                    span_id,
                    message: problem.to_string(),
                })
            }
            Problem::DuplicateSpanId { spans, .. } => spans
                .first()
                .and_then(|span| at("duplicate-span-id", *span, problem.to_string())),
            Problem::ParentCycle { spans, .. } => spans
                .first()
                .and_then(|span| at("parent-cycle", *span, problem.to_string())),
            // A kind added later still shows, named generically.
            #[allow(unreachable_patterns)]
            _ => None,
        };
        problems.extend(entry);
    }
    for span in forest.spans() {
        let label = format!("{} ({})", span.name(), span.service());
        if let Status::Error { description } = span.status() {
            problems.push(ReportProblem {
                kind: "error",
                trace: span.trace_id(),
                span: Some(span.index()),
                span_id: span.span_id(),
                message: if description.is_empty() {
                    format!("{label} has error status")
                } else {
                    format!("{label} has error status: {description}")
                },
            });
        }
        if let Some(why) = span.attribute(attr::CONTEXT_PROBLEM) {
            problems.push(ReportProblem {
                kind: "context-lost",
                trace: span.trace_id(),
                span: Some(span.index()),
                span_id: span.span_id(),
                message: format!(
                    "{label} could not use the trace context it received ({}): {}",
                    why.as_str(),
                    // With an ambient span (`extract_with`, `process_in`)
                    // the span is that one's child, not a new trace.
                    match span.parent() {
                        _ if span.is_root() => "it started a new trace".to_owned(),
                        Some(parent) => format!(
                            "it became a child of {} ({}) instead",
                            parent.name(),
                            parent.service()
                        ),
                        None => "it became a child of the span that was current instead".to_owned(),
                    }
                ),
            });
        }
    }
    problems
}
