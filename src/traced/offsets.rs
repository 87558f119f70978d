//! Where each named consumer resumes.

use std::collections::HashMap;
use std::sync::Arc;

/// Where a new consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// The earliest record still kept (the default, as the stockapp API
    /// service does).
    #[default]
    Earliest,
    /// Only records produced after the consumer was built.
    Latest,
}

/// Positions of named consumers, so that a consumer built again under the
/// same name (a restart) resumes where the previous one stopped, as a
/// Kafka consumer group would. Owned by a test, never global.
///
/// ```
/// use kafka_trace_harness::traced::OffsetStore;
///
/// let store = OffsetStore::new();
/// assert_eq!(store.get("api", "trades", 0), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct OffsetStore(Arc<std::sync::Mutex<HashMap<GroupPartition, i64>>>);

/// (consumer name, topic, partition).
type GroupPartition = (String, String, i32);

impl OffsetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next offset `group` will read from `topic`/`partition`.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(group.to_owned(), topic.to_owned(), partition))
            .copied()
    }

    pub(super) fn commit(&self, group: &str, topic: &str, partition: i32, next: i64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map
            .entry((group.to_owned(), topic.to_owned(), partition))
            .or_insert(next);
        *entry = (*entry).max(next);
    }
}
