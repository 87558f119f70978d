//! Clients of the embedded broker shared by the broker tests
//! (`broker_groups`, `broker_long_poll`) and the fetch-latency bench, each
//! including this file with `#[path]`: an rskafka partition client and a
//! librdkafka group consumer.

use std::time::Duration;

use kafka_trace_harness::Broker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};

/// A client of `topic`'s partition `partition` on a connection of its
/// own, as a separate service has.
pub async fn partition(broker: &Broker, topic: &str, partition: i32) -> PartitionClient {
    broker
        .client()
        .await
        .expect("client")
        .partition_client(topic, partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition client")
}

/// A librdkafka consumer of group `{topic}-group`, reading from the
/// earliest offset, subscribed to `topic`; `fetch_wait` sets
/// `fetch.wait.max.ms` (librdkafka's default, 500 ms, without it).
pub fn group_consumer(broker: &Broker, topic: &str, fetch_wait: Option<Duration>) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", format!("{topic}-group"))
        .set("auto.offset.reset", "earliest")
        .set("log_level", "0");
    if let Some(wait) = fetch_wait {
        config.set("fetch.wait.max.ms", wait.as_millis().to_string());
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}
