//! The demo: the stockapp pipeline of the original system, rebuilt on the
//! harness (feature `stockapp`).
//!
//! Its pure core has no broker and no tracing.
//!
//! Everything the original demo does to a record between Kafka topics lives
//! here as plain functions and structs, so the traced pipeline can call them
//! and tests can check them without any I/O:
//!
//! - [`datagen`]: seeded generators for the `Stock_Trades` and `Users_`
//!   quickstarts ([`StockTrade`], [`User`]).
//! - [`avro`]: the Confluent wire format (magic byte, schema id, Avro body)
//!   and its typed [`DecodeError`].
//! - [`registry`]: an in-process schema registry keyed by subject, and
//!   [`registry_server`], its Confluent REST subset over HTTP.
//! - [`processor`]: the ksqlDB statements (filter, dollar amount, mask, join,
//!   5-minute tumbling sum per zip code) and the Avro-to-JSON stream.
//! - [`api`]: the Go API service's rows ([`ApiState`]) and its HTTP server
//!   ([`ApiServer`]), fed by whoever consumes `stockapp.dollarsbyzip`.
//!
//! ```
//! use kafka_trace_harness::stockapp::{Datagen, SchemaRegistry, StockProcessor, StockTrade, TRADES_TOPIC};
//!
//! // Arrange: seeded records, a registry, a processor.
//! let datagen = Datagen::builder().seed(7).users(20).trades(50).build();
//! let registry = SchemaRegistry::new();
//! let mut processor = StockProcessor::<usize>::new();
//! for user in datagen.users() {
//!     processor.upsert_user(user);
//! }
//!
//! // Act: each trade goes through the wire format, then the ksqlDB logic.
//! let mut rows = 0;
//! for (i, trade) in datagen.trades().enumerate() {
//!     let bytes = registry.encode_value(TRADES_TOPIC, &trade)?;
//!     let decoded: StockTrade = registry.decode_value(&bytes)?;
//!     if processor.process_trade(&decoded, 1_700_000_000_000 + i as i64 * 1_000, i).is_ok() {
//!         rows += 1;
//!     }
//! }
//!
//! // Assert: some trades end in `T` and belong to a user with a zip code.
//! assert!(rows > 0);
//! # Ok::<(), kafka_trace_harness::stockapp::Error>(())
//! ```

pub mod api;
pub mod avro;
pub mod datagen;
mod error;
mod http;
pub mod metrics;
pub mod outside;
pub mod pipeline;
pub mod processor;
pub mod registry;
pub mod registry_server;
pub mod summary;
pub mod trace_check;

pub use api::{
    ApiServer, ApiServerBuilder, ApiState, ApiWaitTimeout, DollarsByZipError, DollarsByZipRow,
};
pub use avro::{DecodeError, MAGIC_BYTE, SchemaId, WireHeader};
pub use datagen::{
    AvroRecord, Datagen, DatagenBuilder, StockTrade, TradeGenerator, User, UserGenerator,
};
pub use error::{Error, Result};
pub use processor::{
    DollarAmount, EnrichedTrade, FilteredOut, StockProcessor, StockProcessorBuilder,
    TransformedTrade, UsersTable, WindowRow, WindowUpdate, mask_account, trade_to_json,
};
pub use registry::{RegisteredSchema, RegistryError, SchemaRegistry, value_subject};
pub use registry_server::{RegistryServer, RegistryServerBuilder};

/// Topic the `Stock_Trades` datagen writes to (Avro, key = `symbol`).
pub const TRADES_TOPIC: &str = "stockapp.trades";
/// Topic the `Users_` datagen writes to (Avro, key = `userid`).
pub const USERS_TOPIC: &str = "stockapp.users";
/// Topic the Kafka Streams app writes every trade to, as JSON.
pub const TRADES_JSON_TOPIC: &str = "stockapp.trades-json";
/// Topic of the ksqlDB table `stockapp_dollars_by_zip_5_min` (JSON, key = zip code).
pub const DOLLARS_BY_ZIP_TOPIC: &str = "stockapp.dollarsbyzip";
/// Dead-letter topic for records that cannot be decoded.
pub const DLQ_TOPIC: &str = "stockapp.dlq";
