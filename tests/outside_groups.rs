//! The wait for other programs' consumer groups against a real broker:
//! committed offsets (OffsetFetch, asked as the group) against end offsets.

use std::time::Duration;

use kafka_trace_harness::Broker;
use kafka_trace_harness::broker::{ApiKey, ErrorCode};
use kafka_trace_harness::stockapp::outside::{GroupSource, OutsideWait, WaitEnd};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

/// Commits `offset` on `topic` partition 0 for `group`, as a consumer of
/// another program would (without joining: a simple consumer's commit).
fn commit(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(offset))
        .expect("offset");
    consumer.commit(&list, CommitMode::Sync).expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_behind_is_named_with_its_lag_and_one_caught_up_ends_the_wait() {
    let broker = Broker::builder().start().await.expect("embedded broker");
    let topic = broker.create_unique_topic("rows", 1).await.expect("topic");
    let record = |i: u8| Record {
        key: None,
        value: Some(vec![i]),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    };
    broker
        .client()
        .await
        .expect("client")
        .partition_client(&topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client")
        .produce((0..3).map(record).collect(), Compression::NoCompression)
        .await
        .expect("produce");
    let bootstrap = broker.bootstrap_servers().to_owned();
    {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        tokio::task::spawn_blocking(move || commit(&bootstrap, "billing", &topic, 1))
            .await
            .unwrap();
    }
    let wait = || {
        OutsideWait::new(bootstrap.clone(), [topic.as_str()])
            .group("billing")
            .deadline(Duration::from_millis(600))
    };

    let behind = wait().wait(std::future::pending()).await;
    assert_eq!(behind.end, WaitEnd::Deadline, "{behind:?}");
    assert_eq!(behind.groups.len(), 1, "{behind:?}");
    let billing = &behind.groups[0];
    assert_eq!(billing.source, GroupSource::Named);
    assert_eq!(billing.lag(), 2);
    assert_eq!(
        behind.problems(),
        [format!(
            "outside consumer group \"billing\" did not catch up within --outside-deadline \
             0.6 s: lag 2 on {topic} (committed 1 of 3)"
        )]
    );

    {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        tokio::task::spawn_blocking(move || commit(&bootstrap, "billing", &topic, 3))
            .await
            .unwrap();
    }
    let caught_up = wait().wait(std::future::pending()).await;
    assert_eq!(caught_up.end, WaitEnd::Done, "{caught_up:?}");
    assert!(caught_up.groups[0].caught_up());
    assert!(caught_up.problems().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_ends_the_wait_at_once_and_a_stop_ends_it_early() {
    let broker = Broker::builder().start().await.expect("embedded broker");
    let topic = broker.create_unique_topic("rows", 1).await.expect("topic");
    let none = OutsideWait::new(broker.bootstrap_servers(), [topic.as_str()])
        .wait(std::future::pending())
        .await;
    assert_eq!(none.end, WaitEnd::Done);
    assert!(none.groups.is_empty());
    assert_eq!(none.render(), "");

    let stopped = OutsideWait::new(broker.bootstrap_servers(), [topic.as_str()])
        .group("never-there")
        .wait(std::future::ready(()))
        .await;
    assert_eq!(stopped.end, WaitEnd::Stopped);
    assert!(
        stopped.problems()[0]
            .contains("\"never-there\" did not catch up before the run was stopped"),
        "{:?}",
        stopped.problems()
    );
}

/// Another program's consumer group that nobody names and whose spans
/// nobody receives, reading a topic of the run and stopping short of its
/// end: the broker lists it, and the wait names it with its lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_untraced_group_behind_is_listed_and_named_with_its_lag() {
    let broker = Broker::builder().start().await.expect("embedded broker");
    let topic = three_records(&broker).await;
    let bootstrap = broker.bootstrap_servers().to_owned();
    let group = format!("{topic}-reporting");
    // A member that reads one record, commits it, and reads no further.
    let member = member_that_reads_one(&bootstrap, &topic, &group).await;

    let report = OutsideWait::new(bootstrap, [topic.as_str()])
        .deadline(Duration::from_millis(1500))
        .wait(std::future::pending())
        .await;
    tokio::task::spawn_blocking(move || drop(member))
        .await
        .expect("closing the member");

    assert_eq!(report.end, WaitEnd::Deadline, "{report:?}");
    assert_eq!(report.listing_error, None);
    assert_eq!(report.groups.len(), 1, "{report:?}");
    assert_eq!(report.groups[0].source, GroupSource::Listed);
    assert_eq!(
        report.problems(),
        [format!(
            "outside consumer group \"{group}\" did not catch up within --outside-deadline \
             1.5 s: lag 2 on {topic} (committed 1 of 3)"
        )]
    );
}

/// A topic of three records (offsets 0 to 2) on partition 0.
async fn three_records(broker: &Broker) -> String {
    let topic = broker.create_unique_topic("rows", 1).await.expect("topic");
    broker
        .client()
        .await
        .expect("client")
        .partition_client(&topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client")
        .produce(
            (0..3u8)
                .map(|i| Record {
                    key: None,
                    value: Some(vec![i]),
                    headers: Default::default(),
                    timestamp: chrono::Utc::now(),
                })
                .collect(),
            Compression::NoCompression,
        )
        .await
        .expect("produce");
    topic
}

/// A failed end-offset query (ListOffsets) during one look is not a lag of
/// zero: the group behind is not taken for caught up, the next look asks
/// again, and a failure that lasts to the deadline is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_end_offset_query_is_not_a_group_caught_up() {
    let broker = Broker::builder().start().await.expect("embedded broker");
    let topic = three_records(&broker).await;
    let bootstrap = broker.bootstrap_servers().to_owned();
    {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        tokio::task::spawn_blocking(move || commit(&bootstrap, "billing", &topic, 1))
            .await
            .unwrap();
    }
    let wait = || {
        OutsideWait::new(bootstrap.clone(), [topic.as_str()])
            .group("billing")
            .deadline(Duration::from_millis(1500))
    };

    // The first look's two ListOffsets (log start, end) fail: a leader
    // moving, say.
    broker
        .request_errors(ApiKey::ListOffsets, ErrorCode::NotLeaderForPartition, 2)
        .expect("request errors");
    let hiccup = wait().wait(std::future::pending()).await;
    assert_eq!(
        hiccup.end,
        WaitEnd::Deadline,
        "a group 2 records behind ended the wait: {hiccup:?}"
    );
    assert!(hiccup.unknown.is_empty(), "{hiccup:?}");
    assert_eq!(
        hiccup.problems(),
        [format!(
            "outside consumer group \"billing\" did not catch up within --outside-deadline \
             1.5 s: lag 2 on {topic} (committed 1 of 3)"
        )]
    );

    // Every look's ListOffsets fails until the deadline.
    broker
        .request_errors(
            ApiKey::ListOffsets,
            ErrorCode::NotLeaderForPartition,
            10_000,
        )
        .expect("request errors");
    let down = wait().wait(std::future::pending()).await;
    broker
        .clear_request_errors(ApiKey::ListOffsets)
        .expect("clear request errors");
    assert_eq!(down.end, WaitEnd::Deadline, "{down:?}");
    let billing = &down.groups[0];
    assert!(!billing.caught_up(), "{down:?}");
    assert_eq!(billing.unknown.len(), 1, "{down:?}");
    let problem = &down.problems()[0];
    assert!(
        problem.starts_with(&format!(
            "outside consumer group \"billing\" was not seen to catch up within \
             --outside-deadline 1.5 s: could not learn the end offsets of {topic} partition 0 \
             (ListOffsets: "
        )),
        "{problem}"
    );
    assert!(problem.contains("Not leader for partition"), "{problem}");
}

/// A listing (ListGroups) that times out during one look is asked again on
/// the next: an unnamed, untraced group behind is still found and named,
/// not dropped with the wait ending as if nothing were outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_failed_once_is_asked_again_and_a_group_behind_is_found() {
    let broker = Broker::builder().start().await.expect("embedded broker");
    let topic = three_records(&broker).await;
    let bootstrap = broker.bootstrap_servers().to_owned();
    let group = format!("{topic}-reporting");
    let member = member_that_reads_one(&bootstrap, &topic, &group).await;

    // The probe's first listing outlasts its 5 s request deadline: the
    // broker moves no byte for 6 s.
    broker.stall(Duration::from_secs(6)).expect("stall");
    let report = OutsideWait::new(bootstrap, [topic.as_str()])
        .deadline(Duration::from_secs(8))
        .wait(std::future::pending())
        .await;
    tokio::task::spawn_blocking(move || drop(member))
        .await
        .expect("closing the member");

    assert_eq!(
        report.end,
        WaitEnd::Deadline,
        "a group 2 records behind ended the wait: {report:?}"
    );
    assert_eq!(report.listing_error, None);
    assert!(report.unknown.is_empty(), "{report:?}");
    assert_eq!(report.groups.len(), 1, "{report:?}");
    assert_eq!(report.groups[0].source, GroupSource::Listed);
    assert_eq!(
        report.problems(),
        [format!(
            "outside consumer group \"{group}\" did not catch up within --outside-deadline \
             8.0 s: lag 2 on {topic} (committed 1 of 3)"
        )]
    );
}

/// A member of `group` that reads one record of `topic`, commits it, and
/// reads no further (drop it off the async threads).
async fn member_that_reads_one(bootstrap: &str, topic: &str, group: &str) -> BaseConsumer {
    let (bootstrap, topic, group) = (bootstrap.to_owned(), topic.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let member: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("log_level", "0")
            .create()
            .expect("consumer");
        member.subscribe(&[&topic]).expect("subscribe");
        let started = std::time::Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no record of {topic} within 10 s"
            );
            match member.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    member
                        .commit_message(&message, CommitMode::Sync)
                        .expect("commit");
                    break;
                }
                Some(Err(e)) => panic!("consumer error: {e}"),
                None => {}
            }
        }
        member
    })
    .await
    .expect("the member's thread")
}

/// A broker that cannot list groups at all (librdkafka's mock cluster with
/// no front) is said so in the report, whether or not the wait ends
/// complete; a named group is still waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_cannot_list_groups_is_said_so() {
    let broker = Broker::builder()
        .stall_free(false)
        .start()
        .await
        .expect("embedded broker");
    let topic = three_records(&broker).await;
    let bootstrap = broker.bootstrap_servers().to_owned();
    let nothing = OutsideWait::new(bootstrap.clone(), [topic.as_str()])
        .deadline(Duration::from_secs(10))
        .wait(std::future::pending())
        .await;
    assert_eq!(nothing.end, WaitEnd::Done, "{nothing:?}");
    let note = nothing.listing_error.as_deref().unwrap_or_default();
    assert!(
        note.contains("does not list its consumer groups")
            && note.contains("name the groups of other programs with --outside-group"),
        "{nothing:?}"
    );
}
