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

/// rskafka's calls, each erased here, in code that is not generic: a
/// generic caller (a producer or consumer over any tracer) is compiled in
/// the crate that uses it, and would erase the future there, after
/// computing its layout against that crate's limit.
pub(crate) mod rskafka_calls {
    use std::ops::Range;

    use rskafka::client::Client;
    use rskafka::client::error::Error;
    use rskafka::client::partition::{
        Compression, OffsetAt, PartitionClient, UnknownTopicHandling,
    };
    use rskafka::record::{Record, RecordAndOffset};
    use rskafka::topic::Topic;

    use super::{Shallow, shallow};

    pub(crate) fn list_topics(client: &Client) -> Shallow<'_, Result<Vec<Topic>, Error>> {
        shallow(client.list_topics())
    }

    pub(crate) fn partition_client<'a>(
        client: &'a Client,
        topic: &'a str,
        partition: i32,
        unknown_topic: UnknownTopicHandling,
    ) -> Shallow<'a, Result<PartitionClient, Error>> {
        shallow(client.partition_client(topic, partition, unknown_topic))
    }

    pub(crate) fn get_offset(
        client: &PartitionClient,
        at: OffsetAt,
    ) -> Shallow<'_, Result<i64, Error>> {
        shallow(client.get_offset(at))
    }

    pub(crate) fn fetch_records(
        client: &PartitionClient,
        offset: i64,
        bytes: Range<i32>,
        max_wait_ms: i32,
    ) -> Shallow<'_, Result<(Vec<RecordAndOffset>, i64), Error>> {
        shallow(client.fetch_records(offset, bytes, max_wait_ms))
    }

    pub(crate) fn produce(
        client: &PartitionClient,
        records: Vec<Record>,
        compression: Compression,
    ) -> Shallow<'_, Result<Vec<i64>, Error>> {
        shallow(client.produce(records, compression))
    }
}
