//! Flow control: a publisher that runs ahead of a queue's consumers is held back, as RabbitMQ's
//! credit flow holds back a publishing channel whose queue cannot keep up.
//!
//! A publish to a queue's intake is accepted at once; when the queue then has [`FLOW_LIMIT`] or
//! more messages that its consumers have not taken yet, the publisher's `publish` returns only
//! once they have taken some. A publisher faster than the consumers of its queue is so paced to
//! them, and the backlog between them stays bounded instead of growing with every message. A
//! queue whose consumers take nothing for a while still grows, as on RabbitMQ.
//!
//! Waiting must never become a deadlock: the consumer may have no credit left, or its task may
//! be the one publishing (a handler that publishes to its own queue before it acks). So the
//! publisher waits only while the queue has consumers, and at most [`FLOW_GRACE`]: a watchdog
//! thread then marks the queue stalled, and publishers pass without waiting until the consumers
//! next take messages. The outcome of a publish never depends on this timing, only its latency.

use std::sync::{Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// A queue the watchdog can stall: its publishers stop waiting for its consumers.
pub(crate) trait Stalls: Send + Sync {
    /// Stalls the queue if its consumers took nothing since drain `drains`.
    fn stall(&self, drains: u64);
}

/// Messages waiting for a queue's consumers at which a publisher waits for them.
pub const FLOW_LIMIT: usize = 1024;

/// The longest a publisher waits while a queue's consumers take no messages at all.
pub const FLOW_GRACE: Duration = Duration::from_millis(1);

/// A queue to stall at an instant unless its drain count has moved past the one given.
type Due = (Instant, Weak<dyn Stalls>, u64);

/// Queues with publishers waiting, each with the drain count it had when they began to wait.
struct Watchdog {
    due: Mutex<Vec<Due>>,
    changed: Condvar,
}

/// Asks the watchdog to stall `queue` in [`FLOW_GRACE`] unless its consumers take messages
/// meanwhile (its drain count moves past `drains`). `false` if there is no watchdog (its thread
/// could not start): the caller must then not wait.
pub(crate) fn watch(queue: Weak<dyn Stalls>, drains: u64) -> bool {
    let Some(w) = watchdog() else { return false };
    let mut due = lock(&w.due);
    // Every deadline is the grace from now, so a new one is never earlier than those already
    // waiting: the watchdog needs waking only when it waits for none.
    let idle = due.is_empty();
    due.push((Instant::now() + FLOW_GRACE, queue, drains));
    drop(due);
    if idle {
        w.changed.notify_one();
    }
    true
}

static WATCHDOG: Watchdog = Watchdog {
    due: Mutex::new(Vec::new()),
    changed: Condvar::new(),
};

/// The watchdog, its thread started on first use; `None` if the thread could not start.
fn watchdog() -> Option<&'static Watchdog> {
    static STARTED: OnceLock<bool> = OnceLock::new();
    let started = *STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("mqt-memory-flow".into())
            .spawn(|| run(&WATCHDOG))
            .is_ok()
    });
    started.then_some(&WATCHDOG)
}

fn run(w: &'static Watchdog) {
    let mut due = lock(&w.due);
    loop {
        let now = Instant::now();
        let mut expired = Vec::new();
        due.retain(|(at, q, drains)| {
            if *at <= now {
                expired.push((q.clone(), *drains));
                false
            } else {
                true
            }
        });
        if !expired.is_empty() {
            drop(due);
            for (q, drains) in expired {
                if let Some(q) = q.upgrade() {
                    q.stall(drains);
                }
            }
            due = lock(&w.due);
            continue;
        }
        due = match due.iter().map(|(at, _, _)| *at).min() {
            None => w.changed.wait(due).unwrap_or_else(std::sync::PoisonError::into_inner),
            Some(next) => {
                w.changed
                    .wait_timeout(due, next.saturating_duration_since(now))
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            }
        };
    }
}
