//! One queue of the embedded broker: ready messages, unacknowledged ones, consumers, expiry,
//! overflow and dead-lettering. Everything here runs under the queue's own lock, except the
//! publishes that no state can refuse, which go through the queue's intake and are moved in
//! by the next taking of the lock.
//!
//! A queue never calls back into the broker: what must happen beyond its lock (dead letters
//! to route, consumers to wake, itself to delete, its timer to start) is returned as
//! [`Effects`], which the broker applies once the lock is released.

mod ack_batch;
mod config;
mod consumer;
mod dead_letter;
mod effects;
mod expiry;
mod intake;
mod message;
mod ready;
pub(crate) mod replies;
mod state;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use mqtransport_core::{Envelope, Error, Queue, QueueInfo, QueueType, Result, Settle, ShortStr};
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use ack_batch::{AckBatch, Acks};
use config::{Config, Overflow};
pub(crate) use consumer::{ConsumerSlot, Inbox, Owner, priority_of};
use dead_letter::Reason;
pub(crate) use dead_letter::{DeadLetter, is_cycle};
pub(crate) use effects::Effects;
use intake::IntakeCell;
pub(crate) use message::{Msg, MsgData, Route};
pub(crate) use state::{Enqueued, Refill};
use state::{QueueState, Return};

use crate::flow::{self, Stalls};
use crate::sync::lock;

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
    /// Publishes that need no decision from the queue's state (see [`IntakeCell`]).
    intake: IntakeCell,
    /// Whether the queue takes publishes through its intake.
    fast: bool,
    /// Whether consumers are served from the intake without passing through `ready`: a fast
    /// queue without priorities (those sort every message into its level).
    direct: bool,
    /// Wakes the queue's timer task to look at its next deadline again. Shared with the task,
    /// which holds the queue itself only weakly.
    timer: Arc<Notify>,
    /// This queue itself, for its timer task and the flow watchdog: reaching it through the
    /// broker's map would take the broker lock while the queue lock is held.
    me: Weak<QueueCell>,
    vhost: String,
}

impl QueueCell {
    /// A new queue. One with `x-expires` needs its timer from the start: the broker starts it
    /// when [`claim_timer`](Self::claim_timer) says so.
    pub(crate) fn new(name: String, decl: Queue, owner: Option<u64>, vhost: &str) -> Arc<Self> {
        let config = Config::of(&decl);
        let fast =
            config.ttl.is_none() && config.max_len.is_none() && config.max_bytes.is_none() && config.expires.is_none();
        Arc::new_cyclic(|me| QueueCell {
            state: Mutex::new(QueueState::new(config.max_priority, config.single_active)),
            key: ShortStr::from(name.as_str()),
            name,
            decl,
            owner,
            intake: IntakeCell::default(),
            fast,
            direct: fast && config.max_priority.is_none(),
            config,
            timer: Arc::new(Notify::new()),
            me: me.clone(),
            vhost: vhost.to_owned(),
        })
    }

    /// This queue, held weakly (by its timer task).
    pub(crate) fn downgrade(&self) -> Weak<QueueCell> {
        self.me.clone()
    }

    /// Takes the queue's lock, having first moved what waits in the intake into the ready list.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
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

    /// Takes the queue's lock for a look from outside (counts, `basic.get`, purge, delete,
    /// connection close), having first handed consumers with credit what they can take.
    ///
    /// RabbitMQ pushes messages to a consumer up to its prefetch as they arrive, whether or not
    /// the application reads them. The embedded broker hands messages published through the
    /// intake out when a consumer's stream asks for them, which keeps memory flat (see
    /// [`crate::flow`]); every observer of the queue looks through this lock, so it sees what
    /// RabbitMQ's would: those messages held by the consumers, not ready.
    fn lock_observed(&self, fx: &mut Effects) -> MutexGuard<'_, QueueState> {
        let mut st = self.lock();
        self.dispatch(&mut st, fx);
        st
    }

    /// Takes the queue's lock to serve consumers: messages from the intake may stay unnumbered
    /// in `fresh`, from where [`dispatch`](Self::dispatch) hands them out without passing them
    /// through `ready`.
    fn lock_for_dispatch(&self) -> MutexGuard<'_, QueueState> {
        if self.direct { lock(&self.state) } else { self.lock() }
    }

    /// Moves the intake's messages into the empty `fresh` list; `false` if there were none.
    #[inline]
    fn take_intake(&self, st: &mut QueueState) -> bool {
        self.intake.take_into(&mut st.fresh)
    }

    /// After the intake was taken (`took`) or messages left `fresh` (handed to consumers, or
    /// moved to `ready`): tells waiting publishers how many are left there.
    #[inline]
    fn fresh_left(&self, st: &QueueState, took: bool) {
        self.intake.left(st.fresh.len(), took);
    }

    /// Keeps the flow control's count of consumers, and whether any has a priority.
    fn consumers_changed(&self, st: &mut QueueState) {
        st.prioritized = st.consumers.iter().any(|s| s.priority != 0);
        if self.fast {
            self.intake.set_consumers(st.consumers.len());
        }
    }

    /// Ready once a publisher that was told [`Enqueued::AcceptedAhead`] may go on: the consumers
    /// took messages, or they are gone, or they took none within the flow grace.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.intake.poll_room(cx, |drains| flow::watch(self.me.clone(), drains))
    }

    /// Registers a consumer that found nothing to take, to be woken by the next publish to the
    /// intake; `false` if messages arrived meanwhile (the caller looks again instead).
    #[inline]
    pub(crate) fn park(&self, consumer: u64, waker: &Waker) -> bool {
        !self.fast || self.intake.park(consumer, waker)
    }

    /// Forgets a consumer that is going away.
    pub(crate) fn unpark(&self, consumer: u64) {
        if self.fast {
            self.intake.unpark(consumer);
        }
    }

    /// Whether `data` can be published through the intake: nothing about the queue's state can
    /// change its outcome. Else it is [`enqueue`](Self::enqueue)d under the queue's lock.
    #[inline(always)]
    pub(crate) fn takes_intake(&self, data: &MsgData) -> bool {
        self.fast && data.envelope.properties().expiration.is_none()
    }

    /// Publishes `data` through the intake (see [`takes_intake`](Self::takes_intake)).
    #[inline(always)]
    pub(crate) fn offer_to_intake(&self, data: MsgData) -> Enqueued {
        if self.intake.push(data) {
            Enqueued::AcceptedAhead
        } else {
            Enqueued::Accepted
        }
    }

    /// Adds a published (or dead-lettered) message under the queue's lock.
    pub(crate) fn enqueue(&self, data: MsgData, fx: &mut Effects) -> Enqueued {
        self.enqueue_locked(&mut self.lock(), data, fx)
    }

    fn enqueue_locked(&self, st: &mut QueueState, data: MsgData, fx: &mut Effects) -> Enqueued {
        // The clock is read only when the message can expire. A publish does not use the queue
        // (RabbitMQ's `x-expires` counts consumers, `basic.get` and declares only).
        let timed = self.config.ttl.is_some() || data.envelope.properties().expiration.is_some();
        let expires_at = timed
            .then(Instant::now)
            .and_then(|now| self.config.expires_at(&data.envelope, now));
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
            && let Some(i) = st.next_consumer()
        {
            self.hand(st, i, msg, fx);
            return Enqueued::Accepted;
        }
        st.ready.push_back(msg);
        self.enforce_max_length(st, fx);
        self.dispatch(st, fx);
        if expires_at.is_some() {
            self.ensure_timer(st, fx);
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
    /// is read only if the head can expire. A head left with a deadline gets the timer, which
    /// may have stopped while the head could not expire.
    fn expire_heads(&self, st: &mut QueueState, fx: &mut Effects) {
        if st.ready.timed == 0 {
            return;
        }
        let mut now = None;
        while let Some(t) = st.ready.head().and_then(|m| m.expires_at) {
            if t > *now.get_or_insert_with(Instant::now) {
                if !st.timer_running || st.timer_next.is_none_or(|next| t < next) {
                    self.ensure_timer(st, fx);
                }
                break;
            }
            if let Some(m) = st.ready.pop_front() {
                self.dead_letter(m, Reason::Expired, fx);
            }
        }
    }

    /// Hands ready messages to consumers with credit, round-robin: first `ready`, then the
    /// unnumbered messages that follow them (`fresh`, refilled from the intake).
    fn dispatch(&self, st: &mut QueueState, fx: &mut Effects) {
        loop {
            self.expire_heads(st, fx);
            if st.ready.len() == 0 {
                break;
            }
            let Some(i) = st.next_consumer() else { return };
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
        while let Some(i) = st.next_consumer() {
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
            let n = if st.one_served() {
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

    fn hand(&self, st: &mut QueueState, i: usize, msg: Msg, fx: &mut Effects) {
        st.rr_next = i + 1;
        let data = MsgData {
            envelope: msg.delivered_envelope(self.config.kind, false),
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
        conn: u64,
        tag: impl FnOnce() -> u64,
        no_ack: bool,
        fx: &mut Effects,
    ) -> Option<(Msg, Envelope, u64, u32)> {
        let st = &mut *self.lock_observed(fx);
        st.last_used = Instant::now();
        let msg = st.ready.pop_front()?;
        // What follows the taken head may have expired behind it.
        self.expire_heads(st, fx);
        let envelope = msg.delivered_envelope(self.config.kind, true);
        let tag = tag();
        if !no_ack {
            let key = Owner { conn, consumer: 0 }.unacked_key(tag);
            st.unacked.insert(key, (msg.clone(), conn));
        }
        let left = u32::try_from(st.ready.len()).unwrap_or(u32::MAX);
        Some((msg, envelope, tag, left))
    }

    /// Puts an unacknowledged message back (or dead-letters it past the delivery limit).
    fn put_back(&self, st: &mut QueueState, mut msg: Msg, how: Return, fx: &mut Effects) {
        msg.redelivered = true;
        msg.returns += 1;
        if self.config.kind == QueueType::Quorum
            && let Some(limit) = self.config.delivery_limit
            && msg.returns > limit
        {
            self.dead_letter(msg, Reason::DeliveryLimit, fx);
            return;
        }
        // An expired message goes back too: like any other, it expires when it reaches the
        // head (the dispatch that follows looks there). A length limit applies to it only by
        // dropping the head: `reject-publish` refuses publishes, not returns.
        match (self.config.kind, how) {
            (QueueType::Quorum, Return::Requeue) => st.ready.push_back(msg),
            (QueueType::Quorum, Return::Closed) => st.ready.push_front(msg),
            (QueueType::Classic, _) => st.ready.insert_by_seq(msg),
        }
        if self.config.overflow == Overflow::DropHead {
            self.enforce_max_length(st, fx);
        }
    }

    /// Adds a consumer and hands it what is ready. Refused (404) if the queue was deleted, and
    /// (403) while an exclusive consumer holds the queue, or for an exclusive consumer while
    /// others consume.
    pub(crate) fn add_consumer(&self, slot: ConsumerSlot, fx: &mut Effects) -> Result<()> {
        let mut st = self.lock();
        if st.deleted {
            return Err(self.not_found());
        }
        // Derived from the consumers themselves, so every way a consumer leaves releases it.
        if st.consumers.iter().any(|s| s.exclusive) || (slot.exclusive && !st.consumers.is_empty()) {
            return Err(replies::in_exclusive_use(&self.name, &self.vhost));
        }
        st.consumers.push(slot);
        self.consumers_changed(&mut st);
        self.dispatch(&mut st, fx);
        Ok(())
    }

    /// The 404 of a queue that is gone.
    pub(crate) fn not_found(&self) -> Error {
        replies::no_queue(&self.name, &self.vhost)
    }

    /// A consumer's stream looks for deliveries: applies the acks it took from its batch
    /// (`acks`, whose list is then emptied for reuse), hands out what is ready, and moves the
    /// consumer's inbox into the empty `into`. With nothing to take, the stream's `waker` is
    /// kept for the next hand-out.
    #[inline]
    pub(crate) fn refill(
        &self,
        consumer: u64,
        acks: Option<&mut Acks>,
        into: &mut Inbox,
        waker: &Waker,
        fx: &mut Effects,
    ) -> Refill {
        let mut st = self.lock_for_dispatch();
        if let Some(acks) = acks {
            self.apply_acks(&mut st, consumer, acks);
            acks.listed.clear();
        }
        // What the lock brought in from the intake (or the acks' freed credit) goes out.
        self.dispatch(&mut st, fx);
        let deleted = st.deleted;
        match st.consumers.iter_mut().find(|s| s.id == consumer) {
            Some(slot) if !slot.inbox.is_empty() => {
                slot.inbox.move_into(into);
                Refill::Took
            }
            Some(slot) => {
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    slot.waker = Some(waker.clone());
                }
                Refill::Empty
            }
            None => Refill::Gone { deleted },
        }
    }

    /// Removes consumer `consumer`, whose stream is gone. What was handed to it and never
    /// yielded (its inbox here, and `unread`, what its stream took and still held) goes back as
    /// on a channel close; what was yielded and not settled waits for its ackers, held for its
    /// connection. `false` if the consumer was no longer in the queue.
    pub(crate) fn cancel_consumer(&self, consumer: u64, unread: &mut Inbox, is_reply: bool, fx: &mut Effects) -> bool {
        let mut st = self.lock();
        let Some(i) = st.consumers.iter().position(|s| s.id == consumer) else {
            return false;
        };
        let mut slot = self.remove_consumer(&mut st, i);
        if !slot.no_ack {
            let back: Vec<_> = slot
                .inbox
                .tags()
                .chain(unread.tags())
                .filter_map(|tag| slot.held.take(tag))
                .collect();
            unread.clear();
            self.put_back_closed(&mut st, back, fx);
            for (tag, msg) in slot.held.drain() {
                let owner = Owner {
                    conn: slot.conn,
                    consumer: slot.id,
                };
                st.unacked.insert(owner.unacked_key(tag), (msg, slot.conn));
            }
        }
        if st.consumers.is_empty() && !is_reply {
            self.unused_since_now(&mut st, fx);
        }
        self.dispatch(&mut st, fx);
        true
    }

    /// Requeues what connection `conn` holds and removes its consumers (connection close).
    pub(crate) fn release_connection(&self, conn: u64, fx: &mut Effects) {
        let mut st = self.lock_observed(fx);
        let had = st.consumers.len();
        let mut returned = Vec::new();
        let mut i = 0;
        while i < st.consumers.len() {
            if st.consumers[i].conn == conn {
                let mut slot = self.remove_consumer(&mut st, i);
                fx.wake.extend(slot.waker.take());
                returned.extend(slot.held.drain().into_iter().map(|(_, m)| m));
            } else {
                i += 1;
            }
        }
        let keys: Vec<(u64, u64)> = st
            .unacked
            .iter()
            .filter(|(_, (_, owner))| *owner == conn)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some((m, _)) = st.unacked.remove(&k) {
                returned.push(m);
            }
        }
        self.put_back_closed(&mut st, returned, fx);
        if had > 0 && st.consumers.is_empty() {
            self.unused_since_now(&mut st, fx);
        }
        self.dispatch(&mut st, fx);
    }

    /// Settles delivery `tag` of `owner` on the locked path (a nack or reject, an ack of a
    /// `basic.get`, or one a consumer's batch no longer takes). An unknown tag is RabbitMQ's
    /// 406; settling a delivery of a deleted queue is accepted and does nothing.
    pub(crate) fn settle(&self, owner: Owner, tag: u64, settle: Settle, fx: &mut Effects) -> Result<()> {
        let mut st = self.lock();
        if st.deleted {
            return Ok(());
        }
        let key = owner.unacked_key(tag);
        let msg = match st
            .consumers
            .iter_mut()
            .find(|s| s.id == owner.consumer && owner.consumer != 0)
        {
            Some(slot) => slot.settle(tag),
            // A `basic.get` delivery, or one of a consumer that has gone away.
            None => match st.unacked.get(&key) {
                Some((_, conn)) if *conn == owner.conn => st.unacked.remove(&key).map(|(m, _)| m),
                _ => None,
            },
        };
        let Some(msg) = msg else {
            return Err(replies::unknown_delivery_tag(tag));
        };
        match settle {
            Settle::Ack => {}
            // The embedded broker has no redelivery delay (its capabilities say so): at once.
            Settle::Nack { requeue: true } | Settle::Reject { requeue: true } | Settle::RequeueAfter(_) => {
                self.put_back(&mut st, msg, Return::Requeue, fx);
            }
            Settle::Nack { requeue: false } | Settle::Reject { requeue: false } => {
                self.dead_letter(msg, Reason::Rejected, fx);
            }
        }
        self.dispatch(&mut st, fx);
        Ok(())
    }

    /// Removes every ready message; how many there were.
    pub(crate) fn purge(&self, fx: &mut Effects) -> usize {
        self.lock_observed(fx).ready.clear()
    }

    /// Refuses a delete that `if_unused` or `if_empty` forbid, as RabbitMQ does (406).
    pub(crate) fn check_deletable(&self, if_unused: bool, if_empty: bool, fx: &mut Effects) -> Result<()> {
        let st = self.lock_observed(fx);
        if if_unused && !st.consumers.is_empty() {
            return Err(replies::in_use(&self.name, &self.vhost));
        }
        if if_empty && st.ready.len() > 0 {
            return Err(replies::not_empty(&self.name, &self.vhost));
        }
        Ok(())
    }

    /// Marks the queue deleted (the broker has removed it from its map): its consumers are
    /// cancelled and woken (their streams end), its messages discarded; how many were ready.
    pub(crate) fn mark_deleted(&self, fx: &mut Effects) -> u32 {
        let count = {
            let mut st = self.lock_observed(fx);
            st.deleted = true;
            for slot in st.consumers.drain(..) {
                fx.wake.extend(slot.waker);
            }
            self.consumers_changed(&mut st);
            st.unacked.clear();
            u32::try_from(st.ready.clear()).unwrap_or(u32::MAX)
        };
        self.timer.notify_one();
        count
    }

    /// Whether this is an auto-delete queue that has no consumer.
    pub(crate) fn is_unused_auto_delete(&self) -> bool {
        self.decl.auto_delete && self.lock().consumers.is_empty()
    }

    /// The queue as `queue.declare-ok` reports it: ready messages and consumers. A declare,
    /// active or passive, uses the queue: its `x-expires` idle time starts again.
    pub(crate) fn info(&self, fx: &mut Effects) -> QueueInfo {
        let mut st = self.lock_observed(fx);
        if self.config.expires.is_some() {
            st.last_used = Instant::now();
        }
        QueueInfo {
            name: self.name.clone(),
            message_count: u32::try_from(st.ready.len()).unwrap_or(u32::MAX),
            consumer_count: u32::try_from(st.consumers.len()).unwrap_or(u32::MAX),
        }
    }

    /// Ready messages, unsettled deliveries (counting acks not yet applied), consumers.
    pub(crate) fn counts(&self, fx: &mut Effects) -> (usize, usize, usize) {
        self.lock_observed(fx).counts()
    }

    /// Applies the acks of consumer `consumer`, which is still in the queue.
    fn apply_acks(&self, st: &mut QueueState, consumer: u64, acks: &Acks) {
        if let Some(slot) = st.consumers.iter_mut().find(|s| s.id == consumer) {
            slot.held.take_through(acks.through);
            for tag in &acks.listed {
                slot.held.take(*tag);
            }
            slot.acks.settled_below(slot.held.base);
        }
    }

    /// Removes consumer `i`, first applying its pending acks (so nothing acked is redelivered).
    fn remove_consumer(&self, st: &mut QueueState, i: usize) -> ConsumerSlot {
        let pending = st.consumers[i].acks.close();
        self.apply_acks(st, st.consumers[i].id, &pending);
        let slot = st.consumers.remove(i);
        self.consumers_changed(st);
        slot
    }

    /// Returns the messages a closed channel, connection or consumer held. Quorum queues put them
    /// at the front in their original order, classic queues at their original positions.
    fn put_back_closed(&self, st: &mut QueueState, mut msgs: Vec<Msg>, fx: &mut Effects) {
        msgs.sort_by_key(|m| std::cmp::Reverse(m.seq));
        for m in msgs {
            self.put_back(st, m, Return::Closed, fx);
        }
    }

    /// Moves a dead message to the dead-letter exchange (or drops it when there is none).
    fn dead_letter(&self, msg: Msg, reason: Reason, fx: &mut Effects) {
        let Some(dlx) = &self.config.dlx else { return };
        let dead = DeadLetter::of(
            msg.data,
            reason,
            &self.name,
            &self.key,
            dlx,
            self.config.dlrk.as_deref(),
        );
        fx.dead.push(dead);
    }
}

impl Stalls for QueueCell {
    fn stall(&self, drains: u64) {
        self.intake.stall(drains);
    }
}
