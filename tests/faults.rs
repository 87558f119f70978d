//! Faults: the harness tells the truth when things break.
//!
//! For each fault class a traced producer sends records while the fault is
//! on, and a traced consumer reads them back. Every test checks that it
//! ends within its deadline, that every acknowledged record is processed
//! (none lost), that every trace is whole, and, where the fault makes sends
//! fail, that the retries show on the send spans.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kafka_trace_harness::broker::{ApiKey, ErrorCode};
use kafka_trace_harness::propagation::TRACEPARENT;
use kafka_trace_harness::traced::{OffsetStore, SEND_ATTEMPT_FAILED_EVENT, attr};
use kafka_trace_harness::{
    Backend, Broker, Error, SpanCapture, SpanForest, TracedConsumer, TracedProducer,
};
use opentelemetry::{Context, Value};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

mod support;
use support::{DEADLINE, bounded, record};

/// Sends `count` records in order on `partition`, one at a time, counting
/// acknowledgements in `acked`; returns the offsets acknowledged.
async fn send_all(
    producer: &TracedProducer,
    topic: &str,
    partition: i32,
    count: usize,
    acked: &AtomicUsize,
) -> Vec<i64> {
    let mut offsets = Vec::new();
    for n in 0..count {
        let offset = producer
            .send(&Context::new(), topic, partition, record(n))
            .await
            .unwrap_or_else(|e| panic!("send {n} failed instead of retrying: {e}"));
        offsets.push(offset);
        acked.fetch_add(1, Ordering::SeqCst);
    }
    offsets
}

/// Sends `count` records to partition 0 of `topic` in a background task,
/// and returns once `started` of them are acknowledged: a fault injected
/// then hits a stream of sends in the middle. The task returns the
/// acknowledged offsets; `acked` counts them as they come.
async fn start_sending(
    producer: TracedProducer,
    topic: &str,
    count: usize,
    started: usize,
) -> (tokio::task::JoinHandle<Vec<i64>>, Arc<AtomicUsize>) {
    let acked = Arc::new(AtomicUsize::new(0));
    let sending = {
        let topic = topic.to_owned();
        let acked = Arc::clone(&acked);
        tokio::spawn(async move { send_all(&producer, &topic, 0, count, &acked).await })
    };
    wait_until(&format!("{started} records acknowledged"), DEADLINE, || {
        acked.load(Ordering::SeqCst) >= started
    })
    .await;
    (sending, acked)
}

/// Waits until `condition` holds, or panics naming `what` at `deadline`.
async fn wait_until(what: &str, deadline: Duration, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "waited {deadline:?} for {what}; it never held"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Consumes the topic up to the last acknowledged offset and checks that
/// every acknowledged record arrived, in one whole trace with its send
/// span. A record the broker stored but whose acknowledgement was lost (a
/// connection cut mid-request) is there too, before its retried copy: it
/// must carry the same send span's context, so it shows up as a duplicate
/// of an acknowledged record, never as a record of its own.
async fn assert_all_processed(
    broker: &Broker,
    capture: &SpanCapture,
    topic: &str,
    offsets: &[i64],
) -> SpanForest {
    let mut consumer = TracedConsumer::builder("reader", topic)
        .build(broker, capture.tracer("reader"))
        .await
        .expect("consumer");
    let last = offsets.iter().copied().max().expect("some records") as usize;
    let consumed = consumer
        .consume(last + 1, DEADLINE)
        .await
        .expect("every acknowledged record is there");
    let acked: BTreeSet<i64> = offsets.iter().copied().collect();
    let mut acked_traceparents = BTreeSet::new();
    let mut unacked_traceparents = Vec::new();
    for c in consumed {
        let traceparents: Vec<&Vec<u8>> = c
            .record
            .headers
            .iter()
            .filter(|(k, _)| *k == TRACEPARENT)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            traceparents.len(),
            1,
            "record {} carries one traceparent",
            c.offset
        );
        if acked.contains(&c.offset) {
            acked_traceparents.insert(traceparents[0].clone());
        } else {
            unacked_traceparents.push((c.offset, traceparents[0].clone()));
        }
        c.finish();
    }
    assert_eq!(
        acked_traceparents.len(),
        acked.len(),
        "one send span per acknowledged record"
    );
    for (offset, traceparent) in unacked_traceparents {
        assert!(
            acked_traceparents.contains(&traceparent),
            "record {offset} was never acknowledged and is no retry of one"
        );
    }

    let forest = capture.forest();
    forest.assert_no_problems();
    let process = format!("process {topic}");
    for span in forest.named(&process) {
        let parent = span
            .parent()
            .expect("process span has its send span as parent");
        assert_eq!(parent.name(), format!("send {topic}"));
    }
    assert_eq!(forest.named(&process).count(), last + 1);
    forest
}

/// Failed attempts recorded on send spans, as (attempt, error.type).
fn failed_attempts(forest: &SpanForest, topic: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for span in forest.named(&format!("send {topic}")) {
        for event in span.data().events.iter() {
            if event.name != SEND_ATTEMPT_FAILED_EVENT {
                continue;
            }
            let get = |key: &str| event.attributes.iter().find(|kv| kv.key.as_str() == key);
            let attempt = match get("attempt").map(|kv| &kv.value) {
                Some(Value::I64(n)) => *n,
                other => panic!("attempt attribute: {other:?}"),
            };
            let error_type = get(attr::ERROR_TYPE)
                .map(|kv| kv.value.as_str().into_owned())
                .expect("error.type on the event");
            out.push((attempt, error_type));
        }
    }
    out
}

#[tokio::test]
async fn request_errors_are_retried_and_show_on_the_send_span() {
    bounded("request errors", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("faults", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        // Connect the partition first, so the errors hit produce requests.
        let first = producer
            .send(&Context::new(), &topic, 0, record(0))
            .await
            .unwrap();

        broker
            .request_errors(ApiKey::Produce, ErrorCode::NotLeaderForPartition, 2)
            .unwrap();
        let second = producer
            .send(&Context::new(), &topic, 0, record(1))
            .await
            .expect("the third attempt succeeds");

        let forest = assert_all_processed(&broker, &capture, &topic, &[first, second]).await;
        let attempts = failed_attempts(&forest, &topic);
        assert_eq!(
            attempts,
            vec![
                (1, "NotLeaderOrFollower".to_owned()),
                (2, "NotLeaderOrFollower".to_owned())
            ]
        );
        let retried = forest
            .named(&format!("send {topic}"))
            .find(|s| s.attribute(attr::SEND_ATTEMPTS).is_some())
            .expect("a send span with an attempt count");
        assert_eq!(retried.attribute(attr::SEND_ATTEMPTS), Some(&Value::I64(3)));
        assert_eq!(retried.attribute(attr::OFFSET), Some(&Value::I64(second)));
    })
    .await;
}

#[tokio::test]
async fn a_send_that_keeps_failing_ends_with_its_error_and_every_attempt() {
    bounded("persistent errors", async {
        let broker = Broker::builder()
            .client_deadline(Duration::from_millis(300))
            .start()
            .await
            .unwrap();
        let topic = broker.create_unique_topic("faults", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        producer
            .send(&Context::new(), &topic, 0, record(0))
            .await
            .unwrap();
        broker
            .request_errors(ApiKey::Produce, ErrorCode::NotLeaderForPartition, 1_000)
            .unwrap();

        let err = producer
            .send(&Context::new(), &topic, 0, record(1))
            .await
            .expect_err("every attempt fails");
        assert!(matches!(err, Error::Client { .. }), "{err:?}");
        broker.clear_request_errors(ApiKey::Produce).unwrap();

        let forest = capture.forest();
        let failed = forest
            .named(&format!("send {topic}"))
            .find(|s| s.attribute(attr::ERROR_TYPE).is_some())
            .expect("the failed send span");
        assert_eq!(
            failed.attribute(attr::ERROR_TYPE),
            Some(&Value::from("NotLeaderOrFollower"))
        );
        let attempts = failed_attempts(&forest, &topic);
        assert!(attempts.len() >= 2, "{attempts:?}");
        let numbers: Vec<i64> = attempts.iter().map(|(n, _)| *n).collect();
        let expected: Vec<i64> = (1..=attempts.len() as i64).collect();
        assert_eq!(numbers, expected, "attempts are numbered in order");
    })
    .await;
}

#[tokio::test]
async fn a_broker_down_and_up_loses_no_acknowledged_record() {
    bounded("broker down and up", async {
        let broker = Arc::new(Broker::builder().start().await.unwrap());
        let topic = broker.create_unique_topic("faults", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let (sending, _) = start_sending(producer, &topic, 200, 20).await;
        broker.broker_down(1).unwrap();
        // The fault's duration: sends meanwhile fail and are retried.
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.broker_up(1).unwrap();
        let offsets = sending.await.unwrap();

        let forest = assert_all_processed(&broker, &capture, &topic, &offsets).await;
        assert!(
            !failed_attempts(&forest, &topic).is_empty(),
            "sends during the outage were retried, visibly"
        );
    })
    .await;
}

#[tokio::test]
async fn added_round_trip_time_slows_sends_but_loses_nothing() {
    bounded("round-trip time", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("faults", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let acked = AtomicUsize::new(0);
        send_all(&producer, &topic, 0, 1, &acked).await;

        broker
            .round_trip_time(1, Duration::from_millis(100))
            .unwrap();
        let started = Instant::now();
        let mut offsets = send_all(&producer, &topic, 0, 3, &acked).await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "three sends at 100 ms each took {:?}",
            started.elapsed()
        );
        broker.round_trip_time(1, Duration::ZERO).unwrap();
        offsets.insert(0, 0);
        assert_all_processed(&broker, &capture, &topic, &offsets).await;
    })
    .await;
}

#[tokio::test]
async fn a_mistyped_topic_is_an_error_naming_it() {
    bounded("mistyped topic", async {
        let broker = Broker::builder()
            .client_deadline(Duration::from_secs(2))
            .start()
            .await
            .unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let err = producer
            .send(&Context::new(), "no-such-topc", 0, record(0))
            .await
            .expect_err("no such topic");
        assert!(err.to_string().contains("no-such-topc"), "{err}");

        let err = TracedConsumer::builder("reader", "no-such-topc")
            .build(&broker, capture.tracer("reader"))
            .await
            .expect_err("no such topic");
        assert!(err.to_string().contains("no-such-topc"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn every_operation_against_a_gone_broker_fails_within_its_deadline() {
    bounded("gone broker", async {
        let deadline = Duration::from_millis(500);
        let broker = Broker::builder()
            .client_deadline(deadline)
            .watch_deleted_records(false)
            .start()
            .await
            .unwrap();
        let topic = broker.create_unique_topic("faults", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let mut consumer = TracedConsumer::builder("reader", &topic)
            .build(&broker, capture.tracer("reader"))
            .await
            .unwrap();
        producer
            .send(&Context::new(), &topic, 0, record(0))
            .await
            .unwrap();
        let bootstrap = broker.bootstrap_servers().to_owned();

        broker.broker_down(1).unwrap();

        let err = producer
            .send(&Context::new(), &topic, 0, record(1))
            .await
            .expect_err("send to a gone broker");
        let text = err.to_string();
        assert!(text.contains(&bootstrap), "names the broker: {text}");

        // One record was there before: consume(2) must say what it missed.
        let err = consumer
            .consume(2, deadline)
            .await
            .expect_err("consume from a gone broker");
        let text = err.to_string();
        assert!(text.contains(&topic) && text.contains("reader"), "{text}");
        assert!(text.contains(&bootstrap), "{text}");

        let err = TracedConsumer::builder("late", &topic)
            .build(&broker, capture.tracer("late"))
            .await
            .expect_err("build against a gone broker");
        assert!(err.to_string().contains(&bootstrap), "{err}");

        let external = Broker::builder()
            .backend(Backend::External {
                bootstrap: bootstrap.clone(),
            })
            .timeout(deadline)
            .client_deadline(deadline)
            .start()
            .await;
        let err = external.expect_err("no broker answers there");
        assert!(err.to_string().contains(&bootstrap), "{err}");

        broker.broker_up(1).unwrap();
        // The record sent before the outage is delivered after it, once.
        let records = consumer.consume(1, DEADLINE).await.unwrap();
        assert_eq!(records[0].offset, 0);
    })
    .await;
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_records_fetched_before_it() {
    bounded("failed fetch", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("faults", 2).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let mut consumer = TracedConsumer::builder("reader", &topic)
            .build(&broker, capture.tracer("reader"))
            .await
            .unwrap();
        for partition in 0..2 {
            producer
                .send(&Context::new(), &topic, partition, record(0))
                .await
                .unwrap();
        }

        // One of the two partitions' fetches fails, not retriably.
        broker
            .request_errors(ApiKey::Fetch, ErrorCode::InvalidRequest, 1)
            .unwrap();
        let first = consumer.poll().await;
        let mut got: Vec<(i32, i64)> = match first {
            Ok(records) => records.iter().map(|r| (r.partition, r.offset)).collect(),
            Err(e) => {
                assert!(e.to_string().contains(&topic), "{e}");
                Vec::new()
            }
        };
        while got.len() < 2 {
            let more = consumer.consume(2 - got.len(), DEADLINE).await.unwrap();
            got.extend(more.iter().map(|r| (r.partition, r.offset)));
        }
        got.sort_unstable();
        assert_eq!(got, vec![(0, 0), (1, 0)], "each record exactly once");
    })
    .await;
}

#[tokio::test]
async fn consume_is_cancel_safe() {
    bounded("cancelled consume", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("faults", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let mut consumer = TracedConsumer::builder("reader", &topic)
            .build(&broker, capture.tracer("reader"))
            .await
            .unwrap();
        let acked = AtomicUsize::new(0);
        send_all(&producer, &topic, 0, 3, &acked).await;

        // Asks for 5 while 3 exist, and is dropped after it fetched them.
        let cancelled =
            tokio::time::timeout(Duration::from_millis(300), consumer.consume(5, DEADLINE)).await;
        assert!(cancelled.is_err(), "the consume was cancelled");

        for n in 3..5 {
            producer
                .send(&Context::new(), &topic, 0, record(n))
                .await
                .unwrap();
        }
        let records = consumer.consume(5, DEADLINE).await.unwrap();
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    })
    .await;
}

#[tokio::test]
async fn unfinished_records_are_redelivered_after_a_restart_and_say_so() {
    bounded("redelivery", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("faults", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let acked = AtomicUsize::new(0);
        send_all(&producer, &topic, 0, 4, &acked).await;
        let store = OffsetStore::new();

        let mut first = TracedConsumer::builder("api", &topic)
            .offset_store(store.clone())
            .build(&broker, capture.tracer("api"))
            .await
            .unwrap();
        let mut records = first.consume(4, DEADLINE).await.unwrap().into_iter();
        // 0 and 1 finish; 2 is dropped unfinished (a crash mid-record); 3
        // finishes, but 2 before it keeps the commit at 2.
        records.next().unwrap().finish();
        records.next().unwrap().finish();
        drop(records.next().unwrap());
        records.next().unwrap().finish();
        assert_eq!(first.committed(), BTreeMap::from([(0, 2)]));
        assert_eq!(store.get("api", &topic, 0), Some(2));
        assert_eq!(store.delivered("api", &topic, 0), Some(4));
        drop(first);

        let mut restarted = TracedConsumer::builder("api", &topic)
            .offset_store(store.clone())
            .build(&broker, capture.tracer("api"))
            .await
            .unwrap();
        let again = restarted.consume(2, DEADLINE).await.unwrap();
        let offsets: Vec<(i64, bool)> = again.iter().map(|r| (r.offset, r.redelivered)).collect();
        assert_eq!(offsets, vec![(2, true), (3, true)]);
        for r in again {
            r.finish();
        }
        assert_eq!(store.get("api", &topic, 0), Some(4));

        let forest = capture.forest();
        forest.assert_no_problems();
        let process = format!("process {topic}");
        let redelivered: Vec<_> = forest
            .named(&process)
            .filter(|s| s.attribute(attr::REDELIVERED) == Some(&Value::Bool(true)))
            .collect();
        assert_eq!(redelivered.len(), 2);
        for span in redelivered {
            let offset = span.attribute(attr::OFFSET).cloned();
            let first_time = forest
                .named(&process)
                .find(|s| {
                    s.attribute(attr::OFFSET).cloned() == offset
                        && s.attribute(attr::REDELIVERED).is_none()
                })
                .expect("the first delivery's span");
            assert_eq!(
                span.parent().map(|p| p.span_id()),
                first_time.parent().map(|p| p.span_id()),
                "a redelivery has the same parent send span"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn deleted_records_are_reported_by_the_broker_and_the_consumer() {
    bounded("deleted records", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("faults", 1).await.unwrap();
        let capture = SpanCapture::new();
        let mut consumer = TracedConsumer::builder("slow", &topic)
            .build(&broker, capture.tracer("slow"))
            .await
            .unwrap();

        // 12 batches of 512 KiB: more than the mock cluster's 5 MiB.
        let client = broker.client().await.unwrap();
        let partition = client
            .partition_client(topic.as_str(), 0, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let mut produced = 0;
        for _ in 0..12 {
            let batch: Vec<Record> = (0..8)
                .map(|n| Record {
                    value: Some(vec![b'x'; 64 * 1024]),
                    ..record(n)
                })
                .collect();
            produced += batch.len();
            partition
                .produce(batch, Compression::NoCompression)
                .await
                .unwrap();
        }

        let deleted = broker.check_deleted_records().await.unwrap();
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        assert_eq!(
            (deleted[0].topic.as_str(), deleted[0].partition),
            (topic.as_str(), 0)
        );
        assert!(deleted[0].count > 0 && deleted[0].count < produced as i64);

        let err = consumer
            .consume(1, DEADLINE)
            .await
            .expect_err("the consumer's next offset was deleted");
        match &err {
            Error::RecordsDeleted {
                topic: t,
                partition,
                next,
                log_start,
                ..
            } => {
                assert_eq!((t.as_str(), *partition, *next), (topic.as_str(), 0, 0));
                assert_eq!(*log_start, deleted[0].count);
            }
            other => panic!("expected RecordsDeleted, got {other:?}"),
        }
        assert!(err.to_string().contains("100,000 record batches"), "{err}");

        let err = broker
            .shutdown()
            .await
            .expect_err("shutdown reports the loss");
        let text = err.to_string();
        assert!(
            text.contains(&topic) && text.contains("partition 0"),
            "{text}"
        );
    })
    .await;
}

#[cfg(feature = "container")]
#[tokio::test]
#[ignore = "needs Docker and the local image (scripts/build-image.sh); .ci/run runs it"]
async fn a_paused_container_loses_no_acknowledged_record() {
    use kafka_trace_harness::ContainerImage;
    bounded("paused container", async {
        let broker = Arc::new(
            Broker::builder()
                .backend(Backend::Container(ContainerImage::local_harness()))
                .start()
                .await
                .expect("container broker"),
        );
        let topic = broker.create_unique_topic("faults", 1).await.unwrap();
        let capture = SpanCapture::new();
        let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
            .await
            .unwrap();
        let (sending, _) = start_sending(producer, &topic, 100, 10).await;
        broker.pause().await.expect("pause");
        // The fault's duration: the broker answers nothing meanwhile.
        tokio::time::sleep(Duration::from_secs(1)).await;
        broker.unpause().await.expect("unpause");
        let offsets = sending.await.unwrap();
        assert_all_processed(&broker, &capture, &topic, &offsets).await;

        // The harness image keeps its records in memory: no restart.
        let err = broker
            .stop()
            .await
            .expect_err("no stop for the harness image");
        assert!(err.to_string().contains("pause it instead"), "{err}");
        Arc::try_unwrap(broker)
            .expect("one owner")
            .shutdown()
            .await
            .expect("container removed");
    })
    .await;
}

#[tokio::test]
async fn faults_a_backend_cannot_inject_say_which_backend_can() {
    bounded("unsupported faults", async {
        let embedded = Broker::builder().start().await.unwrap();
        let err = embedded.pause().await.expect_err("no pause in process");
        assert!(matches!(err, Error::FaultUnsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("container backend"), "{err}");

        let external = Broker::builder()
            .backend(Backend::External {
                bootstrap: embedded.bootstrap_servers().to_owned(),
            })
            .start()
            .await
            .unwrap();
        for err in [
            external.broker_down(1).expect_err("external"),
            external
                .request_errors(ApiKey::Produce, ErrorCode::NotLeaderForPartition, 1)
                .expect_err("external"),
            external
                .round_trip_time(1, Duration::from_millis(1))
                .expect_err("external"),
            external.unpause().await.expect_err("external"),
        ] {
            assert!(matches!(err, Error::FaultUnsupported { .. }), "{err:?}");
            assert!(err.to_string().contains("external backend"), "{err}");
        }
    })
    .await;
}

/// A front fault held for a while during a stream of sends, then undone.
#[derive(Debug, Clone, Copy)]
enum FrontFault {
    CutConnections,
    Stall,
    Latency,
}

async fn sends_survive(fault: FrontFault) {
    let broker = Arc::new(Broker::builder().start().await.unwrap());
    let topic = broker.create_unique_topic("faults", 1).await.unwrap();
    let capture = SpanCapture::new();
    let producer = TracedProducer::connect(&broker, capture.tracer("producer"))
        .await
        .unwrap();
    let (sending, acked) = start_sending(producer, &topic, 150, 20).await;
    match fault {
        FrontFault::CutConnections => {
            for _ in 0..3 {
                broker.cut_connections().unwrap();
                let now = acked.load(Ordering::SeqCst);
                wait_until("a send after the cut", DEADLINE, || {
                    acked.load(Ordering::SeqCst) > now
                })
                .await;
            }
        }
        FrontFault::Stall => {
            let before = acked.load(Ordering::SeqCst);
            let started = Instant::now();
            broker.stall(Duration::from_millis(500)).unwrap();
            wait_until("a send after the stall", DEADLINE, || {
                acked.load(Ordering::SeqCst) > before + 1
            })
            .await;
            assert!(
                started.elapsed() >= Duration::from_millis(500),
                "a send completed during the stall"
            );
        }
        FrontFault::Latency => {
            broker.add_latency(Duration::from_millis(20)).unwrap();
            let now = acked.load(Ordering::SeqCst);
            wait_until("5 sends with latency", DEADLINE, || {
                acked.load(Ordering::SeqCst) >= now + 5
            })
            .await;
            broker.add_latency(Duration::ZERO).unwrap();
        }
    }
    let offsets = sending.await.unwrap();
    let forest = assert_all_processed(&broker, &capture, &topic, &offsets).await;
    if let FrontFault::CutConnections = fault {
        assert!(
            !failed_attempts(&forest, &topic).is_empty(),
            "sends cut mid-request were retried, visibly"
        );
    }
}

#[tokio::test]
async fn cut_connections_lose_no_acknowledged_record() {
    bounded("cut connections", sends_survive(FrontFault::CutConnections)).await;
}

#[tokio::test]
async fn a_stalled_broker_loses_no_acknowledged_record() {
    bounded("stall", sends_survive(FrontFault::Stall)).await;
}

#[tokio::test]
async fn added_latency_loses_no_acknowledged_record() {
    bounded("latency", sends_survive(FrontFault::Latency)).await;
}
