//! The Go API service of the original stockapp, minus its Kafka consumer:
//! the rows it keeps from `stockapp.dollarsbyzip` ([`ApiState`]) and the HTTP
//! server that shows them ([`ApiServer`]).
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /` | `200`, a JSON array of the latest row per (zip code, window), ordered by `WINDOW_START` then `ZIPCODE` |
//! | `GET /health` | `200`, `{"status":"ok"}` |
//!
//! Each row is served as ksqlDB emitted it:
//! `{"ZIPCODE":"94301","TOTAL_DOLLARS":7.50,"WINDOW_START":600000,"WINDOW_END":900000}`.
//!
//! Whoever consumes the topic feeds each record value to
//! [`ApiState::apply_json`]; the server answers from the same state.
//!
//! ```
//! use kafka_trace_harness::stockapp::{ApiServer, ApiState};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // Arrange: a state shared by the consumer and the server.
//! let state = ApiState::new();
//! let server = ApiServer::start(state.clone()).await?;
//!
//! // Act: the consumer applies a record value of stockapp.dollarsbyzip.
//! let row = state.apply_json(
//!     br#"{"ZIPCODE":"94301","TOTAL_DOLLARS":7.5,"WINDOW_START":600000,"WINDOW_END":900000}"#,
//! )?;
//!
//! // Assert
//! assert_eq!(row.zipcode, "94301");
//! assert_eq!(
//!     state.to_json(),
//!     r#"[{"ZIPCODE":"94301","TOTAL_DOLLARS":7.50,"WINDOW_START":600000,"WINDOW_END":900000}]"#
//! );
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! server.shutdown().await?;
//! # Ok::<(), kafka_trace_harness::stockapp::Error>(())
//! # }).unwrap();
//! ```

use super::http::HttpServer;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::watch;

use super::processor::{DollarAmount, WindowRow};
use crate::stockapp::error::{Error, Result};

/// Default port of [`ApiServerBuilder`]: 0, any free port (the original
/// service listens on 3100).
pub const DEFAULT_PORT: u16 = 0;

/// At most this many bytes of a refused value are quoted in a
/// [`DollarsByZipError`], so a huge record cannot flood a report.
const QUOTED_VALUE_LIMIT: usize = 200;

/// One row of `stockapp.dollarsbyzip` as the API service keeps it: a zip
/// code's total in one 5-minute window.
///
/// ```
/// use kafka_trace_harness::stockapp::DollarsByZipRow;
///
/// let row = DollarsByZipRow::from_json(
///     br#"{"ZIPCODE":"94403","TOTAL_DOLLARS":49940.01,"WINDOW_START":0,"WINDOW_END":300000}"#,
/// )?;
///
/// assert_eq!(row.total_dollars.cents(), 4_994_001);
/// assert_eq!(
///     row.to_json(),
///     r#"{"ZIPCODE":"94403","TOTAL_DOLLARS":49940.01,"WINDOW_START":0,"WINDOW_END":300000}"#
/// );
/// # Ok::<(), kafka_trace_harness::stockapp::DollarsByZipError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DollarsByZipRow {
    /// `ZIPCODE`, the record key.
    pub zipcode: String,
    /// `TOTAL_DOLLARS`, in whole cents.
    pub total_dollars: DollarAmount,
    /// `WINDOW_START`, epoch ms, inclusive.
    pub window_start: i64,
    /// `WINDOW_END`, epoch ms, exclusive.
    pub window_end: i64,
}

/// The JSON value as it travels on the topic; [`DollarsByZipRow`] is its
/// checked form.
#[derive(Deserialize)]
struct DollarsByZipValue {
    #[serde(rename = "ZIPCODE")]
    zipcode: String,
    #[serde(rename = "TOTAL_DOLLARS")]
    total_dollars: f64,
    #[serde(rename = "WINDOW_START")]
    window_start: i64,
    #[serde(rename = "WINDOW_END")]
    window_end: i64,
}

/// Why a `stockapp.dollarsbyzip` value was refused. Each variant quotes the
/// value (at most 200 bytes of it, lossily decoded), and its message stays
/// short whatever the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DollarsByZipError {
    /// Not JSON, or not an object with the four fields and their types.
    #[error(
        "stockapp.dollarsbyzip value is not {{\"ZIPCODE\": string, \"TOTAL_DOLLARS\": number, \
         \"WINDOW_START\": integer, \"WINDOW_END\": integer}}: {}; value: {value}",
        json_reason(.source)
    )]
    Json {
        /// The start of the value.
        value: String,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// `TOTAL_DOLLARS` has a fraction of a cent, so it is not a sum of
    /// `DECIMAL(7,2)` amounts, or it is too large to count in cents.
    #[error("TOTAL_DOLLARS {total} is not a whole number of cents within 128 bits; value: {value}")]
    NotWholeCents {
        /// `TOTAL_DOLLARS` as read.
        total: f64,
        /// The start of the value.
        value: String,
    },
    /// `WINDOW_END` is not after `WINDOW_START`.
    #[error("window [{window_start}, {window_end}) is empty; value: {value}")]
    EmptyWindow {
        /// `WINDOW_START`.
        window_start: i64,
        /// `WINDOW_END`.
        window_end: i64,
        /// The start of the value.
        value: String,
    },
}

/// serde_json's message, shortened: it quotes a mistyped string whole
/// (`invalid type: string "…"`), so a huge value would flood a report.
/// Found by the `dollarsbyzip_json` fuzz target.
fn json_reason(error: &serde_json::Error) -> String {
    let reason = error.to_string();
    match reason.char_indices().nth(QUOTED_VALUE_LIMIT) {
        None => reason,
        Some((cut, _)) => format!(
            "{}… at line {} column {}",
            &reason[..cut],
            error.line(),
            error.column()
        ),
    }
}

#[cfg(test)]
mod json_reason_tests {
    use super::DollarsByZipRow;

    #[test]
    fn a_huge_mistyped_field_gives_a_short_report() {
        let value = format!(
            r#"{{"ZIPCODE":"1","TOTAL_DOLLARS":1,"WINDOW_START":"{}","WINDOW_END":2}}"#,
            "a".repeat(3_000)
        );
        let report = DollarsByZipRow::from_json(value.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(report.len() < 800, "{} bytes: {report}", report.len());
        assert!(report.contains("invalid type: string"), "{report}");
        assert!(report.contains("at line 1 column 3050"), "{report}");
    }
}

/// The start of `value` as text, for error messages.
fn quote(value: &[u8]) -> String {
    let cut = &value[..value.len().min(QUOTED_VALUE_LIMIT)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if value.len() > QUOTED_VALUE_LIMIT {
        text.push('…');
    }
    text
}

/// `dollars` in exact cents, or `None` when it has a fraction of a cent.
///
/// The f64 serde_json read is the nearest to the decimal text, and Rust
/// prints the shortest text that reads back as the same f64, which is the
/// original text for any total of up to 15 significant digits. Going through
/// that text avoids the rounding error of `dollars * 100.0`.
fn whole_cents(dollars: f64) -> Option<DollarAmount> {
    if !dollars.is_finite() {
        return None;
    }
    // f64's Display never uses an exponent.
    let text = dollars.abs().to_string();
    let (units, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 2 {
        return None;
    }
    let units: i128 = units.parse().ok()?;
    let fraction: i128 = format!("{fraction:0<2}").parse().ok()?;
    let cents = units.checked_mul(100)?.checked_add(fraction)?;
    Some(DollarAmount::from_cents(if dollars < 0.0 {
        -cents
    } else {
        cents
    }))
}

impl DollarsByZipRow {
    /// Reads a JSON value of `stockapp.dollarsbyzip`. Fields other than the
    /// four are ignored.
    pub fn from_json(value: &[u8]) -> Result<Self, DollarsByZipError> {
        let parsed: DollarsByZipValue =
            serde_json::from_slice(value).map_err(|source| DollarsByZipError::Json {
                value: quote(value),
                source,
            })?;
        let total_dollars =
            whole_cents(parsed.total_dollars).ok_or_else(|| DollarsByZipError::NotWholeCents {
                total: parsed.total_dollars,
                value: quote(value),
            })?;
        if parsed.window_end <= parsed.window_start {
            return Err(DollarsByZipError::EmptyWindow {
                window_start: parsed.window_start,
                window_end: parsed.window_end,
                value: quote(value),
            });
        }
        Ok(Self {
            zipcode: parsed.zipcode,
            total_dollars,
            window_start: parsed.window_start,
            window_end: parsed.window_end,
        })
    }

    /// The row as ksqlDB emits it, `TOTAL_DOLLARS` with two decimals: the
    /// same text as [`WindowRow::to_json`].
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"ZIPCODE":{},"TOTAL_DOLLARS":{},"WINDOW_START":{},"WINDOW_END":{}}}"#,
            serde_json::Value::String(self.zipcode.clone()),
            self.total_dollars,
            self.window_start,
            self.window_end,
        )
    }
}

impl<Id> From<&WindowRow<Id>> for DollarsByZipRow {
    fn from(row: &WindowRow<Id>) -> Self {
        Self {
            zipcode: row.zipcode.clone(),
            total_dollars: row.total_dollars,
            window_start: row.window_start,
            window_end: row.window_end,
        }
    }
}

/// Rows keyed by (window start, zip code), which is also the order served.
type Rows = BTreeMap<(i64, String), DollarsByZipRow>;

/// The API service's memory: the latest row per (zip code, window), in
/// arrival order (ksqlDB's EMIT CHANGES sends every update of a window's row,
/// and each replaces the previous one).
///
/// Clones share the same rows, so the consumer task and [`ApiServer`] each
/// hold one.
///
/// ```
/// use kafka_trace_harness::stockapp::ApiState;
///
/// let state = ApiState::new();
///
/// state.apply_json(br#"{"ZIPCODE":"94403","TOTAL_DOLLARS":1,"WINDOW_START":300000,"WINDOW_END":600000}"#)?;
/// state.apply_json(br#"{"ZIPCODE":"94301","TOTAL_DOLLARS":2,"WINDOW_START":0,"WINDOW_END":300000}"#)?;
/// state.apply_json(br#"{"ZIPCODE":"94301","TOTAL_DOLLARS":3,"WINDOW_START":0,"WINDOW_END":300000}"#)?;
/// let refused = state.apply_json(b"not json");
///
/// let rows = state.rows();
/// assert_eq!(rows.len(), 2);
/// assert_eq!((rows[0].zipcode.as_str(), rows[0].total_dollars.to_string()), ("94301", "3.00".into()));
/// assert_eq!(rows[1].zipcode, "94403");
/// assert!(refused.is_err());
/// # Ok::<(), kafka_trace_harness::stockapp::DollarsByZipError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ApiState {
    rows: Arc<RwLock<Rows>>,
    /// Counts updates, so [`ApiState::wait_for`] wakes on each one.
    updates: Arc<watch::Sender<u64>>,
}

impl Default for ApiState {
    fn default() -> Self {
        Self::new()
    }
}

/// [`ApiState::wait_for`] gave up: the condition never held.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the API rows did not satisfy the condition within {timeout:?}; last rows: {}", rows_report(.rows))]
pub struct ApiWaitTimeout {
    /// The deadline that passed.
    pub timeout: Duration,
    /// The rows when it passed.
    pub rows: Vec<DollarsByZipRow>,
}

/// At most this many rows are listed in an [`ApiWaitTimeout`] message.
const REPORTED_ROWS_LIMIT: usize = 20;

fn rows_json(rows: &[DollarsByZipRow]) -> String {
    let rows: Vec<String> = rows.iter().map(DollarsByZipRow::to_json).collect();
    format!("[{}]", rows.join(","))
}

fn rows_report(rows: &[DollarsByZipRow]) -> String {
    if rows.len() <= REPORTED_ROWS_LIMIT {
        return rows_json(rows);
    }
    format!(
        "{} and {} more",
        rows_json(&rows[..REPORTED_ROWS_LIMIT]),
        rows.len() - REPORTED_ROWS_LIMIT
    )
}

impl ApiState {
    /// An empty state.
    pub fn new() -> Self {
        Self {
            rows: Arc::default(),
            updates: Arc::new(watch::Sender::new(0)),
        }
    }

    // A panic elsewhere while holding the lock cannot leave a half-written
    // map (every write is a single insert), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Rows> {
        self.rows.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Rows> {
        self.rows.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `row` as the latest of its (zip code, window); returns the row
    /// it replaced.
    pub fn apply(&self, row: DollarsByZipRow) -> Option<DollarsByZipRow> {
        let key = (row.window_start, row.zipcode.clone());
        let replaced = self.write().insert(key, row);
        self.updates.send_modify(|count| *count += 1);
        replaced
    }

    /// Reads a record value of `stockapp.dollarsbyzip` and stores it; returns
    /// the stored row. A refused value leaves the state unchanged.
    pub fn apply_json(&self, value: &[u8]) -> Result<DollarsByZipRow, DollarsByZipError> {
        let row = DollarsByZipRow::from_json(value)?;
        self.apply(row.clone());
        Ok(row)
    }

    /// The rows, ordered by window start then zip code.
    pub fn rows(&self) -> Vec<DollarsByZipRow> {
        self.read().values().cloned().collect()
    }

    /// `TOTAL_DOLLARS` in cents per (zip code, window start): the form a
    /// test compares with totals it computed itself.
    pub fn totals_in_cents(&self) -> std::collections::BTreeMap<(String, i64), i128> {
        self.read()
            .values()
            .map(|row| {
                (
                    (row.zipcode.clone(), row.window_start),
                    row.total_dollars.cents(),
                )
            })
            .collect()
    }

    /// The row of `zipcode`'s window starting at `window_start`.
    pub fn row(&self, zipcode: &str, window_start: i64) -> Option<DollarsByZipRow> {
        self.read()
            .get(&(window_start, zipcode.to_owned()))
            .cloned()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no row arrived yet.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The body of `GET /`: the rows as a JSON array, in [`ApiState::rows`]
    /// order.
    pub fn to_json(&self) -> String {
        rows_json(&self.rows())
    }

    /// Waits until `condition` holds for the rows (in [`ApiState::rows`]
    /// order) and returns them, or fails after `timeout` with the last rows
    /// seen. The condition is checked now and after every update, so no
    /// polling interval is involved.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafka_trace_harness::stockapp::ApiState;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let state = ApiState::new();
    /// let consumer = state.clone();
    /// tokio::spawn(async move {
    ///     consumer.apply_json(br#"{"ZIPCODE":"94070","TOTAL_DOLLARS":1,"WINDOW_START":0,"WINDOW_END":300000}"#)
    /// });
    ///
    /// let rows = state.wait_for(|rows| !rows.is_empty(), Duration::from_secs(5)).await?;
    ///
    /// assert_eq!(rows[0].zipcode, "94070");
    /// # Ok::<(), kafka_trace_harness::stockapp::ApiWaitTimeout>(())
    /// # }).unwrap();
    /// ```
    pub async fn wait_for<F>(
        &self,
        mut condition: F,
        timeout: Duration,
    ) -> Result<Vec<DollarsByZipRow>, ApiWaitTimeout>
    where
        F: FnMut(&[DollarsByZipRow]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut updates = self.updates.subscribe();
        loop {
            // Marking the version seen before reading the rows means an update
            // landing in between still wakes the next `changed()`.
            updates.borrow_and_update();
            let rows = self.rows();
            if condition(&rows) {
                return Ok(rows);
            }
            match tokio::time::timeout_at(deadline, updates.changed()).await {
                // The sender lives in `self`, so `changed` cannot fail here.
                Ok(_) => {}
                Err(_) => {
                    return Err(ApiWaitTimeout {
                        timeout,
                        rows: self.rows(),
                    });
                }
            }
        }
    }
}

/// The HTTP routes over `state`, to mount in another server if wanted.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(all_rows))
        .route("/health", get(health))
        .with_state(state)
}

async fn all_rows(State(state): State<ApiState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        state.to_json(),
    )
        .into_response()
}

async fn health() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

/// A running HTTP face of an [`ApiState`]. Dropping it stops serving;
/// [`ApiServer::shutdown`] also waits for that and reports errors.
#[derive(Debug)]
pub struct ApiServer {
    server: HttpServer,
}

impl ApiServer {
    /// Serves `state` on `127.0.0.1`, on any free port.
    pub async fn start(state: ApiState) -> Result<Self> {
        Self::builder(state).start().await
    }

    /// A builder with the defaults: host `127.0.0.1`, port [`DEFAULT_PORT`].
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use kafka_trace_harness::stockapp::{ApiServer, ApiState};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let server = ApiServer::builder(ApiState::new())
    ///     .host(Ipv4Addr::LOCALHOST.into())
    ///     .port(0)
    ///     .start()
    ///     .await?;
    ///
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok::<(), kafka_trace_harness::stockapp::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn builder(state: ApiState) -> ApiServerBuilder {
        ApiServerBuilder {
            state,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
        }
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://host:port`, the URL of `GET /`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Stops serving and waits until the server has stopped.
    pub async fn shutdown(self) -> Result<()> {
        let addr = self.server.addr().to_string();
        self.server
            .shutdown()
            .await
            .map_err(|source| Error::ApiServer { addr, source })
    }
}

/// Builder of [`ApiServer`]; see [`ApiServer::builder`] for the defaults.
#[derive(Debug, Clone)]
pub struct ApiServerBuilder {
    state: ApiState,
    addr: SocketAddr,
}

impl ApiServerBuilder {
    /// Port to listen on. Default [`DEFAULT_PORT`] (0: any free port, which
    /// keeps parallel tests apart; the original service uses 3100).
    pub fn port(mut self, port: u16) -> Self {
        self.addr.set_port(port);
        self
    }

    /// Address to listen on. Default `127.0.0.1`; `0.0.0.0` lets containers
    /// reach the service.
    pub fn host(mut self, host: IpAddr) -> Self {
        self.addr.set_ip(host);
        self
    }

    /// Binds the address and starts serving on the current Tokio runtime.
    pub async fn start(self) -> Result<ApiServer> {
        let server = HttpServer::serve(self.addr, router(self.state))
            .await
            .map_err(|source| Error::ApiServer {
                addr: self.addr.to_string(),
                source,
            })?;
        Ok(ApiServer { server })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stockapp::{Datagen, StockProcessor};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 exchange with a bare client: `(status, head, body)`.
    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, String)> {
        get_with_method(addr, "GET", path).await
    }

    async fn get_with_method(
        addr: SocketAddr,
        method: &str,
        path: &str,
    ) -> std::io::Result<(u16, String, String)> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {response:?}")))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
        Ok((status, head.to_owned(), body.to_owned()))
    }

    fn row_json(zip: &str, total: &str, start: i64) -> String {
        format!(
            r#"{{"ZIPCODE":"{zip}","TOTAL_DOLLARS":{total},"WINDOW_START":{start},"WINDOW_END":{}}}"#,
            start + 300_000
        )
    }

    #[tokio::test]
    async fn get_root_serves_latest_rows_sorted_by_window_then_zip() {
        let state = ApiState::new();
        let server = ApiServer::start(state.clone()).await.unwrap();
        for (zip, total, start) in [
            ("95112", "1.5", 300_000),
            ("94403", "2", 300_000),
            ("94301", "3.25", 0),
            ("95112", "4.75", 300_000),
        ] {
            state
                .apply_json(row_json(zip, total, start).as_bytes())
                .unwrap();
        }

        let (status, head, body) = get(server.local_addr(), "/").await.unwrap();

        assert_eq!(status, 200);
        assert!(head.contains("application/json"), "{head}");
        let expected = [
            row_json("94301", "3.25", 0),
            row_json("94403", "2.00", 300_000),
            row_json("95112", "4.75", 300_000),
        ];
        assert_eq!(body, format!("[{}]", expected.join(",")));
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 3);
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn empty_state_and_health() {
        let server = ApiServer::start(ApiState::new()).await.unwrap();

        assert_eq!(
            get(server.local_addr(), "/").await.unwrap().2,
            "[]".to_owned()
        );
        let (status, _, body) = get(server.local_addr(), "/health").await.unwrap();
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
        assert_eq!(get(server.local_addr(), "/nope").await.unwrap().0, 404);
        let (status, _, _) = get_with_method(server.local_addr(), "POST", "/")
            .await
            .unwrap();
        assert_eq!(status, 405);
        server.shutdown().await.unwrap();
    }

    #[test]
    fn processor_rows_survive_the_topic_unchanged() {
        let datagen = Datagen::builder().seed(11).users(20).trades(200).build();
        let mut processor = StockProcessor::<usize>::new();
        for user in datagen.users() {
            processor.upsert_user(user);
        }
        let state = ApiState::new();
        for (i, trade) in datagen.trades().enumerate() {
            let timestamp = 1_700_000_000_000 + i as i64 * 7_000;
            if let Ok(update) = processor.process_trade(&trade, timestamp, i) {
                let stored = state.apply_json(update.row.to_json().as_bytes()).unwrap();
                assert_eq!(stored, DollarsByZipRow::from(&update.row));
            }
        }

        let mut expected: Vec<DollarsByZipRow> =
            processor.window_rows().map(DollarsByZipRow::from).collect();
        expected.sort_by(|a, b| (a.window_start, &a.zipcode).cmp(&(b.window_start, &b.zipcode)));
        assert!(expected.len() > 3, "{expected:?}");
        assert_eq!(state.rows(), expected);
        let served: Vec<String> = expected.iter().map(DollarsByZipRow::to_json).collect();
        assert_eq!(state.to_json(), format!("[{}]", served.join(",")));
    }

    #[test]
    fn bad_values_are_typed_errors_and_change_nothing() {
        let state = ApiState::new();
        let cases: [(&[u8], &str); 8] = [
            (b"", "Json"),
            (b"not json", "Json"),
            (b"\xff\xfe", "Json"),
            (br#"{"ZIPCODE":"1"}"#, "Json"),
            (
                br#"{"ZIPCODE":1,"TOTAL_DOLLARS":1,"WINDOW_START":0,"WINDOW_END":1}"#,
                "Json",
            ),
            (
                br#"{"ZIPCODE":"1","TOTAL_DOLLARS":null,"WINDOW_START":0,"WINDOW_END":1}"#,
                "Json",
            ),
            (
                br#"{"ZIPCODE":"1","TOTAL_DOLLARS":1.005,"WINDOW_START":0,"WINDOW_END":1}"#,
                "NotWholeCents",
            ),
            (
                br#"{"ZIPCODE":"1","TOTAL_DOLLARS":1,"WINDOW_START":5,"WINDOW_END":5}"#,
                "EmptyWindow",
            ),
        ];
        for (value, variant) in cases {
            let err = state.apply_json(value).unwrap_err();
            assert!(format!("{err:?}").starts_with(variant), "{err:?}");
            assert!(!err.to_string().is_empty());
        }
        assert!(state.is_empty());

        let huge = vec![b'x'; 10_000];
        let message = state.apply_json(&huge).unwrap_err().to_string();
        assert!(message.len() < 600, "{message}");
        let too_large = row_json("1", "1e300", 0);
        let err = state.apply_json(too_large.as_bytes()).unwrap_err();
        assert!(
            matches!(err, DollarsByZipError::NotWholeCents { .. }),
            "{err}"
        );
        let crate_error: Error = state.apply_json(b"[]").unwrap_err().into();
        assert!(crate_error.to_string().contains("ZIPCODE"), "{crate_error}");
    }

    #[test]
    fn totals_are_exact_cents() {
        for (total, cents) in [
            ("0", 0),
            ("7.5", 750),
            ("7.50", 750),
            ("49940.01", 4_994_001),
            ("-0.05", -5),
            ("0.1", 10),
            ("123456789012.34", 12_345_678_901_234),
            ("2e3", 200_000),
        ] {
            let row = DollarsByZipRow::from_json(row_json("1", total, 0).as_bytes()).unwrap();
            assert_eq!(row.total_dollars.cents(), cents, "{total}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_a_row_replaces_its_window() {
        let state = ApiState::new();
        let first = state
            .apply_json(
                br#"{"ZIPCODE":"1","TOTAL_DOLLARS":1,"WINDOW_START":0,"WINDOW_END":9,"X":[]}"#,
            )
            .unwrap();
        let replaced = state.apply(DollarsByZipRow {
            total_dollars: DollarAmount::from_cents(250),
            ..first.clone()
        });

        assert_eq!(replaced, Some(first));
        assert_eq!(state.len(), 1);
        assert_eq!(state.row("1", 0).unwrap().total_dollars.cents(), 250);
        assert_eq!(state.row("1", 9), None);
    }

    #[tokio::test]
    async fn wait_for_wakes_on_updates_and_reports_a_timeout() {
        let state = ApiState::new();
        let consumer = state.clone();
        let feeding = tokio::spawn(async move {
            for start in 0..5 {
                consumer.apply_json(row_json("1", "1", start * 300_000).as_bytes())?;
                tokio::task::yield_now().await;
            }
            Ok::<_, DollarsByZipError>(())
        });

        let rows = state
            .wait_for(|rows| rows.len() == 5, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(rows.len(), 5);
        feeding.await.unwrap().unwrap();

        let err = state
            .wait_for(|rows| rows.len() == 6, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err.rows.len(), 5);
        assert!(err.to_string().contains("within 20ms"), "{err}");

        for start in 5..30 {
            state
                .apply_json(row_json("1", "1", start * 300_000).as_bytes())
                .unwrap();
        }
        let err = state
            .wait_for(|rows| rows.is_empty(), Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(err.rows.len(), 30);
        assert!(err.to_string().ends_with("] and 10 more"), "{err}");
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error_and_drop_stops_serving() {
        let first = ApiServer::start(ApiState::new()).await.unwrap();
        let addr = first.local_addr();
        let err = ApiServer::builder(ApiState::new())
            .port(addr.port())
            .start()
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");

        drop(first);

        // Graceful shutdown runs on the server task: wait for it with a deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if get(addr, "/health").await.is_err() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} still serves after drop"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
