//! The datagen error: what went wrong, and where in the schema.

use std::path::PathBuf;

/// Why a schema could not be loaded, compiled or written.
///
/// Every schema problem names the path of the field it concerns, in the form
/// `record.field.subfield` (array items add `[]`, map values `{}`, union
/// branches `|n`), e.g. `range.min ≥ max at orders.ordertime`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatagenError {
    /// The schema file could not be read.
    #[error("cannot read schema file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The schema text is not JSON (after `//` comments are removed).
    #[error("schema is not JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// An Avro object container file whose header could not be read.
    #[error("cannot read the schema from the Avro container's header: {0}")]
    Container(#[source] Box<apache_avro::Error>),
    /// The JSON is not a valid Avro schema.
    #[error("invalid Avro schema: {0}")]
    Avro(#[source] Box<apache_avro::Error>),
    /// An `arg.properties` annotation (or the schema around it) that cannot
    /// be honoured.
    #[error("{problem} at {path}")]
    Annotation {
        /// Field path, e.g. `orders.ordertime`.
        path: String,
        /// What is wrong, e.g. `range.min ≥ max`.
        problem: String,
    },
    /// An options file named by `{"file": ...}` could not be read or decoded.
    #[error("options file {file} at {path}: {problem}")]
    OptionsFile {
        /// Field path.
        path: String,
        /// The file as written in the schema.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// A generated record could not be encoded (a bug in the generator if
    /// the schema compiled).
    #[error("cannot encode a generated record: {0}")]
    Encode(#[source] Box<apache_avro::Error>),
}

impl DatagenError {
    pub(crate) fn at(path: &str, problem: impl Into<String>) -> Self {
        Self::Annotation {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Result of datagen operations.
pub type Result<T, E = DatagenError> = std::result::Result<T, E>;
