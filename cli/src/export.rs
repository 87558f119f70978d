//! `run`'s live OTLP export: the flags, and the hooks that start it, tee
//! the run's spans and metrics into it, and report what it sent.

use std::error::Error;
use std::sync::Arc;

use kafka_trace_harness::integrations::otlp_export::{
    DEFAULT_QUEUE_CAPACITY, OtlpExport, Protocol,
};
use kafka_trace_harness::stockapp::metrics::PipelineMetrics;
use kafka_trace_harness::{SpanCapture, SpanStream};
use opentelemetry_sdk::trace::SpanData;

/// Variables that turn the export on by themselves, besides
/// `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`, its variable).
const SIGNAL_ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

#[derive(Debug, Clone, clap::Args)]
pub struct OtlpArgs {
    /// Send every span and the services' metrics, live, to this OTLP
    /// collector: a base URL, exactly as OTEL_EXPORTER_OTLP_ENDPOINT (over
    /// HTTP, /v1/traces and /v1/metrics are appended). Setting
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or _METRICS_ENDPOINT (full URLs,
    /// which win) also turns the export on. Headers, timeouts and resource
    /// attributes come from the standard OTEL_* variables.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: grpc, http/protobuf (the default) or http/json;
    /// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL and _METRICS_PROTOCOL win per
    /// signal.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_name = "PROTOCOL", value_parser = parse_protocol)]
    pub otlp_protocol: Option<Protocol>,
    /// Spans waiting for export at most; beyond, spans are dropped (and
    /// counted) rather than slowing the run.
    #[arg(long, value_name = "SPANS", default_value_t = DEFAULT_QUEUE_CAPACITY)]
    pub otlp_queue: usize,
    /// Fail the run (exit status 1) when a span or metric point could not
    /// be exported; by default the run only says so.
    #[arg(long)]
    pub otlp_required: bool,
}

fn parse_protocol(name: &str) -> Result<Protocol, String> {
    Protocol::parse(name).ok_or_else(|| {
        format!("{name:?} is not an OTLP protocol: use grpc, http/protobuf or http/json")
    })
}

/// Starts the export if the flags or the environment ask for it, saying
/// where it sends on standard error.
pub fn start(args: &OtlpArgs) -> Result<Option<Arc<OtlpExport>>, Box<dyn Error>> {
    let endpoint = args
        .otlp_endpoint
        .clone()
        .filter(|url| !url.trim().is_empty());
    let signal_endpoint = SIGNAL_ENDPOINTS
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
    if endpoint.is_none() && !signal_endpoint {
        return Ok(None);
    }
    let mut builder = OtlpExport::builder().queue_capacity(args.otlp_queue);
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint(endpoint);
    }
    if let Some(protocol) = args.otlp_protocol {
        builder = builder.protocol(protocol);
    }
    let export = builder.start()?;
    eprintln!(
        "exporting spans to {} and metrics to {} over OTLP",
        export.traces_destination(),
        export.metrics_destination()
    );
    Ok(Some(Arc::new(export)))
}

/// The run's span stream, and the export after it.
struct Tee {
    run: Arc<dyn SpanStream>,
    export: Arc<OtlpExport>,
}

impl SpanStream for Tee {
    fn span_ended(&self, service: &Arc<str>, span: SpanData) {
        self.export.offer(service, &span);
        self.run.span_ended(service, span);
    }
}

/// `run`, also feeding the export if there is one.
pub fn tee(run: Arc<dyn SpanStream>, export: &Option<Arc<OtlpExport>>) -> Arc<dyn SpanStream> {
    match export {
        Some(export) => Arc::new(Tee {
            run,
            export: Arc::clone(export),
        }),
        None => run,
    }
}

/// `metrics`, also recording each service into its own exported provider.
pub fn metrics(metrics: PipelineMetrics, export: &Option<Arc<OtlpExport>>) -> PipelineMetrics {
    match export {
        Some(export) => {
            let export = Arc::clone(export);
            metrics.per_service(move |service| export.meter_provider(service))
        }
        None => metrics,
    }
}

/// Sends what is left (the spans of `kept`, a capture that kept its spans
/// rather than streaming them, first), then prints what the export did:
/// the counts on standard output, anything lost as one line on standard
/// error. An error only if something was lost and `--otlp-required`.
pub async fn finish(
    export: Option<Arc<OtlpExport>>,
    kept: Option<&SpanCapture>,
    args: &OtlpArgs,
) -> Result<(), Box<dyn Error>> {
    let Some(export) = export else {
        return Ok(());
    };
    if let Some(capture) = kept {
        let mut services: std::collections::HashMap<String, Arc<str>> = Default::default();
        let spans: Vec<(Arc<str>, SpanData)> = capture
            .spans()
            .into_iter()
            .map(|span| {
                let service = services
                    .entry(span.service.clone())
                    .or_insert_with(|| Arc::from(span.service.as_str()));
                (Arc::clone(service), span.data)
            })
            .collect();
        export.send_all(spans).await;
    }
    let report = export.shutdown().await;
    print!("{report}");
    match report.problem() {
        Some(problem) if args.otlp_required => Err(problem.into()),
        Some(problem) => {
            eprintln!("warning: {problem} (the run goes on; --otlp-required fails it)");
            Ok(())
        }
        None => Ok(()),
    }
}
