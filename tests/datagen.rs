//! Datagen for any Avro schema: schema files, annotations, errors, JSON.

use std::path::Path;

use apache_avro::types::Value;
use kafka_trace_harness::datagen::{DatagenSchema, MAX_DEPTH};

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = record else {
        panic!("not a record: {record:?}")
    };
    &fields.iter().find(|(n, _)| n == name).expect(name).1
}

fn string(v: &Value) -> &str {
    match v {
        Value::String(s) | Value::Enum(_, s) => s,
        other => panic!("not a string: {other:?}"),
    }
}

fn err(schema: &str) -> String {
    DatagenSchema::parse_str(schema).unwrap_err().to_string()
}

fn record(fields: &str) -> String {
    format!(r#"{{"type": "record", "name": "orders", "fields": [{fields}]}}"#)
}

#[test]
fn reference_quickstart_schemas_load_and_generate_valid_records() {
    // Confluent's quickstart schema files, kept in the repo so that a clone
    // anywhere has them.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/datagen/reference");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).expect("reference datagen schemas") {
        let path = entry.unwrap().path();
        let schema = DatagenSchema::from_file(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for value in schema.generator(1).take(200) {
            assert!(value.validate(schema.avro_schema()), "{path:?}: {value:?}");
            schema.to_avro_datum(value).unwrap();
        }
        loaded += 1;
    }
    assert!(loaded >= 2);
}

#[test]
fn bundled_quickstart_like_schemas_load_and_generate_valid_records() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/datagen");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "avsc") {
            let schema =
                DatagenSchema::from_file(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            for value in schema.generator(2).take(200) {
                assert!(value.validate(schema.avro_schema()), "{path:?}: {value:?}");
                let json = schema.to_json_string(&value);
                assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
            }
            loaded += 1;
        }
    }
    assert!(loaded >= 4, "{loaded} schemas");
}

#[test]
fn stock_trades_honour_every_annotation() {
    let schema = DatagenSchema::from_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stock_trades.avsc"),
    )
    .unwrap();
    for trade in schema.generator(3).take(2000) {
        assert!(["BUY", "SELL"].contains(&string(field(&trade, "side"))));
        let Value::Int(q) = field(&trade, "quantity") else {
            panic!()
        };
        assert!((1..5000).contains(q));
        let Value::Int(p) = field(&trade, "price") else {
            panic!()
        };
        assert!((5..1000).contains(p));
        let user = string(field(&trade, "userid"));
        let n: u8 = user.strip_prefix("User_").unwrap().parse().unwrap();
        assert!((1..=9).contains(&n));
    }
}

#[test]
fn same_seed_same_records_other_seed_others() {
    let schema = DatagenSchema::parse_str(&record(
        r#"{"name": "email", "type": "string"}, {"name": "n", "type": "long"},
           {"name": "tags", "type": {"type": "map", "values": "int"}}"#,
    ))
    .unwrap();
    let a: Vec<_> = schema.generator(5).take(50).collect();
    let b: Vec<_> = schema.generator(5).take(50).collect();
    let c: Vec<_> = schema.generator(6).take(50).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let json = |v: &[Value]| {
        v.iter()
            .map(|v| schema.to_json_string(v))
            .collect::<Vec<_>>()
    };
    assert_eq!(json(&a), json(&b));
}

#[test]
fn json_lines_keep_the_schema_field_order() {
    let schema = DatagenSchema::parse_str(&record(
        r#"{"name": "zeta", "type": {"type": "int", "arg.properties": {"options": [1]}}},
           {"name": "alpha", "type": ["null", {"type": "string", "arg.properties": {"options": ["x"]}}]},
           {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis",
              "arg.properties": {"iteration": {"start": 1000, "step": 10}}}},
           {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2,
              "arg.properties": {"options": [12.5]}}},
           {"name": "b", "type": {"type": "bytes", "arg.properties": {"options": ["AB"]}}}"#,
    ))
    .unwrap();
    let mut generator = schema.generator(1);
    let first = generator.next().unwrap();
    let json = schema.to_json_string(&first);
    assert!(
        json == r#"{"zeta":1,"alpha":"x","when":1000,"price":12.5,"b":"QUI="}"#
            || json == r#"{"zeta":1,"alpha":null,"when":1000,"price":12.5,"b":"QUI="}"#,
        "{json}"
    );
    let second = schema.to_json(&generator.next().unwrap());
    assert_eq!(second["when"], 1010);
}

#[test]
fn every_type_and_logical_type_generates_valid_values() {
    let schema = DatagenSchema::parse_str(&record(
        r#"{"name": "n", "type": "null"}, {"name": "b", "type": "boolean"},
           {"name": "i", "type": "int"}, {"name": "l", "type": "long"},
           {"name": "f", "type": "float"}, {"name": "d", "type": "double"},
           {"name": "by", "type": "bytes"}, {"name": "s", "type": "string"},
           {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
           {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 3}},
           {"name": "fx2", "type": "F"},
           {"name": "a", "type": {"type": "array", "items": "E"}},
           {"name": "m", "type": {"type": "map", "values": ["null", "F", "string"]}},
           {"name": "date", "type": {"type": "int", "logicalType": "date"}},
           {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
           {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
           {"name": "tsm", "type": {"type": "long", "logicalType": "timestamp-millis"}},
           {"name": "tsu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
           {"name": "ltm", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
           {"name": "ltu", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
           {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
           {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}},
           {"name": "decf", "type": {"type": "fixed", "name": "D", "size": 4, "logicalType": "decimal", "precision": 9, "scale": 3,
              "arg.properties": {"range": {"min": -10.5, "max": 10.5}}}},
           {"name": "dur", "type": {"type": "fixed", "name": "Dur", "size": 12, "logicalType": "duration"}}"#,
    ))
    .unwrap();
    for value in schema.generator(9).take(300) {
        assert!(value.validate(schema.avro_schema()), "{value:?}");
        let bytes = schema.to_avro_datum(value.clone()).unwrap();
        let back = apache_avro::reader::datum::GenericDatumReader::builder(schema.avro_schema())
            .build()
            .and_then(|r| r.read_value(&mut &bytes[..]))
            .unwrap();
        assert_eq!(back, value);
    }
}

#[test]
fn recursive_types_end_within_the_depth_bound() {
    let schema = DatagenSchema::parse_str(
        r#"{"type": "record", "name": "Node", "fields": [
            {"name": "value", "type": "int"},
            {"name": "next", "type": ["Node", "null"]},
            {"name": "children", "type": {"type": "array", "items": "Node"}}
        ]}"#,
    )
    .unwrap();
    fn depth(v: &Value) -> u32 {
        match v {
            Value::Record(fields) => 1 + fields.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
            Value::Union(_, v) => depth(v),
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    for value in schema.generator(1).take(3) {
        assert!(value.validate(schema.avro_schema()));
        assert!(depth(&value) <= 2 * MAX_DEPTH + 2, "{}", depth(&value));
    }
    let message =
        err(r#"{"type": "record", "name": "Loop", "fields": [{"name": "me", "type": "Loop"}]}"#);
    assert!(
        message.contains("no finite value") && message.ends_with("at Loop"),
        "{message}"
    );
}

#[test]
fn bad_annotations_are_errors_naming_the_field() {
    let cases = [
        (
            r#"{"name": "ordertime", "type": {"type": "long", "arg.properties": {"range": {"min": 9, "max": 3}}}}"#,
            "range.min ≥ max (9 ≥ 3) at orders.ordertime",
        ),
        (
            r#"{"name": "side", "type": {"type": "string", "arg.properties": {"choices": ["a"]}}}"#,
            "unknown annotation `choices`",
        ),
        (
            r#"{"name": "qty", "type": {"type": "int", "arg.properties": {"options": [1, "two"]}}}"#,
            "options[1]: expected a number, found a string at orders.qty",
        ),
        (
            r#"{"name": "code", "type": {"type": "string", "arg.properties": {"regex": "a\\bb"}}}"#,
            "cannot be generated",
        ),
        (
            r#"{"name": "code", "type": {"type": "string", "arg.properties": {"regex": "[a-"}}}"#,
            "regex \"[a-\" cannot be generated",
        ),
        (
            r#"{"name": "code", "type": {"type": "string", "arg.properties": {"regex": "ab", "length": 5}}}"#,
            "gives no string of length ≥ 5 at orders.code",
        ),
        (
            r#"{"name": "flag", "type": {"type": "boolean", "arg.properties": {"range": {"min": 0}}}}"#,
            "annotation `range` does not apply to boolean",
        ),
        (
            r#"{"name": "qty", "type": {"type": "int", "arg.properties": {"range": {"min": 0, "max": 3000000000}}}}"#,
            "goes past int values",
        ),
        (
            r#"{"name": "n", "type": {"type": "int", "arg.properties": {"iteration": {"start": 3, "restart": 3}}}}"#,
            "iteration.restart equals start at orders.n",
        ),
        (
            r#"{"name": "m", "type": {"type": "map", "values": "int", "arg.properties": {"keys": {"odds": 0.5}}}}"#,
            "annotation `odds` does not apply to map keys",
        ),
        (
            r#"{"name": "f", "type": {"type": "string", "arg.properties": {"options": {"file": "/nonexistent/x.json"}}}}"#,
            "options file /nonexistent/x.json at orders.f: cannot read it",
        ),
        (
            r#"{"name": "p", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2, "arg.properties": {"range": {"min": 10, "max": 500}}}}"#,
            "range goes past the decimal's 4 digits at orders.p",
        ),
    ];
    for (field, expected) in cases {
        let message = err(&record(field));
        assert!(
            message.contains(expected),
            "{message:?} should contain {expected:?}"
        );
    }
    assert!(err("{not json").starts_with("schema is not JSON"));
    assert!(err(r#"{"type": "recrod"}"#).starts_with("invalid Avro schema"));
}

#[test]
fn options_files_are_read_from_beside_the_schema() {
    let dir = std::env::temp_dir().join(format!("datagen-options-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cities.json"), "\"Lyon\" \"Oslo\"\n\"Kyoto\"").unwrap();
    std::fs::write(
        dir.join("s.avsc"),
        record(r#"{"name": "c", "type": {"type": "string", "arg.properties": {"options": {"file": "cities.json", "encoding": "json"}}}}"#),
    )
    .unwrap();
    let schema = DatagenSchema::from_file(dir.join("s.avsc")).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for v in schema.generator(1).take(100) {
        seen.insert(string(field(&v, "c")).to_owned());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["Kyoto", "Lyon", "Oslo"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unannotated_fields_get_fake_values_by_name() {
    let schema = DatagenSchema::parse_str(&record(
        r#"{"name": "email", "type": "string"}, {"name": "first_name", "type": "string"},
           {"name": "created_at", "type": "long"}, {"name": "ip", "type": "string"},
           {"name": "blob", "type": "string"}"#,
    ))
    .unwrap();
    let v = schema.generator(4).next().unwrap();
    assert!(string(field(&v, "email")).contains('@'));
    assert!(
        string(field(&v, "first_name"))
            .chars()
            .next()
            .unwrap()
            .is_uppercase()
    );
    let Value::Long(ts) = field(&v, "created_at") else {
        panic!()
    };
    assert!(
        (kafka_trace_harness::datagen::RECENT_FROM_MS..kafka_trace_harness::datagen::RECENT_TO_MS)
            .contains(ts)
    );
    assert_eq!(string(field(&v, "ip")).split('.').count(), 4);
    let blob = string(field(&v, "blob"));
    assert!((8..16).contains(&blob.len()) && blob.chars().all(|c| c.is_ascii_alphanumeric()));
}

#[test]
fn an_avro_container_file_gives_its_schema() {
    let schema = DatagenSchema::parse_str(&record(r#"{"name": "a", "type": "int"}"#)).unwrap();
    let mut writer = apache_avro::Writer::new(schema.avro_schema(), Vec::new()).unwrap();
    writer
        .append_value(schema.generator(1).next().unwrap())
        .unwrap();
    let bytes = writer.into_inner().unwrap();
    let again = DatagenSchema::from_bytes(&bytes, None).unwrap();
    assert_eq!(
        again.avro_schema().canonical_form(),
        schema.avro_schema().canonical_form()
    );
}
