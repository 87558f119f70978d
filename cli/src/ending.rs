//! How `run` ends: within [`GRACE`] of a stop signal whatever the broker
//! does, at once on a second one, and with an exit status that says
//! whether the run proved what it claims.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kafka_trace_harness::stockapp::pipeline::{PipelineProgress, Services};
use kafka_trace_harness::stockapp::{DOLLARS_BY_ZIP_TOPIC, TRADES_TOPIC, USERS_TOPIC};

/// How long the run may take to finish after Ctrl-C or SIGTERM: stopping
/// the services (their last sends and commits), the summary, the files.
pub const GRACE: Duration = Duration::from_secs(5);

/// How long stopping the services may take after a stop signal: within
/// [`GRACE`], so that the pipeline itself names what it could not finish.
pub const STOP_WITHIN: Duration = Duration::from_secs(4);

/// Exit status of a run cut short by a stop signal before it finished.
const INTERRUPTED: i32 = 130;

/// Watches for stop signals while the run ends; names the step it is on,
/// so that a run cut short says what it could not finish.
#[derive(Debug, Clone)]
pub struct Ending {
    step: Arc<Mutex<String>>,
}

impl Ending {
    /// Arms the watch. `stopped` says whether a stop signal already came:
    /// then the run has [`GRACE`] to finish, and a second signal ends it
    /// at once; else the first signal starts the grace, the next ends it.
    pub fn arm(stopped: bool) -> Self {
        let ending = Self {
            step: Arc::new(Mutex::new("stopping the services".to_owned())),
        };
        let watched = ending.clone();
        tokio::spawn(async move {
            if !stopped {
                stop_signal().await;
                eprintln!("stopping: the run ends within {GRACE:?}; stop again to end it at once");
            }
            tokio::select! {
                () = tokio::time::sleep(GRACE) => {
                    watched.exit(&format!("the run did not end within {GRACE:?} of the stop signal"));
                }
                () = stop_signal() => watched.exit("stopped again"),
            }
        });
        ending
    }

    /// The step the run is on now.
    pub fn step(&self, step: &str) {
        *self.step.lock().unwrap_or_else(PoisonError::into_inner) = step.to_owned();
    }

    /// Ends the run now, after a stop signal, because `unfinished` could
    /// not be finished within the grace.
    pub fn give_up(&self, unfinished: &str) -> ! {
        self.step(unfinished);
        self.exit(&format!(
            "the run did not end within {GRACE:?} of the stop signal"
        ))
    }

    fn exit(&self, why: &str) -> ! {
        let step = self
            .step
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        eprintln!("error: {why}; not finished: {step}");
        std::process::exit(INTERRUPTED)
    }
}

/// The next Ctrl-C or SIGTERM (Ctrl-C alone where there is no SIGTERM).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            // No handler: the default action (ending the process) stands.
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What a finished run proved, as the exit status needs it.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each thing that makes the run fail, in words.
    pub problems: Vec<String>,
}

impl Outcome {
    /// Checks the run's figures: every trace whole, every record through
    /// every service that reads it (the summary says so), the run not cut
    /// short.
    pub fn of(
        progress: &PipelineProgress,
        services: Services,
        broken_traces: usize,
        other_broken: usize,
        stopped_early: bool,
    ) -> Self {
        let mut problems = Vec::new();
        if stopped_early {
            problems.push("stopped before every generated record went through".to_owned());
        }
        if broken_traces > 0 {
            problems.push(format!("{broken_traces} broken trade traces"));
        }
        if other_broken > 0 {
            problems.push(format!(
                "{other_broken} broken other traces (user profiles, dead letters)"
            ));
        }
        if services.datagen && services.processor {
            if progress.trades_processed < progress.trades_sent {
                problems.push(format!(
                    "the processor read {} of {} trades sent",
                    progress.trades_processed, progress.trades_sent
                ));
            }
            if progress.users_processed < progress.users_sent {
                problems.push(format!(
                    "the processor read {} of {} user profiles sent",
                    progress.users_processed, progress.users_sent
                ));
            }
        }
        if services.datagen
            && services.kstream
            && progress.kstream_trades_processed < progress.trades_sent
        {
            problems.push(format!(
                "the Kafka Streams app read {} of {} trades sent",
                progress.kstream_trades_processed, progress.trades_sent
            ));
        }
        for (service, deleted) in &progress.deleted_before_start {
            problems.push(format!(
                "{service} started after the broker had deleted {deleted}: it never read them"
            ));
        }
        if services.processor && services.api {
            for (n, &rows) in progress.api_rows.iter().enumerate() {
                if rows < progress.rows_sent {
                    problems.push(format!(
                        "api-{} read {rows} of the {} rows the processor sent",
                        n + 1,
                        progress.rows_sent
                    ));
                }
            }
        }
        Self { problems }
    }

    /// Judges records of `topic` the broker's retention deleted (`deleted`
    /// says which, as [`DeletedRecords`](kafka_trace_harness::broker::DeletedRecords)
    /// does): read, unless a
    /// service that reads their topic runs elsewhere. A service here whose
    /// next record was deleted fails the run itself (`RecordsDeleted`),
    /// and datagen waits for the slow readers here, so what was deleted
    /// had been read by them; an outside reader holds datagen back in
    /// nothing, so it may have missed them. Returns the note to print;
    /// a possible loss is also a problem.
    pub fn deleted(
        &mut self,
        topic: &str,
        deleted: impl std::fmt::Display,
        services: Services,
    ) -> String {
        let elsewhere: &[&str] = match topic {
            USERS_TOPIC if !services.processor => &["the processor"],
            TRADES_TOPIC => match (services.processor, services.kstream) {
                (true, true) => &[],
                (true, false) => &["the Kafka Streams app"],
                (false, true) => &["the processor"],
                (false, false) => &["the processor", "the Kafka Streams app"],
            },
            DOLLARS_BY_ZIP_TOPIC if !services.api => &["the API consumers"],
            USERS_TOPIC | DOLLARS_BY_ZIP_TOPIC => &[],
            // stockapp.trades-json, the dead letters: read by no service.
            _ => {
                return format!(
                    "the embedded broker's retention deleted {deleted} (no service of \
                     the pipeline reads this topic)"
                );
            }
        };
        if elsewhere.is_empty() {
            return format!(
                "the embedded broker's retention deleted {deleted} (every service \
                 reading them runs here and had read them)"
            );
        }
        let problem = format!(
            "the embedded broker's retention deleted {deleted}, which {} (not run \
             here) may not have read",
            elsewhere.join(" and ")
        );
        self.problems.push(problem.clone());
        problem
    }

    /// `Err` naming every problem, unless there is none.
    pub fn into_result(self) -> Result<(), String> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the run is not clean: {} (--allow-broken exits 0 with the same report)",
                self.problems.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_trace_harness::stockapp::TRADES_JSON_TOPIC;

    const DELETED: &str = "7 records of partition 0";

    #[test]
    fn deleted_records_fail_the_run_only_where_a_reader_runs_elsewhere() {
        let all = Services::default();
        let mut outcome = Outcome::default();
        for topic in [
            TRADES_TOPIC,
            USERS_TOPIC,
            DOLLARS_BY_ZIP_TOPIC,
            TRADES_JSON_TOPIC,
        ] {
            let note = outcome.deleted(topic, DELETED, all);
            assert!(note.contains("7 records"), "{note}");
        }
        assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);

        let api_elsewhere = Services {
            api: false,
            ..Services::default()
        };
        let note = outcome.deleted(DOLLARS_BY_ZIP_TOPIC, DELETED, api_elsewhere);
        assert!(note.contains("the API consumers (not run here)"), "{note}");
        let kstream_elsewhere = Services {
            kstream: false,
            ..Services::default()
        };
        outcome.deleted(TRADES_TOPIC, DELETED, kstream_elsewhere);
        outcome.deleted(USERS_TOPIC, DELETED, kstream_elsewhere);
        assert_eq!(outcome.problems.len(), 2, "{:?}", outcome.problems);
        assert!(outcome.problems[1].contains("the Kafka Streams app"));
    }
}
