//! A fast queue's intake: publishes that no queue state can refuse are appended here without
//! the queue's lock, and the flow control that paces their publishers to the consumers.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use super::message::MsgData;
use crate::flow::FLOW_LIMIT;
use crate::sync::lock;

/// A queue's intake, on cache lines of its own: written by publishers on every message, it does
/// not share a line with the queue state that consumers write.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct IntakeCell(Mutex<Intake>);

/// Messages published to a queue whose publish outcome cannot depend on its state (no TTL, no
/// length limit, no `x-expires`; the message has no `expiration`): the publisher only appends
/// here and wakes the consumers parked on the queue, without taking the queue's lock. Every
/// taking of the queue's lock first moves these messages into the ready list, in order, so
/// that everything that looks at the queue sees them. The queue's own state then stays with
/// its consumers instead of moving between the publisher's core and theirs on every message.
#[derive(Default)]
struct Intake {
    msgs: VecDeque<MsgData>,
    /// Consumers waiting for a message, by consumer id: a publish wakes them all.
    waiting: Vec<(u64, Waker)>,
    /// Flow control (see [`crate::flow`]): the queue's consumers, who can drain the intake.
    consumers: usize,
    /// Messages the consumers took from the intake and have not been handed yet.
    behind: usize,
    /// Publishers waiting for the consumers to take messages.
    blocked: Vec<Waker>,
    /// Times the consumers took messages: the watchdog stalls the queue only if this stands still.
    drains: u64,
    /// The drain count at which the watchdog was last asked to look.
    watched: Option<u64>,
    /// No drain came within the grace: publishers pass until the next one.
    stalled: bool,
}

impl Intake {
    /// Whether a publisher that has just added a message must wait for the consumers.
    fn holds_back(&self) -> bool {
        self.consumers > 0 && !self.stalled && self.msgs.len() + self.behind >= FLOW_LIMIT
    }

    /// The consumers took messages, `behind` of them still to hand out. Waiting publishers look
    /// again: they go on, or wait anew under a watch for this drain.
    fn drained(&mut self, behind: usize) {
        self.behind = behind;
        self.drains += 1;
        self.stalled = false;
        self.release_blocked();
    }

    /// Wakes every waiting publisher to look again.
    fn release_blocked(&mut self) {
        for w in self.blocked.drain(..) {
            w.wake();
        }
    }
}

impl IntakeCell {
    /// Appends a published message and wakes the consumers waiting for one; `true` if the
    /// publisher must now wait for the consumers ([`poll_room`](Self::poll_room)).
    #[inline(always)]
    pub(crate) fn push(&self, data: MsgData) -> bool {
        let mut intake = lock(&self.0);
        intake.msgs.push_back(data);
        // Waking only schedules the consumers' tasks; the buffer keeps its capacity.
        if !intake.waiting.is_empty() {
            for (_, w) in intake.waiting.drain(..) {
                w.wake();
            }
        }
        intake.holds_back()
    }

    /// Moves the intake's messages into the empty `into`, in one swap (the buffers keep their
    /// capacity); `false` if there were none.
    #[inline]
    pub(crate) fn take_into(&self, into: &mut VecDeque<MsgData>) -> bool {
        debug_assert!(into.is_empty());
        let mut intake = lock(&self.0);
        if intake.msgs.is_empty() {
            return false;
        }
        std::mem::swap(&mut intake.msgs, into);
        true
    }

    /// After the intake was taken (`took`) or messages taken from it were handed out: tells
    /// waiting publishers that `behind` taken messages are still to hand out.
    #[inline]
    pub(crate) fn left(&self, behind: usize, took: bool) {
        let mut intake = lock(&self.0);
        if took || intake.behind != behind {
            intake.drained(behind);
        }
    }

    /// The queue now has `consumers` consumers; a queue without consumers holds no publisher
    /// back.
    pub(crate) fn set_consumers(&self, consumers: usize) {
        let mut intake = lock(&self.0);
        intake.consumers = consumers;
        if consumers == 0 {
            intake.release_blocked();
        }
    }

    /// Ready once a publisher that was held back may go on: the consumers took messages, or
    /// they are gone, or they took none within the flow grace. `watch` asks the flow watchdog
    /// to stall the queue after the grace unless the drain count moves past the one given;
    /// `false` if it cannot, and then the publisher does not wait.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>, watch: impl FnOnce(u64) -> bool) -> Poll<()> {
        let mut intake = lock(&self.0);
        if !intake.holds_back() {
            return Poll::Ready(());
        }
        if intake.watched != Some(intake.drains) {
            intake.watched = Some(intake.drains);
            if !watch(intake.drains) {
                intake.stalled = true;
                return Poll::Ready(());
            }
        }
        if !intake.blocked.iter().any(|w| w.will_wake(cx.waker())) {
            intake.blocked.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The watchdog's call: if the consumers took nothing since drain `drains`, publishers stop
    /// waiting for them until they do.
    pub(crate) fn stall(&self, drains: u64) {
        let mut intake = lock(&self.0);
        if intake.drains == drains && !intake.stalled {
            intake.stalled = true;
            intake.release_blocked();
        }
    }

    /// Registers a consumer that found nothing to take, to be woken by the next publish;
    /// `false` if messages arrived meanwhile (the caller looks again instead).
    #[inline]
    pub(crate) fn park(&self, consumer: u64, waker: &Waker) -> bool {
        let mut intake = lock(&self.0);
        if !intake.msgs.is_empty() {
            return false;
        }
        match intake.waiting.iter_mut().find(|(id, _)| *id == consumer) {
            Some((_, w)) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
            }
            None => intake.waiting.push((consumer, waker.clone())),
        }
        true
    }

    /// Forgets a consumer that is going away.
    pub(crate) fn unpark(&self, consumer: u64) {
        lock(&self.0).waiting.retain(|(id, _)| *id != consumer);
    }
}
