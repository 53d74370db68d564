//! A consumer's side of a queue: its [`DeliveryStream`], and the [`QueueAck`] that settles its
//! deliveries (or a `basic.get`'s). Each asks the queue to act and applies the effects through
//! the broker.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures_core::Stream;
use mqtransport_core::{AckHandle, Acker, Delivery, Error, ErrorKind, Result, Settle};

use crate::conn::Conn;
use crate::queue::{AckBatch, Acks, Effects, Inbox, MsgData, Owner, QueueCell, Refill};

/// Settles deliveries of one consumer (or one `basic.get`) in one queue.
pub(crate) struct QueueAck {
    queue: Arc<QueueCell>,
    owner: Owner,
    /// Held weakly: a delivery kept past its consumer must not keep the connection open (its
    /// close requeues the delivery). Only the locked path needs it.
    conn: Weak<Conn>,
    /// A consumer's acks are batched and applied by its stream; `None` for `basic.get`.
    batch: Option<Arc<AckBatch>>,
}

impl QueueAck {
    pub(crate) fn new(queue: Arc<QueueCell>, owner: Owner, conn: &Arc<Conn>, batch: Option<Arc<AckBatch>>) -> Self {
        QueueAck {
            queue,
            owner,
            conn: Arc::downgrade(conn),
            batch,
        }
    }
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
        // A connection that is gone was closed when it was dropped.
        let conn = self.conn.upgrade().filter(|c| !c.closed.load(Ordering::Acquire));
        let Some(conn) = conn else {
            return Err(Error::closed(format!(
                "cannot settle a delivery from queue '{}': its connection is closed and the broker requeued it",
                self.queue.name
            )));
        };
        let mut fx = Effects::default();
        let settled = self.queue.settle(self.owner, tag, settle, &mut fx);
        conn.broker.apply(&self.queue, fx);
        settled
    }
}

/// The delivery stream of one consumer. It takes its whole inbox in one swap per wake-up.
pub(crate) struct DeliveryStream {
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
    pub(crate) fn new(
        queue: Arc<QueueCell>,
        id: u64,
        no_ack: bool,
        is_reply: bool,
        ack: Arc<QueueAck>,
        conn: Arc<Conn>,
    ) -> Self {
        DeliveryStream {
            queue,
            id,
            no_ack,
            is_reply,
            ack,
            local: Inbox::default(),
            pending: Acks::default(),
            conn,
            finished: false,
        }
    }

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
        let deleted = loop {
            let batch = this.ack.batch.as_ref();
            if let Some(b) = batch {
                b.take(&mut this.pending);
            }
            let mut fx = Effects::default();
            let acks = batch.is_some().then_some(&mut this.pending);
            let refill = this.queue.refill(this.id, acks, &mut this.local, cx.waker(), &mut fx);
            this.conn.broker.apply(&this.queue, fx);
            match refill {
                Refill::Took => match this.local.pop() {
                    Some((tag, data, redelivered)) => {
                        return Poll::Ready(Some(Ok(this.delivery(tag, data, redelivered))));
                    }
                    None => return Poll::Pending,
                },
                Refill::Gone { deleted } => break deleted,
                // Parked: acks that arrive from now on wake the stream; if some came meanwhile,
                // apply them before sleeping.
                Refill::Empty => {
                    let no_acks = batch.is_none_or(|b| b.park(cx.waker(), this.pending.through));
                    if no_acks && this.queue.park(this.id, cx.waker()) {
                        return Poll::Pending;
                    }
                }
            }
        };
        this.finished = true;
        let err = if this.conn.closed.load(Ordering::Acquire) {
            Error::closed(format!(
                "consumer on queue '{}' ended: the connection was closed",
                this.queue.name
            ))
        } else if deleted {
            Error::new(
                ErrorKind::NotFound,
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

impl Drop for DeliveryStream {
    fn drop(&mut self) {
        let q = &self.queue;
        q.unpark(self.id);
        let mut fx = Effects::default();
        // Gone already: removed by its connection's close, or with its deleted queue.
        if !q.cancel_consumer(self.id, &mut self.local, self.is_reply, &mut fx) {
            return;
        }
        if self.is_reply {
            self.conn.forget_reply(q);
        }
        self.conn.broker.apply(q, fx);
    }
}
