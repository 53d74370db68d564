//! A connection to the embedded broker: the `Transport` implementation, consumer streams and
//! ackers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_core::Stream;
use mqtransport_core::{
    AckHandle, Acker, Binding, Capabilities, Confirmation, ConsumeOptions, Consumer, DIRECT_REPLY_TO, Declared,
    DeleteQueue, Delivery, Error, Publish, QueueInfo, Result, Scope, Settle, Topology, Transport,
};

use crate::broker::BrokerInner;
use crate::queue::{AckBatch, Acks, Effects, Inbox, MsgData, Owner, QueueCell, Return, Slot, lock};

pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) broker: Arc<BrokerInner>,
    closed: Arc<AtomicBool>,
    /// This connection's direct reply-to pseudo-queue, once it consumes `amq.rabbitmq.reply-to`.
    reply: Mutex<Option<Arc<QueueCell>>>,
    get_tags: AtomicU64,
}

impl Conn {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed(format!(
                "connection to the embedded broker '{}' is closed",
                self.broker.name
            )));
        }
        Ok(())
    }

    fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(reply) = lock(&self.reply).take() {
            lock(&self.broker.replies).remove(&reply.name);
        }
        for q in self.broker.all_queues() {
            self.broker.release_connection(&q, self.id);
        }
        self.broker.drop_exclusive(self.id);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A connection to an embedded broker. Clones share the connection; it closes when
/// [`close`](Transport::close) is called or the last clone and its consumers are dropped.
///
/// Capabilities: every RabbitMQ 3.x feature listed in [`Capabilities::rabbitmq`] (exchanges of
/// all four kinds, dead-letter exchanges, TTL, priorities, direct reply-to, quorum queues with a
/// delivery limit); no native delay.
#[derive(Clone)]
pub struct MemoryTransport {
    conn: Arc<Conn>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("broker", &self.conn.broker.name)
            .field("connection", &self.conn.id)
            .finish()
    }
}

impl MemoryTransport {
    pub(crate) fn open(broker: Arc<BrokerInner>) -> Self {
        MemoryTransport {
            conn: Arc::new(Conn {
                id: broker.next_id(),
                broker,
                closed: Arc::new(AtomicBool::new(false)),
                reply: Mutex::new(None),
                get_tags: AtomicU64::new(0),
            }),
        }
    }

    fn start_reply_consumer(&self, options: &ConsumeOptions) -> Result<Consumer> {
        if !options.no_ack {
            return Err(Error::broker(
                406,
                "PRECONDITION_FAILED - reply consumer cannot acknowledge",
                Scope::Channel,
            ));
        }
        let mut reply = lock(&self.conn.reply);
        if reply.is_some() {
            return Err(Error::broker(
                406,
                "PRECONDITION_FAILED - reply consumer already set",
                Scope::Channel,
            ));
        }
        let broker = &self.conn.broker;
        let token = format!("{:016x}{:016x}", self.conn.id, broker.next_id());
        let name = format!("{DIRECT_REPLY_TO}.{token}");
        let cell = QueueCell::new(
            name.clone(),
            mqtransport_core::Queue::transient(name.clone()),
            Some(self.conn.id),
            Arc::downgrade(broker),
            &broker.vhost,
        );
        lock(&broker.replies).insert(name, Arc::clone(&cell));
        *reply = Some(Arc::clone(&cell));
        drop(reply);
        self.add_consumer(cell, options, true)
    }

    fn add_consumer(&self, queue: Arc<QueueCell>, options: &ConsumeOptions, is_reply: bool) -> Result<Consumer> {
        let id = self.conn.broker.next_id();
        let tag = options
            .consumer_tag
            .clone()
            .unwrap_or_else(|| format!("amq.ctag-mqt-{id}"));
        let acks = Arc::new(AckBatch::default());
        let mut fx = Effects::default();
        {
            let mut st = queue.lock();
            if st.deleted {
                return Err(self.conn.broker.no_queue(&queue.name));
            }
            // Derived from the consumers themselves, so every way a consumer leaves releases it.
            if st.consumers.iter().any(|s| s.exclusive) || (options.exclusive && !st.consumers.is_empty()) {
                return Err(Error::broker(
                    403,
                    format!(
                        "ACCESS_REFUSED - queue '{}' in vhost '{}' in exclusive use",
                        queue.name,
                        queue.vhost()
                    ),
                    Scope::Channel,
                ));
            }

            st.consumers
                .push(Slot::new(id, self.conn.id, options, Arc::clone(&acks)));
            queue.consumers_changed(&st);
            queue.dispatch(&mut st, &mut fx);
        }
        queue.apply(fx);
        let ack = Arc::new(QueueAck {
            queue: Arc::clone(&queue),
            owner: Owner {
                conn: self.conn.id,
                consumer: id,
            },
            closed: Arc::clone(&self.conn.closed),
            batch: Some(acks),
        });
        let stream = DeliveryStream {
            queue,
            id,
            no_ack: options.no_ack,
            is_reply,
            ack,
            local: Inbox::default(),
            pending: Acks::default(),
            conn: Arc::clone(&self.conn),
            finished: false,
        };
        Ok(Consumer::new(tag, stream))
    }
}

impl Transport for MemoryTransport {
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::rabbitmq();
        c.system = "memory";
        c.max_message_size = self.conn.broker.max_message_size;
        c
    }

    async fn declare(&self, topology: &Topology) -> Result<Declared> {
        self.conn.check_open()?;
        self.conn.broker.declare(self.conn.id, topology)
    }

    async fn queue_info(&self, queue: &str) -> Result<QueueInfo> {
        self.conn.check_open()?;
        self.conn.broker.queue_info(self.conn.id, queue)
    }

    async fn exchange_exists(&self, exchange: &str) -> Result<()> {
        self.conn.check_open()?;
        self.conn.broker.exchange_exists(exchange)
    }

    async fn delete_queue(&self, queue: &str, options: DeleteQueue) -> Result<u32> {
        self.conn.check_open()?;
        self.conn
            .broker
            .delete_queue(self.conn.id, queue, options.if_unused, options.if_empty)
    }

    async fn delete_exchange(&self, exchange: &str, if_unused: bool) -> Result<()> {
        self.conn.check_open()?;
        self.conn.broker.delete_exchange(exchange, if_unused)
    }

    async fn unbind(&self, binding: &Binding) -> Result<()> {
        self.conn.check_open()?;
        self.conn.broker.unbind(binding)
    }

    async fn purge(&self, queue: &str) -> Result<u32> {
        self.conn.check_open()?;
        let q = self.conn.broker.queue_for(self.conn.id, queue)?;
        let n = q.lock().ready.clear();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn publish(&self, publish: Publish) -> impl Future<Output = Result<Confirmation>> + Send {
        Publishing {
            conn: &self.conn,
            state: PublishState::Start(publish),
        }
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Consumer> {
        self.conn.check_open()?;
        if queue == DIRECT_REPLY_TO {
            return self.start_reply_consumer(&options);
        }
        let q = self.conn.broker.queue_for(self.conn.id, queue)?;
        self.add_consumer(q, &options, false)
    }

    async fn get(&self, queue: &str, no_ack: bool) -> Result<Option<Delivery>> {
        self.conn.check_open()?;
        let q = self.conn.broker.queue_for(self.conn.id, queue)?;
        let mut fx = Effects::default();
        let next_tag = || self.conn.get_tags.fetch_add(1, Ordering::Relaxed) + 1;
        let got = q.get(&mut q.lock(), self.conn.id, next_tag, no_ack, &mut fx);
        q.apply(fx);
        let Some((msg, envelope, tag, left)) = got else {
            return Ok(None);
        };
        let acker = if no_ack {
            Acker::settled(tag)
        } else {
            let handle = Arc::new(QueueAck {
                queue: Arc::clone(&q),
                owner: Owner {
                    conn: self.conn.id,
                    consumer: 0,
                },
                closed: Arc::clone(&self.conn.closed),
                batch: None,
            });
            Acker::new(handle, tag)
        };
        Ok(Some(
            msg.data
                .route
                .deliver(&q.key, envelope, msg.redelivered, acker)
                .with_message_count(left),
        ))
    }

    async fn ping(&self) -> Result<()> {
        self.conn.check_open()
    }

    async fn close(&self) -> Result<()> {
        self.conn.shutdown();
        Ok(())
    }
}

impl Conn {
    /// Routes and enqueues `publish` (see [`BrokerInner::publish`]). The common case (see
    /// [`BrokerInner::publish_to_queue_in_place`]) is served without moving the publish; the
    /// rest is taken out of `publish`, which is then left empty.
    fn publish_now(&self, publish: &mut Publish) -> Result<crate::broker::Published> {
        self.check_open()?;
        if let Some(published) = self.broker.publish_to_queue_in_place(publish) {
            return Ok(published);
        }
        let publish = std::mem::replace(publish, Publish::to_queue("", mqtransport_core::Envelope::default()));
        let reply = if publish.envelope.properties().reply_to.as_deref() == Some(DIRECT_REPLY_TO) {
            lock(&self.reply).as_ref().map(|q| q.name.clone())
        } else {
            None
        };
        self.broker.publish(publish, reply.as_deref())
    }
}

/// The future of [`MemoryTransport::publish`]. Its first poll takes one unit of tokio's
/// cooperative budget (an in-process publish never waits on I/O, and the budget keeps a
/// publishing loop from starving the consumers on its worker thread) and publishes; a
/// publisher then ahead of the queue's consumers waits for them (see [`crate::flow`]).
struct Publishing<'a> {
    conn: &'a Conn,
    state: PublishState,
}

enum PublishState {
    Start(Publish),
    Ahead(Arc<QueueCell>, Confirmation),
    Done,
}

impl Future for Publishing<'_> {
    type Output = Result<Confirmation>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let PublishState::Start(publish) = &mut this.state {
            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            coop.made_progress();
            let published = this.conn.publish_now(publish);
            this.state = PublishState::Done;
            match published {
                Err(e) => return Poll::Ready(Err(e)),
                Ok((confirmation, None)) => return Poll::Ready(Ok(confirmation)),
                Ok((confirmation, Some(q))) => this.state = PublishState::Ahead(q, confirmation),
            }
        }
        match &this.state {
            PublishState::Ahead(q, _) => {
                std::task::ready!(q.poll_room(cx));
                match std::mem::replace(&mut this.state, PublishState::Done) {
                    PublishState::Ahead(_, confirmation) => Poll::Ready(Ok(confirmation)),
                    _ => Poll::Ready(Err(Error::invalid("publish future polled after completion"))),
                }
            }
            _ => Poll::Ready(Err(Error::invalid("publish future polled after completion"))),
        }
    }
}

/// Settles deliveries of one consumer (or one `basic.get`) in one queue.
struct QueueAck {
    queue: Arc<QueueCell>,
    owner: Owner,
    closed: Arc<AtomicBool>,
    /// A consumer's acks are batched and applied by its stream; `None` for `basic.get`.
    batch: Option<Arc<AckBatch>>,
}

impl AckHandle for QueueAck {
    fn settle(&self, tag: u64, settle: Settle) -> Result<()> {
        // A consumer's batch takes acks until its consumer is removed, which a connection close
        // does before it returns: an ack that still gets in is applied like one that came just
        // before the close.
        if settle == Settle::Ack
            && let Some(batch) = &self.batch
            && batch.push(tag)
        {
            return Ok(());
        }
        self.settle_locked(tag, settle)
    }
}

impl QueueAck {
    /// [`settle`](AckHandle::settle) under the queue's lock: a nack or reject, an ack of a
    /// `basic.get`, or one its consumer's batch no longer takes. Out of line, so that the ack
    /// that a batch takes stays a short call.
    #[inline(never)]
    fn settle_locked(&self, tag: u64, settle: Settle) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed(format!(
                "cannot settle a delivery from queue '{}': its connection is closed and the broker requeued it",
                self.queue.name
            )));
        }
        let q = &self.queue;
        let mut fx = Effects::default();
        {
            let mut st = q.lock();
            if st.deleted {
                // Settling a delivery of a deleted queue is accepted and does nothing.
                return Ok(());
            }
            let Owner { conn, consumer } = self.owner;
            let key = self.owner.unacked_key(tag);
            let msg = match st.consumers.iter_mut().find(|s| s.id == consumer && consumer != 0) {
                Some(slot) => slot.settle(tag),
                // A `basic.get` delivery, or one of a consumer that has gone away.
                None => match st.unacked.get(&key) {
                    Some((_, owner)) if *owner == conn => st.unacked.remove(&key).map(|(m, _)| m),
                    _ => None,
                },
            };
            let Some(msg) = msg else {
                return Err(Error::broker(
                    406,
                    format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
                    Scope::Channel,
                ));
            };
            match settle {
                Settle::Ack => {}
                Settle::Nack { requeue: true } | Settle::Reject { requeue: true } => {
                    q.give_back(&mut st, msg, Return::Requeue, &mut fx);
                }
                Settle::Nack { requeue: false } | Settle::Reject { requeue: false } => {
                    q.dead_letter(msg, crate::queue::Reason::Rejected, &mut fx);
                }
            }
            q.dispatch(&mut st, &mut fx);
        }
        q.apply(fx);
        Ok(())
    }
}

/// The delivery stream of one consumer. It takes its whole inbox in one swap per wake-up.
struct DeliveryStream {
    queue: Arc<QueueCell>,
    id: u64,
    no_ack: bool,
    is_reply: bool,
    ack: Arc<QueueAck>,
    local: Inbox,
    /// Acks taken from the batch; its list is reused between refills.
    pending: Acks,
    conn: Arc<Conn>,
    finished: bool,
}

impl DeliveryStream {
    fn delivery(&self, tag: u64, data: MsgData, redelivered: bool) -> Delivery {
        let acker = if self.no_ack {
            Acker::settled(tag)
        } else {
            Acker::new(Arc::clone(&self.ack) as Arc<dyn AckHandle>, tag)
        };
        data.route.deliver(&self.queue.key, data.envelope, redelivered, acker)
    }
}

impl Stream for DeliveryStream {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // One unit of tokio's cooperative budget per delivery, as a socket read would take.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let polled = self.poll_inner(cx);
        if polled.is_ready() {
            coop.made_progress();
        }
        polled
    }
}

impl DeliveryStream {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Delivery>>> {
        let this = self;
        if this.finished {
            return Poll::Ready(None);
        }
        // After a close the broker has requeued what the stream still buffers.
        if this.conn.closed.load(Ordering::Acquire) {
            this.local.clear();
        }
        if let Some((tag, data, redelivered)) = this.local.pop() {
            return Poll::Ready(Some(Ok(this.delivery(tag, data, redelivered))));
        }
        let ended = loop {
            let batch = this.ack.batch.as_ref();
            if let Some(b) = batch {
                b.take(&mut this.pending);
            }
            let mut fx = Effects::default();
            let outcome = {
                let mut st = this.queue.lock_for_dispatch();
                if batch.is_some() {
                    this.queue.apply_acks(&mut st, this.id, &this.pending);
                    this.pending.listed.clear();
                }
                // What the lock brought in from the intake (or the acks' freed credit) goes out.
                this.queue.dispatch(&mut st, &mut fx);
                let deleted = st.deleted;
                match st.consumers.iter_mut().find(|s| s.id == this.id) {
                    Some(slot) if !slot.inbox.is_empty() => {
                        slot.inbox.move_into(&mut this.local);
                        Some(None)
                    }
                    Some(slot) => {
                        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            slot.waker = Some(cx.waker().clone());
                        }
                        None
                    }
                    None => Some(Some(deleted)),
                }
            };
            this.queue.apply(fx);
            match outcome {
                Some(ended) => break ended,
                // Parked: acks that arrive from now on wake the stream; if some came meanwhile,
                // apply them before sleeping.
                None => {
                    let no_acks = batch.is_none_or(|b| b.park(cx.waker(), this.pending.through));
                    if no_acks && this.queue.park(this.id, cx.waker()) {
                        return Poll::Pending;
                    }
                }
            }
        };
        match ended {
            None => match this.local.pop() {
                Some((tag, data, redelivered)) => Poll::Ready(Some(Ok(this.delivery(tag, data, redelivered)))),
                None => Poll::Pending,
            },
            Some(deleted) => {
                this.finished = true;
                let err = if this.conn.closed.load(Ordering::Acquire) {
                    Error::closed(format!(
                        "consumer on queue '{}' ended: the connection was closed",
                        this.queue.name
                    ))
                } else if deleted {
                    Error::new(
                        mqtransport_core::ErrorKind::NotFound,
                        format!(
                            "consumer cancelled by the broker: queue '{}' was deleted",
                            this.queue.name
                        ),
                    )
                } else {
                    Error::closed(format!("consumer on queue '{}' was cancelled", this.queue.name))
                };
                Poll::Ready(Some(Err(err)))
            }
        }
    }
}

impl Drop for DeliveryStream {
    fn drop(&mut self) {
        let q = &self.queue;
        q.unpark(self.id);
        let mut fx = Effects::default();
        {
            let mut st = q.lock();
            let Some(i) = st.consumers.iter().position(|s| s.id == self.id) else {
                return;
            };
            let mut slot = q.remove_consumer(&mut st, i);

            // Deliveries handed to this consumer but never yielded go back as on a channel close;
            // those yielded and not yet settled wait for their ackers.
            if !self.no_ack {
                let back: Vec<_> = slot
                    .inbox
                    .tags()
                    .chain(self.local.tags())
                    .filter_map(|tag| slot.held.take(tag))
                    .collect();
                self.local.clear();
                q.give_back_closed(&mut st, back, &mut fx);
                for (tag, msg) in slot.held.drain() {
                    let owner = Owner {
                        conn: slot.conn,
                        consumer: slot.id,
                    };
                    st.unacked.insert(owner.unacked_key(tag), (msg, slot.conn));
                }
            }
            if st.consumers.is_empty() && q.decl.auto_delete && !self.is_reply {
                fx.auto_delete = true;
            }
            q.dispatch(&mut st, &mut fx);
        }
        if self.is_reply {
            lock(&self.conn.broker.replies).remove(&q.name);
            let mut reply = lock(&self.conn.reply);
            if reply.as_ref().is_some_and(|r| Arc::ptr_eq(r, q)) {
                *reply = None;
            }
        }
        q.apply(fx);
    }
}
