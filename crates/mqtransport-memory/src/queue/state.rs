//! The mutable state of a queue, which its lock guards.

use std::collections::VecDeque;

use mqtransport_core::hash::FxHashMap;
use tokio::time::Instant;

use super::consumer::ConsumerSlot;
use super::effects::Effects;
use super::message::{Msg, MsgData};
use super::ready::Ready;

/// How a message returns to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    /// `basic.reject`/`nack` with requeue: quorum queues put it at the back.
    Requeue,
    /// Channel or connection closed, consumer gone: quorum queues put it at the front.
    Closed,
}

/// What a queue holds, under its lock: its ready messages, its consumers and what they hold,
/// and what is held for connections whose consumers went away.
pub(crate) struct QueueState {
    pub(super) ready: Ready,
    /// Unsettled messages not held by a live consumer, by [`Owner::unacked_key`]: `basic.get`
    /// deliveries and those of consumers that went away while their deliveries were out; with
    /// the connection that holds them.
    pub(super) unacked: FxHashMap<(u64, u64), (Msg, u64)>,
    /// In the order they were added: with a single active consumer, the first is the active one.
    pub(super) consumers: Vec<ConsumerSlot>,
    /// Whether any consumer has a priority other than 0 (see [`next_consumer`](Self::next_consumer)).
    pub(super) prioritized: bool,
    /// `x-single-active-consumer`: only the first consumer is served.
    pub(super) single_active: bool,
    pub(super) rr_next: usize,
    pub(super) next_seq: u64,
    pub(super) deleted: bool,
    /// The broker runs a timer task for this queue.
    pub(super) timer_running: bool,
    /// When the running timer looks at the queue next, as its last look decided.
    pub(super) timer_next: Option<Instant>,
    /// Last time the queue was used (for `x-expires`).
    pub(super) last_used: Instant,
    /// Messages taken from the intake in one swap and not yet numbered nor delivered: they
    /// follow everything in `ready`. Consumers are served from here directly; every other
    /// taking of the lock first moves them into `ready` (see [`QueueCell::lock`](super::QueueCell::lock)).
    pub(super) fresh: VecDeque<MsgData>,
}

impl QueueState {
    pub(super) fn new(max_priority: Option<u8>, single_active: bool) -> Self {
        QueueState {
            ready: Ready::new(max_priority),
            unacked: FxHashMap::default(),
            consumers: Vec::new(),
            prioritized: false,
            single_active,
            rr_next: 0,
            next_seq: 0,
            deleted: false,
            timer_running: false,
            timer_next: None,
            last_used: Instant::now(),
            fresh: VecDeque::new(),
        }
    }

    /// Numbers the unnumbered messages and appends them to `ready`, in order.
    pub(super) fn fresh_to_ready(&mut self) {
        while let Some(data) = self.fresh.pop_front() {
            let msg = self.fresh(data, None);
            self.ready.push_back(msg);
        }
    }

    /// A newly published message, numbered in publish order.
    pub(super) fn fresh(&mut self, data: MsgData, expires_at: Option<Instant>) -> Msg {
        self.next_seq += 1;
        Msg {
            seq: self.next_seq,
            data,
            redelivered: false,
            returns: 0,
            expires_at,
        }
    }

    /// The index of the next consumer with credit, round-robin from the last one served, among
    /// the consumers of the highest priority that have credit, as RabbitMQ chooses. With a
    /// single active consumer, only the first consumer is ever chosen.
    #[inline]
    pub(super) fn next_consumer(&self) -> Option<usize> {
        if self.single_active {
            return self.consumers.first().filter(|s| s.has_credit()).map(|_| 0);
        }
        let n = self.consumers.len();
        let start = if self.rr_next < n { self.rr_next } else { 0 };
        let mut order = (start..n).chain(0..start);
        if !self.prioritized {
            return order.find(|&i| self.consumers[i].has_credit());
        }
        let top = self
            .consumers
            .iter()
            .filter(|s| s.has_credit())
            .map(|s| s.priority)
            .max()?;
        order.find(|&i| self.consumers[i].priority == top && self.consumers[i].has_credit())
    }

    /// Whether the next consumer may be handed every message its credit allows at once: it is
    /// the only one that can be served.
    #[inline]
    pub(super) fn one_served(&self) -> bool {
        self.consumers.len() == 1 || self.single_active
    }

    /// Ready messages, unsettled deliveries (counting acks not yet applied), consumers.
    pub(super) fn counts(&self) -> (usize, usize, usize) {
        let unsettled = self.unacked.len() + self.consumers.iter().map(ConsumerSlot::unsettled).sum::<usize>();
        (self.ready.len(), unsettled, self.consumers.len())
    }
}

/// What a consumer's stream found ([`QueueCell::refill`](super::QueueCell::refill)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refill {
    /// Deliveries moved into the stream's inbox.
    Took,
    /// Nothing to take; the stream's waker is kept.
    Empty,
    /// The consumer is no longer in the queue: the queue was deleted, or the consumer was
    /// removed (its connection closed).
    Gone { deleted: bool },
}

/// What happened to a published message in this queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Accepted,
    /// Accepted, and the queue's consumers are behind: the publisher should wait for them
    /// ([`QueueCell::poll_room`](super::QueueCell::poll_room)).
    AcceptedAhead,
    Rejected,
}

/// What a look of the timer found (see [`QueueCell::timer_tick`](super::QueueCell::timer_tick)).
pub(crate) struct TimerTick {
    pub(crate) next: Option<Instant>,
    /// The queue was unused for its `x-expires`: the broker deletes it.
    pub(crate) queue_expired: bool,
    pub(crate) fx: Effects,
}
