//! Property tests: propagation through the embedded broker, garbage
//! headers, and parentage under interleaved producers.

use std::time::Duration;

use futures::future::join_all;
use kafka_trace_harness::propagation::{Headers, extract, inject};
use kafka_trace_harness::traced::attr;
use kafka_trace_harness::traced::strategies::{
    arbitrary_headers, garbage_headers, propagated_context,
};
use kafka_trace_harness::{Broker, SpanCapture, TracedConsumer, TracedProducer};
use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, Tracer};
use proptest::prelude::*;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn record(headers: Headers) -> Record {
    Record {
        key: None,
        value: Some(b"v".to_vec()),
        headers,
        timestamp: chrono::Utc::now(),
    }
}

#[test]
fn any_valid_context_survives_a_trip_through_kafka() {
    let rt = runtime();
    let (broker, partition) = rt.block_on(async {
        let broker = Broker::builder().start().await.expect("broker");
        let topic = broker
            .create_unique_topic("roundtrip", 1)
            .await
            .expect("topic");
        let partition = broker
            .client()
            .await
            .expect("client")
            .partition_client(topic, 0, UnknownTopicHandling::Retry)
            .await
            .expect("partition");
        (broker, partition)
    });
    proptest!(ProptestConfig::with_cases(32), |(sent in propagated_context())| {
        let mut headers = Headers::new();
        inject(&sent.to_context(), &mut headers);
        let received = rt.block_on(async {
            let offset = partition
                .produce(vec![record(headers)], Compression::NoCompression)
                .await
                .expect("produce")[0];
            let (records, _) = partition
                .fetch_records(offset, 1..1_000_000, 1_000)
                .await
                .expect("fetch");
            records.into_iter().find(|r| r.offset == offset).expect("own record").record
        });
        let got = extract(&received.headers);
        prop_assert!(got.is_usable(), "{:?}", got.problem);
        let sc = got.span_context();
        let want = &sent.span_context;
        prop_assert_eq!(sc.trace_id(), want.trace_id());
        prop_assert_eq!(sc.span_id(), want.span_id());
        prop_assert_eq!(sc.trace_flags(), want.trace_flags());
        prop_assert_eq!(sc.trace_state().header(), want.trace_state().header());
        let mut baggage: Vec<(String, String)> = got
            .context
            .baggage()
            .iter()
            .map(|(k, (v, _))| (k.to_string(), v.to_string()))
            .collect();
        baggage.sort();
        prop_assert_eq!(baggage, sent.baggage.clone());
    });
    drop(broker);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_headers_give_a_root_span_and_a_reason(headers in garbage_headers()) {
        let got = extract(&headers);
        prop_assert!(got.problem.is_some(), "{headers:?} was usable");
        let capture = SpanCapture::new();
        let tracer = capture.tracer("api");
        tracer
            .span_builder("process")
            .with_kind(SpanKind::Consumer)
            .start_with_context(&tracer, &got.context);
        let spans = capture.spans();
        prop_assert_eq!(spans[0].data.parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn any_header_map_extracts_without_panicking(headers in arbitrary_headers()) {
        let got = extract(&headers);
        // Usable exactly when a valid parent came out.
        prop_assert_eq!(got.is_usable(), got.context.span().span_context().is_valid());
    }
}

/// `producers` producers, each sending `per_producer` records spread over
/// the partitions, all at once; one consumer reads them all.
async fn interleaved(producers: usize, partitions: u16, per_producer: usize) {
    let broker = Broker::builder().start().await.expect("broker");
    let topic = broker
        .create_unique_topic("interleaved", partitions)
        .await
        .expect("topic");
    let capture = SpanCapture::new();
    let mut senders = Vec::new();
    for p in 0..producers {
        let tracer = capture.tracer(&format!("producer-{p}"));
        senders.push(
            TracedProducer::connect(&broker, tracer)
                .await
                .expect("producer"),
        );
    }
    let mut consumer = TracedConsumer::builder("reader", &topic)
        .build(&broker, capture.tracer("reader"))
        .await
        .expect("consumer");
    let sends = senders.iter().enumerate().map(|(p, producer)| {
        let topic = &topic;
        async move {
            for n in 0..per_producer {
                let partition = ((p + n) % usize::from(partitions)) as i32;
                let mut headers = Headers::new();
                headers.insert("producer".into(), p.to_string().into_bytes());
                producer
                    .send(&Context::new(), topic, partition, record(headers))
                    .await
                    .expect("send");
                tokio::task::yield_now().await;
            }
        }
    });
    join_all(sends).await;
    let total = producers * per_producer;
    for consumed in consumer
        .consume(total, Duration::from_secs(20))
        .await
        .expect("every record")
    {
        consumed.finish();
    }

    let forest = capture.forest();
    forest.assert_no_problems();
    forest.assert_every_parent(SpanKind::Consumer, SpanKind::Producer);
    let processes: Vec<_> = forest.of_kind(SpanKind::Consumer).collect();
    assert_eq!(processes.len(), total);
    for process in processes {
        let send = process.parent().expect("parent");
        for key in [attr::OFFSET, attr::PARTITION_ID] {
            assert_eq!(send.attribute(key), process.attribute(key), "{key}");
        }
    }
    assert_eq!(forest.traces().len(), total, "one trace per record");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn every_process_span_is_a_child_of_its_own_records_send(
        producers in 1usize..=4,
        partitions in 1u16..=4,
        per_producer in 1usize..=6,
    ) {
        runtime().block_on(interleaved(producers, partitions, per_producer));
    }
}
