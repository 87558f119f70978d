//! Service `datagen`: the fake-data generator in place of Confluent datagen.

use opentelemetry::Context;
use rskafka::record::Record;

use std::sync::atomic::Ordering;

use super::in_flight::InFlight;
use super::{DATAGEN_SERVICE, Progress, partition_for_key};
use crate::stockapp::error::{Error, Result};
use crate::stockapp::metrics::PipelineMetrics;
use crate::stockapp::{AvroRecord, Datagen, SchemaRegistry, TRADES_TOPIC, USERS_TOPIC};
use crate::traced::BatchingTracedProducer;

/// Timestamps of generated trades: the first at `start_ms`, then one every
/// `spacing_ms`, so a seeded run lands in the same windows every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeClock {
    /// Timestamp of the first trade, ms since the epoch.
    pub start_ms: i64,
    /// Milliseconds between two trades.
    pub spacing_ms: i64,
}

impl TradeClock {
    /// Timestamp of trade number `index`.
    pub fn timestamp_ms(&self, index: usize) -> i64 {
        self.start_ms + self.spacing_ms * index as i64
    }
}

/// What datagen sends, when, and where.
#[derive(Debug, Clone)]
pub(crate) struct DatagenPlan {
    pub(crate) datagen: Datagen,
    pub(crate) clock: Option<TradeClock>,
    /// Trades per second offered; `None`: as fast as they are taken.
    pub(crate) rate: Option<f64>,
    pub(crate) partitions: i32,
    /// How long datagen waits for a reader that does not advance at all
    /// before it fails, naming the wait.
    pub(crate) reader_deadline: std::time::Duration,
}

/// Records (trades, and the rows made of them) stored but not yet read by
/// the slowest service reading them, past which datagen waits.
pub(crate) const MAX_UNREAD: usize = 10_000;
/// Trades datagen has sent but the broker has not yet acknowledged, past
/// which it waits for acknowledgements.
///
/// The embedded broker keeps 5 MiB per partition and silently deletes
/// older records; a stockapp record is at most about 200 bytes with its
/// headers, so even were every unread and unacknowledged record on one
/// partition (15,000 records, 3 MB) none would be deleted unread, and the
/// pipeline still buffers half a second at 20,000 trades/s.
const MAX_UNACKNOWLEDGED: usize = 5_000;

/// Acknowledged records, by topic.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    users: usize,
    trades: usize,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, other: Self) {
        self.users += other.users;
        self.trades += other.trades;
    }
}

const USER: Sent = Sent {
    users: 1,
    trades: 0,
};
const TRADE: Sent = Sent {
    users: 0,
    trades: 1,
};

/// Sends every user, then every trade, each as the root `send` span of its
/// own trace. Users go first, all stored before the first trade, so every
/// trade can join the profile of its user (the processor reads users up to
/// date before each batch of trades). Sends are not awaited one by one:
/// each acknowledged record is counted in `progress` as it settles, and
/// datagen waits while readers are [`MAX_UNREAD`] records behind
/// (backpressure, so the broker never deletes a record no one has read).
///
/// `stop` ends the generator between two records; what was sent is then
/// stored or has failed, and counted either way, before it returns
/// (`Ok(false)`: stopped before the last trade; a failed send is an error,
/// also after a stop).
pub(crate) async fn run(
    producer: &BatchingTracedProducer,
    registry: &SchemaRegistry,
    plan: &DatagenPlan,
    metrics: Option<&PipelineMetrics>,
    progress: &Progress,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<bool> {
    let DatagenPlan {
        datagen,
        clock,
        rate,
        partitions,
        reader_deadline,
    } = plan;
    let (clock, rate, partitions) = (*clock, *rate, *partitions);
    // An offered rate: trade n is due n / rate seconds after the first,
    // whatever the pipeline does; a late trade is sent at once (bursts
    // keep the average), as a load generator would.
    let mut ticks = rate.and_then(pace).map(|period| {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        ticks
    });
    let mut in_flight = InFlight::new(MAX_UNACKNOWLEDGED);
    let now = chrono::Utc::now();
    for user in datagen.users() {
        let record = avro_record(registry, USERS_TOPIC, &user, now)?;
        let partition = partition_for_key(user.key(), partitions);
        let stored = producer.send(&Context::new(), USERS_TOPIC, partition, record);
        in_flight.push(async move { stored.await.map(|_| USER).map_err(Into::into) });
    }
    count(in_flight.drain().await?, progress, metrics);
    let mut completed = true;
    for (index, trade) in datagen.trades().enumerate() {
        let due = async {
            if let Some(ticks) = &mut ticks {
                ticks.tick().await;
            }
            wait_while_readers_behind(progress, &mut in_flight, metrics, *reader_deadline).await
        };
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => {
                completed = false;
                break;
            }
            waited = due => waited?,
        }
        // Without a clock, a trade happens when it is sent.
        let timestamp = clock
            .and_then(|c| chrono::DateTime::from_timestamp_millis(c.timestamp_ms(index)))
            .unwrap_or_else(chrono::Utc::now);
        let record = avro_record(registry, TRADES_TOPIC, &trade, timestamp)?;
        let partition = partition_for_key(trade.key(), partitions);
        let stored = producer.send(&Context::new(), TRADES_TOPIC, partition, record);
        in_flight.push(async move { stored.await.map(|_| TRADE).map_err(Into::into) });
        count(in_flight.settle().await?, progress, metrics);
    }
    if !completed {
        // Send partly filled batches now rather than after their linger.
        producer.flush().await?;
    }
    count(in_flight.drain().await?, progress, metrics);
    Ok(completed)
}

/// The interval between two trades offered at `trades_per_second`; `None`
/// (unpaced) for a rate that is not a positive number or too high to
/// pace, and at most a day apart for a tiny one.
fn pace(trades_per_second: f64) -> Option<std::time::Duration> {
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
    if trades_per_second.is_nan() || trades_per_second <= 0.0 {
        return None;
    }
    let period = std::time::Duration::try_from_secs_f64(1.0 / trades_per_second)
        .unwrap_or(LONGEST)
        .min(LONGEST);
    (!period.is_zero()).then_some(period)
}

/// Waits while a reader here is [`MAX_UNREAD`] records behind, settling
/// acknowledgements meanwhile; fails, naming the wait, once no reader has
/// read a record for `reader_deadline`.
async fn wait_while_readers_behind(
    progress: &Progress,
    in_flight: &mut InFlight<Sent>,
    metrics: Option<&PipelineMetrics>,
    reader_deadline: std::time::Duration,
) -> Result<()> {
    let (mut read, mut since) = (progress.read_so_far(), std::time::Instant::now());
    while progress.unread() >= MAX_UNREAD {
        progress.wait_for_readers().await;
        count(in_flight.settle().await?, progress, metrics);
        if progress.read_so_far() != read {
            (read, since) = (progress.read_so_far(), std::time::Instant::now());
        } else if since.elapsed() >= reader_deadline {
            return Err(Error::Pipeline(format!(
                "datagen waited {reader_deadline:?} for its readers to read on; none read a \
                 record and they stayed {} records behind (datagen sends no more than \
                 {MAX_UNREAD} ahead, so that the broker deletes no unread record)",
                progress.unread()
            )));
        }
    }
    Ok(())
}

fn count(sent: Sent, progress: &Progress, metrics: Option<&PipelineMetrics>) {
    progress
        .datagen_users
        .fetch_add(sent.users, Ordering::SeqCst);
    progress
        .datagen_trades
        .fetch_add(sent.trades, Ordering::SeqCst);
    if let Some(metrics) = metrics {
        metrics.count_out(DATAGEN_SERVICE, USERS_TOPIC, sent.users as u64);
        metrics.count_out(DATAGEN_SERVICE, TRADES_TOPIC, sent.trades as u64);
    }
}

fn avro_record<T: AvroRecord>(
    registry: &SchemaRegistry,
    topic: &str,
    value: &T,
    timestamp: chrono::DateTime<chrono::Utc>,
) -> Result<Record> {
    Ok(Record {
        key: Some(value.key().as_bytes().to_vec()),
        value: Some(registry.encode_value(topic, value)?),
        headers: Default::default(),
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::stockapp::pipeline::Services;

    /// A pipeline's counters with every service here and `sent` trades
    /// acknowledged, none read yet.
    fn progress_with_sent(sent: usize) -> Progress {
        let progress = Progress::new(Services::ALL, 2);
        progress.datagen_trades.store(sent, Ordering::SeqCst);
        progress
    }

    #[test]
    fn any_rate_gives_a_pace_or_none_and_never_panics() {
        assert_eq!(pace(1000.0), Some(Duration::from_millis(1)));
        for unpaced in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(pace(unpaced), None, "{unpaced}");
        }
        assert_eq!(pace(1e-20), Some(Duration::from_secs(24 * 60 * 60)));
    }

    #[tokio::test]
    async fn readers_that_never_read_fail_datagen_naming_the_wait() {
        let progress = progress_with_sent(MAX_UNREAD);
        let deadline = Duration::from_millis(100);
        let started = Instant::now();
        let waited =
            wait_while_readers_behind(&progress, &mut InFlight::new(1), None, deadline).await;
        let Err(Error::Pipeline(message)) = waited else {
            panic!("stuck readers must fail datagen, got {waited:?}");
        };
        assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());
        assert!(
            message.contains("waited") && message.contains("readers"),
            "{message}"
        );
        assert!(message.contains(&MAX_UNREAD.to_string()), "{message}");
    }

    #[tokio::test]
    async fn slow_readers_that_keep_reading_hold_datagen_without_failing_it() {
        // Ten records to read before datagen may go on, one every quarter
        // of the deadline: each read is well within the deadline, all ten
        // together are not, so only a deadline that restarts whenever a
        // reader reads lets datagen go on.
        let progress = Arc::new(progress_with_sent(MAX_UNREAD + 9));
        let deadline = Duration::from_millis(200);
        let reader = {
            let progress = Arc::clone(&progress);
            tokio::spawn(async move {
                for _ in 0..10 {
                    // A slow reader, not a synchronisation.
                    tokio::time::sleep(deadline / 4).await;
                    progress.trades_in.fetch_add(1, Ordering::SeqCst);
                    progress.kstream_trades_in.fetch_add(1, Ordering::SeqCst);
                    progress.readers_advanced();
                }
            })
        };
        let started = Instant::now();
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            wait_while_readers_behind(&progress, &mut InFlight::new(1), None, deadline),
        )
        .await
        .expect("datagen goes on once readers are within reach");
        waited.expect("readers that read on do not fail datagen");
        assert!(started.elapsed() >= deadline * 2, "{:?}", started.elapsed());
        assert_eq!(progress.unread(), MAX_UNREAD - 1);
        reader.await.expect("reader task");
    }
}
