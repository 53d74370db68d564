//! One queue of the embedded broker: ready messages, unacknowledged ones, consumers, expiry,
//! overflow and dead-lettering. Everything here runs under the queue's own lock, except the
//! publishes that no state can refuse, which go through the queue's [`Intake`] and are moved in
//! by the next taking of the lock; effects that reach other queues (dead letters) or tasks
//! (wake-ups) are collected and run after the lock is released.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Waker;
use std::time::{Duration, SystemTime};

use mqtransport_core::envelope::headers::{X_DEATH, X_DELIVERY_COUNT};
use mqtransport_core::hash::FxHashMap;
use mqtransport_core::{Acker, Delivery, Envelope, FieldTable, FieldValue, Queue, QueueType, ShortStr};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::BrokerInner;
use crate::flow::{self, FLOW_LIMIT};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a published message carries: the envelope and how it was routed. Every part clones
/// without allocating, so fan-out copies and deliveries share it. The common case, a publish
/// through the default exchange to the queue the routing key names, stores no route at all:
/// the message is then 48 bytes in every list it passes through.
///
/// The route comes first, in a fixed layout: a consumer reads it on its own (to name the
/// delivery's exchange and key) and copies the envelope whole into the delivery, so the two
/// never share the stores and loads of one copy. With the envelope first, its leading word
/// was stored alone and then loaded within a wider copy, which the processor cannot forward
/// from the store buffer (4 queues: 5% more CPU per message).
#[derive(Debug, Clone)]
#[repr(C)]
pub(crate) struct MsgData {
    pub(crate) route: Route,
    pub(crate) envelope: Envelope,
}

/// How a message was routed to the queue that holds it. `None` is the default exchange with the
/// holding queue's name as the routing key and no `CC` keys; the rest share one allocation
/// between the copies of a routed message.
#[derive(Debug, Clone, Default)]
pub(crate) struct Route(Option<Arc<Routed>>);

#[derive(Debug)]
pub(crate) struct Routed {
    exchange: ShortStr,
    routing_key: ShortStr,
    /// `CC` keys (for `x-death` routing keys).
    cc: Box<[ShortStr]>,
}

impl Route {
    /// The default exchange, to the queue the routing key names.
    pub(crate) const TO_QUEUE: Route = Route(None);

    /// A message published to `exchange` with `routing_key` (and `cc` keys). A thread that
    /// publishes again with the exchange and key of its last routed publish shares that route
    /// instead of allocating one: a producer usually repeats them.
    pub(crate) fn routed(exchange: ShortStr, routing_key: ShortStr, cc: Box<[ShortStr]>) -> Route {
        thread_local! {
            /// This thread's last route without `CC` keys.
            static LAST: std::cell::RefCell<Option<Arc<Routed>>> = const { std::cell::RefCell::new(None) };
        }
        if cc.is_empty() {
            let shared = LAST.with(|last| {
                let mut last = last.try_borrow_mut().ok()?;
                if !last
                    .as_ref()
                    .is_some_and(|r| r.exchange == exchange && r.routing_key == routing_key)
                {
                    *last = Some(Arc::new(Routed {
                        exchange: exchange.clone(),
                        routing_key: routing_key.clone(),
                        cc: Box::default(),
                    }));
                }
                last.clone()
            });
            if shared.is_some() {
                return Route(shared);
            }
        }
        Route(Some(Arc::new(Routed {
            exchange,
            routing_key,
            cc,
        })))
    }

    /// The delivery of `envelope`, held by the queue `queue`, with the exchange and routing key
    /// it was published with, built in one piece.
    #[inline]
    pub(crate) fn deliver(&self, queue: &ShortStr, envelope: Envelope, redelivered: bool, acker: Acker) -> Delivery {
        match &self.0 {
            None => Delivery::new(envelope, ShortStr::EMPTY, queue.clone(), redelivered, acker),
            Some(r) => Delivery::new(envelope, r.exchange.clone(), r.routing_key.clone(), redelivered, acker),
        }
    }

    /// The exchange, routing key and `CC` keys of a message held by the queue `queue`.
    pub(crate) fn parts<'a>(&'a self, queue: &'a ShortStr) -> (&'a ShortStr, &'a ShortStr, &'a [ShortStr]) {
        static EMPTY: ShortStr = ShortStr::EMPTY;
        match &self.0 {
            None => (&EMPTY, queue, &[]),
            Some(r) => (&r.exchange, &r.routing_key, &r.cc),
        }
    }
}

/// A message in one queue.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    /// Publish order within this queue: requeued classic messages go back to their place by it.
    pub(crate) seq: u64,
    pub(crate) data: MsgData,
    pub(crate) redelivered: bool,
    /// Times returned to the queue (quorum `x-delivery-count`).
    pub(crate) returns: u32,
    pub(crate) expires_at: Option<Instant>,
}

impl Msg {
    /// A message straight from the intake: never delivered, no expiry.
    fn fresh(seq: u64, data: MsgData) -> Msg {
        Msg {
            seq,
            data,
            redelivered: false,
            returns: 0,
            expires_at: None,
        }
    }
}

/// Why a message was dead-lettered (the `x-death` reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Rejected,
    Expired,
    MaxLen,
    DeliveryLimit,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::MaxLen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message leaving a queue for its dead-letter exchange.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub(crate) exchange: ShortStr,
    pub(crate) routing_keys: Vec<ShortStr>,
    pub(crate) envelope: Envelope,
}

/// Work to do once the queue lock is released.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) wake: Wakers,
    /// The queue lost its last consumer and is auto-delete.
    pub(crate) auto_delete: bool,
}

impl Effects {
    pub(crate) fn is_empty(&self) -> bool {
        self.dead.is_empty() && self.wake.is_empty() && !self.auto_delete
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
    fn push(&mut self, tag: u64, data: MsgData, redelivered: bool) {
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
    fn append(&mut self, first: u64, from: &mut VecDeque<MsgData>, n: usize) {
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
    fn peek(&self) -> Acks {
        let through = self.through.load(Ordering::Acquire) & !CLOSED;
        Acks {
            through,
            listed: lock(&self.inner).acks.clone(),
        }
    }

    /// Every tag below `base` is settled: lets in-order acks resume from there after acks out
    /// of order (or nacks) left `through` behind.
    fn settled_below(&self, base: u64) {
        self.through.fetch_max(base.saturating_sub(1), Ordering::AcqRel);
    }

    /// Closes the batch (the stream is going away) and returns what was pending.
    fn close(&self) -> Acks {
        let through = self.through.fetch_or(CLOSED, Ordering::SeqCst) & !CLOSED;
        let mut b = lock(&self.inner);
        b.waker = None;
        Acks {
            through,
            listed: std::mem::take(&mut b.acks),
        }
    }
}

/// The messages handed to one consumer and not yet settled, by delivery tag: `msgs[i]` has tag
/// `base + i`, `None` once settled. Acks in order pop from the front.
#[derive(Debug)]
pub(crate) struct Held {
    base: u64,
    msgs: VecDeque<Option<Msg>>,
    count: u32,
}

impl Held {
    fn new() -> Self {
        Held {
            base: 1,
            msgs: VecDeque::new(),
            count: 0,
        }
    }

    /// How many are unsettled.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// How many stay unsettled once `acks` are applied.
    fn count_after(&self, acks: &Acks) -> usize {
        (self.base..)
            .zip(&self.msgs)
            .filter(|(tag, m)| m.is_some() && *tag > acks.through && !acks.listed.contains(tag))
            .count()
    }

    /// Holds `msg`, handed with the next tag.
    fn push(&mut self, tag: u64, msg: Msg) {
        debug_assert_eq!(tag, self.base + self.msgs.len() as u64);
        self.msgs.push_back(Some(msg));
        self.count += 1;
    }

    /// Holds copies of `msgs`, fresh from the intake, handed with consecutive tags from `tag`
    /// and numbered from `seq`, in one extend of the list.
    fn push_fresh<'a>(&mut self, tag: u64, seq: u64, msgs: impl ExactSizeIterator<Item = &'a MsgData>) {
        debug_assert_eq!(tag, self.base + self.msgs.len() as u64);
        let n = msgs.len();
        self.msgs
            .extend((seq..).zip(msgs).map(|(seq, data)| Some(Msg::fresh(seq, data.clone()))));
        self.count += u32::try_from(n).unwrap_or(u32::MAX);
    }

    /// Settles `tag`: its message, if it was held.
    pub(crate) fn take(&mut self, tag: u64) -> Option<Msg> {
        let i = usize::try_from(tag.checked_sub(self.base)?).ok()?;
        let msg = self.msgs.get_mut(i)?.take()?;
        self.count -= 1;
        self.trim();
        Some(msg)
    }

    /// Settles every tag up to `through`.
    fn take_through(&mut self, through: u64) {
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

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) id: u64,
    pub(crate) conn: u64,
    pub(crate) prefetch: u32,
    pub(crate) no_ack: bool,
    /// An exclusive consumer: no other may consume from the queue meanwhile.
    pub(crate) exclusive: bool,
    pub(crate) next_tag: u64,
    /// Handed and not yet settled (empty for a no-ack consumer).
    pub(crate) held: Held,
    pub(crate) inbox: Inbox,
    pub(crate) waker: Option<Waker>,
    pub(crate) acks: Arc<AckBatch>,
}

impl Slot {
    /// A new consumer.
    pub(crate) fn new(id: u64, conn: u64, options: &mqtransport_core::ConsumeOptions, acks: Arc<AckBatch>) -> Slot {
        Slot {
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

    fn has_credit(&self) -> bool {
        self.credit() > 0
    }

    /// How many more deliveries the consumer may be handed.
    fn credit(&self) -> usize {
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

/// Messages published to a queue whose publish outcome cannot depend on its state (no TTL, no
/// length limit, no `x-expires`; the message has no `expiration`): the publisher only appends
/// here and wakes the consumers parked on the queue, without taking the queue's lock. Every
/// taking of the queue's lock first moves these messages into the ready list, in order, so
/// that everything that looks at the queue sees them. The queue's own state then stays with
/// its consumers instead of moving between the publisher's core and theirs on every message.
#[derive(Default)]
pub(crate) struct Intake {
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

/// A value on cache lines of its own: the intake, written by publishers on every message, does
/// not share a line with the queue state that consumers write.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Parsed queue arguments.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) kind: QueueType,
    pub(crate) ttl: Option<Duration>,
    pub(crate) max_len: Option<usize>,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) overflow: Overflow,
    pub(crate) dlx: Option<String>,
    pub(crate) dlrk: Option<String>,
    pub(crate) delivery_limit: Option<u32>,
    pub(crate) max_priority: Option<u8>,
    pub(crate) expires: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

impl Config {
    pub(crate) fn of(q: &Queue) -> Self {
        let args = &q.arguments;
        let int = |k: &str| {
            args.get(k)
                .and_then(FieldValue::as_i64)
                .and_then(|v| u64::try_from(v).ok())
        };
        let text = |k: &str| args.get(k).and_then(FieldValue::as_str).map(str::to_owned);
        Config {
            kind: q.queue_type(),
            ttl: int("x-message-ttl").map(Duration::from_millis),
            max_len: int("x-max-length").map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
            max_bytes: int("x-max-length-bytes").map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
            overflow: match text("x-overflow").as_deref() {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            dlx: text("x-dead-letter-exchange"),
            dlrk: text("x-dead-letter-routing-key"),
            delivery_limit: int("x-delivery-limit").map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            max_priority: int("x-max-priority").map(|v| u8::try_from(v).unwrap_or(u8::MAX)),
            expires: int("x-expires").map(Duration::from_millis),
        }
    }
}

/// Ready messages, one FIFO per priority level (one level without `x-max-priority`).
#[derive(Debug, Default)]
pub(crate) struct Ready {
    levels: Vec<VecDeque<Msg>>,
    len: usize,
    bytes: usize,
    /// Ready messages that can expire: none, and expiry needs no look at the head.
    timed: usize,
}

impl Ready {
    fn new(max_priority: Option<u8>) -> Self {
        let n = max_priority.map_or(1, |m| usize::from(m) + 1);
        Ready {
            levels: (0..n).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
            timed: 0,
        }
    }

    fn level(&self, msg: &Msg) -> usize {
        if self.levels.len() == 1 {
            return 0;
        }
        let p = usize::from(msg.data.envelope.properties().priority.unwrap_or(0));
        p.min(self.levels.len() - 1)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Counts a message coming in; returns its level.
    fn added(&mut self, msg: &Msg) -> usize {
        self.len += 1;
        self.bytes += msg.data.envelope.body.len();
        self.timed += usize::from(msg.expires_at.is_some());
        self.level(msg)
    }

    fn push_back(&mut self, msg: Msg) {
        let l = self.added(&msg);
        self.levels[l].push_back(msg);
    }

    fn push_front(&mut self, msg: Msg) {
        let l = self.added(&msg);
        self.levels[l].push_front(msg);
    }

    /// Puts a message back at its original position (classic queues).
    fn insert_by_seq(&mut self, msg: Msg) {
        let l = self.added(&msg);
        let level = &mut self.levels[l];
        let at = level.partition_point(|m| m.seq < msg.seq);
        level.insert(at, msg);
    }

    fn head(&self) -> Option<&Msg> {
        self.levels.iter().rev().find_map(|l| l.front())
    }

    fn pop_front(&mut self) -> Option<Msg> {
        let msg = self.levels.iter_mut().rev().find_map(|l| l.pop_front())?;
        self.len -= 1;
        self.bytes -= msg.data.envelope.body.len();
        self.timed -= usize::from(msg.expires_at.is_some());
        Some(msg)
    }

    pub(crate) fn clear(&mut self) -> usize {
        let n = self.len;
        for l in &mut self.levels {
            l.clear();
        }
        self.len = 0;
        self.bytes = 0;
        self.timed = 0;
        n
    }
}

/// How a message returns to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    /// `basic.reject`/`nack` with requeue: quorum queues put it at the back.
    Requeue,
    /// Channel or connection closed, consumer gone: quorum queues put it at the front.
    Closed,
}

pub(crate) struct QueueState {
    pub(crate) ready: Ready,
    /// Unsettled messages not held by a live consumer, by [`Owner::unacked_key`]: `basic.get`
    /// deliveries and those of consumers that went away while their deliveries were out; with
    /// the connection that holds them.
    pub(crate) unacked: FxHashMap<(u64, u64), (Msg, u64)>,
    pub(crate) consumers: Vec<Slot>,
    rr_next: usize,
    next_seq: u64,
    pub(crate) deleted: bool,

    timer_running: bool,
    /// Last time the queue was used (for `x-expires`).
    last_used: Instant,
    /// Messages taken from the intake in one swap and not yet numbered nor delivered: they
    /// follow everything in `ready`. Consumers are served from here directly; every other
    /// taking of the lock first moves them into `ready` (see [`QueueCell::lock`]).
    fresh: VecDeque<MsgData>,
}

impl QueueState {
    /// Numbers the unnumbered messages and appends them to `ready`, in order.
    fn fresh_to_ready(&mut self) {
        while let Some(data) = self.fresh.pop_front() {
            let msg = self.fresh(data, None);
            self.ready.push_back(msg);
        }
    }

    /// A newly published message, numbered in publish order.
    fn fresh(&mut self, data: MsgData, expires_at: Option<Instant>) -> Msg {
        self.next_seq += 1;
        Msg {
            seq: self.next_seq,
            data,
            redelivered: false,
            returns: 0,
            expires_at,
        }
    }
}

/// One queue. Shared by the broker's map, consumers and ackers.
pub(crate) struct QueueCell {
    pub(crate) name: String,
    /// The name again, as the routing key of the messages published to it through the default
    /// exchange (see [`Route::TO_QUEUE`]).
    pub(crate) key: ShortStr,
    pub(crate) decl: Queue,
    /// The connection that owns an exclusive queue.
    pub(crate) owner: Option<u64>,
    pub(crate) config: Config,
    pub(crate) state: Mutex<QueueState>,
    /// Publishes that need no decision from the queue's state (see [`Intake`]).
    intake: Padded<Mutex<Intake>>,
    /// Whether the queue takes publishes through its intake.
    fast: bool,
    /// Whether consumers are served from the intake without passing through `ready`: a fast
    /// queue without priorities (those sort every message into its level).
    direct: bool,
    pub(crate) timer: Arc<Notify>,
    pub(crate) broker: Weak<BrokerInner>,
    /// This queue itself, for the timer task: reaching it through the broker's map would take
    /// the broker lock while the queue lock is held.
    me: Weak<QueueCell>,
    vhost: String,
}

/// What happened to a published message in this queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Accepted,
    /// Accepted, and the queue's consumers are behind: the publisher should wait for them
    /// ([`QueueCell::poll_room`]).
    AcceptedAhead,
    Rejected,
}

impl QueueCell {
    pub(crate) fn new(
        name: String,
        decl: Queue,
        owner: Option<u64>,
        broker: Weak<BrokerInner>,
        vhost: &str,
    ) -> Arc<Self> {
        let config = Config::of(&decl);
        let fast =
            config.ttl.is_none() && config.max_len.is_none() && config.max_bytes.is_none() && config.expires.is_none();
        let q = Arc::new_cyclic(|me| QueueCell {
            state: Mutex::new(QueueState {
                ready: Ready::new(config.max_priority),
                unacked: FxHashMap::default(),
                consumers: Vec::new(),
                rr_next: 0,
                next_seq: 0,
                deleted: false,

                timer_running: false,
                last_used: Instant::now(),
                fresh: VecDeque::new(),
            }),
            key: ShortStr::from(name.as_str()),
            name,
            decl,
            owner,
            intake: Padded::default(),
            fast,
            direct: fast && config.max_priority.is_none(),
            config,
            timer: Arc::new(Notify::new()),
            broker,
            me: me.clone(),
            vhost: vhost.to_owned(),
        });
        if q.config.expires.is_some() {
            q.ensure_timer(&mut lock(&q.state));
        }
        q
    }

    /// Takes the queue's lock, having first moved what waits in the intake into the ready list.
    pub(crate) fn lock(&self) -> MutexGuard<'_, QueueState> {
        let mut st = lock(&self.state);
        if self.fast {
            // What waits in `fresh` came before what waits in the intake.
            let had_fresh = !st.fresh.is_empty();
            st.fresh_to_ready();
            let took = self.take_intake(&mut st);
            if took {
                st.fresh_to_ready();
            }
            if took || had_fresh {
                self.fresh_left(&st, took);
            }
        }
        st
    }

    /// Takes the queue's lock to serve consumers: messages from the intake may stay unnumbered
    /// in `fresh`, from where [`dispatch`](Self::dispatch) hands them out without passing them
    /// through `ready`.
    pub(crate) fn lock_for_dispatch(&self) -> MutexGuard<'_, QueueState> {
        if self.direct { lock(&self.state) } else { self.lock() }
    }

    /// Moves the intake's messages into the empty `fresh` list, in one swap (the buffers keep
    /// their capacity); `false` if there were none.
    fn take_intake(&self, st: &mut QueueState) -> bool {
        debug_assert!(st.fresh.is_empty());
        let mut intake = lock(&self.intake);
        if intake.msgs.is_empty() {
            return false;
        }
        std::mem::swap(&mut intake.msgs, &mut st.fresh);
        true
    }

    /// After the intake was taken (`took`) or messages left `fresh` (handed to consumers, or
    /// moved to `ready`): tells waiting publishers how many are left there.
    fn fresh_left(&self, st: &QueueState, took: bool) {
        let mut intake = lock(&self.intake);
        if took || intake.behind != st.fresh.len() {
            intake.drained(st.fresh.len());
        }
    }

    /// Keeps the flow control's count of consumers; a queue without consumers holds no
    /// publisher back.
    pub(crate) fn consumers_changed(&self, st: &QueueState) {
        if self.fast {
            let mut intake = lock(&self.intake);
            intake.consumers = st.consumers.len();
            if intake.consumers == 0 {
                intake.release_blocked();
            }
        }
    }

    /// Ready once a publisher that was told [`Enqueued::AcceptedAhead`] may go on: the consumers
    /// took messages, or they are gone, or they took none within the flow grace.
    pub(crate) fn poll_room(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let mut intake = lock(&self.intake);
        if !intake.holds_back() {
            return std::task::Poll::Ready(());
        }
        if intake.watched != Some(intake.drains) {
            intake.watched = Some(intake.drains);
            if !flow::watch(self.me.clone(), intake.drains) {
                intake.stalled = true;
                return std::task::Poll::Ready(());
            }
        }
        if !intake.blocked.iter().any(|w| w.will_wake(cx.waker())) {
            intake.blocked.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }

    /// The watchdog's call: if the consumers took nothing since drain `drains`, publishers stop
    /// waiting for them until they do.
    pub(crate) fn stall(&self, drains: u64) {
        let mut intake = lock(&self.intake);
        if intake.drains == drains && !intake.stalled {
            intake.stalled = true;
            intake.release_blocked();
        }
    }

    /// Registers a consumer that found nothing to take, to be woken by the next publish to the
    /// intake; `false` if messages arrived meanwhile (the caller looks again instead).
    pub(crate) fn park(&self, consumer: u64, waker: &Waker) -> bool {
        if !self.fast {
            return true;
        }
        let mut intake = lock(&self.intake);
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
        if self.fast {
            lock(&self.intake).waiting.retain(|(id, _)| *id != consumer);
        }
    }

    pub(crate) fn vhost(&self) -> &str {
        &self.vhost
    }

    /// Runs effects collected under the lock: wake consumers, route dead letters, auto-delete.
    pub(crate) fn apply(&self, fx: Effects) {
        if fx.is_empty() {
            return;
        }
        fx.wake.wake_all();
        if let Some(broker) = self.broker.upgrade() {
            if !fx.dead.is_empty() {
                broker.route_dead_letters(fx.dead);
            }
            if fx.auto_delete {
                broker.auto_delete_queue(&self.name);
            }
        }
    }

    fn expires_at(&self, envelope: &Envelope, now: Instant) -> Option<Instant> {
        let per_message = envelope
            .properties()
            .expiration
            .as_deref()
            .and_then(|e| e.parse::<u64>().ok())
            .map(Duration::from_millis);
        let ttl = match (self.config.ttl, per_message) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ttl.map(|t| now + t)
    }

    /// Adds a published message: through the intake when nothing about the queue's state can
    /// change the outcome, else under the queue's lock (running the effects after releasing it).
    #[inline]
    pub(crate) fn offer(&self, data: MsgData) -> Enqueued {
        if self.fast && data.envelope.properties().expiration.is_none() {
            let mut intake = lock(&self.intake);
            intake.msgs.push_back(data);
            // Waking only schedules the consumers' tasks; the buffer keeps its capacity.
            if !intake.waiting.is_empty() {
                for (_, w) in intake.waiting.drain(..) {
                    w.wake();
                }
            }
            if intake.holds_back() {
                return Enqueued::AcceptedAhead;
            }
            return Enqueued::Accepted;
        }
        let mut fx = Effects::default();
        let outcome = self.enqueue(&mut self.lock(), data, &mut fx);
        self.apply(fx);
        outcome
    }

    /// Adds a published (or dead-lettered) message. Runs under the queue lock.
    pub(crate) fn enqueue(&self, st: &mut QueueState, data: MsgData, fx: &mut Effects) -> Enqueued {
        // The clock is read only when something here can expire.
        let timed = self.config.ttl.is_some()
            || self.config.expires.is_some()
            || data.envelope.properties().expiration.is_some();
        let now = timed.then(Instant::now);
        if let Some(now) = now {
            st.last_used = now;
        }
        let expires_at = now.and_then(|now| self.expires_at(&data.envelope, now));
        let body = data.envelope.body.len();
        let over = |st: &QueueState| {
            self.config.max_len.is_some_and(|m| st.ready.len() >= m)
                || self.config.max_bytes.is_some_and(|m| st.ready.bytes + body > m)
        };
        let msg = st.fresh(data, expires_at);
        match self.config.overflow {
            Overflow::RejectPublish | Overflow::RejectPublishDlx if over(st) => {
                if self.config.overflow == Overflow::RejectPublishDlx {
                    self.dead_letter(msg, Reason::MaxLen, fx);
                }
                return Enqueued::Rejected;
            }
            _ => {}
        }
        // A fresh message goes straight to a consumer with credit when nothing waits before it.
        if st.ready.len() == 0
            && let Some(i) = next_consumer(st)
        {
            self.hand(st, i, msg, fx);
            return Enqueued::Accepted;
        }
        st.ready.push_back(msg);
        self.enforce_max_length(st, fx);
        self.dispatch(st, fx);
        if expires_at.is_some() {
            self.ensure_timer(st);
        }
        Enqueued::Accepted
    }

    fn enforce_max_length(&self, st: &mut QueueState, fx: &mut Effects) {
        loop {
            let over = self.config.max_len.is_some_and(|m| st.ready.len() > m)
                || self.config.max_bytes.is_some_and(|m| st.ready.bytes > m);
            if !over {
                break;
            }
            match st.ready.pop_front() {
                Some(head) => self.dead_letter(head, Reason::MaxLen, fx),
                None => break,
            }
        }
    }

    /// Removes expired messages at the head: expiry is only ever checked at the head. The clock
    /// is read only if the head can expire.
    fn expire_heads(&self, st: &mut QueueState, fx: &mut Effects) {
        if st.ready.timed == 0 {
            return;
        }
        let mut now = None;
        while let Some(t) = st.ready.head().and_then(|m| m.expires_at) {
            if t > *now.get_or_insert_with(Instant::now) {
                break;
            }
            if let Some(m) = st.ready.pop_front() {
                self.dead_letter(m, Reason::Expired, fx);
            }
        }
    }

    /// Hands ready messages to consumers with credit, round-robin: first `ready`, then the
    /// unnumbered messages that follow them (`fresh`, refilled from the intake).
    pub(crate) fn dispatch(&self, st: &mut QueueState, fx: &mut Effects) {
        loop {
            self.expire_heads(st, fx);
            if st.ready.len() == 0 {
                break;
            }
            let Some(i) = next_consumer(st) else { return };
            let Some(msg) = st.ready.pop_front() else {
                return;
            };
            self.hand(st, i, msg, fx);
        }
        if !self.direct {
            return;
        }
        let handed = st.next_seq;
        let mut took = false;
        while let Some(i) = next_consumer(st) {
            // The intake is taken once: what arrives meanwhile waits for the next dispatch (a
            // stream looks at the intake again before it sleeps, and a publish wakes the
            // streams asleep on it). Taking it again at once would mostly find a message or
            // two, and pull its cache line from the publisher's core every time.
            if st.fresh.is_empty() {
                if took || !self.take_intake(st) {
                    break;
                }
                took = true;
            }
            // A lone consumer is handed as many as its credit allows at once; several share the
            // messages round-robin, one at a time.
            let n = if st.consumers.len() == 1 {
                st.consumers[i].credit().min(st.fresh.len())
            } else {
                1
            };
            self.hand_fresh(st, i, n, fx);
        }
        if took || st.next_seq != handed {
            self.fresh_left(st, took);
        }
    }

    /// The envelope a consumer or `basic.get` receives: quorum queues add `x-delivery-count`.
    fn delivered_envelope(&self, msg: &Msg, first_count: bool) -> Envelope {
        if self.config.kind == QueueType::Quorum && (msg.returns > 0 || first_count) {
            let mut envelope = msg.data.envelope.clone();
            envelope.headers_mut().insert(X_DELIVERY_COUNT, i64::from(msg.returns));
            return envelope;
        }
        msg.data.envelope.clone()
    }

    fn hand(&self, st: &mut QueueState, i: usize, msg: Msg, fx: &mut Effects) {
        st.rr_next = i + 1;
        let data = MsgData {
            envelope: self.delivered_envelope(&msg, false),
            route: msg.data.route.clone(),
        };
        let slot = &mut st.consumers[i];
        slot.next_tag += 1;
        let redelivered = msg.redelivered;
        if !slot.no_ack {
            slot.held.push(slot.next_tag, msg);
        }
        slot.inbox.push(slot.next_tag, data, redelivered);
        if let Some(w) = slot.waker.take() {
            fx.wake.push(w);
        }
    }

    /// [`hand`](Self::hand) for the first `n` messages of `fresh`, which come straight from the
    /// intake: never delivered, so they carry no delivery count (a quorum queue counts from the
    /// first return) and no expiry. They move to the consumer's inbox in one piece (a swap when
    /// they are all of `fresh`); only the copies it holds until they are settled are made one
    /// by one.
    fn hand_fresh(&self, st: &mut QueueState, i: usize, n: usize, fx: &mut Effects) {
        st.rr_next = i + 1;
        let slot = &mut st.consumers[i];
        let first = slot.next_tag + 1;
        if !slot.no_ack {
            slot.held.push_fresh(first, st.next_seq + 1, st.fresh.range(..n));
        }
        slot.inbox.append(first, &mut st.fresh, n);
        slot.next_tag += n as u64;
        st.next_seq += n as u64;
        if let Some(w) = slot.waker.take() {
            fx.wake.push(w);
        }
    }

    /// Takes one message for `basic.get` on connection `conn`, delivered with `tag` (asked for
    /// only if there is a message): the message, the envelope to deliver, its tag, and how many
    /// ready messages are left.
    pub(crate) fn get(
        &self,
        st: &mut QueueState,
        conn: u64,
        tag: impl FnOnce() -> u64,
        no_ack: bool,
        fx: &mut Effects,
    ) -> Option<(Msg, Envelope, u64, u32)> {
        st.last_used = Instant::now();
        self.expire_heads(st, fx);
        let msg = st.ready.pop_front()?;
        // What follows the taken head may have expired behind it.
        self.expire_heads(st, fx);
        let envelope = self.delivered_envelope(&msg, true);
        let tag = tag();
        if !no_ack {
            let key = Owner { conn, consumer: 0 }.unacked_key(tag);
            st.unacked.insert(key, (msg.clone(), conn));
        }
        let left = u32::try_from(st.ready.len()).unwrap_or(u32::MAX);
        Some((msg, envelope, tag, left))
    }

    /// Puts an unacknowledged message back (or dead-letters it past the delivery limit).
    pub(crate) fn give_back(&self, st: &mut QueueState, mut msg: Msg, how: Return, fx: &mut Effects) {
        msg.redelivered = true;
        msg.returns += 1;
        if self.config.kind == QueueType::Quorum
            && let Some(limit) = self.config.delivery_limit
            && msg.returns > limit
        {
            self.dead_letter(msg, Reason::DeliveryLimit, fx);
            return;
        }
        if msg.expires_at.is_some_and(|t| t <= Instant::now()) {
            self.dead_letter(msg, Reason::Expired, fx);
            return;
        }
        match (self.config.kind, how) {
            (QueueType::Quorum, Return::Requeue) => st.ready.push_back(msg),
            (QueueType::Quorum, Return::Closed) => st.ready.push_front(msg),
            (QueueType::Classic, _) => st.ready.insert_by_seq(msg),
        }
        self.enforce_max_length(st, fx);
    }

    /// Applies the acks of consumer `consumer`, which is still in the queue.
    pub(crate) fn apply_acks(&self, st: &mut QueueState, consumer: u64, acks: &Acks) {
        if let Some(slot) = st.consumers.iter_mut().find(|s| s.id == consumer) {
            slot.held.take_through(acks.through);
            for tag in &acks.listed {
                slot.held.take(*tag);
            }
            slot.acks.settled_below(slot.held.base);
        }
    }

    /// Removes consumer `i`, first applying its pending acks (so nothing acked is redelivered).
    pub(crate) fn remove_consumer(&self, st: &mut QueueState, i: usize) -> Slot {
        let pending = st.consumers[i].acks.close();
        self.apply_acks(st, st.consumers[i].id, &pending);
        let slot = st.consumers.remove(i);
        self.consumers_changed(st);
        slot
    }

    /// Returns the messages a closed channel, connection or consumer held. Quorum queues put them
    /// at the front in their original order, classic queues at their original positions.
    pub(crate) fn give_back_closed(&self, st: &mut QueueState, mut msgs: Vec<Msg>, fx: &mut Effects) {
        msgs.sort_by_key(|m| std::cmp::Reverse(m.seq));
        for m in msgs {
            self.give_back(st, m, Return::Closed, fx);
        }
    }

    /// Moves a dead message to the dead-letter exchange (or drops it when there is none).
    pub(crate) fn dead_letter(&self, msg: Msg, reason: Reason, fx: &mut Effects) {
        let Some(dlx) = &self.config.dlx else { return };
        let MsgData { mut envelope, route } = msg.data;
        let (exchange, routing_key, cc) = route.parts(&self.key);
        let mut keys = Vec::with_capacity(1 + cc.len());
        keys.push(routing_key.clone());
        keys.extend(cc.iter().cloned());
        let expiration = envelope.properties_mut().expiration.take();
        record_death(envelope.headers_mut(), &self.name, reason, exchange, &keys, expiration);
        let routing_keys = match &self.config.dlrk {
            Some(k) => vec![ShortStr::from(k.as_str())],
            None => keys,
        };
        fx.dead.push(DeadLetter {
            exchange: ShortStr::from(dlx.as_str()),
            routing_keys,
            envelope,
        });
    }

    /// Starts the expiry timer task if the queue has none running.
    fn ensure_timer(&self, st: &mut QueueState) {
        if st.timer_running {
            self.timer.notify_one();
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };

        st.timer_running = true;
        handle.spawn(timer_loop(self.me.clone(), Arc::clone(&self.timer)));
    }

    /// The next instant the timer must act at, and whether the queue itself expired.
    fn timer_tick(&self, now: Instant) -> (Option<Instant>, bool) {
        let mut fx = Effects::default();
        let (next, idle_expired) = {
            let mut st = self.lock();
            if st.deleted {
                st.timer_running = false;
                return (None, false);
            }
            self.expire_heads(&mut st, &mut fx);
            let head = st.ready.head().and_then(|m| m.expires_at);
            let idle = self
                .config
                .expires
                .filter(|_| st.consumers.is_empty())
                .map(|e| st.last_used + e);
            let idle_expired = idle.is_some_and(|t| t <= now);
            let next = match (head, idle) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if next.is_none() {
                st.timer_running = false;
            }
            (next, idle_expired)
        };
        self.apply(fx);
        (next, idle_expired)
    }
}

async fn timer_loop(queue: Weak<QueueCell>, notify: Arc<Notify>) {
    loop {
        let next = {
            let Some(q) = queue.upgrade() else { return };
            let (next, idle_expired) = q.timer_tick(Instant::now());
            if idle_expired {
                if let Some(b) = q.broker.upgrade() {
                    b.expire_queue(&q.name);
                }
                return;
            }
            match next {
                Some(n) => n,
                None => return,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = notify.notified() => {}
        }
    }
}

/// The index of the next consumer with credit, round-robin from the last one served.
fn next_consumer(st: &QueueState) -> Option<usize> {
    let n = st.consumers.len();
    let start = if st.rr_next < n { st.rr_next } else { 0 };
    (start..n).chain(0..start).find(|&i| st.consumers[i].has_credit())
}

/// Updates `x-death` the way RabbitMQ 3.10 writes it (see RABBITMQ-SEMANTICS.md §13).
fn record_death(
    headers: &mut FieldTable,
    queue: &str,
    reason: Reason,
    exchange: &str,
    keys: &[ShortStr],
    expiration: Option<String>,
) {
    let time = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let keys_value = FieldValue::Array(keys.iter().map(|k| FieldValue::from(k.as_str())).collect());
    let mut deaths: Vec<FieldValue> = match headers.get(X_DEATH) {
        Some(FieldValue::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let first = deaths.is_empty();
    let same = |d: &FieldValue| {
        d.as_table().is_some_and(|t| {
            t.get("queue").and_then(FieldValue::as_str) == Some(queue)
                && t.get("reason").and_then(FieldValue::as_str) == Some(reason.as_str())
        })
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let FieldValue::Table(mut t) = deaths.remove(i) else {
                return;
            };
            let count = t.get("count").and_then(FieldValue::as_i64).unwrap_or(0) + 1;
            t.insert("count", count);
            t.sort_by_key();
            t
        }
        None => {
            let mut t = FieldTable::new()
                .with("count", 1i64)
                .with("reason", reason.as_str())
                .with("queue", queue)
                .with("time", FieldValue::Timestamp(time))
                .with("exchange", exchange)
                .with("routing-keys", keys_value);
            if let Some(e) = expiration {
                t.insert("original-expiration", e);
            }
            if !first {
                t.sort_by_key();
            }
            t
        }
    };
    deaths.insert(0, FieldValue::Table(entry));
    headers.insert(X_DEATH, FieldValue::Array(deaths));
    for (k, v) in [
        ("x-first-death-exchange", exchange),
        ("x-first-death-queue", queue),
        ("x-first-death-reason", reason.as_str()),
    ] {
        if !headers.contains_key(k) {
            headers.insert(k, v);
        }
    }
}

/// RabbitMQ's cycle rule: delivering a dead letter to `queue` is a cycle when `queue` already
/// appears in its `x-death` and no death on the way since was a rejection.
pub(crate) fn is_cycle(queue: &str, envelope: &Envelope) -> bool {
    let Some(FieldValue::Array(deaths)) = envelope.header(X_DEATH) else {
        return false;
    };
    for d in deaths {
        let Some(t) = d.as_table() else { continue };
        if t.get("reason").and_then(FieldValue::as_str) == Some("rejected") {
            return false;
        }
        if t.get("queue").and_then(FieldValue::as_str) == Some(queue) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{Msg, MsgData};
    use mqtransport_core::Envelope;

    /// Every message passes through the intake, the consumer's inbox and its held list: a
    /// message published to a queue by name is its envelope and one pointer-sized route.
    #[test]
    fn a_queued_message_is_its_envelope_and_one_pointer() {
        let pointer = std::mem::size_of::<usize>();
        assert_eq!(
            std::mem::size_of::<MsgData>(),
            std::mem::size_of::<Envelope>() + pointer
        );
        assert_eq!(std::mem::size_of::<Option<Msg>>(), std::mem::size_of::<Msg>());
    }
}
