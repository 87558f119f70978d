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
    /// On a send span: how many attempts it took, when more than one.
    pub const SEND_ATTEMPTS: &str = "messaging.kafka.send.attempts";
    /// On a process span: `true` when this consumer name had already been
    /// handed this record before a restart (at-least-once redelivery).
    pub const REDELIVERED: &str = "messaging.kafka.message.redelivered";
    /// On a consumer span: why the record's trace context was not used.
    pub const CONTEXT_PROBLEM: &str = "messaging.kafka.trace_context.problem";
}

/// Name of the event a consumer span gets when the record's trace context
/// was not usable.
pub const CONTEXT_UNUSABLE_EVENT: &str = "trace context unusable";

/// Name of the event a consumer span gets for each trace context header
/// (`tracestate`, `baggage`) that was dropped (the integrations' spans;
/// `TracedConsumer` writes the same name).
pub(crate) const CONTEXT_IGNORED_EVENT: &str = "trace context header ignored";

pub(crate) fn server(bootstrap: &str) -> Vec<KeyValue> {
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

/// Marks `span` failed as the conventions have it: a low-cardinality
/// `error.type` attribute and Error status with `description`.
pub(crate) fn mark_failed(
    span: &opentelemetry::trace::SpanRef<'_>,
    error_type: impl Into<opentelemetry::Value>,
    description: String,
) {
    span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type));
    span.set_status(opentelemetry::trace::Status::error(description));
}

/// A string attribute value whose clones share one allocation.
pub(crate) fn shared(text: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(text))
}

/// The `messaging.destination.partition.id` value of `partition`.
pub(crate) fn partition_id(partition: i32) -> StringValue {
    shared(&partition.to_string())
}

pub(super) fn error_type(error: &rskafka::client::error::Error) -> String {
    use rskafka::client::error::Error as E;
    if let Some(inner) = retried_error(error) {
        return error_type(inner);
    }
    match error {
        E::ServerError { protocol_error, .. } => format!("{protocol_error:?}"),
        E::Connection(_) => "connection".into(),
        E::Request(_) => "request".into(),
        E::InvalidResponse(_) => "invalid_response".into(),
        E::Timeout => "timeout".into(),
        _ => "_OTHER".into(),
    }
}

/// The last error behind rskafka's "all retries failed", if that is what
/// `error` is.
pub(super) fn retried_error(
    error: &rskafka::client::error::Error,
) -> Option<&rskafka::client::error::Error> {
    match error {
        rskafka::client::error::Error::RetryFailed(rskafka::BackoffError::DeadlineExceded {
            source,
            ..
        }) => source.downcast_ref(),
        _ => None,
    }
}

/// Whether trying the same request again may succeed: the connection
/// broke, or the broker said so (Kafka's retriable error codes).
pub(crate) fn is_transient(error: &rskafka::client::error::Error) -> bool {
    use rskafka::client::error::ProtocolError as P;
    is_retriable_with(error, |code| {
        matches!(
            code,
            P::CorruptMessage
                | P::LeaderNotAvailable
                | P::NotLeaderOrFollower
                | P::RequestTimedOut
                | P::BrokerNotAvailable
                | P::NetworkException
                | P::NotEnoughReplicas
                | P::NotEnoughReplicasAfterAppend
                | P::KafkaStorageError
                | P::PreferredLeaderNotAvailable
                | P::ThrottlingQuotaExceeded
                | P::UnknownServerError
        )
    })
}

/// Whether `error` (or the last error behind rskafka's "all retries
/// failed") is a broken connection, a timeout, or a broker error whose
/// code `retriable_code` accepts: the shape every retry decision shares,
/// each with its own codes.
pub(super) fn is_retriable_with(
    error: &rskafka::client::error::Error,
    retriable_code: fn(&rskafka::client::error::ProtocolError) -> bool,
) -> bool {
    use rskafka::client::error::{Error as E, RequestError};
    if let Some(inner) = retried_error(error) {
        return is_retriable_with(inner, retriable_code);
    }
    match error {
        E::Connection(_) | E::Timeout => true,
        E::Request(request) => matches!(request, RequestError::Poisoned(_) | RequestError::IO(_)),
        E::ServerError { protocol_error, .. } => retriable_code(protocol_error),
        _ => false,
    }
}

/// Whether the broker said the topic or partition does not exist.
pub(crate) fn is_unknown_topic(error: &rskafka::client::error::Error) -> bool {
    use rskafka::client::error::{Error as E, ProtocolError as P};
    if let Some(inner) = retried_error(error) {
        return is_unknown_topic(inner);
    }
    matches!(
        error,
        E::ServerError {
            protocol_error: P::UnknownTopicOrPartition,
            ..
        }
    )
}

/// What every span of one topic and operation repeats, built once: its
/// name and the attributes that do not change from record to record, with
/// shared strings, so that a span copies reference counts, not text.
#[derive(Debug)]
pub(crate) struct SpanTemplate {
    pub(crate) name: String,
    pub(crate) attributes: Vec<KeyValue>,
}

impl SpanTemplate {
    pub(crate) fn new(operation: &'static str, topic: &str, fixed: &[KeyValue]) -> Self {
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
    pub(crate) fn attributes(
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

/// The events a span gets for what extraction found wrong in a record's
/// headers: why the context was unusable, then each header ignored, as
/// (event name, attributes). One list for every consumer integration.
pub(crate) fn extraction_events(
    extracted: &crate::propagation::Extracted,
) -> impl Iterator<Item = (&'static str, Vec<KeyValue>)> + '_ {
    let unusable = extracted
        .problem
        .as_ref()
        .map(|problem| (CONTEXT_UNUSABLE_EVENT, problem.kind(), problem.to_string()));
    let ignored = extracted
        .ignored
        .iter()
        .map(|ignored| (CONTEXT_IGNORED_EVENT, ignored.kind(), ignored.to_string()));
    unusable
        .into_iter()
        .chain(ignored)
        .map(|(name, reason, description)| {
            (
                name,
                vec![
                    KeyValue::new("reason", reason),
                    KeyValue::new("description", description),
                ],
            )
        })
}
