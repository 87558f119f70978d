//! A traced consumer's fetch wait: a partition waiting for records never
//! holds up another's, and an idle poll ends empty within its deadline.

use std::time::Duration;

use kafka_trace_harness::{Broker, SpanCapture, TracedConsumer};
use rskafka::client::partition::{Compression, UnknownTopicHandling};

mod support;
use support::{DEADLINE, bounded, record};

#[tokio::test]
async fn a_waiting_partition_does_not_hold_up_one_with_records() {
    bounded("long waits", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("waits", 3).await.unwrap();
        let capture = SpanCapture::new();
        // Partitions 0 and 2 stay empty: their fetches wait as long as the
        // deadline lets them (half of it).
        let mut consumer = TracedConsumer::builder("patient", &topic)
            .max_wait(Duration::from_secs(3600))
            .deadline(Duration::from_secs(40))
            .build(&broker, capture.tracer("patient"))
            .await
            .unwrap();
        let producer = broker
            .client()
            .await
            .unwrap()
            .partition_client(topic.as_str(), 1, UnknownTopicHandling::Error)
            .await
            .unwrap();
        for n in 0..3 {
            producer
                .produce(vec![record(n)], Compression::NoCompression)
                .await
                .unwrap();
            // Far below the empty partitions' 20 s wait.
            let read = consumer.consume(1, DEADLINE).await.unwrap();
            assert_eq!((read[0].partition, read[0].offset), (1, n as i64));
            read.into_iter().for_each(|r| r.finish());
        }
        broker.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_idle_poll_with_a_wait_beyond_the_deadline_ends_empty() {
    bounded("idle poll", async {
        let broker = Broker::builder().start().await.unwrap();
        let topic = broker.create_unique_topic("idle", 2).await.unwrap();
        let capture = SpanCapture::new();
        let mut consumer = TracedConsumer::builder("idle", &topic)
            .max_wait(Duration::from_secs(3600))
            .deadline(Duration::from_secs(2))
            .build(&broker, capture.tracer("idle"))
            .await
            .unwrap();
        let polled = consumer.poll().await.expect("an idle poll is not an error");
        assert!(polled.is_empty());
        broker.shutdown().await.unwrap();
    })
    .await;
}
