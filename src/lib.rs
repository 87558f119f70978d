#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod broker;
mod error;
pub mod metrics;
pub mod otlp;
pub mod stockapp;

pub use broker::{Backend, BackendKind, Broker, BrokerBuilder, ContainerImage, unique_topic_name};
pub use error::{Error, Result};
