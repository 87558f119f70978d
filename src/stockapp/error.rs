//! The demo's error type: the core's [`crate::Error`] plus what only the
//! stockapp pipeline can get wrong.

/// Everything that can go wrong in the stockapp demo.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker, a traced client or the span capture failed.
    #[error(transparent)]
    Harness(#[from] crate::Error),

    /// A stockapp value could not be decoded from the Confluent wire format.
    #[error(transparent)]
    Decode(#[from] super::DecodeError),

    /// The schema registry's HTTP front could not bind or serve.
    #[error("schema registry HTTP server on {addr}: {source}")]
    RegistryServer {
        /// The address it tried to use.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The in-process schema registry refused a schema or a value.
    #[error(transparent)]
    Registry(#[from] super::RegistryError),

    /// The API service's HTTP server could not bind or serve.
    #[error("stockapp API HTTP server on {addr}: {source}")]
    ApiServer {
        /// The address it tried to use.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A `stockapp.dollarsbyzip` value was refused by the API service.
    #[error(transparent)]
    DollarsByZip(#[from] super::DollarsByZipError),

    /// The OpenTelemetry metrics SDK failed to export.
    #[error("metrics export: {0}")]
    Metrics(String),

    /// A stockapp pipeline service failed or did not finish in time.
    #[error("stockapp pipeline: {0}")]
    Pipeline(String),
}

/// `Result` with the demo's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
