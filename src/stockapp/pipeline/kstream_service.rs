//! Service `kstream-service`: the Kafka Streams app (AvroToJSONStream),
//! traced. It reads every trade and writes the same record as JSON.

use crate::stockapp::error::Result;
use crate::stockapp::metrics::PipelineMetrics;
use crate::stockapp::{SchemaRegistry, StockTrade, TRADES_JSON_TOPIC, TRADES_TOPIC, trade_to_json};
use crate::traced::{TracedConsumer, TracedProducer};

use super::{KSTREAM_SERVICE, decode_error_type, partition_for_key, plain_record};

/// Counts of one Kafka Streams step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KstreamStep {
    pub(crate) trades_in: usize,
    pub(crate) json_out: usize,
    /// Trades that could not be decoded: an error span each, no copy.
    pub(crate) failed: usize,
}

pub(crate) struct KstreamService {
    pub(crate) trades: TracedConsumer,
    pub(crate) producer: TracedProducer,
    pub(crate) registry: SchemaRegistry,
    pub(crate) json_partitions: i32,
    pub(crate) metrics: Option<PipelineMetrics>,
}

impl KstreamService {
    /// Reads trades; each gets a `process` span and, when it decodes, a
    /// `send stockapp.trades-json` child carrying the JSON copy.
    pub(crate) async fn step(&mut self) -> Result<KstreamStep> {
        let trades = self.trades.poll().await?;
        let mut step = KstreamStep {
            trades_in: trades.len(),
            ..KstreamStep::default()
        };
        for consumed in trades {
            let started = std::time::Instant::now();
            let value = consumed.record.value.as_deref().unwrap_or_default();
            match self.registry.decode_value::<StockTrade>(value) {
                Ok(trade) => {
                    let json = trade_to_json(&trade);
                    let record =
                        plain_record(trade.symbol.as_bytes(), json, consumed.record.timestamp);
                    let partition = partition_for_key(&trade.symbol, self.json_partitions);
                    self.producer
                        .send(consumed.context(), TRADES_JSON_TOPIC, partition, record)
                        .await?;
                    step.json_out += 1;
                }
                // The ksqlDB branch dead-letters it; this one says why it
                // wrote nothing, and goes on.
                Err(e) => {
                    consumed.fail(decode_error_type(&e), e.to_string());
                    step.failed += 1;
                }
            }
            consumed.finish();
            if let Some(metrics) = &self.metrics {
                metrics.record_processing(KSTREAM_SERVICE, TRADES_TOPIC, started.elapsed());
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.count_in(KSTREAM_SERVICE, TRADES_TOPIC, step.trades_in as u64);
            metrics.count_out(KSTREAM_SERVICE, TRADES_JSON_TOPIC, step.json_out as u64);
        }
        Ok(step)
    }
}
