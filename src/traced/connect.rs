//! Connecting a producer to one partition, the same way for both traced
//! producers: the topic checked first, errors told in the harness's terms.

use rskafka::client::Client;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};

use super::attributes::is_unknown_topic;
use crate::error::{Error, Result};

/// rskafka's `source`, or a topic error naming `topic` when the broker
/// says it does not exist.
pub(super) fn client_error(
    topic: &str,
    bootstrap: &str,
    source: rskafka::client::error::Error,
) -> Error {
    if is_unknown_topic(&source) {
        return Error::Topic {
            topic: topic.to_owned(),
            bootstrap: bootstrap.to_owned(),
            reason: "no such topic or partition (mistyped? create it first)".into(),
        };
    }
    Error::Client {
        bootstrap: bootstrap.to_owned(),
        source,
    }
}

/// A client for `topic`/`partition`, after checking that both exist.
pub(super) async fn partition_client(
    client: &Client,
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Result<PartitionClient> {
    // Looked up in the full topic list first: a metadata request naming
    // the topic would make brokers that auto-create topics (the mock
    // cluster does) create a mistyped one silently.
    // rskafka's futures are deep: behind a pointer (crate::shallow).
    let topics = crate::shallow::rskafka_calls::list_topics(client)
        .await
        .map_err(|source| client_error(topic, bootstrap, source))?;
    match topics.iter().find(|t| t.name == topic) {
        Some(t) if t.partitions.contains(&partition) => {}
        found => {
            return Err(Error::Topic {
                topic: topic.to_owned(),
                bootstrap: bootstrap.to_owned(),
                reason: match found {
                    Some(t) => format!(
                        "no partition {partition} (it has {}); create it first",
                        t.partitions.len()
                    ),
                    None => "no such topic (mistyped? create it first)".into(),
                },
            });
        }
    }
    crate::shallow::rskafka_calls::partition_client(
        client,
        topic,
        partition,
        UnknownTopicHandling::Error,
    )
    .await
    .map_err(|source| client_error(topic, bootstrap, source))
}
