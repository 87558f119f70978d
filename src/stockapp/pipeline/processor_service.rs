//! Service `stock-processor`: ksqlDB's statements, traced. (The Kafka
//! Streams app is its own service, `kstream-service`.)

use std::collections::{HashMap, HashSet};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Link, SpanContext, SpanId, TraceContextExt, TraceId};
use rskafka::record::Record;

use super::{PROCESSOR_SERVICE, dead_letter, decode_error_type};
use crate::stockapp::error::Result;
use crate::stockapp::metrics::PipelineMetrics;
use crate::stockapp::{
    DLQ_TOPIC, DOLLARS_BY_ZIP_TOPIC, SchemaRegistry, StockProcessor, StockTrade, TRADES_TOPIC,
    USERS_TOPIC, User,
};
use crate::traced::{ConsumedRecord, TracedConsumer, TracedProducer};

/// Attribute on a trade's `process` span saying why it produced no row.
pub const FILTERED_OUT_ATTRIBUTE: &str = "stockapp.filtered_out";
/// Attribute on a trade's `process` span when the same send span's record
/// was processed before: an at-least-once duplicate, skipped.
pub const DUPLICATE_ATTRIBUTE: &str = "stockapp.duplicate";
/// Attribute on a trade's `process` span: the joined user, when found.
pub const JOINED_USER_ATTRIBUTE: &str = "stockapp.joined_userid";

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
    /// Trades read again whose send span was already processed (a send
    /// retried after the broker had stored the first attempt): skipped.
    pub duplicates: usize,
    /// Records (trades and users) the consumers delivered again after a
    /// restart from committed offsets.
    pub redeliveries: usize,
}

impl std::ops::AddAssign for ProcessorStep {
    fn add_assign(&mut self, other: Self) {
        self.trades_in += other.trades_in;
        self.users_in += other.users_in;
        self.rows_out += other.rows_out;
        self.dead_lettered += other.dead_lettered;
        self.duplicates += other.duplicates;
        self.redeliveries += other.redeliveries;
    }
}

pub(crate) struct ProcessorService {
    pub(crate) trades: TracedConsumer,
    pub(crate) users: TracedConsumer,
    pub(crate) producer: TracedProducer,
    pub(crate) registry: SchemaRegistry,
    pub(crate) logic: StockProcessor<SpanContext>,
    /// The `send stockapp.users` span of each user's latest profile.
    pub(crate) user_sends: HashMap<String, SpanContext>,
    pub(crate) metrics: Option<PipelineMetrics>,
    /// The send span of every trade processed: a retried send that the
    /// broker had stored already carries the same one.
    pub(crate) seen_trades: HashSet<(TraceId, SpanId)>,
}

impl ProcessorService {
    /// Reads trades, then brings the users table up to date, then processes
    /// the trades: a trade joins every profile produced before it.
    pub(crate) async fn step(&mut self) -> Result<ProcessorStep> {
        let trades = self.trades.poll().await?;
        let mut step = ProcessorStep {
            trades_in: trades.len(),
            redeliveries: trades.iter().filter(|t| t.redelivered).count(),
            ..ProcessorStep::default()
        };
        // Read users until a poll comes back empty (a poll stops at a
        // per-partition cap): only then is every profile sent before these
        // trades in the table.
        loop {
            let users = self.users.poll().await?;
            if users.is_empty() {
                break;
            }
            step.users_in += users.len();
            step.redeliveries += users.iter().filter(|u| u.redelivered).count();
            for consumed in users {
                step.dead_lettered += self.apply_user(consumed).await?;
            }
        }
        for consumed in trades {
            let started = std::time::Instant::now();
            let done = self.process_trade(consumed).await?;
            if let Some(metrics) = &self.metrics {
                metrics.record_processing(PROCESSOR_SERVICE, TRADES_TOPIC, started.elapsed());
            }
            step += done;
        }
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
        Ok(step)
    }

    async fn apply_user(&mut self, consumed: ConsumedRecord) -> Result<usize> {
        let decoded = decode::<User>(&self.registry, &consumed);
        match decoded {
            Ok(user) => {
                if consumed.extracted.is_usable() {
                    self.user_sends
                        .insert(user.userid.clone(), consumed.extracted.span_context());
                }
                self.logic.upsert_user(user);
                consumed.finish();
                Ok(0)
            }
            Err((error_type, reason)) => {
                dead_letter(&self.producer, consumed, error_type, reason).await?;
                Ok(1)
            }
        }
    }

    async fn process_trade(&mut self, consumed: ConsumedRecord) -> Result<ProcessorStep> {
        let mut step = ProcessorStep::default();
        let decoded = decode::<StockTrade>(&self.registry, &consumed);
        let trade = match decoded {
            Ok(trade) => trade,
            Err((error_type, reason)) => {
                dead_letter(&self.producer, consumed, error_type, reason).await?;
                step.dead_lettered = 1;
                return Ok(step);
            }
        };
        if consumed.extracted.is_usable() {
            let sent = consumed.extracted.span_context();
            if !self.seen_trades.insert((sent.trace_id(), sent.span_id())) {
                consumed.set_attribute(KeyValue::new(DUPLICATE_ATTRIBUTE, true));
                consumed.finish();
                step.duplicates = 1;
                return Ok(step);
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
                self.producer
                    .send_linked(consumed.context(), DOLLARS_BY_ZIP_TOPIC, 0, record, links)
                    .await?;
                step.rows_out = 1;
            }
            Err(reason) => {
                span.set_attribute(KeyValue::new(FILTERED_OUT_ATTRIBUTE, reason.code()));
            }
        }
        consumed.finish();
        Ok(step)
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
