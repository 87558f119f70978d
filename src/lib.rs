#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod broker;
pub mod capture;
#[cfg(feature = "datagen")]
pub mod datagen;
mod error;
pub mod forest;
#[cfg(any(
    feature = "otlp-receiver",
    feature = "otlp-export",
    feature = "rdkafka",
    feature = "tracing"
))]
pub mod integrations;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod propagation;
#[cfg(feature = "report")]
pub mod report;
mod shallow;
#[cfg(feature = "stockapp")]
pub mod stockapp;
pub mod traced;

pub use broker::{
    Backend, BackendKind, Broker, BrokerBuilder, ContainerImage, DEFAULT_CLIENT_DEADLINE,
    unique_topic_name,
};
pub use capture::global::{ScopeGuard, install, unrouted_spans};
pub use capture::{Condition, SpanCapture, SpanCaptureBuilder, SpanStream};
pub use error::{Error, Result};
pub use forest::{
    AttributeMatcher, CapturedSpan, ExpectedLink, ExpectedSpan, MessagingConventions, Problem,
    Render, SpanForest, SpanView, Trace, ValuePredicate,
};
pub use propagation::{ExistingTraceparent, ExtractProblem, Extracted, Injected, extract, inject};
pub use traced::{
    BatchingTracedProducer, ConsumedRecord, ConsumerParent, OffsetStore, StartFrom, TracedConsumer,
    TracedConsumerBuilder, TracedProducer,
};
