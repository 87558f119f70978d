//! Which image the container backend runs.

/// Apache Kafka's own image, used when no other is asked for.
pub const DEFAULT_KAFKA_IMAGE: &str = "apache/kafka";
/// The Apache Kafka tag used when no other is asked for.
pub const DEFAULT_KAFKA_TAG: &str = "4.1.1";
/// The local image `scripts/build-image.sh` builds: this crate's own binary
/// running its embedded broker, `FROM scratch`.
pub const LOCAL_HARNESS_IMAGE: &str = "kafka-trace-harness";
/// The tag of [`LOCAL_HARNESS_IMAGE`].
pub const LOCAL_HARNESS_TAG: &str = "local";

/// Which image the container backend runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContainerImage {
    /// `apache/kafka` or `apache/kafka-native` (KRaft, one node), through
    /// testcontainers-modules' `kafka::apache` module.
    ApacheKafka {
        /// Use `apache/kafka-native` (GraalVM) instead of the JVM image.
        native: bool,
        /// The image tag.
        tag: String,
    },
    /// An image holding this crate's binary, started as
    /// `kafka-trace-harness broker`, its ports published on the same ports
    /// of the host.
    Harness {
        /// The image name.
        name: String,
        /// The image tag.
        tag: String,
    },
}

impl Default for ContainerImage {
    fn default() -> Self {
        Self::ApacheKafka {
            native: false,
            tag: DEFAULT_KAFKA_TAG.to_owned(),
        }
    }
}

impl ContainerImage {
    /// The image `scripts/build-image.sh` builds from this crate.
    pub fn local_harness() -> Self {
        Self::Harness {
            name: LOCAL_HARNESS_IMAGE.to_owned(),
            tag: LOCAL_HARNESS_TAG.to_owned(),
        }
    }

    /// Parses `name[:tag]`: the two Apache Kafka names select the Kafka
    /// module, any other name is taken as a harness image.
    pub fn parse(reference: &str) -> Self {
        let (name, tag) = match reference.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (reference, None),
        };
        match name {
            "apache/kafka" | "apache/kafka-native" => Self::ApacheKafka {
                native: name.ends_with("native"),
                tag: tag.unwrap_or(DEFAULT_KAFKA_TAG).to_owned(),
            },
            _ => Self::Harness {
                name: name.to_owned(),
                tag: tag.unwrap_or("latest").to_owned(),
            },
        }
    }

    /// `name:tag`.
    pub fn reference(&self) -> String {
        match self {
            Self::ApacheKafka { native: true, tag } => format!("apache/kafka-native:{tag}"),
            Self::ApacheKafka { native: false, tag } => format!("{DEFAULT_KAFKA_IMAGE}:{tag}"),
            Self::Harness { name, tag } => format!("{name}:{tag}"),
        }
    }
}
