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
//!
//! A look reads every partition even when some fail; what it could not
//! read, and why (or that it cannot connect), is kept as the watch's
//! problem until a look sees every partition again, and fails the final
//! look at shutdown. Every request has the client deadline.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::DeletedRecords;

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

/// A background task polling log start offsets; stops when dropped.
#[derive(Debug)]
pub(crate) struct DeletionWatch {
    seen: watch::Receiver<Vec<DeletedRecords>>,
    sender: Arc<watch::Sender<Vec<DeletedRecords>>>,
    problem: watch::Receiver<Option<String>>,
    gate: ProduceGate,
    task: JoinHandle<()>,
}

impl DeletionWatch {
    /// Starts watching through a client `connect` makes (connected in the
    /// background, once the gate opens, so start-up does not wait; and
    /// again at the next look while connecting fails).
    pub(crate) fn start<C, F>(connect: C, gate: ProduceGate, deadline: Duration) -> Self
    where
        C: Fn() -> F + Send + 'static,
        F: Future<Output = Result<Client, rskafka::client::error::Error>> + Send + 'static,
    {
        let (sender, seen) = watch::channel(Vec::new());
        let sender = Arc::new(sender);
        let (problem_sender, problem) = watch::channel(None);
        let task = tokio::spawn(watch_loop(
            connect,
            gate.clone(),
            deadline,
            Arc::clone(&sender),
            problem_sender,
        ));
        Self {
            seen,
            sender,
            problem,
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

    /// Why the watch's last look failed (it could not connect, or some
    /// partition did not answer); `None` once a look saw every partition.
    pub(crate) fn problem(&self) -> Option<String> {
        self.problem.borrow().clone()
    }

    /// A receiver told whenever the watch starts or stops failing.
    pub(crate) fn subscribe_problem(&self) -> watch::Receiver<Option<String>> {
        self.problem.clone()
    }

    /// Looks once more now, through `client`, and returns everything seen;
    /// fails naming every partition it could not look at, and why.
    pub(crate) async fn check_now(
        &self,
        client: &Client,
        deadline: Duration,
    ) -> Result<Vec<DeletedRecords>, String> {
        let mut partitions = HashMap::new();
        let look = scan(client, &mut partitions, Instant::now() + deadline).await;
        publish(&self.sender, look.found);
        match look.failures.is_empty() {
            true => Ok(self.seen()),
            false => Err(look.failures.join("; ")),
        }
    }
}

impl Drop for DeletionWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch_loop<C, F>(
    connect: C,
    gate: ProduceGate,
    deadline: Duration,
    sender: Arc<watch::Sender<Vec<DeletedRecords>>>,
    problem: watch::Sender<Option<String>>,
) where
    C: Fn() -> F + Send + 'static,
    F: Future<Output = Result<Client, rskafka::client::error::Error>> + Send + 'static,
{
    let report = |now: Option<String>| {
        problem.send_if_modified(|was| {
            let changed = *was != now;
            *was = now;
            changed
        });
    };
    let mut partitions = HashMap::new();
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    loop {
        ticker.tick().await;
        if !gate.open() {
            continue;
        }
        let connected = match &client {
            Some(connected) => connected,
            // Not connected: say so, and try again at the next look.
            None => match tokio::time::timeout(deadline, connect()).await {
                Ok(Ok(connected)) => client.insert(connected),
                Ok(Err(e)) => {
                    report(Some(format!("cannot connect to the broker: {e}")));
                    continue;
                }
                Err(_) => {
                    report(Some(format!(
                        "cannot connect to the broker: no answer within {deadline:?}"
                    )));
                    continue;
                }
            },
        };
        // A failed look (a fault test cutting connections, say) is
        // reported, and tried again at the next tick; the final look at
        // shutdown fails on it.
        let look = scan(connected, &mut partitions, Instant::now() + deadline).await;
        publish(&sender, look.found);
        report((!look.failures.is_empty()).then(|| look.failures.join("; ")));
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

/// What one look found: every log start above 0 it could read, and each
/// topic or partition it could not, with why.
#[derive(Debug, Default)]
struct Look {
    found: BTreeMap<(String, i32), i64>,
    failures: Vec<String>,
}

/// `work`, failing with what it was (`what`) once `until` has passed.
async fn bounded<T>(
    until: Instant,
    what: impl FnOnce() -> String,
    work: impl Future<Output = Result<T, rskafka::client::error::Error>>,
) -> Result<T, String> {
    let left = until.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{}: {e}", what())),
        Err(_) => Err(format!("{}: no answer in time", what())),
    }
}

/// Every partition's log start offset that is above 0, looking at every
/// partition even when some fail, all by `until`.
async fn scan(
    client: &Client,
    partitions: &mut HashMap<(String, i32), PartitionClient>,
    until: Instant,
) -> Look {
    let mut look = Look::default();
    let topics = match bounded(until, || "listing the topics".into(), client.list_topics()).await {
        Ok(topics) => topics,
        Err(failure) => {
            look.failures.push(failure);
            return look;
        }
    };
    for topic in topics {
        for &partition in &topic.partitions {
            let key = (topic.name.clone(), partition);
            let name = || format!("topic {:?} partition {partition}", topic.name);
            if !partitions.contains_key(&key) {
                let connect = client.partition_client(
                    topic.name.as_str(),
                    partition,
                    UnknownTopicHandling::Error,
                );
                match bounded(until, || format!("connecting to {}", name()), connect).await {
                    Ok(pc) => partitions.insert(key.clone(), pc),
                    Err(failure) => {
                        look.failures.push(failure);
                        continue;
                    }
                };
            }
            let log_start = partitions[&key].get_offset(OffsetAt::Earliest);
            match bounded(
                until,
                || format!("reading the log start of {}", name()),
                log_start,
            )
            .await
            {
                Ok(log_start) if log_start > 0 => {
                    look.found.insert(key, log_start);
                }
                Ok(_) => {}
                Err(failure) => look.failures.push(failure),
            }
        }
    }
    look
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use rskafka::client::ClientBuilder;

    use super::*;

    #[tokio::test]
    async fn a_watch_that_cannot_connect_says_so_and_keeps_trying() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&attempts);
        // Nothing listens on port 1: every connection is refused.
        let connect = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            ClientBuilder::new(vec!["127.0.0.1:1".to_owned()])
                .backoff_config(crate::broker::retrying_backoff(Duration::from_millis(50)))
                .build()
        };
        // No produce counters: the gate is open from the start.
        let watch = DeletionWatch::start(connect, ProduceGate::default(), Duration::from_secs(1));
        let mut problem = watch.subscribe_problem();
        let told = tokio::time::timeout(Duration::from_secs(30), async {
            problem.wait_for(Option::is_some).await.map(|p| p.clone())
        })
        .await
        .expect("the watch tells within the deadline")
        .expect("the watch is alive");
        let told = told.unwrap_or_default();
        assert!(told.starts_with("cannot connect to the broker"), "{told}");
        assert_eq!(watch.problem(), Some(told));
        // It does not give up: every look tries again.
        let retried = tokio::time::timeout(Duration::from_secs(30), async {
            while attempts.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(INTERVAL).await;
            }
        });
        assert!(retried.await.is_ok(), "the watch stopped trying to connect");
    }
}
