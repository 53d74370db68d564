//! What a queue operation asks to be done once the queue's lock is released: the queue returns
//! [`Effects`] and the broker applies them, so that no queue calls back into the broker.

use std::task::Waker;

use super::dead_letter::DeadLetter;

/// Work to do once the queue lock is released.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) wake: Wakers,
    /// The queue lost its last consumer and is auto-delete.
    pub(crate) auto_delete: bool,
    /// The queue holds a message that can expire and has no timer task yet.
    pub(crate) start_timer: bool,
}

impl Effects {
    pub(crate) fn is_empty(&self) -> bool {
        self.dead.is_empty() && self.wake.is_empty() && !self.auto_delete && !self.start_timer
    }
}

/// Wakers to wake after the lock is released. One is the common case (a publish wakes the one
/// consumer it handed a message to), kept inline so that waking allocates nothing.
#[derive(Default)]
pub(crate) struct Wakers {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl Wakers {
    pub(crate) fn push(&mut self, waker: Waker) {
        match self.first {
            None => self.first = Some(waker),
            Some(_) => self.rest.push(waker),
        }
    }

    pub(crate) fn extend(&mut self, wakers: impl IntoIterator<Item = Waker>) {
        for w in wakers {
            self.push(w);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(crate) fn wake_all(self) {
        for w in self.first.into_iter().chain(self.rest) {
            w.wake();
        }
    }
}
