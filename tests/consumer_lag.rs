//! `TracedConsumer::lag`: what the broker holds beyond what a consumer has
//! fetched, per partition, as of the partition's last answer; unknown
//! before it. The stock processor waits on it to take trades in timestamp
//! order across partitions.

use std::time::{Duration, Instant};

use chrono::Utc;
use kafka_trace_harness::{Broker, SpanCapture, TracedConsumer};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

const DEADLINE: Duration = Duration::from_secs(30);

fn record(n: usize) -> Record {
    Record {
        key: None,
        value: Some(format!("v{n}").into_bytes()),
        headers: Default::default(),
        timestamp: Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_what_the_broker_holds_beyond_the_fetched() {
    let broker = Broker::start().await.expect("broker");
    let topic = broker.create_unique_topic("lag", 2).await.expect("topic");
    let client = broker.client().await.expect("client");
    let partition_0 = client
        .partition_client(&topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    // One batch each: the mock answers a fetch with one batch.
    for n in 0..10 {
        partition_0
            .produce(vec![record(n)], Compression::NoCompression)
            .await
            .expect("produce");
    }
    let capture = SpanCapture::new();
    let mut consumer = TracedConsumer::builder("lag-reader", &topic)
        .max_partition_records(4)
        .max_wait(Duration::from_millis(100))
        .build(&broker, capture.tracer("reader"))
        .await
        .expect("consumer");
    assert_eq!(consumer.partitions().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(
        (consumer.lag(0), consumer.lag(1)),
        (None, None),
        "before any answer"
    );
    assert_eq!(consumer.lag(2), None, "a partition it does not read");

    let first = consumer.poll().await.expect("poll");
    assert_eq!(first.len(), 4, "at most 4 records of a partition per poll");
    assert_eq!(consumer.lag(0), Some(6), "10 stored, 4 fetched");

    let started = Instant::now();
    let mut read = first.len();
    while (read < 10 || consumer.lag(1).is_none()) && started.elapsed() < DEADLINE {
        read += consumer.poll().await.expect("poll").len();
    }
    assert_eq!(read, 10, "every record, within {DEADLINE:?}");
    assert_eq!(consumer.lag(0), Some(0), "caught up");
    assert_eq!(consumer.lag(1), Some(0), "an empty partition that answered");

    // Records stored since the last answer are not counted until the
    // partition answers again.
    let partition_1 = client
        .partition_client(&topic, 1, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    partition_1
        .produce(vec![record(10), record(11)], Compression::NoCompression)
        .await
        .expect("produce");
    assert_eq!(consumer.lag(1), Some(0), "no answer since");
    let started = Instant::now();
    let mut more = 0;
    while more < 2 && started.elapsed() < DEADLINE {
        more += consumer.poll().await.expect("poll").len();
    }
    assert_eq!(more, 2);
    assert_eq!(consumer.lag(1), Some(0));
    broker.shutdown().await.expect("shutdown");
}
