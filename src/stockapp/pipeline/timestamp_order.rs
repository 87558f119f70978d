//! Records of several partitions, let through in timestamp order, as a
//! Kafka Streams task picks them.
//!
//! The processor's windows close on stream time, the largest timestamp
//! seen. Taken in fetch order, the records of a partition whose fetch is
//! slow (a retry's backoff, a stall) fall behind the others' and, once the
//! gap passes the grace period, their windows have closed: the trades are
//! dropped as late. With the harness's compressed clock (seconds of trade
//! time per record) a second's lag is a day of stream time. Kafka Streams
//! avoids this by processing the buffered record with the smallest
//! timestamp, and only while every partition has a record buffered or is
//! known to be caught up (`max.task.idle.ms`); so does this.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Records held per partition until every partition can be compared.
#[derive(Debug)]
pub(crate) struct TimestampOrder<R> {
    held: BTreeMap<i32, VecDeque<(i64, R)>>,
    /// Since when held records wait for a partition with nothing held
    /// and an unknown or non-zero lag.
    blocked_since: Option<Instant>,
    /// How long that may last before the held records go anyway, in
    /// timestamp order, until the partitions can be compared again (the
    /// run must not hang on a partition that never answers).
    max_idle: Duration,
}

impl<R> TimestampOrder<R> {
    pub(crate) fn new(max_idle: Duration) -> Self {
        Self {
            held: BTreeMap::new(),
            blocked_since: None,
            max_idle,
        }
    }

    /// Holds `record` of `partition`; a partition's records must come in
    /// offset order.
    pub(crate) fn push(&mut self, partition: i32, timestamp_ms: i64, record: R) {
        self.held
            .entry(partition)
            .or_default()
            .push_back((timestamp_ms, record));
    }

    /// The next record to process at `now`: the held one with the
    /// smallest timestamp (the lowest partition on a tie), provided that
    /// each of `partitions` holds a record or has `lag` `Some(0)`; else,
    /// once that has not been so for `max_idle`, the same record anyway.
    /// `None` when nothing may go yet.
    pub(crate) fn pop(
        &mut self,
        partitions: impl IntoIterator<Item = i32>,
        lag: impl Fn(i32) -> Option<i64>,
        now: Instant,
    ) -> Option<R> {
        // An empty queue is removed at once, so a partition holds records
        // exactly when it has a key here.
        let Some((partition, _)) = self
            .held
            .iter()
            .filter_map(|(p, records)| records.front().map(|(t, _)| (*p, *t)))
            .min_by_key(|(p, t)| (*t, *p))
        else {
            self.blocked_since = None;
            return None;
        };
        let comparable = partitions
            .into_iter()
            .all(|p| self.held.contains_key(&p) || lag(p) == Some(0));
        if comparable {
            self.blocked_since = None;
        } else {
            // Past the bound the wait stays over: records keep going
            // until the partitions can be compared again, not one per
            // `max_idle`.
            let since = *self.blocked_since.get_or_insert(now);
            if now.saturating_duration_since(since) < self.max_idle {
                return None;
            }
        }
        let records = self.held.get_mut(&partition)?;
        let (_, record) = records.pop_front()?;
        if records.is_empty() {
            self.held.remove(&partition);
        }
        Some(record)
    }

    /// Every held record, in timestamp order (at stop: nothing is left
    /// unprocessed for want of a partition's answer).
    pub(crate) fn drain(&mut self) -> Vec<R> {
        let mut all: Vec<(i64, i32, R)> = std::mem::take(&mut self.held)
            .into_iter()
            .flat_map(|(p, records)| records.into_iter().map(move |(t, r)| (t, p, r)))
            .collect();
        all.sort_by_key(|(t, p, _)| (*t, *p));
        self.blocked_since = None;
        all.into_iter().map(|(_, _, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTITIONS: [i32; 3] = [0, 1, 2];

    fn order() -> TimestampOrder<&'static str> {
        TimestampOrder::new(Duration::from_secs(3600))
    }

    #[test]
    fn a_partition_with_nothing_held_and_unknown_lag_holds_the_others() {
        let mut order = order();
        order.push(1, 20, "p1 t20");
        order.push(2, 30, "p2 t30");
        assert_eq!(order.pop(PARTITIONS, |_| None, Instant::now()), None);
        // Partition 0 answers: records, older than the others'.
        order.push(0, 10, "p0 t10");
        order.push(0, 40, "p0 t40");
        let lag = |_| None;
        assert_eq!(order.pop(PARTITIONS, lag, Instant::now()), Some("p0 t10"));
        assert_eq!(order.pop(PARTITIONS, lag, Instant::now()), Some("p1 t20"));
        // Partition 1 has nothing held now, and its lag is unknown.
        assert_eq!(order.pop(PARTITIONS, lag, Instant::now()), None);
        assert_eq!(order.drain(), vec!["p2 t30", "p0 t40"]);
    }

    #[test]
    fn a_caught_up_partition_holds_nothing_back() {
        let mut order = order();
        order.push(1, 20, "p1 t20");
        order.push(2, 10, "p2 t10");
        let caught_up = |p| (p == 0).then_some(0);
        assert_eq!(
            order.pop(PARTITIONS, caught_up, Instant::now()),
            Some("p2 t10")
        );
        // Partition 2 is empty and not known to be caught up.
        assert_eq!(order.pop(PARTITIONS, caught_up, Instant::now()), None);
        assert_eq!(
            order.pop(PARTITIONS, |p| (p != 1).then_some(0), Instant::now()),
            Some("p1 t20")
        );
        assert_eq!(order.pop(PARTITIONS, |_| Some(0), Instant::now()), None);
    }

    #[test]
    fn a_lagging_partition_holds_the_others_until_the_idle_bound() {
        let mut order = TimestampOrder::new(Duration::ZERO);
        order.push(1, 20, "p1 t20");
        assert_eq!(
            order.pop(PARTITIONS, |_| Some(5), Instant::now()),
            Some("p1 t20")
        );
    }

    #[test]
    fn past_the_idle_bound_records_keep_going_until_the_partitions_are_comparable() {
        let mut order = TimestampOrder::new(Duration::from_secs(10));
        let start = Instant::now();
        let unknown = |_| None;
        order.push(1, 20, "p1 t20");
        order.push(1, 30, "p1 t30");
        order.push(2, 25, "p2 t25");
        assert_eq!(order.pop(PARTITIONS, unknown, start), None);
        let almost = start + Duration::from_secs(9);
        assert_eq!(order.pop(PARTITIONS, unknown, almost), None);
        let past = start + Duration::from_secs(10);
        assert_eq!(order.pop(PARTITIONS, unknown, past), Some("p1 t20"));
        assert_eq!(order.pop(PARTITIONS, unknown, past), Some("p2 t25"));
        assert_eq!(order.pop(PARTITIONS, unknown, past), Some("p1 t30"));
        // Comparable again: a later wait starts its own bound.
        order.push(1, 40, "p1 t40");
        assert_eq!(order.pop(PARTITIONS, |_| Some(0), past), Some("p1 t40"));
        order.push(1, 50, "p1 t50");
        let later = past + Duration::from_secs(1);
        assert_eq!(order.pop(PARTITIONS, unknown, later), None);
    }

    #[test]
    fn ties_go_to_the_lower_partition_and_drain_keeps_timestamp_order() {
        let mut order = order();
        order.push(2, 10, "p2 t10");
        order.push(1, 10, "p1 t10");
        order.push(1, 30, "p1 t30");
        order.push(0, 20, "p0 t20");
        assert_eq!(
            order.pop(PARTITIONS, |_| None, Instant::now()),
            Some("p1 t10")
        );
        assert_eq!(order.drain(), vec!["p2 t10", "p0 t20", "p1 t30"]);
        assert!(order.drain().is_empty());
    }
}
