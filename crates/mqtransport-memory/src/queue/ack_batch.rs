//! The acks of one consumer, taken without the queue's lock and applied by its stream.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;

use crate::sync::lock;

/// The acks of one consumer, applied by its stream in one go under the queue lock.
///
/// Acks in delivery order, the common case, need no lock: `through` says that every tag up to
/// it is acked, and an ack of the next tag is one compare-and-swap. Other acks wait in a list.
#[derive(Debug, Default)]
pub(crate) struct AckBatch {
    /// Every tag up to this one is acked; [`CLOSED`] once the stream is gone.
    through: AtomicU64,
    /// The stream waits for acks to release its credit: an in-order ack must wake it.
    parked: AtomicBool,
    inner: Mutex<AckBatchInner>,
}

/// Set in [`AckBatch::through`] once the stream is gone: acks then take the locked path.
const CLOSED: u64 = 1 << 63;

#[derive(Debug, Default)]
struct AckBatchInner {
    /// Acks out of order.
    acks: Vec<u64>,
    /// The stream is parked: the first pending ack wakes it so that its credit is released.
    waker: Option<Waker>,
}

/// Acks for a stream to apply: everything up to `through`, and the listed tags.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    pub(crate) through: u64,
    pub(crate) listed: Vec<u64>,
}

impl AckBatch {
    /// Queues an ack; `false` if the stream is gone and the caller must apply it itself.
    #[inline]
    pub(crate) fn push(&self, tag: u64) -> bool {
        let cur = self.through.load(Ordering::Acquire);
        if cur & CLOSED != 0 {
            return false;
        }
        if tag == cur + 1
            && self
                .through
                .compare_exchange(cur, tag, Ordering::SeqCst, Ordering::Acquire)
                .is_ok()
        {
            if self.parked.load(Ordering::SeqCst) {
                self.wake_parked();
            }
            return true;
        }
        self.push_listed(tag)
    }

    /// Wakes the parked stream after an in-order ack.
    #[cold]
    fn wake_parked(&self) {
        let waker = lock(&self.inner).waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// [`push`](Self::push) for an ack out of order: it waits in the list.
    #[cold]
    fn push_listed(&self, tag: u64) -> bool {
        let waker = {
            let mut b = lock(&self.inner);
            // `close` sets the bit before it takes this lock: seen here, or this ack is in the
            // list that `close` takes.
            if self.through.load(Ordering::SeqCst) & CLOSED != 0 {
                return false;
            }
            b.acks.push(tag);
            if b.acks.len() == 1 { b.waker.take() } else { None }
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Takes the pending acks into `out` (its list buffer reused) and forgets the waker.
    pub(crate) fn take(&self, out: &mut Acks) {
        self.parked.store(false, Ordering::SeqCst);
        out.through = self.through.load(Ordering::Acquire) & !CLOSED;
        let mut b = lock(&self.inner);
        b.waker = None;
        std::mem::swap(&mut b.acks, &mut out.listed);
    }

    /// Registers the parked stream's waker unless acks arrived since `applied` (then returns
    /// false and the stream looks again).
    pub(crate) fn park(&self, waker: &Waker, applied: u64) -> bool {
        let mut b = lock(&self.inner);
        if !b.acks.is_empty() {
            return false;
        }
        if !b.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            b.waker = Some(waker.clone());
        }
        self.parked.store(true, Ordering::SeqCst);
        if self.through.load(Ordering::SeqCst) & !CLOSED != applied {
            self.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The acks queued and not yet applied, left in place for the stream.
    pub(crate) fn peek(&self) -> Acks {
        let through = self.through.load(Ordering::Acquire) & !CLOSED;
        Acks {
            through,
            listed: lock(&self.inner).acks.clone(),
        }
    }

    /// Every tag below `base` is settled: lets in-order acks resume from there after acks out
    /// of order (or nacks) left `through` behind.
    #[inline]
    pub(crate) fn settled_below(&self, base: u64) {
        self.through.fetch_max(base.saturating_sub(1), Ordering::AcqRel);
    }

    /// Closes the batch (the stream is going away) and returns what was pending.
    pub(crate) fn close(&self) -> Acks {
        let through = self.through.fetch_or(CLOSED, Ordering::SeqCst) & !CLOSED;
        let mut b = lock(&self.inner);
        b.waker = None;
        Acks {
            through,
            listed: std::mem::take(&mut b.acks),
        }
    }
}
