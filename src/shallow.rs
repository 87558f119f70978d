//! Futures the harness returns stay shallow for the code that awaits them.
//!
//! rustc and clippy compute the layout of every future a function awaits,
//! nested, and count the nesting against the awaiting crate's recursion
//! limit (128 by default). rskafka's and testcontainers' futures are deep;
//! held inline, they made a user's plain `async fn` that started a broker
//! and polled a consumer overflow it under clippy. A boxed future whose
//! type is erased ends the chain: the awaiting crate sees a pointer.
//! `tests/future_depth.rs` holds the line.

use std::future::Future;
use std::pin::Pin;

/// A boxed, type-erased, `Send` future.
pub(crate) type Shallow<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `future` behind a pointer, its type erased (one allocation per call:
/// used where a call does network work anyway).
pub(crate) fn shallow<'a, T>(future: impl Future<Output = T> + Send + 'a) -> Shallow<'a, T> {
    Box::pin(future)
}

/// [`shallow`] for a future that is not `Send` (it holds the mock
/// cluster's handle, or a caller's closure, across an await).
pub(crate) fn shallow_local<'a, T>(
    future: impl Future<Output = T> + 'a,
) -> Pin<Box<dyn Future<Output = T> + 'a>> {
    Box::pin(future)
}
