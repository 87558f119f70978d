//! `kafka-trace-harness receive`: the harness's OTLP receiver as a program
//! of its own, for another program (or another run) to export to.

use std::error::Error;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kafka_trace_harness::integrations::otlp_receiver::OtlpReceiver;
use kafka_trace_harness::{SpanCapture, SpanStream};
use opentelemetry_sdk::trace::SpanData;

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
    /// file (without it, spans are counted, not kept).
    #[arg(long)]
    spans_out: Option<PathBuf>,
}

/// Prints `http URL` and `grpc URL` as the first two lines of standard
/// output, receives until Ctrl-C or SIGTERM, then writes the spans and
/// prints what was received: `spans N`, `rejected N` (spans with unusable
/// ids, not kept), `links-dropped N` (links to no span, dropped from
/// spans kept), and a line `metric SERVICE NAME POINTS` per instrument;
/// why spans were rejected or links dropped goes to standard error. A
/// shutdown that fails (a request still open past its deadline) is an
/// error, after what was received has been written and printed.
pub async fn run(args: ReceiveArgs) -> Result<(), Box<dyn Error>> {
    let stop = StopSignal::install()?;
    let counted = Arc::new(CountSpans::default());
    let capture = match args.spans_out {
        Some(_) => SpanCapture::new(),
        None => SpanCapture::builder().stream(counted.clone()).build(),
    };
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
    let arrivals = receiver.arrivals();
    // Kept for the end: the spans received so far are written first, so
    // that a request cut at the deadline loses only itself.
    let shutdown = receiver.shutdown().await;
    let arrived = arrivals.snapshot();
    let received = match &args.spans_out {
        Some(path) => {
            let spans = capture.spans();
            let written = kafka_trace_harness::otlp::write_otlp_json(
                path,
                spans.iter().map(|c| (c.service.as_str(), &c.data)),
            );
            if let Err(e) = written {
                // Both failures are said: only one can be the result.
                if let Err(shutdown) = &shutdown {
                    eprintln!("error: {shutdown}");
                }
                return Err(e.into());
            }
            spans.len() as u64
        }
        None => counted.0.load(Ordering::Relaxed),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "spans {received}")?;
    writeln!(stdout, "rejected {}", arrived.rejected())?;
    writeln!(stdout, "links-dropped {}", arrived.links_dropped())?;
    for (service, metrics) in points {
        for (name, count) in metrics {
            writeln!(stdout, "metric {service} {name} {count}")?;
        }
    }
    stdout.flush()?;
    if arrived.rejected() > 0 {
        eprintln!(
            "warning: {} span(s) rejected (unusable ids), not kept: {}",
            arrived.rejected(),
            reasons(&arrived.rejected_reasons, arrived.rejected())
        );
    }
    if arrived.links_dropped() > 0 {
        eprintln!(
            "warning: {} link(s) to no span dropped, their spans kept: {}",
            arrived.links_dropped(),
            reasons(&arrived.links_dropped_reasons, arrived.links_dropped())
        );
    }
    Ok(shutdown?)
}

/// The first reasons, and `…` when there were more than those.
fn reasons(first: &[String], count: usize) -> String {
    let mut text = first.join("; ");
    if count > first.len() {
        text.push_str("; …");
    }
    text
}

/// Counts the spans received, keeping none.
#[derive(Default)]
struct CountSpans(AtomicU64);

impl SpanStream for CountSpans {
    fn span_ended(&self, _service: &Arc<str>, _span: SpanData) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}
