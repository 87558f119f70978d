//! The send retry policy both traced producers share: which errors are
//! worth another attempt, how long to pause, and what a failed attempt
//! leaves on the send span.

use std::time::Duration;

use opentelemetry::KeyValue;

use super::attributes::{attr, error_type, is_retriable_with, is_transient};
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

/// Whether a read (a fetch, an offset lookup) that failed with `error`
/// may succeed if asked again: the errors Kafka's protocol marks
/// retriable that a read can meet (an
/// unknown partition included, as during a topic's creation or a leader
/// move), and a broken connection or a timeout. rskafka retries some of
/// these itself (`NotLeaderOrFollower`, `LeaderNotAvailable`, a broken
/// connection), within its own backoff deadline.
pub(crate) fn is_retriable_read_error(error: &rskafka::client::error::Error) -> bool {
    use rskafka::client::error::ProtocolError as P;
    is_retriable_with(error, |code| {
        matches!(
            code,
            P::CorruptMessage
                | P::UnknownTopicOrPartition
                | P::LeaderNotAvailable
                | P::NotLeaderOrFollower
                | P::RequestTimedOut
                | P::NetworkException
                | P::NotEnoughReplicas
                | P::NotEnoughReplicasAfterAppend
                | P::KafkaStorageError
                | P::FetchSessionIdNotFound
                | P::InvalidFetchSessionEpoch
                | P::FencedLeaderEpoch
                | P::UnknownLeaderEpoch
                | P::OffsetNotAvailable
                | P::PreferredLeaderNotAvailable
                | P::ThrottlingQuotaExceeded
        )
    })
}

/// Runs `attempt` until it succeeds, fails with an error that
/// [`is_retriable_read_error`] rejects, or the next pause would end past
/// `until`, pausing [`retry_backoff`] between attempts. The error is the
/// last one, with how many attempts failed. Bound each attempt, or the
/// whole call, with a timeout: an attempt itself may take any time.
#[cfg(feature = "stockapp")]
pub(crate) async fn retry_read<T, F, Fut>(
    until: std::time::Instant,
    mut attempt: F,
) -> Result<T, (rskafka::client::error::Error, u32)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, rskafka::client::error::Error>>,
{
    let mut failed = 0;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let pause = retry_backoff(failed);
        failed += 1;
        if !is_retriable_read_error(&error) || std::time::Instant::now() + pause >= until {
            return Err((error, failed));
        }
        tokio::time::sleep(pause).await;
    }
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

#[cfg(all(test, feature = "stockapp"))]
mod tests {
    use std::time::{Duration, Instant};

    use rskafka::client::error::Error as E;

    use super::retry_read;

    #[tokio::test]
    async fn a_read_is_retried_after_retriable_errors_only() {
        let until = Instant::now() + Duration::from_secs(10);
        let mut calls = 0;
        let read = retry_read(until, || {
            calls += 1;
            let answer = if calls < 3 {
                Err(E::Timeout)
            } else {
                Ok(calls)
            };
            async move { answer }
        });
        assert_eq!(read.await.unwrap(), 3, "two timeouts retried");

        let mut calls = 0;
        let read = retry_read(until, || {
            calls += 1;
            async { Err::<(), _>(E::InvalidResponse("garbled".into())) }
        });
        let (error, attempts) = read.await.unwrap_err();
        assert_eq!(attempts, 1, "not retried: {error}");
        assert_eq!(calls, 1);

        let soon = Instant::now() + Duration::from_millis(50);
        let read = retry_read(soon, || async { Err::<(), _>(E::Timeout) });
        let (error, attempts) = read.await.unwrap_err();
        assert!(matches!(error, E::Timeout), "the last error: {error}");
        assert!(attempts > 1, "retried until the deadline: {attempts}");
    }
}
