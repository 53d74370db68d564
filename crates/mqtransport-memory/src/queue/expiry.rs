//! A queue's timer: message expiry at the head as deadlines come, and the queue's own
//! `x-expires` idle time (what counts as using the queue, and when the idle time starts).

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::QueueCell;
use super::effects::Effects;
use super::state::{QueueState, TimerTick};

impl QueueCell {
    /// The queue has just lost its last consumer: an auto-delete queue goes, and the
    /// `x-expires` idle time starts now.
    pub(super) fn unused_since_now(&self, st: &mut QueueState, fx: &mut Effects) {
        if self.decl.auto_delete {
            fx.auto_delete = true;
        }
        if self.config.expires.is_some() {
            st.last_used = Instant::now();
            self.ensure_timer(st, fx);
        }
    }

    /// Wakes the running timer, or asks for one to be started ([`Effects::start_timer`]).
    pub(super) fn ensure_timer(&self, st: &mut QueueState, fx: &mut Effects) {
        if st.timer_running {
            self.timer.notify_one();
            return;
        }
        st.timer_running = true;
        fx.start_timer = true;
    }

    /// Whether the broker must start the timer of this new queue (one with `x-expires`); it
    /// counts as running from now on.
    pub(crate) fn claim_timer(&self) -> bool {
        let mut st = self.lock();
        if self.config.expires.is_none() || st.timer_running {
            return false;
        }
        st.timer_running = true;
        true
    }

    /// The timer the broker was asked to start could not be (no tokio runtime here): the next
    /// message that can expire asks again.
    pub(crate) fn timer_not_started(&self) {
        self.lock().timer_running = false;
    }

    /// What the timer task waits on besides its deadline.
    pub(crate) fn timer_notify(&self) -> Arc<Notify> {
        Arc::clone(&self.timer)
    }

    /// The timer's look at the queue at `now`: expires messages at the head, and says the next
    /// instant to look again (`None`: the timer stops) and whether the queue itself expired.
    pub(crate) fn timer_tick(&self, now: Instant) -> TimerTick {
        let mut fx = Effects::default();
        let mut st = self.lock();
        if st.deleted {
            st.timer_running = false;
            return TimerTick {
                next: None,
                queue_expired: false,
                fx,
            };
        }
        self.expire_heads(&mut st, &mut fx);
        let head = st.ready.head().and_then(|m| m.expires_at);
        let idle = self
            .config
            .expires
            .filter(|_| st.consumers.is_empty())
            .map(|e| st.last_used + e);
        let next = match (head, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        st.timer_next = next;
        if next.is_none() {
            st.timer_running = false;
        }
        TimerTick {
            next,
            queue_expired: idle.is_some_and(|t| t <= now),
            fx,
        }
    }
}
