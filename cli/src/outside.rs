//! `run`'s wait for other programs (`--outside-*`): after the run's own
//! services are done, outside consumer groups catch up and outside spans
//! stop arriving before the receiver closes. The logic is the library's
//! [`OutsideWait`]; this is its command line.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafka_trace_harness::SpanStream as _;
use kafka_trace_harness::forest::{CapturedSpan, SpanForest};
use kafka_trace_harness::integrations::otlp_receiver::SpanArrivals;
use kafka_trace_harness::stockapp::outside::{OutsideReport, OutsideSpans, OutsideWait};
use kafka_trace_harness::stockapp::pipeline::Services;
use kafka_trace_harness::stockapp::summary::ServiceRecords;
use kafka_trace_harness::stockapp::trace_check::{TraceCheck, TraceCheckReport};

#[derive(Debug, Clone, clap::Args)]
pub struct OutsideArgs {
    /// Consumer group of another program reading what this run writes
    /// (repeat, or comma-separate): once the run's own services are done,
    /// the run waits for it to commit up to the end of every topic of the
    /// run it reads. Groups named by received consumer spans, and those the
    /// broker lists (ListGroups, the harness's own broker included), are
    /// waited for too.
    #[arg(long = "outside-group", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Seconds the run waits, once its own services are done, for other
    /// programs' consumer groups and spans; a group still behind then is
    /// named with its lag and the run fails.
    #[arg(long = "outside-deadline", default_value = "30", value_parser = parse_seconds)]
    pub deadline: Duration,
    /// With --otlp-receiver: seconds without a received span after which
    /// other programs' spans count as all in, waited for once the run's own
    /// services are done (more than the OpenTelemetry SDKs' 5 s batch
    /// delay; 0: do not wait for spans).
    #[arg(long = "outside-quiet", default_value = "6", value_parser = parse_seconds)]
    pub quiet: Duration,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number of seconds: {e}"))?;
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?} seconds: {e}"))
}

/// Waits for the other programs of a run on `bootstrap` that played
/// `services` (with `api_consumers` API consumers), their spans counted by
/// `arrivals` when the run receives OTLP; `stop` (Ctrl-C) ends the wait.
/// The broker's groups are listed; one that refuses is named in the
/// report's listing error.
pub async fn wait(
    args: &OutsideArgs,
    bootstrap: &str,
    services: Services,
    api_consumers: usize,
    arrivals: Option<SpanArrivals>,
    stop: impl Future<Output = ()>,
) -> OutsideReport {
    let mut wait = OutsideWait::new(bootstrap, services.written_topics())
        .own_groups(services.names(api_consumers))
        .deadline(args.deadline)
        .quiet(args.quiet)
        // A run that receives OTLP expects other programs' spans: their
        // first batch may still be on its way (the SDKs send every 5 s)
        // when the run's own work is done, in a fraction of a second.
        .always_quiet(arrivals.is_some());
    for group in &args.groups {
        wait = wait.group(group.clone());
    }
    if let Some(arrivals) = arrivals {
        wait = wait.spans(Arc::new(move || {
            let seen = arrivals.snapshot();
            OutsideSpans {
                by_service: seen.by_service,
                last_arrival: seen.last.zip(seen.last_instant),
                consumer_groups: seen.consumer_groups,
            }
        }));
    }
    wait.wait(stop).await
}

/// The reference-tree check over a whole forest (a run that receives
/// other programs' spans keeps them all), when the run played the trade's
/// own path (datagen, processor, Kafka Streams app): another program's
/// consumer of `stockapp.dollarsbyzip` is an API hop of the tree. `None`
/// when the run played less, so that the tree is not the reference one.
pub fn check_forest(
    forest: &SpanForest,
    services: Services,
    api_consumers: usize,
    sample: usize,
) -> Option<TraceCheckReport> {
    if !(services.datagen && services.processor && services.kstream) {
        return None;
    }
    let api_consumers = if services.api { api_consumers } else { 0 };
    let own = services.names(api_consumers);
    let check = TraceCheck::new(api_consumers).sample(sample);
    // Each trace's spans together, other programs' first: the check judges
    // a trace once the run's own spans are in, and a hop it had not seen by
    // then would be a trace of its own.
    let mut spans: Vec<&CapturedSpan> = forest.captured().iter().collect();
    spans.sort_by_key(|c| {
        (
            c.data.span_context.trace_id().to_bytes(),
            own.contains(&c.service),
            c.data.end_time,
        )
    });
    for captured in spans {
        check.span_ended(&Arc::from(captured.service.as_str()), captured.data.clone());
    }
    let mut report = check.finish();
    report.summary.services = ServiceRecords::of(forest);
    Some(report)
}
