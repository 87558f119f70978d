//! Messaging-convention conformance: every messaging span judged against a
//! chosen version of the OpenTelemetry messaging semantic conventions for
//! Kafka.
//!
//! The conventions renamed most Kafka attributes between 1.24 (still what
//! the OpenTelemetry Java agent emits by default) and the current 1.44.
//! Instrumentations offer a "dup" mode that emits both. This check says,
//! per span, what a version requires and what the span does instead:
//! missing required and conditionally required attributes, the span kind,
//! the name format, attribute types and deprecated names.
//!
//! ```
//! use kafka_trace_harness::SpanCapture;
//! use kafka_trace_harness::forest::conventions::MessagingConventions;
//! use opentelemetry::trace::{SpanKind, Tracer};
//! use opentelemetry::KeyValue;
//!
//! // A send span with the 1.44 names, the partition id as a string.
//! let capture = SpanCapture::new();
//! let tracer = capture.tracer("svc");
//! tracer
//!     .span_builder("send orders")
//!     .with_kind(SpanKind::Producer)
//!     .with_attributes([
//!         KeyValue::new("messaging.system", "kafka"),
//!         KeyValue::new("messaging.operation.name", "send"),
//!         KeyValue::new("messaging.operation.type", "send"),
//!         KeyValue::new("messaging.destination.name", "orders"),
//!         KeyValue::new("messaging.destination.partition.id", "0"),
//!         KeyValue::new("server.address", "localhost"),
//!     ])
//!     .start(&tracer);
//! let forest = capture.forest();
//!
//! let report = forest.check_messaging_conventions(MessagingConventions::V1_44);
//! assert!(report.is_conformant(), "{report}");
//! // The same span is far from what 1.24 asked for.
//! assert!(!forest.check_messaging_conventions(MessagingConventions::V1_24).is_conformant());
//! ```

use std::fmt;

use opentelemetry::Value;
use opentelemetry::trace::SpanKind;

use super::render::kind as kind_name;
use super::tree::{SpanForest, SpanView};
use crate::error::{Error, Result};

/// A version of the messaging semantic conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessagingConventions {
    /// 1.44, current: `messaging.operation.name` and `.type`, names
    /// `{operation} {destination}`, the partition id a string, `receive`
    /// a CLIENT span.
    V1_44,
    /// The 1.24-era names the OpenTelemetry Java agent emits by default:
    /// `messaging.operation` (`publish`, `receive`, `process`), names
    /// `{destination} {operation}`, `messaging.kafka.destination.partition`
    /// an integer.
    V1_24,
}

impl fmt::Display for MessagingConventions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1_44 => "messaging conventions 1.44",
            Self::V1_24 => "messaging conventions 1.24 (legacy)",
        })
    }
}

/// One way a span departs from the conventions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A required attribute is missing.
    MissingRequired {
        /// Its name.
        attribute: &'static str,
    },
    /// An attribute required in this span's situation is missing.
    MissingConditionallyRequired {
        /// Its name.
        attribute: &'static str,
        /// When it is required.
        condition: &'static str,
    },
    /// The operation attribute has a value the version does not define.
    UnknownOperation {
        /// The attribute.
        attribute: &'static str,
        /// Its value.
        value: String,
    },
    /// The span kind is not one the operation allows.
    WrongKind {
        /// The operation.
        operation: String,
        /// What the version allows.
        expected: Vec<&'static str>,
        /// What the span has.
        actual: &'static str,
    },
    /// The span name does not follow the version's format.
    WrongName {
        /// The name the version gives this span.
        expected: String,
        /// The span's name.
        actual: String,
    },
    /// An attribute has the wrong type.
    WrongType {
        /// Its name.
        attribute: &'static str,
        /// The type the version gives it.
        expected: &'static str,
        /// The type it has.
        actual: &'static str,
    },
    /// An attribute name this version deprecates.
    Deprecated {
        /// The deprecated name.
        attribute: &'static str,
        /// What replaces it.
        replacement: &'static str,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingRequired { attribute } => write!(f, "missing required {attribute}"),
            Self::MissingConditionallyRequired {
                attribute,
                condition,
            } => write!(f, "missing {attribute} (required {condition})"),
            Self::UnknownOperation { attribute, value } => {
                write!(
                    f,
                    "{attribute} = {value:?} is not an operation of this version"
                )
            }
            Self::WrongKind {
                operation,
                expected,
                actual,
            } => write!(
                f,
                "a {operation} span is {}, not {actual}",
                expected.join(" or ")
            ),
            Self::WrongName { expected, actual } => {
                write!(f, "name {actual:?} should be {expected:?}")
            }
            Self::WrongType {
                attribute,
                expected,
                actual,
            } => write!(f, "{attribute} is {actual}, should be {expected}"),
            Self::Deprecated {
                attribute,
                replacement,
            } => write!(f, "{attribute} is deprecated: use {replacement}"),
        }
    }
}

/// What the check found on one messaging span.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpanConformance {
    /// The span's index in the forest.
    pub span: usize,
    /// `"name" KIND service=…`, for reports.
    pub label: String,
    /// Every departure; empty when the span conforms.
    pub findings: Vec<Finding>,
}

/// The verdict on every messaging span of a forest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConformanceReport {
    /// The version judged against.
    pub conventions: MessagingConventions,
    /// One entry per messaging span, in capture order.
    pub spans: Vec<SpanConformance>,
}

impl ConformanceReport {
    /// No messaging span has a finding.
    pub fn is_conformant(&self) -> bool {
        self.spans.iter().all(|s| s.findings.is_empty())
    }

    /// The spans with at least one finding.
    pub fn failing(&self) -> impl Iterator<Item = &SpanConformance> {
        self.spans.iter().filter(|s| !s.findings.is_empty())
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failing = self.failing().count();
        writeln!(
            f,
            "{}: {} messaging spans, {} conform, {failing} do not",
            self.conventions,
            self.spans.len(),
            self.spans.len() - failing
        )?;
        for span in self.failing() {
            writeln!(f, "  {}", span.label)?;
            for finding in &span.findings {
                writeln!(f, "    - {finding}")?;
            }
        }
        Ok(())
    }
}

/// Deprecated names and their replacements, in 1.44.
const DEPRECATED_1_44: &[(&str, &str)] = &[
    ("messaging.operation", "messaging.operation.type"),
    (
        "messaging.kafka.destination.partition",
        "messaging.destination.partition.id",
    ),
    ("messaging.kafka.message.offset", "messaging.kafka.offset"),
    (
        "messaging.kafka.consumer.group",
        "messaging.consumer.group.name",
    ),
    ("messaging.client_id", "messaging.client.id"),
    (
        "messaging.message.payload_size_bytes",
        "messaging.message.body.size",
    ),
    ("messaging.destination", "messaging.destination.name"),
    ("net.peer.name", "server.address"),
    ("net.peer.port", "server.port"),
];

/// Deprecated names and their replacements, in 1.24.
const DEPRECATED_1_24: &[(&str, &str)] = &[
    ("messaging.destination", "messaging.destination.name"),
    (
        "messaging.kafka.partition",
        "messaging.kafka.destination.partition",
    ),
    (
        "messaging.kafka.consumer_group",
        "messaging.kafka.consumer.group",
    ),
    ("messaging.kafka.message_key", "messaging.kafka.message.key"),
    ("net.peer.name", "server.address"),
];

/// A value's type, named as the conventions name it.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "boolean",
        Value::I64(_) => "int",
        Value::F64(_) => "double",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        _ => "other",
    }
}

/// Whether `span` describes a messaging operation at all.
fn is_messaging(span: &SpanView<'_>) -> bool {
    span.attributes()
        .iter()
        .any(|kv| kv.key.as_str().starts_with("messaging."))
}

struct Judge<'s, 'f> {
    span: &'s SpanView<'f>,
    findings: Vec<Finding>,
}

impl Judge<'_, '_> {
    fn text(&self, key: &str) -> Option<String> {
        self.span.attribute(key).map(|v| v.as_str().into_owned())
    }

    fn required(&mut self, attribute: &'static str) {
        if self.span.attribute(attribute).is_none() {
            self.findings.push(Finding::MissingRequired { attribute });
        }
    }

    fn required_if(&mut self, attribute: &'static str, applies: bool, condition: &'static str) {
        if applies && self.span.attribute(attribute).is_none() {
            self.findings.push(Finding::MissingConditionallyRequired {
                attribute,
                condition,
            });
        }
    }

    fn typed(&mut self, attribute: &'static str, expected: &'static str) {
        if let Some(value) = self.span.attribute(attribute) {
            let actual = type_name(value);
            if actual != expected {
                self.findings.push(Finding::WrongType {
                    attribute,
                    expected,
                    actual,
                });
            }
        }
    }

    fn deprecated(&mut self, table: &[(&'static str, &'static str)]) {
        for &(attribute, replacement) in table {
            if self.span.attribute(attribute).is_some() {
                self.findings.push(Finding::Deprecated {
                    attribute,
                    replacement,
                });
            }
        }
    }

    fn kind(&mut self, operation: &str, allowed: &[SpanKind]) {
        let actual = self.span.kind();
        if !allowed.contains(actual) {
            self.findings.push(Finding::WrongKind {
                operation: operation.to_owned(),
                expected: allowed.iter().map(kind_name).collect(),
                actual: kind_name(actual),
            });
        }
    }

    fn name(&mut self, expected: String) {
        if self.span.name() != expected {
            self.findings.push(Finding::WrongName {
                expected,
                actual: self.span.name().to_owned(),
            });
        }
    }

    fn check_1_44(&mut self) {
        self.required("messaging.system");
        self.required("messaging.operation.name");
        // Without the new names, the legacy one still tells what the span
        // does, so that its kind and name are judged too.
        let operation = self
            .text("messaging.operation.type")
            .or_else(|| self.text("messaging.operation.name"))
            .or_else(|| {
                self.text("messaging.operation")
                    .map(|legacy| match legacy.as_str() {
                        "publish" => "send".to_owned(),
                        "deliver" => "process".to_owned(),
                        _ => legacy,
                    })
            });
        self.required_if(
            "messaging.operation.type",
            true,
            "when the operation is one of create, send, receive, process, settle",
        );
        let single_destination = self.text("messaging.batch.message_count").is_none();
        self.required_if(
            "messaging.destination.name",
            single_destination,
            "when the operation has a single destination",
        );
        let consuming = matches!(operation.as_deref(), Some("receive" | "process"));
        self.required_if(
            "messaging.consumer.group.name",
            consuming,
            "on a Kafka consumer's spans",
        );
        self.required_if(
            "error.type",
            matches!(
                self.span.status(),
                opentelemetry::trace::Status::Error { .. }
            ),
            "when the operation failed",
        );
        self.typed("messaging.destination.partition.id", "string");
        self.typed("messaging.kafka.offset", "int");
        self.typed("messaging.kafka.message.key", "string");
        self.typed("messaging.consumer.group.name", "string");
        self.typed("messaging.batch.message_count", "int");
        self.typed("server.port", "int");
        self.deprecated(DEPRECATED_1_44);
        if let Some(operation) = operation {
            let allowed: &[SpanKind] = match operation.as_str() {
                "create" => &[SpanKind::Producer],
                "send" => &[SpanKind::Producer, SpanKind::Client],
                "receive" | "settle" => &[SpanKind::Client],
                "process" => &[SpanKind::Consumer],
                _ => {
                    self.findings.push(Finding::UnknownOperation {
                        attribute: "messaging.operation.type",
                        value: operation,
                    });
                    return;
                }
            };
            self.kind(&operation, allowed);
            let name = self
                .text("messaging.operation.name")
                .unwrap_or(operation.clone());
            match self.text("messaging.destination.name") {
                Some(destination) => self.name(format!("{name} {destination}")),
                None => self.name(name),
            }
        }
    }

    fn check_1_24(&mut self) {
        self.required("messaging.system");
        self.required("messaging.operation");
        let single_destination = self.text("messaging.batch.message_count").is_none();
        self.required_if(
            "messaging.destination.name",
            single_destination,
            "when the operation has a single destination",
        );
        let operation = self.text("messaging.operation");
        let consuming = matches!(
            operation.as_deref(),
            Some("receive" | "process" | "deliver")
        );
        self.required_if(
            "messaging.kafka.consumer.group",
            consuming,
            "on a Kafka consumer's spans",
        );
        self.typed("messaging.kafka.destination.partition", "int");
        self.typed("messaging.kafka.message.offset", "int");
        self.typed("messaging.kafka.message.key", "string");
        self.typed("messaging.kafka.consumer.group", "string");
        self.typed("messaging.batch.message_count", "int");
        self.deprecated(DEPRECATED_1_24);
        if let Some(operation) = operation {
            // The Java agent's receive spans are CLIENT in recent releases
            // and CONSUMER in older ones; 1.24 itself asked for CONSUMER.
            let allowed: &[SpanKind] = match operation.as_str() {
                "publish" | "create" => &[SpanKind::Producer],
                "receive" => &[SpanKind::Consumer, SpanKind::Client],
                "process" | "deliver" => &[SpanKind::Consumer],
                _ => {
                    self.findings.push(Finding::UnknownOperation {
                        attribute: "messaging.operation",
                        value: operation,
                    });
                    return;
                }
            };
            self.kind(&operation, allowed);
            match self.text("messaging.destination.name") {
                Some(destination) => self.name(format!("{destination} {operation}")),
                None => self.name(operation),
            }
        }
    }
}

impl SpanForest {
    /// Judges every messaging span (one with a `messaging.*` attribute)
    /// against `conventions`; the report lists each span's findings.
    pub fn check_messaging_conventions(
        &self,
        conventions: MessagingConventions,
    ) -> ConformanceReport {
        let spans = self
            .spans()
            .filter(is_messaging)
            .map(|span| {
                let mut judge = Judge {
                    span: &span,
                    findings: Vec::new(),
                };
                match conventions {
                    MessagingConventions::V1_44 => judge.check_1_44(),
                    MessagingConventions::V1_24 => judge.check_1_24(),
                }
                let findings = judge.findings;
                SpanConformance {
                    span: span.index(),
                    label: format!(
                        "{:?} {} service={}",
                        span.name(),
                        kind_name(span.kind()),
                        span.service()
                    ),
                    findings,
                }
            })
            .collect();
        ConformanceReport { conventions, spans }
    }

    /// Fails (panics) with the report unless every messaging span conforms
    /// to `conventions`, or when there is no messaging span at all.
    #[track_caller]
    pub fn assert_messaging_conventions(&self, conventions: MessagingConventions) {
        self.conclude_assertion(self.try_assert_messaging_conventions(conventions));
    }

    /// [`assert_messaging_conventions`](Self::assert_messaging_conventions),
    /// returning the report instead.
    pub fn try_assert_messaging_conventions(
        &self,
        conventions: MessagingConventions,
    ) -> Result<()> {
        let report = self.check_messaging_conventions(conventions);
        if report.spans.is_empty() {
            return Err(Error::Assertion(format!(
                "expected messaging spans to judge against {conventions}, found none among \
                 {} captured spans; is the right SpanCapture provider in use?",
                self.len()
            )));
        }
        if report.is_conformant() {
            return Ok(());
        }
        Err(Error::Assertion(format!(
            "{report}\nwhat to do: rename or add the attributes listed, or judge against the \
             version your instrumentation emits (the Java agent emits 1.24 unless \
             OTEL_SEMCONV_STABILITY_OPT_IN=messaging or messaging/dup is set)."
        )))
    }
}
