//! Two "honest baselines" of the embedded broker for the stockapp's trades:
//! the same records produced in batches and consumed back, once with
//! rskafka's `BatchProducer` and once with rdkafka's `FutureProducer` with
//! a linger, each on a fresh topic. No tracing, no headers, no pipeline:
//! what the stockapp pipeline's throughput is compared against.
//!
//! Include it from a bench with
//! `#[path = "support/raw_batched.rs"] mod raw_batched;` (no criterion in
//! here). Both runs time produce + consume only: topic, clients and
//! connections are set up first and torn down after.
//!
//! Size: the embedded broker (librdkafka's mock cluster) deletes a
//! partition's oldest records past 5 MiB. A trade record is under 100
//! bytes, so keep a run at or below 100k records (over 3 partitions); a run
//! that lost records fails its fetch loop instead of reporting a figure.

// A bench that includes this module for only some of its functions must
// not fail `clippy -D warnings` on the others.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, try_join_all};
use kafka_trace_harness::stockapp::{AvroRecord, Datagen, SchemaRegistry, TRADES_TOPIC};
use kafka_trace_harness::traced::partitioner::partition_for_key;
use kafka_trace_harness::{Broker, unique_topic_name};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::producer::BatchProducerBuilder;
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::record::Record;
use tokio::time::Instant;

/// Every wait of a run (setup, produce, consume) must end before this much
/// time from the run's start; past it the run panics naming the wait.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The datagen seed: the one `benches/pipeline.rs` uses, so both see the
/// same trades.
pub const SEED: u64 = 1;

/// The linger of both producers: long enough that every record of a run is
/// queued before the first batch goes, short enough not to dominate 1k
/// records.
pub const LINGER: Duration = Duration::from_millis(5);

/// rskafka's aggregator flushes a batch at this many bytes (librdkafka's
/// own `batch.size` default is about the same, 1,000,000).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Fetch up to this many bytes per request (Kafka's default `fetch.max.bytes`).
const FETCH_MAX_BYTES: i32 = 52_428_800;

/// Every record is produced before the fetches start, so a fetch only
/// waits on a partition that has nothing left, which the loop never asks.
const FETCH_MAX_WAIT_MS: i32 = 10;

/// The stockapp's trade records as datagen makes them: Avro values through
/// the registry, key = symbol, partition by murmur2, no headers, as
/// `(partition, Record)` pairs. Built once per bench, outside any timing,
/// so that both baselines move byte for byte what the pipeline's datagen
/// produces.
pub fn trade_records(count: usize, partitions: i32) -> Vec<(i32, Record)> {
    let registry = SchemaRegistry::new();
    let now = chrono::Utc::now();
    Datagen::builder()
        .seed(SEED)
        .trades(count)
        .build()
        .trades()
        .map(|trade| {
            let value = registry.encode_value(TRADES_TOPIC, &trade).expect("avro");
            let key = trade.key().as_bytes().to_vec();
            let partition = partition_for_key(&key, partitions);
            let record = Record {
                key: Some(key),
                value: Some(value),
                headers: Default::default(),
                timestamp: now,
            };
            (partition, record)
        })
        .collect()
}

/// rskafka's `BatchProducer` (linger [`LINGER`], a `RecordAggregator` of
/// [`MAX_BATCH_BYTES`]) per partition: every record produced concurrently
/// (all futures awaited together, so batches fill as a busy producer's
/// would), then read back with plain `PartitionClient` fetch loops, all
/// partitions at once, until every record has been read. Returns the wall
/// time of produce + consume; topic and connections are set up before.
/// `topic` is the prefix of the fresh topic's name (see [`setup_topic`]).
pub async fn rskafka_batched(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    records: &[(i32, Record)],
) -> Duration {
    let deadline = Instant::now() + DEADLINE;
    let topic = setup_topic(broker, topic, partitions, deadline).await;
    let expected = per_partition(records, partitions);
    let client = within(
        deadline,
        || format!("an rskafka client of {topic}"),
        broker.client(),
    )
    .await
    .expect("rskafka client");
    let mut clients = Vec::new();
    for partition in 0..partitions {
        let connect =
            client.partition_client(topic.as_str(), partition, UnknownTopicHandling::Retry);
        let what = || format!("the partition client of {topic}/{partition}");
        clients.push(Arc::new(
            within(deadline, what, connect)
                .await
                .expect("partition client"),
        ));
    }
    let producers: Vec<_> = clients
        .iter()
        .map(|client| {
            BatchProducerBuilder::new(Arc::clone(client))
                .with_linger(LINGER)
                .build(RecordAggregator::new(MAX_BATCH_BYTES))
        })
        .collect();
    // `produce` takes the record by value: cloned here, not on the clock,
    // as rdkafka borrows its input.
    let owned: Vec<(usize, Record)> = records
        .iter()
        .map(|(partition, record)| (*partition as usize, record.clone()))
        .collect();

    let started = Instant::now();
    let sends = owned
        .into_iter()
        .map(|(partition, record)| producers[partition].produce(record));
    let what = || format!("rskafka producing {} records to {topic}", records.len());
    within(deadline, what, try_join_all(sends))
        .await
        .unwrap_or_else(|e| panic!("rskafka produce to {topic}: {e}"));
    let fetches = clients
        .iter()
        .zip(&expected)
        .enumerate()
        .map(|(partition, (client, &count))| fetch_all(client, &topic, partition, count, deadline));
    let fetched: usize = join_all(fetches).await.into_iter().sum();
    let elapsed = started.elapsed();

    assert_eq!(fetched, records.len(), "records read back from {topic}");
    elapsed
}

/// Fetches `partition` from offset 0 until `count` records are read. The
/// mock cluster answers a fetch with one record batch per partition, so
/// the loop goes on from the next offset; a batch may start before the
/// offset asked for, and its earlier records are skipped.
async fn fetch_all(
    client: &PartitionClient,
    topic: &str,
    partition: usize,
    count: usize,
    deadline: Instant,
) -> usize {
    let (mut next, mut read) = (0_i64, 0_usize);
    while read < count {
        let what = move || format!("fetching {topic}/{partition}: {read} of {count} records read");
        let (batch, _high_watermark) = within(
            deadline,
            what,
            client.fetch_records(next, 1..FETCH_MAX_BYTES, FETCH_MAX_WAIT_MS),
        )
        .await
        .unwrap_or_else(|e| panic!("fetch {topic}/{partition} at offset {next}: {e}"));
        let from = next;
        for record in batch.iter().filter(|r| r.offset >= from) {
            next = next.max(record.offset + 1);
            read += 1;
        }
    }
    read
}

/// rdkafka's `FutureProducer` with `linger.ms` [`LINGER`] and `acks=all`
/// (librdkafka's defaults otherwise, as a service would have it): every
/// record sent at once to its partition, all delivery reports awaited;
/// then a `StreamConsumer` assigned every partition from the beginning
/// reads until every record is in. Returns the wall time of produce +
/// consume; topic, clients and their connections are set up before.
/// `topic` is the prefix of the fresh topic's name (see [`setup_topic`]).
pub async fn rdkafka_linger(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    records: &[(i32, Record)],
) -> Duration {
    let deadline = Instant::now() + DEADLINE;
    let topic = setup_topic(broker, topic, partitions, deadline).await;
    let expected = per_partition(records, partitions);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("linger.ms", LINGER.as_millis().to_string())
        .set("acks", "all")
        .create()
        .expect("rdkafka producer");
    // librdkafka's assign needs a group id, though the partitions are
    // assigned and nothing joins the group: a fresh one, that never commits.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", unique_topic_name("raw-rdkafka"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("rdkafka consumer");
    // Both clients connect before the clock starts, as rskafka's do.
    let (producer, consumer) = {
        let name = topic.clone();
        let connect = tokio::task::spawn_blocking(move || {
            let wait = Timeout::After(DEADLINE);
            producer
                .client()
                .fetch_metadata(Some(&name), wait)
                .unwrap_or_else(|e| panic!("rdkafka producer: metadata of {name}: {e}"));
            consumer
                .fetch_metadata(Some(&name), wait)
                .unwrap_or_else(|e| panic!("rdkafka consumer: metadata of {name}: {e}"));
            (producer, consumer)
        });
        let what = || format!("rdkafka clients connecting to {topic}");
        within(deadline, what, connect).await.expect("connect task")
    };
    let mut assignment = TopicPartitionList::with_capacity(partitions as usize);
    for partition in 0..partitions {
        assignment
            .add_partition_offset(&topic, partition, Offset::Beginning)
            .expect("assignment");
    }

    let started = Instant::now();
    let sends = records.iter().map(|(partition, record)| {
        let mut message = FutureRecord::<[u8], [u8]>::to(&topic)
            .partition(*partition)
            .timestamp(record.timestamp.timestamp_millis());
        if let Some(key) = &record.key {
            message = message.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            message = message.payload(value.as_slice());
        }
        // Waits (async) while librdkafka's queue is full, never past the deadline.
        producer.send(message, Timeout::After(DEADLINE))
    });
    let what = || {
        format!(
            "rdkafka delivery reports of {} records to {topic}",
            records.len()
        )
    };
    for report in within(deadline, what, join_all(sends)).await {
        if let Err((e, _)) = report {
            panic!("rdkafka produce to {topic}: {e}");
        }
    }
    // librdkafka's default `fetch.wait.max.ms` (500) stays: about one run
    // in 30 shows it as a ~500 ms stall of this read, so report medians.
    consumer.assign(&assignment).expect("assign");
    let mut read = vec![0_usize; expected.len()];
    let mut next = vec![0_i64; expected.len()];
    let mut total = 0;
    while total < records.len() {
        let what = || {
            format!(
                "rdkafka consuming {topic}: {read:?} of {expected:?} records read per partition"
            )
        };
        let message = within(deadline, what, consumer.recv())
            .await
            .unwrap_or_else(|e| panic!("rdkafka consume {topic}: {e}"));
        let partition = message.partition() as usize;
        // Only new offsets count, should librdkafka ever hand one twice.
        if message.offset() >= next[partition] {
            next[partition] = message.offset() + 1;
            read[partition] += 1;
            total += 1;
        }
    }
    let elapsed = started.elapsed();

    assert_eq!(
        read, expected,
        "records read back from {topic} per partition"
    );
    // Closing librdkafka clients blocks: off the async workers.
    tokio::task::spawn_blocking(move || drop((producer, consumer)))
        .await
        .expect("close rdkafka clients");
    elapsed
}

/// Creates `topic` with `partitions` partitions under a name no other run
/// uses (`topic` is its prefix), so runs on one broker never share records.
async fn setup_topic(broker: &Broker, topic: &str, partitions: i32, deadline: Instant) -> String {
    let count = u16::try_from(partitions).expect("partitions between 1 and 65535");
    let create = broker.create_unique_topic(topic, count);
    within(deadline, || format!("creating a topic {topic}-*"), create)
        .await
        .unwrap_or_else(|e| panic!("create topic {topic}-*: {e}"))
}

/// Records per partition: what each partition's reader waits for.
fn per_partition(records: &[(i32, Record)], partitions: i32) -> Vec<usize> {
    let mut counts = vec![0; partitions as usize];
    for (partition, _) in records {
        counts[*partition as usize] += 1;
    }
    counts
}

/// `work`'s output, or a panic naming `what` if it is not done by
/// `deadline`: a bench must fail, not hang. `what` is only formatted then.
async fn within<T>(
    deadline: Instant,
    what: impl FnOnce() -> String,
    work: impl Future<Output = T>,
) -> T {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(output) => output,
        Err(_) => panic!("{} not done within {DEADLINE:?}", what()),
    }
}
