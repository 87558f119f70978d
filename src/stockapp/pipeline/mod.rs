//! The whole stockapp, traced, on one broker: `datagen` → `stock-processor`
//! → `api-1` … `api-N`.
//!
//! [`PipelineBuilder::start`] creates the topics, starts every chosen
//! service as a task and hands back a [`RunningPipeline`]: wait for it to
//! finish the generated records, read its progress, stop it.

mod api_service;
mod datagen_service;
mod in_flight;
mod kstream_service;
mod processor_service;
mod timestamp_order;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::record::Record;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use datagen_service::TradeClock;
use processor_service::plain_record;
pub use processor_service::{
    DUPLICATE_ATTRIBUTE, FILTERED_OUT_ATTRIBUTE, JOINED_USER_ATTRIBUTE,
    LATE_AMOUNT_CENTS_ATTRIBUTE, LATE_WINDOW_START_ATTRIBUTE, LATE_ZIPCODE_ATTRIBUTE,
    ProcessorStep,
};

use self::api_service::{ApiConsumerService, ApiMetrics};
use self::kstream_service::KstreamService;
use self::processor_service::ProcessorService;
use crate::Broker;
use crate::broker::DeletedRecords;
use crate::capture::SpanCapture;
use crate::stockapp::error::{Error, Result};
use crate::stockapp::metrics::PipelineMetrics;
use crate::stockapp::{
    ApiState, DLQ_TOPIC, DOLLARS_BY_ZIP_TOPIC, Datagen, DecodeError, SchemaRegistry,
    StockProcessor, TRADES_JSON_TOPIC, TRADES_TOPIC, USERS_TOPIC,
};
use crate::traced::retry::retry_read;
use crate::traced::{
    BatchingTracedProducer, ConsumedRecord, DEFAULT_MAX_WAIT, StartFrom, TracedConsumer,
};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

/// How long a service's fetch may wait on an empty partition, against a
/// broker that answers only when the wait runs out (the embedded broker
/// without its front): every idle poll costs this much latency. Other
/// brokers answer as soon as records arrive, so the services wait
/// [`DEFAULT_MAX_WAIT`] there, and an idle pipeline asks 250 times less
/// often.
const LATE_ANSWER_POLL_WAIT: Duration = Duration::from_millis(2);

/// Records per partition a service's poll takes: the records it holds,
/// with their open spans, while their outputs are stored.
const POLL_RECORDS: usize = 500;

/// Outputs a service keeps in flight (sent, not yet acknowledged) before
/// it waits for the oldest: enough for many full batches per partition.
const MAX_IN_FLIGHT: usize = 10_000;

/// Service name of the generator.
pub const DATAGEN_SERVICE: &str = "datagen";
/// Service name of the stream processor (ksqlDB's statements).
pub const PROCESSOR_SERVICE: &str = "stock-processor";
/// Service name of the Kafka Streams app (Avro → JSON).
pub const KSTREAM_SERVICE: &str = "kstream-service";

/// Service name of API consumer number `index` (from 1).
pub fn api_service_name(index: usize) -> String {
    format!("api-{index}")
}

/// Which services a pipeline runs; the others can be other programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    /// The fake-data generator.
    pub datagen: bool,
    /// The stream processor (ksqlDB).
    pub processor: bool,
    /// The Kafka Streams app.
    pub kstream: bool,
    /// The API consumers.
    pub api: bool,
}

impl Default for Services {
    /// Every service, as [`PipelineBuilder::new`] runs.
    fn default() -> Self {
        Self::ALL
    }
}

impl Services {
    /// Every service.
    pub const ALL: Self = Self {
        datagen: true,
        processor: true,
        kstream: true,
        api: true,
    };

    /// The topics these services write: where another program reading
    /// after them must catch up.
    pub fn written_topics(&self) -> Vec<&'static str> {
        let mut topics = Vec::new();
        if self.datagen {
            topics.extend([USERS_TOPIC, TRADES_TOPIC]);
        }
        if self.processor {
            topics.push(DOLLARS_BY_ZIP_TOPIC);
        }
        if self.kstream {
            topics.push(TRADES_JSON_TOPIC);
        }
        if self.processor || self.kstream || self.api {
            topics.push(DLQ_TOPIC);
        }
        topics
    }

    /// Names of the services these are, as their spans and consumers are
    /// named, for `api_consumers` API consumers.
    pub fn names(&self, api_consumers: usize) -> Vec<String> {
        let mut names = Vec::new();
        for (runs, name) in [
            (self.datagen, DATAGEN_SERVICE),
            (self.processor, PROCESSOR_SERVICE),
            (self.kstream, KSTREAM_SERVICE),
        ] {
            if runs {
                names.push(name.to_owned());
            }
        }
        if self.api {
            names.extend((1..=api_consumers).map(api_service_name));
        }
        names
    }

    /// Parses a comma-separated list of `datagen`, `processor`, `kstream`,
    /// `api`.
    pub fn parse(list: &str) -> std::result::Result<Self, String> {
        let mut services = Self {
            datagen: false,
            processor: false,
            kstream: false,
            api: false,
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "datagen" => services.datagen = true,
                "processor" => services.processor = true,
                "kstream" => services.kstream = true,
                "api" => services.api = true,
                other => {
                    return Err(format!(
                        "unknown service {other:?}: expected datagen, processor, kstream or api"
                    ));
                }
            }
        }
        Ok(services)
    }
}

/// Settings of a pipeline run; every default is set in [`PipelineBuilder::new`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PipelineBuilder {
    seed: u64,
    trades: usize,
    users: usize,
    api_consumers: usize,
    partitions: u16,
    clock: Option<TradeClock>,
    rate: Option<f64>,
    linger: Duration,
    services: Services,
    registry: SchemaRegistry,
    metrics: Option<PipelineMetrics>,
    stop_deadline: Option<Duration>,
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineBuilder {
    /// Seed 1, 100 trades, 9 users, 2 API consumers, 3 partitions for the
    /// trades and users topics, trades stamped when sent, every service.
    pub fn new() -> Self {
        Self {
            seed: 1,
            trades: 100,
            users: 9,
            api_consumers: 2,
            partitions: 3,
            clock: None,
            rate: None,
            linger: crate::traced::DEFAULT_LINGER,
            services: Services::ALL,
            registry: SchemaRegistry::new(),
            metrics: None,
            stop_deadline: None,
        }
    }

    /// Seed of the generator: same seed, same records.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Number of trades to generate. Default 100.
    pub fn trades(mut self, count: usize) -> Self {
        self.trades = count;
        self
    }

    /// Number of user profiles to generate (sent before the trades). Default 9.
    pub fn users(mut self, count: usize) -> Self {
        self.users = count;
        self
    }

    /// Number of API consumers, each its own service and consumer group.
    /// Default 2.
    pub fn api_consumers(mut self, count: usize) -> Self {
        self.api_consumers = count;
        self
    }

    /// Partitions of `stockapp.trades`, `stockapp.users` and
    /// `stockapp.trades-json`. Default 3; `stockapp.dollarsbyzip` has one.
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Timestamps of the generated trades. Default: none, each trade is
    /// stamped when it is sent.
    pub fn clock(mut self, clock: TradeClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Trades per second datagen offers (users go first, at once).
    /// Default: none, as fast as the pipeline takes them.
    pub fn rate(mut self, trades_per_second: f64) -> Self {
        self.rate = Some(trades_per_second);
        self
    }

    /// How long each service's producer waits to fill a partition's batch
    /// before sending it. Default [`DEFAULT_LINGER`](crate::traced::DEFAULT_LINGER)
    /// (5 ms, librdkafka's default); shorter lowers latency at a low rate,
    /// longer makes fewer, larger requests.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Which services run here. Default: all.
    pub fn services(mut self, services: Services) -> Self {
        self.services = services;
        self
    }

    /// The schema registry the generator and processor use; share it with
    /// a [`RegistryServer`](crate::stockapp::RegistryServer) to serve it
    /// over HTTP. Default: a new, empty one.
    pub fn registry(mut self, registry: SchemaRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Report records in / out, processing and end-to-end latency and
    /// consumer lag to `metrics`. Default: no metrics.
    pub fn metrics(mut self, metrics: PipelineMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How long [`RunningPipeline::stop`] may take: the services' last
    /// steps, their outputs still in flight, datagen's queued sends. Past
    /// it, the services still running are cut off (what they had not
    /// committed is read again by a consumer built again with the same
    /// [`OffsetStore`](crate::traced::OffsetStore), if any) and `stop`
    /// fails, naming each and the step it was on. Default: the broker's
    /// [`client_deadline`](Broker::client_deadline).
    pub fn stop_deadline(mut self, deadline: Duration) -> Self {
        self.stop_deadline = Some(deadline);
        self
    }

    /// The records this pipeline's generator sends.
    pub fn datagen(&self) -> Datagen {
        Datagen::builder()
            .seed(self.seed)
            .trades(self.trades)
            .users(self.users)
            .build()
    }

    /// Creates the topics and starts the services, each service's spans
    /// going to its own tracer of `capture`.
    pub fn start<'a>(
        self,
        broker: &'a Broker,
        capture: &'a SpanCapture,
    ) -> impl Future<Output = Result<RunningPipeline>> + 'a {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow_local(async move {
            let tracer = |service: &str| capture.tracer(service);
            self.start_with(broker, &tracer).await
        })
    }

    /// Like [`start`](Self::start), with tracing off: every tracer samples
    /// nothing, so no span is recorded (context headers still travel, marked
    /// not sampled). The baseline for measuring what tracing costs.
    pub fn start_untraced(self, broker: &Broker) -> impl Future<Output = Result<RunningPipeline>> {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow_local(async move {
            let provider = SdkTracerProvider::builder()
                .with_sampler(Sampler::AlwaysOff)
                .build();
            let tracer = |service: &str| provider.tracer(service.to_owned());
            self.start_with(broker, &tracer).await
        })
    }

    async fn start_with(
        self,
        broker: &Broker,
        tracer_for: &dyn Fn(&str) -> SdkTracer,
    ) -> Result<RunningPipeline> {
        let partitions = self.partitions;
        for (topic, count) in [
            (TRADES_TOPIC, partitions),
            (USERS_TOPIC, partitions),
            (TRADES_JSON_TOPIC, partitions),
            (DOLLARS_BY_ZIP_TOPIC, 1),
            (DLQ_TOPIC, 1),
        ] {
            ensure_topic(broker, topic, count).await?;
        }
        let partitions = i32::from(partitions);
        let registry = self.registry.clone();
        let api_consumers = if self.services.api {
            self.api_consumers
        } else {
            0
        };
        let progress = Arc::new(Progress::new(self.services, api_consumers));
        let linger = self.linger;
        let producer = |tracer: SdkTracer| {
            BatchingTracedProducer::builder()
                .linger(linger)
                .build(broker, tracer)
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let poll_wait = if broker.answers_fetches_early() {
            DEFAULT_MAX_WAIT
        } else {
            LATE_ANSWER_POLL_WAIT
        };
        let mut tasks = JoinSet::new();
        let mut statuses = Vec::new();
        let mut status_of = |service: &str| {
            let status = ServiceStatus::new(service);
            statuses.push(Arc::clone(&status));
            status
        };
        let started = Instant::now();
        // Records deleted before a reader here could read them (an existing
        // cluster's retention): said in the progress, not only on a span.
        let mut deleted_before_start = Vec::new();
        let mut note_deleted = |service: &str, consumer: &TracedConsumer| {
            deleted_before_start.extend(
                consumer
                    .deleted_unread()
                    .into_iter()
                    .map(|deleted| (service.to_owned(), deleted)),
            );
        };

        if self.services.processor {
            let tracer = tracer_for(PROCESSOR_SERVICE);
            let consumer = |topic: &str, max_wait: Duration| {
                TracedConsumer::builder(PROCESSOR_SERVICE, topic)
                    .start_from(StartFrom::Earliest)
                    .max_wait(max_wait)
                    .max_partition_records(POLL_RECORDS)
                    .build(broker, tracer.clone())
            };
            let trades = consumer(TRADES_TOPIC, poll_wait).await?;
            // Users are read until caught up: an empty answer must be quick.
            let users = consumer(USERS_TOPIC, Duration::ZERO).await?;
            note_deleted(PROCESSOR_SERVICE, &users);
            note_deleted(PROCESSOR_SERVICE, &trades);
            let service = ProcessorService {
                trades,
                users,
                producer: producer(tracer.clone()).await?,
                registry: registry.clone(),
                logic: StockProcessor::new(),
                user_sends: Default::default(),
                metrics: self.metrics.clone(),
                seen_trades: Default::default(),
                in_flight: in_flight::InFlight::new(MAX_IN_FLIGHT),
                held_trades: timestamp_order::TimestampOrder::new(processor_service::MAX_TASK_IDLE),
            };
            tasks.spawn(run_service(
                service,
                status_of(PROCESSOR_SERVICE),
                Arc::clone(&progress),
                stop_rx.clone(),
                count_processor,
            ));
        }

        if self.services.kstream {
            let tracer = tracer_for(KSTREAM_SERVICE);
            let trades = TracedConsumer::builder(KSTREAM_SERVICE, TRADES_TOPIC)
                .start_from(StartFrom::Earliest)
                .max_wait(poll_wait)
                .max_partition_records(POLL_RECORDS)
                .build(broker, tracer.clone())
                .await?;
            note_deleted(KSTREAM_SERVICE, &trades);
            let service = KstreamService {
                trades,
                producer: producer(tracer).await?,
                registry: registry.clone(),
                json_partitions: partitions,
                metrics: self.metrics.clone(),
                in_flight: in_flight::InFlight::new(MAX_IN_FLIGHT),
            };
            tasks.spawn(run_service(
                service,
                status_of(KSTREAM_SERVICE),
                Arc::clone(&progress),
                stop_rx.clone(),
                count_kstream,
            ));
        }

        let mut api_states = Vec::new();
        if self.services.api {
            for index in 1..=self.api_consumers {
                let name = api_service_name(index);
                let tracer = tracer_for(&name);
                let state = ApiState::new();
                let consumer = TracedConsumer::builder(name.clone(), DOLLARS_BY_ZIP_TOPIC)
                    .start_from(StartFrom::Earliest)
                    .max_wait(poll_wait)
                    .max_partition_records(POLL_RECORDS)
                    .build(broker, tracer.clone())
                    .await?;
                note_deleted(&name, &consumer);
                let service = ApiConsumerService {
                    consumer,
                    producer: producer(tracer).await?,
                    in_flight: in_flight::InFlight::new(MAX_IN_FLIGHT),
                    state: state.clone(),
                    metrics: match &self.metrics {
                        Some(metrics) => Some(ApiMetrics {
                            metrics: metrics.clone(),
                            service: name.clone(),
                            watermark: watermark_client(broker).await?,
                            deadline: broker.client_deadline(),
                        }),
                        None => None,
                    },
                };
                let row = index - 1;
                tasks.spawn(run_service(
                    service,
                    status_of(&name),
                    Arc::clone(&progress),
                    stop_rx.clone(),
                    move |progress: &Progress, step: api_service::ApiStep| {
                        progress.api_rows[row].fetch_add(step.rows_in, Ordering::SeqCst);
                        progress
                            .dead_lettered
                            .fetch_add(step.dead_lettered, Ordering::SeqCst);
                    },
                ));
                api_states.push(state);
            }
        }

        let datagen = self.datagen();
        if self.services.datagen {
            let producer = producer(tracer_for(DATAGEN_SERVICE)).await?;
            let plan = datagen_service::DatagenPlan {
                datagen: datagen.clone(),
                clock: self.clock,
                rate: self.rate,
                partitions,
                reader_deadline: broker.client_deadline(),
            };
            let registry = registry.clone();
            let progress = Arc::clone(&progress);
            let metrics = self.metrics.clone();
            let mut stop = stop_rx.clone();
            let status = status_of(DATAGEN_SERVICE);
            tasks.spawn(async move {
                let _finished = status.finish_on_drop();
                status.doing("sending the generated records");
                // A stop ends the generator between two records; what was
                // sent is then stored or fails, and is counted, not dropped.
                let send_all = datagen_service::run(
                    &producer,
                    &registry,
                    &plan,
                    metrics.as_ref(),
                    &progress,
                    stop.clone(),
                );
                // Said as soon as a stop comes, also while a send waits
                // for the broker, so that a stop that overruns names it.
                let stopping = async {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                    status.doing("waiting for the broker to store its queued records");
                    std::future::pending::<std::convert::Infallible>().await
                };
                let completed = tokio::select! {
                    completed = send_all => completed?,
                    never = stopping => match never {},
                };
                progress.datagen_done.store(completed, Ordering::SeqCst);
                Ok(())
            });
        }

        Ok(RunningPipeline {
            stop_deadline: self.stop_deadline.unwrap_or(broker.client_deadline()),
            settings: self,
            progress,
            api_states,
            stop: stop_tx,
            tasks,
            statuses,
            started,
            deleted_before_start,
            client: Arc::new(broker.client().await?),
        })
    }
}

/// Counters every service task updates.
#[derive(Debug)]
struct Progress {
    /// The services running here: which ones read what datagen sends.
    services: Services,
    /// Told whenever a reader settled records, for datagen's backpressure.
    readers_advanced: tokio::sync::Notify,
    datagen_done: AtomicBool,
    datagen_trades: AtomicUsize,
    datagen_users: AtomicUsize,
    trades_in: AtomicUsize,
    users_in: AtomicUsize,
    rows_out: AtomicUsize,
    json_out: AtomicUsize,
    kstream_trades_in: AtomicUsize,
    kstream_failed: AtomicUsize,
    dead_lettered: AtomicUsize,
    duplicates: AtomicUsize,
    redeliveries: AtomicUsize,
    filtered_out: AtomicUsize,
    late: AtomicUsize,
    /// Rows read by each API consumer, in service order.
    api_rows: Vec<AtomicUsize>,
    /// Each reader's committed positions, by (service, topic): what it has
    /// settled, whatever the counts say (copies of a record stored twice
    /// count twice).
    committed: std::sync::Mutex<std::collections::HashMap<(String, &'static str), Positions>>,
}

/// Next offset by partition.
type Positions = std::collections::BTreeMap<i32, i64>;

impl Progress {
    fn new(services: Services, api_consumers: usize) -> Self {
        Self {
            services,
            readers_advanced: tokio::sync::Notify::new(),
            datagen_done: AtomicBool::default(),
            datagen_trades: AtomicUsize::default(),
            datagen_users: AtomicUsize::default(),
            trades_in: AtomicUsize::default(),
            users_in: AtomicUsize::default(),
            rows_out: AtomicUsize::default(),
            json_out: AtomicUsize::default(),
            kstream_trades_in: AtomicUsize::default(),
            kstream_failed: AtomicUsize::default(),
            dead_lettered: AtomicUsize::default(),
            duplicates: AtomicUsize::default(),
            redeliveries: AtomicUsize::default(),
            filtered_out: AtomicUsize::default(),
            late: AtomicUsize::default(),
            api_rows: (0..api_consumers).map(|_| AtomicUsize::default()).collect(),
            committed: Default::default(),
        }
    }

    fn note_committed(&self, service: &str, positions: Vec<(&'static str, Positions)>) {
        let mut committed = self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (topic, at) in positions {
            committed.insert((service.to_owned(), topic), at);
        }
    }

    fn committed(&self, service: &str, topic: &'static str) -> Positions {
        self.committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(service.to_owned(), topic))
            .cloned()
            .unwrap_or_default()
    }

    /// The most records one of this pipeline's readers has yet to settle
    /// of what was sent to it: trades for the processor and the Kafka
    /// Streams app, rows for the API consumers. Services that other
    /// programs play are not counted (their positions are unknown here).
    fn unread(&self) -> usize {
        let load = |n: &AtomicUsize| n.load(Ordering::SeqCst);
        let trades = load(&self.datagen_trades);
        let mut unread = 0;
        if self.services.processor {
            unread = unread.max(trades.saturating_sub(load(&self.trades_in)));
        }
        if self.services.kstream {
            unread = unread.max(trades.saturating_sub(load(&self.kstream_trades_in)));
        }
        if self.services.processor
            && let Some(slowest) = self.api_rows.iter().map(load).min()
        {
            unread = unread.max(load(&self.rows_out).saturating_sub(slowest));
        }
        unread
    }

    /// Records settled by every reader here, summed: changes whenever one
    /// of them advances.
    fn read_so_far(&self) -> usize {
        let load = |n: &AtomicUsize| n.load(Ordering::SeqCst);
        load(&self.trades_in)
            + load(&self.kstream_trades_in)
            + self.api_rows.iter().map(load).sum::<usize>()
    }

    /// Waits until a reader says it advanced, or briefly: a notice sent
    /// between the caller's check and this wait is not queued.
    async fn wait_for_readers(&self) {
        let _ =
            tokio::time::timeout(Duration::from_millis(10), self.readers_advanced.notified()).await;
    }

    fn readers_advanced(&self) {
        self.readers_advanced.notify_waiters();
    }
}

/// What a pipeline has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineProgress {
    /// The generator finished sending.
    pub datagen_done: bool,
    /// Trades the generator sent.
    pub trades_sent: usize,
    /// User profiles the generator sent.
    pub users_sent: usize,
    /// Trades the processor read.
    pub trades_processed: usize,
    /// User profiles the processor read.
    pub users_processed: usize,
    /// Rows the processor sent to `stockapp.dollarsbyzip`.
    pub rows_sent: usize,
    /// Trades the Kafka Streams app read.
    pub kstream_trades_processed: usize,
    /// Records the Kafka Streams app sent to `stockapp.trades-json`.
    pub json_sent: usize,
    /// Trades the Kafka Streams app could not decode (error spans).
    pub kstream_failed: usize,
    /// Records copied to `stockapp.dlq`, by any service.
    pub dead_lettered: usize,
    /// Trades the processor read twice from one send span (a send retried
    /// after the broker had stored it) and skipped.
    pub duplicates: usize,
    /// Records the processor's consumers delivered again after a restart.
    pub redeliveries: usize,
    /// Trades the processor read that produced no row: filtered out by the
    /// query, bad timestamps, and late ones.
    pub trades_filtered_out: usize,
    /// Of those, trades whose window had closed (later than the grace
    /// period): missing from the totals, as in ksqlDB, and said so here.
    pub trades_late: usize,
    /// Rows each API consumer read, in service order.
    pub api_rows: Vec<usize>,
    /// Time since the start.
    pub elapsed: Duration,
    /// The services running here (the others, if any, are other programs).
    pub services: Services,
    /// Records the broker had deleted before a service here could read
    /// them (an existing cluster's retention), by service: never read.
    pub deleted_before_start: Vec<(String, DeletedRecords)>,
}

impl PipelineProgress {
    /// Everything generated has gone through every running service.
    fn is_complete(&self, services: Services) -> bool {
        let generated = !services.datagen || self.datagen_done;
        let processed = !(services.processor && services.datagen)
            || (self.trades_processed >= self.trades_sent
                && self.users_processed >= self.users_sent);
        let converted = !(services.kstream && services.datagen)
            || self.kstream_trades_processed >= self.trades_sent;
        let consumed = !(services.api && services.processor)
            || self.api_rows.iter().all(|&n| n >= self.rows_sent);
        generated && processed && converted && consumed
    }
}

/// A started pipeline: its services run as tasks until [`stop`](Self::stop)
/// or drop.
#[derive(Debug)]
pub struct RunningPipeline {
    settings: PipelineBuilder,
    progress: Arc<Progress>,
    api_states: Vec<ApiState>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<()>>,
    /// What each service task is doing, for a stop that overruns.
    statuses: Vec<Arc<ServiceStatus>>,
    stop_deadline: Duration,
    started: Instant,
    deleted_before_start: Vec<(String, DeletedRecords)>,
    /// Reads the ends of the topics, for [`wait_until_complete`](Self::wait_until_complete).
    client: Arc<rskafka::client::Client>,
}

/// How a service task ended: its own error, or a panic told as one.
fn service_result(joined: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    joined.map_err(|e| Error::Pipeline(format!("a service panicked: {e}")))?
}

impl RunningPipeline {
    /// The counters right now.
    pub fn progress(&self) -> PipelineProgress {
        let p = &self.progress;
        PipelineProgress {
            datagen_done: p.datagen_done.load(Ordering::SeqCst),
            trades_sent: p.datagen_trades.load(Ordering::SeqCst),
            users_sent: p.datagen_users.load(Ordering::SeqCst),
            trades_processed: p.trades_in.load(Ordering::SeqCst),
            users_processed: p.users_in.load(Ordering::SeqCst),
            rows_sent: p.rows_out.load(Ordering::SeqCst),
            kstream_trades_processed: p.kstream_trades_in.load(Ordering::SeqCst),
            json_sent: p.json_out.load(Ordering::SeqCst),
            kstream_failed: p.kstream_failed.load(Ordering::SeqCst),
            dead_lettered: p.dead_lettered.load(Ordering::SeqCst),
            duplicates: p.duplicates.load(Ordering::SeqCst),
            redeliveries: p.redeliveries.load(Ordering::SeqCst),
            trades_filtered_out: p.filtered_out.load(Ordering::SeqCst),
            trades_late: p.late.load(Ordering::SeqCst),
            api_rows: p
                .api_rows
                .iter()
                .map(|n| n.load(Ordering::SeqCst))
                .collect(),
            elapsed: self.started.elapsed(),
            services: self.settings.services,
            deleted_before_start: self.deleted_before_start.clone(),
        }
    }

    /// The in-memory rows of each API consumer, in service order.
    pub fn api_states(&self) -> &[ApiState] {
        &self.api_states
    }

    /// Waits until every generated record went through every running
    /// service, or a service failed, or `deadline` passed.
    pub fn wait_until_complete(
        &mut self,
        deadline: Duration,
    ) -> impl Future<Output = Result<PipelineProgress>> + '_ {
        self.wait_until_complete_observed(deadline, |_| {})
    }

    /// [`wait_until_complete`](Self::wait_until_complete), showing each
    /// poll's counters to `observe` (a progress bar, say).
    pub fn wait_until_complete_observed<'a>(
        &'a mut self,
        deadline: Duration,
        mut observe: impl FnMut(&PipelineProgress) + 'a,
    ) -> impl Future<Output = Result<PipelineProgress>> + 'a {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow_local(async move {
            let until = Instant::now() + deadline;
            let services = self.settings.services;
            self.wait_for(
                "every generated record through every service",
                |p| {
                    observe(p);
                    p.is_complete(services)
                },
                deadline,
            )
            .await?;
            self.wait_until_read_to_end(until).await?;
            Ok(self.progress())
        })
    }

    /// Waits until every reader here has committed up to the end of each
    /// topic a service here writes. The counts alone can hold early: a
    /// record stored twice (a send retried after the broker had stored it)
    /// is read, and counted, twice, so a reader could be counted done
    /// while the last records were still unread.
    async fn wait_until_read_to_end(&mut self, until: Instant) -> Result<()> {
        let services = self.settings.services;
        let mut stages: Vec<(&'static str, Vec<String>)> = Vec::new();
        if services.datagen {
            let mut trade_readers = Vec::new();
            if services.processor {
                trade_readers.push(PROCESSOR_SERVICE.to_owned());
                stages.push((USERS_TOPIC, vec![PROCESSOR_SERVICE.to_owned()]));
            }
            if services.kstream {
                trade_readers.push(KSTREAM_SERVICE.to_owned());
            }
            stages.push((TRADES_TOPIC, trade_readers));
        }
        // Last: the end of the rows is final once the processor has
        // committed every trade (it commits a trade once its row is stored).
        if services.processor {
            let api_readers = (1..=self.api_states.len()).map(api_service_name);
            stages.push((DOLLARS_BY_ZIP_TOPIC, api_readers.collect()));
        }
        for (topic, readers) in stages {
            self.wait_until_at_end(topic, &readers, until).await?;
        }
        Ok(())
    }

    /// Waits until the API consumers here have read to the end of what is
    /// now in `stockapp.dollarsbyzip`: for a processor that runs elsewhere,
    /// once it has written its last row (it has caught up on the trades),
    /// so that the rows it wrote are counted read here, not cut off by the
    /// stop. Fails naming the reader behind once `deadline` passed.
    pub fn wait_until_rows_read(
        &mut self,
        deadline: Duration,
    ) -> impl Future<Output = Result<PipelineProgress>> + '_ {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow_local(async move {
            let until = Instant::now() + deadline;
            let api_readers: Vec<String> =
                (1..=self.api_states.len()).map(api_service_name).collect();
            self.wait_until_at_end(DOLLARS_BY_ZIP_TOPIC, &api_readers, until)
                .await?;
            Ok(self.progress())
        })
    }

    /// Waits until each of `readers` has committed up to the end of
    /// `topic` as it is now.
    fn wait_until_at_end<'a>(
        &'a mut self,
        topic: &'static str,
        readers: &'a [String],
        until: Instant,
    ) -> impl Future<Output = Result<()>> + 'a {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow_local(async move {
            if readers.is_empty() {
                return Ok(());
            }
            let ends = self.end_offsets(topic, until).await?;
            loop {
                let behind = readers.iter().find_map(|reader| {
                    let committed = self.progress.committed(reader, topic);
                    ends.iter()
                        .find(|(p, end)| committed.get(p).copied().unwrap_or(0) < **end)
                        .map(|(p, end)| {
                            format!(
                                "{reader} committed {} of the {end} records of {topic} \
                             partition {p}",
                                committed.get(p).copied().unwrap_or(0)
                            )
                        })
                });
                let Some(behind) = behind else { break };
                if let Some(joined) = self.tasks.try_join_next() {
                    service_result(joined)?;
                    continue;
                }
                if Instant::now() >= until {
                    return Err(Error::Pipeline(format!(
                        "waited for every reader to read to the end of what was written: {behind}"
                    )));
                }
                // A poll interval, not synchronisation: the loop checks positions.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        })
    }

    /// The end offset of each partition of `topic`, read by `until`.
    async fn end_offsets(&self, topic: &'static str, until: Instant) -> Result<Positions> {
        let partitions = if topic == DOLLARS_BY_ZIP_TOPIC {
            1
        } else {
            i32::from(self.settings.partitions)
        };
        let mut ends = Positions::new();
        for partition in 0..partitions {
            // A retriable error (a leader move, a timeout) is asked again.
            let end = retry_read(until, || async {
                self.client
                    .partition_client(topic, partition, UnknownTopicHandling::Error)
                    .await?
                    .get_offset(rskafka::client::partition::OffsetAt::Latest)
                    .await
            });
            let remaining = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, end).await {
                Ok(Ok(end)) => ends.insert(partition, end),
                Ok(Err((e, attempts))) => {
                    return Err(Error::Pipeline(format!(
                        "reading the end of {topic} partition {partition}: {e} \
                         ({attempts} failed attempts)"
                    )));
                }
                Err(_) => {
                    return Err(Error::Pipeline(format!(
                        "reading the end of {topic} partition {partition} took past the deadline"
                    )));
                }
            };
        }
        Ok(ends)
    }

    /// Waits until `condition` (described by `what`) holds for the
    /// counters, or a service failed, or `deadline` passed; the error then
    /// names what it waited for and the counters it saw last.
    ///
    /// For tests that feed the services themselves, e.g. "every trade I
    /// produced was processed": `|p| p.trades_processed == 10`.
    pub fn wait_for<'a>(
        &'a mut self,
        what: &'a str,
        mut condition: impl FnMut(&PipelineProgress) -> bool + 'a,
        deadline: Duration,
    ) -> impl Future<Output = Result<PipelineProgress>> + 'a {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow_local(async move {
            let until = Instant::now() + deadline;
            loop {
                let progress = self.progress();
                if condition(&progress) {
                    return Ok(progress);
                }
                // A service that ended early ended with an error: report it.
                if let Some(joined) = self.tasks.try_join_next() {
                    service_result(joined)?;
                    continue;
                }
                if Instant::now() >= until {
                    return Err(Error::Pipeline(format!(
                        "waited {deadline:?} for {what}; progress: {progress:?}"
                    )));
                }
                // A poll interval, not synchronisation: the loop checks counters.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }

    /// Stops every service and waits for them, within the
    /// [`stop_deadline`](PipelineBuilder::stop_deadline); returns the
    /// final counters and the first error a service reported.
    ///
    /// A service still running at the deadline (a broker that stopped
    /// answering, say) is cut off, and `stop` fails naming it and the
    /// step it was on.
    pub fn stop(self) -> impl Future<Output = Result<PipelineProgress>> {
        let deadline = self.stop_deadline;
        self.stop_within(deadline)
    }

    /// [`stop`](Self::stop) with its own `deadline`.
    pub fn stop_within(
        mut self,
        deadline: Duration,
    ) -> impl Future<Output = Result<PipelineProgress>> {
        // Behind a pointer: see crate::shallow.
        crate::shallow::shallow(async move {
            let _ = self.stop.send(true);
            let mut first_error = None;
            let until = tokio::time::Instant::now() + deadline;
            loop {
                let joined = match tokio::time::timeout_at(until, self.tasks.join_next()).await {
                    Ok(Some(joined)) => joined,
                    Ok(None) => break,
                    Err(_) => {
                        // Named before the abort: an aborted task's drop marks
                        // it finished, at once on another worker thread.
                        let unfinished = self
                            .statuses
                            .iter()
                            .filter_map(|s| s.unfinished())
                            .collect::<Vec<_>>()
                            .join("; ");
                        self.tasks.abort_all();
                        let earlier = first_error
                            .map(|e: Error| format!(" (and before that: {e})"))
                            .unwrap_or_default();
                        return Err(Error::Pipeline(format!(
                            "stopping: services did not stop within {deadline:?} and were cut off \
                             (records they had not finished are not committed): {unfinished}{earlier}"
                        )));
                    }
                };
                if let Err(error) = service_result(joined) {
                    first_error.get_or_insert(error);
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(self.progress()),
            }
        })
    }
}

/// What a service task runs in a loop.
trait ServiceLoop: Send {
    /// Counts of what one step settled.
    type Step;
    /// One step; a wait for records ends early (with an empty step) once
    /// `stop` says so.
    fn step(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Result<Self::Step>> + Send;
    /// Waits for the outputs still in flight.
    fn drain(&mut self) -> impl Future<Output = Result<Self::Step>> + Send;
    /// The committed position of each topic it reads.
    fn committed(&self) -> Vec<(&'static str, Positions)>;
}

impl ServiceLoop for ProcessorService {
    type Step = ProcessorStep;
    fn step(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Result<ProcessorStep>> + Send {
        ProcessorService::step(self, stop)
    }
    fn drain(&mut self) -> impl Future<Output = Result<ProcessorStep>> + Send {
        ProcessorService::drain(self)
    }
    fn committed(&self) -> Vec<(&'static str, Positions)> {
        vec![
            (TRADES_TOPIC, self.trades.committed()),
            (USERS_TOPIC, self.users.committed()),
        ]
    }
}

impl ServiceLoop for KstreamService {
    type Step = kstream_service::KstreamStep;
    fn step(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Result<Self::Step>> + Send {
        KstreamService::step(self, stop)
    }
    fn drain(&mut self) -> impl Future<Output = Result<Self::Step>> + Send {
        KstreamService::drain(self)
    }
    fn committed(&self) -> Vec<(&'static str, Positions)> {
        vec![(TRADES_TOPIC, self.trades.committed())]
    }
}

impl ServiceLoop for ApiConsumerService {
    type Step = api_service::ApiStep;
    fn step(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Result<Self::Step>> + Send {
        ApiConsumerService::step(self, stop)
    }
    fn drain(&mut self) -> impl Future<Output = Result<Self::Step>> + Send {
        ApiConsumerService::drain(self)
    }
    fn committed(&self) -> Vec<(&'static str, Positions)> {
        vec![(DOLLARS_BY_ZIP_TOPIC, self.consumer.committed())]
    }
}

/// Steps `service` until stopped, then waits for its outputs still in
/// flight (their records then commit); each step's counts go to `count`,
/// and datagen hears that a reader advanced.
async fn run_service<S: ServiceLoop>(
    mut service: S,
    status: Arc<ServiceStatus>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
    count: impl Fn(&Progress, S::Step) + Send,
) -> Result<()> {
    let _finished = status.finish_on_drop();
    while !*stop.borrow() {
        status.doing(STEPPING);
        count(&progress, service.step(&mut stop).await?);
        progress.note_committed(&status.service, service.committed());
        progress.readers_advanced();
    }
    status.doing(DRAINING);
    count(&progress, service.drain().await?);
    progress.note_committed(&status.service, service.committed());
    progress.readers_advanced();
    Ok(())
}

/// A service's step, as a stop that overruns names it.
const STEPPING: &str = "reading its next records and sending what they make";
/// A stopped service's last step.
const DRAINING: &str = "waiting for the broker to store its outputs still in flight";

/// Marks its service finished when dropped.
struct FinishedOnDrop<'a>(&'a ServiceStatus);

impl Drop for FinishedOnDrop<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

/// What one service task is doing now: the step a stop that overruns its
/// deadline names.
#[derive(Debug)]
struct ServiceStatus {
    service: String,
    doing: std::sync::Mutex<Option<&'static str>>,
}

impl ServiceStatus {
    fn new(service: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            service: service.into(),
            doing: std::sync::Mutex::new(Some("starting")),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<&'static str>> {
        self.doing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn doing(&self, step: &'static str) {
        *self.lock() = Some(step);
    }

    /// Marks the service finished when the returned guard drops (its task
    /// ended, with or without an error).
    fn finish_on_drop(&self) -> FinishedOnDrop<'_> {
        FinishedOnDrop(self)
    }

    /// `service (step)` while the service runs.
    fn unfinished(&self) -> Option<String> {
        let step = (*self.lock())?;
        Some(format!("{} ({step})", self.service))
    }
}

fn count_processor(progress: &Progress, step: ProcessorStep) {
    let add = |counter: &AtomicUsize, n: usize| counter.fetch_add(n, Ordering::SeqCst);
    add(&progress.trades_in, step.trades_in);
    add(&progress.users_in, step.users_in);
    add(&progress.rows_out, step.rows_out);
    add(&progress.duplicates, step.duplicates);
    add(&progress.redeliveries, step.redeliveries);
    add(&progress.filtered_out, step.filtered_out);
    add(&progress.late, step.late);
    add(&progress.dead_lettered, step.dead_lettered);
}

fn count_kstream(progress: &Progress, step: kstream_service::KstreamStep) {
    let add = |counter: &AtomicUsize, n: usize| counter.fetch_add(n, Ordering::SeqCst);
    add(&progress.kstream_trades_in, step.trades_in);
    add(&progress.json_out, step.json_out);
    add(&progress.kstream_failed, step.failed);
}

/// Resolves once the pipeline is told to stop (cancel-safe): a service's
/// wait for records races it, so that a long poll does not hold up a stop.
pub(crate) async fn stopping(stop: &mut watch::Receiver<bool>) {
    // A dropped sender (the pipeline gone) also ends the wait.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Creates `topic` unless it exists already (another program may have).
async fn ensure_topic(broker: &Broker, topic: &str, partitions: u16) -> Result<()> {
    let Err(create_error) = broker.create_topic(topic, partitions).await else {
        return Ok(());
    };
    let client = broker.client().await?;
    let deadline = broker.client_deadline();
    // A standalone harness broker (the mock cluster) has no CreateTopics but
    // creates a topic on the first metadata request that names it: its
    // failure is told by the check below.
    let auto_create = client.partition_client(topic, 0, UnknownTopicHandling::Retry);
    let _ = tokio::time::timeout(deadline, auto_create).await;
    let listed = client.list_topics();
    let topics = broker
        .bounded(
            || format!("listing the topics to see whether {topic:?} exists"),
            deadline,
            listed,
        )
        .await?;
    if topics.iter().any(|t| t.name == topic) {
        Ok(())
    } else {
        Err(create_error.into())
    }
}

/// A client of `stockapp.dollarsbyzip`'s one partition, for its high
/// watermark, within the broker's client deadline.
async fn watermark_client(broker: &Broker) -> Result<rskafka::client::partition::PartitionClient> {
    let client = broker.client().await?;
    let connect = client.partition_client(DOLLARS_BY_ZIP_TOPIC, 0, UnknownTopicHandling::Retry);
    let what =
        || format!("connecting to {DOLLARS_BY_ZIP_TOPIC:?} partition 0 for its high watermark");
    Ok(broker
        .bounded(what, broker.client_deadline(), connect)
        .await?)
}

/// The partition Kafka's default partitioner (murmur2) gives `key`, as a
/// Java or librdkafka producer would choose it.
pub(crate) fn partition_for_key(key: &str, partitions: i32) -> i32 {
    crate::traced::partitioner::partition_for_key(key.as_bytes(), partitions)
}

/// `error.type` of a value that failed to decode.
pub(crate) fn decode_error_type(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::TooShort { .. } => "too_short",
        DecodeError::WrongMagicByte { .. } => "wrong_magic_byte",
        DecodeError::UnknownSchemaId { .. } => "unknown_schema_id",
        DecodeError::InvalidBody { .. } => "invalid_avro",
    }
}

/// Attribute on the dead-letter copy's send span: why the record was refused.
pub const DEAD_LETTER_REASON_ATTRIBUTE: &str = "stockapp.dead_letter.reason";

/// Fails the record's `process` span and copies the record, headers and
/// all, to `stockapp.dlq` in a `send` span under it. The copy is queued at
/// once; the future finishes (commits) the record once it is stored.
pub(crate) fn dead_letter(
    producer: &BatchingTracedProducer,
    consumed: ConsumedRecord,
    error_type: &str,
    reason: String,
) -> impl Future<Output = Result<()>> + Send + 'static {
    consumed.fail(error_type, reason.clone());
    consumed.set_attribute(KeyValue::new(DEAD_LETTER_REASON_ATTRIBUTE, reason));
    let copy = Record {
        key: consumed.record.key.clone(),
        value: consumed.record.value.clone(),
        headers: consumed.record.headers.clone(),
        timestamp: consumed.record.timestamp,
    };
    let stored = producer.send(consumed.context(), DLQ_TOPIC, 0, copy);
    async move {
        stored.await?;
        consumed.finish();
        Ok(())
    }
}
