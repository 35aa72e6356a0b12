//! The Prometheus data model as every edgewatch role writes and reads it.
//!
//! The collector checks a scraped `le`/`quantile` label against its canonical
//! Go form and the aggregator writes bucket bounds back in that form; both use
//! [`float`], so the label values a scrape target wrote reach `/federate`
//! byte for byte.
//!
//! - [`float`]: Go's `strconv` float formatting and parsing, and expfmt's
//!   special cases for the text and OpenMetrics formats.
//! - [`name`]: which strings are valid metric and label names.
//! - [`matcher`]: one label matcher (`=`, `!=`, `=~`, `!~`) with Prometheus'
//!   fully anchored regexes; PromQL selectors and Alertmanager matchers keep
//!   their own parsers and build this.
//! - [`relabel`]: Prometheus' relabel rules (`relabel_configs`,
//!   `write_relabel_configs`), validated at config load and applied to one
//!   label set without allocating unless a label changes.
//! - [`time`]: wall-clock milliseconds and Go-compatible RFC 3339.

pub mod float;
pub mod matcher;
pub mod name;
pub mod relabel;
pub mod time;

pub use matcher::{MatchOp, MatchType, Matcher, RegexError};
pub use name::{valid_label_name, valid_metric_name, METRIC_NAME};
