//! `kafka-trace-harness receive`: the harness's OTLP receiver as a program
//! of its own, for another program (or another run) to export to.

use std::error::Error;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use kafka_trace_harness::SpanCapture;
use kafka_trace_harness::integrations::otlp_receiver::OtlpReceiver;

use crate::StopSignal;

#[derive(Debug, clap::Args)]
pub struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of OTLP/HTTP (0 = a free port; 4318 is the standard one).
    #[arg(long, default_value_t = 0)]
    http_port: u16,
    /// Port of OTLP/gRPC (0 = a free port; 4317 is the standard one).
    #[arg(long, default_value_t = 0)]
    grpc_port: u16,
    /// At the end, write every span received as OTLP JSON Lines to this
    /// file.
    #[arg(long)]
    spans_out: Option<PathBuf>,
}

/// Prints `http URL` and `grpc URL` as the first two lines of standard
/// output, receives until Ctrl-C or SIGTERM, then writes the spans and
/// prints what was received: `spans N`, and a line `metric SERVICE NAME
/// POINTS` per instrument.
pub async fn run(args: ReceiveArgs) -> Result<(), Box<dyn Error>> {
    let stop = StopSignal::install()?;
    let capture = SpanCapture::new();
    let receiver = OtlpReceiver::builder()
        .ip(args.host)
        .http_port(args.http_port)
        .grpc_port(args.grpc_port)
        .start(&capture)
        .await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "http {}", receiver.http_endpoint())?;
        writeln!(stdout, "grpc {}", receiver.grpc_endpoint())?;
        stdout.flush()?;
    }
    stop.wait().await;
    let points = receiver.metric_points();
    receiver.shutdown().await?;
    let spans = capture.spans();
    if let Some(path) = &args.spans_out {
        kafka_trace_harness::otlp::write_otlp_json(
            path,
            spans.iter().map(|c| (c.service.as_str(), &c.data)),
        )?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "spans {}", spans.len())?;
    for (service, metrics) in points {
        for (name, count) in metrics {
            writeln!(stdout, "metric {service} {name} {count}")?;
        }
    }
    stdout.flush()?;
    Ok(())
}
