//! Pipeline metrics through OpenTelemetry, the numbers the original stockapp
//! showed on its dashboards (JMX exporter and collector): records in and out
//! per service and topic, processing latency, end-to-end latency from a
//! trade's timestamp to the API consumer, and consumer lag.
//!
//! [`PipelineMetrics`] records into a meter provider the caller owns; nothing
//! global is set. [`MetricsCapture`] is the in-memory fixture tests read the
//! exported values back from; [`stdout_meter_provider`] prints them instead.
//!
//! | instrument | kind | unit | attributes |
//! | --- | --- | --- | --- |
//! | [`RECORDS_IN`] | counter | `{record}` | [`SERVICE`], [`TOPIC`] |
//! | [`RECORDS_OUT`] | counter | `{record}` | [`SERVICE`], [`TOPIC`] |
//! | [`PROCESSING_DURATION`] | histogram | `ms` | [`SERVICE`], [`TOPIC`] (the input topic) |
//! | [`END_TO_END_LATENCY`] | histogram | `ms` | [`SERVICE`], [`TOPIC`] (the topic consumed) |
//! | [`CONSUMER_LAG`] | gauge | `{record}` | [`CONSUMER_GROUP`], [`TOPIC`], [`PARTITION`] |
//!
//! ```
//! use std::time::Duration;
//! use kafka_trace_harness::stockapp::metrics::{MetricsCapture, PROCESSING_DURATION, RECORDS_IN, SERVICE, TOPIC};
//!
//! // Arrange: a meter provider of this test only, exporting in memory.
//! let capture = MetricsCapture::new();
//! let metrics = capture.metrics();
//!
//! // Act
//! metrics.count_in("stock-processor", "stockapp.trades", 3);
//! metrics.record_processing("stock-processor", "stockapp.trades", Duration::from_micros(1_500));
//!
//! // Assert
//! let snapshot = capture.collect()?;
//! let filter = [(SERVICE, "stock-processor"), (TOPIC, "stockapp.trades")];
//! assert_eq!(snapshot.sum(RECORDS_IN, &filter), Some(3.0));
//! let latency = snapshot.histogram(PROCESSING_DURATION, &filter).unwrap();
//! assert_eq!((latency.count, latency.sum), (1, 1.5));
//! # Ok::<(), kafka_trace_harness::stockapp::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};

use crate::stockapp::error::{Error, Result};

/// Instrumentation scope of the meter [`PipelineMetrics`] uses.
pub const SCOPE_NAME: &str = "kafka-trace-harness";

/// Counter of records a service consumed.
pub const RECORDS_IN: &str = "stockapp.records.in";
/// Counter of records a service produced.
pub const RECORDS_OUT: &str = "stockapp.records.out";
/// Histogram of the time a service spent on one consumed record, in ms.
pub const PROCESSING_DURATION: &str = "stockapp.processing.duration";
/// Histogram of the time from a trade's timestamp to its consumption by an
/// API service, in ms.
pub const END_TO_END_LATENCY: &str = "stockapp.end_to_end.latency";
/// Gauge of how many records a consumer group still has to read from one
/// partition.
pub const CONSUMER_LAG: &str = "messaging.kafka.consumer.lag";

/// Attribute: the service that counted or measured (`datagen`,
/// `stock-processor`, `api-1`, ...).
pub const SERVICE: &str = "service";
/// Attribute: the topic (OpenTelemetry messaging semantic conventions).
pub const TOPIC: &str = "messaging.destination.name";
/// Attribute: the consumer group.
pub const CONSUMER_GROUP: &str = "messaging.consumer.group.name";
/// Attribute: the partition, as a decimal string.
pub const PARTITION: &str = "messaging.destination.partition.id";

/// Bucket bounds of the latency histograms, in ms. In-process hops take well
/// under a millisecond and a broker round trip a few, so the low end is finer
/// than OpenTelemetry's default bounds (which start at 5 ms).
pub const LATENCY_BOUNDS_MS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0,
    5_000.0, 10_000.0,
];

/// The pipeline's instruments. Cloning is cheap and clones record into the
/// same instruments; the meter provider stays the caller's to flush and shut
/// down.
///
/// ```
/// use kafka_trace_harness::stockapp::metrics::PipelineMetrics;
/// use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};
///
/// let exporter = InMemoryMetricExporter::default();
/// let provider = SdkMeterProvider::builder().with_periodic_exporter(exporter.clone()).build();
///
/// let metrics = PipelineMetrics::new(&provider);
/// metrics.count_out("datagen", "stockapp.trades", 1);
/// provider.force_flush()?;
///
/// assert!(!exporter.get_finished_metrics()?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct PipelineMetrics {
    instruments: Instruments,
    per_service: Option<Arc<PerService>>,
}

/// The instruments of one meter.
#[derive(Debug, Clone)]
struct Instruments {
    records_in: Counter<u64>,
    records_out: Counter<u64>,
    processing: Histogram<f64>,
    end_to_end: Histogram<f64>,
    consumer_lag: Gauge<u64>,
}

/// A provider per service, for exporters that send each service under a
/// resource of its own; see [`PipelineMetrics::per_service`].
struct PerService {
    provider_of: ProviderOf,
    /// Each service's instruments, and its provider, kept alive here: a
    /// provider shuts down when its last handle drops.
    instruments: RwLock<HashMap<String, (Instruments, SdkMeterProvider)>>,
}

type ProviderOf = Box<dyn Fn(&str) -> SdkMeterProvider + Send + Sync>;

impl fmt::Debug for PerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PerService")
    }
}

impl PerService {
    /// Records with the instruments of `service`'s provider, made on its
    /// first measurement.
    fn record(&self, service: &str, record: impl FnOnce(&Instruments)) {
        if let Some((instruments, _)) = self
            .instruments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
        {
            return record(instruments);
        }
        let mut all = self
            .instruments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let (instruments, _) = all.entry(service.to_owned()).or_insert_with(|| {
            let provider = (self.provider_of)(service);
            let instruments = Instruments::from_meter(&provider.meter_with_scope(scope()));
            (instruments, provider)
        });
        record(instruments);
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn service_topic(service: &str, topic: &str) -> [KeyValue; 2] {
    [
        KeyValue::new(SERVICE, service.to_owned()),
        KeyValue::new(TOPIC, topic.to_owned()),
    ]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

impl PipelineMetrics {
    /// The instruments of a meter with scope [`SCOPE_NAME`] from `provider`.
    pub fn new(provider: &impl MeterProvider) -> Self {
        Self::from_meter(&provider.meter_with_scope(scope()))
    }

    /// The instruments of `meter`.
    pub fn from_meter(meter: &Meter) -> Self {
        Self {
            instruments: Instruments::from_meter(meter),
            per_service: None,
        }
    }

    /// Also records every measurement of a service into instruments of
    /// its own, from `provider_of(service)`, asked once per service on its
    /// first measurement (the consumer lag goes to the consumer group's
    /// provider: the API services' groups are named after them). For
    /// exporters that want each service under its own resource, such as
    /// live OTLP export; the `service` attribute stays.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use kafka_trace_harness::stockapp::metrics::{MetricsCapture, MetricsSnapshot, RECORDS_IN};
    /// use opentelemetry_sdk::Resource;
    /// use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};
    ///
    /// // Arrange: every service's provider exports in memory.
    /// let exporter = InMemoryMetricExporter::default();
    /// let providers = Arc::new(Mutex::new(Vec::new()));
    /// let (per_service, made) = (exporter.clone(), providers.clone());
    /// let capture = MetricsCapture::new();
    /// let metrics = capture.metrics().clone().per_service(move |service| {
    ///     let provider = SdkMeterProvider::builder()
    ///         .with_periodic_exporter(per_service.clone())
    ///         .with_resource(Resource::builder_empty().with_service_name(service.to_owned()).build())
    ///         .build();
    ///     made.lock().unwrap().push(provider.clone());
    ///     provider
    /// });
    ///
    /// // Act
    /// metrics.count_in("api-1", "stockapp.dollarsbyzip", 2);
    ///
    /// // Assert: in the shared instruments, and under api-1's own resource.
    /// assert_eq!(capture.collect()?.sum(RECORDS_IN, &[]), Some(2.0));
    /// let providers = providers.lock().unwrap();
    /// assert_eq!(providers.len(), 1);
    /// providers[0].force_flush()?;
    /// let exported = exporter.get_finished_metrics()?;
    /// let service = exported[0].resource().get(&"service.name".into()).unwrap();
    /// assert_eq!(service.as_str(), "api-1");
    /// assert_eq!(MetricsSnapshot::from_resource_metrics(&exported[0]).sum(RECORDS_IN, &[]), Some(2.0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn per_service(
        mut self,
        provider_of: impl Fn(&str) -> SdkMeterProvider + Send + Sync + 'static,
    ) -> Self {
        self.per_service = Some(Arc::new(PerService {
            provider_of: Box::new(provider_of),
            instruments: RwLock::default(),
        }));
        self
    }

    /// Records into the shared instruments, and the service's own if any.
    fn record(&self, service: &str, record: impl Fn(&Instruments)) {
        record(&self.instruments);
        if let Some(per_service) = &self.per_service {
            per_service.record(service, record);
        }
    }
}

impl Instruments {
    fn from_meter(meter: &Meter) -> Self {
        Self {
            records_in: meter
                .u64_counter(RECORDS_IN)
                .with_unit("{record}")
                .with_description("Records a service consumed")
                .build(),
            records_out: meter
                .u64_counter(RECORDS_OUT)
                .with_unit("{record}")
                .with_description("Records a service produced")
                .build(),
            processing: meter
                .f64_histogram(PROCESSING_DURATION)
                .with_unit("ms")
                .with_description("Time a service spent on one consumed record")
                .with_boundaries(LATENCY_BOUNDS_MS.to_vec())
                .build(),
            end_to_end: meter
                .f64_histogram(END_TO_END_LATENCY)
                .with_unit("ms")
                .with_description(
                    "Time from a trade's timestamp to its consumption by an API service",
                )
                .with_boundaries(LATENCY_BOUNDS_MS.to_vec())
                .build(),
            consumer_lag: meter
                .u64_gauge(CONSUMER_LAG)
                .with_unit("{record}")
                .with_description("Records a consumer group has yet to read from a partition")
                .build(),
        }
    }
}

impl PipelineMetrics {
    /// Counts `records` consumed by `service` from `topic`.
    pub fn count_in(&self, service: &str, topic: &str, records: u64) {
        let attributes = service_topic(service, topic);
        self.record(service, |i| i.records_in.add(records, &attributes));
    }

    /// Counts `records` produced by `service` to `topic`.
    pub fn count_out(&self, service: &str, topic: &str, records: u64) {
        let attributes = service_topic(service, topic);
        self.record(service, |i| i.records_out.add(records, &attributes));
    }

    /// Records the time `service` spent on one record consumed from `topic`.
    pub fn record_processing(&self, service: &str, topic: &str, elapsed: Duration) {
        let attributes = service_topic(service, topic);
        self.record(service, |i| {
            i.processing.record(millis(elapsed), &attributes)
        });
    }

    /// Records the end-to-end latency of one record `service` consumed from
    /// `topic`: from `trade_timestamp_ms` (the trade's Kafka timestamp, epoch
    /// ms) to `consumed_at_ms`. Returns the latency recorded.
    ///
    /// Clocks of different hosts can disagree, so a consumption that seems to
    /// precede its trade counts as 0 ms rather than being dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafka_trace_harness::stockapp::metrics::MetricsCapture;
    ///
    /// let capture = MetricsCapture::new();
    ///
    /// let latency = capture.metrics().record_end_to_end("api-1", "stockapp.dollarsbyzip", 1_000, 1_250);
    /// let skewed = capture.metrics().record_end_to_end("api-1", "stockapp.dollarsbyzip", 1_000, 900);
    ///
    /// assert_eq!(latency, Duration::from_millis(250));
    /// assert_eq!(skewed, Duration::ZERO);
    /// ```
    pub fn record_end_to_end(
        &self,
        service: &str,
        topic: &str,
        trade_timestamp_ms: i64,
        consumed_at_ms: i64,
    ) -> Duration {
        let elapsed_ms = consumed_at_ms.saturating_sub(trade_timestamp_ms).max(0);
        let latency = Duration::from_millis(elapsed_ms.unsigned_abs());
        let attributes = service_topic(service, topic);
        self.record(service, |i| {
            i.end_to_end.record(millis(latency), &attributes)
        });
        latency
    }

    /// Records the lag of consumer `group` on `topic`/`partition`: the
    /// records between its next offset to read and the partition's high
    /// watermark (the offset the next produced record will get). Returns the
    /// lag recorded, 0 if the group is at or past the watermark.
    ///
    /// ```
    /// use kafka_trace_harness::stockapp::metrics::{CONSUMER_LAG, CONSUMER_GROUP, MetricsCapture};
    ///
    /// let capture = MetricsCapture::new();
    ///
    /// let lag = capture.metrics().record_consumer_lag("api-1", "stockapp.dollarsbyzip", 0, 10, 7);
    ///
    /// assert_eq!(lag, 3);
    /// let snapshot = capture.collect()?;
    /// assert_eq!(snapshot.sum(CONSUMER_LAG, &[(CONSUMER_GROUP, "api-1")]), Some(3.0));
    /// # Ok::<(), kafka_trace_harness::stockapp::Error>(())
    /// ```
    pub fn record_consumer_lag(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        high_watermark: i64,
        next_offset: i64,
    ) -> u64 {
        let lag = high_watermark
            .saturating_sub(next_offset)
            .max(0)
            .unsigned_abs();
        let attributes = [
            KeyValue::new(CONSUMER_GROUP, group.to_owned()),
            KeyValue::new(TOPIC, topic.to_owned()),
            KeyValue::new(PARTITION, partition.to_string()),
        ];
        self.record(group, |i| i.consumer_lag.record(lag, &attributes));
        lag
    }
}

/// A meter provider that prints every metric to stdout with
/// `opentelemetry-stdout`, for the CLI. It exports every `interval` and once
/// more on [`SdkMeterProvider::shutdown`], which the caller should call
/// before exiting. Its resource says `service.name = kafka-trace-harness`.
///
/// ```
/// use std::time::Duration;
/// use kafka_trace_harness::stockapp::metrics::{PipelineMetrics, stdout_meter_provider};
///
/// let provider = stdout_meter_provider(Duration::from_secs(60));
/// PipelineMetrics::new(&provider).count_in("api-1", "stockapp.dollarsbyzip", 1);
///
/// provider.shutdown()?; // prints the counter
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stdout_meter_provider(interval: Duration) -> SdkMeterProvider {
    let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(
        opentelemetry_stdout::MetricExporter::default(),
    )
    .with_interval(interval)
    .build();
    SdkMeterProvider::builder()
        .with_resource(
            Resource::builder_empty()
                .with_service_name(SCOPE_NAME)
                .build(),
        )
        .with_reader(reader)
        .build()
}

/// The metrics of one test: an [`SdkMeterProvider`] exporting into an
/// [`InMemoryMetricExporter`], the [`PipelineMetrics`] recording into it,
/// and [`MetricsCapture::collect`] to read the values back.
///
/// The exporter is only asked to export by `collect` (the periodic export
/// interval is an hour), so the values read are exactly those recorded
/// before the call. Temporality is cumulative: each snapshot holds the
/// totals since the capture was built.
#[derive(Debug)]
pub struct MetricsCapture {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
    metrics: PipelineMetrics,
}

impl Default for MetricsCapture {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsCapture {
    /// A capture with its own provider and exporter.
    pub fn new() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter.clone())
            .with_interval(Duration::from_secs(3_600))
            .build();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        let metrics = PipelineMetrics::new(&provider);
        Self {
            provider,
            exporter,
            metrics,
        }
    }

    /// The instruments to hand to the pipeline's services.
    pub fn metrics(&self) -> &PipelineMetrics {
        &self.metrics
    }

    /// The provider, for instruments of the test's own.
    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }

    /// Exports now and returns every data point recorded so far.
    pub fn collect(&self) -> Result<MetricsSnapshot> {
        let failed = |e: &dyn fmt::Display| Error::Metrics(e.to_string());
        // Only the latest export matters: it holds cumulative totals.
        self.exporter.reset();
        self.provider.force_flush().map_err(|e| failed(&e))?;
        let exported = self
            .exporter
            .get_finished_metrics()
            .map_err(|e| failed(&e))?;
        Ok(exported
            .last()
            .map(MetricsSnapshot::from_resource_metrics)
            .unwrap_or_default())
    }
}

/// The value of one data point, numbers widened to `f64`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PointValue {
    /// A counter or up-down counter.
    Sum(f64),
    /// A gauge's last value.
    Gauge(f64),
    /// A histogram's summary.
    Histogram(HistogramSummary),
}

/// Summary of a histogram data point (or several merged).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSummary {
    /// Number of measurements.
    pub count: u64,
    /// Sum of the measurements.
    pub sum: f64,
    /// Smallest measurement.
    pub min: Option<f64>,
    /// Largest measurement.
    pub max: Option<f64>,
    /// Bucket upper bounds (the last bucket is unbounded).
    pub bounds: Vec<f64>,
    /// Measurements per bucket, one more than `bounds`.
    pub bucket_counts: Vec<u64>,
}

impl HistogramSummary {
    /// The mean measurement, `None` without measurements.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    fn merge(mut self, other: &Self) -> Self {
        self.count += other.count;
        self.sum += other.sum;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if self.bounds == other.bounds {
            for (mine, theirs) in self.bucket_counts.iter_mut().zip(&other.bucket_counts) {
                *mine += theirs;
            }
        } else {
            // Different bounds cannot be added bucket by bucket.
            self.bounds.clear();
            self.bucket_counts.clear();
        }
        self
    }
}

/// One exported data point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Instrument name.
    pub name: String,
    /// Unit of the instrument.
    pub unit: String,
    /// Attributes, values as strings.
    pub attributes: BTreeMap<String, String>,
    /// The value.
    pub value: PointValue,
}

impl MetricPoint {
    fn matches(&self, name: &str, filter: &[(&str, &str)]) -> bool {
        self.name == name
            && filter
                .iter()
                .all(|(key, value)| self.attributes.get(*key).map(String::as_str) == Some(value))
    }
}

/// Every data point of one export, ordered by name then attributes.
/// `Display` lists them one per line, for failure messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    points: Vec<MetricPoint>,
}

/// Appends the data points of `data`, values converted by `to_f64` (u64 and
/// i64 have no lossless `Into<f64>`; values past 2^53 lose precision, which
/// no pipeline count reaches).
fn push_points<T: Copy>(
    name: &str,
    unit: &str,
    data: &MetricData<T>,
    to_f64: fn(T) -> f64,
    out: &mut Vec<MetricPoint>,
) {
    let attributes = |kvs: &mut dyn Iterator<Item = &KeyValue>| {
        kvs.map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect()
    };
    let mut push = |attributes: BTreeMap<String, String>, value| {
        out.push(MetricPoint {
            name: name.to_owned(),
            unit: unit.to_owned(),
            attributes,
            value,
        })
    };
    match data {
        MetricData::Sum(sum) => {
            for p in sum.data_points() {
                push(
                    attributes(&mut p.attributes()),
                    PointValue::Sum(to_f64(p.value())),
                );
            }
        }
        MetricData::Gauge(gauge) => {
            for p in gauge.data_points() {
                push(
                    attributes(&mut p.attributes()),
                    PointValue::Gauge(to_f64(p.value())),
                );
            }
        }
        MetricData::Histogram(histogram) => {
            for p in histogram.data_points() {
                push(
                    attributes(&mut p.attributes()),
                    PointValue::Histogram(HistogramSummary {
                        count: p.count(),
                        sum: to_f64(p.sum()),
                        min: p.min().map(to_f64),
                        max: p.max().map(to_f64),
                        bounds: p.bounds().collect(),
                        bucket_counts: p.bucket_counts().collect(),
                    }),
                );
            }
        }
        // PipelineMetrics configures no exponential histogram.
        MetricData::ExponentialHistogram(_) => {}
    }
}

impl MetricsSnapshot {
    /// The data points of an SDK export.
    pub fn from_resource_metrics(exported: &ResourceMetrics) -> Self {
        let mut points = Vec::new();
        for scope in exported.scope_metrics() {
            for metric in scope.metrics() {
                let (name, unit) = (metric.name(), metric.unit());
                match metric.data() {
                    AggregatedMetrics::F64(data) => {
                        push_points(name, unit, data, |v| v, &mut points)
                    }
                    AggregatedMetrics::U64(data) => {
                        push_points(name, unit, data, |v| v as f64, &mut points)
                    }
                    AggregatedMetrics::I64(data) => {
                        push_points(name, unit, data, |v| v as f64, &mut points)
                    }
                }
            }
        }
        points.sort_by(|a, b| (&a.name, &a.attributes).cmp(&(&b.name, &b.attributes)));
        Self { points }
    }

    /// Every data point.
    pub fn points(&self) -> &[MetricPoint] {
        &self.points
    }

    /// The data points of instrument `name` whose attributes include every
    /// `(key, value)` of `filter`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a MetricPoint> + 'a {
        self.points.iter().filter(move |p| p.matches(name, filter))
    }

    /// The sum of the counter or gauge values of the matching points (for
    /// the lag gauge: the total lag over the matching partitions); `None`
    /// when no counter or gauge point matches.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, filter)
            .filter_map(|p| match p.value {
                PointValue::Sum(v) | PointValue::Gauge(v) => Some(v),
                PointValue::Histogram(_) => None,
            })
            .reduce(|a, b| a + b)
    }

    /// The matching histogram points merged into one; `None` when none
    /// matches.
    pub fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Option<HistogramSummary> {
        self.matching(name, filter)
            .filter_map(|p| match &p.value {
                PointValue::Histogram(h) => Some(h.clone()),
                _ => None,
            })
            .reduce(|a, b| a.merge(&b))
    }
}

impl fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.points.is_empty() {
            return writeln!(f, "(no data points)");
        }
        for p in &self.points {
            let attributes: Vec<String> = p
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let value = match &p.value {
                PointValue::Sum(v) => format!("sum {v}"),
                PointValue::Gauge(v) => format!("gauge {v}"),
                PointValue::Histogram(h) => format!(
                    "histogram count {} sum {} min {:?} max {:?}",
                    h.count, h.sum, h.min, h.max
                ),
            };
            writeln!(
                f,
                "{} {{{}}} {value} {}",
                p.name,
                attributes.join(", "),
                p.unit
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_kept_apart_per_service_and_topic() {
        let capture = MetricsCapture::new();
        let metrics = capture.metrics().clone();

        metrics.count_out("datagen", "stockapp.trades", 5);
        metrics.count_in("stock-processor", "stockapp.trades", 4);
        metrics.count_in("stock-processor", "stockapp.trades", 1);
        metrics.count_out("stock-processor", "stockapp.dollarsbyzip", 2);
        metrics.count_out("stock-processor", "stockapp.trades-json", 5);
        let snapshot = capture.collect().unwrap();

        let processor = [(SERVICE, "stock-processor")];
        assert_eq!(
            snapshot.sum(RECORDS_IN, &processor),
            Some(5.0),
            "{snapshot}"
        );
        assert_eq!(
            snapshot.sum(RECORDS_OUT, &processor),
            Some(7.0),
            "{snapshot}"
        );
        assert_eq!(
            snapshot.sum(RECORDS_OUT, &[(TOPIC, "stockapp.trades")]),
            Some(5.0)
        );
        assert_eq!(snapshot.sum(RECORDS_IN, &[(SERVICE, "api-1")]), None);
        assert_eq!(snapshot.matching(RECORDS_OUT, &[]).count(), 3);
        let point = snapshot.matching(RECORDS_IN, &[]).next().unwrap();
        assert_eq!(point.unit, "{record}");
        assert_eq!(
            point.attributes,
            BTreeMap::from([
                (SERVICE.to_owned(), "stock-processor".to_owned()),
                (TOPIC.to_owned(), "stockapp.trades".to_owned()),
            ])
        );
    }

    #[test]
    fn snapshots_are_cumulative_and_exact() {
        let capture = MetricsCapture::new();
        let metrics = capture.metrics();

        metrics.count_in("api-1", "stockapp.dollarsbyzip", 1);
        let first = capture.collect().unwrap();
        metrics.count_in("api-1", "stockapp.dollarsbyzip", 2);
        let second = capture.collect().unwrap();

        assert_eq!(first.sum(RECORDS_IN, &[]), Some(1.0));
        assert_eq!(second.sum(RECORDS_IN, &[]), Some(3.0));
        assert_eq!(second.points().len(), 1, "{second}");
    }

    #[test]
    fn latencies_land_in_millisecond_histograms() {
        let capture = MetricsCapture::new();
        let metrics = capture.metrics();

        for micros in [200, 800, 3_000] {
            metrics.record_processing(
                "stock-processor",
                "stockapp.trades",
                Duration::from_micros(micros),
            );
        }
        metrics.record_end_to_end("api-1", "stockapp.dollarsbyzip", 10_000, 10_040);
        metrics.record_end_to_end("api-2", "stockapp.dollarsbyzip", 10_000, 10_060);
        let snapshot = capture.collect().unwrap();

        let processing = snapshot
            .histogram(PROCESSING_DURATION, &[(SERVICE, "stock-processor")])
            .unwrap();
        assert_eq!(processing.count, 3);
        assert!((processing.sum - 4.0).abs() < 1e-9, "{processing:?}");
        assert_eq!((processing.min, processing.max), (Some(0.2), Some(3.0)));
        assert_eq!(processing.bounds, LATENCY_BOUNDS_MS);
        // 0.2 ms in (0.1, 0.25], 0.8 ms in (0.5, 1], 3 ms in (2.5, 5].
        assert_eq!(
            processing.bucket_counts,
            [0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let end_to_end = snapshot
            .histogram(END_TO_END_LATENCY, &[(TOPIC, "stockapp.dollarsbyzip")])
            .unwrap();
        assert_eq!(end_to_end.count, 2);
        assert_eq!(end_to_end.mean(), Some(50.0));
        assert_eq!((end_to_end.min, end_to_end.max), (Some(40.0), Some(60.0)));
        let point = snapshot.matching(END_TO_END_LATENCY, &[]).next().unwrap();
        assert_eq!(point.unit, "ms");
    }

    #[test]
    fn consumer_lag_is_the_latest_value_per_group_and_partition() {
        let capture = MetricsCapture::new();
        let metrics = capture.metrics();

        metrics.record_consumer_lag("api-1", "stockapp.dollarsbyzip", 0, 100, 40);
        metrics.record_consumer_lag("api-1", "stockapp.dollarsbyzip", 0, 100, 90);
        metrics.record_consumer_lag("api-1", "stockapp.dollarsbyzip", 1, 10, 8);
        metrics.record_consumer_lag("api-2", "stockapp.dollarsbyzip", 0, 100, 100);
        let past_the_end = metrics.record_consumer_lag("api-3", "stockapp.dollarsbyzip", 0, 5, 9);
        let snapshot = capture.collect().unwrap();

        assert_eq!(past_the_end, 0);
        let group = |g| [(CONSUMER_GROUP, g), (PARTITION, "0")];
        assert_eq!(snapshot.sum(CONSUMER_LAG, &group("api-1")), Some(10.0));
        assert_eq!(snapshot.sum(CONSUMER_LAG, &group("api-2")), Some(0.0));
        assert_eq!(
            snapshot.sum(CONSUMER_LAG, &[(CONSUMER_GROUP, "api-1")]),
            Some(12.0),
            "{snapshot}"
        );
        assert!(matches!(
            snapshot.matching(CONSUMER_LAG, &[]).next().unwrap().value,
            PointValue::Gauge(_)
        ));
    }

    #[test]
    fn an_empty_capture_reads_as_empty_and_displays_so() {
        let capture = MetricsCapture::default();

        let snapshot = capture.collect().unwrap();

        assert!(snapshot.points().is_empty());
        assert_eq!(snapshot.to_string(), "(no data points)\n");
    }

    #[test]
    fn display_lists_one_point_per_line() {
        let capture = MetricsCapture::new();
        capture.metrics().count_in("api-1", "t", 2);
        capture
            .metrics()
            .record_processing("api-1", "t", Duration::from_millis(2));

        let text = capture.collect().unwrap().to_string();

        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.contains(
                "stockapp.records.in {messaging.destination.name=t, service=api-1} sum 2 {record}"
            ),
            "{text}"
        );
    }
}
