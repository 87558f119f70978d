//! Property tests of datagen: arbitrary Avro schemas (every type, logical
//! types, annotations) drawn by proptest. For each: every generated value
//! validates against the schema, round-trips through Avro binary and the
//! JSON form, honours every annotation, and the same seed reproduces it.

use apache_avro::types::Value;
use kafka_trace_harness::datagen::DatagenSchema;
use proptest::prelude::*;
use serde_json::{Value as Json, json};

/// Records drawn per schema.
const RECORDS: usize = 24;

#[derive(Debug, Clone)]
enum Num {
    Plain,
    Range(i64, i64),
    Options(Vec<i64>),
    /// start, restart, step, initial offset from start (top-level fields only).
    Iterate(i64, Option<i64>, Option<i64>),
}

#[derive(Debug, Clone)]
enum Text {
    Plain,
    Length(usize),
    LengthBetween(usize, usize),
    Options(Vec<String>),
    /// regex, least length, prefix, suffix
    Regex(&'static str, Option<usize>, String, String),
}

#[derive(Debug, Clone)]
enum Spec {
    Null,
    Boolean(Option<f64>),
    /// Top-level only: alternates from the start.
    BooleanIterate(bool),
    Int(Num),
    Long(Num),
    Float(Option<(i32, i32)>),
    Double(Option<(i32, i32)>),
    Bytes(Option<usize>),
    String(Text),
    Enum(usize, Option<Vec<usize>>),
    Fixed(usize),
    Array(Box<Spec>, Option<(usize, usize)>),
    Map(Box<Spec>, Option<(usize, usize)>, bool),
    Optional(Box<Spec>),
    /// ["null", "string", record]
    Union(Vec<Spec>),
    Record(Vec<Spec>),
    Logical(&'static str),
    /// precision, scale, fixed size, range in units
    Decimal(u32, u32, Option<usize>, Option<(i32, i32)>),
    /// A timestamp-millis with a range.
    TimestampRange(i64, i64),
}

const REGEXES: [&str; 5] = [
    "User_[1-9]",
    "[a-z]{2,6}",
    "(foo|bar)-[0-9]{1,3}",
    "x+y?",
    "[A-F0-9]{4}",
];
const LOGICAL: [&str; 8] = [
    "date",
    "time-millis",
    "time-micros",
    "timestamp-millis",
    "timestamp-micros",
    "local-timestamp-millis",
    "local-timestamp-micros",
    "uuid",
];

fn num(top_level: bool, wide: bool) -> BoxedStrategy<Num> {
    let bound = if wide { 1i64 << 40 } else { 1 << 20 };
    let mut choices = vec![
        Just(Num::Plain).boxed(),
        (-bound..bound, 1i64..1000)
            .prop_map(|(lo, span)| Num::Range(lo, lo + span))
            .boxed(),
        prop::collection::vec(-bound..bound, 1..5)
            .prop_map(Num::Options)
            .boxed(),
    ];
    if top_level {
        choices.push(
            (
                -1000i64..1000,
                prop::option::of(-50i64..50),
                prop::option::of(1i64..7),
            )
                .prop_map(|(start, restart, step)| {
                    let restart = restart.map(|r| start + if r == 0 { 1 } else { r });
                    // A step against the direction of the restart still wraps.
                    let step = step.map(|s| match restart {
                        Some(r) if r < start => -s,
                        _ => s,
                    });
                    Num::Iterate(start, restart, step)
                })
                .boxed(),
        );
    }
    prop::strategy::Union::new(choices).boxed()
}

fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        Just(Text::Plain),
        (0usize..20).prop_map(Text::Length),
        (0usize..10, 1usize..10).prop_map(|(lo, span)| Text::LengthBetween(lo, lo + span)),
        prop::collection::vec("[a-z]{0,5}", 1..4).prop_map(Text::Options),
        (
            prop::sample::select(&REGEXES[..]),
            prop::option::of(0usize..3),
            "[a-z]{0,2}",
            "[a-z]{0,2}"
        )
            .prop_map(|(r, l, p, s)| Text::Regex(r, l, p, s)),
    ]
}

fn leaf(top_level: bool) -> BoxedStrategy<Spec> {
    let mut choices = vec![
        Just(Spec::Null).boxed(),
        prop::option::of(0.0f64..=1.0)
            .prop_map(Spec::Boolean)
            .boxed(),
        num(top_level, false).prop_map(Spec::Int).boxed(),
        num(top_level, true).prop_map(Spec::Long).boxed(),
        prop::option::of((-1000i32..1000, 1i32..100))
            .prop_map(|r| Spec::Float(r.map(|(lo, span)| (lo, lo + span))))
            .boxed(),
        prop::option::of((-1000i32..1000, 1i32..100))
            .prop_map(|r| Spec::Double(r.map(|(lo, span)| (lo, lo + span))))
            .boxed(),
        prop::option::of(0usize..12).prop_map(Spec::Bytes).boxed(),
        text().prop_map(Spec::String).boxed(),
        (1usize..5)
            .prop_flat_map(|n| (Just(n), prop::option::of(prop::collection::vec(0..n, 1..3))))
            .prop_map(|(n, o)| Spec::Enum(n, o))
            .boxed(),
        (0usize..20).prop_map(Spec::Fixed).boxed(),
        prop::sample::select(&LOGICAL[..])
            .prop_map(Spec::Logical)
            .boxed(),
        Just(Spec::Logical("duration")).boxed(),
        (1u32..16)
            .prop_flat_map(|p| {
                (
                    Just(p),
                    0..=p,
                    prop::option::of(Just(16usize)),
                    any::<bool>(),
                )
            })
            .prop_map(|(p, s, fixed, ranged)| {
                // A range inside the precision: |x| < 10^(p-s) units.
                let units = 10i64.pow(p - s).min(1000) as i32;
                let range = ranged.then_some((-units + 1, units));
                Spec::Decimal(p, s, fixed, range.filter(|(lo, hi)| lo < hi))
            })
            .boxed(),
        (1_500_000_000_000i64..1_700_000_000_000, 1i64..1_000_000)
            .prop_map(|(lo, span)| Spec::TimestampRange(lo, lo + span))
            .boxed(),
    ];
    if top_level {
        choices.push(any::<bool>().prop_map(Spec::BooleanIterate).boxed());
    }
    prop::strategy::Union::new(choices).boxed()
}

fn nested() -> impl Strategy<Value = Spec> {
    leaf(false).prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            (inner.clone(), prop::option::of((0usize..3, 1usize..4)))
                .prop_map(|(s, l)| Spec::Array(Box::new(s), l.map(|(lo, span)| (lo, lo + span)))),
            (
                inner.clone(),
                prop::option::of((0usize..3, 1usize..4)),
                any::<bool>()
            )
                .prop_map(|(s, l, keyed)| Spec::Map(
                    Box::new(s),
                    l.map(|(lo, span)| (lo, lo + span)),
                    keyed
                )),
            inner
                .clone()
                .prop_filter("a union holds no union or null", |s| {
                    !matches!(s, Spec::Optional(_) | Spec::Union(_) | Spec::Null)
                })
                .prop_map(|s| Spec::Optional(Box::new(s))),
            prop::collection::vec(inner.clone(), 1..4)
                .prop_map(|fields| Spec::Union(vec![Spec::Record(fields)])),
            prop::collection::vec(inner, 1..4).prop_map(Spec::Record),
        ]
    })
}

fn schema() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(prop_oneof![3 => nested(), 1 => leaf(true)], 1..6)
}

/// Renders a spec as schema JSON; `n` numbers the named types.
fn render(spec: &Spec, n: &mut usize) -> Json {
    *n += 1;
    let id = *n;
    let ann = |props: Json| props;
    match spec {
        Spec::Null => json!("null"),
        Spec::Boolean(None) => json!("boolean"),
        Spec::Boolean(Some(odds)) => json!({"type": "boolean", "arg.properties": {"odds": odds}}),
        Spec::BooleanIterate(start) => {
            json!({"type": "boolean", "arg.properties": {"iteration": {"start": start}}})
        }
        Spec::Int(num) | Spec::Long(num) => {
            let ty = if matches!(spec, Spec::Int(_)) {
                "int"
            } else {
                "long"
            };
            match num {
                Num::Plain => json!(ty),
                Num::Range(lo, hi) => {
                    json!({"type": ty, "arg.properties": {"range": {"min": lo, "max": hi}}})
                }
                Num::Options(o) => json!({"type": ty, "arg.properties": {"options": o}}),
                Num::Iterate(start, restart, step) => {
                    let mut it = json!({"start": start});
                    if let Some(r) = restart {
                        it["restart"] = json!(r);
                    }
                    if let Some(s) = step {
                        it["step"] = json!(s);
                    }
                    json!({"type": ty, "arg.properties": {"iteration": it}})
                }
            }
        }
        Spec::Float(r) | Spec::Double(r) => {
            let ty = if matches!(spec, Spec::Float(_)) {
                "float"
            } else {
                "double"
            };
            match r {
                None => json!(ty),
                Some((lo, hi)) => {
                    ann(json!({"type": ty, "arg.properties": {"range": {"min": lo, "max": hi}}}))
                }
            }
        }
        Spec::Bytes(None) => json!("bytes"),
        Spec::Bytes(Some(len)) => json!({"type": "bytes", "arg.properties": {"length": len}}),
        Spec::String(text) => match text {
            Text::Plain => json!("string"),
            Text::Length(l) => json!({"type": "string", "arg.properties": {"length": l}}),
            Text::LengthBetween(lo, hi) => {
                json!({"type": "string", "arg.properties": {"length": {"min": lo, "max": hi}}})
            }
            Text::Options(o) => json!({"type": "string", "arg.properties": {"options": o}}),
            Text::Regex(r, len, prefix, suffix) => {
                let mut props = json!({"regex": r, "prefix": prefix, "suffix": suffix});
                if let Some(l) = len {
                    props["length"] = json!(l);
                }
                json!({"type": "string", "arg.properties": props})
            }
        },
        Spec::Enum(count, options) => {
            let symbols: Vec<String> = (0..*count).map(|i| format!("S{i}")).collect();
            let mut e = json!({"type": "enum", "name": format!("E{id}"), "symbols": symbols});
            if let Some(o) = options {
                let o: Vec<String> = o.iter().map(|i| format!("S{i}")).collect();
                e["arg.properties"] = json!({"options": o});
            }
            e
        }
        Spec::Fixed(size) => json!({"type": "fixed", "name": format!("F{id}"), "size": size}),
        Spec::Array(items, len) => {
            let mut a = json!({"type": "array", "items": render(items, n)});
            if let Some((lo, hi)) = len {
                a["arg.properties"] = json!({"length": {"min": lo, "max": hi}});
            }
            a
        }
        Spec::Map(values, len, keyed) => {
            let mut m = json!({"type": "map", "values": render(values, n)});
            let mut props = json!({});
            if let Some((lo, hi)) = len {
                props["length"] = json!({"min": lo, "max": hi});
            }
            if *keyed {
                props["keys"] = json!({"regex": "k[a-z]{6}", "prefix": "p_"});
            }
            m["arg.properties"] = props;
            m
        }
        Spec::Optional(inner) => json!(["null", render(inner, n)]),
        Spec::Union(branches) => {
            let record = render(&branches[0], n);
            json!(["null", "string", record])
        }
        Spec::Record(fields) => {
            let fields: Vec<Json> = fields
                .iter()
                .enumerate()
                .map(|(i, f)| json!({"name": format!("f{i}"), "type": render(f, n)}))
                .collect();
            json!({"type": "record", "name": format!("R{id}"), "fields": fields})
        }
        Spec::Logical("duration") => {
            json!({"type": "fixed", "name": format!("D{id}"), "size": 12, "logicalType": "duration"})
        }
        Spec::Logical(logical) => {
            let ty = match *logical {
                "date" | "time-millis" => "int",
                "uuid" => "string",
                _ => "long",
            };
            json!({"type": ty, "logicalType": logical})
        }
        Spec::Decimal(p, s, fixed, range) => {
            let mut d = match fixed {
                Some(size) => json!({"type": "fixed", "name": format!("Dec{id}"), "size": size}),
                None => json!({"type": "bytes"}),
            };
            d["logicalType"] = json!("decimal");
            d["precision"] = json!(p);
            d["scale"] = json!(s);
            if let Some((lo, hi)) = range {
                d["arg.properties"] = json!({"range": {"min": lo, "max": hi}});
            }
            d
        }
        Spec::TimestampRange(lo, hi) => json!({"type": "long", "logicalType": "timestamp-millis",
            "arg.properties": {"range": {"min": lo, "max": hi}}}),
    }
}

fn render_schema(fields: &[Spec]) -> Json {
    let mut n = 0;
    render(&Spec::Record(fields.to_vec()), &mut n)
}

fn unscaled(d: &apache_avro::Decimal) -> i128 {
    let bytes: Vec<u8> = Vec::try_from(d).unwrap();
    let mut full = [if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xff
    } else {
        0
    }; 16];
    full[16 - bytes.len()..].copy_from_slice(&bytes);
    i128::from_be_bytes(full)
}

/// Checks the annotations of `spec` on `value` (record number `k`).
fn honours(spec: &Spec, value: &Value, k: usize) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{what}: {value:?} for {spec:?}"));
    match (spec, value) {
        (Spec::Null, Value::Null) => Ok(()),
        (Spec::Boolean(_), Value::Boolean(_)) => Ok(()),
        (Spec::BooleanIterate(start), Value::Boolean(b)) => {
            if *b == (*start ^ (k % 2 == 1)) {
                Ok(())
            } else {
                fail("iteration")
            }
        }
        (Spec::Int(num), Value::Int(v)) => honours_num(
            num,
            i64::from(*v),
            k,
            i64::from(i32::MIN),
            i64::from(i32::MAX),
        ),
        (Spec::Long(num), Value::Long(v)) => honours_num(num, *v, k, i64::MIN, i64::MAX),
        (Spec::Float(r), Value::Float(v)) => match r {
            Some((lo, hi)) if !((*lo as f32) <= *v && *v < (*hi as f32)) => fail("range"),
            _ => Ok(()),
        },
        (Spec::Double(r), Value::Double(v)) => match r {
            Some((lo, hi)) if !(f64::from(*lo) <= *v && *v < f64::from(*hi)) => fail("range"),
            _ => Ok(()),
        },
        (Spec::Bytes(len), Value::Bytes(b)) => match len {
            Some(l) if b.len() != *l => fail("length"),
            None if !(8..16).contains(&b.len()) => fail("default length"),
            _ => Ok(()),
        },
        (Spec::String(text), Value::String(s)) => {
            let n = s.chars().count();
            match text {
                Text::Plain if !(8..16).contains(&n) => fail("default length"),
                Text::Length(l) if n != *l => fail("length"),
                Text::LengthBetween(lo, hi) if !(*lo..*hi).contains(&n) => fail("length"),
                Text::Options(o) if !o.contains(s) => fail("options"),
                Text::Regex(r, len, prefix, suffix) => {
                    let Some(core) = s
                        .strip_prefix(prefix.as_str())
                        .and_then(|c| c.strip_suffix(suffix.as_str()))
                    else {
                        return fail("prefix/suffix");
                    };
                    let re = regex::Regex::new(&format!("^(?:{r})$")).unwrap();
                    if !re.is_match(core) {
                        return fail("regex");
                    }
                    if len.is_some_and(|l| core.chars().count() < l) {
                        return fail("length with regex");
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        (Spec::Enum(_, options), Value::Enum(i, _)) => match options {
            Some(o) if !o.contains(&(*i as usize)) => fail("options"),
            _ => Ok(()),
        },
        (Spec::Fixed(size), Value::Fixed(n, b)) if n == size && b.len() == *size => Ok(()),
        (Spec::Array(items, len), Value::Array(values)) => {
            let (lo, hi) = len.unwrap_or((8, 16));
            if !(lo..hi).contains(&values.len()) {
                return fail("length");
            }
            values.iter().try_for_each(|v| honours(items, v, k))
        }
        (Spec::Map(values, len, keyed), Value::Map(entries)) => {
            let (lo, hi) = len.unwrap_or((8, 16));
            // Distinct keys: a map may come out shorter only if keys ran out.
            if entries.len() >= hi || (entries.len() < lo && !*keyed) {
                return fail("length");
            }
            if *keyed
                && !entries
                    .keys()
                    .all(|key| key.starts_with("p_k") && key.len() == 9)
            {
                return fail("keys");
            }
            entries.values().try_for_each(|v| honours(values, v, k))
        }
        (Spec::Optional(inner), Value::Union(i, v)) => match (*i, &**v) {
            (0, Value::Null) => Ok(()),
            (1, v) => honours(inner, v, k),
            _ => fail("union branch"),
        },
        (Spec::Union(branches), Value::Union(i, v)) => match (*i, &**v) {
            (0, Value::Null) | (1, Value::String(_)) => Ok(()),
            (2, v) => honours(&branches[0], v, k),
            _ => fail("union branch"),
        },
        (Spec::Record(fields), Value::Record(values)) => {
            if fields.len() != values.len() {
                return fail("fields");
            }
            fields
                .iter()
                .zip(values)
                .try_for_each(|(f, (_, v))| honours(f, v, k))
        }
        (Spec::Logical(_), _) => Ok(()),
        (Spec::Decimal(p, _, _, range), Value::Decimal(d)) => {
            let u = unscaled(d);
            if u.unsigned_abs() >= 10u128.pow(*p) {
                return fail("precision");
            }
            match range {
                Some((lo, hi)) => {
                    let scale = match spec {
                        Spec::Decimal(_, s, _, _) => 10i128.pow(*s),
                        _ => 1,
                    };
                    if i128::from(*lo) * scale <= u && u < i128::from(*hi) * scale {
                        Ok(())
                    } else {
                        fail("range")
                    }
                }
                None => Ok(()),
            }
        }
        (Spec::TimestampRange(lo, hi), Value::TimestampMillis(v)) => {
            if (lo..hi).contains(&v) {
                Ok(())
            } else {
                fail("range")
            }
        }
        _ => fail("type"),
    }
}

fn honours_num(num: &Num, v: i64, k: usize, min: i64, max: i64) -> Result<(), String> {
    match num {
        Num::Plain => Ok(()),
        Num::Range(lo, hi)
            if (*lo.max(&min)..*hi.min(&max)).contains(&v) || (lo..hi).contains(&&v) =>
        {
            Ok(())
        }
        Num::Range(..) => Err(format!("range: {v} for {num:?}")),
        Num::Options(o) if o.contains(&v) => Ok(()),
        Num::Options(_) => Err(format!("options: {v} for {num:?}")),
        Num::Iterate(start, restart, step) => {
            let step = step.unwrap_or(match restart {
                Some(r) if r < start => -1,
                _ => 1,
            });
            let raw = i128::from(*start) + i128::from(step) * k as i128;
            let expected = match restart {
                Some(r) if r > start => {
                    i128::from(*start)
                        + (raw - i128::from(*start)).rem_euclid(i128::from(r - start))
                }
                Some(r) => {
                    i128::from(*start)
                        - (i128::from(*start) - raw).rem_euclid(i128::from(start - r))
                }
                None => raw,
            };
            if i128::from(v) == expected {
                Ok(())
            } else {
                Err(format!(
                    "iteration: record {k} gave {v}, expected {expected} for {num:?}"
                ))
            }
        }
    }
}

/// Specs whose values are clipped to their type (int ranges drawn wide).
fn int_range_fits(spec: &Spec) -> bool {
    match spec {
        Spec::Int(Num::Range(lo, hi)) => *lo >= i64::from(i32::MIN) && *hi <= i64::from(i32::MAX),
        Spec::Int(Num::Options(o)) => o.iter().all(|v| i32::try_from(*v).is_ok()),
        Spec::Int(Num::Iterate(start, restart, _)) => {
            i32::try_from(*start).is_ok() && restart.is_none_or(|r| i32::try_from(r).is_ok())
        }
        Spec::Array(s, _) | Spec::Map(s, _, _) | Spec::Optional(s) => int_range_fits(s),
        Spec::Record(fs) | Spec::Union(fs) => fs.iter().all(int_range_fits),
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn generated_records_are_valid_round_trip_and_honour_annotations(
        fields in schema().prop_filter("int values fit int", |f| f.iter().all(int_range_fits)),
        seed in any::<u64>(),
    ) {
        let json = render_schema(&fields);
        let schema = DatagenSchema::from_json(&json, None)
            .map_err(|e| TestCaseError::fail(format!("{e} in {json}")))?;
        let avro = schema.avro_schema();
        let values: Vec<Value> = schema.generator(seed).take(RECORDS).collect();
        for (k, value) in values.iter().enumerate() {
            prop_assert!(value.validate(avro), "invalid {value:?} for {json}");
            let bytes = schema.to_avro_datum(value.clone()).unwrap();
            let back = apache_avro::reader::datum::GenericDatumReader::builder(avro)
                .build()
                .and_then(|r| r.read_value(&mut &bytes[..]))
                .unwrap();
            prop_assert_eq!(&back, value);
            let text = schema.to_json_string(value);
            let parsed: Json = serde_json::from_str(&text).unwrap();
            let from_json = schema.from_json_value(&parsed)
                .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert_eq!(&from_json, value, "JSON {}", text);
            let Value::Record(values) = value else { panic!("a record") };
            for (spec, (_, v)) in fields.iter().zip(values) {
                honours(spec, v, k).map_err(TestCaseError::fail)?;
            }
        }
        let again: Vec<Value> = schema.generator(seed).take(RECORDS).collect();
        prop_assert_eq!(again, values);
    }
}
