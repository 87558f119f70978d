//! Where each named consumer resumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
/// For each (consumer name, topic, partition) it keeps two positions:
/// - **committed**: the next offset a restarted consumer reads. A record
///   is committed when it is finished ([`ConsumedRecord::finish`]) and
///   every earlier record of its partition is too, or by
///   [`TracedConsumer::commit_handed_out`].
/// - **delivered**: one past the highest offset ever handed out. Records
///   between the two were handed out but not finished; a restarted
///   consumer delivers them again, marked as redeliveries.
///
/// [`ConsumedRecord::finish`]: super::ConsumedRecord::finish
/// [`TracedConsumer::commit_handed_out`]: super::TracedConsumer::commit_handed_out
///
/// ```
/// use kafka_trace_harness::traced::OffsetStore;
///
/// let store = OffsetStore::new();
/// assert_eq!(store.get("api", "trades", 0), None);
/// assert_eq!(store.delivered("api", "trades", 0), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct OffsetStore(Arc<Mutex<HashMap<GroupPartition, Positions>>>);

/// (consumer name, topic, partition).
type GroupPartition = (String, String, i32);

#[derive(Debug, Clone, Copy)]
struct Positions {
    committed: Option<i64>,
    delivered: i64,
}

impl OffsetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn positions(&self) -> MutexGuard<'_, HashMap<GroupPartition, Positions>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The committed position: the next offset `group` will read from
    /// `topic`/`partition` after a restart.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.positions()
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .and_then(|p| p.committed)
    }

    /// One past the highest offset `group` was ever handed out from
    /// `topic`/`partition`.
    pub fn delivered(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.positions()
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .map(|p| p.delivered)
    }

    /// Moves the committed position forward to `next` (never back); what
    /// is committed was delivered too.
    pub(super) fn commit(&self, group: &str, topic: &str, partition: i32, next: i64) {
        self.advance(group, topic, partition, next, |p| {
            p.committed = Some(p.committed.map_or(next, |c| c.max(next)));
        });
    }

    /// Records that offsets below `next` were handed out.
    pub(super) fn mark_delivered(&self, group: &str, topic: &str, partition: i32, next: i64) {
        self.advance(group, topic, partition, next, |_| {});
    }

    /// Moves the delivered mark forward to `next`, then applies `update`.
    fn advance(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        next: i64,
        update: impl FnOnce(&mut Positions),
    ) {
        let mut map = self.positions();
        let entry = map
            .entry((group.to_owned(), topic.to_owned(), partition))
            .or_insert(Positions {
                committed: None,
                delivered: next,
            });
        entry.delivered = entry.delivered.max(next);
        update(entry);
    }
}
