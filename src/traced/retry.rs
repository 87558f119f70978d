//! The send retry policy both traced producers share: which errors are
//! worth another attempt, how long to pause, and what a failed attempt
//! leaves on the send span.

use std::time::Duration;

use opentelemetry::KeyValue;

use super::attributes::{attr, error_type, is_transient};
use crate::error::Error;

/// Name of the event a send span gets for each failed attempt that is
/// followed by another.
pub const SEND_ATTEMPT_FAILED_EVENT: &str = "send attempt failed";

/// Whether another attempt of the same send may succeed.
pub(super) fn is_transient_error(error: &Error) -> bool {
    matches!(error, Error::Client { source, .. } if is_transient(source))
}

/// Pause before attempt `attempt + 1`: 10 ms doubling, at most 500 ms.
pub(super) fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_millis(10u64 << attempt.min(6)).min(Duration::from_millis(500))
}

/// The `error.type` of a failed send or attempt.
pub(super) fn send_error_type(error: &Error) -> String {
    match error {
        Error::Client { source, .. } => error_type(source),
        Error::Timeout { .. } => "timeout".into(),
        Error::Topic { .. } => "topic".into(),
        _ => "_OTHER".into(),
    }
}

/// The attributes of a [`SEND_ATTEMPT_FAILED_EVENT`].
pub(super) fn failed_attempt(attempt: u32, error: &Error) -> Vec<KeyValue> {
    vec![
        KeyValue::new("attempt", i64::from(attempt)),
        KeyValue::new(attr::ERROR_TYPE, send_error_type(error)),
        KeyValue::new("description", error.to_string()),
    ]
}
