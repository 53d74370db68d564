//! A consumer as its queue sees it: its [`ConsumerSlot`] (credit, the deliveries it holds
//! unsettled, the inbox its stream takes them from) and the [`Owner`] of an unsettled delivery.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use mqtransport_core::topology::integer_argument;
use mqtransport_core::{FieldTable, Result};

use super::ack_batch::{AckBatch, Acks};
use super::message::{Msg, MsgData};

/// The consumer priority that `x-priority` in a consumer's arguments asks for on queue `queue`
/// (0 without it), or RabbitMQ's 406 when it is not an integer.
pub(crate) fn priority_of(arguments: &FieldTable, queue: &str, vhost: &str) -> Result<i64> {
    match arguments.get("x-priority") {
        None => Ok(0),
        Some(v) => integer_argument("x-priority", v, queue, vhost),
    }
}

/// Who holds an unacknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) conn: u64,
    /// 0 for `basic.get`.
    pub(crate) consumer: u64,
}

impl Owner {
    /// The key of its unsettled delivery `tag` in [`QueueState::unacked`]: a `basic.get`
    /// delivery is kept under its connection's id, whose tags it shares (connection and
    /// consumer ids come from one counter, so the keys never meet).
    #[inline]
    pub(crate) fn unacked_key(self, tag: u64) -> (u64, u64) {
        (if self.consumer == 0 { self.conn } else { self.consumer }, tag)
    }
}

/// Messages handed to a consumer, waiting for its stream to pick them up. Their delivery tags
/// are consecutive (a consumer's tags are given in hand-out order), so only the first is kept,
/// and a batch of fresh messages moves in as a whole.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    msgs: VecDeque<MsgData>,
    /// The tag of `msgs[0]`.
    first: u64,
    /// The tags of the redelivered messages among them, ascending (usually none).
    redelivered: VecDeque<u64>,
}

impl Inbox {
    pub(crate) fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The tags waiting here.
    pub(crate) fn tags(&self) -> std::ops::Range<u64> {
        self.first..self.first + self.msgs.len() as u64
    }

    /// Adds the message handed with `tag`, the tag after the last one here.
    #[inline]
    pub(crate) fn push(&mut self, tag: u64, data: MsgData, redelivered: bool) {
        if self.msgs.is_empty() {
            self.first = tag;
        }
        debug_assert_eq!(tag, self.first + self.msgs.len() as u64);
        self.msgs.push_back(data);
        if redelivered {
            self.redelivered.push_back(tag);
        }
    }

    /// Moves the first `n` of `from`, handed with tags from `first` on, to the end: one swap
    /// when they are all of `from` and nothing waits here.
    #[inline]
    pub(crate) fn append(&mut self, first: u64, from: &mut VecDeque<MsgData>, n: usize) {
        if self.msgs.is_empty() {
            self.first = first;
            if n == from.len() {
                std::mem::swap(&mut self.msgs, from);
                return;
            }
        }
        debug_assert_eq!(first, self.first + self.msgs.len() as u64);
        self.msgs.extend(from.drain(..n));
    }

    /// The next message with its tag and redelivered flag.
    pub(crate) fn pop(&mut self) -> Option<(u64, MsgData, bool)> {
        let data = self.msgs.pop_front()?;
        let tag = self.first;
        self.first += 1;
        let redelivered = self.redelivered.front() == Some(&tag);
        if redelivered {
            self.redelivered.pop_front();
        }
        Some((tag, data, redelivered))
    }

    /// Moves everything here into the empty `into`, in one swap.
    pub(crate) fn move_into(&mut self, into: &mut Inbox) {
        debug_assert!(into.is_empty());
        std::mem::swap(self, into);
    }

    pub(crate) fn clear(&mut self) {
        self.msgs.clear();
        self.redelivered.clear();
    }
}

/// The messages handed to one consumer and not yet settled, by delivery tag: `msgs[i]` has tag
/// `base + i`, `None` once settled. Acks in order pop from the front.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) base: u64,
    msgs: VecDeque<Option<Msg>>,
    count: u32,
}

impl Held {
    pub(crate) fn new() -> Self {
        Held {
            base: 1,
            msgs: VecDeque::new(),
            count: 0,
        }
    }

    /// How many are unsettled.
    #[inline]
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// How many stay unsettled once `acks` are applied.
    pub(crate) fn count_after(&self, acks: &Acks) -> usize {
        (self.base..)
            .zip(&self.msgs)
            .filter(|(tag, m)| m.is_some() && *tag > acks.through && !acks.listed.contains(tag))
            .count()
    }

    /// Holds `msg`, handed with the next tag.
    #[inline]
    pub(crate) fn push(&mut self, tag: u64, msg: Msg) {
        debug_assert_eq!(tag, self.base + self.msgs.len() as u64);
        self.msgs.push_back(Some(msg));
        self.count += 1;
    }

    /// Holds copies of `msgs`, fresh from the intake, handed with consecutive tags from `tag`
    /// and numbered from `seq`, in one extend of the list.
    #[inline]
    pub(crate) fn push_fresh<'a>(&mut self, tag: u64, seq: u64, msgs: impl ExactSizeIterator<Item = &'a MsgData>) {
        debug_assert_eq!(tag, self.base + self.msgs.len() as u64);
        let n = msgs.len();
        self.msgs
            .extend((seq..).zip(msgs).map(|(seq, data)| Some(Msg::fresh(seq, data.clone()))));
        self.count += u32::try_from(n).unwrap_or(u32::MAX);
    }

    /// Settles `tag`: its message, if it was held.
    #[inline]
    pub(crate) fn take(&mut self, tag: u64) -> Option<Msg> {
        let i = usize::try_from(tag.checked_sub(self.base)?).ok()?;
        let msg = self.msgs.get_mut(i)?.take()?;
        self.count -= 1;
        self.trim();
        Some(msg)
    }

    /// Settles every tag up to `through`.
    #[inline]
    pub(crate) fn take_through(&mut self, through: u64) {
        let Some(n) = (through + 1).checked_sub(self.base) else {
            return;
        };
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(self.msgs.len());
        // Counted first, then dropped in place: no message is moved out to be dropped.
        let released = self.msgs.range(..n).filter(|m| m.is_some()).count();
        self.msgs.drain(..n);
        self.base += n as u64;
        self.count -= u32::try_from(released).unwrap_or(u32::MAX);
        self.trim();
    }

    fn trim(&mut self) {
        while matches!(self.msgs.front(), Some(None)) {
            self.msgs.pop_front();
            self.base += 1;
        }
    }

    /// Takes every unsettled message with its tag.
    pub(crate) fn drain(&mut self) -> Vec<(u64, Msg)> {
        let base = self.base;
        self.base += self.msgs.len() as u64;
        self.count = 0;
        self.msgs
            .drain(..)
            .enumerate()
            .filter_map(|(i, m)| m.map(|m| (base + i as u64, m)))
            .collect()
    }
}

/// One consumer of a queue.
#[derive(Debug)]
pub(crate) struct ConsumerSlot {
    pub(crate) id: u64,
    pub(crate) conn: u64,
    pub(crate) prefetch: u32,
    pub(crate) no_ack: bool,
    /// An exclusive consumer: no other may consume from the queue meanwhile.
    pub(crate) exclusive: bool,
    /// Its consumer priority (`x-priority`, default 0): consumers of the highest priority with
    /// credit are served first.
    pub(crate) priority: i64,
    pub(crate) next_tag: u64,
    /// Handed and not yet settled (empty for a no-ack consumer).
    pub(crate) held: Held,
    pub(crate) inbox: Inbox,
    pub(crate) waker: Option<Waker>,
    pub(crate) acks: Arc<AckBatch>,
}

impl ConsumerSlot {
    /// A new consumer, with the priority its arguments give (checked by
    /// [`priority_of`]).
    pub(crate) fn new(
        id: u64,
        conn: u64,
        options: &mqtransport_core::ConsumeOptions,
        priority: i64,
        acks: Arc<AckBatch>,
    ) -> ConsumerSlot {
        ConsumerSlot {
            priority,
            id,
            conn,
            prefetch: u32::from(options.prefetch),
            no_ack: options.no_ack,
            exclusive: options.exclusive,
            next_tag: 0,
            held: Held::new(),
            inbox: Inbox::default(),
            waker: None,
            acks,
        }
    }

    /// Deliveries handed to this consumer and not settled, counting acks that its stream has
    /// not applied yet.
    pub(crate) fn unsettled(&self) -> usize {
        if self.held.count() == 0 {
            return 0;
        }
        self.held.count_after(&self.acks.peek())
    }

    #[inline]
    pub(crate) fn has_credit(&self) -> bool {
        self.credit() > 0
    }

    /// How many more deliveries the consumer may be handed.
    #[inline]
    pub(crate) fn credit(&self) -> usize {
        if self.no_ack || self.prefetch == 0 {
            return usize::MAX;
        }
        self.prefetch.saturating_sub(self.held.count()) as usize
    }

    /// Settles one delivery on the locked path (a nack or reject, or an ack out of the batch):
    /// its message, if it was held.
    pub(crate) fn settle(&mut self, tag: u64) -> Option<Msg> {
        let msg = self.held.take(tag);
        self.acks.settled_below(self.held.base);
        msg
    }
}
