//! Bridges between the capture and other tracing stacks, one feature each.

#[cfg(feature = "otlp-export")]
pub mod otlp_export;
#[cfg(feature = "otlp-receiver")]
pub mod otlp_receiver;
#[cfg(feature = "rdkafka")]
pub mod rdkafka;
#[cfg(feature = "tracing")]
pub mod tracing;
