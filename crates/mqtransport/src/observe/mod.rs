//! What operators watch: a running app's [`Health`], and metrics through the `metrics` facade
//! (feature `metrics`). Spans per delivery live in [`middleware`](crate::middleware); the
//! library emits, and only the application installs a recorder or exporter.

mod health;

pub use health::{BrokerHealth, ConsumerHealth, ConsumerState, HEALTH_PING_TIMEOUT, Health};

#[cfg(feature = "metrics")]
mod metrics;

#[cfg(feature = "metrics")]
pub(crate) use metrics::Metrics;
