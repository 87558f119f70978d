//! Datagen's speed: stock-trades records per second on one core; generate
//! plus Avro binary encode against encoding the same, already generated,
//! records alone (apache-avro's writer, the baseline); and how the cost
//! grows with the schema (1 → 100 fields, nesting depth 1 → 8).
//!
//! `cargo bench --bench datagen --features datagen -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kafka_trace_harness::datagen::DatagenSchema;

const STOCK_TRADES: &str = include_str!("../fixtures/stock_trades.avsc");
/// Records per iteration of the batch benches.
const BATCH: usize = 10_000;

fn stock_trades(c: &mut Criterion) {
    let schema = DatagenSchema::parse_str(STOCK_TRADES).expect("bundled schema");
    let writer = GenericDatumWriter::builder(schema.avro_schema())
        .build()
        .expect("writer");
    let records: Vec<Value> = schema.generator(1).take(BATCH).collect();

    let mut group = c.benchmark_group("datagen/stock_trades");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("generate", |b| {
        let mut generator = schema.generator(1);
        b.iter(|| {
            for _ in 0..BATCH {
                black_box(generator.next_value());
            }
        })
    });
    group.bench_function("generate+encode", |b| {
        let mut generator = schema.generator(1);
        let mut out = Vec::with_capacity(64 * BATCH);
        b.iter(|| {
            out.clear();
            for _ in 0..BATCH {
                writer
                    .write_value_ref(&mut out, &generator.next_value())
                    .expect("encode");
            }
            black_box(out.len())
        })
    });
    // The baseline: apache-avro encoding records that already exist.
    group.bench_function("encode_only", |b| {
        let mut out = Vec::with_capacity(64 * BATCH);
        b.iter(|| {
            out.clear();
            for record in &records {
                writer.write_value_ref(&mut out, record).expect("encode");
            }
            black_box(out.len())
        })
    });
    group.finish();
}

/// A flat record of `n` fields cycling through annotated kinds.
fn wide_schema(n: usize) -> String {
    let kinds = [
        r#"{"type": "int", "arg.properties": {"range": {"min": 0, "max": 1000}}}"#,
        r#"{"type": "string", "arg.properties": {"options": ["a", "b", "c"]}}"#,
        r#"{"type": "string", "arg.properties": {"regex": "User_[1-9]"}}"#,
        r#"{"type": "long", "arg.properties": {"iteration": {"start": 0}}}"#,
        r#""double""#,
    ];
    let fields: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"name": "f{i}", "type": {}}}"#, kinds[i % kinds.len()]))
        .collect();
    format!(
        r#"{{"type": "record", "name": "wide", "fields": [{}]}}"#,
        fields.join(",")
    )
}

/// Records nested `depth` deep, each level with two leaf fields.
fn deep_schema(depth: usize) -> String {
    let mut inner = String::from(
        r#"{"type": "record", "name": "L0", "fields": [
            {"name": "a", "type": {"type": "int", "arg.properties": {"range": {"min": 0, "max": 9}}}},
            {"name": "b", "type": {"type": "string", "arg.properties": {"options": ["x", "y"]}}}]}"#,
    );
    for level in 1..depth {
        inner = format!(
            r#"{{"type": "record", "name": "L{level}", "fields": [
                {{"name": "a", "type": {{"type": "int", "arg.properties": {{"range": {{"min": 0, "max": 9}}}}}}}},
                {{"name": "next", "type": {inner}}}]}}"#
        );
    }
    inner
}

fn growth(c: &mut Criterion) {
    let mut group = c.benchmark_group("datagen/fields");
    for n in [1, 10, 100] {
        let schema = DatagenSchema::parse_str(&wide_schema(n)).expect("wide schema");
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(n), &schema, |b, schema| {
            let mut generator = schema.generator(1);
            b.iter(|| black_box(generator.next_value()))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("datagen/depth");
    for depth in [1, 2, 4, 8] {
        let schema = DatagenSchema::parse_str(&deep_schema(depth)).expect("deep schema");
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(depth), &schema, |b, schema| {
            let mut generator = schema.generator(1);
            b.iter(|| black_box(generator.next_value()))
        });
    }
    group.finish();
}

criterion_group!(benches, stock_trades, growth);
criterion_main!(benches);
