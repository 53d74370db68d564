//! [`ConnectionState`]: what a transport says of its connection to the broker, for health and
//! metrics.

/// The state of a transport's connection(s) to the broker, as
/// [`Transport::connection_state`](crate::Transport::connection_state) reports it.
///
/// A transport without a connection to lose (the embedded broker; SQS, which speaks HTTP per
/// request) is always [`connected`](Self::connected) with no reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionState {
    /// Every connection is up (a blocked one counts as up).
    pub connected: bool,
    /// The broker blocked publishing (RabbitMQ's `connection.blocked`, e.g. a memory alarm).
    pub blocked: bool,
    /// Connections made again after one was lost, over the transport's life.
    pub reconnects: u64,
}

impl ConnectionState {
    /// Up, unblocked, `reconnects` connections made again so far.
    pub fn up(reconnects: u64) -> Self {
        ConnectionState {
            connected: true,
            blocked: false,
            reconnects,
        }
    }

    /// Lost (or closed), `reconnects` connections made again so far.
    pub fn down(reconnects: u64) -> Self {
        ConnectionState {
            connected: false,
            blocked: false,
            reconnects,
        }
    }

    /// This state, with publishing blocked or not.
    pub fn with_blocked(mut self, blocked: bool) -> Self {
        self.blocked = blocked;
        self
    }
}

impl Default for ConnectionState {
    fn default() -> Self {
        ConnectionState::up(0)
    }
}
