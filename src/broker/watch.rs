//! The dropped-record watch of the embedded broker.
//!
//! librdkafka's mock cluster keeps at most 5 MiB or 100,000 record batches
//! per partition and deletes the oldest beyond that, without telling
//! anyone. It never deletes otherwise, so a partition whose log start
//! offset is above 0 has lost that many records. The watch asks for every
//! partition's log start now and then, and once more at shutdown, but only
//! once the front has relayed more Produce bytes than one partition can
//! keep: below 5 MiB in all, no partition can be over either limit (100,000
//! batches take more than 6 MB), so ordinary tests pay nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the watch looks. Each look is one metadata request and one
/// offsets request per partition.
const INTERVAL: Duration = Duration::from_millis(250);

/// The mock cluster's per-partition size limit: produce traffic below it,
/// summed over every partition, cannot have deleted anything.
pub(crate) const MOCK_PARTITION_BYTES: u64 = 5 * 1024 * 1024;

/// Whether deletions are possible yet: `None` when the produce traffic is
/// not counted (no front), so the watch always looks.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProduceGate(Option<Vec<Arc<AtomicU64>>>);

impl ProduceGate {
    pub(crate) fn counting(counters: Vec<Arc<AtomicU64>>) -> Self {
        Self((!counters.is_empty()).then_some(counters))
    }

    fn open(&self) -> bool {
        match &self.0 {
            None => true,
            Some(counters) => {
                counters
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .sum::<u64>()
                    >= MOCK_PARTITION_BYTES
            }
        }
    }
}

/// Records the broker deleted from one partition before anyone could be
/// sure to read them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeletedRecords {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// How many records are gone (offsets `0..count`).
    pub count: i64,
}

impl DeletedRecords {
    /// `topic/partition: count, …` for messages.
    pub(crate) fn list(all: &[Self]) -> String {
        all.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for DeletedRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records of topic {:?} partition {}",
            self.count, self.topic, self.partition
        )
    }
}

/// A background task polling log start offsets; stops when dropped.
#[derive(Debug)]
pub(crate) struct DeletionWatch {
    seen: watch::Receiver<Vec<DeletedRecords>>,
    sender: Arc<watch::Sender<Vec<DeletedRecords>>>,
    gate: ProduceGate,
    task: JoinHandle<()>,
}

impl DeletionWatch {
    /// Starts watching through the client `connect` makes (connected in
    /// the background, once the gate opens, so start-up does not wait).
    pub(crate) fn start<C>(connect: C, gate: ProduceGate, deadline: Duration) -> Self
    where
        C: Future<Output = Result<Client, rskafka::client::error::Error>> + Send + 'static,
    {
        let (sender, seen) = watch::channel(Vec::new());
        let sender = Arc::new(sender);
        let task = tokio::spawn(watch_loop(
            connect,
            gate.clone(),
            deadline,
            Arc::clone(&sender),
        ));
        Self {
            seen,
            sender,
            gate,
            task,
        }
    }

    /// Whether a look could find anything.
    pub(crate) fn may_have_deleted(&self) -> bool {
        self.gate.open()
    }

    /// What the watch has seen so far.
    pub(crate) fn seen(&self) -> Vec<DeletedRecords> {
        self.seen.borrow().clone()
    }

    /// A receiver told of every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Vec<DeletedRecords>> {
        self.seen.clone()
    }

    /// Looks once more now, through `client`, and returns everything seen.
    pub(crate) async fn check_now(
        &self,
        client: &Client,
        deadline: Duration,
    ) -> Result<Vec<DeletedRecords>, String> {
        let mut partitions = HashMap::new();
        let found = tokio::time::timeout(deadline, scan(client, &mut partitions))
            .await
            .map_err(|_| format!("no answer within {deadline:?}"))?
            .map_err(|e| e.to_string())?;
        publish(&self.sender, found);
        Ok(self.seen())
    }
}

impl Drop for DeletionWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch_loop<C>(
    connect: C,
    gate: ProduceGate,
    deadline: Duration,
    sender: Arc<watch::Sender<Vec<DeletedRecords>>>,
) where
    C: Future<Output = Result<Client, rskafka::client::error::Error>> + Send + 'static,
{
    let mut partitions = HashMap::new();
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connect = Some(connect);
    let mut client = None;
    loop {
        ticker.tick().await;
        if !gate.open() {
            continue;
        }
        if client.is_none() {
            match connect.take() {
                Some(connect) => match connect.await {
                    Ok(connected) => client = Some(connected),
                    // No client, no watch: shutdown's own look reports.
                    Err(_) => return,
                },
                None => return,
            }
        }
        let Some(client) = &client else { return };
        // A failed look (a fault test cutting connections, say) is retried
        // at the next tick; the final look at shutdown reports its error.
        if let Ok(Ok(found)) = tokio::time::timeout(deadline, scan(client, &mut partitions)).await {
            publish(&sender, found);
        }
    }
}

/// Merges `found` (log starts above 0) into what was seen, telling
/// receivers only when something grew.
fn publish(sender: &watch::Sender<Vec<DeletedRecords>>, found: BTreeMap<(String, i32), i64>) {
    sender.send_if_modified(|seen| {
        let mut changed = false;
        for ((topic, partition), count) in found {
            match seen
                .iter_mut()
                .find(|d| d.topic == topic && d.partition == partition)
            {
                Some(known) if known.count >= count => {}
                Some(known) => {
                    known.count = count;
                    changed = true;
                }
                None => {
                    seen.push(DeletedRecords {
                        topic,
                        partition,
                        count,
                    });
                    changed = true;
                }
            }
        }
        changed
    });
}

/// Every partition's log start offset that is above 0.
async fn scan(
    client: &Client,
    partitions: &mut HashMap<(String, i32), PartitionClient>,
) -> Result<BTreeMap<(String, i32), i64>, rskafka::client::error::Error> {
    let mut found = BTreeMap::new();
    for topic in client.list_topics().await? {
        for &partition in &topic.partitions {
            let key = (topic.name.clone(), partition);
            if !partitions.contains_key(&key) {
                let pc = client
                    .partition_client(topic.name.as_str(), partition, UnknownTopicHandling::Error)
                    .await?;
                partitions.insert(key.clone(), pc);
            }
            let log_start = partitions[&key].get_offset(OffsetAt::Earliest).await?;
            if log_start > 0 {
                found.insert(key, log_start);
            }
        }
    }
    Ok(found)
}
