//! A traced producer and consumer over rskafka, following the
//! OpenTelemetry messaging semantic conventions (1.44) for Kafka.
//!
//! rskafka has no consumer groups, so [`TracedConsumer`] keeps its own
//! offsets in an [`OffsetStore`]: each named consumer reads every partition
//! of its topic from where it started.

pub(crate) mod attributes;
mod batching;
mod connect;
mod consumer;
mod offsets;
pub mod partitioner;
mod producer;
pub(crate) mod retry;
#[cfg(feature = "proptest")]
pub mod strategies;

pub use attributes::{CONTEXT_UNUSABLE_EVENT, attr};
pub use batching::{
    BatchingStats, BatchingTracedProducer, BatchingTracedProducerBuilder, DEFAULT_LINGER,
    DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_RECORDS, MAX_LINGER,
};
pub use consumer::{
    ConsumedRecord, ConsumerParent, DEFAULT_MAX_PARTITION_RECORDS, DEFAULT_MAX_WAIT, DELETED_COUNT,
    DELETED_OFFSET_FIRST, DELETED_OFFSET_LAST, RECORDS_DELETED_EVENT, TracedConsumer,
    TracedConsumerBuilder,
};
pub use offsets::{OffsetStore, StartFrom};
pub use producer::TracedProducer;
pub use retry::SEND_ATTEMPT_FAILED_EVENT;
