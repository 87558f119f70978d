//! Drawing values from a compiled schema with a seeded ChaCha8 generator.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::{Days, Duration, Millis, Months};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};

use super::json::decimal_value;
use super::plan::{
    BoolGen, FloatGen, IntGen, Kind, LenRange, MAX_DEPTH, MAX_VALUES, NodeId, Plan, StringCore,
    StringGen, UNBOUNDED,
};

/// The state of one `iteration`: the value it gives next.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    Unset,
    Int(i128),
    Float(f64),
    Bool(bool),
}

const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Endless seeded values of one schema; see [`super::DatagenSchema::generator`].
///
/// Its output depends only on the schema, the seed and the stream: ChaCha8
/// is specified bit for bit, `rand`'s range sampling is portable across
/// platforms, and the generator never iterates a hash map.
#[derive(Debug)]
pub struct SchemaGenerator {
    plan: Arc<Plan>,
    rng: ChaCha8Rng,
    cursors: Vec<Cursor>,
}

impl SchemaGenerator {
    pub(crate) fn new(plan: Arc<Plan>, seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let cursors = vec![Cursor::Unset; plan.iterations];
        Self { plan, rng, cursors }
    }

    /// The next record (or value, for a schema that is not a record).
    pub fn next_value(&mut self) -> Value {
        let plan = Arc::clone(&self.plan);
        let mut budget = MAX_VALUES;
        Draw {
            plan: &plan,
            budget: &mut budget,
            rng: &mut self.rng,
            cursors: &mut self.cursors,
        }
        .value(plan.root, 0, false)
    }
}

impl Iterator for SchemaGenerator {
    type Item = Value;

    /// Never `None`: the generator is endless (use `take`).
    fn next(&mut self) -> Option<Value> {
        Some(self.next_value())
    }
}

struct Draw<'a> {
    plan: &'a Plan,
    /// Values this record may still hold before it takes the shortest way.
    budget: &'a mut u32,
    rng: &'a mut ChaCha8Rng,
    cursors: &'a mut [Cursor],
}

impl Draw<'_> {
    /// A value of node `id`, `depth` records, arrays and maps down.
    /// `shortest`: take the least nested way (past [`MAX_DEPTH`]).
    fn value(&mut self, id: NodeId, depth: u32, shortest: bool) -> Value {
        let plan = self.plan;
        let node = &plan.nodes[id];
        if let Some(options) = &node.options {
            return options[self.rng.random_range(0..options.len())].clone();
        }
        *self.budget = self.budget.saturating_sub(1);
        let shortest = shortest || depth >= MAX_DEPTH || *self.budget == 0;
        match &node.kind {
            Kind::Null | Kind::Pending => Value::Null,
            Kind::Boolean(BoolGen::Odds(odds)) => Value::Boolean(self.rng.random_bool(*odds)),
            Kind::Boolean(BoolGen::Iterate { slot, start }) => {
                let value = match self.cursors[*slot] {
                    Cursor::Bool(previous) => !previous,
                    _ => *start,
                };
                self.cursors[*slot] = Cursor::Bool(value);
                Value::Boolean(value)
            }
            Kind::Integer { ty, generator } => ty.value(match generator {
                IntGen::Range(lo, hi) => self.int_in(*lo, *hi),
                IntGen::Iterate(it) => {
                    let value = match self.cursors[it.slot] {
                        Cursor::Int(previous) => it.advance(previous),
                        _ => it.initial,
                    };
                    self.cursors[it.slot] = Cursor::Int(value);
                    value
                }
                IntGen::Fake(fake) => {
                    let (lo, hi) = ty.bounds();
                    i128::from(fake.integer(self.rng)).clamp(lo, hi - 1)
                }
            }),
            Kind::Floating { double, generator } => {
                let v = match generator {
                    FloatGen::Range(lo, hi) => {
                        let v = self.float_in(*lo, *hi);
                        if *double {
                            return Value::Double(v);
                        }
                        let f = v as f32;
                        // Rounding to f32 must not leave [lo, hi).
                        return Value::Float(if (f as f64) < *lo || (f as f64) >= *hi {
                            f32_at_least(*lo)
                        } else {
                            f
                        });
                    }
                    FloatGen::Iterate(it) => {
                        let value = match self.cursors[it.slot] {
                            Cursor::Float(previous) => it.advance(previous),
                            _ => it.initial,
                        };
                        self.cursors[it.slot] = Cursor::Float(value);
                        value
                    }
                    FloatGen::Fake(fake) => fake.number(self.rng),
                };
                if *double {
                    Value::Double(v)
                } else {
                    Value::Float(v as f32)
                }
            }
            Kind::Bytes(len) => {
                let n = self.len_in(*len);
                Value::Bytes(self.bytes(n))
            }
            Kind::String(generator) => Value::String(self.string(generator)),
            Kind::Uuid => {
                let mut bytes = [0u8; 16];
                self.rng.fill_bytes(&mut bytes);
                Value::Uuid(uuid::Builder::from_random_bytes(bytes).into_uuid())
            }
            Kind::Array { items, len, least } => {
                let n = self.count(*items, *len, *least, shortest);
                Value::Array(
                    (0..n)
                        .map(|_| self.value(*items, depth + 1, shortest))
                        .collect(),
                )
            }
            Kind::Map {
                values,
                keys,
                len,
                least,
            } => {
                let n = self.count(*values, *len, *least, shortest);
                let mut map = HashMap::with_capacity(n);
                // Keys must differ; a small key space may give fewer.
                let mut attempts = 16 * n + 16;
                while map.len() < n && attempts > 0 {
                    attempts -= 1;
                    let key = self.string(keys);
                    if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(key) {
                        slot.insert(self.value(*values, depth + 1, shortest));
                    }
                }
                Value::Map(map)
            }
            Kind::Record { fields } => Value::Record(
                fields
                    .iter()
                    .map(|(name, field)| (name.clone(), self.value(*field, depth + 1, shortest)))
                    .collect(),
            ),
            Kind::Enum { symbols } => {
                let i = self.rng.random_range(0..symbols.len());
                Value::Enum(i as u32, symbols[i].clone())
            }
            Kind::Fixed { size } => Value::Fixed(*size, self.bytes(*size)),
            Kind::Union { branches, .. } => {
                let finite = |b: &&NodeId| plan.nodes[**b].height != UNBOUNDED;
                let index = if shortest {
                    let least = branches
                        .iter()
                        .filter(finite)
                        .map(|b| plan.nodes[*b].height)
                        .min();
                    branches
                        .iter()
                        .position(|b| Some(plan.nodes[*b].height) == least)
                } else {
                    let count = branches.iter().filter(finite).count();
                    if count == 0 {
                        None
                    } else {
                        let pick = self.rng.random_range(0..count);
                        branches
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| finite(b))
                            .nth(pick)
                            .map(|(i, _)| i)
                    }
                };
                match index {
                    Some(i) => {
                        Value::Union(i as u32, Box::new(self.value(branches[i], depth, shortest)))
                    }
                    // Compilation rejects unions with no finite branch.
                    None => Value::Null,
                }
            }
            Kind::Decimal { lo, hi, fixed, .. } => decimal_value(self.int_in(*lo, *hi), *fixed),
            Kind::BigDecimal => {
                let unscaled = self.rng.random_range(0..10_000_000i64);
                let text = super::json::decimal_text(unscaled.into(), 2);
                Value::BigDecimal(
                    text.parse()
                        .unwrap_or_else(|_| apache_avro::BigDecimal::from(unscaled)),
                )
            }
            Kind::Duration => Value::Duration(Duration::new(
                Months::new(self.rng.random_range(0..12)),
                Days::new(self.rng.random_range(0..31)),
                Millis::new(self.rng.random_range(0..86_400_000)),
            )),
            Kind::Ref(target) => self.value(*target, depth, shortest),
        }
    }

    /// How many items an array or map gets.
    fn count(&mut self, inner: NodeId, len: LenRange, least: usize, shortest: bool) -> usize {
        if shortest || self.plan.nodes[inner].height == UNBOUNDED {
            least
        } else {
            self.len_in(len)
        }
    }

    fn len_in(&mut self, len: LenRange) -> usize {
        self.rng.random_range(len.min..len.max)
    }

    /// Uniform in [lo, hi), for any span up to the whole of i64.
    fn int_in(&mut self, lo: i128, hi: i128) -> i128 {
        let span = (hi - lo) as u128;
        if span > u64::MAX as u128 {
            lo + i128::from(self.rng.next_u64())
        } else {
            lo + i128::from(self.rng.random_range(0..span as u64))
        }
    }

    /// Uniform in [lo, hi).
    fn float_in(&mut self, lo: f64, hi: f64) -> f64 {
        let u: f64 = self.rng.random();
        // A weighted mean stays finite however wide the range is.
        let v = lo * (1.0 - u) + hi * u;
        if v >= hi || v < lo { lo } else { v }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut bytes = vec![0; n];
        self.rng.fill_bytes(&mut bytes);
        bytes
    }

    fn string(&mut self, generator: &StringGen) -> String {
        let core = match &generator.core {
            StringCore::Plain(len) => {
                let n = self.len_in(*len);
                (0..n)
                    .map(|_| ALPHANUMERIC[self.rng.random_range(0..ALPHANUMERIC.len())] as char)
                    .collect()
            }
            StringCore::Regex {
                regex,
                min,
                max,
                fallback,
            } => {
                let fits = |s: &String| {
                    let n = s.chars().count();
                    n >= *min && max.is_none_or(|m| n < m)
                };
                (0..32)
                    .map(|_| self.rng.sample::<String, _>(&**regex))
                    .find(fits)
                    .unwrap_or_else(|| fallback.clone())
            }
            StringCore::Fake(fake) => fake.string(self.rng),
        };
        if generator.prefix.is_empty() && generator.suffix.is_empty() {
            core
        } else {
            format!("{}{core}{}", generator.prefix, generator.suffix)
        }
    }
}

/// The least f32 at or above `v`.
fn f32_at_least(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v { f.next_up() } else { f }
}
