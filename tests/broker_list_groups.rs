//! The embedded broker lists and describes its consumer groups (ListGroups
//! and DescribeGroups, as `kafka-consumer-groups --list` and `--describe`
//! ask them), although librdkafka's mock cluster answers neither: a group
//! that joined, and one that only committed offsets.

use std::time::{Duration, Instant};

use chrono::Utc;
use kafka_trace_harness::Broker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::groups::GroupList;
use rdkafka::{Offset, TopicPartitionList};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

/// What one request or one wait may take.
const DEADLINE: Duration = Duration::from_secs(10);

fn client(bootstrap: &str, group: Option<&str>) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("client.id", "list-groups-test")
        .set("log_level", "0");
    if let Some(group) = group {
        config.set("group.id", group);
    }
    config.create().expect("client")
}

fn groups(admin: &BaseConsumer) -> GroupList {
    admin
        .fetch_group_list(None, DEADLINE)
        .expect("the broker lists its groups")
}

/// The (state, protocol type, members) of `group` as listed, if it is.
fn listed(list: &GroupList, group: &str) -> Option<(String, String, usize)> {
    list.groups().iter().find(|g| g.name() == group).map(|g| {
        (
            g.state().to_owned(),
            g.protocol_type().to_owned(),
            g.members().len(),
        )
    })
}

// Two workers: librdkafka calls block their thread while the broker's
// front, on this runtime, answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_and_committing_groups_are_listed_with_state_and_members() {
    let broker = Broker::start().await.expect("broker");
    let topic = broker
        .create_unique_topic("listed", 1)
        .await
        .expect("topic");
    broker
        .client()
        .await
        .expect("client")
        .partition_client(&topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client")
        .produce(
            vec![Record {
                key: None,
                value: Some(b"row".to_vec()),
                headers: Default::default(),
                timestamp: Utc::now(),
            }],
            Compression::NoCompression,
        )
        .await
        .expect("produce");
    let bootstrap = broker.bootstrap_servers().to_owned();
    let joined = format!("{topic}-joined");
    let simple = format!("{topic}-simple");

    let (joined_seen, simple_seen, left_seen) = tokio::task::spawn_blocking(move || {
        // A member of a group: subscribed, and reading.
        let member = client(&bootstrap, Some(&joined));
        member.subscribe(&[&topic]).expect("subscribe");
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < DEADLINE,
                "no record of {topic} within {DEADLINE:?}"
            );
            match member.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => break,
                Some(Err(e)) => panic!("consumer error: {e}"),
                None => {}
            }
        }
        // A simple consumer's group: commits without joining.
        let committer = client(&bootstrap, Some(&simple));
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&topic, 0, Offset::Offset(1))
            .expect("offset");
        committer
            .commit(&offsets, CommitMode::Sync)
            .expect("commit");

        let admin = client(&bootstrap, None);
        let list = groups(&admin);
        let joined_seen = listed(&list, &joined);
        let simple_seen = listed(&list, &simple);
        if let Some(group) = list.groups().iter().find(|g| g.name() == joined)
            && let Some(only) = group.members().first()
        {
            assert_eq!(only.client_id(), "list-groups-test");
            assert!(
                only.client_host().contains("127.0.0.1"),
                "{}",
                only.client_host()
            );
            assert!(only.assignment().is_some_and(|a| !a.is_empty()));
        }
        // Closing the member leaves the group: Empty, as on Kafka.
        drop(member);
        let left_seen = listed(&groups(&admin), &joined);
        (joined_seen, simple_seen, left_seen)
    })
    .await
    .expect("the clients' thread");

    assert_eq!(
        joined_seen,
        Some(("Stable".to_owned(), "consumer".to_owned(), 1))
    );
    assert_eq!(simple_seen, Some(("Empty".to_owned(), String::new(), 0)));
    assert_eq!(
        left_seen,
        Some(("Empty".to_owned(), "consumer".to_owned(), 0))
    );
    broker.shutdown().await.expect("shutdown");
}

// Two workers, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_brokers_each_group_is_listed_once_by_its_coordinator() {
    let broker = Broker::builder()
        .embedded_brokers(3)
        .start()
        .await
        .expect("broker");
    let topic = broker
        .create_unique_topic("listed-once", 1)
        .await
        .expect("topic");
    let bootstrap = broker.bootstrap_servers().to_owned();
    let groups_named: Vec<String> = (0..4).map(|i| format!("{topic}-{i}")).collect();

    let counts = tokio::task::spawn_blocking(move || {
        // Groups that committed offsets, each through its coordinator (the
        // client looks it up first); with four groups, more than one
        // broker coordinates some, whatever the mock's hash.
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&topic, 0, Offset::Offset(0))
            .expect("offset");
        for group in &groups_named {
            client(&bootstrap, Some(group))
                .commit(&offsets, CommitMode::Sync)
                .expect("commit");
        }
        // librdkafka asks every broker and merges their answers as they are.
        let list = groups(&client(&bootstrap, None));
        groups_named
            .iter()
            .map(|group| list.groups().iter().filter(|g| g.name() == group).count())
            .collect::<Vec<_>>()
    })
    .await
    .expect("the clients' thread");

    assert_eq!(counts, [1, 1, 1, 1], "times each group is listed");
    broker.shutdown().await.expect("shutdown");
}
