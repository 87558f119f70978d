//! Service `datagen`: the fake-data generator in place of Confluent datagen.

use opentelemetry::Context;
use rskafka::record::Record;

use std::sync::atomic::Ordering;

use super::{DATAGEN_SERVICE, Progress, partition_for_key};
use crate::stockapp::error::Result;
use crate::stockapp::metrics::PipelineMetrics;
use crate::stockapp::{AvroRecord, Datagen, SchemaRegistry, TRADES_TOPIC, USERS_TOPIC};
use crate::traced::TracedProducer;

/// Timestamps of generated trades: the first at `start_ms`, then one every
/// `spacing_ms`, so a seeded run lands in the same windows every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeClock {
    /// Timestamp of the first trade, ms since the epoch.
    pub start_ms: i64,
    /// Milliseconds between two trades.
    pub spacing_ms: i64,
}

impl TradeClock {
    /// Timestamp of trade number `index`.
    pub fn timestamp_ms(&self, index: usize) -> i64 {
        self.start_ms + self.spacing_ms * index as i64
    }
}

/// Sends every user, then every trade, each as the root `send` span of its
/// own trace. Users go first so every trade can join the profile of its user
/// (the processor reads users up to date before each batch of trades).
/// Each acknowledged record is counted in `progress` as it goes.
pub(crate) async fn run(
    producer: &TracedProducer,
    registry: &SchemaRegistry,
    datagen: &Datagen,
    clock: Option<TradeClock>,
    partitions: i32,
    metrics: Option<&PipelineMetrics>,
    progress: &Progress,
) -> Result<()> {
    let now = chrono::Utc::now();
    for user in datagen.users() {
        let record = avro_record(registry, USERS_TOPIC, &user, now)?;
        let partition = partition_for_key(user.key(), partitions);
        producer
            .send(&Context::new(), USERS_TOPIC, partition, record)
            .await?;
        progress.datagen_users.fetch_add(1, Ordering::SeqCst);
        if let Some(metrics) = metrics {
            metrics.count_out(DATAGEN_SERVICE, USERS_TOPIC, 1);
        }
    }
    for (index, trade) in datagen.trades().enumerate() {
        // Without a clock, a trade happens when it is sent.
        let timestamp = clock
            .and_then(|c| chrono::DateTime::from_timestamp_millis(c.timestamp_ms(index)))
            .unwrap_or_else(chrono::Utc::now);
        let record = avro_record(registry, TRADES_TOPIC, &trade, timestamp)?;
        let partition = partition_for_key(trade.key(), partitions);
        producer
            .send(&Context::new(), TRADES_TOPIC, partition, record)
            .await?;
        progress.datagen_trades.fetch_add(1, Ordering::SeqCst);
        if let Some(metrics) = metrics {
            metrics.count_out(DATAGEN_SERVICE, TRADES_TOPIC, 1);
        }
    }
    Ok(())
}

fn avro_record<T: AvroRecord>(
    registry: &SchemaRegistry,
    topic: &str,
    value: &T,
    timestamp: chrono::DateTime<chrono::Utc>,
) -> Result<Record> {
    Ok(Record {
        key: Some(value.key().as_bytes().to_vec()),
        value: Some(registry.encode_value(topic, value)?),
        headers: Default::default(),
        timestamp,
    })
}
