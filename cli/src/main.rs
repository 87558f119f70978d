//! `kafka-trace-harness`: the harness as a program.

mod datagen_cmd;
mod ending;
mod export;
mod outside;
mod receive;
mod report_cmd;
mod run_spans;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kafka_trace_harness::broker::AdminChannel;
use kafka_trace_harness::integrations::otlp_receiver::OtlpReceiver;
use kafka_trace_harness::stockapp::metrics::{
    MetricsCapture, PipelineMetrics, stdout_meter_provider,
};
use kafka_trace_harness::stockapp::pipeline::{PipelineBuilder, Services};
use kafka_trace_harness::stockapp::summary::{
    TraceSummary, render_metrics, render_summary, render_trace_tree, showcase_traces,
};
use kafka_trace_harness::stockapp::{ApiServer, RegistryServer, SchemaRegistry};
use kafka_trace_harness::{Backend, Broker, SpanCapture};

#[derive(Debug, Parser)]
#[command(version, about = "Kafka broker and tracing harness for tests")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the traced stockapp pipeline (the default): datagen, processor and
    /// API consumers on the embedded broker; prints trace trees and a summary.
    Run(RunArgs),
    /// Run the embedded broker until Ctrl-C or SIGTERM; prints its bootstrap
    /// address on the first line of standard output.
    Broker(BrokerArgs),
    /// Read OTLP JSON Lines files (`run --spans-out`, or OpenTelemetry's
    /// file exporter in any language): print their trace trees and
    /// problems, write the HTML report with --html; exit status 1 when a
    /// trace is broken.
    Report(report_cmd::ReportArgs),
    /// Run the OTLP receiver (HTTP and gRPC) until Ctrl-C or SIGTERM;
    /// prints `http URL` and `grpc URL` first, what it received at the end.
    Receive(receive::ReceiveArgs),
    /// Generate records from any Avro schema (`arg.properties` annotations,
    /// fake values by field name), as JSON Lines or an Avro container file.
    Datagen(datagen_cmd::DatagenArgs),
}

#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the first broker (0 = a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Host name advertised to clients (default: the listen host, or
    /// 127.0.0.1 when listening on 0.0.0.0).
    #[arg(long)]
    advertised_host: Option<String>,
    /// Also serve the admin channel (topic creation) on this port of the
    /// listen host, and print `admin <address>` as the second line.
    #[arg(long)]
    admin_port: Option<u16>,
    /// Number of mock brokers in the cluster.
    #[arg(long, default_value_t = 1)]
    brokers: u16,
    /// How long a new consumer group waits for more members before its
    /// first assignment (Kafka's group.initial.rebalance.delay.ms; the
    /// mock's own default is 3000).
    #[arg(long, default_value_t = 0)]
    group_initial_rebalance_delay_ms: u64,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Trades to generate.
    #[arg(long, default_value_t = 2_000)]
    trades: usize,
    /// User profiles to generate (sent before the trades).
    #[arg(long, default_value_t = 9)]
    users: usize,
    /// Seed of the generator: same seed, same records.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Trades per second datagen offers (default: as fast as the pipeline
    /// takes them); the summary's end-to-end p50 and p99 are then at that
    /// rate.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Record no span (context headers still travel, marked not sampled):
    /// what tracing costs the pipeline is the difference.
    #[arg(long)]
    untraced: bool,
    /// How long each service's producer waits to fill a batch, in
    /// milliseconds (librdkafka's `linger.ms`, at most 900000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=900_000))]
    linger_ms: u64,
    /// Use an existing broker (host:port) instead of the embedded one.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Services to run here, comma-separated: datagen, processor (ksqlDB),
    /// kstream (Kafka Streams), api.
    #[arg(long, default_value = "datagen,processor,kstream,api", value_parser = parse_services)]
    services: Services,
    /// Number of API consumers (api-1, api-2, …), each its own group.
    #[arg(long, default_value_t = 2)]
    api_consumers: usize,
    /// Serve the schema registry's Confluent REST API on this port.
    #[arg(long)]
    schema_registry_port: Option<u16>,
    /// Write every span as OTLP JSON Lines to this file: one export request
    /// (resourceSpans) per line, as OpenTelemetry's file exporter writes,
    /// each line written as its spans end when the run plays every service.
    #[arg(long)]
    spans_out: Option<PathBuf>,
    /// Serve api-1's rows on this HTTP port (GET / and GET /health).
    #[arg(long)]
    http_port: Option<u16>,
    /// Receive other programs' spans over OTLP (HTTP and gRPC, on
    /// loopback) into this run's traces; prints both endpoints on
    /// standard error.
    #[arg(long)]
    otlp_receiver: bool,
    /// Port of the OTLP receiver's HTTP endpoint (default: a free one);
    /// implies --otlp-receiver.
    #[arg(long)]
    otlp_receiver_port: Option<u16>,
    /// Port of the OTLP receiver's gRPC endpoint (default: a free one);
    /// implies --otlp-receiver.
    #[arg(long)]
    otlp_receiver_grpc_port: Option<u16>,
    /// Also export every metric with OpenTelemetry's stdout exporter at the
    /// end (verbose); a short metrics summary is always printed.
    #[arg(long)]
    otel_metrics_stdout: bool,
    /// Trace trees to print.
    #[arg(long, default_value_t = 3)]
    show_traces: usize,
    /// Write the run's HTML trace report to this file: every broken trace
    /// (up to 5,000) and a sample of the others, with the service map and
    /// summary of all of them.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Traces the HTML report shows besides the broken ones.
    #[arg(long, default_value_t = kafka_trace_harness::report::DEFAULT_MAX_TRACES)]
    html_traces: usize,
    #[command(flatten)]
    otlp: export::OtlpArgs,
    #[command(flatten)]
    outside: outside::OutsideArgs,
    /// Exit 0 even when the run is not clean (broken traces, records a
    /// service did not read, stopped early): for those who want only the
    /// report.
    #[arg(long)]
    allow_broken: bool,
    /// Test fault: the embedded broker answers nothing once the services
    /// have started (Ctrl-C must still end the run within 5 s).
    #[arg(long, hide = true)]
    stall_broker: bool,
}

fn parse_services(list: &str) -> Result<Services, String> {
    Services::parse(list)
}

/// Waits for the other programs of a run on `broker` (see
/// [`outside::wait`]); `stop` ends the wait.
async fn wait_for_outside(
    args: &RunArgs,
    broker: &Broker,
    receiver: Option<&OtlpReceiver>,
    stop: impl std::future::Future<Output = ()>,
) -> kafka_trace_harness::stockapp::outside::OutsideReport {
    outside::wait(
        &args.outside,
        broker.bootstrap_servers(),
        args.services,
        args.api_consumers,
        receiver.map(OtlpReceiver::arrivals),
        stop,
    )
    .await
}

/// A rate in records per second that can be paced: a number from one a
/// million seconds (about eleven days) apart to a billion a second.
fn parse_rate(text: &str) -> Result<f64, String> {
    const SLOWEST: f64 = 1e-6;
    const FASTEST: f64 = 1e9;
    let rate: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if (SLOWEST..=FASTEST).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "{text:?}: a rate is from {SLOWEST} to {FASTEST:e} records per second; leave it \
             out to send as fast as the broker takes them"
        ))
    }
}

impl Default for RunArgs {
    fn default() -> Self {
        match Cli::parse_from(["kafka-trace-harness", "run"]).command {
            Some(Command::Run(args)) => args,
            _ => unreachable!("the run subcommand was given"),
        }
    }
}

impl Default for BrokerArgs {
    fn default() -> Self {
        match Cli::parse_from(["kafka-trace-harness", "broker"]).command {
            Some(Command::Broker(args)) => args,
            _ => unreachable!("the broker subcommand was given"),
        }
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Broker(args)) => block_on(run_broker(args)),
        Some(Command::Run(args)) => block_on(run_pipeline(args)),
        Some(Command::Receive(args)) => block_on(receive::run(args)),
        Some(Command::Datagen(args)) => block_on(datagen_cmd::run(args)),
        None => block_on(run_pipeline(RunArgs::default())),
        // Reading files needs no runtime; it has exit statuses of its own.
        Some(Command::Report(args)) => return report_cmd::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one async command on a runtime started for it.
fn block_on(
    command: impl Future<Output = Result<(), Box<dyn std::error::Error>>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    runtime.block_on(command)
}

async fn run_broker(args: BrokerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let stop = StopSignal::install()?;
    let mut builder = Broker::builder()
        .embedded_brokers(args.brokers)
        .listen(args.host, args.port)
        .group_initial_rebalance_delay(Duration::from_millis(
            args.group_initial_rebalance_delay_ms,
        ));
    if let Some(host) = args.advertised_host {
        builder = builder.advertised_host(host);
    }
    let broker = Arc::new(builder.start().await?);
    let admin = match args.admin_port {
        Some(port) => {
            Some(AdminChannel::serve(Arc::clone(&broker), SocketAddr::new(args.host, port)).await?)
        }
        None => None,
    };
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", broker.bootstrap_servers())?;
        if let Some(admin) = &admin {
            writeln!(stdout, "admin {}", admin.local_addr())?;
        }
        stdout.flush()?;
    }
    let warnings = broker
        .watch_deleted()
        .map(|seen| tokio::spawn(warn_of_deletions(seen)));
    stop.wait().await;
    if let Some(admin) = admin {
        // Gives back every clone of the broker the channel held.
        admin.shutdown().await;
    }
    if let Some(warnings) = warnings {
        warnings.abort();
    }
    // The final check (deleted records) must run: a clone still held
    // somewhere is a bug, said rather than skipped.
    match Arc::try_unwrap(broker) {
        Ok(broker) => broker.shutdown().await?,
        Err(_) => {
            return Err("the broker is still in use at exit: its final check did not run".into());
        }
    }
    Ok(())
}

/// Prints a warning line to standard error whenever the embedded broker
/// deletes records, naming topic, partition and count: a client that had
/// not read them yet will never see them.
async fn warn_of_deletions(
    mut seen: tokio::sync::watch::Receiver<Vec<kafka_trace_harness::broker::DeletedRecords>>,
) {
    let mut reported = std::collections::HashMap::new();
    while seen.changed().await.is_ok() {
        let now = seen.borrow_and_update().clone();
        for deleted in now {
            let key = (deleted.topic.clone(), deleted.partition);
            let before = reported.insert(key, deleted.count).unwrap_or(0);
            if deleted.count > before {
                eprintln!(
                    "warning: the embedded broker deleted {} records of topic {:?} partition {} \
                     ({} in all; it keeps at most 5 MiB or 100,000 record batches per partition)",
                    deleted.count - before,
                    deleted.topic,
                    deleted.partition,
                    deleted.count
                );
            }
        }
    }
}

/// Ctrl-C and SIGTERM, caught from the moment this is created: a signal
/// that arrives while the services start still stops them cleanly.
#[cfg(unix)]
struct StopSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignal {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Ctrl-C (and Ctrl-Break, or the console closing, on Windows) through
/// tokio's portable API where there is no SIGTERM.
#[cfg(not(unix))]
struct StopSignal {
    ctrl_c: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>,
}

#[cfg(not(unix))]
impl StopSignal {
    fn install() -> std::io::Result<Self> {
        // The future registers its handler when first polled: poll it once
        // now so a Ctrl-C during start-up is not missed.
        let mut ctrl_c: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            Box::pin(tokio::signal::ctrl_c());
        let waker = std::task::Waker::noop();
        let _ = ctrl_c
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        Ok(Self { ctrl_c })
    }

    async fn wait(self) {
        let _ = self.ctrl_c.await;
    }
}

async fn run_pipeline(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let stop = StopSignal::install()?;
    let backend = match &args.bootstrap {
        Some(bootstrap) => Backend::External {
            bootstrap: bootstrap.clone(),
        },
        None => Backend::Embedded,
    };
    let broker = Broker::builder().backend(backend).start().await?;
    let otlp = export::start(&args.otlp)?;
    let receive_otlp = args.otlp_receiver
        || args.otlp_receiver_port.is_some()
        || args.otlp_receiver_grpc_port.is_some();
    // Playing every service, the run knows each trace's shape and checks
    // it as it ends, keeping no span; other programs' traces are kept whole
    // and checked at the end.
    let streaming =
        (args.services == Services::ALL && !receive_otlp).then(|| run_spans::RunSpans {
            check: Arc::new(report_cmd::run_check(
                args.api_consumers,
                args.show_traces,
                args.html.is_some().then_some(args.html_traces),
            )),
            file: None,
        });
    let (capture, run_spans) = match streaming {
        Some(mut spans) => {
            if let Some(path) = &args.spans_out {
                spans.file = Some(run_spans::SpansFile::create(path)?);
            }
            let spans = Arc::new(spans);
            let capture = SpanCapture::builder()
                .stream(export::tee(spans.clone(), &otlp))
                .build();
            (capture, Some(spans))
        }
        None => (SpanCapture::new(), None),
    };
    let otlp_receiver = if receive_otlp {
        let receiver = OtlpReceiver::builder()
            .http_port(args.otlp_receiver_port.unwrap_or(0))
            .grpc_port(args.otlp_receiver_grpc_port.unwrap_or(0))
            .start(&capture)
            .await?;
        eprintln!(
            "OTLP receiver on {} (HTTP) and {} (gRPC)",
            receiver.http_endpoint(),
            receiver.grpc_endpoint()
        );
        Some(receiver)
    } else {
        None
    };
    let registry = SchemaRegistry::new();
    let registry_server = match args.schema_registry_port {
        Some(port) => {
            let server = RegistryServer::builder(registry.clone())
                .port(port)
                .start()
                .await?;
            eprintln!("schema registry on {}", server.url());
            Some(server)
        }
        None => None,
    };
    let metrics = MetricsCapture::new();
    let stdout_metrics = args
        .otel_metrics_stdout
        .then(|| stdout_meter_provider(Duration::from_secs(3600)));
    let pipeline_metrics = match &stdout_metrics {
        Some(provider) => PipelineMetrics::new(provider),
        None => metrics.metrics().clone(),
    };
    let pipeline_metrics = export::metrics(pipeline_metrics, &otlp);
    let mut settings = PipelineBuilder::new().linger(Duration::from_millis(args.linger_ms));
    if let Some(rate) = args.rate {
        settings = settings.rate(rate);
    }
    let settings = settings
        .metrics(pipeline_metrics)
        .seed(args.seed)
        .trades(args.trades)
        .users(args.users)
        .api_consumers(args.api_consumers)
        .services(args.services)
        .registry(registry);
    let started = if args.untraced {
        settings.start_untraced(&broker).await
    } else {
        settings.start(&broker, &capture).await
    };
    let mut pipeline = started?;
    if args.stall_broker {
        broker.stall(Duration::from_secs(24 * 3600))?;
        eprintln!("fault: the broker answers nothing from now (--stall-broker)");
    }
    let api_server = match (args.http_port, pipeline.api_states().first()) {
        (Some(port), Some(state)) => {
            let server = ApiServer::builder(state.clone()).port(port).start().await?;
            eprintln!("api-1 serves its rows on {}", server.url());
            Some(server)
        }
        _ => None,
    };

    eprintln!("broker on {}", broker.bootstrap_servers());
    let bar = ProgressBar::new(args.trades as u64).with_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} trades {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut stop = std::pin::pin!(stop.wait());
    // Whether a stop signal came before the run's own services finished.
    let mut stopped_early = false;
    if args.services.datagen {
        // Done when everything generated went through every service here.
        let complete =
            pipeline.wait_until_complete_observed(Duration::from_secs(600), |progress| {
                bar.set_position(progress.trades_processed as u64);
            });
        tokio::select! {
            done = complete => { done?; }
            () = &mut stop => {
                stopped_early = true;
                eprintln!("stopped before every generated record went through");
            }
        }
    } else {
        // Other programs play the missing parts: run until Ctrl-C.
        eprintln!(
            "processing records from {}; Ctrl-C stops",
            broker.bootstrap_servers()
        );
        (&mut stop).await;
    }
    // From here a stop signal (or the first one's grace running out) ends
    // the run, naming the step it could not finish.
    let signalled = stopped_early || !args.services.datagen;
    let ending = ending::Ending::arm(signalled);
    // Only a run whose own services finished on their own gives other
    // programs their turn.
    let completed = args.services.datagen && !stopped_early;
    // A processor elsewhere writes the rows the API consumers here read:
    // they read on until it has caught up and they have read its last row,
    // instead of being stopped before it wrote them.
    let mut outside_report = None;
    let mut rows_unread = None;
    if completed && args.services.api && !args.services.processor {
        ending.step("waiting for the programs elsewhere, then reading their rows");
        outside_report =
            Some(wait_for_outside(&args, &broker, otlp_receiver.as_ref(), &mut stop).await);
        if let Err(e) = pipeline.wait_until_rows_read(args.outside.deadline).await {
            rows_unread = Some(format!(
                "the API consumers here did not read every row: {e}"
            ));
        }
        ending.step("stopping the services");
    }
    let api_json = pipeline.api_states().first().map(|state| state.to_json());
    let progress = match signalled {
        // Stopped by a signal: the pipeline names the services it cut off
        // before the grace runs out.
        true => match pipeline.stop_within(ending::STOP_WITHIN).await {
            Ok(progress) => progress,
            Err(e) => ending.give_up(&e.to_string()),
        },
        false => pipeline.stop().await?,
    };
    ending.step("reporting");
    bar.set_position(progress.trades_processed as u64);
    bar.finish_and_clear();

    // Other programs' consumers catch up and their spans come in before
    // the receiver closes.
    if completed && outside_report.is_none() {
        outside_report =
            Some(wait_for_outside(&args, &broker, otlp_receiver.as_ref(), &mut stop).await);
    }

    // Received spans stop here: the summary and --spans-out see them all.
    let mut received = None;
    if let Some(receiver) = otlp_receiver {
        let arrivals = receiver.arrivals();
        if let Err(e) = receiver.shutdown().await {
            eprintln!("warning: {e}");
        }
        received = Some(arrivals.snapshot());
    }
    let colour = std::io::stdout().is_terminal();
    // What is printed is also the HTML report's summary.
    let mut summary_text = String::new();
    let broken_counts;
    let checked = match &run_spans {
        Some(spans) => Some(spans.check.finish()),
        None => outside::check_forest(
            &capture.forest(),
            args.services,
            args.api_consumers,
            args.show_traces,
        ),
    };
    let check_report = match checked {
        Some(report) => {
            broken_counts = (report.summary.broken, report.other_broken);
            for trace in showcase_traces(&report.sample, args.show_traces) {
                println!("{}", render_trace_tree(&trace, colour));
            }
            summary_text.push_str(&render_summary(&progress, &report.summary));
            for (trace, reason) in &report.broken_examples {
                summary_text.push_str(&format!("  broken trace {trace}: {reason}\n"));
            }
            if report.other_broken > 0 {
                summary_text.push_str(&format!(
                    "  {} of {} other traces (user profiles, dead letters) are broken\n",
                    report.other_broken, report.other_traces
                ));
            }
            print!("{summary_text}");
            Some(report)
        }
        None => {
            let forest = capture.forest();
            for trace in showcase_traces(&forest, args.show_traces) {
                println!("{}", render_trace_tree(&trace, colour));
            }
            let summary = TraceSummary::of(&forest);
            broken_counts = (summary.broken, 0);
            summary_text.push_str(&render_summary(&progress, &summary));
            print!("{summary_text}");
            None
        }
    };
    if let Some(report) = &outside_report {
        let text = report.render();
        print!("{text}");
        summary_text.push_str(&text);
    }
    if let Some(received) = received
        .as_ref()
        .filter(|r| r.rejected() + r.links_dropped() > 0)
    {
        let text = format!(
            "OTLP receiver    rejected {} span(s) (unusable ids), dropped {} link(s) to no span\n",
            received.rejected(),
            received.links_dropped()
        );
        print!("{text}");
        summary_text.push_str(&text);
    }
    match &stdout_metrics {
        Some(provider) => provider.shutdown()?,
        None => {
            let text = render_metrics(&metrics.collect()?);
            print!("{text}");
            summary_text.push_str(&text);
        }
    }
    if let Some(path) = &args.html {
        report_cmd::write_run_report(
            path,
            args.html_traces,
            args.trades,
            check_report,
            || capture.forest(),
            &summary_text,
        )?;
    }
    if let Some(json) = api_json {
        println!("GET / of api-1:\n{json}");
    }
    // With --otlp-required a failed export fails the run, once its files
    // are written and the broker stopped.
    let exported = export::finish(otlp, run_spans.is_none().then_some(&capture), &args.otlp).await;
    if let Some(path) = &args.spans_out {
        match run_spans.as_ref().and_then(|spans| spans.file.as_ref()) {
            Some(file) => file.finish()?,
            None => {
                let forest = capture.forest();
                kafka_trace_harness::otlp::write_otlp_json(
                    path,
                    forest
                        .captured()
                        .iter()
                        .map(|c| (c.service.as_str(), &c.data)),
                )?;
            }
        }
        eprintln!("wrote the spans as OTLP JSON to {}", path.display());
    }
    if let Some(server) = api_server {
        server.shutdown().await?;
    }
    if let Some(server) = registry_server {
        server.shutdown().await?;
    }
    ending.step("checking the broker's deleted records");
    // The embedded broker keeps 5 MiB per partition and deletes older
    // records: each deletion is said, and one that a service outside may
    // not have read fails the run.
    let deleted = broker.shutdown_listing_deleted().await?;
    let mut outcome = ending::Outcome::of(
        &progress,
        args.services,
        broken_counts.0,
        broken_counts.1,
        stopped_early,
    );
    outcome.problems.extend(rows_unread);
    // Spans the receiver could not take are hops missing from the forest;
    // links to no span are said, their spans kept.
    if let Some(received) = &received {
        for reason in &received.links_dropped_reasons {
            eprintln!("note: OTLP receiver: {reason}");
        }
        if received.rejected() > 0 {
            outcome.problems.push(format!(
                "the OTLP receiver rejected {} span(s) of other programs, missing from the \
                 traces: {}",
                received.rejected(),
                received.rejected_reasons.join("; ")
            ));
        }
    }
    for deleted in &deleted {
        let note = outcome.deleted(&deleted.topic, deleted, args.services);
        eprintln!("note: {note}");
    }
    if let Some(report) = outside_report {
        // Said whether or not the wait ended complete: a broker that does
        // not list its groups leaves unnamed, untraced ones unseen.
        if let Some(note) = &report.listing_error {
            eprintln!("note: {note}");
        }
        if !report.is_complete() {
            outcome.problems.extend(report.problems());
        }
    }
    if args.allow_broken {
        for problem in &outcome.problems {
            eprintln!("warning: {problem} (--allow-broken)");
        }
        return exported;
    }
    exported?;
    Ok(outcome.into_result()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parses(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kafka-trace-harness").chain(args.iter().copied()))
    }

    #[test]
    fn rates_and_lingers_that_cannot_be_paced_are_refused_with_a_reason() {
        for rate in ["0", "-1", "nan", "inf", "1e10", "1e-20", "fast"] {
            let refused = parses(&["run", &format!("--rate={rate}")]).expect_err(rate);
            assert!(
                refused.to_string().contains("--rate"),
                "{rate}: the option is named: {refused}"
            );
        }
        let datagen = [
            "datagen",
            "--schema",
            "s.avsc",
            "--topic",
            "t",
            "--bootstrap",
            "b:9092",
            "--rate",
        ];
        assert!(parses(&[&datagen[..], &["1000"]].concat()).is_ok());
        let refused = parses(&[&datagen[..], &["inf"]].concat()).expect_err("datagen");
        assert!(refused.to_string().contains("--rate"), "{refused}");
        assert!(parses(&["run", "--linger-ms", "18446744073709551615"]).is_err());
        assert!(parses(&["run", "--rate", "2500", "--linger-ms", "900000"]).is_ok());
    }
}
