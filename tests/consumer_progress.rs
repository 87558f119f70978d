//! The traced consumer advances on a slow broker with a backlog of many
//! small batches: a fetch round that would outlast the consumer's deadline
//! ends with what it fetched instead of being cancelled and fetched again.

use std::time::{Duration, Instant};

use chrono::Utc;
use kafka_trace_harness::{Broker, SpanCapture, TracedConsumer};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

const BATCHES: usize = 40;
/// Added to every broker answer: draining all the batches in one round
/// takes 40 × 100 ms, four times the consumer's deadline.
const LATENCY: Duration = Duration::from_millis(100);
const CONSUMER_DEADLINE: Duration = Duration::from_secs(1);
/// For the whole test: at least 4 s of fetching, and room to spare.
const TEST_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_advance_under_added_latency_with_many_small_batches() {
    let broker = Broker::start().await.expect("broker");
    let topic = broker
        .create_unique_topic("slow-backlog", 1)
        .await
        .expect("topic");
    let producer = broker
        .client()
        .await
        .expect("client")
        .partition_client(&topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    for n in 0..BATCHES {
        let record = Record {
            key: None,
            value: Some(format!("v{n}").into_bytes()),
            headers: Default::default(),
            timestamp: Utc::now(),
        };
        producer
            .produce(vec![record], Compression::NoCompression)
            .await
            .expect("produce");
    }
    let capture = SpanCapture::new();
    let mut consumer = TracedConsumer::builder("reader", &topic)
        .deadline(CONSUMER_DEADLINE)
        .build(&broker, capture.tracer("reader"))
        .await
        .expect("consumer");
    broker.add_latency(LATENCY).expect("latency");

    let started = Instant::now();
    let mut offsets = Vec::new();
    let mut errors = Vec::new();
    while offsets.len() < BATCHES && started.elapsed() < TEST_DEADLINE {
        match consumer.poll().await {
            Ok(records) => {
                for record in records {
                    offsets.push(record.offset);
                    record.finish();
                }
            }
            Err(error) => errors.push(error.to_string()),
        }
    }
    broker.add_latency(Duration::ZERO).expect("latency off");
    assert_eq!(
        offsets,
        (0..BATCHES as i64).collect::<Vec<_>>(),
        "after {:?}; {} polls failed, the first: {:?}",
        started.elapsed(),
        errors.len(),
        errors.first()
    );
    broker.shutdown().await.expect("shutdown");
}
