//! Fixtures shared by the producer and fault tests.

use std::collections::BTreeMap;
use std::time::Duration;

use rskafka::record::Record;

/// Every test's outer bound: a hang fails here instead of hanging CI.
pub const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// What one operation (a send, a poll) may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The `n`th test record: key `key-n`, value `value-n`, no header.
pub fn record(n: usize) -> Record {
    Record {
        key: Some(format!("key-{n}").into_bytes()),
        value: Some(format!("value-{n}").into_bytes()),
        headers: BTreeMap::new(),
        timestamp: chrono::Utc::now(),
    }
}

/// Runs `test` within [`TEST_DEADLINE`].
pub async fn bounded<F: Future<Output = ()>>(what: &str, test: F) {
    if tokio::time::timeout(TEST_DEADLINE, test).await.is_err() {
        panic!("{what} did not end within {TEST_DEADLINE:?}");
    }
}
