//! What operators watch: a running app's [`Health`], metrics through the `metrics` facade
//! (feature `metrics`), and W3C trace context across services (feature `opentelemetry`). Spans per delivery live in [`middleware`](crate::middleware); the
//! library emits, and only the application installs a recorder or exporter.

mod health;

pub use health::{BrokerHealth, ConsumerHealth, ConsumerState, HEALTH_PING_TIMEOUT, Health};

#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "opentelemetry")]
mod trace_context;

#[cfg(feature = "metrics")]
pub(crate) use metrics::Metrics;
#[cfg(feature = "opentelemetry")]
pub use trace_context::TraceParent;
#[cfg(feature = "opentelemetry")]
pub(crate) use trace_context::{inject, relate};
