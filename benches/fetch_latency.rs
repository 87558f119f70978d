//! Produce → fetched latency of a consumer waiting at the embedded broker:
//! a raw rskafka fetch and a librdkafka group consumer, each waiting up to
//! 500 ms per fetch (librdkafka's `fetch.wait.max.ms` default), through the
//! harness's front (which long-polls like Kafka) and on the mock alone
//! (`stall_free(false)`: every empty fetch is answered only when its wait
//! runs out).
//!
//! Each iteration produces one record while the consumer waits for it and
//! times the produce's start to the record in the consumer's hands.

#[path = "../tests/support/clients.rs"]
mod clients;
#[path = "support/shared.rs"]
mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clients::{group_consumer, partition};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kafka_trace_harness::Broker;
use rdkafka::Message;
use rskafka::client::partition::Compression;
use rskafka::record::Record;
use shared::runtime;

const FETCH_WAIT_MS: i32 = 500;

fn record() -> Record {
    Record {
        key: None,
        value: Some(vec![b'x'; 100]),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    }
}

async fn broker(front: bool) -> Broker {
    Broker::builder()
        .stall_free(front)
        .start()
        .await
        .expect("broker")
}

fn path_name(front: bool) -> &'static str {
    if front { "front" } else { "mock alone" }
}

fn raw_rskafka(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("produce to fetched, raw rskafka, 500 ms fetch wait");
    group.sample_size(10);
    for front in [true, false] {
        let broker = rt.block_on(broker(front));
        let topic = rt
            .block_on(broker.create_unique_topic("latency", 1))
            .expect("topic");
        let producer = rt.block_on(partition(&broker, &topic, 0));
        let consumer = Arc::new(rt.block_on(partition(&broker, &topic, 0)));
        let mut next = 0i64;
        group.bench_function(BenchmarkId::from_parameter(path_name(front)), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let offset = next;
                        let (asking, asked) = tokio::sync::oneshot::channel();
                        let fetch = tokio::spawn({
                            let consumer = Arc::clone(&consumer);
                            async move {
                                let _ = asking.send(());
                                loop {
                                    let (records, _) = consumer
                                        .fetch_records(offset, 1..1_000_000, FETCH_WAIT_MS)
                                        .await
                                        .expect("fetch");
                                    if records.iter().any(|r| r.offset == offset) {
                                        return Instant::now();
                                    }
                                }
                            }
                        });
                        asked.await.expect("fetch started");
                        let started = Instant::now();
                        producer
                            .produce(vec![record()], Compression::NoCompression)
                            .await
                            .expect("produce");
                        let fetched = fetch.await.expect("fetch task");
                        total += fetched - started;
                        next += 1;
                    }
                    total
                })
            });
        });
        rt.block_on(broker.shutdown()).expect("shutdown");
    }
    group.finish();
}

fn librdkafka_group(c: &mut Criterion) {
    let rt = runtime();
    let mut group =
        c.benchmark_group("produce to fetched, librdkafka group consumer, 500 ms fetch wait");
    group.sample_size(10);
    for front in [true, false] {
        let broker = rt.block_on(broker(front));
        let topic = rt
            .block_on(broker.create_unique_topic("latency", 1))
            .expect("topic");
        let producer = rt.block_on(partition(&broker, &topic, 0));
        let fetch_wait = Duration::from_millis(FETCH_WAIT_MS.unsigned_abs().into());
        let consumer = Arc::new(group_consumer(&broker, &topic, Some(fetch_wait)));
        group.bench_function(BenchmarkId::from_parameter(path_name(front)), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    rt.block_on(producer.produce(vec![record()], Compression::NoCompression))
                        .expect("produce");
                    let deadline = started + Duration::from_secs(30);
                    loop {
                        assert!(Instant::now() < deadline, "no record within 30 s");
                        match consumer.poll(Duration::from_millis(100)) {
                            Some(Ok(message)) if message.payload().is_some() => break,
                            Some(Err(error)) => panic!("consumer error: {error}"),
                            _ => {}
                        }
                    }
                    total += started.elapsed();
                }
                total
            });
        });
        // Closing leaves the group through the front, served by `rt`.
        let closing = std::thread::spawn(move || drop(consumer));
        closing.join().expect("closing the consumer");
        rt.block_on(broker.shutdown()).expect("shutdown");
    }
    group.finish();
}

criterion_group!(benches, raw_rskafka, librdkafka_group);
criterion_main!(benches);
