//! Where `run` sends spans when it plays every service itself: the trace
//! check and, with `--spans-out`, an OTLP JSON Lines file written as spans
//! end. Nothing holds every span, so memory stays flat however long the run.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use kafka_trace_harness::SpanStream;
use kafka_trace_harness::otlp::OtlpTraces;
use kafka_trace_harness::stockapp::trace_check::TraceCheck;
use opentelemetry_sdk::trace::SpanData;

/// Spans per line of the file: one OTLP export request each.
const SPANS_PER_LINE: usize = 10_000;

/// Hands each span to the trace check and to the file, if any.
pub struct RunSpans {
    pub check: Arc<TraceCheck>,
    pub file: Option<SpansFile>,
}

impl SpanStream for RunSpans {
    fn span_ended(&self, service: &Arc<str>, span: SpanData) {
        if let Some(file) = &self.file {
            file.add(service, span.clone());
        }
        self.check.span_ended(service, span);
    }
}

/// An OTLP JSON Lines file (one `ExportTraceServiceRequest` per line, as
/// OpenTelemetry's file exporter writes): spans are grouped into lines on
/// the threads that end them and written by a thread of their own.
pub struct SpansFile {
    batch: Mutex<(OtlpTraces, usize)>,
    lines: Mutex<Option<SyncSender<OtlpTraces>>>,
    writer: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

impl SpansFile {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        // A few lines queued at most: a slow disk slows the run, it does
        // not grow its memory.
        let (lines, queued) = sync_channel::<OtlpTraces>(4);
        let writer = std::thread::spawn(move || {
            for line in queued {
                let json = line.to_json().map_err(std::io::Error::other)?;
                out.write_all(json.as_bytes())?;
                out.write_all(b"\n")?;
            }
            out.flush()
        });
        Ok(Self {
            batch: Mutex::new((OtlpTraces::new(), 0)),
            lines: Mutex::new(Some(lines)),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn add(&self, service: &str, span: SpanData) {
        let full = {
            let mut batch = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
            batch.0.add_service_span(service, span);
            batch.1 += 1;
            (batch.1 >= SPANS_PER_LINE)
                .then(|| std::mem::replace(&mut *batch, (OtlpTraces::new(), 0)).0)
        };
        if let Some(line) = full {
            self.send(line);
        }
    }

    fn send(&self, line: OtlpTraces) {
        if let Some(lines) = &*self.lines.lock().unwrap_or_else(PoisonError::into_inner) {
            // A failed writer reports its error from `finish`.
            let _ = lines.send(line);
        }
    }

    /// Writes the last line and waits for the writer, reporting its error.
    pub fn finish(&self) -> std::io::Result<()> {
        let rest = std::mem::replace(
            &mut *self.batch.lock().unwrap_or_else(PoisonError::into_inner),
            (OtlpTraces::new(), 0),
        );
        if rest.1 > 0 {
            self.send(rest.0);
        }
        drop(
            self.lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        match self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(writer) => writer
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the span writer panicked"))),
            None => Ok(()),
        }
    }
}
