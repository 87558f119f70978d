//! The Confluent Schema Registry wire format: magic byte `0`, a 4-byte
//! big-endian schema id, then the Avro binary body.
//!
//! ```
//! use kafka_trace_harness::stockapp::{SchemaId, WireHeader};
//!
//! let bytes = WireHeader::new(SchemaId(7)).frame(b"body");
//!
//! let (header, body) = WireHeader::split(&bytes)?;
//!
//! assert_eq!(bytes[..5], [0, 0, 0, 0, 7]);
//! assert_eq!(header.schema_id, SchemaId(7));
//! assert_eq!(body, b"body");
//! # Ok::<(), kafka_trace_harness::stockapp::DecodeError>(())
//! ```

use std::fmt;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// First byte of every Confluent-framed value.
pub const MAGIC_BYTE: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// A schema id as the registry assigns it (the wire format's 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaId(pub u32);

impl fmt::Display for SchemaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a Confluent-framed Avro value could not be decoded. Each cause has
/// its own variant so a consumer (and its `process` span) can say which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than the 5 header bytes.
    #[error(
        "value is {len} bytes long, shorter than the 5-byte Confluent header \
         (magic byte 0 + 4-byte schema id)"
    )]
    TooShort {
        /// The value's length.
        len: usize,
    },
    /// The first byte is not [`MAGIC_BYTE`]: not written by a Confluent serializer.
    #[error("magic byte is {found:#04x}, expected 0x00: not a Confluent Schema Registry value")]
    WrongMagicByte {
        /// The byte found.
        found: u8,
    },
    /// The registry has no schema with this id.
    #[error("schema id {id} is not registered in the schema registry")]
    UnknownSchemaId {
        /// The id from the header.
        id: SchemaId,
    },
    /// The body is not a valid Avro datum of the writer schema (or of the
    /// type asked for).
    #[error("Avro body does not match schema id {schema_id}: {source}")]
    InvalidBody {
        /// The id from the header.
        schema_id: SchemaId,
        /// What the Avro reader said.
        source: AvroBodyError,
    },
}

/// An Avro body that could not be written or read with a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct AvroBodyError {
    reason: String,
}

/// apache-avro's messages can embed a whole schema's `Debug` form; a report
/// stays readable with the first part of it.
const MAX_REASON_CHARS: usize = 400;

impl AvroBodyError {
    fn new(reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
            reason.truncate(cut);
            reason.push_str("...");
        }
        Self { reason }
    }

    /// What went wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The 5-byte header of a Confluent-framed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireHeader {
    /// The writer schema's id.
    pub schema_id: SchemaId,
}

impl WireHeader {
    /// A header naming `schema_id`.
    pub fn new(schema_id: SchemaId) -> Self {
        Self { schema_id }
    }

    /// The 5 header bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let id = self.schema_id.0.to_be_bytes();
        [MAGIC_BYTE, id[0], id[1], id[2], id[3]]
    }

    /// Header followed by `body`.
    pub fn frame(self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&self.to_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Splits a framed value into its header and its (unchecked) body.
    ///
    /// ```
    /// use kafka_trace_harness::stockapp::{DecodeError, WireHeader};
    ///
    /// assert_eq!(WireHeader::split(&[0, 0]), Err(DecodeError::TooShort { len: 2 }));
    /// assert_eq!(
    ///     WireHeader::split(b"{\"json\":1}"),
    ///     Err(DecodeError::WrongMagicByte { found: b'{' })
    /// );
    /// ```
    pub fn split(value: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        // Magic byte first: a JSON or plain-string value is then reported as
        // "not Confluent" even when it is short.
        match value.first() {
            None => return Err(DecodeError::TooShort { len: 0 }),
            Some(&found) if found != MAGIC_BYTE => {
                return Err(DecodeError::WrongMagicByte { found });
            }
            Some(_) => {}
        }
        let Some((header, body)) = value.split_first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::TooShort { len: value.len() });
        };
        let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        Ok((Self::new(SchemaId(id)), body))
    }
}

/// Writes `value` as an Avro binary body of `schema`.
pub(crate) fn encode_body<T: Serialize>(
    schema: &Schema,
    value: &T,
) -> Result<Vec<u8>, AvroBodyError> {
    GenericDatumWriter::builder(schema)
        .build()
        .and_then(|writer| writer.write_ser_to_vec(value))
        .map_err(|e| AvroBodyError::new(e.to_string()))
}

/// Reads a `T` from an Avro binary body of `schema`; the whole body must be
/// consumed, since trailing bytes mean the writer used another schema.
pub(crate) fn decode_body<T: DeserializeOwned>(
    schema: &Schema,
    body: &[u8],
) -> Result<T, AvroBodyError> {
    let mut rest = body;
    let value = GenericDatumReader::builder(schema)
        .build()
        .and_then(|reader| reader.read_deser::<T>(&mut rest))
        .map_err(|e| AvroBodyError::new(e.to_string()))?;
    if !rest.is_empty() {
        return Err(AvroBodyError::new(format!(
            "{} trailing bytes after the Avro datum",
            rest.len()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_magic_then_big_endian_id() {
        let header = WireHeader::new(SchemaId(0x0102_0304));
        assert_eq!(header.to_bytes(), [0, 1, 2, 3, 4]);
        let framed = header.frame(&[9, 9]);
        assert_eq!(WireHeader::split(&framed), Ok((header, &[9u8, 9][..])));
    }

    #[test]
    fn split_rejects_short_and_foreign_values() {
        assert_eq!(
            WireHeader::split(&[]),
            Err(DecodeError::TooShort { len: 0 })
        );
        assert_eq!(
            WireHeader::split(&[0, 0, 0, 1]),
            Err(DecodeError::TooShort { len: 4 })
        );
        assert_eq!(
            WireHeader::split(&[1, 0, 0, 0, 1, 2]),
            Err(DecodeError::WrongMagicByte { found: 1 })
        );
        // A header alone is a valid split with an empty body.
        assert_eq!(
            WireHeader::split(&[0, 0, 0, 0, 1]),
            Ok((WireHeader::new(SchemaId(1)), &[][..]))
        );
    }

    #[test]
    fn errors_read_as_reports() {
        let err = DecodeError::WrongMagicByte { found: 0x7b };
        assert_eq!(
            err.to_string(),
            "magic byte is 0x7b, expected 0x00: not a Confluent Schema Registry value"
        );
        let err = DecodeError::UnknownSchemaId { id: SchemaId(42) };
        assert!(err.to_string().contains("42"));
    }

    #[test]
    fn decode_body_rejects_trailing_bytes() {
        let schema = Schema::parse_str(r#""long""#).unwrap();
        let mut body = encode_body(&schema, &5_i64).unwrap();
        assert_eq!(decode_body::<i64>(&schema, &body), Ok(5));
        body.push(0);
        let err = decode_body::<i64>(&schema, &body).unwrap_err();
        assert!(err.reason().contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn decode_body_rejects_truncated_data() {
        let schema = Schema::parse_str(r#""string""#).unwrap();
        let body = encode_body(&schema, &"hello").unwrap();
        assert!(decode_body::<String>(&schema, &body[..3]).is_err());
    }
}
