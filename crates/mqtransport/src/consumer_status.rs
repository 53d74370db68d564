//! What a running consumer reports about itself ([`ConsumerStatus`]), and the backoff of a
//! consumer whose retries or dead letters the broker refuses.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The state of one consumer of a running app (see [`Running::consumers`](crate::Running::consumers)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStatus {
    /// The queue it consumes.
    pub queue: String,
    /// Retry or dead-letter copies refused in a row (e.g. by a dead-letter queue at its
    /// length limit with `reject-publish`). While it is above zero, each failing delivery is
    /// requeued only after [`backoff`](Self::backoff): the consumer does not spin.
    pub settle_failures: u32,
    /// The pause before the next such delivery is requeued.
    pub backoff: Option<Duration>,
    /// Why the last copy was refused.
    pub last_settle_error: Option<String>,
    /// Since when copies have been refused.
    pub failing_since: Option<SystemTime>,
}

/// The first pause after a refused copy; it doubles with each refusal in a row.
pub(crate) const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Refused retry and dead-letter copies of one consumer, in a row.
#[derive(Debug, Default)]
pub(crate) struct SettleHealth {
    state: Mutex<Failing>,
}

#[derive(Debug, Default)]
struct Failing {
    in_a_row: u32,
    last_error: Option<String>,
    since: Option<SystemTime>,
}

impl SettleHealth {
    /// Records a refused copy; returns how long to wait before requeueing its delivery.
    pub(crate) fn refused(&self, error: &str) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.in_a_row = s.in_a_row.saturating_add(1);
        s.last_error = Some(error.to_owned());
        s.since.get_or_insert_with(SystemTime::now);
        pause(s.in_a_row)
    }

    /// Records a copy the broker took: the consumer is healthy again.
    pub(crate) fn taken(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.in_a_row > 0 {
            *s = Failing::default();
        }
    }

    pub(crate) fn status(&self, queue: &str) -> ConsumerStatus {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        ConsumerStatus {
            queue: queue.to_owned(),
            settle_failures: s.in_a_row,
            backoff: (s.in_a_row > 0).then(|| pause(s.in_a_row + 1)),
            last_settle_error: s.last_error.clone(),
            failing_since: s.since,
        }
    }
}

/// The pause after `n` refusals in a row: 1 s, 2 s, 4 s, … up to a minute.
fn pause(n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(16);
    FIRST_PAUSE.saturating_mul(1 << doublings).min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_a_minute_and_resets() {
        let h = SettleHealth::default();
        let pauses: Vec<u64> = (0..8).map(|_| h.refused("full").as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
        let s = h.status("q");
        assert_eq!(s.settle_failures, 8);
        assert_eq!(s.last_settle_error.as_deref(), Some("full"));
        h.taken();
        assert_eq!(h.status("q").settle_failures, 0);
        assert_eq!(h.refused("again"), FIRST_PAUSE);
    }
}
