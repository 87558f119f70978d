//! `kafka-trace-harness datagen`: records from any Avro schema, written as
//! JSON Lines or an Avro container file, or produced to a topic.

mod produce;

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use kafka_trace_harness::datagen::DatagenSchema;

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, as Kafka Connect's JSON converter writes
    /// records without schemas.
    Json,
    /// An Avro object container file (schema in the header).
    Avro,
}

#[derive(Debug, clap::Args)]
pub struct DatagenArgs {
    /// The schema: .avsc / schema JSON (`//` comments allowed, as in the
    /// datagen quickstarts) or an Avro container file, whose header holds it.
    #[arg(long)]
    schema: PathBuf,
    /// How many records.
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// Seed: same seed, same records (in either format).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Write here instead of standard output.
    #[arg(long, conflicts_with = "topic")]
    out: Option<PathBuf>,
    /// Produce the records to this topic (partition 0), each in a root
    /// `send` span, instead of writing them.
    #[arg(long, requires = "bootstrap")]
    topic: Option<String>,
    /// The Kafka cluster to produce to (host:port).
    #[arg(long, requires = "topic")]
    bootstrap: Option<String>,
    /// Register the schema (subject `<topic>-value`) with this Confluent
    /// Schema Registry and produce Avro in Confluent's wire format, as the
    /// datagen connector does; without it, values are the JSON form.
    #[arg(long, requires = "topic")]
    schema_registry: Option<String>,
    /// The record field whose value is the Kafka key.
    #[arg(long, requires = "topic")]
    key_field: Option<String>,
    /// Records per second (default: as fast as the broker takes them).
    #[arg(long, requires = "topic", value_parser = crate::parse_rate)]
    rate: Option<f64>,
}

/// Records between two progress-bar updates.
const PROGRESS_EVERY: u64 = 4096;

pub async fn run(args: DatagenArgs) -> Result<(), Box<dyn std::error::Error>> {
    let schema = DatagenSchema::from_file(&args.schema)?;
    if let Some(topic) = &args.topic {
        let target = produce::Target {
            topic,
            bootstrap: args.bootstrap.as_deref().unwrap_or_default(),
            registry: args.schema_registry.as_deref(),
            key_field: args.key_field.as_deref(),
            rate: args.rate,
        };
        produce::produce(&schema, schema.generator(args.seed), args.count, target).await?;
        return Ok(());
    }
    let out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(
            File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let bar = progress_bar(args.count);
    let mut generator = schema.generator(args.seed);
    match args.format {
        Format::Json => {
            for n in 0..args.count {
                schema.write_json(&generator.next_value(), &mut out)?;
                out.write_all(b"\n")?;
                tick(&bar, n);
            }
            out.flush()?;
        }
        Format::Avro => {
            let mut writer = apache_avro::Writer::new(schema.avro_schema(), &mut out)?;
            for n in 0..args.count {
                writer.append_value(generator.next_value())?;
                tick(&bar, n);
            }
            writer.flush()?;
            drop(writer);
            out.flush()?;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// A bar on standard error when it is a terminal; hidden otherwise.
pub fn progress_bar(count: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    ProgressBar::new(count).with_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} records {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

pub fn tick(bar: &ProgressBar, n: u64) {
    if (n + 1).is_multiple_of(PROGRESS_EVERY) {
        bar.set_position(n + 1);
    }
}
