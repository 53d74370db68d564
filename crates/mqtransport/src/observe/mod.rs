//! What operators watch: metrics through the `metrics` facade (feature `metrics`). Spans per
//! delivery live in [`middleware`](crate::middleware); the library emits, and only the
//! application installs a recorder or exporter.

#[cfg(feature = "metrics")]
mod metrics;

#[cfg(feature = "metrics")]
pub(crate) use metrics::Metrics;
