//! Outputs sent but not yet acknowledged: what lets a service read its next
//! input while the broker stores the last one's output.

use std::collections::VecDeque;
use std::future::Future;

use futures::FutureExt as _;
use futures::future::BoxFuture;

use crate::stockapp::error::Result;

/// Acknowledgements a service waits for, each resolving to the counts of
/// the work it settles, summed as they settle (the consumed record is finished, so committed,
/// inside the future, once its outputs are stored: at-least-once).
///
/// Settled oldest first: a partition's batches are acknowledged in order,
/// so the oldest is nearly always the next done, and a plain queue polled
/// from its front costs less per record than a `FuturesUnordered` (no
/// task allocation or wake-up per future). Bounded: past `limit` pending,
/// [`settle`](Self::settle) waits, so a slow broker slows the service
/// instead of growing its memory.
pub(crate) struct InFlight<T> {
    pending: VecDeque<BoxFuture<'static, Result<T>>>,
    limit: usize,
}

impl<T: Default + std::ops::AddAssign> InFlight<T> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            pending: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    pub(crate) fn push(&mut self, settled: impl Future<Output = Result<T>> + Send + 'static) {
        self.pending.push_back(settled.boxed());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
    }

    /// Everything already acknowledged at the front of the queue, without
    /// waiting; then waits while more than the limit are pending. The first
    /// failed output fails the service (its record stays uncommitted).
    pub(crate) async fn settle(&mut self) -> Result<T> {
        let mut done = T::default();
        while let Some(front) = self.pending.front_mut() {
            match front.as_mut().now_or_never() {
                Some(result) => {
                    self.pending.pop_front();
                    done += result?;
                }
                None => break,
            }
        }
        while self.pending.len() > self.limit {
            if let Some(front) = self.pending.pop_front() {
                done += front.await?;
            }
        }
        Ok(done)
    }

    /// Waits until the oldest pending output settles (for ever while none
    /// is pending), then takes it and every other one already settled.
    /// Cancel-safe: an output is taken only once settled, so a service can
    /// race this against a long poll, and count what settles while it
    /// waits for records.
    pub(crate) async fn settled(&mut self) -> Result<T> {
        let Some(front) = self.pending.front_mut() else {
            return std::future::pending().await;
        };
        let first = front.as_mut().await;
        self.pending.pop_front();
        let mut done = first?;
        done += self.settle().await?;
        Ok(done)
    }

    /// Waits for every pending output (each has its producer's deadline).
    pub(crate) async fn drain(&mut self) -> Result<T> {
        let mut done = T::default();
        while let Some(front) = self.pending.pop_front() {
            done += front.await?;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn settle_takes_what_is_done_and_waits_only_past_the_limit() {
        let mut in_flight = InFlight::new(1);
        let (first_tx, first_rx) = oneshot::channel::<u32>();
        let (second_tx, second_rx) = oneshot::channel::<u32>();
        in_flight.push(async move { Ok(first_rx.await.unwrap_or(0)) });
        assert_eq!(in_flight.settle().await.expect("nothing failed"), 0);
        in_flight.push(async move { Ok(second_rx.await.unwrap_or(0)) });
        first_tx.send(1).expect("receiver alive");
        // Two pending, limit one: settle takes the done one; then one is
        // left, within the limit.
        assert_eq!(in_flight.settle().await.expect("nothing failed"), 1);
        assert_eq!(in_flight.len(), 1);
        second_tx.send(2).expect("receiver alive");
        assert_eq!(in_flight.drain().await.expect("nothing failed"), 2);
    }

    #[tokio::test]
    async fn past_the_limit_settle_waits_for_the_oldest() {
        let mut in_flight = InFlight::new(1);
        let (first_tx, first_rx) = oneshot::channel::<u32>();
        let (_second_tx, second_rx) = oneshot::channel::<u32>();
        in_flight.push(async move { Ok(first_rx.await.unwrap_or(0)) });
        in_flight.push(async move { Ok(second_rx.await.unwrap_or(0)) });
        let mut settle = Box::pin(in_flight.settle());
        assert!(
            settle.as_mut().now_or_never().is_none(),
            "two pending, limit one"
        );
        first_tx.send(1).expect("receiver alive");
        assert_eq!(settle.await.expect("nothing failed"), 1);
        assert_eq!(in_flight.len(), 1);
    }

    #[tokio::test]
    async fn settled_waits_for_the_oldest_and_a_cancelled_wait_keeps_it() {
        let mut in_flight = InFlight::new(8);
        let (first_tx, first_rx) = oneshot::channel::<u32>();
        in_flight.push(async move { Ok(first_rx.await.unwrap_or(0)) });
        in_flight.push(std::future::ready(Ok(2)));
        assert!(
            Box::pin(in_flight.settled())
                .as_mut()
                .now_or_never()
                .is_none(),
            "the oldest is not settled"
        );
        assert_eq!(in_flight.len(), 2, "a cancelled wait takes nothing");
        first_tx.send(1).expect("receiver alive");
        assert_eq!(in_flight.settled().await.expect("nothing failed"), 3);
        assert_eq!(in_flight.len(), 0);
        let idle = tokio::time::timeout(std::time::Duration::from_millis(10), in_flight.settled());
        assert!(idle.await.is_err(), "nothing pending: it waits");
    }

    #[tokio::test]
    async fn a_failed_output_fails_the_settle() {
        let mut in_flight: InFlight<u32> = InFlight::new(8);
        in_flight.push(async { Err(crate::stockapp::error::Error::Pipeline("not stored".into())) });
        let error = in_flight.drain().await.expect_err("the output failed");
        assert!(error.to_string().contains("not stored"), "{error}");
    }
}
