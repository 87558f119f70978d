//! Service `stock-processor`: ksqlDB's statements, traced. (The Kafka
//! Streams app is its own service, `kstream-service`.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Link, SpanContext, SpanId, TraceContextExt, TraceId};
use rskafka::record::Record;

use super::in_flight::InFlight;
use super::timestamp_order::TimestampOrder;
use super::{PROCESSOR_SERVICE, dead_letter, decode_error_type};
use crate::stockapp::error::Result;
use crate::stockapp::metrics::PipelineMetrics;
use crate::stockapp::processor::{DollarAmount, FilteredOut};
use crate::stockapp::{
    DLQ_TOPIC, DOLLARS_BY_ZIP_TOPIC, SchemaRegistry, StockProcessor, StockTrade, TRADES_TOPIC,
    USERS_TOPIC, User,
};
use crate::traced::{BatchingTracedProducer, ConsumedRecord, TracedConsumer};

/// Attribute on a trade's `process` span saying why it produced no row.
pub const FILTERED_OUT_ATTRIBUTE: &str = "stockapp.filtered_out";
/// Attribute on a trade's `process` span when the same record (same send
/// span, partition, key, value and timestamp) was processed before: an
/// at-least-once duplicate, skipped.
pub const DUPLICATE_ATTRIBUTE: &str = "stockapp.duplicate";
/// Attribute on a trade's `process` span: the joined user, when found.
pub const JOINED_USER_ATTRIBUTE: &str = "stockapp.joined_userid";
/// Attributes on the `process` span of a trade dropped because its window
/// had closed (`stockapp.filtered_out = window_closed`): the row that
/// lacks it, zip code and window start (ms), and the amount it lacks, in
/// cents (absent when ksqlDB's cast makes it `NULL`).
pub const LATE_ZIPCODE_ATTRIBUTE: &str = "stockapp.late.zipcode";
/// See [`LATE_ZIPCODE_ATTRIBUTE`].
pub const LATE_WINDOW_START_ATTRIBUTE: &str = "stockapp.late.window_start";
/// See [`LATE_ZIPCODE_ATTRIBUTE`].
pub const LATE_AMOUNT_CENTS_ATTRIBUTE: &str = "stockapp.late.amount_cents";

/// Counts of one processing step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorStep {
    /// Trades read (good and bad).
    pub trades_in: usize,
    /// User profiles read (good and bad).
    pub users_in: usize,
    /// Rows sent to `stockapp.dollarsbyzip`.
    pub rows_out: usize,
    /// Records copied to the dead-letter topic.
    pub dead_lettered: usize,
    /// Trades read again that were already processed: the same record,
    /// send span included, at a later offset (a send retried after the
    /// broker had stored the first attempt): skipped.
    pub duplicates: usize,
    /// Records (trades and users) the consumers delivered again after a
    /// restart from committed offsets.
    pub redeliveries: usize,
    /// Trades that produced no row (see [`FilteredOut`]), late ones included.
    pub filtered_out: usize,
    /// Trades dropped because their window had closed
    /// ([`FilteredOut::WindowClosed`]): late by more than the grace period.
    pub late: usize,
}

impl std::ops::AddAssign for ProcessorStep {
    fn add_assign(&mut self, other: Self) {
        self.trades_in += other.trades_in;
        self.users_in += other.users_in;
        self.rows_out += other.rows_out;
        self.dead_lettered += other.dead_lettered;
        self.duplicates += other.duplicates;
        self.redeliveries += other.redeliveries;
        self.filtered_out += other.filtered_out;
        self.late += other.late;
    }
}

pub(crate) struct ProcessorService {
    pub(crate) trades: TracedConsumer,
    pub(crate) users: TracedConsumer,
    pub(crate) producer: BatchingTracedProducer,
    pub(crate) registry: SchemaRegistry,
    pub(crate) logic: StockProcessor<SpanContext>,
    /// The `send stockapp.users` span of each user's latest profile.
    pub(crate) user_sends: HashMap<String, SpanContext>,
    pub(crate) metrics: Option<PipelineMetrics>,
    /// The latest trades processed: a retried send that the broker had
    /// stored already is the same record again, send span included.
    pub(crate) seen_trades: RecentSends,
    /// Rows and dead-letter copies sent, not yet acknowledged; each
    /// settles (and commits) the record it came from.
    pub(crate) in_flight: InFlight<ProcessorStep>,
    /// Trades read, not yet processed: they go in timestamp order across
    /// the partitions, as a Kafka Streams task takes them, so that a
    /// partition whose fetch is slow does not see its windows closed by
    /// the others' later trades. (A held trade's `process` span is open,
    /// and it is not committed, until it goes.)
    pub(crate) held_trades: TimestampOrder<ConsumedRecord>,
}

/// How long held trades wait for a partition whose lag is unknown or
/// non-zero and that brings nothing, before they go anyway: longer than a
/// fetch's retry backoff and a stall of the chaos schedules, and bounded,
/// so that a partition that never answers cannot hold the run.
pub(crate) const MAX_TASK_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

impl ProcessorService {
    /// Reads trades, then brings the users table up to date, then processes
    /// the trades: a trade joins every profile produced before it. Outputs
    /// go out without waiting; the counts returned are of the records
    /// whose outputs the broker has acknowledged since the last step.
    pub(crate) async fn step(
        &mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<ProcessorStep> {
        // A poll may wait for trades (up to the consumer's fetch wait):
        // outputs that settle meanwhile are counted, and committed, at once,
        // and a stop ends the wait.
        let trades = tokio::select! {
            polled = self.trades.poll() => polled?,
            settled = self.in_flight.settled() => {
                let step = settled?;
                self.report(&step);
                return Ok(step);
            }
            () = super::stopping(stop) => return Ok(ProcessorStep::default()),
        };
        // Read users until a poll comes back empty (a poll stops at a
        // per-partition cap): only then is every profile sent before these
        // trades in the table.
        loop {
            let users = self.users.poll().await?;
            if users.is_empty() {
                break;
            }
            for consumed in users {
                self.apply_user(consumed);
            }
        }
        for consumed in trades {
            let timestamp_ms = consumed.record.timestamp.timestamp_millis();
            self.held_trades
                .push(consumed.partition, timestamp_ms, consumed);
        }
        let now = std::time::Instant::now();
        while let Some(consumed) =
            self.held_trades
                .pop(self.trades.partitions(), |p| self.trades.lag(p), now)
        {
            self.process_timed(consumed);
        }
        let step = self.in_flight.settle().await?;
        self.report(&step);
        Ok(step)
    }

    /// Processes the trades still held, then waits for every output still
    /// in flight (at stop).
    pub(crate) async fn drain(&mut self) -> Result<ProcessorStep> {
        for consumed in self.held_trades.drain() {
            self.process_timed(consumed);
        }
        let step = self.in_flight.drain().await?;
        self.report(&step);
        Ok(step)
    }

    fn report(&self, step: &ProcessorStep) {
        if let Some(metrics) = &self.metrics {
            let count = |n: usize| n as u64;
            metrics.count_in(PROCESSOR_SERVICE, TRADES_TOPIC, count(step.trades_in));
            metrics.count_in(PROCESSOR_SERVICE, USERS_TOPIC, count(step.users_in));
            metrics.count_out(
                PROCESSOR_SERVICE,
                DOLLARS_BY_ZIP_TOPIC,
                count(step.rows_out),
            );
            metrics.count_out(PROCESSOR_SERVICE, DLQ_TOPIC, count(step.dead_lettered));
        }
    }

    /// Settles at once (nothing to wait for) unless the profile is bad and
    /// goes to the dead-letter topic.
    fn apply_user(&mut self, consumed: ConsumedRecord) {
        let mut step = ProcessorStep {
            users_in: 1,
            redeliveries: usize::from(consumed.redelivered),
            ..ProcessorStep::default()
        };
        match decode::<User>(&self.registry, &consumed) {
            Ok(user) => {
                if consumed.extracted.is_usable() {
                    self.user_sends
                        .insert(user.userid.clone(), consumed.extracted.span_context());
                }
                self.logic.upsert_user(user);
                consumed.finish();
                self.in_flight.push(std::future::ready(Ok(step)));
            }
            Err((error_type, reason)) => {
                step.dead_lettered = 1;
                let sent = dead_letter(&self.producer, consumed, error_type, reason);
                self.in_flight
                    .push(async move { sent.await.map(|()| step) });
            }
        }
    }

    /// [`Self::process_trade`], its time recorded.
    fn process_timed(&mut self, consumed: ConsumedRecord) {
        let started = std::time::Instant::now();
        self.process_trade(consumed);
        if let Some(metrics) = &self.metrics {
            metrics.record_processing(PROCESSOR_SERVICE, TRADES_TOPIC, started.elapsed());
        }
    }

    /// Says on a late trade's span which row lacks it, and by how much.
    fn tell_late(
        &self,
        span: &opentelemetry::trace::SpanRef<'_>,
        trade: &StockTrade,
        window_start: i64,
    ) {
        let zipcode = self
            .logic
            .users()
            .get(&trade.userid)
            .and_then(User::zipcode);
        if let Some(zipcode) = zipcode {
            span.set_attribute(KeyValue::new(LATE_ZIPCODE_ATTRIBUTE, zipcode.to_owned()));
        }
        span.set_attribute(KeyValue::new(LATE_WINDOW_START_ATTRIBUTE, window_start));
        let cents = DollarAmount::of_trade(trade.price, trade.quantity)
            .and_then(|amount| i64::try_from(amount.cents()).ok());
        if let Some(cents) = cents {
            span.set_attribute(KeyValue::new(LATE_AMOUNT_CENTS_ATTRIBUTE, cents));
        }
    }

    fn process_trade(&mut self, consumed: ConsumedRecord) {
        let mut step = ProcessorStep {
            trades_in: 1,
            redeliveries: usize::from(consumed.redelivered),
            ..ProcessorStep::default()
        };
        let decoded = decode::<StockTrade>(&self.registry, &consumed);
        let trade = match decoded {
            Ok(trade) => trade,
            Err((error_type, reason)) => {
                step.dead_lettered = 1;
                let sent = dead_letter(&self.producer, consumed, error_type, reason);
                self.in_flight
                    .push(async move { sent.await.map(|()| step) });
                return;
            }
        };
        if consumed.extracted.is_usable() {
            let sent = SentRecord::of(
                &consumed.extracted.span_context(),
                consumed.partition,
                &consumed.record,
            );
            if !self.seen_trades.insert(sent) {
                consumed.set_attribute(KeyValue::new(DUPLICATE_ATTRIBUTE, true));
                consumed.finish();
                step.duplicates = 1;
                self.in_flight.push(std::future::ready(Ok(step)));
                return;
            }
        }
        let span = consumed.context().span();
        if let Some(user_send) = self.user_sends.get(&trade.userid) {
            span.add_link(
                user_send.clone(),
                vec![KeyValue::new("stockapp.link", "joined user")],
            );
            span.set_attribute(KeyValue::new(JOINED_USER_ATTRIBUTE, trade.userid.clone()));
        }

        // The trade's creation context identifies it in later window links.
        let trade_id = if consumed.extracted.is_usable() {
            consumed.extracted.span_context()
        } else {
            span.span_context().clone()
        };
        let timestamp_ms = consumed.record.timestamp.timestamp_millis();
        match self.logic.process_trade(&trade, timestamp_ms, trade_id) {
            Ok(update) => {
                let links = update
                    .earlier_contributors()
                    .iter()
                    .map(|earlier| Link::with_context(earlier.clone()))
                    .collect();
                let row = &update.row;
                let record = plain_record(
                    row.key().as_bytes(),
                    row.to_json(),
                    consumed.record.timestamp,
                );
                // One partition, as in the original.
                let stored = self.producer.send_linked(
                    consumed.context(),
                    DOLLARS_BY_ZIP_TOPIC,
                    0,
                    record,
                    links,
                );
                step.rows_out = 1;
                // The process span ends, and the trade commits, once its
                // row is stored.
                self.in_flight.push(async move {
                    stored.await?;
                    consumed.finish();
                    Ok(step)
                });
            }
            Err(reason) => {
                span.set_attribute(KeyValue::new(FILTERED_OUT_ATTRIBUTE, reason.code()));
                step.filtered_out = 1;
                if let FilteredOut::WindowClosed { window_start, .. } = reason {
                    self.tell_late(&span, &trade, window_start);
                    step.late = 1;
                }
                if reason.is_error() {
                    consumed.fail(reason.code(), reason.to_string());
                }
                consumed.finish();
                self.in_flight.push(std::future::ready(Ok(step)));
            }
        }
    }
}

/// What tells a trade record from another: its send span, and what it
/// holds. A send span alone is not enough: an upstream that forwards one
/// context into several records (keeping an existing `traceparent`) gives
/// different trades the same one, and skipping them would lose them. A
/// retried send stores the very same record again (same headers, key,
/// value and timestamp), at a later offset, so the offset is no key either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SentRecord {
    trace: TraceId,
    span: SpanId,
    partition: i32,
    /// Key, value and timestamp, hashed: only records of one send span and
    /// partition are ever compared, so 64 bits leave no practical collision.
    content: u64,
}

impl SentRecord {
    pub(crate) fn of(sent: &SpanContext, partition: i32, record: &Record) -> Self {
        let mut content = std::hash::DefaultHasher::new();
        record.key.hash(&mut content);
        record.value.hash(&mut content);
        record.timestamp.hash(&mut content);
        Self {
            trace: sent.trace_id(),
            span: sent.span_id(),
            partition,
            content: content.finish(),
        }
    }
}

/// The latest trade records processed, at most `capacity`: a duplicate
/// from a retried send follows its original within the retry's few
/// records, so an old one can be forgotten and memory stays flat however
/// long the run.
pub(crate) struct RecentSends {
    seen: HashSet<SentRecord>,
    order: VecDeque<SentRecord>,
    capacity: usize,
}

/// Default capacity of [`RecentSends`]: far more records than a retry can
/// put between a send and its duplicate.
pub(crate) const RECENT_SENDS: usize = 100_000;

impl Default for RecentSends {
    fn default() -> Self {
        Self::with_capacity(RECENT_SENDS)
    }
}

impl RecentSends {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// `false` if this record was seen among the latest ones.
    pub(crate) fn insert(&mut self, sent: SentRecord) -> bool {
        if !self.seen.insert(sent) {
            return false;
        }
        self.order.push_back(sent);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
}

/// The record's value decoded through the registry, or the `error.type`
/// and reason a dead-letter copy is sent with.
fn decode<T: serde::de::DeserializeOwned>(
    registry: &SchemaRegistry,
    consumed: &ConsumedRecord,
) -> std::result::Result<T, (&'static str, String)> {
    match consumed.record.value.as_deref() {
        Some(value) => registry
            .decode_value::<T>(value)
            .map_err(|e| (decode_error_type(&e), e.to_string())),
        None => Err(("missing_value", "the record has no value".to_owned())),
    }
}

pub(super) fn plain_record(
    key: &[u8],
    value: String,
    timestamp: chrono::DateTime<chrono::Utc>,
) -> Record {
    Record {
        key: Some(key.to_vec()),
        value: Some(value.into_bytes()),
        headers: Default::default(),
        timestamp,
    }
}
