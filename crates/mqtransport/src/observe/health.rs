//! [`Health`]: what a running app reports to a liveness or readiness probe.

use std::time::Duration;

use crate::consumer_status::ConsumerStatus;

/// How long [`Running::health`](crate::Running::health) waits for the broker to answer.
pub const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A running app's health: the broker, each consumer, and the publishes awaiting the broker.
///
/// For a container probe: [`is_live`](Self::is_live) (no consumer has stopped: restarting
/// would help) and [`is_ready`](Self::is_ready) (the broker answers and every consumer runs).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the broker answered a ping.
    pub broker: BrokerHealth,
    /// Each consumer, in the order they were added.
    pub consumers: Vec<ConsumerHealth>,
    /// Publishes sent and not yet answered by the broker (confirmed, returned or nacked).
    pub unconfirmed: usize,
}

/// Whether the broker answers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BrokerHealth {
    /// It answered a ping within [`HEALTH_PING_TIMEOUT`].
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// How long the ping took.
    pub ping: Duration,
    /// What the transport says of its connection, without asking the broker: up or lost,
    /// blocked, and how many times it reconnected.
    pub connection: mqtransport_core::ConnectionState,
}

/// What a consumer is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerState {
    /// Taking deliveries.
    Running,
    /// Waiting for the broker to come back (the transport reconnects and resumes it).
    Recovering,
    /// Ended for good, with why (its queue was deleted, the app is shutting down, ...).
    Stopped {
        /// The error that ended it.
        reason: String,
    },
}

/// One consumer's health.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConsumerHealth {
    /// The queue it consumes.
    pub queue: String,
    /// What it is doing.
    pub state: ConsumerState,
    /// Its retry and dead-letter copies refused in a row, and its backoff.
    pub status: ConsumerStatus,
}

impl Health {
    /// No consumer has stopped for good.
    pub fn is_live(&self) -> bool {
        !self
            .consumers
            .iter()
            .any(|c| matches!(c.state, ConsumerState::Stopped { .. }))
    }

    /// The broker answers and every consumer is running.
    pub fn is_ready(&self) -> bool {
        self.broker.reachable && self.consumers.iter().all(|c| c.state == ConsumerState::Running)
    }
}
