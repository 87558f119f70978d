//! Datagen for any Avro schema: records that honour the schema's
//! `arg.properties` annotations (as Confluent's datagen connector and its
//! Avro Random Generator read them), realistic `fake` values for
//! unannotated fields chosen by field name, seeded and reproducible.
//!
//! ```
//! use kafka_trace_harness::datagen::DatagenSchema;
//!
//! let schema = DatagenSchema::parse_str(r#"{
//!     "type": "record", "name": "orders",
//!     "fields": [
//!         {"name": "orderid", "type": {"type": "int", "arg.properties": {"iteration": {"start": 1}}}},
//!         {"name": "itemid", "type": {"type": "string", "arg.properties": {"regex": "Item_[1-9][0-9]?"}}},
//!         {"name": "email", "type": "string"}
//!     ]
//! }"#)?;
//!
//! let records: Vec<_> = schema.generator(7).take(3).collect();
//! let again: Vec<_> = schema.generator(7).take(3).collect();
//! assert_eq!(records, again); // same seed, same records
//!
//! let json = schema.to_json_string(&records[1]);
//! assert!(json.starts_with(r#"{"orderid":2,"itemid":"Item_"#));
//! assert!(schema.to_json(&records[1])["email"].as_str().unwrap().contains('@'));
//! # Ok::<(), kafka_trace_harness::datagen::DatagenError>(())
//! ```
//!
//! Bad annotations are errors that name the field:
//!
//! ```
//! use kafka_trace_harness::datagen::DatagenSchema;
//!
//! let err = DatagenSchema::parse_str(r#"{"type": "record", "name": "orders", "fields": [
//!     {"name": "ordertime", "type": {"type": "long", "arg.properties": {"range": {"min": 5, "max": 5}}}}
//! ]}"#).unwrap_err();
//! assert_eq!(err.to_string(), "range.min ≥ max (5 ≥ 5) at orders.ordertime");
//! ```
//!
//! Recursive types are generated down to a nesting of [`MAX_DEPTH`]
//! records, arrays and maps, and up to [`MAX_VALUES`] values a record; past
//! either bound each union takes its least nested branch, and arrays and maps
//! their least length (the `length` minimum, else empty), so every value is
//! finite. A schema with no finite value at all is an error.

mod annotations;
mod error;
mod fake_table;
mod generate;
mod json;
mod load;
mod plan;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::Value as Json;

pub use annotations::KNOWN as ANNOTATIONS;
pub use error::{DatagenError, Result};
pub use fake_table::{RECENT_FROM_MS, RECENT_TO_MS};
pub use generate::SchemaGenerator;
pub use plan::{MAX_DEPTH, MAX_VALUES};

/// A schema ready to generate from: parsed, every annotation checked, and
/// options files read.
#[derive(Debug, Clone)]
pub struct DatagenSchema {
    avro: Schema,
    plan: Arc<plan::Plan>,
}

impl DatagenSchema {
    /// A schema from its JSON text (`//` and `/* */` comments allowed).
    /// Options files are looked for in the working directory.
    pub fn parse_str(text: &str) -> Result<Self> {
        Self::from_json(&load::parse_json_with_comments(text)?, None)
    }

    /// A schema file: schema JSON (`.avsc`, `.json`, or the datagen
    /// quickstarts' `.avro` files, which hold JSON), or an Avro object
    /// container file, whose header holds the schema. Options files are
    /// looked for in the working directory, then beside the schema file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let json = load::read_schema_file(path)?;
        Self::from_json(&json, path.parent())
    }

    /// A schema file's bytes (schema JSON or an Avro container file).
    pub fn from_bytes(bytes: &[u8], options_dir: Option<&Path>) -> Result<Self> {
        Self::from_json(&load::schema_json(bytes)?, options_dir)
    }

    /// A schema from its JSON value.
    pub fn from_json(json: &Json, options_dir: Option<&Path>) -> Result<Self> {
        let avro = Schema::parse(json).map_err(|e| DatagenError::Avro(Box::new(e)))?;
        let plan = plan::Plan::compile(&avro, json, options_dir)?;
        Ok(Self {
            avro,
            plan: Arc::new(plan),
        })
    }

    /// The Avro schema (without the annotations, which apache-avro drops).
    pub fn avro_schema(&self) -> &Schema {
        &self.avro
    }

    /// Endless records from `seed`.
    pub fn generator(&self, seed: u64) -> SchemaGenerator {
        self.generator_on_stream(seed, 0)
    }

    /// Endless records from `seed` on one of 2^64 independent streams of it
    /// (the stockapp draws its trades and users from two streams of a seed).
    pub fn generator_on_stream(&self, seed: u64, stream: u64) -> SchemaGenerator {
        SchemaGenerator::new(Arc::clone(&self.plan), seed, stream)
    }

    /// A generated value in the JSON form Kafka Connect's JSON converter
    /// writes without schemas (see the table in the module `json`'s docs in
    /// the README). Object keys follow `serde_json`'s map order; use
    /// [`Self::write_json`] for the schema's field order.
    pub fn to_json(&self, value: &Value) -> Json {
        serde_json::to_value(self.json_form(value)).unwrap_or(Json::Null)
    }

    /// [`Self::to_json`] as text, fields in schema order.
    pub fn to_json_string(&self, value: &Value) -> String {
        serde_json::to_string(&self.json_form(value)).unwrap_or_default()
    }

    /// Writes [`Self::to_json_string`] to `out`.
    pub fn write_json<W: Write>(&self, value: &Value, out: W) -> std::io::Result<()> {
        serde_json::to_writer(out, &self.json_form(value)).map_err(std::io::Error::other)
    }

    fn json_form<'a>(&'a self, value: &'a Value) -> json::Connect<'a> {
        json::Connect {
            plan: &self.plan,
            id: self.plan.root,
            value,
        }
    }

    /// Reads a record of the JSON form ([`Self::to_json`]) back into its Avro
    /// value, e.g. to compare what a consumer wrote with what was sent.
    /// Decimals of more than 15 significant digits do not survive the JSON
    /// numbers of that form exactly.
    ///
    /// ```
    /// use kafka_trace_harness::datagen::DatagenSchema;
    ///
    /// let schema = DatagenSchema::parse_str(
    ///     r#"{"type": "record", "name": "r", "fields": [{"name": "b", "type": "bytes"}]}"#,
    /// )?;
    /// let value = schema.generator(1).next().unwrap();
    /// assert_eq!(schema.from_json_value(&schema.to_json(&value))?, value);
    /// # Ok::<(), kafka_trace_harness::datagen::DatagenError>(())
    /// ```
    pub fn from_json_value(&self, json: &Json) -> Result<Value> {
        json::decode_form(&self.plan, self.plan.root, json, json::Form::Connect)
            .map_err(|problem| DatagenError::at(&self.plan.nodes[self.plan.root].path, problem))
    }

    /// A value as Avro binary (no header), checked against the schema.
    pub fn to_avro_datum(&self, value: Value) -> Result<Vec<u8>> {
        apache_avro::writer::datum::GenericDatumWriter::builder(&self.avro)
            .build()
            .and_then(|writer| writer.write_value_to_vec(value))
            .map_err(|e| DatagenError::Encode(Box::new(e)))
    }
}
