//! What operators watch: a running app's [`Health`], metrics through the `metrics` facade
//! (feature `metrics`), the `send` and `settle` spans, and W3C trace context across services
//! (feature `opentelemetry`). A delivery's `process` span is made by
//! [`TraceLayer`](crate::middleware::TraceLayer). The library emits; only the application
//! installs a recorder, subscriber or exporter.

mod health;
mod spans;

pub use health::{BrokerHealth, ConsumerHealth, ConsumerState, HEALTH_PING_TIMEOUT, Health};

#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "opentelemetry")]
mod trace_context;

#[cfg(feature = "metrics")]
pub use metrics::METRICS_SAMPLE_INTERVAL;
#[cfg(feature = "metrics")]
pub(crate) use metrics::{Handling, Metrics};
pub(crate) use spans::{publish_outcome, send_span, settle_span, spans_wanted};
#[cfg(feature = "opentelemetry")]
pub use trace_context::TraceParent;
#[cfg(feature = "opentelemetry")]
pub(crate) use trace_context::{inject, relate};
