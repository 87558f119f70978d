//! The span forest: captured spans grouped into traces ([`tree`]), checked
//! against expected shapes ([`expect`]) and rendered for snapshots and
//! failure reports ([`render`]).

pub mod conventions;
pub mod expect;
pub mod hops;
pub mod render;
pub mod tree;

pub use conventions::{ConformanceReport, MessagingConventions};
pub use expect::{AttributeMatcher, ExpectedLink, ExpectedSpan, ValuePredicate};
pub use render::Render;
pub use tree::{CapturedSpan, Problem, SpanForest, SpanView, Trace};
