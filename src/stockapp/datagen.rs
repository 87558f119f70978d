//! Seeded generators for the Confluent datagen quickstarts `Stock_Trades` and
//! `Users_`.
//!
//! The records come from the bundled schemas in `fixtures/` (the same files
//! the datagen connector ships) through the generic generator
//! ([`crate::datagen`]), which honours their `arg.properties`: datagen's
//! `range` is `min` inclusive, `max` exclusive, so quantities are `1..=4999`
//! and prices `5..=999` pennies.
//!
//! ```
//! use kafka_trace_harness::stockapp::Datagen;
//!
//! let datagen = Datagen::builder().seed(42).trades(3).users(2).build();
//!
//! let trades: Vec<_> = datagen.trades().collect();
//! let again: Vec<_> = datagen.trades().collect();
//!
//! assert_eq!(trades.len(), 3);
//! assert_eq!(trades, again); // same seed, same records
//! assert_eq!(datagen.users().count(), 2);
//! ```

use std::collections::BTreeMap;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::types::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::avro::{self, AvroBodyError};
use crate::datagen::{DatagenSchema, SchemaGenerator};

/// The `Stock_Trades` datagen schema (`ksql.StockTrade`), verbatim.
pub const STOCK_TRADE_SCHEMA: &str = include_str!("../../fixtures/stock_trades.avsc");
/// The `Users_` datagen schema (`ksql.users`), verbatim.
pub const USER_SCHEMA: &str = include_str!("../../fixtures/users.avsc");

/// Default seed of [`DatagenBuilder`].
pub const DEFAULT_SEED: u64 = 0;
/// Default number of trades of [`DatagenBuilder`].
pub const DEFAULT_TRADES: usize = 100;
/// Default number of users of [`DatagenBuilder`].
pub const DEFAULT_USERS: usize = 20;

/// A record type with an Avro schema, a datagen key and an Avro body form.
///
/// ```
/// use kafka_trace_harness::stockapp::{AvroRecord, Datagen, StockTrade};
///
/// let trade = Datagen::new(1).trades().next().unwrap();
///
/// let body = trade.to_avro()?;
/// let back = StockTrade::from_avro(&body)?;
///
/// assert_eq!(back, trade);
/// assert_eq!(trade.key(), trade.symbol);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait AvroRecord: Serialize + DeserializeOwned {
    /// The schema's JSON text.
    const SCHEMA_JSON: &'static str;

    /// The parsed schema.
    fn schema() -> &'static Schema;

    /// The Kafka record key the datagen connector sets for this record.
    fn key(&self) -> &str;

    /// This record as an Avro binary body (no header) under [`Self::schema`].
    fn to_avro(&self) -> Result<Vec<u8>, AvroBodyError> {
        avro::encode_body(Self::schema(), self)
    }

    /// Reads a record from an Avro binary body written with [`Self::schema`].
    /// Trailing bytes are an error.
    fn from_avro(body: &[u8]) -> Result<Self, AvroBodyError> {
        avro::decode_body(Self::schema(), body)
    }
}

/// Parses one of the fixture schemas; they are constants checked by the tests,
/// so a failure here is a bug in this crate, not bad input.
fn parse_fixture(json: &str) -> Schema {
    Schema::parse_str(json).expect("fixture schema is valid Avro (checked by unit tests)")
}

static STOCK_TRADE_PARSED: LazyLock<Schema> = LazyLock::new(|| parse_fixture(STOCK_TRADE_SCHEMA));
static USER_PARSED: LazyLock<Schema> = LazyLock::new(|| parse_fixture(USER_SCHEMA));

/// Compiles one of the fixture schemas for the generator; as with
/// [`parse_fixture`], a failure is a bug in this crate (checked by tests).
fn generate_from(json: &str) -> DatagenSchema {
    DatagenSchema::parse_str(json)
        .expect("fixture schema compiles for datagen (checked by unit tests)")
}

static STOCK_TRADE_GENERATOR: LazyLock<DatagenSchema> =
    LazyLock::new(|| generate_from(STOCK_TRADE_SCHEMA));
static USER_GENERATOR: LazyLock<DatagenSchema> = LazyLock::new(|| generate_from(USER_SCHEMA));

/// One stock trade as the `Stock_Trades` datagen emits it (`ksql.StockTrade`).
///
/// Field order follows the schema, so the JSON form has the same order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StockTrade {
    /// `BUY` or `SELL`.
    pub side: String,
    /// Number of shares.
    pub quantity: i32,
    /// Stock symbol; the Kafka key.
    pub symbol: String,
    /// Price in pennies.
    pub price: i32,
    /// Trading account.
    pub account: String,
    /// The user who traded, `User_1`..`User_9`.
    pub userid: String,
}

impl AvroRecord for StockTrade {
    const SCHEMA_JSON: &'static str = STOCK_TRADE_SCHEMA;

    fn schema() -> &'static Schema {
        &STOCK_TRADE_PARSED
    }

    fn key(&self) -> &str {
        &self.symbol
    }
}

/// One user profile as the `Users_` datagen emits it (`ksql.users`).
///
/// `contactinfo` is a `BTreeMap` so that its Avro and JSON forms have a
/// stable entry order (same seed, same bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
// apache-avro's deserializer checks the Rust name against the record name.
#[serde(rename = "users")]
pub struct User {
    /// Registration time, epoch milliseconds.
    pub registertime: i64,
    /// `User_1`..`User_9`; the Kafka key.
    pub userid: String,
    /// `Region_1`..`Region_9`.
    pub regionid: String,
    /// `MALE`, `FEMALE` or `OTHER`.
    pub gender: String,
    /// Two interests, e.g. `["Game", "News"]`.
    pub interests: Vec<String>,
    /// `phone`, `city`, `state` and `zipcode`.
    pub contactinfo: BTreeMap<String, String>,
}

impl User {
    /// The `zipcode` entry of `contactinfo`, if any (ksqlDB's `contactinfo['zipcode']`).
    ///
    /// ```
    /// use kafka_trace_harness::stockapp::Datagen;
    ///
    /// let user = Datagen::new(3).users().next().unwrap();
    ///
    /// assert!(["94403", "92617", "94301", "95112", "94070"].contains(&user.zipcode().unwrap()));
    /// ```
    pub fn zipcode(&self) -> Option<&str> {
        self.contactinfo.get("zipcode").map(String::as_str)
    }
}

impl AvroRecord for User {
    const SCHEMA_JSON: &'static str = USER_SCHEMA;

    fn schema() -> &'static Schema {
        &USER_PARSED
    }

    fn key(&self) -> &str {
        &self.userid
    }
}

/// Seeded source of both quickstarts, with how many records of each to make.
///
/// Trades and users come from separate streams of the same seed, so changing
/// one count never changes the other kind's records, and a longer run starts
/// with the records of a shorter one.
///
/// ```
/// use kafka_trace_harness::stockapp::Datagen;
///
/// let short = Datagen::builder().seed(9).trades(5).build();
/// let long = Datagen::builder().seed(9).trades(10).build();
///
/// let short: Vec<_> = short.trades().collect();
/// let long: Vec<_> = long.trades().collect();
///
/// assert_eq!(short[..], long[..5]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagen {
    seed: u64,
    trades: usize,
    users: usize,
}

impl Default for Datagen {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl Datagen {
    /// Default counts with the given seed.
    pub fn new(seed: u64) -> Self {
        Self::builder().seed(seed).build()
    }

    /// A builder with the defaults: seed [`DEFAULT_SEED`], [`DEFAULT_TRADES`]
    /// trades, [`DEFAULT_USERS`] users.
    pub fn builder() -> DatagenBuilder {
        DatagenBuilder {
            seed: DEFAULT_SEED,
            trades: DEFAULT_TRADES,
            users: DEFAULT_USERS,
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The configured number of trades, in order.
    pub fn trades(&self) -> std::iter::Take<TradeGenerator> {
        TradeGenerator::new(self.seed).take(self.trades)
    }

    /// The configured number of user profiles, in order.
    pub fn users(&self) -> std::iter::Take<UserGenerator> {
        UserGenerator::new(self.seed).take(self.users)
    }
}

/// Builder of [`Datagen`]; see [`Datagen::builder`] for the defaults.
#[derive(Debug, Clone)]
pub struct DatagenBuilder {
    seed: u64,
    trades: usize,
    users: usize,
}

impl DatagenBuilder {
    /// Seed of both generators. Default [`DEFAULT_SEED`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How many trades [`Datagen::trades`] yields. Default [`DEFAULT_TRADES`].
    pub fn trades(mut self, count: usize) -> Self {
        self.trades = count;
        self
    }

    /// How many profiles [`Datagen::users`] yields. Default [`DEFAULT_USERS`].
    pub fn users(mut self, count: usize) -> Self {
        self.users = count;
        self
    }

    /// The configured [`Datagen`].
    pub fn build(self) -> Datagen {
        Datagen {
            seed: self.seed,
            trades: self.trades,
            users: self.users,
        }
    }
}

/// ChaCha stream ids: trades and users draw from independent streams.
const TRADE_STREAM: u64 = 0;
const USER_STREAM: u64 = 1;

/// Endless seeded `Stock_Trades` records.
///
/// ```
/// use kafka_trace_harness::stockapp::TradeGenerator;
///
/// let trade = TradeGenerator::new(5).next().unwrap();
///
/// assert!((1..5000).contains(&trade.quantity));
/// assert!((5..1000).contains(&trade.price));
/// ```
#[derive(Debug)]
pub struct TradeGenerator(SchemaGenerator);

impl TradeGenerator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(STOCK_TRADE_GENERATOR.generator_on_stream(seed, TRADE_STREAM))
    }
}

impl Iterator for TradeGenerator {
    type Item = StockTrade;

    fn next(&mut self) -> Option<StockTrade> {
        let mut fields = Fields::of(self.0.next_value());
        Some(StockTrade {
            side: fields.string("side"),
            quantity: fields.int("quantity"),
            symbol: fields.string("symbol"),
            price: fields.int("price"),
            account: fields.string("account"),
            userid: fields.string("userid"),
        })
    }
}

/// Endless seeded `Users_` records.
///
/// ```
/// use kafka_trace_harness::stockapp::UserGenerator;
///
/// let user = UserGenerator::new(5).next().unwrap();
///
/// assert!(user.userid.starts_with("User_"));
/// assert_eq!(user.contactinfo["state"], "CA");
/// ```
#[derive(Debug)]
pub struct UserGenerator(SchemaGenerator);

impl UserGenerator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(USER_GENERATOR.generator_on_stream(seed, USER_STREAM))
    }
}

impl Iterator for UserGenerator {
    type Item = User;

    fn next(&mut self) -> Option<User> {
        let mut fields = Fields::of(self.0.next_value());
        Some(User {
            registertime: fields.long("registertime"),
            userid: fields.string("userid"),
            regionid: fields.string("regionid"),
            gender: fields.string("gender"),
            interests: fields.strings("interests"),
            contactinfo: fields.string_map("contactinfo"),
        })
    }
}

/// The fields of a generated record, taken out by name (moved, not copied).
///
/// The generator follows the bundled schemas, whose types the record
/// structs mirror (checked by the tests): a field of another type would be
/// a bug in this crate, and reads as the type's zero value rather than
/// stopping the pipeline.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn of(value: Value) -> Self {
        match value {
            Value::Record(fields) => Self(fields),
            _ => Self(Vec::new()),
        }
    }

    fn take(&mut self, name: &str) -> Value {
        self.0
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::mem::replace(v, Value::Null))
            .unwrap_or(Value::Null)
    }

    fn string(&mut self, name: &str) -> String {
        into_string(self.take(name))
    }

    fn int(&mut self, name: &str) -> i32 {
        match self.take(name) {
            Value::Int(v) => v,
            _ => 0,
        }
    }

    fn long(&mut self, name: &str) -> i64 {
        match self.take(name) {
            Value::Long(v) => v,
            _ => 0,
        }
    }

    fn strings(&mut self, name: &str) -> Vec<String> {
        match self.take(name) {
            Value::Array(items) => items.into_iter().map(into_string).collect(),
            _ => Vec::new(),
        }
    }

    fn string_map(&mut self, name: &str) -> BTreeMap<String, String> {
        match self.take(name) {
            Value::Map(entries) => entries
                .into_iter()
                .map(|(k, v)| (k, into_string(v)))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

fn into_string(value: Value) -> String {
    match value {
        Value::String(s) => s,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The value domains of the schemas' annotations, written out here so
    // that the tests check the generator against them independently.
    const SIDES: [&str; 2] = ["BUY", "SELL"];
    const SYMBOLS: [&str; 7] = ["ZBZX", "ZJZZT", "ZTEST", "ZVV", "ZVZZT", "ZWZZT", "ZXZZT"];
    const ACCOUNTS: [&str; 3] = ["ABC123", "LMN456", "XYZ789"];
    const REGISTERTIME_RANGE: (i64, i64) = (1_487_715_775_521, 1_519_273_364_600);
    const GENDERS: [&str; 3] = ["MALE", "FEMALE", "OTHER"];
    const INTERESTS: [[&str; 2]; 4] = [
        ["Game", "News"],
        ["Game", "Sport"],
        ["News", "Movies"],
        ["News", "Travel"],
    ];
    /// `(phone, city, state, zipcode)` of the five contact-info maps.
    const CONTACT_INFOS: [(&str, &str, &str, &str); 5] = [
        ("6503349999", "San Mateo", "CA", "94403"),
        ("9492229999", "Irvine", "CA", "92617"),
        ("6503889999", "Palo Alto", "CA", "94301"),
        ("4083366881", "San Jose", "CA", "95112"),
        ("6502215368", "San Carlos", "CA", "94070"),
    ];

    #[test]
    fn the_fixture_schemas_compile_for_the_generator() {
        DatagenSchema::parse_str(STOCK_TRADE_SCHEMA).unwrap();
        DatagenSchema::parse_str(USER_SCHEMA).unwrap();
    }

    #[test]
    fn every_symbol_and_user_shows_up() {
        let trades: Vec<_> = TradeGenerator::new(1).take(2000).collect();
        let symbols: std::collections::BTreeSet<_> =
            trades.iter().map(|t| t.symbol.as_str()).collect();
        assert_eq!(symbols.len(), SYMBOLS.len());
        let users: std::collections::BTreeSet<_> =
            trades.iter().map(|t| t.userid.as_str()).collect();
        assert_eq!(users.len(), 9);
    }

    #[test]
    fn fixture_schemas_parse_with_the_expected_names() {
        assert_eq!(
            StockTrade::schema().name().map(|n| n.fullname(None)),
            Some("ksql.StockTrade".to_owned())
        );
        assert_eq!(
            User::schema().name().map(|n| n.fullname(None)),
            Some("ksql.users".to_owned())
        );
    }

    #[test]
    fn fixtures_match_the_reference_schemas_value_domains() {
        for needle in SYMBOLS.iter().chain(&ACCOUNTS).chain(&SIDES) {
            assert!(
                STOCK_TRADE_SCHEMA.contains(&format!("\"{needle}\"")),
                "{needle}"
            );
        }
        for (_, _, _, zip) in CONTACT_INFOS {
            assert!(USER_SCHEMA.contains(&format!("\"{zip}\"")), "{zip}");
        }
        assert!(STOCK_TRADE_SCHEMA.contains("\"max\": 5000"));
        assert!(USER_SCHEMA.contains("1519273364600"));
    }

    #[test]
    fn trades_stay_in_their_value_domains() {
        for trade in TradeGenerator::new(11).take(2000) {
            assert!(SIDES.contains(&trade.side.as_str()));
            assert!((1..5000).contains(&trade.quantity));
            assert!(SYMBOLS.contains(&trade.symbol.as_str()));
            assert!((5..1000).contains(&trade.price));
            assert!(ACCOUNTS.contains(&trade.account.as_str()));
            let n: u8 = trade.userid.strip_prefix("User_").unwrap().parse().unwrap();
            assert!((1..=9).contains(&n));
        }
    }

    #[test]
    fn users_stay_in_their_value_domains() {
        let mut zips = std::collections::BTreeSet::new();
        for user in UserGenerator::new(11).take(2000) {
            assert!((REGISTERTIME_RANGE.0..REGISTERTIME_RANGE.1).contains(&user.registertime));
            let n: u8 = user.userid.strip_prefix("User_").unwrap().parse().unwrap();
            assert!((1..=9).contains(&n));
            let n: u8 = user
                .regionid
                .strip_prefix("Region_")
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=9).contains(&n));
            assert!(GENDERS.contains(&user.gender.as_str()));
            assert!(INTERESTS.iter().any(|opt| user.interests == opt));
            let info = CONTACT_INFOS
                .iter()
                .find(|(_, _, _, zip)| Some(*zip) == user.zipcode())
                .unwrap();
            assert_eq!(user.contactinfo["phone"], info.0);
            assert_eq!(user.contactinfo["city"], info.1);
            assert_eq!(user.contactinfo["state"], info.2);
            assert_eq!(user.contactinfo.len(), 4);
            zips.insert(info.3);
        }
        assert_eq!(zips.len(), 5, "every contact-info option shows up");
    }

    #[test]
    fn keys_are_what_datagen_sets() {
        let trade = TradeGenerator::new(1).next().unwrap();
        let user = UserGenerator::new(1).next().unwrap();
        assert_eq!(trade.key(), trade.symbol);
        assert_eq!(user.key(), user.userid);
    }

    #[test]
    fn same_seed_gives_identical_avro_bytes() {
        let bytes = |seed| -> Vec<Vec<u8>> {
            let datagen = Datagen::builder().seed(seed).trades(50).users(50).build();
            datagen
                .trades()
                .map(|t| t.to_avro().unwrap())
                .chain(datagen.users().map(|u| u.to_avro().unwrap()))
                .collect()
        };
        assert_eq!(bytes(123), bytes(123));
        assert_ne!(bytes(123), bytes(124));
    }

    #[test]
    fn counts_do_not_affect_the_other_kind() {
        let a = Datagen::builder().seed(4).trades(1).users(5).build();
        let b = Datagen::builder().seed(4).trades(500).users(5).build();
        assert_eq!(a.users().collect::<Vec<_>>(), b.users().collect::<Vec<_>>());
        assert_eq!(Datagen::builder().trades(0).build().trades().count(), 0);
    }

    #[test]
    fn avro_bodies_round_trip() {
        for trade in TradeGenerator::new(2).take(20) {
            assert_eq!(
                StockTrade::from_avro(&trade.to_avro().unwrap()).unwrap(),
                trade
            );
        }
        for user in UserGenerator::new(2).take(20) {
            assert_eq!(User::from_avro(&user.to_avro().unwrap()).unwrap(), user);
        }
    }
}
