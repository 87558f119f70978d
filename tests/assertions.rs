//! Pass and fail paths of every assertion; failure reports pinned.

use std::time::Duration;

use kafka_trace_harness::forest::ExpectedLink;
use kafka_trace_harness::{
    AttributeMatcher, Condition, Error, ExpectedSpan, SpanCapture, SpanForest,
};
use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, Value};

#[path = "support/spans.rs"]
mod spans;

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
fn a_count_report_shows_a_trace_that_does_not_match() {
    // Two trades: one reaches both API consumers, the other only api-1.
    let both = stockapp(&["api-1", "api-2"]);
    let one = stockapp(&["api-1"]);
    let forest = SpanForest::new(
        both.captured()
            .iter()
            .chain(one.captured())
            .cloned()
            .collect(),
    );
    let text = report(forest.try_assert_traces(2, &expected_trade()));
    assert!(
        text.starts_with("expected exactly 2 traces like this, found 1 among 4 traces"),
        "{text}"
    );
    assert!(
        text.contains("closest actual trace among those that do not match:"),
        "{text}"
    );
    assert!(
        text.contains("    -      \"process stockapp.dollarsbyzip\" CONSUMER service=api-2\n"),
        "{text}"
    );
    // Too many: the closest trace is one that matches.
    let text = report(forest.try_assert_traces(0, &expected_trade()));
    assert!(
        text.contains("closest actual trace: no difference from the expected one"),
        "{text}"
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
        text.contains("    -\"process bad record\" status=not-error\n"),
        "{text}"
    );
    assert!(
        text.contains("    +\"process bad record\" status=error\n"),
        "{text}"
    );
}

/// One order through services instrumented like the OpenTelemetry Java
/// agent: the send happens inside an HTTP request and an internal span; a
/// `receive` CLIENT span sits between the producer and the `process`
/// CONSUMER span, which also links to the producer; processing makes a
/// database call, an HTTP call, and an internal span that sends an invoice.
/// `lost_receive` starts the receive span from a context never captured.
fn java_agent_order(capture: &SpanCapture, lost_receive: bool) -> SpanForest {
    let shop = capture.tracer("shop");
    let billing = capture.tracer("billing");
    let request = shop
        .span_builder("POST /orders")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/orders"),
        ])
        .start(&shop);
    let request_cx = Context::new().with_span(request);
    let place = shop
        .span_builder("OrderService.place")
        .start_with_context(&shop, &request_cx);
    let place_cx = request_cx.with_span(place);
    let publish = shop
        .span_builder("orders publish")
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation", "publish"),
            KeyValue::new("messaging.destination.name", "orders-eu-1"),
            KeyValue::new("messaging.kafka.destination.partition", 2_i64),
            KeyValue::new("messaging.kafka.message.offset", 41_i64),
            KeyValue::new("messaging.client_id", "producer-1"),
        ])
        .start_with_context(&shop, &place_cx);
    let publish_cx = place_cx.with_span(publish);
    let sent = publish_cx.span().span_context().clone();

    let receive_parent = if lost_receive {
        Context::new().with_remote_span_context(SpanContext::new(
            sent.trace_id(),
            opentelemetry::trace::SpanId::from(0xdead_u64),
            sent.trace_flags(),
            true,
            Default::default(),
        ))
    } else {
        publish_cx.clone()
    };
    let receive = billing
        .span_builder("orders receive")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation", "receive"),
            KeyValue::new("messaging.kafka.consumer.group", "billing"),
        ])
        .start_with_context(&billing, &receive_parent);
    let receive_cx = receive_parent.with_span(receive);
    let process = billing
        .span_builder("orders process")
        .with_kind(SpanKind::Consumer)
        .with_links(vec![Link::with_context(sent)])
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation", "process"),
            KeyValue::new("messaging.destination.name", "orders-eu-1"),
            KeyValue::new("messaging.kafka.consumer.group", "billing"),
        ])
        .start_with_context(&billing, &receive_cx);
    let process_cx = receive_cx.with_span(process);
    billing
        .span_builder("SELECT billing.accounts")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("db.system.name", "postgresql")])
        .start_with_context(&billing, &process_cx);
    billing
        .span_builder("GET /rates")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("http.request.method", "GET")])
        .start_with_context(&billing, &process_cx);
    let create = billing
        .span_builder("InvoiceService.create")
        .start_with_context(&billing, &process_cx);
    let create_cx = process_cx.with_span(create);
    billing
        .span_builder("invoices publish")
        .with_kind(SpanKind::Producer)
        .with_attributes([KeyValue::new("messaging.destination.name", "invoices")])
        .start_with_context(&billing, &create_cx);
    drop((
        create_cx,
        process_cx,
        receive_cx,
        receive_parent,
        publish_cx,
        place_cx,
        request_cx,
    ));
    capture.forest()
}

/// The spans this test cares about, nothing else: the order's send, its
/// processing in billing (linked to the send) and the invoice it sends.
fn order_reaches_invoices() -> ExpectedSpan {
    ExpectedSpan::producer("orders publish")
        .service("shop")
        .at_any_depth()
        .descendant(
            ExpectedSpan::consumer("orders process")
                .service("billing")
                .link_to("orders publish")
                .descendant(ExpectedSpan::producer("invoices publish").service("billing")),
        )
}

#[test]
fn a_partial_expectation_matches_a_java_agent_trace() {
    let capture = SpanCapture::new();
    let forest = java_agent_order(&capture, false);
    assert_eq!(forest.len(), 9);
    forest.assert_trace(&order_reaches_invoices());
    forest.assert_traces(1, &order_reaches_invoices());
    forest.assert_no_problems();
    forest.assert_every_parent(SpanKind::Consumer, SpanKind::Client);

    // The same spans from the trace's real root.
    let from_request = ExpectedSpan::server("POST /orders").descendant(
        ExpectedSpan::producer("orders publish").child(
            ExpectedSpan::client("orders receive")
                .child(ExpectedSpan::consumer("orders process").allow_extra_children()),
        ),
    );
    forest.assert_trace(&from_request);

    // Without at_any_depth, the root must be the trace's root.
    let publish_as_root = ExpectedSpan::producer("orders publish").allow_extra_children();
    assert!(forest.try_assert_trace(&publish_as_root).is_err());
    forest.assert_trace(&publish_as_root.at_any_depth());

    // A child is a direct child: the receive span is in between.
    let process_as_child = ExpectedSpan::producer("orders publish")
        .at_any_depth()
        .child(ExpectedSpan::consumer("orders process").allow_extra_children());
    assert!(forest.try_assert_trace(&process_as_child).is_err());

    // Exact stays the default: the unlisted database, HTTP and internal
    // spans fail an exact process span, and pass once allowed.
    let process = ExpectedSpan::consumer("orders process")
        .at_any_depth()
        .child(ExpectedSpan::client("SELECT billing.accounts"))
        .child(ExpectedSpan::client("GET /rates"));
    assert!(forest.try_assert_trace(&process).is_err());
    forest.assert_trace(&process.clone().allow_extra_children());
    forest.assert_trace(
        &process.child(
            ExpectedSpan::new("InvoiceService.create")
                .kind(SpanKind::Internal)
                .child(ExpectedSpan::producer("invoices publish")),
        ),
    );

    // Each expected span needs a span of its own.
    let twice = ExpectedSpan::consumer("orders process")
        .at_any_depth()
        .descendant(ExpectedSpan::producer("invoices publish"))
        .descendant(ExpectedSpan::producer("invoices publish"));
    assert!(forest.try_assert_trace(&twice).is_err());
    assert!(
        forest
            .try_assert_traces(2, &order_reaches_invoices())
            .is_err()
    );
}

#[test]
fn a_missing_span_in_a_partial_expectation_fails_with_a_clear_diff() {
    let capture = SpanCapture::new();
    let forest = java_agent_order(&capture, false);
    let expected = ExpectedSpan::producer("orders publish")
        .service("shop")
        .at_any_depth()
        .descendant(
            ExpectedSpan::consumer("orders process")
                .service("billing")
                .link_to("orders publish")
                .descendant(ExpectedSpan::producer("invoices publish").service("billing"))
                .descendant(ExpectedSpan::producer("payments publish").service("billing")),
        );
    let text = report(forest.try_assert_trace(&expected));
    // Only the missing span differs: the unlisted spans are left out.
    let changed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("    -") || l.starts_with("    +"))
        .collect();
    assert_eq!(
        changed,
        [
            "    --- expected",
            "    +++ actual",
            "    -    … \"payments publish\" PRODUCER service=billing"
        ],
        "{text}"
    );
    insta::assert_snapshot!(text);

    // The report is the same whatever order the spans were captured in.
    let reversed = SpanForest::new(forest.captured().iter().rev().cloned().collect());
    assert_eq!(report(reversed.try_assert_trace(&expected)), text);
}

#[test]
fn attribute_predicates_test_prefix_substring_range_and_closures() {
    let capture = SpanCapture::new();
    let forest = java_agent_order(&capture, false);
    let publish_with = |matcher: AttributeMatcher| {
        ExpectedSpan::producer("orders publish")
            .at_any_depth()
            .allow_extra_children()
            .attribute(matcher)
    };
    let odd = |v: &Value| matches!(v, Value::I64(n) if n % 2 == 1);
    let passing = [
        AttributeMatcher::prefix("messaging.destination.name", "orders-"),
        AttributeMatcher::contains("messaging.destination.name", "-eu-"),
        AttributeMatcher::int_range("messaging.kafka.message.offset", 0..=41),
        AttributeMatcher::any("messaging.client_id"),
        AttributeMatcher::equals("messaging.kafka.destination.partition", 2_i64),
        AttributeMatcher::absent("messaging.operation.type"),
        AttributeMatcher::predicate("messaging.kafka.message.offset", "odd", odd),
    ];
    for matcher in passing {
        forest.assert_trace(&publish_with(matcher));
    }
    let failing = [
        AttributeMatcher::prefix("messaging.destination.name", "payments-"),
        AttributeMatcher::contains("messaging.destination.name", "-us-"),
        AttributeMatcher::int_range("messaging.kafka.message.offset", 42..=100),
        // Types are not converted: an integer has no prefix, a string no range.
        AttributeMatcher::prefix("messaging.kafka.message.offset", "4"),
        AttributeMatcher::int_range("messaging.destination.name", 0..=i64::MAX),
        AttributeMatcher::any("messaging.operation.type"),
        AttributeMatcher::absent("messaging.client_id"),
        AttributeMatcher::predicate("messaging.kafka.destination.partition", "odd", odd),
        AttributeMatcher::predicate("missing", "anything", |_| true),
    ];
    for matcher in failing {
        let text = matcher.to_string();
        assert!(
            forest.try_assert_trace(&publish_with(matcher)).is_err(),
            "{text} should fail"
        );
    }
    forest.assert_trace(
        &ExpectedSpan::consumer("orders process")
            .at_any_depth()
            .allow_extra_children()
            .attr_matches("messaging.kafka.consumer.group", "a billing group", |v| {
                v.as_str().starts_with("billing")
            }),
    );
}

#[test]
fn a_failed_predicate_shows_the_actual_value() {
    let capture = SpanCapture::new();
    let forest = java_agent_order(&capture, false);
    let expected = ExpectedSpan::producer("orders publish")
        .at_any_depth()
        .allow_extra_children()
        .attribute(AttributeMatcher::prefix(
            "messaging.destination.name",
            "orders-",
        ))
        .attribute(AttributeMatcher::contains(
            "messaging.client_id",
            "consumer",
        ))
        .attribute(AttributeMatcher::int_range(
            "messaging.kafka.message.offset",
            0..=9,
        ))
        .attr_matches(
            "messaging.kafka.destination.partition",
            "even",
            |v| matches!(v, Value::I64(n) if n % 2 == 0),
        );
    let text = report(forest.try_assert_trace(&expected));
    assert!(
        text.contains("    +  · messaging.kafka.message.offset = 41\n"),
        "{text}"
    );
    insta::assert_snapshot!(text);
}

/// A window row's send with links to the two trades it sums (by offset)
/// and to the user it joined.
fn linked_window_row() -> SpanForest {
    let capture = SpanCapture::new();
    let processor = capture.tracer("stock-processor");
    let ended = |name: &str| {
        let span = processor
            .span_builder(name.to_owned())
            .with_kind(SpanKind::Producer)
            .start(&processor);
        Context::new().with_span(span).span().span_context().clone()
    };
    let (first, second, user) = (
        ended("send trades"),
        ended("send trades"),
        ended("send users"),
    );
    let link = |cx: SpanContext, role: &str, offset: Option<i64>| {
        let mut attributes = vec![KeyValue::new("stockapp.link", role.to_owned())];
        attributes.extend(offset.map(|o| KeyValue::new("messaging.kafka.offset", o)));
        Link::new(cx, attributes, 0)
    };
    processor
        .span_builder("send dollarsbyzip")
        .with_kind(SpanKind::Producer)
        .with_links(vec![
            link(first, "window", Some(3)),
            link(second, "window", Some(4)),
            link(user, "join", None),
        ])
        .start(&processor);
    capture.forest()
}

#[test]
fn links_are_matched_with_their_attributes() {
    let forest = linked_window_row();
    let row = || ExpectedSpan::producer("send dollarsbyzip");
    forest.assert_trace(
        &row()
            .link(ExpectedLink::to("send users").attr("stockapp.link", "join"))
            .link(
                ExpectedLink::to("send trades")
                    .attr("stockapp.link", "window")
                    .attribute(AttributeMatcher::int_range("messaging.kafka.offset", 4..=4)),
            )
            .link_to("send trades"),
    );
    // The first expected link fits both trade links, the second only the
    // first one: links are matched as a whole, not first come first served.
    forest.assert_trace(
        &row()
            .link(ExpectedLink::to("send trades").has_attr("messaging.kafka.offset"))
            .link(ExpectedLink::to("send trades").attr("messaging.kafka.offset", 3_i64)),
    );
    forest.assert_trace(
        &row().link(ExpectedLink::to("send users").no_attr("messaging.kafka.offset")),
    );

    let failing = [
        row().link(ExpectedLink::to("send users").has_attr("messaging.kafka.offset")),
        row().link(ExpectedLink::to("send trades").attr("messaging.kafka.offset", 5_i64)),
        row()
            .link_to("send trades")
            .link_to("send trades")
            .link_to("send trades"),
        row().link(ExpectedLink::to("send dollarsbyzip")),
    ];
    for expected in failing {
        assert!(forest.try_assert_trace(&expected).is_err(), "{expected:?}");
    }
}

#[test]
fn a_wrong_link_attribute_fails_with_a_diff() {
    let forest = linked_window_row();
    let expected = ExpectedSpan::producer("send dollarsbyzip")
        .link(ExpectedLink::to("send users").attr("stockapp.link", "window"))
        .link(ExpectedLink::to("send trades").attr("messaging.kafka.offset", 3_i64));
    let text = report(forest.try_assert_trace(&expected));
    assert!(
        text.contains("    -  → link \"send users\" with stockapp.link = \"window\"\n"),
        "{text}"
    );
    assert!(
        text.contains("    +  → link \"send users\" with stockapp.link = \"join\"\n"),
        "{text}"
    );
    insta::assert_snapshot!(text);
}

#[tokio::test]
async fn a_condition_from_a_shape_waits_and_reports_the_diff_at_the_deadline() {
    let capture = SpanCapture::new();
    let shop = capture.tracer("shop");
    let billing = capture.tracer("billing");
    let publish = shop
        .span_builder("orders publish")
        .with_kind(SpanKind::Producer)
        .start(&shop);
    let cx = Context::new().with_span(publish);
    // The consumer's span ends later, on another task; the send span ends
    // when its last context drops there.
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        billing
            .span_builder("orders process")
            .with_kind(SpanKind::Consumer)
            .start_with_context(&billing, &cx);
    });
    let shape = ExpectedSpan::producer("orders publish")
        .child(ExpectedSpan::consumer("orders process").service("billing"));
    let forest = capture
        .wait_for(Condition::trace(shape.clone()), Duration::from_secs(10))
        .await
        .expect("the shape appears");
    forest.assert_trace(&shape);
    task.await.expect("task");
    capture
        .wait_for(Condition::traces(1, shape.clone()), Duration::ZERO)
        .await
        .expect("exactly one");

    // Never two such traces: the error carries the assertion's report.
    let err = capture
        .wait_for(
            Condition::traces(2, shape.clone()),
            Duration::from_millis(20),
        )
        .await
        .expect_err("only one trace");
    let Error::Wait {
        condition, seen, ..
    } = &err
    else {
        panic!("expected a wait error, got {err:?}");
    };
    assert_eq!(
        condition,
        "exactly 2 traces like \"orders publish\" PRODUCER (2 spans listed)"
    );
    assert_eq!(*seen, report(capture.forest().try_assert_traces(2, &shape)));

    // A shape that never comes: the diff names what differs.
    let wrong = ExpectedSpan::producer("orders publish")
        .child(ExpectedSpan::consumer("orders process").service("payments"));
    let err = capture
        .wait_for(Condition::trace(wrong.clone()), Duration::from_millis(20))
        .await
        .expect_err("never");
    let Error::Wait { seen, .. } = &err else {
        panic!("expected a wait error, got {err:?}");
    };
    assert_eq!(*seen, report(capture.forest().try_assert_trace(&wrong)));
    assert!(err.to_string().contains(seen.as_str()));
    insta::assert_snapshot!(seen);
}

#[test]
fn a_shape_report_lists_the_forests_problems() {
    let capture = SpanCapture::new();
    let forest = java_agent_order(&capture, true);
    assert_eq!(forest.problems().len(), 1, "{:?}", forest.problems());
    let text = report(forest.try_assert_trace(&order_reaches_invoices()));
    assert!(
        text.contains("orphan: S4 \"orders receive\" names a parent never captured"),
        "{text}"
    );
    insta::assert_snapshot!(text);
}

#[test]
fn every_parent_fails_when_no_span_has_the_child_kind() {
    let capture = SpanCapture::new();
    let api = capture.tracer("api");
    api.span_builder("send orders")
        .with_kind(SpanKind::Producer)
        .start(&api);
    let text = report(
        capture
            .forest()
            .try_assert_every_parent(SpanKind::Consumer, SpanKind::Producer),
    );
    assert!(
        text.starts_with(
            "expected every CONSUMER span to have a PRODUCER parent, but no CONSUMER span \
             was captured (1 spans in all), so nothing was checked"
        ),
        "{text}"
    );
    insta::assert_snapshot!(text);
    assert!(
        SpanForest::new(Vec::new())
            .try_assert_every_parent(SpanKind::Consumer, SpanKind::Producer)
            .is_err()
    );
}

#[test]
#[should_panic(expected = "but no CONSUMER span was captured")]
fn every_parent_with_no_child_span_panics() {
    SpanForest::new(Vec::new()).assert_every_parent(SpanKind::Consumer, SpanKind::Producer);
}

#[test]
fn a_report_on_a_huge_trace_stays_short() {
    let capture = SpanCapture::new();
    let tracer = capture.tracer("api");
    tracer.in_span("batch", |cx| {
        for n in 0..3_000 {
            tracer.start_with_context(format!("record {n}"), &cx);
        }
    });
    let forest = capture.forest();
    let expected = ExpectedSpan::new("batch").child(ExpectedSpan::new("record 0"));
    let text = report(forest.try_assert_trace(&expected));
    assert!(text.lines().count() < 400, "{} lines", text.lines().count());
    assert!(text.contains("more lines"), "{text}");
    // Partial, it matches, however many spans it leaves out.
    forest.assert_trace(&expected.allow_extra_children());
}

mod any_forest {
    use kafka_trace_harness::{CapturedSpan, Problem};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    use super::spans::{context, span};

    const NAMES: [&str; 3] = ["a", "b", "c"];

    /// A span from small id ranges, so that orphans, several roots,
    /// cycles, duplicate ids and dangling links all occur; attribute `n`
    /// and link attribute `n` are what the shapes test.
    fn any_span() -> impl Strategy<Value = CapturedSpan> {
        (
            (
                0..2usize,
                0..3usize,
                1u128..3,
                1u64..6,
                0u64..6,
                any::<bool>(),
            ),
            proptest::option::of(0i64..4),
            vec((1u128..3, 1u64..6, proptest::option::of(0i64..4)), 0..3),
        )
            .prop_map(|((service, name, trace, id, parent, consumer), n, links)| {
                let mut links: Vec<Link> = links
                    .into_iter()
                    .map(|(trace, id, n)| {
                        let attributes = n.map(|n| KeyValue::new("n", n)).into_iter().collect();
                        Link::new(context(trace, id), attributes, 0)
                    })
                    .collect();
                let mut span = span(["x", "y"][service], NAMES[name], trace, id, parent);
                if consumer {
                    span.data.span_kind = SpanKind::Consumer;
                }
                span.data.attributes = n.map(|n| KeyValue::new("n", n)).into_iter().collect();
                span.data.links.links.append(&mut links);
                span
            })
    }

    #[test]
    fn traces_whose_roots_render_alike_get_the_same_ordinals_in_any_capture_order() {
        // Two one-span traces that render alike; the second span names the
        // first as its parent, across traces. The report names that span
        // by ordinal, so the traces' order must not follow capture order.
        let first = span("x", "a", 2, 1, 0);
        let second = span("x", "a", 1, 2, 1);
        let report = |spans: Vec<CapturedSpan>| {
            SpanForest::new(spans)
                .try_assert_trace(&ExpectedSpan::new("b"))
                .expect_err("no span is named b")
                .to_string()
        };
        let forward = report(vec![first.clone(), second.clone()]);
        assert!(
            forward.contains("names a parent in another trace"),
            "{forward}"
        );
        assert_eq!(report(vec![second, first]), forward);
    }

    fn node(name: usize, any_depth: bool, extra: bool, test: usize) -> ExpectedSpan {
        let mut e = ExpectedSpan::new(NAMES[name]);
        if any_depth {
            e = e.at_any_depth();
        }
        if extra {
            e = e.allow_extra_children();
        }
        match test {
            0 => e,
            1 => e.attribute(AttributeMatcher::int_range("n", 0..=2)),
            2 => e.link(ExpectedLink::to("a").attribute(AttributeMatcher::int_range("n", 1..=3))),
            3 => e.kind(SpanKind::Consumer),
            _ => e.service("x"),
        }
    }

    fn any_shape() -> impl Strategy<Value = ExpectedSpan> {
        let leaf = (0..3usize, any::<bool>(), any::<bool>(), 0..5usize)
            .prop_map(|(name, any_depth, extra, test)| node(name, any_depth, extra, test));
        leaf.prop_recursive(3, 10, 3, |inner| {
            (
                0..3usize,
                any::<bool>(),
                any::<bool>(),
                0..5usize,
                vec(inner, 0..3),
            )
                .prop_map(|(name, any_depth, extra, test, children)| {
                    node(name, any_depth, extra, test).children(children)
                })
        })
    }

    /// Problems whose resolution depends on capture order.
    fn order_dependent(forest: &SpanForest) -> bool {
        forest.problems().iter().any(|p| {
            matches!(
                p,
                Problem::DuplicateSpanId { .. }
                    | Problem::ParentCycle { .. }
                    | Problem::NoRoot { .. }
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(384))]

        #[test]
        fn shapes_on_any_forest(spans in vec(any_span(), 0..12), shape in any_shape()) {
            let forest = SpanForest::new(spans);
            let result = forest.try_assert_trace(&shape);
            let _ = forest.try_assert_traces(1, &shape);

            // Partial is more permissive than exact, never less.
            if result.is_ok() {
                prop_assert!(forest.try_assert_trace(&shape.clone().allow_extra_children()).is_ok());
                prop_assert!(forest.try_assert_trace(&shape.clone().at_any_depth()).is_ok());
            }
            if let Err(e) = &result {
                let text = e.to_string();
                prop_assert!(text.lines().count() < 800, "{} lines", text.lines().count());
                // The same spans captured in another order give the same report.
                if !order_dependent(&forest) {
                    let reversed = SpanForest::new(forest.captured().iter().rev().cloned().collect());
                    let again = reversed.try_assert_trace(&shape);
                    prop_assert_eq!(again.map_err(|e| e.to_string()), Err(text));
                }
            }
        }
    }
}
