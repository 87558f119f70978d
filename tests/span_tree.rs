//! The span forest: relations, lookups and structural problems.

use kafka_trace_harness::{CapturedSpan, Problem, SpanForest};
use opentelemetry::trace::{Link, SpanId, SpanKind, TraceId};
use opentelemetry::{KeyValue, Value};

#[path = "support/spans.rs"]
mod spans;
use spans::{context, span};

fn with_link(mut s: CapturedSpan, trace: u128, id: u64) -> CapturedSpan {
    s.data
        .links
        .links
        .push(Link::with_context(context(trace, id)));
    s
}

#[test]
fn relations_and_lookups() {
    let mut send = span("datagen", "send", 1, 10, 0);
    send.data.span_kind = SpanKind::Producer;
    send.data
        .attributes
        .push(KeyValue::new("messaging.system", "kafka"));
    let forest = SpanForest::new(vec![
        span("api", "process", 1, 11, 10),
        send,
        with_link(span("api", "handle", 2, 20, 0), 1, 10),
    ]);
    assert_eq!(forest.len(), 3);
    assert_eq!(forest.traces().len(), 2);
    assert_eq!(forest.roots().count(), 2);
    let send = forest.named("send").next().unwrap();
    assert_eq!(
        send.children().map(|c| c.name()).collect::<Vec<_>>(),
        ["process"]
    );
    assert_eq!(
        forest
            .named("process")
            .next()
            .unwrap()
            .parent()
            .unwrap()
            .name(),
        "send"
    );
    let (_, target) = forest
        .named("handle")
        .next()
        .unwrap()
        .links()
        .next()
        .unwrap();
    assert_eq!(
        target.unwrap().name(),
        "send",
        "links resolve across traces"
    );
    assert_eq!(forest.of_kind(SpanKind::Producer).count(), 1);
    assert_eq!(forest.of_service("api").count(), 2);
    assert_eq!(
        forest
            .with_attribute("messaging.system", Value::from("kafka"))
            .count(),
        1
    );
    let found = forest.find(TraceId::from(1), SpanId::from(11)).unwrap();
    assert_eq!(found.name(), "process");
    assert!(forest.find(TraceId::from(2), SpanId::from(11)).is_none());
    assert!(forest.problems().is_empty());
}

#[test]
fn every_problem_is_detected() {
    let forest = SpanForest::new(vec![
        span("a", "root", 1, 1, 0),
        span("a", "second root", 1, 2, 0),
        span("a", "orphan", 1, 3, 99),
        span("b", "mixed", 2, 4, 1),
        with_link(span("b", "linker", 3, 5, 0), 7, 77),
    ]);
    let kinds: Vec<&str> = forest
        .problems()
        .iter()
        .map(|p| match p {
            Problem::Orphan { .. } => "orphan",
            Problem::DanglingLink { .. } => "dangling link",
            Problem::SeveralRoots { .. } => "several roots",
            Problem::WrongTrace { .. } => "wrong trace",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["orphan", "wrong trace", "dangling link", "several roots"]
    );
    for p in forest.problems() {
        assert!(!p.to_string().is_empty());
    }
    insta::assert_snapshot!(forest.render());
}

/// Traces both small and large (the forest resolves them differently),
/// with duplicated span ids across traces, links both ways, an orphan and a
/// parent named in another trace.
#[test]
fn large_and_small_traces_resolve_alike() {
    const LARGE: u64 = 100;
    let mut spans = vec![span("svc", "root", 1, 1, 0)];
    // Trace 1: a chain of LARGE spans, captured children first.
    for id in (2..=LARGE).rev() {
        spans.push(span("svc", "hop", 1, id, id - 1));
    }
    // Trace 2: small, reusing span ids of trace 1.
    spans.push(span("svc", "root", 2, 1, 0));
    spans.push(with_link(span("svc", "child", 2, 2, 1), 1, LARGE));
    spans.push(span("svc", "only in trace 2", 2, 777, 1));
    // Into the large trace: a link, an orphan and a parent from trace 2.
    spans.push(with_link(span("svc", "linked", 1, 500, LARGE), 2, 2));
    spans.push(span("svc", "orphan", 1, 501, 999));
    spans.push(span("svc", "misplaced", 1, 502, 777));
    let forest = SpanForest::new(spans);

    let large = forest.trace(TraceId::from(1)).expect("trace 1");
    assert_eq!(large.len(), LARGE as usize + 3);
    let last = forest
        .find(TraceId::from(1), SpanId::from(LARGE))
        .expect("last hop");
    assert_eq!(
        last.parent().map(|p| p.span_id()),
        Some(SpanId::from(LARGE - 1))
    );
    let linked = forest.named("linked").next().expect("linked");
    assert_eq!(linked.parent().map(|p| p.span_id()), Some(last.span_id()));
    let (_, target) = linked.links().next().expect("a link");
    assert_eq!(target.map(|t| t.name()), Some("child"));
    let child = forest.named("child").next().expect("child");
    assert_eq!(child.parent().map(|p| p.trace_id()), Some(TraceId::from(2)));
    let (_, target) = child.links().next().expect("a link");
    assert_eq!(target.map(|t| t.span_id()), Some(last.span_id()));

    let kinds: Vec<&str> = forest
        .problems()
        .iter()
        .map(|p| match p {
            Problem::Orphan { .. } => "orphan",
            Problem::WrongTrace { .. } => "wrong trace",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["orphan", "wrong trace"]);
    let misplaced = forest.named("misplaced").next().expect("misplaced");
    assert!(misplaced.parent().is_none());
}

/// The kind of each problem, in the forest's order.
fn problem_kinds(forest: &SpanForest) -> Vec<&'static str> {
    forest
        .problems()
        .iter()
        .map(|p| match p {
            Problem::Orphan { .. } => "orphan",
            Problem::DanglingLink { .. } => "dangling link",
            Problem::SeveralRoots { .. } => "several roots",
            Problem::WrongTrace { .. } => "wrong trace",
            Problem::DuplicateSpanId { .. } => "duplicate span id",
            Problem::ParentCycle { .. } => "parent cycle",
            Problem::NoRoot { .. } => "no root",
            _ => "other",
        })
        .collect()
}

/// Number of spans a rendering shows (`S<n> "name" …` head lines).
fn rendered_spans(text: &str) -> usize {
    text.lines()
        .take_while(|l| *l != "problems")
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with('S') && l[1..].starts_with(|c: char| c.is_ascii_digit())
        })
        .count()
}

fn report(result: kafka_trace_harness::Result<()>) -> String {
    match result {
        Err(kafka_trace_harness::Error::Assertion(text)) => text,
        other => panic!("expected an assertion failure, got {other:?}"),
    }
}

#[test]
fn spans_that_are_each_others_parents_make_a_trace_without_root() {
    let forest = SpanForest::new(vec![
        span("b", "second", 1, 2, 1),
        span("a", "first", 1, 1, 2),
    ]);

    assert_eq!(problem_kinds(&forest), ["parent cycle", "no root"]);
    let Problem::ParentCycle {
        trace,
        spans,
        labels,
    } = &forest.problems()[0]
    else {
        unreachable!()
    };
    assert_eq!(*trace, TraceId::from(1));
    // Cut at the least name: "first", which names "second" as parent.
    assert_eq!(spans, &[1, 0]);
    assert_eq!(labels, &[r#""first" (a)"#, r#""second" (b)"#]);
    assert_eq!(
        forest.problems()[0].to_string(),
        format!(
            r#"parent cycle in trace {}: "first" (a) → "second" (b) → "first" (a) (each names the next as parent)"#,
            TraceId::from(1)
        )
    );
    assert_eq!(
        forest.problems()[1],
        Problem::NoRoot {
            trace: TraceId::from(1)
        }
    );

    // The cut makes a tree that every walk can finish.
    let first = forest.named("first").next().unwrap();
    assert!(first.parent().is_none());
    assert!(!first.is_root(), "it still names a parent");
    assert_eq!(
        first.children().map(|c| c.name()).collect::<Vec<_>>(),
        ["second"]
    );
    let trace = forest.trace(TraceId::from(1)).unwrap();
    assert_eq!(trace.roots().len(), 1);

    let text = forest.render();
    assert_eq!(rendered_spans(&text), 2);
    assert_eq!(
        kafka_trace_harness::Render::new().trace(&trace),
        text.split("problems\n").next().unwrap()
    );
    insta::assert_snapshot!(text, @r#"
    trace T1 (no root)
      S1 "first" INTERNAL service=a
        ↺ parent S2 (a parent cycle, cut here)
        S2 "second" INTERNAL service=b
    problems
      parent cycle: S1 "first" → S2 "second" → S1 (each names the next as parent)
      trace T1 has no root
    "#);
}

#[test]
fn a_span_that_is_its_own_parent_is_a_cycle_of_one() {
    let forest = SpanForest::new(vec![
        span("a", "root", 1, 1, 0),
        span("a", "itself", 1, 2, 2),
        span("a", "below itself", 1, 3, 2),
        with_link(span("a", "linked to itself", 1, 4, 1), 1, 4),
    ]);

    // The trace has a root, so only the cycle is reported.
    assert_eq!(problem_kinds(&forest), ["parent cycle"]);
    assert_eq!(
        forest.problems()[0].to_string(),
        format!(
            r#"parent cycle in trace {}: "itself" (a) → "itself" (a) (each names the next as parent)"#,
            TraceId::from(1)
        )
    );
    let itself = forest.named("itself").next().unwrap();
    assert!(itself.parent().is_none());
    assert_eq!(itself.children().count(), 1, "not its own child");
    let (_, target) = forest
        .named("linked to itself")
        .next()
        .unwrap()
        .links()
        .next()
        .unwrap();
    assert_eq!(target.map(|t| t.name()), Some("linked to itself"));
    insta::assert_snapshot!(forest.render(), @r#"
    trace T1
      S1 "itself" INTERNAL service=a
        ↺ parent S1 (a parent cycle, cut here)
        S2 "below itself" INTERNAL service=a
      S3 "root" INTERNAL service=a
        S4 "linked to itself" INTERNAL service=a
          → link S4
    problems
      parent cycle: S1 "itself" → S1 (each names the next as parent)
    "#);
}

#[test]
fn a_cycle_beside_a_root_is_rendered_with_what_hangs_from_it() {
    let forest = SpanForest::new(vec![
        span("svc", "root", 1, 1, 0),
        span("svc", "c", 1, 12, 10),
        span("svc", "a", 1, 10, 11),
        span("svc", "b", 1, 11, 12),
        span("svc", "hangs from b", 1, 13, 11),
    ]);
    assert_eq!(problem_kinds(&forest), ["parent cycle"]);
    let text = forest.render();
    assert_eq!(rendered_spans(&text), forest.len());
    insta::assert_snapshot!(text, @r#"
    trace T1
      S1 "a" INTERNAL service=svc
        ↺ parent S3 (a parent cycle, cut here)
        S2 "c" INTERNAL service=svc
          S3 "b" INTERNAL service=svc
            S4 "hangs from b" INTERNAL service=svc
      S5 "root" INTERNAL service=svc
    problems
      parent cycle: S1 "a" → S3 "b" → S2 "c" → S1 (each names the next as parent)
    "#);
}

#[test]
fn duplicate_span_ids_are_reported_and_resolve_to_the_first() {
    let forest = SpanForest::new(vec![
        span("a", "root", 1, 1, 0),
        span("a", "send", 1, 7, 1),
        span("b", "copy of send", 1, 7, 1),
        span("c", "child of 7", 1, 8, 7),
        with_link(span("c", "link to 7", 1, 9, 1), 1, 7),
        // The same id in another trace is no duplicate.
        span("d", "other trace", 2, 7, 0),
    ]);

    assert_eq!(problem_kinds(&forest), ["duplicate span id"]);
    assert_eq!(
        forest.problems()[0],
        Problem::DuplicateSpanId {
            trace: TraceId::from(1),
            span_id: SpanId::from(7),
            spans: vec![1, 2],
            labels: vec![
                r#""send" (a)"#.to_owned(),
                r#""copy of send" (b)"#.to_owned()
            ],
        }
    );
    assert!(forest.problems()[0].to_string().starts_with(&format!(
        r#"duplicate span id: 2 spans of trace {} have id {}"#,
        TraceId::from(1),
        SpanId::from(7)
    )));
    let child = forest.named("child of 7").next().unwrap();
    assert_eq!(child.parent().map(|p| p.name()), Some("send"));
    let (_, target) = forest
        .named("link to 7")
        .next()
        .unwrap()
        .links()
        .next()
        .unwrap();
    assert_eq!(target.map(|t| t.name()), Some("send"));
    insta::assert_snapshot!(forest.render(), @r#"
    trace T1
      S1 "other trace" INTERNAL service=d
    trace T2
      S2 "root" INTERNAL service=a
        S3 "copy of send" INTERNAL service=b
        S4 "link to 7" INTERNAL service=c
          → link S5
        S5 "send" INTERNAL service=a
          S6 "child of 7" INTERNAL service=c
    problems
      duplicate span id: S5 "send", S3 "copy of send" share one id in trace T2; children and links resolve to S5
    "#);
}

#[test]
fn duplicates_in_a_large_trace_are_found_too() {
    // Over the size up to which a trace is scanned rather than indexed.
    let mut spans = vec![span("svc", "root", 1, 1, 0)];
    spans.extend((2..=60).map(|id| span("svc", "hop", 1, id, id - 1)));
    spans.push(span("svc", "again 30", 1, 30, 1));
    spans.push(span("svc", "again 30 once more", 1, 30, 1));
    spans.push(span("svc", "again 5", 1, 5, 1));
    let forest = SpanForest::new(spans);
    let groups: Vec<(SpanId, Vec<usize>)> = forest
        .problems()
        .iter()
        .map(|p| match p {
            Problem::DuplicateSpanId { span_id, spans, .. } => (*span_id, spans.clone()),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        groups,
        [
            (SpanId::from(5), vec![4, 62]),
            (SpanId::from(30), vec![29, 60, 61])
        ]
    );
}

#[test]
fn reports_list_the_new_problems_and_never_match_a_cut_cycle() {
    let mut producer = span("datagen", "send", 1, 1, 2);
    producer.data.span_kind = SpanKind::Producer;
    let mut consumer = span("api", "process", 1, 2, 1);
    consumer.data.span_kind = SpanKind::Consumer;
    let forest = SpanForest::new(vec![producer, consumer, span("api", "twin", 1, 2, 0)]);
    assert_eq!(
        problem_kinds(&forest),
        ["duplicate span id", "parent cycle"]
    );

    // The cut "process" would match the shape if it counted as a root.
    let shape = kafka_trace_harness::ExpectedSpan::consumer("process")
        .child(kafka_trace_harness::ExpectedSpan::producer("send"));
    assert!(forest.try_assert_trace(&shape).is_err());
    let parents = report(forest.try_assert_every_parent(SpanKind::Consumer, SpanKind::Producer));
    assert!(
        parents.contains(r#""process" (service api) is in a parent cycle"#),
        "{parents}"
    );
    insta::assert_snapshot!(report(forest.try_assert_no_problems()));
}

#[test]
fn a_deep_chain_is_reported_on_a_small_stack() {
    // Deep enough that one stack frame per level would overflow 256 KiB.
    let spans: Vec<CapturedSpan> = (1..=2_000)
        .map(|id| span("svc", "hop", 1, id, id - 1))
        .collect();
    let report = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let forest = SpanForest::new(spans);
            let expected = kafka_trace_harness::ExpectedSpan::new("hop")
                .child(kafka_trace_harness::ExpectedSpan::new("other"));
            report(forest.try_assert_trace(&expected))
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert!(
        report.starts_with("expected at least 1 trace like this, found 0"),
        "{}",
        &report[..200]
    );
    assert!(report.contains("closest actual trace:"));
}

mod any_forest {
    use super::*;
    use proptest::prelude::*;

    /// A span drawn from small id ranges, so that duplicates, cycles,
    /// self-parents, orphans and links to anything all occur.
    fn any_span() -> impl Strategy<Value = CapturedSpan> {
        let names: &'static [&'static str] = &["a", "b", "c"];
        (
            0..2usize,
            0..3usize,
            0u128..3,
            0u64..5,
            0u64..6,
            proptest::collection::vec((0u128..3, 0u64..6), 0..3),
        )
            .prop_map(move |(service, name, trace, id, parent, links)| {
                let mut s = span(["x", "y"][service], names[name], trace, id, parent);
                for (trace, id) in links {
                    s = with_link(s, trace, id);
                }
                s
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_forest_builds_renders_and_reports(spans in proptest::collection::vec(any_span(), 0..12)) {
            let forest = SpanForest::new(spans);

            // Walking up always ends, and every span hangs from a root.
            for s in forest.spans() {
                let mut up = s;
                let mut steps = 0;
                while let Some(p) = up.parent() {
                    up = p;
                    steps += 1;
                    prop_assert!(steps <= forest.len());
                }
                prop_assert!(up.parent().is_none());
            }
            let mut reached = 0;
            let mut stack: Vec<_> = forest.roots().collect();
            while let Some(s) = stack.pop() {
                reached += 1;
                stack.extend(s.children());
            }
            prop_assert_eq!(reached, forest.len());
            for trace in forest.traces() {
                prop_assert!(!trace.roots().is_empty());
                let text = kafka_trace_harness::Render::new().trace(&trace);
                prop_assert_eq!(rendered_spans(&text), trace.len());
            }

            let text = forest.render();
            prop_assert_eq!(rendered_spans(&text), forest.len());
            prop_assert_eq!(text.contains("problems\n"), !forest.problems().is_empty());
            for p in forest.problems() {
                prop_assert!(!p.to_string().is_empty());
            }
            match forest.try_assert_no_problems() {
                Ok(()) => prop_assert!(forest.problems().is_empty()),
                Err(e) => prop_assert!(e.to_string().contains("problems\n")),
            }
            let shape = kafka_trace_harness::ExpectedSpan::new("a")
                .child(kafka_trace_harness::ExpectedSpan::new("b"));
            let _ = forest.try_assert_trace(&shape);
            let _ = forest.try_assert_every_parent(SpanKind::Internal, SpanKind::Internal);
        }
    }
}
