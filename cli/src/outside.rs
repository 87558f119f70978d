//! `run`'s wait for other programs (`--outside-*`): after the run's own
//! services are done, outside consumer groups catch up and outside spans
//! stop arriving before the receiver closes. The logic is the library's
//! [`OutsideWait`]; this is its command line.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafka_trace_harness::integrations::otlp_receiver::SpanArrivals;
use kafka_trace_harness::stockapp::outside::{OutsideReport, OutsideSpans, OutsideWait};
use kafka_trace_harness::stockapp::pipeline::Services;

#[derive(Debug, Clone, clap::Args)]
pub struct OutsideArgs {
    /// Consumer group of another program reading what this run writes
    /// (repeat, or comma-separate): once the run's own services are done,
    /// the run waits for it to commit up to the end of every topic of the
    /// run it reads. Groups named by received consumer spans, and those a
    /// broker lists (Apache Kafka; not the harness's own broker), are
    /// waited for too.
    #[arg(long = "outside-group", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Seconds the run waits, once its own services are done, for other
    /// programs' consumer groups and spans; a group still behind then is
    /// named with its lag and the run fails.
    #[arg(long = "outside-deadline", default_value = "30", value_parser = parse_seconds)]
    pub deadline: Duration,
    /// Seconds without a received span after which other programs' spans
    /// count as all in [default: 6, more than the SDKs' 5 s batch delay].
    /// Waited for when an outside span or group has been seen; given, it
    /// is always waited for (with --otlp-receiver).
    #[arg(long = "outside-quiet", value_parser = parse_seconds)]
    pub quiet: Option<Duration>,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number of seconds: {e}"))?;
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?} seconds: {e}"))
}

/// Waits for the other programs of a run on `bootstrap` (which lists its
/// groups if `can_list_groups`) that played
/// `services` (with `api_consumers` API consumers), their spans counted by
/// `arrivals` when the run receives OTLP; `stop` (Ctrl-C) ends the wait.
pub async fn wait(
    args: &OutsideArgs,
    bootstrap: &str,
    can_list_groups: bool,
    services: Services,
    api_consumers: usize,
    arrivals: Option<SpanArrivals>,
    stop: impl Future<Output = ()>,
) -> OutsideReport {
    let mut wait = OutsideWait::new(bootstrap, services.written_topics())
        .own_groups(services.names(api_consumers))
        .deadline(args.deadline)
        .always_quiet(args.quiet.is_some())
        .list_groups(can_list_groups);
    if let Some(quiet) = args.quiet {
        wait = wait.quiet(quiet);
    }
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
