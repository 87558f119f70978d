//! JSON both ways: `options` written as JSON into Avro values, and generated
//! values out as Kafka Connect's JSON converter writes them without schemas.
//!
//! The JSON form of each type:
//!
//! | Avro | JSON |
//! | --- | --- |
//! | record | object, fields in schema order |
//! | map | object, keys sorted |
//! | enum, string, uuid | string |
//! | int, long, date, time, timestamp | number (days, ms or µs as in Avro) |
//! | float, double | number |
//! | decimal, big-decimal | number in the decimal's units (e.g. `12.5`) |
//! | bytes, fixed | base64 string (as Connect writes byte arrays) |
//! | duration | `{"months": m, "days": d, "millis": ms}` |
//! | union of null and one type | the value, or `null` |
//! | other unions | `{"branch": value}`, the branch named as in Avro's JSON encoding |
//!
//! `options` take the same forms, except that bytes and fixed are written
//! as Avro's JSON encoding writes them (a string whose characters are the
//! bytes, U+0000..U+00FF), and a union option may be the bare value of any
//! branch.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::{Decimal, Duration};
use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value as Json;

use super::annotations::kind_of;
use super::plan::{Kind, NodeId, Plan};

type Decoded = std::result::Result<Value, String>;

/// Which JSON form is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `options`: bytes as Latin-1 strings, union values bare or wrapped.
    Options,
    /// The generator's own JSON form: bytes as base64, unions as written.
    Connect,
}

/// An `options` value (JSON) as the Avro value of node `id`.
pub(crate) fn decode(plan: &Plan, id: NodeId, json: &Json) -> Decoded {
    decode_form(plan, id, json, Form::Options)
}

/// A JSON value of either form as the Avro value of node `id`.
pub(crate) fn decode_form(plan: &Plan, id: NodeId, json: &Json, form: Form) -> Decoded {
    let decode = |plan: &Plan, id: NodeId, json: &Json| decode_form(plan, id, json, form);
    let bytes_of = |s: &str| match form {
        Form::Options => latin1(s),
        Form::Connect => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("not base64: {e}")),
    };
    let node = &plan.nodes[id];
    let wrong = |expected: &str| format!("expected {expected}, found {}", kind_of(json));
    match (&node.kind, json) {
        (Kind::Null, Json::Null) => Ok(Value::Null),
        (Kind::Null, _) => Err(wrong("null")),
        (Kind::Boolean(_), Json::Bool(b)) => Ok(Value::Boolean(*b)),
        (Kind::Boolean(_), _) => Err(wrong("a boolean")),
        (Kind::Integer { ty, .. }, Json::Number(n)) => {
            let v = n
                .as_i64()
                .map(i128::from)
                .ok_or_else(|| format!("expected a whole number, found {n}"))?;
            let (lo, hi) = ty.bounds();
            if v < lo || v >= hi {
                return Err(format!("{v} is out of the type's range"));
            }
            Ok(ty.value(v))
        }
        (Kind::Integer { .. }, _) => Err(wrong("a number")),
        (Kind::Floating { double, .. }, Json::Number(n)) => {
            let v = n.as_f64().ok_or_else(|| wrong("a number"))?;
            Ok(if *double {
                Value::Double(v)
            } else {
                Value::Float(v as f32)
            })
        }
        (Kind::Floating { .. }, _) => Err(wrong("a number")),
        (Kind::Bytes(_), Json::String(s)) => Ok(Value::Bytes(bytes_of(s)?)),
        (Kind::Bytes(_), _) => Err(wrong("a string of bytes")),
        (Kind::String(_), Json::String(s)) => Ok(Value::String(s.clone())),
        (Kind::String(_), _) => Err(wrong("a string")),
        (Kind::Uuid, Json::String(s)) => apache_avro::Uuid::parse_str(s)
            .map(Value::Uuid)
            .map_err(|e| format!("{s:?} is not a UUID: {e}")),
        (Kind::Uuid, _) => Err(wrong("a UUID string")),
        (Kind::Array { items, .. }, Json::Array(values)) => values
            .iter()
            .map(|v| decode(plan, *items, v))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Kind::Array { .. }, _) => Err(wrong("an array")),
        (Kind::Map { values, .. }, Json::Object(map)) => map
            .iter()
            .map(|(k, v)| decode(plan, *values, v).map(|v| (k.clone(), v)))
            .collect::<Result<HashMap<_, _>, _>>()
            .map(Value::Map),
        (Kind::Map { .. }, _) => Err(wrong("an object")),
        (Kind::Record { fields }, Json::Object(map)) => {
            if let Some(extra) = map.keys().find(|k| !fields.iter().any(|(f, _)| f == *k)) {
                return Err(format!("the record has no field {extra:?}"));
            }
            fields
                .iter()
                .map(|(name, field)| {
                    let value = map
                        .get(name)
                        .ok_or_else(|| format!("missing field {name:?}"))?;
                    decode(plan, *field, value)
                        .map(|v| (name.clone(), v))
                        .map_err(|e| format!("{name}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Record)
        }
        (Kind::Record { .. }, _) => Err(wrong("an object")),
        (Kind::Enum { symbols }, Json::String(s)) => symbols
            .iter()
            .position(|sym| sym == s)
            .map(|i| Value::Enum(i as u32, s.clone()))
            .ok_or_else(|| format!("{s:?} is not a symbol of the enum")),
        (Kind::Enum { .. }, _) => Err(wrong("an enum symbol")),
        (Kind::Fixed { size }, Json::String(s)) => {
            let bytes = bytes_of(s)?;
            if bytes.len() != *size {
                return Err(format!("expected {size} bytes, found {}", bytes.len()));
            }
            Ok(Value::Fixed(*size, bytes))
        }
        (Kind::Fixed { .. }, _) => Err(wrong("a string of bytes")),
        (Kind::Union { branches, names }, json) => {
            let optional = branches.len() == 2 && names.iter().any(|n| n == "null");
            if let (Json::Object(map), false) = (json, form == Form::Connect && optional)
                && map.len() == 1
                && let Some((key, inner)) = map.iter().next()
                && let Some(i) = names.iter().position(|n| n == key)
            {
                return decode(plan, branches[i], inner)
                    .map(|v| Value::Union(i as u32, Box::new(v)));
            }
            branches
                .iter()
                .enumerate()
                .find_map(|(i, b)| {
                    decode(plan, *b, json)
                        .ok()
                        .map(|v| Value::Union(i as u32, Box::new(v)))
                })
                .ok_or_else(|| format!("{json} fits no branch of the union"))
        }
        (
            Kind::Decimal {
                scale,
                fixed,
                limit,
                ..
            },
            Json::Number(n),
        ) => {
            let text = n.to_string();
            let unscaled = super::plan::parse_decimal_ceil(&text, *scale)
                .ok_or_else(|| format!("{text} is not a decimal"))?;
            if super::plan::parse_decimal_ceil(&format!("-{text}"), *scale) != Some(-unscaled)
                && !text.starts_with('-')
            {
                return Err(format!("{text} has more than {scale} decimal places"));
            }
            if unscaled.abs() >= *limit {
                return Err(format!("{text} has more digits than the decimal holds"));
            }
            Ok(decimal_value(unscaled, *fixed))
        }
        (Kind::Decimal { .. }, _) => Err(wrong("a number")),
        (Kind::BigDecimal, Json::Number(n)) => n
            .to_string()
            .parse::<apache_avro::BigDecimal>()
            .map(Value::BigDecimal)
            .map_err(|e| e.to_string()),
        (Kind::BigDecimal, _) => Err(wrong("a number")),
        (Kind::Duration, Json::Object(map)) => {
            let part = |k: &str| {
                map.get(k)
                    .and_then(Json::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| format!("duration needs {k} as a whole number"))
            };
            Ok(Value::Duration(Duration::new(
                apache_avro::Months::new(part("months")?),
                apache_avro::Days::new(part("days")?),
                apache_avro::Millis::new(part("millis")?),
            )))
        }
        (Kind::Duration, _) => Err(wrong("{\"months\", \"days\", \"millis\"}")),
        (Kind::Ref(target), json) => decode(plan, *target, json),
        (Kind::Pending, _) => Err("the type is not complete".into()),
    }
}

/// Characters U+0000..U+00FF as bytes (Avro's JSON encoding of bytes).
fn latin1(s: &str) -> std::result::Result<Vec<u8>, String> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| format!("{c:?} is not a byte")))
        .collect()
}

/// An unscaled decimal as Avro's big-endian two's complement bytes.
pub(crate) fn decimal_value(unscaled: i128, fixed: Option<usize>) -> Value {
    let bytes = unscaled.to_be_bytes();
    let negative = unscaled < 0;
    let pad = if negative { 0xff } else { 0x00 };
    let mut start = 0;
    while start < bytes.len() - 1
        && bytes[start] == pad
        && (bytes[start + 1] & 0x80 != 0) == negative
    {
        start += 1;
    }
    let _ = fixed; // apache-avro sign-extends to a fixed's size when it encodes.
    Value::Decimal(Decimal::from(bytes[start..].to_vec()))
}

/// The unscaled integer of a decimal, if it fits an i128.
pub(crate) fn decimal_unscaled(decimal: &Decimal) -> Option<i128> {
    let bytes: Vec<u8> = Vec::try_from(decimal).ok()?;
    if bytes.is_empty() {
        return Some(0);
    }
    if bytes.len() > 16 {
        return None;
    }
    let pad = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut full = [pad; 16];
    full[16 - bytes.len()..].copy_from_slice(&bytes);
    Some(i128::from_be_bytes(full))
}

/// `unscaled × 10^-scale` as text.
pub(crate) fn decimal_text(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{frac}")
}

/// A generated value in the JSON form, serialised in schema order.
pub(crate) struct Connect<'a> {
    pub plan: &'a Plan,
    pub id: NodeId,
    pub value: &'a Value,
}

impl Serialize for Connect<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let plan = self.plan;
        let node = &plan.nodes[self.id];
        let at = |id, value| Connect { plan, id, value };
        match (&node.kind, self.value) {
            (Kind::Ref(target), v) => at(*target, v).serialize(s),
            (_, Value::Null) => s.serialize_unit(),
            (_, Value::Boolean(b)) => s.serialize_bool(*b),
            (_, Value::Int(v) | Value::Date(v) | Value::TimeMillis(v)) => s.serialize_i32(*v),
            (
                _,
                Value::Long(v)
                | Value::TimeMicros(v)
                | Value::TimestampMillis(v)
                | Value::TimestampMicros(v)
                | Value::TimestampNanos(v)
                | Value::LocalTimestampMillis(v)
                | Value::LocalTimestampMicros(v)
                | Value::LocalTimestampNanos(v),
            ) => s.serialize_i64(*v),
            (_, Value::Float(v)) => s.serialize_f32(*v),
            (_, Value::Double(v)) => s.serialize_f64(*v),
            (_, Value::Bytes(b) | Value::Fixed(_, b)) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            (_, Value::String(v) | Value::Enum(_, v)) => s.serialize_str(v),
            (_, Value::Uuid(u)) => s.collect_str(u),
            (Kind::Array { items, .. }, Value::Array(values)) => {
                let mut seq = s.serialize_seq(Some(values.len()))?;
                for v in values {
                    seq.serialize_element(&at(*items, v))?;
                }
                seq.end()
            }
            (Kind::Map { values, .. }, Value::Map(entries)) => {
                let mut keys: Vec<&String> = entries.keys().collect();
                keys.sort();
                let mut map = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    map.serialize_entry(k, &at(*values, &entries[k]))?;
                }
                map.end()
            }
            (Kind::Record { fields }, Value::Record(values)) => {
                let mut map = s.serialize_map(Some(values.len()))?;
                for ((name, value), (_, field)) in values.iter().zip(fields) {
                    map.serialize_entry(name, &at(*field, value))?;
                }
                map.end()
            }
            (Kind::Union { branches, names }, Value::Union(i, v)) => {
                let i = *i as usize;
                let (Some(branch), Some(name)) = (branches.get(i), names.get(i)) else {
                    return s.serialize_unit();
                };
                let optional = branches.len() == 2 && names.iter().any(|n| n == "null");
                if optional || matches!(**v, Value::Null) {
                    at(*branch, v).serialize(s)
                } else {
                    let mut map = s.serialize_map(Some(1))?;
                    map.serialize_entry(name, &at(*branch, v))?;
                    map.end()
                }
            }
            (Kind::Decimal { scale, .. }, Value::Decimal(d)) => match decimal_unscaled(d) {
                Some(unscaled) => {
                    let text = decimal_text(unscaled, *scale);
                    s.serialize_f64(text.parse().unwrap_or(0.0))
                }
                None => s.serialize_unit(),
            },
            (_, Value::BigDecimal(d)) => s.serialize_f64(d.to_string().parse().unwrap_or(0.0)),
            (_, Value::Duration(d)) => {
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry("months", &u32::from(d.months()))?;
                map.serialize_entry("days", &u32::from(d.days()))?;
                map.serialize_entry("millis", &u32::from(d.millis()))?;
                map.end()
            }
            // A value that does not fit its node: not made by the generator.
            _ => s.serialize_unit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_through_bytes_and_text() {
        for (unscaled, scale, text) in [
            (0, 2, "0.00"),
            (1234, 2, "12.34"),
            (-5, 3, "-0.005"),
            (127, 0, "127"),
            (128, 0, "128"),
            (-128, 0, "-128"),
            (-129, 1, "-12.9"),
        ] {
            let Value::Decimal(d) = decimal_value(unscaled, None) else {
                panic!()
            };
            assert_eq!(decimal_unscaled(&d), Some(unscaled));
            assert_eq!(decimal_text(unscaled, scale), text);
        }
    }
}
