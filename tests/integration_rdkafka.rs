//! rdkafka services and rskafka services in one trace, on the embedded
//! broker; rdkafka header edge cases.

use std::time::{Duration, Instant};

use kafka_trace_harness::integrations::rdkafka::{
    ConsumedMessage, ConsumerTracer, HeaderExtractor, HeaderInjector, SendError,
    TracedFutureProducer, consumer_config, extract, header_entries, inject, inject_with,
    producer_config,
};
use kafka_trace_harness::propagation::{self, BAGGAGE, Headers, TRACEPARENT, TRACESTATE};
use kafka_trace_harness::traced::{CONTEXT_UNUSABLE_EVENT, attr};
use kafka_trace_harness::{
    Broker, ConsumerParent, ExistingTraceparent, ExpectedSpan, ExtractProblem, Injected,
    SpanCapture, TracedConsumer, TracedProducer,
};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{
    SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, Value};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rskafka::record::Record;

const DEADLINE: Duration = Duration::from_secs(10);

async fn broker_and_topics(names: &[&str]) -> (Broker, Vec<String>) {
    let broker = Broker::builder().start().await.expect("embedded broker");
    let mut topics = Vec::new();
    for name in names {
        topics.push(broker.create_unique_topic(name, 1).await.expect("topic"));
    }
    (broker, topics)
}

fn rskafka_record(key: &str) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(b"{}".to_vec()),
        headers: Headers::new(),
        timestamp: chrono::Utc::now(),
    }
}

/// The next message of `consumer`, within the deadline.
async fn recv<'c>(consumer: &'c StreamConsumer, topic: &str) -> BorrowedMessage<'c> {
    match tokio::time::timeout(DEADLINE, consumer.recv()).await {
        Ok(Ok(message)) => message,
        Ok(Err(e)) => panic!("receiving from {topic}: {e}"),
        Err(_) => panic!("no message on {topic} within {DEADLINE:?}"),
    }
}

#[tokio::test]
async fn an_rdkafka_send_continues_in_a_harness_consumer() {
    let (broker, topics) = broker_and_topics(&["orders"]).await;
    let topic = &topics[0];
    let capture = SpanCapture::new();
    let producer = TracedFutureProducer::new(
        producer_config(&broker).create().expect("producer"),
        broker.bootstrap_servers(),
        capture.tracer("shop"),
    );
    let mut consumer = TracedConsumer::builder("billing", topic)
        .build(&broker, capture.tracer("billing"))
        .await
        .expect("harness consumer");

    // No partition: the partitioner picks it, and the span says which at delivery.
    let delivery = producer
        .send(
            &Context::new(),
            FutureRecord::<str, str>::to(topic).key("o-1").payload("{}"),
        )
        .await
        .expect("delivery");
    for consumed in consumer.consume(1, DEADLINE).await.expect("one record") {
        assert!(consumed.extracted.is_usable(), "{:?}", consumed.extracted);
        consumed.finish();
    }

    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_trace(
        &ExpectedSpan::producer(format!("send {topic}"))
            .service("shop")
            .attr(attr::MESSAGING_SYSTEM, "kafka")
            .attr(attr::OPERATION_TYPE, "send")
            .attr(attr::DESTINATION_NAME, topic.clone())
            .attr(attr::PARTITION_ID, delivery.partition.to_string())
            .attr(attr::OFFSET, delivery.offset)
            .attr(attr::MESSAGE_KEY, "o-1")
            .has_attr(attr::SERVER_ADDRESS)
            .error(false)
            .child(
                ExpectedSpan::consumer(format!("process {topic}"))
                    .service("billing")
                    .attr(attr::OFFSET, delivery.offset),
            ),
    );
    broker.shutdown().await.expect("shutdown");
}

/// An rdkafka service: a consumer group that turns each order into an
/// invoice, traced with the integration's helpers.
async fn billing_service(
    consumer: StreamConsumer,
    tracer: ConsumerTracer,
    producer: TracedFutureProducer,
    orders: String,
    invoices: String,
) {
    consumer.subscribe(&[&orders]).expect("subscribe");
    let message = recv(&consumer, &orders).await;
    let consumed = tracer.process(&message);
    let key = message.key().unwrap_or_default().to_vec();
    drop(message);
    producer
        .send(
            consumed.context(),
            FutureRecord::<[u8], str>::to(&invoices)
                .partition(0)
                .key(&key)
                .payload("invoice"),
        )
        .await
        .expect("invoice delivered");
    consumed.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_crosses_rskafka_and_rdkafka_services_both_ways() {
    let (broker, topics) = broker_and_topics(&["orders", "invoices"]).await;
    let (orders, invoices) = (topics[0].clone(), topics[1].clone());
    let capture = SpanCapture::new();

    let billing = tokio::spawn(billing_service(
        consumer_config(&broker, "billing")
            .create()
            .expect("consumer"),
        ConsumerTracer::new(
            "billing",
            broker.bootstrap_servers(),
            capture.tracer("billing"),
        ),
        TracedFutureProducer::new(
            producer_config(&broker).create().expect("producer"),
            broker.bootstrap_servers(),
            capture.tracer("billing"),
        ),
        orders.clone(),
        invoices.clone(),
    ));

    // rskafka service → rdkafka service → rskafka service.
    let web = TracedProducer::connect(&broker, capture.tracer("web"))
        .await
        .expect("web producer");
    web.send(&Context::new(), &orders, 0, rskafka_record("o-7"))
        .await
        .expect("order sent");
    let mut ledger = TracedConsumer::builder("ledger", &invoices)
        .build(&broker, capture.tracer("ledger"))
        .await
        .expect("ledger consumer");
    for consumed in ledger.consume(1, DEADLINE).await.expect("one invoice") {
        assert!(consumed.extracted.is_usable(), "{:?}", consumed.extracted);
        consumed.finish();
    }
    tokio::time::timeout(DEADLINE, billing)
        .await
        .expect("billing service done within the deadline")
        .expect("billing service");

    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_trace(
        &ExpectedSpan::producer(format!("send {orders}"))
            .service("web")
            .child(
                ExpectedSpan::consumer(format!("process {orders}"))
                    .service("billing")
                    .attr(attr::MESSAGING_SYSTEM, "kafka")
                    .attr(attr::OPERATION_NAME, "process")
                    .attr(attr::OPERATION_TYPE, "process")
                    .attr(attr::DESTINATION_NAME, orders.clone())
                    .attr(attr::CONSUMER_GROUP, "billing")
                    .attr(attr::PARTITION_ID, "0")
                    .attr(attr::OFFSET, 0i64)
                    .attr(attr::MESSAGE_KEY, "o-7")
                    .has_attr(attr::SERVER_PORT)
                    .no_attr(attr::CONTEXT_PROBLEM)
                    .child(
                        ExpectedSpan::producer(format!("send {invoices}"))
                            .service("billing")
                            .attr(attr::PARTITION_ID, "0")
                            .attr(attr::OFFSET, 0i64)
                            .child(
                                ExpectedSpan::consumer(format!("process {invoices}"))
                                    .service("ledger"),
                            ),
                    ),
            ),
    );
    broker.shutdown().await.expect("shutdown");
}

// Multi-thread, as every test that drops a group consumer: the drop blocks
// its thread until the broker, served by this runtime, answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_only_process_span_is_a_root_linked_to_the_send() {
    let (broker, topics) = broker_and_topics(&["orders"]).await;
    let topic = &topics[0];
    let capture = SpanCapture::new();
    TracedProducer::connect(&broker, capture.tracer("web"))
        .await
        .expect("producer")
        .send(&Context::new(), topic, 0, rskafka_record("o-1"))
        .await
        .expect("sent");
    let consumer: StreamConsumer = consumer_config(&broker, "batch")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let tracer = ConsumerTracer::new("batch", broker.bootstrap_servers(), capture.tracer("batch"))
        .parent(ConsumerParent::LinkOnly);
    assert_eq!(tracer.group(), "batch");
    tracer.process(&recv(&consumer, topic).await).finish();

    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_trace(
        &ExpectedSpan::consumer(format!("process {topic}"))
            .service("batch")
            .link_to(format!("send {topic}")),
    );
    forest.assert_trace(&ExpectedSpan::producer(format!("send {topic}")));
}

#[tokio::test]
async fn a_failed_send_ends_its_span_with_the_error() {
    let (broker, topics) = broker_and_topics(&["orders"]).await;
    let topic = &topics[0];
    let capture = SpanCapture::new();
    let producer = TracedFutureProducer::new(
        producer_config(&broker).create().expect("producer"),
        broker.bootstrap_servers(),
        capture.tracer("shop"),
    )
    .deadline(DEADLINE);

    // The topic has one partition.
    let error = producer
        .send(
            &Context::new(),
            FutureRecord::<str, str>::to(topic)
                .partition(7)
                .payload("{}"),
        )
        .await
        .expect_err("partition 7 does not exist");
    let SendError::Kafka { message, .. } = &error else {
        panic!("expected a Kafka error, got {error}");
    };
    assert_eq!(message.topic(), topic, "the record comes back");
    assert!(error.to_string().contains(topic.as_str()), "{error}");

    let forest = capture.forest();
    let send = forest
        .named(&format!("send {topic}"))
        .next()
        .expect("send span ended");
    assert!(matches!(send.status(), Status::Error { .. }));
    assert_eq!(
        send.attribute(attr::ERROR_TYPE),
        Some(&Value::from(error.error_type()))
    );
    assert_eq!(send.attribute(attr::OFFSET), None);
}

/// A `traceparent` value of a span captured as `upstream`.
fn traceparent_of(capture: &SpanCapture, name: &'static str) -> Vec<u8> {
    let span = capture.tracer("upstream").start(name);
    let cx = Context::new().with_span(span);
    let mut headers = Headers::new();
    propagation::inject(&cx, &mut headers);
    cx.span().end();
    headers.remove(TRACEPARENT).expect("traceparent injected")
}

/// Edge cases as rdkafka header lists, each keyed by what it tests.
fn header<'a>(key: &'a str, value: Option<&'a [u8]>) -> Header<'a, &'a [u8]> {
    Header { key, value }
}

fn edge_cases(a: &[u8], b: &[u8]) -> Vec<(&'static str, OwnedHeaders)> {
    vec![
        (
            "null",
            OwnedHeaders::new().insert(header(TRACEPARENT, None)),
        ),
        (
            "duplicate",
            OwnedHeaders::new()
                .insert(header(TRACEPARENT, Some(a)))
                .insert(header(TRACEPARENT, Some(b))),
        ),
        (
            "not-utf8",
            OwnedHeaders::new().insert(header(TRACEPARENT, Some(b"\xff\xfe00-garbage"))),
        ),
        (
            "agreeing",
            OwnedHeaders::new()
                .insert(header(TRACEPARENT, Some(a)))
                .insert(header(TRACESTATE, None))
                .insert(header(BAGGAGE, None))
                .insert(header(TRACEPARENT, Some(a))),
        ),
    ]
}

fn expected_problem(case: &str) -> Option<ExtractProblem> {
    match case {
        "null" => Some(ExtractProblem::Malformed {
            value: String::new(),
        }),
        "duplicate" => Some(ExtractProblem::Ambiguous {
            keys: vec![TRACEPARENT.into(), TRACEPARENT.into()],
        }),
        "not-utf8" => Some(ExtractProblem::NotUtf8 {
            header: TRACEPARENT.into(),
        }),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_edge_cases_through_a_base_consumer_are_reported_not_panicked() {
    let (broker, topics) = broker_and_topics(&["edges"]).await;
    let topic = topics[0].clone();
    let capture = SpanCapture::new();
    let (a, b) = (traceparent_of(&capture, "a"), traceparent_of(&capture, "b"));

    // Sent untraced, so the headers reach the broker exactly as written.
    let raw: FutureProducer = producer_config(&broker).create().expect("producer");
    for (case, headers) in edge_cases(&a, &b) {
        raw.send(
            FutureRecord::<str, str>::to(&topic)
                .partition(0)
                .key(case)
                .payload("{}")
                .headers(headers),
            DEADLINE,
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("sending case {case}: {e}"));
    }

    let tracer = ConsumerTracer::new("audit", broker.bootstrap_servers(), capture.tracer("audit"));
    let consumer: BaseConsumer = consumer_config(&broker, "audit")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let waiting_for = format!("4 messages on {topic} within {DEADLINE:?}");
    let consumed: Vec<(String, ConsumedMessage)> = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + DEADLINE;
        let mut out = Vec::new();
        while out.len() < 4 {
            assert!(
                Instant::now() < deadline,
                "waited for {waiting_for}, got {}",
                out.len()
            );
            if let Some(message) = consumer.poll(Duration::from_millis(50)) {
                let message = message.expect("a message");
                let case = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                out.push((case, tracer.process(&message)));
            }
        }
        out
    })
    .await
    .expect("consumer thread");

    for (case, message) in consumed {
        assert_eq!(
            message.extracted.problem,
            expected_problem(&case),
            "case {case}"
        );
        message.finish();
    }
    let forest = capture.forest();
    forest.assert_no_problems();
    for case in ["null", "duplicate", "not-utf8"] {
        let span = forest
            .with_attribute(attr::MESSAGE_KEY, case.into())
            .next()
            .unwrap_or_else(|| panic!("process span of case {case}"));
        assert!(
            span.is_root(),
            "case {case}: an unusable context gives a root"
        );
        let kind = expected_problem(case).expect("a problem").kind();
        assert_eq!(
            span.attribute(attr::CONTEXT_PROBLEM),
            Some(&Value::from(kind)),
            "case {case}"
        );
        assert!(
            span.data()
                .events
                .iter()
                .any(|e| e.name == CONTEXT_UNUSABLE_EVENT),
            "case {case}: event"
        );
    }
    let agreeing = forest
        .with_attribute(attr::MESSAGE_KEY, "agreeing".into())
        .next()
        .expect("process span of case agreeing");
    assert_eq!(agreeing.parent().expect("a parent").name(), "a");
}

/// The same header lines as rskafka's map (no repeated names, no nulls).
fn as_map(headers: &[(&str, &[u8])]) -> Headers {
    headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

fn as_owned(headers: &[(&str, &[u8])]) -> OwnedHeaders {
    headers
        .iter()
        .fold(OwnedHeaders::new(), |out, (key, value)| {
            out.insert(Header {
                key,
                value: Some(*value),
            })
        })
}

fn lines(headers: &OwnedHeaders) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
        .collect()
}

#[test]
fn rdkafka_headers_extract_like_rskafka_headers() {
    const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let long = vec![b'a'; propagation::MAX_TRACEPARENT_LEN + 1];
    let cases: Vec<Vec<(&str, &[u8])>> = vec![
        vec![],
        vec![(TRACEPARENT, VALID)],
        vec![
            (TRACEPARENT, VALID),
            (TRACESTATE, b"k=v"),
            (BAGGAGE, b"user=u1"),
        ],
        vec![(TRACEPARENT, b"garbage")],
        vec![(TRACEPARENT, b"")],
        vec![(TRACEPARENT, b"\xff")],
        vec![(TRACEPARENT, &long)],
        vec![("Traceparent", VALID)],
        vec![(TRACEPARENT, VALID), (" traceparent", b"00-other")],
        vec![
            (TRACEPARENT, VALID),
            (TRACESTATE, b"\xff"),
            (BAGGAGE, b"\xfe"),
        ],
        vec![(TRACEPARENT, VALID), (TRACESTATE, b"=not a state")],
    ];
    for case in cases {
        let map = propagation::extract(&as_map(&case));
        let owned = extract(&as_owned(&case));
        assert_eq!(owned.problem, map.problem, "{case:?}");
        assert_eq!(owned.ignored, map.ignored, "{case:?}");
        assert_eq!(owned.span_context(), map.span_context(), "{case:?}");
        assert_eq!(
            owned.context.baggage().len(),
            map.context.baggage().len(),
            "{case:?}"
        );
    }
}

#[test]
fn the_extractor_reads_the_last_value_and_null_as_empty() {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "k",
            value: Some("first"),
        })
        .insert(Header {
            key: "k",
            value: Some("last"),
        })
        .insert(Header {
            key: "null",
            value: None::<&[u8]>,
        });
    let extractor = HeaderExtractor::new(&headers);
    assert_eq!(extractor.get("k"), Some("last"));
    assert_eq!(extractor.get("null"), Some(""));
    assert_eq!(extractor.get("absent"), None);
    assert_eq!(extractor.keys(), ["k", "k", "null"]);
}

fn remote(span: u64) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from(0xabc),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        false,
        TraceState::from_key_value([("vendor", "v1")]).expect("trace state"),
    ))
}

#[test]
fn injection_into_owned_headers_matches_injection_into_the_map() {
    let existing: &[(&str, &[u8])] = &[
        (
            "Traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (TRACESTATE, b"old=1"),
        ("other", b"kept"),
    ];
    for start in [&[][..], existing] {
        for mode in [ExistingTraceparent::Keep, ExistingTraceparent::Replace] {
            let mut map = as_map(start);
            let mut owned = as_owned(start);
            let map_result = propagation::inject_with(&remote(9), &mut map, mode);
            let owned_result = inject_with(&remote(9), &mut owned, mode);
            assert_eq!(owned_result, map_result, "{start:?} {mode:?}");
            let mut written: Vec<(String, Option<Vec<u8>>)> = lines(&owned);
            written.sort();
            let expected: Vec<(String, Option<Vec<u8>>)> =
                map.into_iter().map(|(k, v)| (k, Some(v))).collect();
            assert_eq!(written, expected, "{start:?} {mode:?}");
        }
    }

    // A null header survives a rewrite as null.
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: TRACEPARENT,
            value: Some("stale"),
        })
        .insert(Header {
            key: "null",
            value: None::<&[u8]>,
        });
    assert_eq!(
        inject_with(&remote(5), &mut headers, ExistingTraceparent::Replace),
        Injected::Written
    );
    assert!(lines(&headers).contains(&("null".into(), None)));
    assert_eq!(extract(&headers).span_context().span_id(), SpanId::from(5));

    // The adapter replaces a header of the same name.
    let mut headers = as_owned(&[("x", b"1"), ("x", b"2")]);
    HeaderInjector(&mut headers).set("x", "3".into());
    assert_eq!(lines(&headers), [("x".to_owned(), Some(b"3".to_vec()))]);

    assert_eq!(
        inject(&Context::new(), &mut OwnedHeaders::new()),
        Injected::NoSpan
    );
}

// ---------------------------------------------------------------------------
// Header names that are not UTF-8 (Kafka allows any bytes).

/// `headers` with one more header whose name is `name`, bytes as they are:
/// rdkafka's `insert` only takes `&str` names, librdkafka takes any.
fn with_raw_name(headers: OwnedHeaders, name: &[u8], value: Option<&[u8]>) -> OwnedHeaders {
    use rdkafka::bindings as rdsys;
    let list = std::ptr::from_ref(headers.as_borrowed())
        .cast::<rdsys::rd_kafka_headers_t>()
        .cast_mut();
    let (value_ptr, value_len) = match value {
        Some(v) => (v.as_ptr().cast(), isize::try_from(v.len()).expect("length")),
        None => (std::ptr::null(), 0),
    };
    let name_len = isize::try_from(name.len()).expect("length");
    // SAFETY: `list` is the writable list `headers` owns (rdkafka's
    // `BorrowedHeaders` view is that list's address), alive for the call;
    // librdkafka copies the name and value.
    let err = unsafe {
        rdsys::rd_kafka_header_add(list, name.as_ptr().cast(), name_len, value_ptr, value_len)
    };
    assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    headers
}

fn raw_lines(headers: &OwnedHeaders) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    header_entries(headers)
        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
        .collect()
}

std::thread_local! {
    static PANICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` and fails if it panicked on this thread, even if the panic was
/// caught inside (a caught panic still aborts under `panic = "abort"`).
fn without_any_panic<R>(f: impl FnOnce() -> R) -> R {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            default(info);
        }));
    });
    PANICKED.with(|p| p.set(false));
    let result = f();
    assert!(
        !PANICKED.with(std::cell::Cell::get),
        "something panicked (caught or not)"
    );
    result
}

#[test]
fn a_rewrite_keeps_headers_whose_names_are_not_utf8() {
    const STALE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = OwnedHeaders::new().insert(header("before", Some(b"1")));
    let headers = with_raw_name(headers, b"\xff\xfe-binary", Some(b"raw"));
    let headers = with_raw_name(headers, b"caf\xe9", None);
    let mut headers = headers
        .insert(header(TRACEPARENT, Some(STALE)))
        .insert(header("after", None));

    let injected =
        without_any_panic(|| inject_with(&remote(9), &mut headers, ExistingTraceparent::Replace));
    assert_eq!(injected, Injected::Written);
    let mut kept = raw_lines(&headers);
    let written: Vec<_> = kept
        .iter()
        .filter(|(k, _)| k == TRACEPARENT.as_bytes() || k == TRACESTATE.as_bytes())
        .cloned()
        .collect();
    kept.retain(|(k, _)| k != TRACEPARENT.as_bytes() && k != TRACESTATE.as_bytes());
    assert_eq!(
        kept,
        [
            (b"before".to_vec(), Some(b"1".to_vec())),
            (b"\xff\xfe-binary".to_vec(), Some(b"raw".to_vec())),
            (b"caf\xe9".to_vec(), None),
            (b"after".to_vec(), None),
        ],
        "every other header kept, in order, null stays null"
    );
    assert_eq!(
        written.len(),
        2,
        "one traceparent, one tracestate: {written:?}"
    );
    let extracted = without_any_panic(|| extract(&headers));
    assert!(extracted.is_usable(), "{extracted:?}");
    assert_eq!(extracted.span_context().span_id(), SpanId::from(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_name_that_is_not_utf8_is_no_panic_and_survives_forwarding() {
    let (broker, topics) = broker_and_topics(&["binary-names"]).await;
    let topic = topics[0].clone();
    let capture = SpanCapture::new();
    let parent = traceparent_of(&capture, "upstream send");
    let headers = with_raw_name(OwnedHeaders::new(), b"\x80name", Some(b"v"));
    let headers = headers.insert(header(TRACEPARENT, Some(&parent)));
    let raw: FutureProducer = producer_config(&broker).create().expect("producer");
    raw.send(
        FutureRecord::<str, str>::to(&topic)
            .partition(0)
            .payload("{}")
            .headers(headers),
        DEADLINE,
    )
    .await
    .unwrap_or_else(|(e, _)| panic!("sending: {e}"));

    let tracer = ConsumerTracer::new("audit", broker.bootstrap_servers(), capture.tracer("audit"));
    let consumer: BaseConsumer = consumer_config(&broker, "audit")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let (consumed, forwarded) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no message within {DEADLINE:?}");
            if let Some(message) = consumer.poll(Duration::from_millis(50)) {
                let message = message.expect("a message");
                return without_any_panic(|| {
                    let consumed = tracer.process(&message);
                    // Forwarding the headers: the process span's context replaces the upstream one.
                    let mut forwarded = message.headers().expect("headers").detach();
                    inject_with(
                        consumed.context(),
                        &mut forwarded,
                        ExistingTraceparent::Replace,
                    );
                    (consumed, forwarded)
                });
            }
        }
    })
    .await
    .expect("consumer thread");
    assert!(consumed.extracted.is_usable(), "{:?}", consumed.extracted);
    assert!(
        raw_lines(&forwarded).contains(&(b"\x80name".to_vec(), Some(b"v".to_vec()))),
        "{:?}",
        raw_lines(&forwarded)
    );
    assert_eq!(
        extract(&forwarded).span_context().span_id(),
        consumed.span_context().span_id()
    );
    consumed.finish();
    let forest = capture.forest();
    let process = forest
        .named(&format!("process {topic}"))
        .next()
        .expect("process span");
    assert_eq!(process.parent().expect("a parent").name(), "upstream send");
    broker.shutdown().await.expect("shutdown");
}

proptest::proptest! {
    /// Any header names and values: no panic (not even a caught one), and
    /// a rewrite keeps every header that is not a trace header, in order.
    #[test]
    fn any_header_names_inject_and_extract_without_panic(
        extra in proptest::collection::vec(
            (
                proptest::collection::vec(1u8..=255, 0..12),
                proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..12)),
            ),
            0..6,
        ),
        stale in proptest::bool::ANY,
    ) {
        let mut headers = OwnedHeaders::new();
        let mut expected = Vec::new();
        for (name, value) in &extra {
            // "x-" first: never a trace header or a look-alike of one.
            let name = [b"x-".as_slice(), name].concat();
            headers = with_raw_name(headers, &name, value.as_deref());
            expected.push((name, value.clone()));
        }
        if stale {
            headers = headers.insert(header(TRACEPARENT, Some(b"00-stale")));
        }
        without_any_panic(|| {
            let _ = extract(&headers);
            inject_with(&remote(3), &mut headers, ExistingTraceparent::Replace);
        });
        let mut kept = raw_lines(&headers);
        kept.retain(|(k, _)| k != TRACEPARENT.as_bytes() && k != TRACESTATE.as_bytes());
        proptest::prop_assert_eq!(kept, expected);
        proptest::prop_assert_eq!(
            without_any_panic(|| extract(&headers)).span_context().span_id(),
            SpanId::from(3)
        );
    }
}
