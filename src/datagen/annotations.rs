//! `arg.properties`: parsed into typed values, each checked where it stands.
//!
//! Parsing here only checks each annotation's own shape (a `range` is an
//! object of numbers, `odds` a number in [0, 1], ...). Whether an annotation
//! applies to the type it sits on, and whether its numbers fit that type, is
//! checked by the compiler in [`super::plan`], which knows the type.

use serde_json::{Map, Number, Value as Json};

use super::error::{DatagenError, Result};

/// The annotations that ARG defines, as they appear in `arg.properties`.
pub const KNOWN: [&str; 9] = [
    "options",
    "iteration",
    "range",
    "length",
    "regex",
    "prefix",
    "suffix",
    "keys",
    "odds",
];

/// The annotations of one type.
#[derive(Debug, Clone, Default)]
pub(crate) struct Annotations {
    pub options: Option<Options>,
    pub iteration: Option<Iteration>,
    pub range: Option<Range>,
    pub length: Option<Length>,
    pub regex: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub keys: Option<Box<Annotations>>,
    pub odds: Option<f64>,
}

/// `options`: the values inline, or a file to read them from.
#[derive(Debug, Clone)]
pub(crate) enum Options {
    Inline(Vec<Json>),
    File { file: String, binary: bool },
}

/// `iteration`, with the numbers as written (the type decides how to read them).
#[derive(Debug, Clone)]
pub(crate) struct Iteration {
    pub start: Json,
    pub restart: Option<Number>,
    pub step: Option<Number>,
    pub initial: Option<Number>,
}

/// `range`: min inclusive, max exclusive; at least one.
#[derive(Debug, Clone)]
pub(crate) struct Range {
    pub min: Option<Number>,
    pub max: Option<Number>,
}

/// `length`: exact, or min inclusive / max exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    Exact(usize),
    Between { min: usize, max: usize },
}

impl Annotations {
    /// True when no annotation is set.
    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }

    /// The names of the annotations that are set, in [`KNOWN`] order.
    pub fn names(&self) -> Vec<&'static str> {
        let set = [
            self.options.is_some(),
            self.iteration.is_some(),
            self.range.is_some(),
            self.length.is_some(),
            self.regex.is_some(),
            self.prefix.is_some(),
            self.suffix.is_some(),
            self.keys.is_some(),
            self.odds.is_some(),
        ];
        KNOWN
            .iter()
            .zip(set)
            .filter_map(|(name, set)| set.then_some(*name))
            .collect()
    }

    /// Fails naming the first annotation that is set but not in `allowed`.
    pub fn only(&self, allowed: &[&str], type_name: &str, path: &str) -> Result<()> {
        match self.names().into_iter().find(|n| !allowed.contains(n)) {
            Some(name) => Err(DatagenError::at(
                path,
                format!(
                    "annotation `{name}` does not apply to {type_name} (it takes: {})",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            )),
            None => Ok(()),
        }
    }

    /// Parses an `arg.properties` object.
    pub fn parse(json: &Json, path: &str) -> Result<Self> {
        let Json::Object(map) = json else {
            return Err(DatagenError::at(
                path,
                format!("arg.properties must be an object, found {}", kind_of(json)),
            ));
        };
        let mut out = Self::default();
        for (key, value) in map {
            match key.as_str() {
                "options" => out.options = Some(parse_options(value, path)?),
                "iteration" => out.iteration = Some(parse_iteration(value, path)?),
                "range" => out.range = Some(parse_range(value, path)?),
                "length" => out.length = Some(parse_length(value, path)?),
                "regex" => out.regex = Some(string(value, "regex", path)?),
                "prefix" => out.prefix = Some(string(value, "prefix", path)?),
                "suffix" => out.suffix = Some(string(value, "suffix", path)?),
                "keys" => out.keys = Some(Box::new(Self::parse(value, path)?)),
                "odds" => {
                    let odds = value.as_f64().filter(|o| (0.0..=1.0).contains(o));
                    out.odds = Some(odds.ok_or_else(|| {
                        DatagenError::at(
                            path,
                            format!("odds must be a number in [0, 1], found {value}"),
                        )
                    })?);
                }
                other => {
                    return Err(DatagenError::at(
                        path,
                        format!("unknown annotation `{other}` (known: {})", KNOWN.join(", ")),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// `"a string"` → "a string", for messages.
pub(crate) fn kind_of(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn string(value: &Json, name: &str, path: &str) -> Result<String> {
    value.as_str().map(str::to_owned).ok_or_else(|| {
        DatagenError::at(
            path,
            format!("{name} must be a string, found {}", kind_of(value)),
        )
    })
}

fn object<'a>(value: &'a Json, name: &str, path: &str) -> Result<&'a Map<String, Json>> {
    value.as_object().ok_or_else(|| {
        DatagenError::at(
            path,
            format!("{name} must be an object, found {}", kind_of(value)),
        )
    })
}

fn only_keys(map: &Map<String, Json>, allowed: &[&str], name: &str, path: &str) -> Result<()> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(DatagenError::at(
            path,
            format!(
                "unknown key `{key}` in {name} (known: {})",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn number(map: &Map<String, Json>, key: &str, name: &str, path: &str) -> Result<Option<Number>> {
    match map.get(key) {
        None => Ok(None),
        Some(Json::Number(n)) => Ok(Some(n.clone())),
        Some(other) => Err(DatagenError::at(
            path,
            format!("{name}.{key} must be a number, found {}", kind_of(other)),
        )),
    }
}

fn parse_options(value: &Json, path: &str) -> Result<Options> {
    match value {
        Json::Array(values) if values.is_empty() => {
            Err(DatagenError::at(path, "options must not be empty"))
        }
        Json::Array(values) => Ok(Options::Inline(values.clone())),
        Json::Object(map) => {
            only_keys(map, &["file", "encoding"], "options", path)?;
            let file = string(map.get("file").unwrap_or(&Json::Null), "options.file", path)?;
            let binary = match map.get("encoding").map(|e| e.as_str()) {
                None | Some(Some("json")) => false,
                Some(Some("binary")) => true,
                Some(_) => {
                    return Err(DatagenError::at(
                        path,
                        "options.encoding must be \"json\" or \"binary\"",
                    ));
                }
            };
            Ok(Options::File { file, binary })
        }
        other => Err(DatagenError::at(
            path,
            format!(
                "options must be an array or {{\"file\": ...}}, found {}",
                kind_of(other)
            ),
        )),
    }
}

fn parse_iteration(value: &Json, path: &str) -> Result<Iteration> {
    let map = object(value, "iteration", path)?;
    only_keys(
        map,
        &["start", "restart", "step", "initial"],
        "iteration",
        path,
    )?;
    let start = match map.get("start") {
        Some(start @ (Json::Number(_) | Json::Bool(_))) => start.clone(),
        Some(other) => {
            return Err(DatagenError::at(
                path,
                format!(
                    "iteration.start must be a number or boolean, found {}",
                    kind_of(other)
                ),
            ));
        }
        None => return Err(DatagenError::at(path, "iteration needs a start")),
    };
    Ok(Iteration {
        start,
        restart: number(map, "restart", "iteration", path)?,
        step: number(map, "step", "iteration", path)?,
        initial: number(map, "initial", "iteration", path)?,
    })
}

fn parse_range(value: &Json, path: &str) -> Result<Range> {
    let map = object(value, "range", path)?;
    only_keys(map, &["min", "max"], "range", path)?;
    let range = Range {
        min: number(map, "min", "range", path)?,
        max: number(map, "max", "range", path)?,
    };
    if range.min.is_none() && range.max.is_none() {
        return Err(DatagenError::at(path, "range needs a min or a max"));
    }
    Ok(range)
}

/// The longest string, bytes, array or map a `length` may ask for.
pub const MAX_LENGTH: usize = 1 << 20;

fn length_number(value: &Json, name: &str, path: &str) -> Result<usize> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= MAX_LENGTH)
        .ok_or_else(|| {
            DatagenError::at(
                path,
                format!("{name} must be a whole number in [0, {MAX_LENGTH}], found {value}"),
            )
        })
}

fn parse_length(value: &Json, path: &str) -> Result<Length> {
    match value {
        Json::Number(_) => Ok(Length::Exact(length_number(value, "length", path)?)),
        Json::Object(map) => {
            only_keys(map, &["min", "max"], "length", path)?;
            let min = match map.get("min") {
                Some(v) => length_number(v, "length.min", path)?,
                None => 0,
            };
            let max = match map.get("max") {
                Some(v) => length_number(v, "length.max", path)?,
                None => {
                    return Err(DatagenError::at(path, "length needs a max"));
                }
            };
            if min >= max {
                return Err(DatagenError::at(
                    path,
                    format!("length.min ≥ max ({min} ≥ {max}; max is exclusive)"),
                ));
            }
            Ok(Length::Between { min, max })
        }
        other => Err(DatagenError::at(
            path,
            format!(
                "length must be a number or {{\"min\", \"max\"}}, found {}",
                kind_of(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(json: Json) -> String {
        Annotations::parse(&json, "orders.ordertime")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_annotations_and_keys_are_named() {
        assert_eq!(
            err(json!({"rnage": {"min": 1}})),
            "unknown annotation `rnage` (known: options, iteration, range, length, regex, \
             prefix, suffix, keys, odds) at orders.ordertime"
        );
        assert!(err(json!({"range": {"min": 1, "mx": 2}})).contains("unknown key `mx` in range"));
    }

    #[test]
    fn shapes_are_checked() {
        assert!(err(json!({"odds": 1.5})).contains("odds must be a number in [0, 1]"));
        assert!(err(json!({"options": []})).contains("options must not be empty"));
        assert!(err(json!({"length": {"min": 5, "max": 5}})).contains("length.min ≥ max"));
        assert!(err(json!({"range": {}})).contains("range needs a min or a max"));
        assert!(err(json!({"iteration": {"step": 1}})).contains("iteration needs a start"));
        assert!(err(json!({"regex": 3})).contains("regex must be a string"));
        assert!(err(json!({"length": u64::MAX})).contains("length must be a whole number in"));
        assert!(err(json!("x")).contains("arg.properties must be an object"));
    }

    #[test]
    fn every_annotation_parses() {
        let a = Annotations::parse(
            &json!({"options": {"file": "f.json"}, "length": 3, "keys": {"regex": "[a-z]"}, "odds": 0.2}),
            "p",
        )
        .unwrap();
        assert_eq!(a.names(), ["options", "length", "keys", "odds"]);
        assert_eq!(a.length, Some(Length::Exact(3)));
    }
}
