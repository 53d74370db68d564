//! What became of a settled delivery ([`Disposition`]), and who is told ([`SettleObserver`]:
//! the `on_settle` hooks, the testing support, metrics).

use std::time::Duration;

use mqtransport_core::Envelope;

/// What the runtime did with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Acknowledged.
    Acked,
    /// Put back in the queue at once.
    Requeued,
    /// To come back after `delay` as attempt `attempt + 1`: published again and acked, or,
    /// where the broker can hide a message for that long (SQS), returned to its queue in place.
    Retried {
        /// The attempt that failed.
        attempt: u32,
        /// How long until the next attempt.
        delay: Duration,
        /// Why it failed.
        reason: String,
    },
    /// Moved to the dead-letter queue (`Some`) or rejected to the broker's dead-letter
    /// exchange (`None`).
    DeadLettered {
        /// The dead-letter queue, if the framework published it there.
        queue: Option<String>,
        /// Why.
        reason: String,
    },
    /// A request whose caller had given up waiting (it came past its
    /// [`headers::DEADLINE`](mqtransport_core::headers::DEADLINE)): acknowledged without running the handler.
    Expired,
    /// The retry or dead-letter copy could not be published, so the delivery went back to
    /// the queue instead (nothing is lost; it comes back redelivered).
    Returned {
        /// What failed.
        reason: String,
    },
    /// A consumer that acknowledges on receipt ([`Acknowledge`](crate::Acknowledge)) failed to
    /// handle the message and could not keep it in a dead-letter queue: it is gone.
    Dropped {
        /// Why it failed, and why it was not kept.
        reason: String,
    },
}

impl Disposition {
    /// A short name for spans and metrics: `acked`, `requeued`, `retried`, `dead_lettered`,
    /// `expired`, `returned`, `dropped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Acked => "acked",
            Disposition::Requeued => "requeued",
            Disposition::Retried { .. } => "retried",
            Disposition::DeadLettered { .. } => "dead_lettered",
            Disposition::Expired => "expired",
            Disposition::Returned { .. } => "returned",
            Disposition::Dropped { .. } => "dropped",
        }
    }
}

/// Sees every settled delivery (the testing support records them).
pub(crate) trait SettleObserver: Send + Sync {
    /// `elapsed`: from the delivery reaching the consumer to its settling.
    fn settled(&self, queue: &str, envelope: &Envelope, disposition: &Disposition, elapsed: Duration);
}

/// One settled delivery, as an [`AppBuilder::on_settle`](crate::AppBuilder::on_settle) hook
/// sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SettledDelivery<'a> {
    /// The queue it was consumed from.
    pub queue: &'a str,
    /// The message as delivered.
    pub envelope: &'a Envelope,
    /// What the runtime did with it.
    pub disposition: &'a Disposition,
    /// From the delivery reaching the consumer to its settling.
    pub elapsed: Duration,
}

/// A closure as a [`SettleObserver`].
pub(crate) struct OnSettle<F>(pub(crate) F);

impl<F: Fn(SettledDelivery<'_>) + Send + Sync> SettleObserver for OnSettle<F> {
    fn settled(&self, queue: &str, envelope: &Envelope, disposition: &Disposition, elapsed: Duration) {
        (self.0)(SettledDelivery {
            queue,
            envelope,
            disposition,
            elapsed,
        });
    }
}
