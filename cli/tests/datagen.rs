//! `kafka-trace-harness datagen` as a user runs it: files written, read back
//! by apache-avro's reader, the same records in both formats.

use std::path::{Path, PathBuf};
use std::process::Command;

use apache_avro::Reader;
use kafka_trace_harness::datagen::DatagenSchema;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("datagen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn datagen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kafka-trace-harness"))
        .arg("datagen")
        .args(args)
        .output()
        .expect("run datagen")
}

#[test]
fn avro_and_json_hold_the_same_records_for_a_seed() {
    for schema_file in [
        fixture("datagen/orders.avsc"),
        fixture("datagen/clickstream.avsc"),
        fixture("datagen/customers.avsc"),
        fixture("stock_trades.avsc"),
    ] {
        let name = schema_file
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let avro = scratch(&format!("{name}.avro"));
        let json = scratch(&format!("{name}.jsonl"));
        let schema = schema_file.to_str().unwrap();
        for (format, out) in [("avro", &avro), ("json", &json)] {
            let output = datagen(&[
                "--schema",
                schema,
                "--count",
                "1000",
                "--seed",
                "7",
                "--format",
                format,
                "--out",
                out.to_str().unwrap(),
            ]);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(output.stderr.is_empty(), "no progress bar off a terminal");
        }
        let generator = DatagenSchema::from_file(&schema_file).unwrap();
        let reader = Reader::new(std::fs::File::open(&avro).unwrap()).unwrap();
        let records: Vec<_> = reader.map(|r| r.expect("a valid record")).collect();
        assert_eq!(records.len(), 1000, "{name}");
        for record in &records {
            assert!(record.validate(generator.avro_schema()), "{name}");
        }
        let lines: Vec<String> = std::fs::read_to_string(&json)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let from_avro: Vec<String> = records
            .iter()
            .map(|r| generator.to_json_string(r))
            .collect();
        assert_eq!(
            lines, from_avro,
            "{name}: same seed, same records in both formats"
        );
    }
}

#[test]
fn json_goes_to_standard_output_by_default() {
    let output = datagen(&[
        "--schema",
        fixture("users.avsc").to_str().unwrap(),
        "--count",
        "3",
    ]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.lines().count(), 3);
    for line in text.lines() {
        let user: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(user["userid"].as_str().unwrap().starts_with("User_"));
    }
}

#[test]
fn a_bad_schema_fails_with_the_field_and_the_problem() {
    let bad = scratch("bad.avsc");
    std::fs::write(
        &bad,
        r#"{"type": "record", "name": "orders", "fields": [
            {"name": "ordertime", "type": {"type": "long", "arg.properties": {"range": {"min": 9, "max": 1}}}}
        ]}"#,
    )
    .unwrap();
    let output = datagen(&["--schema", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("range.min ≥ max (9 ≥ 1) at orders.ordertime"),
        "{stderr}"
    );
    let output = datagen(&["--schema", "/nonexistent.avsc"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read schema file"));
}

/// `--topic` with `--schema-registry`: the schema registered, every record
/// in Confluent's wire format under its id, keyed by the field, and each
/// sent in a traced `send` span (a `traceparent` header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_registered_avro_to_a_topic() {
    use kafka_trace_harness::stockapp::{RegistryServer, SchemaRegistry, StockTrade};
    use kafka_trace_harness::{Backend, Broker};
    use rskafka::client::partition::UnknownTopicHandling;

    let broker = Broker::builder()
        .backend(Backend::Embedded)
        .start()
        .await
        .expect("embedded broker");
    broker
        .create_topic("datagen-trades", 1)
        .await
        .expect("topic");
    let registry = SchemaRegistry::new();
    let server = RegistryServer::start(registry.clone())
        .await
        .expect("registry server");
    let schema = fixture("stock_trades.avsc");
    let args: Vec<String> = [
        "datagen",
        "--schema",
        schema.to_str().unwrap(),
        "--count",
        "40",
        "--seed",
        "3",
        "--topic",
        "datagen-trades",
        "--bootstrap",
        broker.bootstrap_servers(),
        "--schema-registry",
        &server.url(),
        "--key-field",
        "symbol",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    // The process runs on a blocking thread; the broker and registry here
    // keep serving it meanwhile.
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            datagen(&args.iter().map(String::as_str).collect::<Vec<_>>()[1..])
        }),
    )
    .await
    .expect("datagen ends within a minute")
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("sent 40 records"));

    let client = broker
        .client()
        .await
        .unwrap()
        .partition_client("datagen-trades", 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while records.len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "40 records within 30 s, got {}",
            records.len()
        );
        let (batch, _) = client
            .fetch_records(records.len() as i64, 1..1_000_000, 500)
            .await
            .expect("fetch");
        records.extend(batch);
    }
    assert_eq!(records.len(), 40);
    let expected: Vec<_> = DatagenSchema::from_file(&schema)
        .unwrap()
        .generator(3)
        .take(40)
        .collect();
    for (record, value) in records.iter().zip(&expected) {
        let trade: StockTrade = registry
            .decode_value(record.record.value.as_deref().unwrap())
            .expect("Confluent-framed Avro under the registered id");
        assert_eq!(
            apache_avro::to_value(&trade)
                .unwrap()
                .resolve(DatagenSchema::from_file(&schema).unwrap().avro_schema())
                .unwrap(),
            *value
        );
        assert_eq!(record.record.key.as_deref(), Some(trade.symbol.as_bytes()));
        assert!(record.record.headers.contains_key("traceparent"));
    }
    server.shutdown().await.unwrap();
}
