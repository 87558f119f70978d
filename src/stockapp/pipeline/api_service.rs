//! Services `api-1`, `api-2`, …: the Go API service, traced.

use std::time::{Duration, Instant};

use rskafka::client::partition::{OffsetAt, PartitionClient};

use super::dead_letter;
use super::in_flight::InFlight;
use crate::stockapp::error::{Error, Result};
use crate::stockapp::metrics::PipelineMetrics;
use crate::stockapp::{ApiState, DOLLARS_BY_ZIP_TOPIC};
use crate::traced::retry::retry_read;
use crate::traced::{BatchingTracedProducer, TracedConsumer};

pub(crate) struct ApiConsumerService {
    pub(crate) consumer: TracedConsumer,
    /// Sends bad rows to the dead-letter topic.
    pub(crate) producer: BatchingTracedProducer,
    /// Dead-letter copies sent, not yet acknowledged.
    pub(crate) in_flight: InFlight<ApiStep>,
    pub(crate) state: ApiState,
    pub(crate) metrics: Option<ApiMetrics>,
}

/// What an API consumer needs to report its metrics.
pub(crate) struct ApiMetrics {
    pub(crate) metrics: PipelineMetrics,
    pub(crate) service: String,
    /// Reads the high watermark of `stockapp.dollarsbyzip`'s one partition.
    pub(crate) watermark: PartitionClient,
    /// How long reading the high watermark may take.
    pub(crate) deadline: Duration,
}

/// Counts of one API consumer step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ApiStep {
    pub(crate) rows_in: usize,
    pub(crate) dead_lettered: usize,
}

impl std::ops::AddAssign for ApiStep {
    fn add_assign(&mut self, other: Self) {
        self.rows_in += other.rows_in;
        self.dead_lettered += other.dead_lettered;
    }
}

impl ApiConsumerService {
    /// Reads `stockapp.dollarsbyzip`: one `process` span per row, child of
    /// the processor's `send` span; the row becomes the latest of its window.
    pub(crate) async fn step(
        &mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<ApiStep> {
        let mut step = ApiStep::default();
        // A poll may wait for rows: dead-letter copies that settle
        // meanwhile are counted at once, and a stop ends the wait.
        let rows = tokio::select! {
            polled = self.consumer.poll() => polled?,
            settled = self.in_flight.settled() => return settled,
            () = super::stopping(stop) => return Ok(ApiStep::default()),
        };
        for consumed in rows {
            let started = Instant::now();
            let value = consumed.record.value.as_deref().unwrap_or_default();
            // The row carries the trade's timestamp: end-to-end starts there.
            let trade_timestamp_ms = consumed.record.timestamp.timestamp_millis();
            match self.state.apply_json(value) {
                Ok(_) => {
                    consumed.finish();
                    step.rows_in += 1;
                }
                // Counted once the copy is stored.
                Err(e) => {
                    let sent = dead_letter(&self.producer, consumed, "invalid_json", e.to_string());
                    self.in_flight.push(async move {
                        sent.await?;
                        Ok(ApiStep {
                            rows_in: 1,
                            dead_lettered: 1,
                        })
                    });
                }
            }
            if let Some(m) = &self.metrics {
                m.metrics.count_in(&m.service, DOLLARS_BY_ZIP_TOPIC, 1);
                m.metrics
                    .record_processing(&m.service, DOLLARS_BY_ZIP_TOPIC, started.elapsed());
                let now_ms = chrono::Utc::now().timestamp_millis();
                m.metrics.record_end_to_end(
                    &m.service,
                    DOLLARS_BY_ZIP_TOPIC,
                    trade_timestamp_ms,
                    now_ms,
                );
            }
        }
        step += self.in_flight.settle().await?;
        if step.rows_in > 0
            && let Some(m) = &self.metrics
        {
            // A retriable error (a leader move, a timeout) is asked again.
            let until = std::time::Instant::now() + m.deadline;
            let read = retry_read(until, || m.watermark.get_offset(OffsetAt::Latest));
            let high_watermark = match tokio::time::timeout(m.deadline, read).await {
                Ok(Ok(high_watermark)) => high_watermark,
                Ok(Err((e, attempts))) => {
                    return Err(Error::Pipeline(format!(
                        "{}: reading the high watermark of {DOLLARS_BY_ZIP_TOPIC:?}: {e} \
                         ({attempts} failed attempts)",
                        m.service
                    )));
                }
                Err(_) => {
                    return Err(Error::Pipeline(format!(
                        "{}: reading the high watermark of {DOLLARS_BY_ZIP_TOPIC:?}: no answer \
                         within {:?}",
                        m.service, m.deadline
                    )));
                }
            };
            let next = self.consumer.offsets().get(&0).copied().unwrap_or(0);
            m.metrics.record_consumer_lag(
                &m.service,
                DOLLARS_BY_ZIP_TOPIC,
                0,
                high_watermark,
                next,
            );
        }
        Ok(step)
    }

    /// Waits for every dead-letter copy still in flight (at stop).
    pub(crate) async fn drain(&mut self) -> Result<ApiStep> {
        self.in_flight.drain().await
    }
}
