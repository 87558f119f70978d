//! The service map: a node per `service.name`, an edge per hop between
//! two services through a topic, counted over every trace (also those a
//! report does not show), with the hop's latency.
//!
//! A hop is a consumer span in service B whose parent is a producer span
//! in another service A, or, for a consumer span with no producer parent
//! (a batch), a producer span of another service it links to (a link
//! beside a producer parent is a join, not a hop); its latency is the
//! consumer span's start minus the producer span's start (send started →
//! processing started: time in the client, the broker and the consumer's
//! queue). Latencies go into a log-linear histogram (1/128 relative
//! resolution), so that a million hops cost a few kilobytes, not a list.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanKind, Status};
use rustc_hash::FxHashMap;

use super::json;
use crate::forest::tree::{SpanForest, SpanView};
use crate::traced::attr;

/// A service and what its spans did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceNode {
    /// Its `service.name`.
    pub name: String,
    /// Spans it recorded.
    pub spans: u64,
    /// Of those, spans with error status.
    pub errors: u64,
    /// Problems found in its spans (orphans, dangling links, lost context…).
    pub problems: u64,
}

/// Messages from one service to another through one topic.
#[derive(Debug, Clone, Default)]
pub struct HopEdge {
    /// Producing service.
    pub from: String,
    /// Consuming service.
    pub to: String,
    /// The topic.
    pub topic: String,
    /// Hops counted.
    pub count: u64,
    /// Consumer spans of these hops with error status.
    pub errors: u64,
    latencies: Histogram,
}

impl HopEdge {
    /// The `q`-th percentile (0–100) of the hop latency, if any hop was
    /// counted.
    pub fn latency_percentile(&self, q: u32) -> Option<Duration> {
        self.latencies.percentile(q)
    }
}

/// Services and the hops between them, counted over every trace.
///
/// A hop is a consumer span in service B whose parent is a producer span
/// of another service A, or, for a consumer span with no producer parent
/// (a batch), a producer span of another service it links to; its latency
/// is the consumer span's start minus the producer span's start.
///
/// ```
/// use kafka_trace_harness::SpanCapture;
/// use kafka_trace_harness::report::ServiceMap;
/// use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
///
/// let capture = SpanCapture::new();
/// let datagen = capture.tracer("datagen");
/// let send = datagen.span_builder("send trades").with_kind(SpanKind::Producer).start(&datagen);
/// let cx = opentelemetry::Context::new().with_span(send);
/// let api = capture.tracer("api");
/// api.span_builder("process trades").with_kind(SpanKind::Consumer).start_with_context(&api, &cx);
/// drop(cx);
///
/// let map = ServiceMap::of_forest(&capture.forest());
/// assert_eq!(map.services().len(), 2);
/// let edge = &map.edges()[0];
/// assert_eq!((edge.from.as_str(), edge.to.as_str(), edge.topic.as_str(), edge.count), ("datagen", "api", "trades", 1));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServiceMap {
    services: Vec<ServiceNode>,
    service_index: FxHashMap<String, usize>,
    edges: Vec<HopEdge>,
    edge_index: FxHashMap<(usize, usize, String), usize>,
}

/// The topic of a messaging span: its `messaging.destination.name`, else
/// what follows the operation in its name (`send trades` → `trades`).
fn topic_of(span: &SpanView<'_>) -> String {
    match span.attribute(attr::DESTINATION_NAME) {
        Some(value) => value.as_str().into_owned(),
        None => topic_from_name(span.name()).to_owned(),
    }
}

/// What follows the first space of a span name (`send trades` → `trades`).
pub fn topic_from_name(name: &str) -> &str {
    name.split_once(' ').map_or(name, |(_, topic)| topic)
}

impl ServiceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map of every span and hop of `forest`, with its problems.
    pub fn of_forest(forest: &SpanForest) -> Self {
        let mut map = Self::new();
        for span in forest.spans() {
            map.add_span(
                span.service(),
                matches!(span.status(), Status::Error { .. }),
            );
            if *span.kind() != SpanKind::Consumer {
                continue;
            }
            // The parent, if it is a producer; else, for a consumer that
            // continues no producer (a batch), the producers it links to.
            // A consumer with a producer parent may also link to other
            // sends (a join with a table): those are not hops.
            let producers: Vec<SpanView<'_>> = match span.parent() {
                Some(parent) if *parent.kind() == SpanKind::Producer => vec![parent],
                _ => span
                    .links()
                    .filter_map(|(_, target)| target)
                    .filter(|target| *target.kind() == SpanKind::Producer)
                    .collect(),
            };
            for producer in producers {
                if producer.service() != span.service() {
                    // The topic the message went through: the consumer's,
                    // or for a linked send, the producer's.
                    let topic = if span.parent().is_some_and(|p| p.index() == producer.index()) {
                        topic_of(&span)
                    } else {
                        topic_of(&producer)
                    };
                    map.add_hop(
                        producer.service(),
                        span.service(),
                        &topic,
                        producer.data().start_time,
                        span.data().start_time,
                        matches!(span.status(), Status::Error { .. }),
                    );
                }
            }
        }
        // Error spans are counted as errors already.
        for problem in super::problems::of_forest(forest)
            .into_iter()
            .filter(|p| p.kind != "error")
        {
            if let Some(span) = problem.span.and_then(|index| forest.get(index)) {
                map.add_problem(span.service());
            }
        }
        map
    }

    fn service(&mut self, name: &str) -> usize {
        if let Some(index) = self.service_index.get(name) {
            return *index;
        }
        self.services.push(ServiceNode {
            name: name.to_owned(),
            ..ServiceNode::default()
        });
        self.service_index
            .insert(name.to_owned(), self.services.len() - 1);
        self.services.len() - 1
    }

    /// Counts a span of `service`.
    pub fn add_span(&mut self, service: &str, error: bool) {
        let index = self.service(service);
        let node = &mut self.services[index];
        node.spans += 1;
        node.errors += u64::from(error);
    }

    /// Counts a problem in a span of `service`.
    pub fn add_problem(&mut self, service: &str) {
        let index = self.service(service);
        self.services[index].problems += 1;
    }

    /// Counts a hop from a producer span of `from` that started at
    /// `sent` to a consumer span of `to` that started at `received`.
    pub fn add_hop(
        &mut self,
        from: &str,
        to: &str,
        topic: &str,
        sent: SystemTime,
        received: SystemTime,
        error: bool,
    ) {
        let (from_index, to_index) = (self.service(from), self.service(to));
        let key = (from_index, to_index, topic.to_owned());
        let index = match self.edge_index.get(&key) {
            Some(index) => *index,
            None => {
                self.edges.push(HopEdge {
                    from: from.to_owned(),
                    to: to.to_owned(),
                    topic: topic.to_owned(),
                    ..HopEdge::default()
                });
                self.edge_index.insert(key, self.edges.len() - 1);
                self.edges.len() - 1
            }
        };
        let edge = &mut self.edges[index];
        edge.count += 1;
        edge.errors += u64::from(error);
        // A consumer that starts before the send (clocks of two hosts)
        // counts as zero.
        let latency = received.duration_since(sent).unwrap_or_default();
        edge.latencies.add(latency);
    }

    /// Every service, in order of first appearance.
    pub fn services(&self) -> &[ServiceNode] {
        &self.services
    }

    /// Every hop edge, in order of first appearance.
    pub fn edges(&self) -> &[HopEdge] {
        &self.edges
    }

    /// The map as the page reads it (`services` and `edges` arrays).
    pub(crate) fn write_json(&self, out: &mut String) {
        out.push_str("{\"services\":[");
        for (i, node) in self.services.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            json::string(out, &node.name);
            let _ = write!(
                out,
                ",\"spans\":{},\"errors\":{},\"problems\":{}}}",
                node.spans, node.errors, node.problems
            );
        }
        out.push_str("],\"edges\":[");
        for (i, edge) in self.edges.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"from\":");
            json::string(out, &edge.from);
            out.push_str(",\"to\":");
            json::string(out, &edge.to);
            out.push_str(",\"topic\":");
            json::string(out, &edge.topic);
            let _ = write!(out, ",\"count\":{},\"errors\":{}", edge.count, edge.errors);
            for (name, q) in [("p50Ms", 50), ("p99Ms", 99)] {
                json::key(out, false, name);
                match edge.latency_percentile(q) {
                    Some(latency) => json::number(out, latency.as_secs_f64() * 1e3),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
        out.push_str("]}");
    }
}

/// Sub-buckets per power of two: latencies are kept to 1/128 of their size.
const SUB_BUCKETS: u64 = 128;

/// A log-linear histogram of latencies in microseconds.
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    fn bucket(micros: u64) -> usize {
        if micros < SUB_BUCKETS {
            return micros as usize;
        }
        let shift = 63 - micros.leading_zeros() - 6; // micros >> shift in 64..128
        let shift = shift.max(1);
        let sub = micros >> shift; // 64..128
        (u64::from(shift) * 64 + sub) as usize
    }

    /// The smallest latency in microseconds of `bucket`'s range.
    fn lower_bound(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < SUB_BUCKETS {
            return bucket;
        }
        let shift = bucket / 64 - 1;
        let sub = bucket - shift * 64;
        sub << shift
    }

    fn add(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = Self::bucket(micros);
        if self.counts.len() <= bucket {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
        self.total += 1;
    }

    fn percentile(&self, q: u32) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        // The rank of the q-th percentile, 1-based, as nearest-rank does.
        let rank = (self.total * u64::from(q)).div_ceil(100).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_micros(Self::lower_bound(bucket)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_keep_a_latency_within_one_part_in_64() {
        for micros in [0, 1, 127, 128, 129, 1_000, 4_567, 1_000_000, 123_456_789] {
            let bucket = Histogram::bucket(micros);
            let low = Histogram::lower_bound(bucket);
            assert!(low <= micros, "{micros}: bucket starts at {low}");
            assert!(
                micros - low <= micros / 64,
                "{micros}: bucket {bucket} starts at {low}"
            );
            assert!(Histogram::bucket(low) == bucket, "{micros}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut histogram = Histogram::default();
        for ms in 1..=100 {
            histogram.add(Duration::from_micros(ms));
        }
        assert_eq!(histogram.percentile(50), Some(Duration::from_micros(50)));
        assert_eq!(histogram.percentile(99), Some(Duration::from_micros(99)));
        assert_eq!(Histogram::default().percentile(50), None);
    }
}
