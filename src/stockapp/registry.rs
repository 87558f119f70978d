//! An in-process schema registry with Confluent's data model: subjects
//! (`<topic>-value`) hold numbered versions, each pointing at a schema with a
//! registry-wide id.
//!
//! ```
//! use kafka_trace_harness::stockapp::{AvroRecord, SchemaRegistry, StockTrade, value_subject};
//!
//! let registry = SchemaRegistry::new();
//!
//! let id = registry.register(&value_subject("stockapp.trades"), StockTrade::SCHEMA_JSON)?;
//!
//! let latest = registry.latest("stockapp.trades-value").unwrap();
//! assert_eq!((latest.id, latest.version), (id, 1));
//! assert!(registry.schema_by_id(id).is_some());
//! # Ok::<(), kafka_trace_harness::stockapp::RegistryError>(())
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use apache_avro::Schema;
use serde::de::DeserializeOwned;

use super::avro::{self, AvroBodyError, DecodeError, SchemaId, WireHeader};
use super::datagen::AvroRecord;

/// The subject Confluent's default `TopicNameStrategy` uses for a topic's values.
///
/// ```
/// use kafka_trace_harness::stockapp::value_subject;
///
/// assert_eq!(value_subject("stockapp.trades"), "stockapp.trades-value");
/// ```
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// What went wrong registering a schema or encoding a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The schema text is not a valid Avro schema.
    #[error("schema for subject {subject:?} is not valid Avro: {reason}")]
    InvalidSchema {
        /// The subject it was registered under.
        subject: String,
        /// What the Avro parser said.
        reason: String,
    },
    /// The value does not fit the subject's schema.
    #[error("value for subject {subject:?} does not fit schema id {schema_id}: {source}")]
    Encode {
        /// The subject.
        subject: String,
        /// The schema the value was written with.
        schema_id: SchemaId,
        /// What the Avro writer said.
        source: AvroBodyError,
    },
}

/// One version of a subject.
#[derive(Debug, Clone)]
pub struct RegisteredSchema {
    /// The subject.
    pub subject: String,
    /// 1-based version within the subject.
    pub version: u32,
    /// Registry-wide id of the schema.
    pub id: SchemaId,
    /// The schema text as first registered.
    pub text: Arc<str>,
    /// The parsed schema.
    pub schema: Arc<Schema>,
}

#[derive(Debug)]
struct Entry {
    text: Arc<str>,
    schema: Arc<Schema>,
}

#[derive(Debug, Default)]
struct State {
    /// Index `i` holds schema id `i + 1` (Confluent ids start at 1).
    by_id: Vec<Entry>,
    /// Parsing Canonical Form -> id, so the same schema keeps one id.
    by_canonical: HashMap<String, SchemaId>,
    /// Subject -> ids of its versions, version `i + 1` at index `i`.
    subjects: HashMap<String, Vec<SchemaId>>,
    /// Schema text -> subject -> id, for what [`SchemaRegistry::encode_value`]
    /// registered: an encoder registers on every record (as a Confluent
    /// serializer does on its first), and parsing the schema each time cost
    /// more than the encoding.
    encoded: HashMap<&'static str, HashMap<String, SchemaId>>,
}

/// An in-process schema registry. Cloning shares the registry (one per test,
/// shared by that test's producers and consumers).
///
/// Deliberate simplifications against Confluent's: no compatibility checks
/// (any schema may become a subject's next version), and two schemas are
/// "the same" when their Avro Parsing Canonical Forms are equal (so docs and
/// `arg.properties` do not count).
#[derive(Debug, Clone, Default)]
pub struct SchemaRegistry {
    state: Arc<Mutex<State>>,
}

impl SchemaRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation is completed before the guard drops, so a poisoned
        // lock (a panic elsewhere while holding it) still guards a valid state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `schema_json` under `subject` and returns its id.
    ///
    /// Registering a schema the subject already has returns the existing id
    /// without a new version; a schema known under another subject keeps its id.
    ///
    /// ```
    /// use kafka_trace_harness::stockapp::{RegistryError, SchemaRegistry};
    ///
    /// let registry = SchemaRegistry::new();
    ///
    /// let a = registry.register("a-value", r#""string""#)?;
    /// let again = registry.register("a-value", r#"{"type": "string"}"#)?;
    /// let bad = registry.register("a-value", "{nope");
    ///
    /// assert_eq!(a, again);
    /// assert!(matches!(bad, Err(RegistryError::InvalidSchema { .. })));
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub fn register(&self, subject: &str, schema_json: &str) -> Result<SchemaId, RegistryError> {
        let schema = Schema::parse_str(schema_json).map_err(|e| RegistryError::InvalidSchema {
            subject: subject.to_owned(),
            reason: e.to_string(),
        })?;
        let canonical = schema.canonical_form();
        let mut state = self.state();
        let id = match state.by_canonical.get(&canonical) {
            Some(&id) => id,
            None => {
                let id = SchemaId(state.by_id.len() as u32 + 1);
                state.by_id.push(Entry {
                    text: Arc::from(schema_json),
                    schema: Arc::new(schema),
                });
                state.by_canonical.insert(canonical, id);
                id
            }
        };
        let versions = state.subjects.entry(subject.to_owned()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        Ok(id)
    }

    /// The schema with this id, if registered.
    pub fn schema_by_id(&self, id: SchemaId) -> Option<Arc<Schema>> {
        self.entry(id).map(|(_, schema)| schema)
    }

    /// The schema text with this id, as first registered.
    pub fn schema_text_by_id(&self, id: SchemaId) -> Option<Arc<str>> {
        self.entry(id).map(|(text, _)| text)
    }

    fn entry(&self, id: SchemaId) -> Option<(Arc<str>, Arc<Schema>)> {
        let index = usize::try_from(id.0).ok()?.checked_sub(1)?;
        let state = self.state();
        let entry = state.by_id.get(index)?;
        Some((entry.text.clone(), entry.schema.clone()))
    }

    /// The latest version of `subject`, if it has any.
    pub fn latest(&self, subject: &str) -> Option<RegisteredSchema> {
        let version = self.state().subjects.get(subject)?.len() as u32;
        self.version(subject, version)
    }

    /// Version `version` (1-based) of `subject`.
    pub fn version(&self, subject: &str, version: u32) -> Option<RegisteredSchema> {
        let id = {
            let state = self.state();
            let index = usize::try_from(version).ok()?.checked_sub(1)?;
            *state.subjects.get(subject)?.get(index)?
        };
        let (text, schema) = self.entry(id)?;
        Some(RegisteredSchema {
            subject: subject.to_owned(),
            version,
            id,
            text,
            schema,
        })
    }

    /// All subjects, sorted.
    pub fn subjects(&self) -> Vec<String> {
        let mut subjects: Vec<_> = self.state().subjects.keys().cloned().collect();
        subjects.sort();
        subjects
    }

    /// `value` in the Confluent wire format for `topic`'s values, registering
    /// `T`'s schema under `<topic>-value` first if needed (as Confluent's
    /// serializer does with `auto.register.schemas=true`, its default).
    ///
    /// ```
    /// use kafka_trace_harness::stockapp::{Datagen, SchemaRegistry, User};
    ///
    /// let registry = SchemaRegistry::new();
    /// let user = Datagen::new(1).users().next().unwrap();
    ///
    /// let bytes = registry.encode_value("stockapp.users", &user)?;
    /// let back: User = registry.decode_value(&bytes)?;
    ///
    /// assert_eq!(bytes[0], 0);
    /// assert_eq!(back, user);
    /// # Ok::<(), kafka_trace_harness::stockapp::Error>(())
    /// ```
    pub fn encode_value<T: AvroRecord>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, RegistryError> {
        let subject = value_subject(topic);
        let known = self
            .state()
            .encoded
            .get(T::SCHEMA_JSON)
            .and_then(|subjects| subjects.get(&subject).copied());
        let schema_id = match known {
            Some(id) => id,
            None => {
                let id = self.register(&subject, T::SCHEMA_JSON)?;
                self.state()
                    .encoded
                    .entry(T::SCHEMA_JSON)
                    .or_default()
                    .insert(subject.clone(), id);
                id
            }
        };
        let body = value.to_avro().map_err(|source| RegistryError::Encode {
            subject,
            schema_id,
            source,
        })?;
        Ok(WireHeader::new(schema_id).frame(&body))
    }

    /// Reads a Confluent-framed value with the writer schema its header
    /// names.
    ///
    /// ```
    /// use kafka_trace_harness::stockapp::{DecodeError, SchemaId, SchemaRegistry, StockTrade};
    ///
    /// let registry = SchemaRegistry::new();
    ///
    /// let err = registry.decode_value::<StockTrade>(&[0, 0, 0, 0, 9, 1]).unwrap_err();
    ///
    /// assert_eq!(err, DecodeError::UnknownSchemaId { id: SchemaId(9) });
    /// ```
    pub fn decode_value<T: DeserializeOwned>(&self, value: &[u8]) -> Result<T, DecodeError> {
        let (header, body) = WireHeader::split(value)?;
        let schema = self
            .schema_by_id(header.schema_id)
            .ok_or(DecodeError::UnknownSchemaId {
                id: header.schema_id,
            })?;
        avro::decode_body(&schema, body).map_err(|source| DecodeError::InvalidBody {
            schema_id: header.schema_id,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stockapp::{Datagen, StockTrade, TRADES_TOPIC, USERS_TOPIC, User};

    #[test]
    fn ids_start_at_one_and_are_shared_across_subjects() {
        let registry = SchemaRegistry::new();
        let trades = registry
            .register("t-value", StockTrade::SCHEMA_JSON)
            .unwrap();
        let users = registry.register("u-value", User::SCHEMA_JSON).unwrap();
        let trades_again = registry
            .register("other-value", StockTrade::SCHEMA_JSON)
            .unwrap();
        assert_eq!(
            (trades, users, trades_again),
            (SchemaId(1), SchemaId(2), SchemaId(1))
        );
        assert_eq!(registry.subjects(), ["other-value", "t-value", "u-value"]);
    }

    #[test]
    fn new_schema_becomes_next_version() {
        let registry = SchemaRegistry::new();
        let v1 = registry.register("s", r#""string""#).unwrap();
        let v2 = registry.register("s", r#""long""#).unwrap();
        let latest = registry.latest("s").unwrap();
        assert_eq!((latest.version, latest.id), (2, v2));
        assert_eq!(registry.version("s", 1).unwrap().id, v1);
        assert!(registry.version("s", 0).is_none());
        assert!(registry.version("s", 3).is_none());
        assert!(registry.latest("missing").is_none());
        assert_eq!(&*registry.schema_text_by_id(v1).unwrap(), r#""string""#);
    }

    #[test]
    fn unknown_ids_are_none() {
        let registry = SchemaRegistry::new();
        assert!(registry.schema_by_id(SchemaId(0)).is_none());
        assert!(registry.schema_by_id(SchemaId(1)).is_none());
        assert!(registry.schema_by_id(SchemaId(u32::MAX)).is_none());
    }

    #[test]
    fn wire_round_trip_for_both_record_types() {
        let registry = SchemaRegistry::new();
        let datagen = Datagen::builder().seed(8).trades(20).users(20).build();
        for trade in datagen.trades() {
            let bytes = registry.encode_value(TRADES_TOPIC, &trade).unwrap();
            assert_eq!(bytes[..5], [0, 0, 0, 0, 1]);
            assert_eq!(registry.decode_value::<StockTrade>(&bytes).unwrap(), trade);
        }
        for user in datagen.users() {
            let bytes = registry.encode_value(USERS_TOPIC, &user).unwrap();
            assert_eq!(bytes[..5], [0, 0, 0, 0, 2]);
            assert_eq!(registry.decode_value::<User>(&bytes).unwrap(), user);
        }
        assert_eq!(registry.latest("stockapp.trades-value").unwrap().version, 1);
    }

    #[test]
    fn every_decode_error_is_distinct() {
        let registry = SchemaRegistry::new();
        let trade = Datagen::new(1).trades().next().unwrap();
        let good = registry.encode_value(TRADES_TOPIC, &trade).unwrap();

        assert_eq!(
            registry.decode_value::<StockTrade>(&good[..3]),
            Err(DecodeError::TooShort { len: 3 })
        );
        let mut wrong_magic = good.clone();
        wrong_magic[0] = 1;
        assert_eq!(
            registry.decode_value::<StockTrade>(&wrong_magic),
            Err(DecodeError::WrongMagicByte { found: 1 })
        );
        let mut unknown = good.clone();
        unknown[4] = 77;
        assert_eq!(
            registry.decode_value::<StockTrade>(&unknown),
            Err(DecodeError::UnknownSchemaId { id: SchemaId(77) })
        );
        let truncated = &good[..good.len() - 2];
        assert!(matches!(
            registry.decode_value::<StockTrade>(truncated),
            Err(DecodeError::InvalidBody {
                schema_id: SchemaId(1),
                ..
            })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            registry.decode_value::<StockTrade>(&trailing),
            Err(DecodeError::InvalidBody { .. })
        ));
        // A user read as a trade: the writer schema decodes, the type does not fit.
        let user = Datagen::new(1).users().next().unwrap();
        let user_bytes = registry.encode_value(USERS_TOPIC, &user).unwrap();
        assert!(matches!(
            registry.decode_value::<StockTrade>(&user_bytes),
            Err(DecodeError::InvalidBody {
                schema_id: SchemaId(2),
                ..
            })
        ));
    }

    #[test]
    fn garbage_bodies_never_panic() {
        let registry = SchemaRegistry::new();
        registry.register("s", StockTrade::SCHEMA_JSON).unwrap();
        registry.register("u", User::SCHEMA_JSON).unwrap();
        let mut seed = 1u64;
        for len in 0..200 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            for id in [1u8, 2] {
                let bytes = [&[0, 0, 0, 0, id][..], &body].concat();
                let _ = registry.decode_value::<StockTrade>(&bytes);
                let _ = registry.decode_value::<User>(&bytes);
            }
        }
    }
}
