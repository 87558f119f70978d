//! The compiled schema: one node per type, every annotation checked against
//! the type it sits on and turned into what the generator draws from.
//!
//! The walk goes down apache-avro's parsed [`Schema`] (which settles names,
//! namespaces and logical types) and the schema's JSON side by side (which
//! holds `arg.properties`, dropped by the parser on most types).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, UuidSchema};
use apache_avro::types::Value;
use serde_json::{Number, Value as Json};

use super::annotations::{Annotations, Iteration, Length, Options, Range};
use super::error::{DatagenError, Result};
use super::fake_table::{Fake, RECENT_FROM_MS, RECENT_TO_MS, Slot};
use super::json;

/// Index of a node in [`Plan::nodes`].
pub(crate) type NodeId = usize;

/// Nesting (records, arrays, maps) past which generation takes the shortest
/// way out of recursive types: unions their least nested branch, arrays and
/// maps their least length (their `length` minimum, else none).
pub const MAX_DEPTH: u32 = 16;

/// Values one record may hold before the rest of it takes the shortest way
/// out too (recursive arrays would otherwise grow exponentially with depth).
pub const MAX_VALUES: u32 = 10_000;

/// Length of strings, bytes, arrays and maps without a `length`: ARG's.
pub(crate) const DEFAULT_LENGTH: LenRange = LenRange { min: 8, max: 16 };

/// Nodes have no height (no finite value) until shown otherwise.
pub(crate) const UNBOUNDED: u32 = u32::MAX;

/// The compiled schema.
#[derive(Debug)]
pub(crate) struct Plan {
    pub nodes: Vec<Node>,
    pub root: NodeId,
    /// How many `iteration` annotations (each keeps a cursor per generator).
    pub iterations: usize,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub path: String,
    /// Values from `options`, already in Avro form.
    pub options: Option<Vec<Value>>,
    pub kind: Kind,
    /// Least nesting a value of this node needs; [`UNBOUNDED`] if none is finite.
    pub height: u32,
    raw_options: Option<(Options, Schema)>,
}

/// Integer-backed types: which Avro value they make and their bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntType {
    Int,
    Long,
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    LocalTimestampMillis,
    LocalTimestampMicros,
    LocalTimestampNanos,
}

impl IntType {
    /// The values of the type: [lo, hi).
    pub fn bounds(self) -> (i128, i128) {
        match self {
            Self::Int | Self::Date => (i32::MIN as i128, i32::MAX as i128 + 1),
            Self::TimeMillis => (0, 86_400_000),
            Self::TimeMicros => (0, 86_400_000_000),
            _ => (i64::MIN as i128, i64::MAX as i128 + 1),
        }
    }

    /// ARG's default (the whole type) or, for dates and times, a recent window.
    fn default_range(self) -> (i128, i128) {
        let (from, to) = (RECENT_FROM_MS as i128, RECENT_TO_MS as i128);
        match self {
            Self::Date => (from / 86_400_000, to / 86_400_000),
            Self::TimestampMillis | Self::LocalTimestampMillis => (from, to),
            Self::TimestampMicros | Self::LocalTimestampMicros => (from * 1000, to * 1000),
            Self::TimestampNanos | Self::LocalTimestampNanos => (from * 1_000_000, to * 1_000_000),
            _ => self.bounds(),
        }
    }

    pub fn value(self, v: i128) -> Value {
        // `v` is always within `bounds()`: the casts are exact.
        let long = v as i64;
        match self {
            Self::Int => Value::Int(v as i32),
            Self::Long => Value::Long(long),
            Self::Date => Value::Date(v as i32),
            Self::TimeMillis => Value::TimeMillis(v as i32),
            Self::TimeMicros => Value::TimeMicros(long),
            Self::TimestampMillis => Value::TimestampMillis(long),
            Self::TimestampMicros => Value::TimestampMicros(long),
            Self::TimestampNanos => Value::TimestampNanos(long),
            Self::LocalTimestampMillis => Value::LocalTimestampMillis(long),
            Self::LocalTimestampMicros => Value::LocalTimestampMicros(long),
            Self::LocalTimestampNanos => Value::LocalTimestampNanos(long),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Long => "long",
            Self::Date => "date",
            Self::TimeMillis => "time-millis",
            Self::TimeMicros => "time-micros",
            Self::TimestampMillis => "timestamp-millis",
            Self::TimestampMicros => "timestamp-micros",
            Self::TimestampNanos => "timestamp-nanos",
            Self::LocalTimestampMillis => "local-timestamp-millis",
            Self::LocalTimestampMicros => "local-timestamp-micros",
            Self::LocalTimestampNanos => "local-timestamp-nanos",
        }
    }
}

/// `[min, max)` lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LenRange {
    pub min: usize,
    pub max: usize,
}

impl From<Length> for LenRange {
    fn from(length: Length) -> Self {
        match length {
            Length::Exact(n) => Self { min: n, max: n + 1 },
            Length::Between { min, max } => Self { min, max },
        }
    }
}

#[derive(Debug)]
pub(crate) enum IntGen {
    Range(i128, i128),
    Iterate(IntIteration),
    Fake(Fake),
}

/// An integer `iteration`, in the type's units.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntIteration {
    pub slot: usize,
    pub start: i128,
    pub restart: Option<i128>,
    pub step: i128,
    pub initial: i128,
    pub bounds: (i128, i128),
}

impl IntIteration {
    /// The value after `current`.
    pub fn advance(&self, current: i128) -> i128 {
        let next = current + self.step;
        match self.restart {
            Some(restart) if restart > self.start => {
                self.start + (next - self.start).rem_euclid(restart - self.start)
            }
            Some(restart) => self.start - (self.start - next).rem_euclid(self.start - restart),
            // No restart: wraps around the type, as a fixed-width integer does.
            None => {
                let (lo, hi) = self.bounds;
                lo + (next - lo).rem_euclid(hi - lo)
            }
        }
    }
}

#[derive(Debug)]
pub(crate) enum FloatGen {
    Range(f64, f64),
    Iterate(FloatIteration),
    Fake(Fake),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FloatIteration {
    pub slot: usize,
    pub start: f64,
    pub restart: Option<f64>,
    pub step: f64,
    pub initial: f64,
}

impl FloatIteration {
    pub fn advance(&self, current: f64) -> f64 {
        let next = current + self.step;
        match self.restart {
            Some(restart) if restart > self.start => {
                self.start + (next - self.start).rem_euclid(restart - self.start)
            }
            Some(restart) => self.start - (self.start - next).rem_euclid(self.start - restart),
            None => next,
        }
    }
}

#[derive(Debug)]
pub(crate) enum BoolGen {
    Odds(f64),
    Iterate { slot: usize, start: bool },
}

/// Strings: a core, then prefix and suffix around it.
#[derive(Debug)]
pub(crate) struct StringGen {
    pub core: StringCore,
    pub prefix: String,
    pub suffix: String,
}

#[derive(Debug)]
pub(crate) enum StringCore {
    /// Random alphanumeric characters.
    Plain(LenRange),
    /// Matches the regex, with a length in `min..max` characters.
    Regex {
        regex: Box<rand_regex::Regex>,
        min: usize,
        max: Option<usize>,
        /// A sample that fits, for when repeated draws do not.
        fallback: String,
    },
    Fake(Fake),
}

#[derive(Debug)]
pub(crate) enum Kind {
    Null,
    Boolean(BoolGen),
    Integer {
        ty: IntType,
        generator: IntGen,
    },
    Floating {
        double: bool,
        generator: FloatGen,
    },
    Bytes(LenRange),
    String(StringGen),
    Uuid,
    /// `least`: the fewest items allowed (the annotation's minimum; 0
    /// without an annotation, whose default length recursion may cut short).
    Array {
        items: NodeId,
        len: LenRange,
        least: usize,
    },
    Map {
        values: NodeId,
        keys: StringGen,
        len: LenRange,
        least: usize,
    },
    Record {
        fields: Vec<(String, NodeId)>,
    },
    Enum {
        symbols: Vec<String>,
    },
    Fixed {
        size: usize,
    },
    Union {
        branches: Vec<NodeId>,
        names: Vec<String>,
    },
    Decimal {
        lo: i128,
        hi: i128,
        scale: u32,
        fixed: Option<usize>,
        limit: i128,
    },
    BigDecimal,
    Duration,
    /// A named type used again (a reference with annotations of its own).
    Ref(NodeId),
    /// Being compiled (a recursive reference to it may be seen meanwhile).
    Pending,
}

impl Plan {
    /// Compiles a parsed schema with its JSON. `base_dir` is where options
    /// files are looked for when the working directory does not have them.
    pub fn compile(schema: &Schema, json: &Json, base_dir: Option<&Path>) -> Result<Self> {
        let root_path = schema
            .name()
            .map(|n| n.name().to_owned())
            .unwrap_or_else(|| "<root>".to_owned());
        let mut compiler = Compiler {
            nodes: Vec::new(),
            names: HashMap::new(),
            iterations: 0,
        };
        let root = compiler.node(schema, json, root_path, None)?;
        let mut plan = Plan {
            nodes: compiler.nodes,
            root,
            iterations: compiler.iterations,
        };
        plan.resolve_options(schema, base_dir)?;
        plan.compute_heights();
        if plan.nodes[root].height == UNBOUNDED {
            return Err(DatagenError::at(
                &plan.nodes[root].path,
                "the schema has no finite value (a recursive type with no way out: \
                 no union branch, empty array or map ends it)",
            ));
        }
        Ok(plan)
    }

    /// Reads every `options` into Avro values, now that every node exists.
    fn resolve_options(&mut self, schema: &Schema, base_dir: Option<&Path>) -> Result<()> {
        for id in 0..self.nodes.len() {
            let Some((options, type_schema)) = self.nodes[id].raw_options.take() else {
                continue;
            };
            let path = self.nodes[id].path.clone();
            let jsons = match options {
                Options::Inline(values) => values
                    .into_iter()
                    .map(|v| json::decode(self, id, &v))
                    .collect::<Vec<_>>(),
                Options::File { file, binary } => {
                    let bytes = read_options_file(&file, base_dir, &path)?;
                    if binary {
                        let values = decode_binary_options(schema, &type_schema, &bytes).map_err(
                            |problem| DatagenError::OptionsFile {
                                path: path.clone(),
                                file: file.clone(),
                                problem,
                            },
                        )?;
                        values.into_iter().map(Ok).collect::<Vec<_>>()
                    } else {
                        let mut values = Vec::new();
                        for value in
                            serde_json::Deserializer::from_slice(&bytes).into_iter::<Json>()
                        {
                            let value = value.map_err(|e| DatagenError::OptionsFile {
                                path: path.clone(),
                                file: file.clone(),
                                problem: format!("not JSON values one after another: {e}"),
                            })?;
                            values.push(json::decode(self, id, &value));
                        }
                        values
                    }
                }
            };
            let mut values = Vec::with_capacity(jsons.len());
            for (index, value) in jsons.into_iter().enumerate() {
                values.push(value.map_err(|problem| {
                    DatagenError::at(&path, format!("options[{index}]: {problem}"))
                })?);
            }
            if values.is_empty() {
                return Err(DatagenError::at(&path, "options must not be empty"));
            }
            self.nodes[id].options = Some(values);
        }
        Ok(())
    }

    /// Least nesting per node, by fixed point (recursive types refer back).
    fn compute_heights(&mut self) {
        loop {
            let mut changed = false;
            for id in 0..self.nodes.len() {
                let height = self.height_of(id);
                if height < self.nodes[id].height {
                    self.nodes[id].height = height;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn height_of(&self, id: NodeId) -> u32 {
        let node = &self.nodes[id];
        if node.options.is_some() {
            return 0;
        }
        let h = |id: NodeId| self.nodes[id].height;
        let up = |h: u32| if h == UNBOUNDED { UNBOUNDED } else { h + 1 };
        match &node.kind {
            Kind::Record { fields } => up(fields.iter().map(|(_, f)| h(*f)).max().unwrap_or(0)),
            Kind::Union { branches, .. } => {
                up(branches.iter().map(|b| h(*b)).min().unwrap_or(UNBOUNDED))
            }
            Kind::Array {
                items: inner,
                least,
                ..
            }
            | Kind::Map {
                values: inner,
                least,
                ..
            } => {
                if *least == 0 {
                    0
                } else {
                    up(h(*inner))
                }
            }
            Kind::Ref(target) => h(*target),
            Kind::Pending => UNBOUNDED,
            _ => 0,
        }
    }
}

/// Reads an options file as ARG does: from the working directory, and
/// else beside the schema file.
fn read_options_file(file: &str, base_dir: Option<&Path>, path: &str) -> Result<Vec<u8>> {
    let direct = PathBuf::from(file);
    let candidates = std::iter::once(direct.clone()).chain(
        base_dir
            .filter(|_| direct.is_relative())
            .map(|d| d.join(file)),
    );
    let mut tried = Vec::new();
    for candidate in candidates {
        match std::fs::read(&candidate) {
            Ok(bytes) => return Ok(bytes),
            Err(e) => tried.push(format!("{}: {e}", candidate.display())),
        }
    }
    Err(DatagenError::OptionsFile {
        path: path.to_owned(),
        file: file.to_owned(),
        problem: format!("cannot read it ({})", tried.join("; ")),
    })
}

/// Avro binary values one after another, of the type at hand.
fn decode_binary_options(
    root: &Schema,
    writer: &Schema,
    bytes: &[u8],
) -> std::result::Result<Vec<Value>, String> {
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .writer_schemata(vec![root])
        .and_then(|builder| builder.build())
        .map_err(|e| format!("cannot read the type: {e}"))?;
    let mut rest = bytes;
    let mut values = Vec::new();
    while !rest.is_empty() {
        let value = reader
            .read_value(&mut rest)
            .map_err(|e| format!("not Avro binary values of the type: {e}"))?;
        values.push(value);
    }
    Ok(values)
}

struct Compiler {
    nodes: Vec<Node>,
    names: HashMap<String, NodeId>,
    iterations: usize,
}

/// The annotations of a type's JSON, and the JSON that holds its structure
/// (`{"type": {...}}` nests the structure one level down).
fn split_json<'j>(json: &'j Json, path: &str) -> Result<(Annotations, &'j Json)> {
    let Json::Object(map) = json else {
        return Ok((Annotations::default(), json));
    };
    let own = match map.get("arg.properties") {
        Some(props) => Some(Annotations::parse(props, path)?),
        None => None,
    };
    if let (false, Some(inner @ (Json::Object(_) | Json::Array(_)))) =
        (map.contains_key("logicalType"), map.get("type"))
    {
        let (inner_annotations, structure) = split_json(inner, path)?;
        return Ok((own.unwrap_or(inner_annotations), structure));
    }
    Ok((own.unwrap_or_default(), json))
}

fn integer_of(n: &Number, name: &str, ty: IntType, path: &str) -> Result<i128> {
    let value = n
        .as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        .ok_or_else(|| {
            DatagenError::at(
                path,
                format!("{name} must be a whole number for {}, found {n}", ty.name()),
            )
        })?;
    Ok(value)
}

impl Compiler {
    fn push(&mut self, path: String, kind: Kind) -> NodeId {
        self.nodes.push(Node {
            path,
            options: None,
            kind,
            height: UNBOUNDED,
            raw_options: None,
        });
        self.nodes.len() - 1
    }

    fn slot(&mut self) -> usize {
        self.iterations += 1;
        self.iterations - 1
    }

    /// Compiles one type. `field` is the name of the field it is the type
    /// of, for the `fake` table.
    fn node(
        &mut self,
        schema: &Schema,
        json: &Json,
        path: String,
        field: Option<&str>,
    ) -> Result<NodeId> {
        let (annotations, structure) = split_json(json, &path)?;
        let id = self.push(path.clone(), Kind::Pending);
        if let Some(options) = &annotations.options {
            let others: Vec<_> = annotations
                .names()
                .into_iter()
                .filter(|n| *n != "options")
                .collect();
            if let Some(other) = others.first() {
                return Err(DatagenError::at(
                    &path,
                    format!("options cannot be combined with `{other}`"),
                ));
            }
            self.nodes[id].raw_options = Some((options.clone(), schema.clone()));
        }
        if annotations.iteration.is_some() {
            for other in ["range", "odds"] {
                if annotations.names().contains(&other) {
                    return Err(DatagenError::at(
                        &path,
                        format!("iteration cannot be combined with `{other}`"),
                    ));
                }
            }
        }
        let a = &annotations;
        let kind = match schema {
            Schema::Null => {
                a.only(&["options"], "null", &path)?;
                Kind::Null
            }
            Schema::Boolean => {
                a.only(&["options", "iteration", "odds"], "boolean", &path)?;
                match &a.iteration {
                    Some(Iteration {
                        start: Json::Bool(start),
                        restart: None,
                        step: None,
                        initial: None,
                    }) => Kind::Boolean(BoolGen::Iterate {
                        slot: self.slot(),
                        start: *start,
                    }),
                    Some(_) => {
                        return Err(DatagenError::at(
                            &path,
                            "iteration on a boolean takes only a boolean start",
                        ));
                    }
                    None => Kind::Boolean(BoolGen::Odds(a.odds.unwrap_or(0.5))),
                }
            }
            Schema::Int => self.integer(IntType::Int, a, &path, field, Slot::Int)?,
            Schema::Long => self.integer(IntType::Long, a, &path, field, Slot::Long)?,
            Schema::Date => self.integer(IntType::Date, a, &path, None, Slot::Int)?,
            Schema::TimeMillis => self.integer(IntType::TimeMillis, a, &path, None, Slot::Int)?,
            Schema::TimeMicros => self.integer(IntType::TimeMicros, a, &path, None, Slot::Long)?,
            Schema::TimestampMillis => {
                self.integer(IntType::TimestampMillis, a, &path, None, Slot::Long)?
            }
            Schema::TimestampMicros => {
                self.integer(IntType::TimestampMicros, a, &path, None, Slot::Long)?
            }
            Schema::TimestampNanos => {
                self.integer(IntType::TimestampNanos, a, &path, None, Slot::Long)?
            }
            Schema::LocalTimestampMillis => {
                self.integer(IntType::LocalTimestampMillis, a, &path, None, Slot::Long)?
            }
            Schema::LocalTimestampMicros => {
                self.integer(IntType::LocalTimestampMicros, a, &path, None, Slot::Long)?
            }
            Schema::LocalTimestampNanos => {
                self.integer(IntType::LocalTimestampNanos, a, &path, None, Slot::Long)?
            }
            Schema::Float => self.floating(false, a, &path, field)?,
            Schema::Double => self.floating(true, a, &path, field)?,
            Schema::Bytes => {
                a.only(&["options", "length"], "bytes", &path)?;
                Kind::Bytes(a.length.map_or(DEFAULT_LENGTH, LenRange::from))
            }
            Schema::String => {
                a.only(
                    &["options", "length", "regex", "prefix", "suffix"],
                    "string",
                    &path,
                )?;
                Kind::String(self.string(a, &path, field)?)
            }
            Schema::Uuid(repr) => {
                a.only(&["options"], "uuid", &path)?;
                if let UuidSchema::Fixed(fixed) = repr {
                    self.register(&fixed.name, id);
                }
                Kind::Uuid
            }
            Schema::Array(array) => {
                a.only(&["options", "length"], "array", &path)?;
                let items_json = structure.get("items").unwrap_or(&Json::Null);
                let items = self.node(&array.items, items_json, format!("{path}[]"), field)?;
                Kind::Array {
                    items,
                    len: a.length.map_or(DEFAULT_LENGTH, LenRange::from),
                    least: a.length.map_or(0, |l| LenRange::from(l).min),
                }
            }
            Schema::Map(map) => {
                a.only(&["options", "length", "keys"], "map", &path)?;
                let values_json = structure.get("values").unwrap_or(&Json::Null);
                let values = self.node(&map.types, values_json, format!("{path}{{}}"), None)?;
                let key_annotations = a.keys.as_deref().cloned().unwrap_or_default();
                let key_path = format!("{path}.keys");
                key_annotations.only(
                    &["options", "length", "regex", "prefix", "suffix"],
                    "map keys",
                    &key_path,
                )?;
                let keys = match &key_annotations.options {
                    Some(Options::Inline(options)) => {
                        if key_annotations.names().len() > 1 {
                            return Err(DatagenError::at(
                                &key_path,
                                "options cannot be combined with other annotations",
                            ));
                        }
                        let keys = options
                            .iter()
                            .enumerate()
                            .map(|(i, o)| {
                                o.as_str().map(str::to_owned).ok_or_else(|| {
                                    DatagenError::at(
                                        &key_path,
                                        format!(
                                            "options[{i}]: a map key must be a string, found {o}"
                                        ),
                                    )
                                })
                            })
                            .collect::<Result<Vec<_>>>()?;
                        StringGen {
                            core: StringCore::Regex {
                                // Options as an alternation: one generator.
                                regex: Box::new(options_regex(&keys, &key_path)?),
                                min: 0,
                                max: None,
                                fallback: keys[0].clone(),
                            },
                            prefix: String::new(),
                            suffix: String::new(),
                        }
                    }
                    Some(Options::File { .. }) => {
                        return Err(DatagenError::at(
                            &key_path,
                            "options from a file are not supported for map keys",
                        ));
                    }
                    None => self.string(&key_annotations, &key_path, None)?,
                };
                Kind::Map {
                    values,
                    keys,
                    len: a.length.map_or(DEFAULT_LENGTH, LenRange::from),
                    least: a.length.map_or(0, |l| LenRange::from(l).min),
                }
            }
            Schema::Union(union) => {
                a.only(&["options"], "union", &path)?;
                let branch_jsons: Vec<Json> = match structure {
                    Json::Array(branches) => branches.clone(),
                    _ => Vec::new(),
                };
                let mut branches = Vec::new();
                let mut names = Vec::new();
                for (i, variant) in union.variants().iter().enumerate() {
                    let branch_json = branch_jsons.get(i).cloned().unwrap_or(Json::Null);
                    branches.push(self.node(variant, &branch_json, path.clone(), field)?);
                    names.push(branch_name(variant));
                }
                Kind::Union { branches, names }
            }
            Schema::Record(record) => {
                a.only(&["options"], "record", &path)?;
                self.register(&record.name, id);
                let field_jsons = structure.get("fields").and_then(Json::as_array);
                let mut fields = Vec::with_capacity(record.fields.len());
                for f in &record.fields {
                    let field_json = field_jsons.and_then(|fs| {
                        fs.iter()
                            .find(|j| j.get("name") == Some(&Json::from(f.name.as_str())))
                    });
                    let type_json = field_type_json(field_json);
                    let child = self.node(
                        &f.schema,
                        &type_json,
                        format!("{path}.{}", f.name),
                        Some(&f.name),
                    )?;
                    fields.push((f.name.clone(), child));
                }
                Kind::Record { fields }
            }
            Schema::Enum(e) => {
                a.only(&["options"], "enum", &path)?;
                self.register(&e.name, id);
                if e.symbols.is_empty() {
                    return Err(DatagenError::at(&path, "an enum needs symbols"));
                }
                Kind::Enum {
                    symbols: e.symbols.clone(),
                }
            }
            Schema::Fixed(fixed) => {
                a.only(&["options"], "fixed", &path)?;
                if fixed.size > super::annotations::MAX_LENGTH {
                    return Err(DatagenError::at(
                        &path,
                        format!(
                            "a fixed of {} bytes is above the {} the generator makes",
                            fixed.size,
                            super::annotations::MAX_LENGTH
                        ),
                    ));
                }
                self.register(&fixed.name, id);
                Kind::Fixed { size: fixed.size }
            }
            Schema::Duration(fixed) => {
                a.only(&["options"], "duration", &path)?;
                self.register(&fixed.name, id);
                Kind::Duration
            }
            Schema::BigDecimal => {
                a.only(&["options"], "big-decimal", &path)?;
                Kind::BigDecimal
            }
            Schema::Decimal(decimal) => {
                a.only(&["options", "range"], "decimal", &path)?;
                let fixed = match &decimal.inner {
                    InnerDecimalSchema::Bytes => None,
                    InnerDecimalSchema::Fixed(fixed) => {
                        // The name stands for the plain fixed when used again,
                        // as apache-avro registers it.
                        let plain = self.push(path.clone(), Kind::Fixed { size: fixed.size });
                        self.register(&fixed.name, plain);
                        Some(fixed.size)
                    }
                };
                let scale = u32::try_from(decimal.scale)
                    .ok()
                    .filter(|s| *s <= 38)
                    .ok_or_else(|| DatagenError::at(&path, "decimal scale above 38"))?;
                // |unscaled| < 10^precision, and within what the bytes hold.
                let mut digits = decimal.precision.min(38) as u32;
                if let Some(size) = fixed {
                    // n bytes hold signed values below 2^(8n-1) ≥ 10^floor((8n-1)·log10 2).
                    let fits = ((8 * size).saturating_sub(1) as f64 * std::f64::consts::LOG10_2)
                        .floor() as u32;
                    digits = digits.min(fits);
                }
                let limit = 10i128.pow(digits);
                let (mut lo, mut hi) = (0, limit.min(10i128.pow((scale + 4).min(38))));
                if let Some(range) = &a.range {
                    (lo, hi) = (-limit + 1, limit);
                    if let Some(min) = &range.min {
                        lo = decimal_bound(min, scale, "range.min", &path)?;
                    }
                    if let Some(max) = &range.max {
                        hi = decimal_bound(max, scale, "range.max", &path)?;
                    }
                    if lo >= hi {
                        return Err(DatagenError::at(
                            &path,
                            format!(
                                "range.min ≥ max (no decimal of scale {scale} lies in [min, max))"
                            ),
                        ));
                    }
                    if lo < -limit + 1 || hi > limit {
                        return Err(DatagenError::at(
                            &path,
                            format!("range goes past the decimal's {digits} digits"),
                        ));
                    }
                }
                Kind::Decimal {
                    lo,
                    hi,
                    scale,
                    fixed,
                    limit,
                }
            }
            Schema::Ref { name } => {
                let full = name.fullname(None);
                let target = *self
                    .names
                    .get(&full)
                    .ok_or_else(|| DatagenError::at(&path, format!("unknown type name {full}")))?;
                a.only(&["options"], "a named type used again", &path)?;
                if annotations.is_empty() {
                    // No node of its own: drop the placeholder.
                    self.nodes.pop();
                    return Ok(target);
                }
                Kind::Ref(target)
            }
        };
        self.nodes[id].kind = kind;
        Ok(id)
    }

    fn register(&mut self, name: &apache_avro::schema::Name, id: NodeId) {
        self.names.insert(name.fullname(None), id);
    }

    fn integer(
        &mut self,
        ty: IntType,
        a: &Annotations,
        path: &str,
        field: Option<&str>,
        slot: Slot,
    ) -> Result<Kind> {
        a.only(&["options", "range", "iteration"], ty.name(), path)?;
        let (lo, hi) = ty.bounds();
        let generator = if let Some(range) = &a.range {
            let (mut min, mut max) = ty.default_range();
            if range.min.is_some() || range.max.is_some() {
                (min, max) = (lo, hi);
            }
            if let Some(n) = &range.min {
                min = integer_of(n, "range.min", ty, path)?;
            }
            if let Some(n) = &range.max {
                max = integer_of(n, "range.max", ty, path)?;
            }
            if min >= max {
                return Err(DatagenError::at(
                    path,
                    format!("range.min ≥ max ({min} ≥ {max})"),
                ));
            }
            if min < lo || max > hi {
                return Err(DatagenError::at(
                    path,
                    format!(
                        "range [{min}, {max}) goes past {} values [{lo}, {hi})",
                        ty.name()
                    ),
                ));
            }
            IntGen::Range(min, max)
        } else if let Some(iteration) = &a.iteration {
            let Json::Number(start) = &iteration.start else {
                return Err(DatagenError::at(path, "iteration.start must be a number"));
            };
            let start = integer_of(start, "iteration.start", ty, path)?;
            let restart = match &iteration.restart {
                Some(n) => Some(integer_of(n, "iteration.restart", ty, path)?),
                None => None,
            };
            let step = match (&iteration.step, restart) {
                (Some(n), _) => integer_of(n, "iteration.step", ty, path)?,
                (None, Some(r)) if r < start => -1,
                (None, _) => 1,
            };
            let initial = match &iteration.initial {
                Some(n) => integer_of(n, "iteration.initial", ty, path)?,
                None => start,
            };
            check_iteration(
                start as f64,
                restart.map(|r| r as f64),
                step as f64,
                initial as f64,
                path,
            )?;
            for (name, v) in [("start", start), ("initial", initial)] {
                if v < lo || v >= hi {
                    return Err(DatagenError::at(
                        path,
                        format!("iteration.{name} {v} is not a {} value", ty.name()),
                    ));
                }
            }
            if let Some(r) = restart.filter(|r| *r < lo - 1 || *r > hi) {
                return Err(DatagenError::at(
                    path,
                    format!("iteration.restart {r} goes past {} values", ty.name()),
                ));
            }
            IntGen::Iterate(IntIteration {
                slot: self.slot(),
                start,
                restart,
                step,
                initial,
                bounds: (lo, hi),
            })
        } else if let Some(fake) = field.and_then(|f| Fake::for_field(f, slot)) {
            IntGen::Fake(fake)
        } else {
            let (min, max) = ty.default_range();
            IntGen::Range(min, max)
        };
        Ok(Kind::Integer { ty, generator })
    }

    fn floating(
        &mut self,
        double: bool,
        a: &Annotations,
        path: &str,
        field: Option<&str>,
    ) -> Result<Kind> {
        let name = if double { "double" } else { "float" };
        a.only(&["options", "range", "iteration"], name, path)?;
        let number = |n: &Number, what: &str| -> Result<f64> {
            let v = n
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| DatagenError::at(path, format!("{what} must be a finite number")))?;
            if !double && (v as f32).is_infinite() {
                return Err(DatagenError::at(
                    path,
                    format!("{what} {v} is past float's range"),
                ));
            }
            Ok(v)
        };
        let generator = if let Some(Range { min, max }) = &a.range {
            let min = match min {
                Some(n) => number(n, "range.min")?,
                None => {
                    let max = max.as_ref().map(|n| number(n, "range.max")).transpose()?;
                    max.map_or(0.0, |m| m.min(0.0) - 1.0)
                }
            };
            let max = match max {
                Some(n) => number(n, "range.max")?,
                None => min.max(0.0) + 1.0,
            };
            // There must be a value of the type in [min, max).
            let lowest = if double { min } else { f32_at_least(min) };
            if min >= max || lowest >= max {
                return Err(DatagenError::at(
                    path,
                    format!("range.min ≥ max ({min} ≥ {max})"),
                ));
            }
            FloatGen::Range(min, max)
        } else if let Some(iteration) = &a.iteration {
            let Json::Number(start) = &iteration.start else {
                return Err(DatagenError::at(path, "iteration.start must be a number"));
            };
            let start = number(start, "iteration.start")?;
            let restart = iteration
                .restart
                .as_ref()
                .map(|n| number(n, "iteration.restart"))
                .transpose()?;
            let step = match (&iteration.step, restart) {
                (Some(n), _) => number(n, "iteration.step")?,
                (None, Some(r)) if r < start => -1.0,
                (None, _) => 1.0,
            };
            let initial = match &iteration.initial {
                Some(n) => number(n, "iteration.initial")?,
                None => start,
            };
            check_iteration(start, restart, step, initial, path)?;
            FloatGen::Iterate(FloatIteration {
                slot: self.slot(),
                start,
                restart,
                step,
                initial,
            })
        } else if let Some(fake) =
            field.and_then(|f| Fake::for_field(f, if double { Slot::Double } else { Slot::Float }))
        {
            FloatGen::Fake(fake)
        } else {
            FloatGen::Range(0.0, 1.0)
        };
        Ok(Kind::Floating { double, generator })
    }

    fn string(&mut self, a: &Annotations, path: &str, field: Option<&str>) -> Result<StringGen> {
        let len = a.length.map(LenRange::from);
        let core = match (&a.regex, a.length) {
            (Some(pattern), length) => {
                let (min, max) = match length {
                    // With a regex, a plain length is the least length.
                    Some(Length::Exact(n)) => (n, None),
                    Some(Length::Between { min, max }) => (min, Some(max)),
                    None => (0, None),
                };
                let regex = compile_regex(pattern, min, max, path)?;
                let fallback = fitting_sample(&regex, min, max).ok_or_else(|| {
                    DatagenError::at(
                        path,
                        format!(
                            "regex {pattern:?} gives no string of length {}",
                            describe_len(min, max)
                        ),
                    )
                })?;
                StringCore::Regex {
                    regex: Box::new(regex),
                    min,
                    max,
                    fallback,
                }
            }
            (None, Some(_)) => StringCore::Plain(len.unwrap_or(DEFAULT_LENGTH)),
            (None, None) => match field.and_then(|f| Fake::for_field(f, Slot::String)) {
                Some(fake) if a.prefix.is_none() && a.suffix.is_none() => StringCore::Fake(fake),
                _ => StringCore::Plain(DEFAULT_LENGTH),
            },
        };
        Ok(StringGen {
            core,
            prefix: a.prefix.clone().unwrap_or_default(),
            suffix: a.suffix.clone().unwrap_or_default(),
        })
    }
}

fn describe_len(min: usize, max: Option<usize>) -> String {
    match max {
        Some(max) => format!("in [{min}, {max})"),
        None => format!("≥ {min}"),
    }
}

fn check_iteration(
    start: f64,
    restart: Option<f64>,
    step: f64,
    initial: f64,
    path: &str,
) -> Result<()> {
    if step == 0.0 {
        return Err(DatagenError::at(path, "iteration.step must not be 0"));
    }
    if let Some(restart) = restart {
        if restart == start {
            return Err(DatagenError::at(path, "iteration.restart equals start"));
        }
        let inside = if restart > start {
            (start..restart).contains(&initial)
        } else {
            initial <= start && initial > restart
        };
        if !inside {
            return Err(DatagenError::at(
                path,
                format!(
                    "iteration.initial {initial} lies outside start {start} .. restart {restart}"
                ),
            ));
        }
    }
    Ok(())
}

/// The least f32 at or above `v`.
fn f32_at_least(v: f64) -> f64 {
    let f = v as f32;
    if (f as f64) < v {
        f.next_up() as f64
    } else {
        f as f64
    }
}

/// A decimal bound in the decimal's units → unscaled integer, rounded up
/// (min inclusive stays inclusive; max exclusive stays exclusive).
fn decimal_bound(n: &Number, scale: u32, what: &str, path: &str) -> Result<i128> {
    let text = n.to_string();
    parse_decimal_ceil(&text, scale).ok_or_else(|| {
        DatagenError::at(
            path,
            format!("{what} {text} is not a decimal this type can hold"),
        )
    })
}

/// `"12.345"` at scale 2 → 1235 (ceil); exponents as serde_json prints them.
pub(crate) fn parse_decimal_ceil(text: &str, scale: u32) -> Option<i128> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches(['-', '+']);
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{whole}{frac}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits × 10^(exponent − frac.len()); we want value × 10^scale.
    let shift = exponent - frac.len() as i32 + scale as i32;
    let digits = digits.trim_start_matches('0');
    let mut value: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut inexact = false;
    if shift >= 0 {
        value = value.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let div = 10i128.checked_pow((-shift) as u32).unwrap_or(i128::MAX);
        inexact = value % div != 0;
        value /= div;
    }
    Some(if negative {
        -value
    } else if inexact {
        value + 1
    } else {
        value
    })
}

/// The JSON of a field's type, with `arg.properties` on the field object
/// itself (a form some schemas use) moved onto its type.
fn field_type_json(field: Option<&Json>) -> Json {
    let Some(field) = field else {
        return Json::Null;
    };
    let ty = field.get("type").cloned().unwrap_or(Json::Null);
    match (field.get("arg.properties"), ty) {
        (Some(props), Json::Object(mut map)) if !map.contains_key("arg.properties") => {
            map.insert("arg.properties".into(), props.clone());
            Json::Object(map)
        }
        (Some(props), ty @ (Json::String(_) | Json::Array(_))) => {
            serde_json::json!({"type": ty, "arg.properties": props})
        }
        (_, ty) => ty,
    }
}

/// The name of a union branch in Avro's JSON encoding.
fn branch_name(schema: &Schema) -> String {
    match schema {
        Schema::Ref { name } => name.fullname(None),
        other => match other.name() {
            Some(name) => name.fullname(None),
            None => match other {
                Schema::Null => "null".into(),
                Schema::Boolean => "boolean".into(),
                Schema::Int | Schema::Date | Schema::TimeMillis => "int".into(),
                Schema::Float => "float".into(),
                Schema::Double => "double".into(),
                Schema::Bytes | Schema::BigDecimal => "bytes".into(),
                Schema::String => "string".into(),
                Schema::Array(_) => "array".into(),
                Schema::Map(_) => "map".into(),
                Schema::Decimal(_) => "bytes".into(),
                Schema::Uuid(UuidSchema::String) => "string".into(),
                Schema::Uuid(_) => "bytes".into(),
                _ => "long".into(),
            },
        },
    }
}

/// Regexes: what ARG users write, made generable. A leading `^` and a
/// trailing `$` mean nothing for generated strings and are dropped; other
/// anchors and word boundaries cannot be generated and are errors.
fn compile_regex(
    pattern: &str,
    min: usize,
    max: Option<usize>,
    path: &str,
) -> Result<rand_regex::Regex> {
    let mut p = pattern.strip_prefix('^').unwrap_or(pattern);
    if p.ends_with('$') && !p.ends_with("\\$") {
        p = &p[..p.len() - 1];
    }
    // Unbounded repeats (`*`, `+`, `{n,}`) go up to this many, enough to
    // reach a length annotation.
    let max_repeat = max.unwrap_or(min + 16).clamp(16, 10_000) as u32;
    let regex = rand_regex::Regex::compile(p, max_repeat).map_err(|e| {
        let why = match e {
            rand_regex::Error::Anchor => {
                "anchors (but a leading ^ and a trailing $) and word boundaries are not supported"
                    .to_owned()
            }
            rand_regex::Error::Unsatisfiable => "no string matches it".to_owned(),
            rand_regex::Error::Syntax(e) => match *e {
                regex_syntax::Error::Parse(e) => e.kind().to_string(),
                regex_syntax::Error::Translate(e) => e.kind().to_string(),
                other => other.to_string().replace('\n', " "),
            },
        };
        DatagenError::at(
            path,
            format!("regex {pattern:?} cannot be generated: {why}"),
        )
    })?;
    if !regex.is_utf8() {
        return Err(DatagenError::at(
            path,
            format!("regex {pattern:?} can give bytes that are not UTF-8"),
        ));
    }
    Ok(regex)
}

/// A regex that matches exactly these strings.
fn options_regex(options: &[String], path: &str) -> Result<rand_regex::Regex> {
    let alternation: Vec<String> = options.iter().map(|o| regex_syntax::escape(o)).collect();
    compile_regex(&format!("(?:{})", alternation.join("|")), 0, None, path)
}

/// Draws until a sample fits the length bounds (from a fixed seed: the
/// fallback is the same on every run).
fn fitting_sample(regex: &rand_regex::Regex, min: usize, max: Option<usize>) -> Option<String> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(0x5eed);
    (0..512).find_map(|_| {
        let s: String = rng.sample(regex);
        let n = s.chars().count();
        (n >= min && max.is_none_or(|m| n < m)).then_some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_bounds_parse_exactly_and_round_up() {
        assert_eq!(parse_decimal_ceil("10.00", 2), Some(1000));
        assert_eq!(parse_decimal_ceil("49.999", 2), Some(5000));
        assert_eq!(parse_decimal_ceil("-1.5", 0), Some(-1));
        assert_eq!(parse_decimal_ceil("1e2", 1), Some(1000));
        assert_eq!(parse_decimal_ceil("0.1", 0), Some(1));
        assert_eq!(parse_decimal_ceil("abc", 0), None);
    }

    #[test]
    fn iterations_wrap_as_arg_does() {
        let it = IntIteration {
            slot: 0,
            start: 0,
            restart: Some(10),
            step: 3,
            initial: 0,
            bounds: IntType::Int.bounds(),
        };
        let mut v = it.initial;
        let mut seen = vec![v];
        for _ in 0..5 {
            v = it.advance(v);
            seen.push(v);
        }
        assert_eq!(seen, [0, 3, 6, 9, 2, 5]);
        let down = IntIteration {
            start: 5,
            restart: Some(0),
            step: -2,
            initial: 5,
            ..it
        };
        let mut v = down.initial;
        let mut seen = vec![v];
        for _ in 0..4 {
            v = down.advance(v);
            seen.push(v);
        }
        assert_eq!(seen, [5, 3, 1, 4, 2]);
    }
}
