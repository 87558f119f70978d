//! `kafka-trace-harness`: the harness as a program.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kafka_trace_harness::Broker;
use kafka_trace_harness::broker::AdminChannel;

#[derive(Debug, Parser)]
#[command(version, about = "Kafka broker and tracing harness for tests")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the embedded broker until Ctrl-C or SIGTERM; prints its bootstrap
    /// address on the first line of standard output.
    Broker(BrokerArgs),
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
}

impl Default for BrokerArgs {
    fn default() -> Self {
        match Cli::parse_from(["kafka-trace-harness", "broker"]).command {
            Some(Command::Broker(args)) => args,
            None => unreachable!("the broker subcommand was given"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Broker(args)) => runtime.block_on(run_broker(args)),
        // Until the pipeline lands, the main job is the standalone broker.
        None => runtime.block_on(run_broker(BrokerArgs::default())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_broker(args: BrokerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = Broker::builder()
        .embedded_brokers(args.brokers)
        .listen(args.host, args.port);
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
    wait_for_stop_signal().await?;
    drop(admin);
    if let Ok(broker) = Arc::try_unwrap(broker) {
        broker.shutdown().await?;
    }
    Ok(())
}

async fn wait_for_stop_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = terminate.recv() => Ok(()),
    }
}
