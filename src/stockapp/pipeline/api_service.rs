//! Services `api-1`, `api-2`, …: the Go API service, traced.

use super::dead_letter;
use crate::Result;
use crate::stockapp::ApiState;
use crate::traced::{TracedConsumer, TracedProducer};

pub(crate) struct ApiConsumerService {
    pub(crate) consumer: TracedConsumer,
    /// Sends bad rows to the dead-letter topic.
    pub(crate) producer: TracedProducer,
    pub(crate) state: ApiState,
}

/// Counts of one API consumer step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ApiStep {
    pub(crate) rows_in: usize,
    pub(crate) dead_lettered: usize,
}

impl ApiConsumerService {
    /// Reads `stockapp.dollarsbyzip`: one `process` span per row, child of
    /// the processor's `send` span; the row becomes the latest of its window.
    pub(crate) async fn step(&mut self) -> Result<ApiStep> {
        let mut step = ApiStep::default();
        for consumed in self.consumer.poll().await? {
            step.rows_in += 1;
            let value = consumed.record.value.as_deref().unwrap_or_default();
            match self.state.apply_json(value) {
                Ok(_) => consumed.finish(),
                Err(e) => {
                    dead_letter(&self.producer, consumed, "invalid_json", e.to_string()).await?;
                    step.dead_lettered += 1;
                }
            }
        }
        Ok(step)
    }
}
