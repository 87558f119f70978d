//! A connection cut while a member's JoinGroup waits for the rest of its
//! group loses neither member: both rejoin, with their member ids, on new
//! connections, and the group forms again.
//!
//! When librdkafka's mock coordinated groups, the same cut aborted the
//! process: the mock still held the old join when the member rejoined on
//! a new connection, and failed its assertion
//! `rd_kafka_mock_cgrp_classic_member_add: !member->resp` (found by
//! `tests/chaos.rs`). The fronts now coordinate groups themselves; a
//! waiting join whose connection is gone is replaced by the member's next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kafka_trace_harness::Broker;
use kafka_trace_harness::broker::{ApiKey, ErrorCode};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{ClientContext, Statistics};

/// Bound of every wait here.
const DEADLINE: Duration = Duration::from_secs(30);
const SESSION: Duration = Duration::from_secs(25);
const HEARTBEAT: Duration = Duration::from_millis(100);
/// Heartbeats answered "no error" while the second member's join waits:
/// more than the first member sends within [`DEADLINE`].
const UNAWARE_HEARTBEATS: usize = 100_000;

/// Keeps the consumer's group join state from its statistics.
#[derive(Default)]
struct JoinState(Mutex<String>);

impl ClientContext for JoinState {
    fn stats(&self, statistics: Statistics) {
        if let Some(group) = statistics.cgrp {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = group.join_state;
        }
    }
}

impl ConsumerContext for JoinState {}

/// A librdkafka group member polled on a thread of its own until dropped.
struct Member {
    consumer: Arc<BaseConsumer<JoinState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(broker: &Broker, group: &str, topic: &str, heartbeat: Duration) -> Self {
        let consumer: BaseConsumer<JoinState> = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("group.id", group)
            .set("session.timeout.ms", SESSION.as_millis().to_string())
            .set("heartbeat.interval.ms", heartbeat.as_millis().to_string())
            .set("statistics.interval.ms", "20")
            .set("reconnect.backoff.max.ms", "200")
            .set("log_level", "0")
            .create_with_context(JoinState::default())
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (consumer, stop) = (Arc::clone(&consumer), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = consumer.poll(Duration::from_millis(20));
                }
            })
        };
        Self {
            consumer,
            stop,
            thread: Some(thread),
        }
    }

    fn join_state(&self) -> String {
        self.consumer
            .context()
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn assigned(&self) -> bool {
        self.consumer.assignment().is_ok_and(|a| a.count() > 0)
    }

    /// Stops polling; the consumer leaves its group when the last `Arc`
    /// goes, which blocks (hence a blocking task).
    async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take();
        tokio::task::spawn_blocking(move || {
            if let Some(thread) = thread {
                thread.join().expect("poll thread");
            }
            drop(self);
        })
        .await
        .expect("closing the consumer");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits for `done` within [`DEADLINE`]; panics naming `what`.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// Two workers: closing a librdkafka consumer blocks its thread while it
// leaves the group, through the broker's front, which runs on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_while_a_join_waits_loses_no_member() {
    let broker = Broker::start().await.expect("broker");
    let topic = broker
        .create_unique_topic("held-join", 1)
        .await
        .expect("topic");
    let group = format!("{topic}-group");
    let first = Member::start(&broker, &group, &topic, HEARTBEAT);
    wait_for("the first member gets the partition", || first.assigned()).await;
    // A second member makes the group rebalance: its join waits until the
    // first member learns of it from a heartbeat and rejoins. Until the cut,
    // the first member's heartbeats are answered "no error", so the join
    // surely still waits when the cut comes.
    broker
        .request_errors(ApiKey::Heartbeat, ErrorCode::NoError, UNAWARE_HEARTBEATS)
        .expect("heartbeat answers");
    let second = Member::start(&broker, &group, &topic, HEARTBEAT);
    wait_for("the second member waits for its JoinGroup answer", || {
        second.join_state() == "wait-join"
    })
    .await;
    broker.cut_connections().expect("cut");
    broker
        .clear_request_errors(ApiKey::Heartbeat)
        .expect("heartbeats answered again");
    // Both rejoin, with their member ids, on new connections, and the
    // group forms again.
    wait_for("the group forms again after the cut", || {
        first.join_state() == "steady"
            && second.join_state() == "steady"
            && (first.assigned() || second.assigned())
    })
    .await;
    first.stop().await;
    second.stop().await;
    broker.shutdown().await.expect("shutdown");
}
