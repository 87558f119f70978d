//! The stockapp's stream processing, as pure functions and structs matching
//! the ksqlDB statements of the original:
//!
//! ```sql
//! CREATE TABLE stockapp_users (userid VARCHAR PRIMARY KEY) WITH (kafka_topic='stockapp.users', ...);
//! CREATE STREAM stockapp_trades_transformed AS
//!   SELECT symbol, userid,
//!          CAST(price AS DECIMAL(7,2)) * quantity / 100 AS dollar_amount,
//!          MASK(account, '*', '*', NULL, NULL) AS account_masked
//!   FROM stockapp_trades WHERE symbol LIKE '%T';
//! CREATE STREAM stockapp_trades_enriched AS
//!   SELECT t.*, u.regionid, u.interests, u.contactinfo
//!   FROM stockapp_trades_transformed t LEFT JOIN stockapp_users u ON t.userid = u.userid;
//! CREATE TABLE stockapp_dollars_by_zip_5_min AS
//!   SELECT contactinfo['zipcode'] AS zipcode, SUM(dollar_amount) AS total_dollars
//!   FROM stockapp_trades_enriched WINDOW TUMBLING (SIZE 5 MINUTES)
//!   GROUP BY contactinfo['zipcode'] EMIT CHANGES;
//! ```
//!
//! plus the Kafka Streams app that re-emits each trade as JSON
//! ([`trade_to_json`]).
//!
//! ```
//! use kafka_trace_harness::stockapp::{FilteredOut, StockProcessor, StockTrade, User};
//!
//! // Arrange: one user in 94301, a processor.
//! let mut processor = StockProcessor::<&str>::new();
//! processor.upsert_user(User {
//!     registertime: 1_500_000_000_000,
//!     userid: "User_1".into(),
//!     regionid: "Region_1".into(),
//!     gender: "OTHER".into(),
//!     interests: vec!["News".into(), "Travel".into()],
//!     contactinfo: [("zipcode".to_string(), "94301".to_string())].into(),
//! });
//! let trade = |symbol: &str| StockTrade {
//!     side: "BUY".into(),
//!     quantity: 3,
//!     symbol: symbol.into(),
//!     price: 250,
//!     account: "ABC123".into(),
//!     userid: "User_1".into(),
//! };
//!
//! // Act
//! let kept = processor.process_trade(&trade("ZVZZT"), 600_000, "first")?;
//! let dropped = processor.process_trade(&trade("ZVV"), 600_001, "second");
//!
//! // Assert
//! assert_eq!(kept.enriched.trade.account_masked, "***123");
//! assert_eq!(
//!     kept.row.to_json(),
//!     r#"{"ZIPCODE":"94301","TOTAL_DOLLARS":7.50,"WINDOW_START":600000,"WINDOW_END":900000}"#
//! );
//! assert_eq!(kept.row.contributors, ["first"]);
//! assert!(matches!(dropped, Err(FilteredOut::SymbolNotEndingInT { .. })));
//! # Ok::<(), FilteredOut>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::datagen::{StockTrade, User};

/// Size of the tumbling window: 5 minutes, in milliseconds.
pub const WINDOW_SIZE_MS: i64 = 5 * 60 * 1000;
/// Default grace period of a ksqlDB windowed aggregation without a `GRACE
/// PERIOD` clause: 24 hours.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);
/// Default bound on the contributor ids kept per window row: OpenTelemetry's
/// default limit of links per span.
pub const DEFAULT_MAX_CONTRIBUTORS: usize = 128;

/// Largest integer price that fits `DECIMAL(7,2)` (99999.99).
const DECIMAL_7_2_MAX_INTEGER: i64 = 99_999;

/// An exact amount of dollars with two decimals, held as integer cents.
///
/// `CAST(price AS DECIMAL(7,2)) * quantity / 100` with `price` an integer is
/// `price * quantity` cents exactly: the division by 100 only moves the
/// decimal point, so no rounding ever happens. (ksqlDB types the result
/// `DECIMAL(29,13)`; its value is the same, written here with scale 2.)
///
/// ```
/// use kafka_trace_harness::stockapp::DollarAmount;
///
/// let amount = DollarAmount::of_trade(999, 4999).unwrap();
///
/// assert_eq!(amount.to_string(), "49940.01");
/// assert_eq!(DollarAmount::from_cents(-5).to_string(), "-0.05");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DollarAmount {
    cents: i128,
}

impl DollarAmount {
    /// Zero dollars, the initial value of `SUM`.
    pub const ZERO: Self = Self { cents: 0 };

    /// An amount of `cents` hundredths of a dollar.
    pub const fn from_cents(cents: i128) -> Self {
        Self { cents }
    }

    /// The amount in cents.
    pub const fn cents(self) -> i128 {
        self.cents
    }

    /// `CAST(price AS DECIMAL(7,2)) * quantity / 100`, or `None` when `price`
    /// does not fit `DECIMAL(7,2)` (|price| > 99999): ksqlDB's cast then fails
    /// and the column is `NULL` for that row.
    pub fn of_trade(price: i32, quantity: i32) -> Option<Self> {
        let price = i64::from(price);
        if price.abs() > DECIMAL_7_2_MAX_INTEGER {
            return None;
        }
        // |price| < 1e5 and |quantity| <= 2^31, so the product fits i64 easily.
        Some(Self::from_cents(i128::from(price * i64::from(quantity))))
    }
}

impl std::ops::Add for DollarAmount {
    type Output = Self;

    /// Exact addition. i128 cents would need ~10^24 maximal trades to overflow.
    fn add(self, other: Self) -> Self {
        Self::from_cents(self.cents + other.cents)
    }
}

impl std::iter::Sum for DollarAmount {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, |a, b| a + b)
    }
}

impl fmt::Display for DollarAmount {
    /// Plain decimal text with exactly two decimals, valid as a JSON number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.cents < 0 { "-" } else { "" };
        let abs = self.cents.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// ksqlDB's `MASK(account, '*', '*', NULL, NULL)`: upper- and lower-case
/// letters become `*`; digits and every other character are kept (a `NULL`
/// mask argument means "leave this class as is").
///
/// ```
/// use kafka_trace_harness::stockapp::mask_account;
///
/// assert_eq!(mask_account("ABC123"), "***123");
/// assert_eq!(mask_account("xY-9 é"), "**-9 *");
/// ```
pub fn mask_account(account: &str) -> String {
    account
        .chars()
        .map(|c| {
            if c.is_uppercase() || c.is_lowercase() {
                '*'
            } else {
                c
            }
        })
        .collect()
}

/// `symbol LIKE '%T'`: case-sensitive, so only an upper-case `T` at the end.
pub fn symbol_is_kept(symbol: &str) -> bool {
    symbol.ends_with('T')
}

/// The Kafka Streams app's JSON form of a trade (`stockapp.trades-json`),
/// fields in schema order.
///
/// ```
/// use kafka_trace_harness::stockapp::{StockTrade, trade_to_json};
///
/// let trade = StockTrade {
///     side: "SELL".into(),
///     quantity: 10,
///     symbol: "ZTEST".into(),
///     price: 42,
///     account: "XYZ789".into(),
///     userid: "User_2".into(),
/// };
///
/// assert_eq!(
///     trade_to_json(&trade),
///     r#"{"side":"SELL","quantity":10,"symbol":"ZTEST","price":42,"account":"XYZ789","userid":"User_2"}"#
/// );
/// ```
pub fn trade_to_json(trade: &StockTrade) -> String {
    format!(
        r#"{{"side":{},"quantity":{},"symbol":{},"price":{},"account":{},"userid":{}}}"#,
        json_string(&trade.side),
        trade.quantity,
        json_string(&trade.symbol),
        trade.price,
        json_string(&trade.account),
        json_string(&trade.userid),
    )
}

/// `s` as a JSON string literal (quoted and escaped). Going through
/// `serde_json::Value`'s `Display` keeps this infallible.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Why a trade produced no `stockapp.dollarsbyzip` row. The `Display` text is
/// meant for a span attribute or a log line; [`FilteredOut::code`] is a short
/// stable identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilteredOut {
    /// ksqlDB skips records with a negative timestamp (it logs and skips
    /// rather than failing, `ksql.timestamp.throw.on.invalid=false`).
    #[error("record timestamp {timestamp_ms} is negative, so ksqlDB skips the record")]
    InvalidTimestamp {
        /// The record's timestamp.
        timestamp_ms: i64,
    },
    /// The record's timestamp is so late (near `i64::MAX` ms) that its
    /// 5-minute window would end past the largest timestamp: bad input, not
    /// a filter of the query, so the trade's span is an error; the stream
    /// time is left as it was.
    #[error(
        "record timestamp {timestamp_ms} is out of range: its window would end past i64::MAX ms"
    )]
    TimestampOutOfRange {
        /// The record's timestamp.
        timestamp_ms: i64,
    },
    /// `WHERE symbol LIKE '%T'` is false.
    #[error("symbol {symbol:?} does not end in 'T'")]
    SymbolNotEndingInT {
        /// The trade's symbol.
        symbol: String,
    },
    /// The LEFT JOIN found no user, so `contactinfo['zipcode']` is `NULL`
    /// and `GROUP BY` drops the row.
    #[error("no user {userid:?} in the users table, so the zip code is NULL")]
    UnknownUser {
        /// The trade's user id.
        userid: String,
    },
    /// The user's `contactinfo` has no `zipcode`, so `GROUP BY` drops the row.
    #[error("user {userid:?} has no contactinfo['zipcode']")]
    NoZipCode {
        /// The trade's user id.
        userid: String,
    },
    /// The trade's window closed (its end plus the grace period is not after
    /// the latest timestamp seen), so the windowed aggregation drops it.
    #[error(
        "window [{window_start}, {window_end}) is closed: stream time {stream_time_ms} \
         is past its end plus the grace period"
    )]
    WindowClosed {
        /// Start of the trade's window.
        window_start: i64,
        /// End of the trade's window.
        window_end: i64,
        /// Largest timestamp the aggregation had seen.
        stream_time_ms: i64,
    },
}

impl FilteredOut {
    /// A short stable identifier, e.g. `symbol_not_ending_in_t`.
    ///
    /// ```
    /// use kafka_trace_harness::stockapp::FilteredOut;
    ///
    /// let why = FilteredOut::SymbolNotEndingInT { symbol: "ZVV".into() };
    ///
    /// assert_eq!(why.code(), "symbol_not_ending_in_t");
    /// assert_eq!(why.to_string(), r#"symbol "ZVV" does not end in 'T'"#);
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidTimestamp { .. } => "invalid_timestamp",
            Self::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            Self::SymbolNotEndingInT { .. } => "symbol_not_ending_in_t",
            Self::UnknownUser { .. } => "unknown_user",
            Self::NoZipCode { .. } => "no_zip_code",
            Self::WindowClosed { .. } => "window_closed",
        }
    }

    /// Whether the trade was bad input (an error span), rather than a row
    /// the query filters out.
    pub fn is_error(&self) -> bool {
        matches!(self, Self::TimestampOutOfRange { .. })
    }
}

/// A row of `stockapp_trades_transformed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformedTrade {
    /// The trade's symbol.
    pub symbol: String,
    /// The trade's user id (the join key).
    pub userid: String,
    /// `CAST(price AS DECIMAL(7,2)) * quantity / 100`; `None` is SQL `NULL`
    /// (price outside `DECIMAL(7,2)`), which `SUM` ignores.
    pub dollar_amount: Option<DollarAmount>,
    /// `MASK(account, '*', '*', NULL, NULL)`.
    pub account_masked: String,
}

impl TransformedTrade {
    /// The `stockapp_trades_transformed` row of `trade`, or why the `WHERE`
    /// clause drops it.
    ///
    /// ```
    /// use kafka_trace_harness::stockapp::{StockTrade, TransformedTrade};
    ///
    /// let trade = StockTrade {
    ///     side: "BUY".into(),
    ///     quantity: 5000,
    ///     symbol: "ZXZZT".into(),
    ///     price: 1000,
    ///     account: "LMN456".into(),
    ///     userid: "User_9".into(),
    /// };
    ///
    /// let row = TransformedTrade::from_trade(&trade)?;
    ///
    /// assert_eq!(row.dollar_amount.unwrap().to_string(), "50000.00");
    /// assert_eq!(row.account_masked, "***456");
    /// # Ok::<(), kafka_trace_harness::stockapp::FilteredOut>(())
    /// ```
    pub fn from_trade(trade: &StockTrade) -> Result<Self, FilteredOut> {
        if !symbol_is_kept(&trade.symbol) {
            return Err(FilteredOut::SymbolNotEndingInT {
                symbol: trade.symbol.clone(),
            });
        }
        Ok(Self {
            symbol: trade.symbol.clone(),
            userid: trade.userid.clone(),
            dollar_amount: DollarAmount::of_trade(trade.price, trade.quantity),
            account_masked: mask_account(&trade.account),
        })
    }
}

/// A row of `stockapp_trades_enriched`: the transformed trade LEFT JOINed
/// with the users table. The user columns are `None` when no user matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichedTrade {
    /// The transformed trade.
    pub trade: TransformedTrade,
    /// The user's `regionid`.
    pub regionid: Option<String>,
    /// The user's `interests`.
    pub interests: Option<Vec<String>>,
    /// The user's `contactinfo`.
    pub contactinfo: Option<BTreeMap<String, String>>,
}

impl EnrichedTrade {
    /// `contactinfo['zipcode']`, the `GROUP BY` key.
    pub fn zipcode(&self) -> Option<&str> {
        self.contactinfo
            .as_ref()?
            .get("zipcode")
            .map(String::as_str)
    }

    /// Whether the join found a user.
    pub fn has_user(&self) -> bool {
        self.regionid.is_some()
    }
}

/// The `stockapp_users` table: the latest profile per `userid`, in arrival
/// order (a later record replaces an earlier one whatever its
/// `registertime`).
///
/// ```
/// use kafka_trace_harness::stockapp::{UsersTable, UserGenerator};
///
/// let mut users = UsersTable::default();
/// let mut profiles = UserGenerator::new(1);
/// let mut first = profiles.next().unwrap();
/// let mut second = profiles.next().unwrap();
/// first.userid = "User_1".into();
/// second.userid = "User_1".into();
///
/// users.upsert(first);
/// users.upsert(second.clone());
///
/// assert_eq!(users.get("User_1"), Some(&second));
/// assert_eq!(users.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersTable {
    users: HashMap<String, User>,
}

impl UsersTable {
    /// Stores `user` as the latest profile of its `userid` (the datagen key);
    /// returns the profile it replaced.
    pub fn upsert(&mut self, user: User) -> Option<User> {
        self.users.insert(user.userid.clone(), user)
    }

    /// Removes the profile of `userid` (a tombstone on `stockapp.users`).
    pub fn remove(&mut self, userid: &str) -> Option<User> {
        self.users.remove(userid)
    }

    /// The latest profile of `userid`.
    pub fn get(&self, userid: &str) -> Option<&User> {
        self.users.get(userid)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The LEFT JOIN of `trade` with this table on `userid`.
    pub fn enrich(&self, trade: TransformedTrade) -> EnrichedTrade {
        let user = self.users.get(&trade.userid);
        EnrichedTrade {
            regionid: user.map(|u| u.regionid.clone()),
            interests: user.map(|u| u.interests.clone()),
            contactinfo: user.map(|u| u.contactinfo.clone()),
            trade,
        }
    }
}

/// The start of the 5-minute tumbling window holding `timestamp_ms` (>= 0).
///
/// ```
/// use kafka_trace_harness::stockapp::processor::window_start;
///
/// assert_eq!(window_start(299_999), 0);
/// assert_eq!(window_start(300_000), 300_000);
/// ```
pub fn window_start(timestamp_ms: i64) -> i64 {
    timestamp_ms - timestamp_ms.rem_euclid(WINDOW_SIZE_MS)
}

/// One row of `stockapp_dollars_by_zip_5_min`: a zip code's total in one
/// window, plus the ids of the trades that made it (for span links).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow<Id> {
    /// The zip code; also the Kafka key of the emitted record.
    pub zipcode: String,
    /// Window start, epoch ms, inclusive.
    pub window_start: i64,
    /// Window end, epoch ms, exclusive (`window_start` + 5 minutes).
    pub window_end: i64,
    /// `SUM(dollar_amount)`.
    pub total_dollars: DollarAmount,
    /// How many trades were aggregated into this row (not bounded).
    pub contributions: u64,
    /// Ids of the most recent contributing trades, oldest first, at most the
    /// processor's `max_contributors`; the last one is the trade that caused
    /// this update.
    pub contributors: Vec<Id>,
}

impl<Id> WindowRow<Id> {
    /// The Kafka key of the emitted record: the zip code.
    pub fn key(&self) -> &str {
        &self.zipcode
    }

    /// The JSON value emitted to `stockapp.dollarsbyzip`, with
    /// `TOTAL_DOLLARS` as an exact number with two decimals.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"ZIPCODE":{},"TOTAL_DOLLARS":{},"WINDOW_START":{},"WINDOW_END":{}}}"#,
            json_string(&self.zipcode),
            self.total_dollars,
            self.window_start,
            self.window_end,
        )
    }

    /// How many contributions are not in [`WindowRow::contributors`] any more
    /// (a span would record them as dropped links).
    pub fn dropped_contributors(&self) -> u64 {
        self.contributions
            .saturating_sub(self.contributors.len() as u64)
    }
}

/// What a kept trade produced: its enriched row and its window's updated
/// row (EMIT CHANGES: every input emits its row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowUpdate<Id> {
    /// The `stockapp_trades_enriched` row.
    pub enriched: EnrichedTrade,
    /// The window row after this trade, as emitted.
    pub row: WindowRow<Id>,
}

impl<Id> WindowUpdate<Id> {
    /// Contributors before this trade, the targets of its span links.
    pub fn earlier_contributors(&self) -> &[Id] {
        let ids = &self.row.contributors;
        &ids[..ids.len().saturating_sub(1)]
    }
}

/// The ksqlDB part of the stockapp as a state machine: feed it users and
/// trades in arrival order; each trade yields its window's updated row or
/// why there is none. `Id` identifies trades (an offset, a span context...).
///
/// Windows whose end plus the grace period is behind the stream time are
/// evicted, since any trade for them would be dropped anyway; memory stays
/// bounded for any stream.
#[derive(Debug, Clone)]
pub struct StockProcessor<Id> {
    users: UsersTable,
    windows: HashMap<(String, i64), WindowRow<Id>>,
    /// Largest timestamp the aggregation has seen (Kafka Streams' observed
    /// stream time); `None` before the first aggregated trade.
    stream_time_ms: Option<i64>,
    grace_ms: i64,
    max_contributors: usize,
}

impl<Id: Clone> Default for StockProcessor<Id> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Id: Clone> StockProcessor<Id> {
    /// A processor with the defaults of [`StockProcessor::builder`].
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder with the defaults: grace period [`DEFAULT_GRACE_PERIOD`],
    /// [`DEFAULT_MAX_CONTRIBUTORS`] contributor ids per row.
    pub fn builder() -> StockProcessorBuilder<Id> {
        StockProcessorBuilder {
            grace_period: DEFAULT_GRACE_PERIOD,
            max_contributors: DEFAULT_MAX_CONTRIBUTORS,
            id: PhantomData,
        }
    }

    /// The users table.
    pub fn users(&self) -> &UsersTable {
        &self.users
    }

    /// Applies a `stockapp.users` record; returns the profile it replaced.
    pub fn upsert_user(&mut self, user: User) -> Option<User> {
        self.users.upsert(user)
    }

    /// Applies a tombstone for `userid`; returns the removed profile.
    pub fn remove_user(&mut self, userid: &str) -> Option<User> {
        self.users.remove(userid)
    }

    /// The current row of `zipcode`'s window starting at `window_start`.
    pub fn window_row(&self, zipcode: &str, window_start: i64) -> Option<&WindowRow<Id>> {
        self.windows.get(&(zipcode.to_owned(), window_start))
    }

    /// The open window rows, in no particular order.
    pub fn window_rows(&self) -> impl Iterator<Item = &WindowRow<Id>> {
        self.windows.values()
    }

    /// Runs one `stockapp.trades` record with timestamp `timestamp_ms`
    /// through filter, transform, join and the windowed sum.
    pub fn process_trade(
        &mut self,
        trade: &StockTrade,
        timestamp_ms: i64,
        id: Id,
    ) -> Result<WindowUpdate<Id>, FilteredOut> {
        if timestamp_ms < 0 {
            return Err(FilteredOut::InvalidTimestamp { timestamp_ms });
        }
        let window_start = window_start(timestamp_ms);
        let Some(window_end) = window_start.checked_add(WINDOW_SIZE_MS) else {
            return Err(FilteredOut::TimestampOutOfRange { timestamp_ms });
        };
        let transformed = TransformedTrade::from_trade(trade)?;
        let enriched = self.users.enrich(transformed);
        let Some(zipcode) = enriched.zipcode() else {
            let userid = enriched.trade.userid.clone();
            return Err(if enriched.has_user() {
                FilteredOut::NoZipCode { userid }
            } else {
                FilteredOut::UnknownUser { userid }
            });
        };
        let zipcode = zipcode.to_owned();

        let previous_stream_time = self.stream_time_ms;
        let stream_time_ms = previous_stream_time.map_or(timestamp_ms, |t| t.max(timestamp_ms));
        self.stream_time_ms = Some(stream_time_ms);
        let close_time = stream_time_ms.saturating_sub(self.grace_ms);
        if previous_stream_time != Some(stream_time_ms) {
            // Only a later stream time can close windows.
            self.windows.retain(|_, row| row.window_end > close_time);
        }
        if window_end <= close_time {
            return Err(FilteredOut::WindowClosed {
                window_start,
                window_end,
                stream_time_ms,
            });
        }
        let row = self
            .windows
            .entry((zipcode.clone(), window_start))
            .or_insert_with(|| WindowRow {
                zipcode,
                window_start,
                window_end,
                total_dollars: DollarAmount::ZERO,
                contributions: 0,
                contributors: Vec::new(),
            });
        if let Some(amount) = enriched.trade.dollar_amount {
            row.total_dollars = row.total_dollars + amount;
        }
        row.contributions += 1;
        if self.max_contributors > 0 {
            if row.contributors.len() >= self.max_contributors {
                let excess = row.contributors.len() + 1 - self.max_contributors;
                row.contributors.drain(..excess);
            }
            row.contributors.push(id);
        }
        Ok(WindowUpdate {
            enriched,
            row: row.clone(),
        })
    }
}

/// Builder of [`StockProcessor`]; see [`StockProcessor::builder`] for the
/// defaults.
///
/// ```
/// use std::time::Duration;
/// use kafka_trace_harness::stockapp::StockProcessor;
///
/// let processor = StockProcessor::<u64>::builder()
///     .grace_period(Duration::ZERO)
///     .max_contributors(16)
///     .build();
/// # let _ = processor;
/// ```
#[derive(Debug, Clone)]
pub struct StockProcessorBuilder<Id> {
    grace_period: Duration,
    max_contributors: usize,
    id: PhantomData<fn() -> Id>,
}

impl<Id: Clone> StockProcessorBuilder<Id> {
    /// How long after its end a window still accepts late trades (ksqlDB's
    /// `GRACE PERIOD`). Default [`DEFAULT_GRACE_PERIOD`], ksqlDB's default
    /// when the statement has none, as in the stockapp. Longer than
    /// `i64::MAX` ms counts as forever.
    pub fn grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }

    /// How many contributor ids each window row keeps (the most recent
    /// ones). Default [`DEFAULT_MAX_CONTRIBUTORS`]; 0 keeps none.
    pub fn max_contributors(mut self, max_contributors: usize) -> Self {
        self.max_contributors = max_contributors;
        self
    }

    /// The configured processor.
    pub fn build(self) -> StockProcessor<Id> {
        StockProcessor {
            users: UsersTable::default(),
            windows: HashMap::new(),
            stream_time_ms: None,
            grace_ms: i64::try_from(self.grace_period.as_millis()).unwrap_or(i64::MAX),
            max_contributors: self.max_contributors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(userid: &str, zipcode: Option<&str>) -> User {
        let mut contactinfo = BTreeMap::from([("city".to_owned(), "Somewhere".to_owned())]);
        if let Some(zip) = zipcode {
            contactinfo.insert("zipcode".to_owned(), zip.to_owned());
        }
        User {
            registertime: 1_500_000_000_000,
            userid: userid.to_owned(),
            regionid: "Region_3".to_owned(),
            gender: "FEMALE".to_owned(),
            interests: vec!["Game".to_owned(), "Sport".to_owned()],
            contactinfo,
        }
    }

    fn trade(symbol: &str, userid: &str, price: i32, quantity: i32) -> StockTrade {
        StockTrade {
            side: "BUY".to_owned(),
            quantity,
            symbol: symbol.to_owned(),
            price,
            account: "ABC123".to_owned(),
            userid: userid.to_owned(),
        }
    }

    fn processor() -> StockProcessor<u32> {
        let mut processor = StockProcessor::new();
        processor.upsert_user(user("User_1", Some("94403")));
        processor.upsert_user(user("User_2", Some("92617")));
        processor.upsert_user(user("User_3", None));
        processor
    }

    #[test]
    fn mask_replaces_letters_only() {
        assert_eq!(mask_account("ABC123"), "***123");
        assert_eq!(mask_account("LMN456"), "***456");
        assert_eq!(mask_account("XYZ789"), "***789");
        assert_eq!(mask_account("aBc-12_z!"), "***-12_*!");
        assert_eq!(mask_account("ÄöΣ9"), "***9");
        assert_eq!(mask_account(""), "");
        assert_eq!(mask_account("12 34"), "12 34");
    }

    #[test]
    fn like_percent_t_is_a_case_sensitive_suffix_match() {
        for kept in ["ZJZZT", "ZTEST", "ZVZZT", "ZWZZT", "ZXZZT", "T"] {
            assert!(symbol_is_kept(kept), "{kept}");
        }
        for dropped in ["ZBZX", "ZVV", "ZTESt", "", "ZT "] {
            assert!(!symbol_is_kept(dropped), "{dropped}");
        }
    }

    #[test]
    fn dollar_amounts_are_exact() {
        let cases = [
            (5, 1, "0.05"),
            (1000, 5000, "50000.00"),
            (999, 4999, "49940.01"),
            (100, 1, "1.00"),
            (1, 1, "0.01"),
            (0, 7, "0.00"),
            (-5, 3, "-0.15"),
            (7, -100, "-7.00"),
            (99_999, i32::MAX, "2147462172163.53"),
            (-99_999, i32::MIN, "2147462173163.52"),
        ];
        for (price, quantity, text) in cases {
            let amount = DollarAmount::of_trade(price, quantity);
            let amount = amount.map(|a| a.to_string());
            assert_eq!(amount.as_deref(), Some(text), "{price} * {quantity}");
        }
        // Does not fit DECIMAL(7,2): NULL.
        assert_eq!(DollarAmount::of_trade(100_000, 1), None);
        assert_eq!(DollarAmount::of_trade(i32::MIN, 1), None);
        assert_eq!(
            DollarAmount::of_trade(1000, 5000).unwrap().cents(),
            5_000_000
        );
    }

    #[test]
    fn dollar_sums_do_not_drift() {
        // 0.01 added 10_000 times is 100.00, which f64 does not give.
        let total: DollarAmount = std::iter::repeat_n(DollarAmount::from_cents(1), 10_000).sum();
        assert_eq!(total.to_string(), "100.00");
        assert_eq!(DollarAmount::from_cents(-100).to_string(), "-1.00");
        assert_eq!(DollarAmount::ZERO.to_string(), "0.00");
        assert_eq!(
            DollarAmount::from_cents(i128::MIN).to_string(),
            "-1701411834604692317316873037158841057.28"
        );
    }

    #[test]
    fn transform_keeps_symbol_userid_amount_and_masked_account() {
        let row = TransformedTrade::from_trade(&trade("ZTEST", "User_4", 250, 4)).unwrap();
        assert_eq!(
            row,
            TransformedTrade {
                symbol: "ZTEST".to_owned(),
                userid: "User_4".to_owned(),
                dollar_amount: Some(DollarAmount::from_cents(1000)),
                account_masked: "***123".to_owned(),
            }
        );
        assert_eq!(
            TransformedTrade::from_trade(&trade("ZBZX", "User_4", 1, 1)),
            Err(FilteredOut::SymbolNotEndingInT {
                symbol: "ZBZX".to_owned()
            })
        );
    }

    #[test]
    fn left_join_with_and_without_user() {
        let mut users = UsersTable::default();
        users.upsert(user("User_1", Some("94403")));
        let transformed =
            |userid| TransformedTrade::from_trade(&trade("ZTEST", userid, 5, 1)).unwrap();

        let joined = users.enrich(transformed("User_1"));
        assert!(joined.has_user());
        assert_eq!(joined.regionid.as_deref(), Some("Region_3"));
        assert_eq!(
            joined.interests.as_deref(),
            Some(&["Game".to_owned(), "Sport".to_owned()][..])
        );
        assert_eq!(joined.zipcode(), Some("94403"));

        let unjoined = users.enrich(transformed("User_7"));
        assert!(!unjoined.has_user());
        assert_eq!(unjoined.trade, transformed("User_7"));
        assert_eq!(
            (unjoined.regionid, unjoined.interests, unjoined.contactinfo),
            (None, None, None)
        );
    }

    #[test]
    fn latest_profile_wins_and_tombstones_remove() {
        let mut processor = processor();
        let t = trade("ZVZZT", "User_1", 100, 1);
        let first = processor.process_trade(&t, 0, 1).unwrap();
        assert_eq!(first.row.zipcode, "94403");

        // User_1 moves to 95112: the next trade goes to the new zip.
        assert!(
            processor
                .upsert_user(user("User_1", Some("95112")))
                .is_some()
        );
        let second = processor.process_trade(&t, 1, 2).unwrap();
        assert_eq!(second.row.zipcode, "95112");
        assert_eq!(second.row.total_dollars.to_string(), "1.00");
        assert_eq!(
            processor
                .window_row("94403", 0)
                .unwrap()
                .total_dollars
                .to_string(),
            "1.00"
        );

        assert!(processor.remove_user("User_1").is_some());
        assert_eq!(
            processor.process_trade(&t, 2, 3),
            Err(FilteredOut::UnknownUser {
                userid: "User_1".to_owned()
            })
        );
    }

    #[test]
    fn zipless_and_userless_rows_are_dropped() {
        let mut processor = processor();
        assert_eq!(
            processor.process_trade(&trade("ZVZZT", "User_3", 5, 1), 0, 1),
            Err(FilteredOut::NoZipCode {
                userid: "User_3".to_owned()
            })
        );
        assert_eq!(
            processor.process_trade(&trade("ZVZZT", "User_9", 5, 1), 0, 2),
            Err(FilteredOut::UnknownUser {
                userid: "User_9".to_owned()
            })
        );
        assert_eq!(processor.window_rows().count(), 0);
    }

    #[test]
    fn filter_runs_before_join() {
        let mut processor = processor();
        let err = processor
            .process_trade(&trade("ZVV", "User_9", 5, 1), 0, 1)
            .unwrap_err();
        assert_eq!(err.code(), "symbol_not_ending_in_t");
    }

    #[test]
    fn negative_timestamps_are_skipped() {
        let mut processor = processor();
        assert_eq!(
            processor.process_trade(&trade("ZVZZT", "User_1", 5, 1), -1, 1),
            Err(FilteredOut::InvalidTimestamp { timestamp_ms: -1 })
        );
    }

    #[test]
    fn windows_are_tumbling_at_exact_five_minute_edges() {
        let mut processor = processor();
        let t = trade("ZVZZT", "User_1", 100, 1);
        let base = 1_700_000_100_000; // a multiple of 300_000
        assert_eq!(base % WINDOW_SIZE_MS, 0);
        let cases = [
            (base - 1, base - WINDOW_SIZE_MS),
            (base, base),
            (base + 1, base),
            (base + WINDOW_SIZE_MS - 1, base),
            (base + WINDOW_SIZE_MS, base + WINDOW_SIZE_MS),
        ];
        for (i, (ts, start)) in cases.into_iter().enumerate() {
            let update = processor.process_trade(&t, ts, i as u32).unwrap();
            assert_eq!(
                (update.row.window_start, update.row.window_end),
                (start, start + WINDOW_SIZE_MS),
                "{ts}"
            );
        }
        let row = processor.window_row("94403", base).unwrap();
        assert_eq!(row.total_dollars.to_string(), "3.00");
        assert_eq!(row.contributors, [1, 2, 3]);
        assert_eq!(window_start(0), 0);
        assert_eq!(window_start(WINDOW_SIZE_MS), WINDOW_SIZE_MS);
    }

    #[test]
    fn every_kept_trade_emits_its_updated_row() {
        let mut processor = processor();
        let amounts = [(123, 45), (999, 4999), (5, 1)];
        let mut expected = 0;
        for (i, (price, quantity)) in amounts.into_iter().enumerate() {
            let update = processor
                .process_trade(
                    &trade("ZJZZT", "User_2", price, quantity),
                    600_000 + i as i64,
                    i as u32,
                )
                .unwrap();
            expected += i128::from(price * quantity);
            assert_eq!(update.row.total_dollars.cents(), expected);
            assert_eq!(update.row.key(), "92617");
            assert_eq!(
                update.earlier_contributors(),
                (0..i as u32).collect::<Vec<_>>()
            );
        }
        let row = processor.window_row("92617", 600_000).unwrap();
        assert_eq!(
            row.to_json(),
            r#"{"ZIPCODE":"92617","TOTAL_DOLLARS":49995.41,"WINDOW_START":600000,"WINDOW_END":900000}"#
        );
        let json: serde_json::Value = serde_json::from_str(&row.to_json()).unwrap();
        assert_eq!(json["WINDOW_END"], 900_000);
    }

    #[test]
    fn null_dollar_amounts_count_as_nothing() {
        let mut processor = processor();
        let update = processor
            .process_trade(&trade("ZJZZT", "User_2", 100_000, 1), 0, 1)
            .unwrap();
        assert_eq!(update.enriched.trade.dollar_amount, None);
        assert_eq!(update.row.total_dollars, DollarAmount::ZERO);
        assert_eq!(update.row.contributions, 1);
    }

    #[test]
    fn contributors_keep_the_most_recent_ones() {
        let mut processor = StockProcessor::<u32>::builder().max_contributors(3).build();
        processor.upsert_user(user("User_1", Some("94403")));
        let t = trade("ZVZZT", "User_1", 5, 1);
        let mut last = None;
        for id in 0..5 {
            last = Some(processor.process_trade(&t, 10, id).unwrap());
        }
        let last = last.unwrap();
        assert_eq!(last.row.contributors, [2, 3, 4]);
        assert_eq!(last.earlier_contributors(), [2, 3]);
        assert_eq!(
            (last.row.contributions, last.row.dropped_contributors()),
            (5, 2)
        );

        let default = StockProcessor::<u32>::new();
        assert_eq!(default.max_contributors, DEFAULT_MAX_CONTRIBUTORS);
        let mut none = StockProcessor::<u32>::builder().max_contributors(0).build();
        none.upsert_user(user("User_1", Some("94403")));
        assert!(
            none.process_trade(&t, 0, 1)
                .unwrap()
                .row
                .contributors
                .is_empty()
        );
    }

    #[test]
    fn contributors_are_bounded_by_default() {
        let mut processor = processor();
        let t = trade("ZVZZT", "User_1", 5, 1);
        for id in 0..300 {
            let update = processor.process_trade(&t, 0, id).unwrap();
            assert!(update.row.contributors.len() <= 128);
            assert_eq!(update.row.contributors.last(), Some(&id));
        }
    }

    #[test]
    fn late_trades_after_the_grace_period_are_dropped() {
        let mut processor = StockProcessor::<u32>::builder()
            .grace_period(Duration::from_secs(60))
            .build();
        processor.upsert_user(user("User_1", Some("94403")));
        let t = trade("ZVZZT", "User_1", 5, 1);
        processor.process_trade(&t, 0, 1).unwrap();
        // Stream time 359_999: window [0, 300_000) closes at 360_000.
        processor.process_trade(&t, 359_999, 2).unwrap();
        processor.process_trade(&t, 1, 3).unwrap();
        processor.process_trade(&t, 360_000, 4).unwrap();
        assert_eq!(
            processor.process_trade(&t, 2, 5),
            Err(FilteredOut::WindowClosed {
                window_start: 0,
                window_end: 300_000,
                stream_time_ms: 360_000
            })
        );
        assert!(
            processor.window_row("94403", 0).is_none(),
            "closed windows are evicted"
        );
        // The default grace period is 24 hours.
        let mut processor = self::processor();
        processor.process_trade(&t, 0, 1).unwrap();
        processor
            .process_trade(&t, 24 * 3_600_000 + 299_999, 2)
            .unwrap();
        processor.process_trade(&t, 0, 3).unwrap();
        processor
            .process_trade(&t, 24 * 3_600_000 + 300_000, 4)
            .unwrap();
        assert!(processor.process_trade(&t, 0, 5).is_err());
    }

    #[test]
    fn trade_json_escapes_strings() {
        let mut t = trade("Z\"T", "User_1", 5, 1);
        t.account = "a\\b\n".to_owned();
        let json: serde_json::Value = serde_json::from_str(&trade_to_json(&t)).unwrap();
        assert_eq!(json["symbol"], "Z\"T");
        assert_eq!(json["account"], "a\\b\n");
        assert_eq!(json["quantity"], 1);
        let back: StockTrade = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn filtered_out_reasons_have_codes_and_messages() {
        let reasons = [
            FilteredOut::InvalidTimestamp { timestamp_ms: -1 },
            FilteredOut::TimestampOutOfRange {
                timestamp_ms: i64::MAX,
            },
            FilteredOut::SymbolNotEndingInT {
                symbol: "ZVV".into(),
            },
            FilteredOut::UnknownUser {
                userid: "User_1".into(),
            },
            FilteredOut::NoZipCode {
                userid: "User_1".into(),
            },
            FilteredOut::WindowClosed {
                window_start: 0,
                window_end: 1,
                stream_time_ms: 2,
            },
        ];
        let codes: std::collections::BTreeSet<_> = reasons.iter().map(FilteredOut::code).collect();
        assert_eq!(codes.len(), reasons.len());
        assert!(reasons.iter().all(|r| !r.to_string().is_empty()));
    }

    #[test]
    fn a_timestamp_whose_window_cannot_end_is_an_error_not_an_overflow() {
        let mut processor = self::processor();
        processor.upsert_user(user("User_1", Some("94403")));
        let t = trade("ZVZZT", "User_1", 5, 1);
        processor.process_trade(&t, 600_000, 1).unwrap();
        let last_window = i64::MAX - i64::MAX.rem_euclid(WINDOW_SIZE_MS);
        for timestamp_ms in [i64::MAX, i64::MAX - 1, last_window] {
            let outcome = processor.process_trade(&t, timestamp_ms, 2);
            assert_eq!(
                outcome,
                Err(FilteredOut::TimestampOutOfRange { timestamp_ms })
            );
            assert!(outcome.unwrap_err().is_error());
        }
        // The bad timestamps moved no stream time: the open window still takes trades.
        assert!(processor.process_trade(&t, 600_001, 3).is_ok());
        // The latest window that can end still works.
        let fits = last_window - 1;
        let update = processor.process_trade(&t, fits, 4).unwrap();
        assert_eq!(update.row.window_end, last_window);
    }

    proptest::proptest! {
        /// Any timestamps, prices and quantities: an outcome, never a panic.
        #[test]
        fn no_input_panics(
            trades in proptest::collection::vec(
                (proptest::num::i64::ANY, proptest::num::i32::ANY, proptest::num::i32::ANY),
                1..20,
            ),
        ) {
            let mut processor = self::processor();
            processor.upsert_user(user("User_1", Some("94403")));
            for (id, (timestamp_ms, price, quantity)) in (0u32..).zip(trades) {
                let t = trade("ZVZZT", "User_1", price, quantity);
                if let Ok(update) = processor.process_trade(&t, timestamp_ms, id) {
                    proptest::prop_assert!(update.row.window_start <= timestamp_ms);
                    proptest::prop_assert!(timestamp_ms < update.row.window_end);
                }
            }
        }
    }
}
