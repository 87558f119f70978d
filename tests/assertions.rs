//! Pass and fail paths of every assertion; failure reports pinned.

use kafka_trace_harness::{Error, ExpectedSpan, SpanCapture, SpanForest};
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

/// The stockapp trace for one trade, with `api_services` consumers of the
/// dollars topic, plus a users trace the processor links to.
fn stockapp(api_services: &[&str]) -> SpanForest {
    let capture = SpanCapture::new();
    let datagen = capture.tracer("datagen");
    let processor = capture.tracer("stock-processor");

    let users = datagen
        .span_builder("send stockapp.users")
        .with_kind(SpanKind::Producer)
        .start(&datagen);
    let users_cx = Context::new().with_span(users);

    let send = datagen
        .span_builder("send stockapp.trades")
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.kafka.message.key", "ZVZZT"),
        ])
        .start(&datagen);
    let send_cx = Context::new().with_span(send);
    let process = processor
        .span_builder("process stockapp.trades")
        .with_kind(SpanKind::Consumer)
        .with_links(vec![Link::with_context(
            users_cx.span().span_context().clone(),
        )])
        .start_with_context(&processor, &send_cx);
    let process_cx = send_cx.with_span(process);
    processor
        .span_builder("send stockapp.trades-json")
        .with_kind(SpanKind::Producer)
        .start_with_context(&processor, &process_cx);
    let dollars = processor
        .span_builder("send stockapp.dollarsbyzip")
        .with_kind(SpanKind::Producer)
        .start_with_context(&processor, &process_cx);
    let dollars_cx = process_cx.with_span(dollars);
    for api in api_services {
        let tracer = capture.tracer(api);
        tracer
            .span_builder("process stockapp.dollarsbyzip")
            .with_kind(SpanKind::Consumer)
            .start_with_context(&tracer, &dollars_cx);
    }
    drop((dollars_cx, process_cx, send_cx, users_cx));
    capture.forest()
}

fn expected_trade() -> ExpectedSpan {
    ExpectedSpan::producer("send stockapp.trades")
        .service("datagen")
        .attr("messaging.system", "kafka")
        .has_attr("messaging.kafka.message.key")
        .child(
            ExpectedSpan::consumer("process stockapp.trades")
                .service("stock-processor")
                .link_to("send stockapp.users")
                .children([
                    // Listed in another order than they were started.
                    ExpectedSpan::producer("send stockapp.dollarsbyzip")
                        .service("stock-processor")
                        .children([
                            ExpectedSpan::consumer("process stockapp.dollarsbyzip")
                                .service("api-2"),
                            ExpectedSpan::consumer("process stockapp.dollarsbyzip")
                                .service("api-1"),
                        ]),
                    ExpectedSpan::producer("send stockapp.trades-json").service("stock-processor"),
                ]),
        )
}

fn report(result: kafka_trace_harness::Result<()>) -> String {
    match result {
        Err(Error::Assertion(text)) => text,
        other => panic!("expected an assertion failure, got {other:?}"),
    }
}

#[test]
fn the_stockapp_trace_matches_in_any_order() {
    let forest = stockapp(&["api-1", "api-2"]);
    forest.assert_trace(&expected_trade());
    forest.assert_traces(1, &expected_trade());
    forest.assert_every_parent(SpanKind::Consumer, SpanKind::Producer);
    forest.assert_no_problems();
}

#[test]
fn a_missing_consumer_fails_with_a_diff() {
    let forest = stockapp(&["api-1"]);
    let text = report(forest.try_assert_trace(&expected_trade()));
    insta::assert_snapshot!(text);
}

#[test]
fn a_wrong_count_of_traces_fails() {
    let forest = stockapp(&["api-1", "api-2"]);
    let text = report(forest.try_assert_traces(2, &expected_trade()));
    assert!(
        text.starts_with("expected exactly 2 traces like this, found 1"),
        "{text}"
    );
    assert!(
        forest
            .try_assert_traces(0, &ExpectedSpan::new("nothing"))
            .is_ok()
    );
}

#[test]
fn attribute_and_link_mismatches_are_detected() {
    let forest = stockapp(&["api-1", "api-2"]);
    let wrong_value = expected_trade().attr("messaging.kafka.message.key", "OTHER");
    assert!(forest.try_assert_trace(&wrong_value).is_err());
    let absent = expected_trade().no_attr("messaging.system");
    assert!(forest.try_assert_trace(&absent).is_err());
    let missing_link = ExpectedSpan::producer("send stockapp.users").link_to("x");
    assert!(forest.try_assert_trace(&missing_link).is_err());
    forest.assert_trace(&ExpectedSpan::producer("send stockapp.users"));
}

#[test]
fn a_consumer_without_a_producer_parent_fails() {
    let capture = SpanCapture::new();
    let api = capture.tracer("api");
    api.span_builder("process lost")
        .with_kind(SpanKind::Consumer)
        .start(&api);
    let internal = api.start("handler");
    let cx = Context::new().with_span(internal);
    api.span_builder("process nested")
        .with_kind(SpanKind::Consumer)
        .start_with_context(&api, &cx);
    drop(cx);
    let text = report(
        capture
            .forest()
            .try_assert_every_parent(SpanKind::Consumer, SpanKind::Producer),
    );
    insta::assert_snapshot!(text);
}

#[test]
fn problems_fail_the_no_problem_assertion() {
    let capture = SpanCapture::new();
    let api = capture.tracer("api");
    let remote = opentelemetry::trace::SpanContext::new(
        opentelemetry::trace::TraceId::from(1),
        opentelemetry::trace::SpanId::from(2),
        opentelemetry::trace::TraceFlags::SAMPLED,
        true,
        Default::default(),
    );
    api.start_with_context("orphan", &Context::new().with_remote_span_context(remote));
    let text = report(capture.forest().try_assert_no_problems());
    insta::assert_snapshot!(text);
}

#[test]
#[should_panic(expected = "expected at least 1 trace like this, found 0")]
fn the_panicking_twin_panics_with_the_report() {
    stockapp(&[]).assert_trace(&expected_trade());
}

#[test]
fn error_status_is_matched_when_asked() {
    let capture = SpanCapture::new();
    let api = capture.tracer("api");
    let cx = Context::new().with_span(api.start("process bad record"));
    cx.span()
        .set_status(opentelemetry::trace::Status::error("undecodable"));
    drop(cx);
    api.start("process good record");
    let forest = capture.forest();
    forest.assert_trace(&ExpectedSpan::new("process bad record").error(true));
    forest.assert_trace(&ExpectedSpan::new("process good record").error(false));
    let text =
        report(forest.try_assert_trace(&ExpectedSpan::new("process bad record").error(false)));
    assert!(
        text.contains("  - \"process bad record\" status=not-error\n"),
        "{text}"
    );
    assert!(
        text.contains("+ \"process bad record\" status=error"),
        "{text}"
    );
}
