//! `kafka-trace-harness datagen`: records from any Avro schema, written as
//! JSON Lines or an Avro container file.

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
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Records between two progress-bar updates.
const PROGRESS_EVERY: u64 = 4096;

pub async fn run(args: DatagenArgs) -> Result<(), Box<dyn std::error::Error>> {
    let schema = DatagenSchema::from_file(&args.schema)?;
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
    if (n + 1) % PROGRESS_EVERY == 0 {
        bar.set_position(n + 1);
    }
}
