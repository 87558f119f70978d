//! Outputs sent but not yet acknowledged: what lets a service read its next
//! input while the broker stores the last one's output.

use std::future::Future;

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::stockapp::error::Result;

/// Acknowledgements a service waits for, each resolving to the counts of
/// the work it settles (the consumed record is finished, so committed,
/// inside the future, once its outputs are stored: at-least-once).
///
/// Bounded: past `limit` pending, [`settle`](Self::settle) waits, so a slow
/// broker slows the service instead of growing its memory.
pub(crate) struct InFlight<T> {
    pending: FuturesUnordered<BoxFuture<'static, Result<T>>>,
    limit: usize,
}

impl<T> InFlight<T> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            pending: FuturesUnordered::new(),
            limit: limit.max(1),
        }
    }

    pub(crate) fn push(&mut self, settled: impl Future<Output = Result<T>> + Send + 'static) {
        self.pending.push(settled.boxed());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
    }

    /// Everything already acknowledged, without waiting; then waits while
    /// more than the limit are pending. The first failed output fails the
    /// service (its record stays uncommitted).
    pub(crate) async fn settle(&mut self) -> Result<Vec<T>> {
        let mut done = Vec::new();
        while let Some(Some(result)) = self.pending.next().now_or_never() {
            done.push(result?);
        }
        while self.pending.len() > self.limit {
            match self.pending.next().await {
                Some(result) => done.push(result?),
                None => break,
            }
        }
        Ok(done)
    }

    /// Waits for every pending output (each has its producer's deadline).
    pub(crate) async fn drain(&mut self) -> Result<Vec<T>> {
        let mut done = Vec::new();
        while let Some(result) = self.pending.next().await {
            done.push(result?);
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
        assert!(in_flight.settle().await.expect("nothing failed").is_empty());
        in_flight.push(async move { Ok(second_rx.await.unwrap_or(0)) });
        first_tx.send(1).expect("receiver alive");
        // Two pending, limit one: settle waits for one of them.
        assert_eq!(in_flight.settle().await.expect("nothing failed"), vec![1]);
        assert_eq!(in_flight.len(), 1);
        second_tx.send(2).expect("receiver alive");
        assert_eq!(in_flight.drain().await.expect("nothing failed"), vec![2]);
    }

    #[tokio::test]
    async fn a_failed_output_fails_the_settle() {
        let mut in_flight: InFlight<u32> = InFlight::new(8);
        in_flight.push(async { Err(crate::stockapp::error::Error::Pipeline("not stored".into())) });
        let error = in_flight.drain().await.expect_err("the output failed");
        assert!(error.to_string().contains("not stored"), "{error}");
    }
}
