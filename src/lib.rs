#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod broker;
pub mod capture;
mod error;
mod expect;
pub mod metrics;
pub mod otlp;
pub mod propagation;
pub mod snapshot;
pub mod span_tree;
pub mod stockapp;
pub mod strategies;
pub mod traced;

pub use broker::{Backend, BackendKind, Broker, BrokerBuilder, ContainerImage, unique_topic_name};
pub use capture::{Condition, SpanCapture, SpanCaptureBuilder};
pub use error::{Error, Result};
pub use expect::{AttributeMatcher, ExpectedSpan};
pub use propagation::{ExistingTraceparent, ExtractProblem, Extracted, Injected, extract, inject};
pub use snapshot::Render;
pub use span_tree::{CapturedSpan, Problem, SpanForest, SpanView, Trace};
pub use traced::{
    ConsumedRecord, ConsumerParent, OffsetStore, StartFrom, TracedConsumer, TracedConsumerBuilder,
    TracedProducer,
};
