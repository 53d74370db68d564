//! [`MemoryTransport`]: a connection to the embedded broker behind the core [`Transport`]
//! trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use mqtransport_core::{
    Acker, Binding, Capabilities, Confirmation, ConsumeOptions, DIRECT_REPLY_TO, Declared, DeleteQueue, Delivery,
    Error, Publish, QueueInfo, Result, Scope, Subscription, Topology, Transport,
};

use crate::broker::BrokerInner;
use crate::conn::Conn;
use crate::publish::Published;
use crate::queue::{AckBatch, ConsumerSlot, Effects, Owner, QueueCell, priority_of};
use crate::stream::{DeliveryStream, QueueAck};
use crate::sync::lock;

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
            conn: Arc::new(Conn::open(broker)),
        }
    }

    fn start_reply_consumer(&self, options: &ConsumeOptions) -> Result<Subscription> {
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
            &broker.vhost,
        );
        lock(&broker.replies).insert(name, Arc::clone(&cell));
        *reply = Some(Arc::clone(&cell));
        drop(reply);
        self.add_consumer(cell, options, true)
    }

    fn add_consumer(&self, queue: Arc<QueueCell>, options: &ConsumeOptions, is_reply: bool) -> Result<Subscription> {
        let id = self.conn.broker.next_id();
        let tag = options
            .consumer_tag
            .clone()
            .unwrap_or_else(|| format!("amq.ctag-mqt-{id}"));
        let priority = priority_of(&options.arguments, &queue.name, &self.conn.broker.vhost)?;
        let acks = Arc::new(AckBatch::default());
        let mut fx = Effects::default();
        let slot = ConsumerSlot::new(id, self.conn.id, options, priority, Arc::clone(&acks));
        let added = queue.add_consumer(slot, &mut fx);
        self.conn.broker.apply(&queue, fx);
        added?;
        let owner = Owner {
            conn: self.conn.id,
            consumer: id,
        };
        let ack = Arc::new(QueueAck::new(Arc::clone(&queue), owner, &self.conn, Some(acks)));
        let stream = DeliveryStream::new(queue, id, options.no_ack, is_reply, ack, Arc::clone(&self.conn));
        Ok(Subscription::new(tag, stream))
    }
}

impl Transport for MemoryTransport {
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::rabbitmq();
        c.system = "memory";
        c.max_message_size = self.conn.broker.max_message_size;
        // The embedded broker never takes a delivery back from a live consumer.
        c.delivery_timeout = None;
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
        let mut fx = Effects::default();
        let purged = q.purge(&mut fx);
        self.conn.broker.apply(&q, fx);
        Ok(u32::try_from(purged).unwrap_or(u32::MAX))
    }

    fn publish(&self, publish: Publish) -> impl Future<Output = Result<Confirmation>> + Send {
        Publishing {
            conn: &self.conn,
            state: PublishState::Start(publish),
        }
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Subscription> {
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
        let got = q.get(self.conn.id, next_tag, no_ack, &mut fx);
        self.conn.broker.apply(&q, fx);
        let Some((msg, envelope, tag, left)) = got else {
            return Ok(None);
        };
        let acker = if no_ack {
            Acker::settled(tag)
        } else {
            let owner = Owner {
                conn: self.conn.id,
                consumer: 0,
            };
            let handle = Arc::new(QueueAck::new(Arc::clone(&q), owner, &self.conn, None));
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

/// Routes and enqueues `publish` (see [`BrokerInner::publish`]). The common case (see
/// [`BrokerInner::publish_to_queue_in_place`]) is served without moving the publish; the
/// rest is taken out of `publish`, which is then left empty.
#[inline]
fn publish_now(conn: &Conn, publish: &mut Publish) -> Result<Published> {
    conn.check_open()?;
    if let Some(published) = conn.broker.publish_to_queue_in_place(publish) {
        return Ok(published);
    }
    let publish = std::mem::replace(publish, Publish::to_queue("", mqtransport_core::Envelope::default()));
    let reply = if publish.envelope.properties().reply_to.as_deref() == Some(DIRECT_REPLY_TO) {
        lock(&conn.reply).as_ref().map(|q| q.name.clone())
    } else {
        None
    };
    conn.broker.publish(publish, reply.as_deref())
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
            let published = publish_now(this.conn, publish);
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
