//! The crate's error type.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong while starting or using a broker fixture,
/// capturing spans or checking them.
///
/// Each variant carries what a user needs to act: which broker, which topic,
/// which timeout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// librdkafka's mock cluster could not be created or configured.
    #[error("embedded broker (librdkafka mock cluster): {0}")]
    Embedded(String),

    /// A socket of the harness's TCP front could not be bound or used.
    #[error("broker front on {addr}: {source}")]
    Front {
        /// The address the front tried to use.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },

    /// Docker is not reachable, so the container backend cannot start.
    #[error(
        "the container backend needs a Docker engine, and none answered ({reason}). \
         Start Docker, or choose another backend: KAFKA_TRACE_HARNESS_BROKER=embedded \
         (the default, in process) or KAFKA_TRACE_HARNESS_BROKER=external with \
         KAFKA_BOOTSTRAP_SERVERS=host:port"
    )]
    NoDocker {
        /// What the Docker client said.
        reason: String,
    },

    /// The broker container failed to start or to become ready.
    #[error("broker container {image}: {reason}")]
    Container {
        /// `name:tag` of the image.
        image: String,
        /// What went wrong.
        reason: String,
    },

    /// The Kafka client failed against the broker at `bootstrap`.
    #[error("kafka client against {bootstrap}: {source}")]
    Client {
        /// The bootstrap address used.
        bootstrap: String,
        /// rskafka's error.
        source: rskafka::client::error::Error,
    },

    /// A request the harness made for its own bookkeeping (metadata, an
    /// offset lookup) failed, after the client's own retries.
    #[error("{what} against {bootstrap}: {source}")]
    Request {
        /// What the harness was doing.
        what: String,
        /// The bootstrap address used.
        bootstrap: String,
        /// rskafka's error (boxed: it is large, and rare).
        source: Box<rskafka::client::error::Error>,
    },

    /// A consumer's fetch failed (after the client's own retries).
    #[error(
        "consumer {group:?} fetching topic {topic:?} partition {partition} from offset \
         {offset} on {bootstrap}: {source}"
    )]
    Fetch {
        /// The consumer's name.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset it fetched from.
        offset: i64,
        /// The bootstrap address used.
        bootstrap: String,
        /// rskafka's error (boxed: it is large, and rare).
        source: Box<rskafka::client::error::Error>,
    },

    /// Records were deleted by the broker before a consumer read them.
    #[error(
        "topic {topic:?} partition {partition} on {bootstrap}: the consumer's next offset \
         {next} is below the log start {log_start}, so {} records were deleted before it \
         read them. {DELETION_HINT}",
        log_start - next
    )]
    RecordsDeleted {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset the consumer was to read next.
        next: i64,
        /// The partition's first offset still kept.
        log_start: i64,
        /// The bootstrap address used.
        bootstrap: String,
    },

    /// The embedded broker deleted records (seen by its watch).
    #[error(
        "the embedded broker at {bootstrap} deleted records: {}. {DELETION_HINT}",
        DeletedRecords::list(deleted)
    )]
    BrokerDeletedRecords {
        /// The broker's bootstrap address.
        bootstrap: String,
        /// Per partition, how many records were deleted.
        deleted: Vec<DeletedRecords>,
    },

    /// The deleted-records watch of the embedded broker could not look
    /// at every partition, so records the broker deleted may be missing
    /// from what it reports.
    #[error(
        "the deleted-records watch of the embedded broker at {bootstrap} could not look at \
         every partition, so records it deleted there may go unreported: {reason}"
    )]
    DeletionWatch {
        /// The broker's bootstrap address.
        bootstrap: String,
        /// Each topic or partition it could not look at, and why.
        reason: String,
    },

    /// The backend cannot inject this fault.
    #[error("fault {fault} is not available on the {backend} backend: {reason}")]
    FaultUnsupported {
        /// The fault asked for.
        fault: String,
        /// The backend's name.
        backend: &'static str,
        /// Why, and what would work.
        reason: String,
    },

    /// A fault could not be injected.
    #[error("injecting fault {fault} into the broker at {bootstrap}: {reason}")]
    Fault {
        /// The fault asked for.
        fault: String,
        /// The broker's bootstrap address.
        bootstrap: String,
        /// What went wrong.
        reason: String,
    },

    /// An operation did not finish within its deadline.
    #[error("{what} against {bootstrap} did not finish within {timeout:?}")]
    Timeout {
        /// What was being attempted.
        what: String,
        /// The bootstrap address used.
        bootstrap: String,
        /// The deadline that passed.
        timeout: Duration,
    },

    /// A topic could not be created as asked.
    #[error("topic {topic:?} on {bootstrap}: {reason}")]
    Topic {
        /// The topic's name.
        topic: String,
        /// The bootstrap address used.
        bootstrap: String,
        /// What went wrong.
        reason: String,
    },

    /// The environment asked for something this crate does not know.
    #[error("environment variable {variable}={value:?}: {reason}")]
    Config {
        /// The variable's name.
        variable: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },

    /// A trace assertion did not hold; the message is the full report
    /// (expected vs actual, the captured spans, what to do).
    #[error("{0}")]
    Assertion(String),

    /// A tracer provider of a [`crate::SpanCapture`] failed to shut down.
    #[error("tracer provider of service {service:?}: {reason}")]
    Telemetry {
        /// The provider's `service.name`.
        service: String,
        /// What the SDK said.
        reason: String,
    },

    /// A [`crate::Condition`] on the captured spans did not hold in time.
    #[error(
        "waited {waited:?} for {condition}; it never held. Last seen: {seen}\n\
         If the spans are still being produced, raise the deadline; if they \
         should exist already, check that every span was ended and that the \
         right SpanCapture provider was used."
    )]
    Wait {
        /// The condition's description.
        condition: String,
        /// How long the wait lasted.
        waited: Duration,
        /// What the captured spans looked like at the deadline.
        seen: String,
    },

    /// Spans could not be encoded as OTLP JSON.
    #[cfg(feature = "otlp")]
    #[error("OTLP JSON encoding: {0}")]
    OtlpEncode(String),

    /// Spans could not be written as OTLP JSON.
    #[cfg(feature = "otlp")]
    #[error("OTLP JSON file {path}: {source}")]
    OtlpWrite {
        /// The file it tried to write.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The OTLP receiver could not listen, or failed or overran its
    /// deadline while stopping.
    #[cfg(feature = "otlp-receiver")]
    #[error("OTLP receiver ({protocol}) on {addr}: {reason}")]
    OtlpReceiver {
        /// `HTTP` or `gRPC`.
        protocol: &'static str,
        /// The address it listened on, or tried to.
        addr: String,
        /// What went wrong.
        reason: String,
    },

    /// The live OTLP export could not start.
    #[cfg(feature = "otlp-export")]
    #[error("OTLP export: {reason}")]
    OtlpExport {
        /// What went wrong.
        reason: String,
    },
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

/// What to do about records the embedded broker deleted.
const DELETION_HINT: &str = "librdkafka's mock cluster (the embedded broker) keeps at most \
     5 MiB or 100,000 record batches per partition and deletes the oldest beyond that; \
     spread records over more partitions, batch them, or use the container or external backend";

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
