//! What a messaging span does to a record, read from the conventions
//! rather than from its name: its kind, `messaging.operation.type` and
//! `messaging.destination.name`, or the 1.24-era `messaging.operation`
//! and `messaging.destination`. So a hop is recognised whichever program
//! made the span and however its instrumentation names it
//! (`process orders`, `orders process`, `OrderListener.onMessage`).
//!
//! ```
//! use kafka_trace_harness::forest::hops::{HopOperation, messaging_hop};
//! use opentelemetry::KeyValue;
//! use opentelemetry::trace::SpanKind;
//!
//! // A Java agent's consumer span, 1.24-era names.
//! let attributes = [
//!     KeyValue::new("messaging.system", "kafka"),
//!     KeyValue::new("messaging.operation", "process"),
//!     KeyValue::new("messaging.destination.name", "orders"),
//!     KeyValue::new("messaging.kafka.consumer.group", "billing"),
//! ];
//! let hop = messaging_hop(&SpanKind::Consumer, &attributes).unwrap();
//! assert_eq!(hop.operation, HopOperation::Process);
//! assert_eq!(hop.destination, "orders");
//! assert_eq!(hop.consumer_group.as_deref(), Some("billing"));
//! ```

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// What a messaging span did with the records of its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HopOperation {
    /// Sent (`send`, `publish`, `create`; or a PRODUCER span).
    Send,
    /// Received a batch to process (`receive`).
    Receive,
    /// Processed a record (`process`, `deliver`; or a CONSUMER span).
    Process,
}

/// A messaging span read by the conventions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagingHop {
    /// What it did.
    pub operation: HopOperation,
    /// The topic.
    pub destination: String,
    /// The consumer group, if the span names one
    /// (`messaging.consumer.group.name`, or the 1.24-era
    /// `messaging.kafka.consumer.group`).
    pub consumer_group: Option<String>,
    /// Records in the span (`messaging.batch.message_count`), if it says;
    /// otherwise one.
    pub records: u64,
}

/// Attribute names, newest first.
const DESTINATION: &[&str] = &["messaging.destination.name", "messaging.destination"];
const OPERATION: &[&str] = &["messaging.operation.type", "messaging.operation"];
const CONSUMER_GROUP: &[&str] = &[
    "messaging.consumer.group.name",
    "messaging.kafka.consumer.group",
    "messaging.kafka.consumer_group",
];
const BATCH_COUNT: &str = "messaging.batch.message_count";

fn text<'a>(attributes: &'a [KeyValue], keys: &[&str]) -> Option<std::borrow::Cow<'a, str>> {
    keys.iter().find_map(|key| {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == *key)
            .map(|kv| kv.value.as_str())
            .filter(|v| !v.is_empty())
    })
}

/// The topic a span names (`messaging.destination.name`, or the older
/// `messaging.destination`), without copying it.
pub fn messaging_destination(attributes: &[KeyValue]) -> Option<std::borrow::Cow<'_, str>> {
    text(attributes, DESTINATION)
}

/// What a span of `kind` with `attributes` does to records, read as
/// [`messaging_hop`] reads it, without copying anything.
pub fn hop_operation(kind: &SpanKind, attributes: &[KeyValue]) -> Option<HopOperation> {
    let by_attribute = text(attributes, OPERATION).and_then(|op| match op.as_ref() {
        "send" | "publish" | "create" => Some(HopOperation::Send),
        "receive" => Some(HopOperation::Receive),
        "process" | "deliver" => Some(HopOperation::Process),
        _ => None,
    });
    by_attribute.or(match kind {
        SpanKind::Producer => Some(HopOperation::Send),
        SpanKind::Consumer => Some(HopOperation::Process),
        _ => None,
    })
}

/// Whether a span reads records of `topic` (processes or receives them),
/// by the conventions, without copying anything.
pub fn reads_topic(kind: &SpanKind, attributes: &[KeyValue], topic: &str) -> bool {
    messaging_destination(attributes).is_some_and(|d| d == topic)
        && hop_operation(kind, attributes).is_some_and(|op| op != HopOperation::Send)
}

/// The hop a span of `kind` with `attributes` describes, or `None` if it
/// names no destination or does nothing to records (`settle`, an
/// INTERNAL or CLIENT span with no operation).
///
/// The operation comes from `messaging.operation.type`, else the 1.24-era
/// `messaging.operation`; a span with neither (or a value neither version
/// defines) is a send if it is a PRODUCER span and a process if it is a
/// CONSUMER span.
pub fn messaging_hop(kind: &SpanKind, attributes: &[KeyValue]) -> Option<MessagingHop> {
    let destination = messaging_destination(attributes)?;
    let operation = hop_operation(kind, attributes)?;
    let records = attributes
        .iter()
        .find(|kv| kv.key.as_str() == BATCH_COUNT)
        .and_then(|kv| match &kv.value {
            opentelemetry::Value::I64(n) => u64::try_from(*n).ok(),
            other => other.as_str().parse().ok(),
        })
        .unwrap_or(1);
    Some(MessagingHop {
        operation,
        destination: destination.into_owned(),
        consumer_group: text(attributes, CONSUMER_GROUP).map(|g| g.into_owned()),
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(kind: SpanKind, attributes: &[(&'static str, &'static str)]) -> Option<MessagingHop> {
        let attributes: Vec<KeyValue> = attributes
            .iter()
            .map(|(k, v)| KeyValue::new(*k, *v))
            .collect();
        messaging_hop(&kind, &attributes)
    }

    #[test]
    fn current_names_give_the_operation_whatever_the_kind() {
        let receive = hop(
            SpanKind::Client,
            &[
                ("messaging.operation.type", "receive"),
                ("messaging.destination.name", "rows"),
            ],
        )
        .unwrap();
        assert_eq!(receive.operation, HopOperation::Receive);
        assert_eq!(receive.destination, "rows");
        assert_eq!(receive.consumer_group, None);
        assert_eq!(receive.records, 1);
    }

    #[test]
    fn legacy_names_are_read_too() {
        let send = hop(
            SpanKind::Producer,
            &[
                ("messaging.operation", "publish"),
                ("messaging.destination", "trades"),
            ],
        )
        .unwrap();
        assert_eq!(send.operation, HopOperation::Send);
        assert_eq!(send.destination, "trades");
        let process = hop(
            SpanKind::Consumer,
            &[
                ("messaging.operation", "process"),
                ("messaging.destination.name", "rows"),
                ("messaging.kafka.consumer.group", "go-api"),
            ],
        )
        .unwrap();
        assert_eq!(process.operation, HopOperation::Process);
        assert_eq!(process.consumer_group.as_deref(), Some("go-api"));
    }

    #[test]
    fn the_kind_decides_when_no_operation_is_named() {
        let consumer = hop(
            SpanKind::Consumer,
            &[("messaging.destination.name", "rows")],
        );
        assert_eq!(consumer.unwrap().operation, HopOperation::Process);
        let producer = hop(
            SpanKind::Producer,
            &[("messaging.destination.name", "rows")],
        );
        assert_eq!(producer.unwrap().operation, HopOperation::Send);
        assert_eq!(
            hop(
                SpanKind::Internal,
                &[("messaging.destination.name", "rows")]
            ),
            None
        );
    }

    #[test]
    fn no_destination_or_a_settle_is_no_hop() {
        assert_eq!(
            hop(
                SpanKind::Consumer,
                &[("messaging.operation.type", "process")]
            ),
            None
        );
        assert_eq!(
            hop(
                SpanKind::Client,
                &[
                    ("messaging.operation.type", "settle"),
                    ("messaging.destination.name", "rows"),
                ],
            ),
            None
        );
    }

    #[test]
    fn a_batch_counts_its_records() {
        let attributes = [
            KeyValue::new("messaging.operation.type", "receive"),
            KeyValue::new("messaging.destination.name", "rows"),
            KeyValue::new("messaging.batch.message_count", 12_i64),
        ];
        let hop = messaging_hop(&SpanKind::Client, &attributes).unwrap();
        assert_eq!(hop.records, 12);
    }
}
