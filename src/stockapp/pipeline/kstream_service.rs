//! Service `kstream-service`: the Kafka Streams app (AvroToJSONStream),
//! traced. It reads every trade and writes the same record as JSON.

use crate::stockapp::error::Result;
use crate::stockapp::metrics::PipelineMetrics;
use crate::stockapp::{SchemaRegistry, StockTrade, TRADES_JSON_TOPIC, TRADES_TOPIC, trade_to_json};
use crate::traced::{BatchingTracedProducer, TracedConsumer};

use super::in_flight::InFlight;
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
    pub(crate) producer: BatchingTracedProducer,
    pub(crate) registry: SchemaRegistry,
    pub(crate) json_partitions: i32,
    pub(crate) metrics: Option<PipelineMetrics>,
    /// JSON copies sent, not yet acknowledged.
    pub(crate) in_flight: InFlight<KstreamStep>,
}

impl KstreamService {
    /// Reads trades; each gets a `process` span and, when it decodes, a
    /// `send stockapp.trades-json` child carrying the JSON copy. Copies go
    /// out without waiting; the counts returned are of the trades settled
    /// (copy acknowledged, or failed) since the last step.
    pub(crate) async fn step(
        &mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<KstreamStep> {
        // A poll may wait for trades: copies that settle meanwhile are
        // counted, and committed, at once, and a stop ends the wait.
        let trades = tokio::select! {
            polled = self.trades.poll() => polled?,
            settled = self.in_flight.settled() => {
                let step = settled?;
                self.report(&step);
                return Ok(step);
            }
            () = super::stopping(stop) => return Ok(KstreamStep::default()),
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
                    let stored = self.producer.send(
                        consumed.context(),
                        TRADES_JSON_TOPIC,
                        partition,
                        record,
                    );
                    self.in_flight.push(async move {
                        stored.await?;
                        consumed.finish();
                        Ok(KstreamStep {
                            trades_in: 1,
                            json_out: 1,
                            failed: 0,
                        })
                    });
                }
                // The ksqlDB branch dead-letters it; this one says why it
                // wrote nothing, and goes on.
                Err(e) => {
                    consumed.fail(decode_error_type(&e), e.to_string());
                    consumed.finish();
                    self.in_flight.push(std::future::ready(Ok(KstreamStep {
                        trades_in: 1,
                        json_out: 0,
                        failed: 1,
                    })));
                }
            }
            if let Some(metrics) = &self.metrics {
                metrics.record_processing(KSTREAM_SERVICE, TRADES_TOPIC, started.elapsed());
            }
        }
        let step = self.in_flight.settle().await?;
        self.report(&step);
        Ok(step)
    }

    /// Waits for every copy still in flight (at stop).
    pub(crate) async fn drain(&mut self) -> Result<KstreamStep> {
        let step = self.in_flight.drain().await?;
        self.report(&step);
        Ok(step)
    }

    fn report(&self, step: &KstreamStep) {
        if let Some(metrics) = &self.metrics {
            metrics.count_in(KSTREAM_SERVICE, TRADES_TOPIC, step.trades_in as u64);
            metrics.count_out(KSTREAM_SERVICE, TRADES_JSON_TOPIC, step.json_out as u64);
        }
    }
}

impl std::ops::AddAssign for KstreamStep {
    fn add_assign(&mut self, other: Self) {
        self.trades_in += other.trades_in;
        self.json_out += other.json_out;
        self.failed += other.failed;
    }
}
