//! Attribute names of the OpenTelemetry messaging semantic conventions
//! (1.44) and the span templates built from them.

use std::sync::Arc;

use opentelemetry::{KeyValue, StringValue};

/// Attribute names of the messaging semantic conventions used here.
pub mod attr {
    /// `kafka`.
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// `send` or `process`.
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    /// `send` or `process`.
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    /// The topic.
    pub const DESTINATION_NAME: &str = "messaging.destination.name";
    /// The partition, as a string.
    pub const PARTITION_ID: &str = "messaging.destination.partition.id";
    /// The record key, UTF-8 lossy.
    pub const MESSAGE_KEY: &str = "messaging.kafka.message.key";
    /// The record offset.
    pub const OFFSET: &str = "messaging.kafka.offset";
    /// The consumer's name (its "group").
    pub const CONSUMER_GROUP: &str = "messaging.consumer.group.name";
    /// Host of the first bootstrap server.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// Port of the first bootstrap server.
    pub const SERVER_PORT: &str = "server.port";
    /// Low-cardinality error class on failed spans.
    pub const ERROR_TYPE: &str = "error.type";
    /// On a consumer span: why the record's trace context was not used.
    pub const CONTEXT_PROBLEM: &str = "messaging.kafka.trace_context.problem";
}

/// Name of the event a consumer span gets when the record's trace context
/// was not usable.
pub const CONTEXT_UNUSABLE_EVENT: &str = "trace context unusable";

pub(super) fn server(bootstrap: &str) -> Vec<KeyValue> {
    let first = bootstrap.split(',').next().unwrap_or_default().trim();
    match first.rsplit_once(':') {
        Some((host, port)) => {
            let mut out = vec![KeyValue::new(attr::SERVER_ADDRESS, shared(host))];
            if let Ok(port) = port.parse::<i64>() {
                out.push(KeyValue::new(attr::SERVER_PORT, port));
            }
            out
        }
        None => vec![KeyValue::new(attr::SERVER_ADDRESS, shared(first))],
    }
}

/// A string attribute value whose clones share one allocation.
pub(super) fn shared(text: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(text))
}

/// The `messaging.destination.partition.id` value of `partition`.
pub(super) fn partition_id(partition: i32) -> StringValue {
    shared(&partition.to_string())
}

pub(super) fn error_type(error: &rskafka::client::error::Error) -> String {
    use rskafka::client::error::Error as E;
    match error {
        E::ServerError { protocol_error, .. } => format!("{protocol_error:?}"),
        E::Connection(_) => "connection".into(),
        E::Request(_) => "request".into(),
        E::InvalidResponse(_) => "invalid_response".into(),
        E::Timeout => "timeout".into(),
        _ => "_OTHER".into(),
    }
}

/// What every span of one topic and operation repeats, built once: its
/// name and the attributes that do not change from record to record, with
/// shared strings, so that a span copies reference counts, not text.
#[derive(Debug)]
pub(super) struct SpanTemplate {
    pub(super) name: String,
    pub(super) attributes: Vec<KeyValue>,
}

impl SpanTemplate {
    pub(super) fn new(operation: &'static str, topic: &str, fixed: &[KeyValue]) -> Self {
        let mut attributes = vec![
            KeyValue::new(attr::MESSAGING_SYSTEM, "kafka"),
            KeyValue::new(attr::OPERATION_NAME, operation),
            KeyValue::new(attr::OPERATION_TYPE, operation),
            KeyValue::new(attr::DESTINATION_NAME, shared(topic)),
        ];
        attributes.extend(fixed.iter().cloned());
        Self {
            name: format!("{operation} {topic}"),
            attributes,
        }
    }

    /// One record's attributes, with room for `extra` more (set later,
    /// such as the offset: growing the vector then would copy it).
    pub(super) fn attributes(
        &self,
        partition_id: StringValue,
        key: Option<&[u8]>,
        extra: usize,
    ) -> Vec<KeyValue> {
        let mut out = Vec::with_capacity(self.attributes.len() + 2 + extra);
        out.extend(self.attributes.iter().cloned());
        out.push(KeyValue::new(attr::PARTITION_ID, partition_id));
        if let Some(key) = key {
            out.push(KeyValue::new(
                attr::MESSAGE_KEY,
                String::from_utf8_lossy(key).into_owned(),
            ));
        }
        out
    }
}
