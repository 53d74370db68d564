//! [`AmqpTransport`]: the two supervised connections and what the transport keeps across them,
//! behind the core [`Transport`] trait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions, QueuePurgeOptions};
use mqtransport_core::{
    Acker, Binding, BrokerUrl, Capabilities, Confirmation, ConsumeOptions, Declared, DeleteQueue, Delivery,
    Destination, Error, ErrorKind, Publish, QueueInfo, Result, Scheme, Subscription, Topology, Transport,
};

use crate::channels::Channels;
use crate::connector::Dialer;
use crate::consumer::{Subscriptions, to_delivery};
use crate::convert::map_err;
use crate::declare::{bind, check_exchange, check_queue, declare_exchange, declare_queue, unbind};
use crate::link::{Link, LinkState, Restored};
use crate::options::AmqpOptions;
use crate::publish::Publisher;
use crate::recorded::Recording;
use crate::restore::Restorer;

/// The state of each connection of an [`AmqpTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStates {
    /// The consuming connection: consumers, declarations, gets and acks.
    pub consume: LinkState,
    /// The publishing connection.
    pub publish: LinkState,
}

/// The broker address (`host:port`) each connection of an [`AmqpTransport`] is connected to:
/// with several addresses (a cluster's nodes), the node it reached. `None` while it is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionAddresses {
    /// The consuming connection's.
    pub consume: Option<String>,
    /// The publishing connection's.
    pub publish: Option<String>,
}

/// A connection to RabbitMQ (one connection for consuming and one for publishing), supervised
/// and recovered by the transport. Clones share the connections.
#[derive(Clone)]
pub struct AmqpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Arc<Channels>,
    publisher: Publisher,
    subscriptions: Arc<Subscriptions>,
    recording: Arc<Recording>,
    closed: Arc<AtomicBool>,
    reconnect_wait: Duration,
    /// The broker's `consumer_timeout` (see [`AmqpOptions::consumer_timeout`]).
    consumer_timeout: Option<Duration>,
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("url", &self.inner.channels.url)
            .finish_non_exhaustive()
    }
}

/// A suffix that tells this process's connections apart in `rabbitmqctl list_connections`.
fn unique_suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos:x}{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

impl AmqpTransport {
    /// Connects to the broker at `url` (`amqp://user:password@host:port/vhost?heartbeat=10`).
    pub async fn connect(url: &BrokerUrl) -> Result<Self> {
        AmqpTransport::connect_with(url, AmqpOptions::default()).await
    }

    /// Connects with options.
    pub async fn connect_with(url: &BrokerUrl, options: AmqpOptions) -> Result<Self> {
        match url.scheme() {
            Scheme::Amqp => {}
            #[cfg(feature = "tls")]
            Scheme::Amqps => {}
            #[cfg(not(feature = "tls"))]
            Scheme::Amqps => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "'{url}': amqps:// needs the `tls` feature of mqtransport-amqp (`amqp-tls` in mqtransport)"
                    ),
                ));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "the RabbitMQ transport takes amqp:// URLs, not '{url}'"
                )));
            }
        }
        let dialer = Arc::new(Dialer::new(url, &options)?);
        let consumer_timeout = dialer.consumer_timeout;
        let url = url.to_string();
        let suffix = unique_suffix();
        let name = |role: &str| format!("{}-{role}-{suffix}", options.connection_name);
        let consume = Link::open(
            "consume",
            Arc::clone(&dialer),
            url.clone(),
            name("consume"),
            Restored::ByTransport,
        )
        .await?;
        let publish = Link::open("publish", dialer, url.clone(), name("publish"), Restored::Nothing).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let recording = Arc::new(Recording::default());
        let subscriptions = Arc::new(Subscriptions::new(Arc::clone(&recording), Arc::clone(&closed)));
        let restorer = Restorer {
            link: Arc::downgrade(&consume),
            recording: Arc::downgrade(&recording),
            subscriptions: Arc::downgrade(&subscriptions),
            closed: Arc::clone(&closed),
        };
        tokio::spawn(restorer.run());
        let channels = Arc::new(Channels::new(
            url,
            consume,
            publish,
            Arc::clone(&closed),
            options.reconnect_wait,
        ));
        let publisher = Publisher::new(
            Arc::clone(&channels),
            Arc::clone(&subscriptions),
            Arc::clone(&recording),
            &options,
        );
        Ok(AmqpTransport {
            inner: Arc::new(Inner {
                channels,
                publisher,
                subscriptions,
                recording,
                closed,
                reconnect_wait: options.reconnect_wait,
                consumer_timeout,
            }),
        })
    }

    /// The state of the connections combined: `Blocked` when the broker blocked publishing,
    /// `Down` while either connection is being recovered, `Closed` after
    /// [`close`](Transport::close), else `Up` with the consuming connection's count of
    /// connects. [`connection_states`](Self::connection_states) shows each connection.
    pub fn state(&self) -> LinkState {
        let c = &self.inner.channels;
        match (c.consume.state(), c.publish.state()) {
            (LinkState::Closed, _) | (_, LinkState::Closed) => LinkState::Closed,
            (LinkState::Down, _) | (_, LinkState::Down) => LinkState::Down,
            (_, LinkState::Blocked(g)) | (LinkState::Blocked(g), _) => LinkState::Blocked(g),
            (LinkState::Up(g), LinkState::Up(_)) => LinkState::Up(g),
        }
    }

    /// The state of each of the two connections: the consuming one (consumers, declarations,
    /// acks) and the publishing one. Each `Up(n)` counts that connection's connects, so a
    /// publishing connection that keeps being replaced shows here even while the consuming
    /// one stays up. [`state`](Self::state) is their combination.
    pub fn connection_states(&self) -> ConnectionStates {
        let c = &self.inner.channels;
        ConnectionStates {
            consume: c.consume.state(),
            publish: c.publish.state(),
        }
    }

    /// The broker address each connection is connected to. With a URL that lists several
    /// (`amqp://user:pass@node-1,node-2,node-3/`), the first connect tries them in order and a
    /// reconnect starts from the address after the one lost.
    pub fn connection_addresses(&self) -> ConnectionAddresses {
        let c = &self.inner.channels;
        ConnectionAddresses {
            consume: c.consume.address(),
            publish: c.publish.address(),
        }
    }

    /// Publishes currently sent (or waiting to be) and not yet confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.inner.publisher.unconfirmed()
    }

    /// The names of this transport's two connections, as `rabbitmqctl list_connections name`
    /// shows them.
    pub fn connection_names(&self) -> [&str; 2] {
        let c = &self.inner.channels;
        [c.consume.name.as_str(), c.publish.name.as_str()]
    }

    fn resolve(&self, name: &str) -> String {
        self.inner.recording.resolve(name)
    }
}

impl Transport for AmqpTransport {
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::rabbitmq();
        c.frame_max = self.inner.channels.publish.frame_max();
        c.delivery_timeout = self.inner.consumer_timeout;
        c
    }

    async fn declare(&self, topology: &Topology) -> Result<Declared> {
        topology.validate()?;
        let declared = {
            let slot = self.inner.channels.admin().await?;
            let ch = slot.channel()?;
            for x in &topology.exchanges {
                declare_exchange(ch, x).await?;
            }
            let mut declared = Declared::default();
            for q in &topology.queues {
                let mut q = q.clone();
                q.name = self.resolve(&q.name);
                declared.queues.push(declare_queue(ch, &q).await?);
            }
            for b in &topology.bindings {
                let mut b = b.clone();
                if let Destination::Queue(d) = &mut b.destination {
                    *d = self.resolve(d);
                }
                bind(ch, &b).await?;
            }
            declared
        };
        self.inner.recording.record(topology, &declared);
        Ok(declared)
    }

    async fn queue_info(&self, queue: &str) -> Result<QueueInfo> {
        let queue = self.resolve(queue);
        let slot = self.inner.channels.admin().await?;
        check_queue(slot.channel()?, &queue).await
    }

    async fn exchange_exists(&self, exchange: &str) -> Result<()> {
        let slot = self.inner.channels.admin().await?;
        check_exchange(slot.channel()?, exchange).await
    }

    async fn delete_queue(&self, queue: &str, options: DeleteQueue) -> Result<u32> {
        let queue = self.resolve(queue);
        let slot = self.inner.channels.admin().await?;
        let opts = QueueDeleteOptions {
            if_unused: options.if_unused,
            if_empty: options.if_empty,
            nowait: false,
        };
        let n = slot
            .channel()?
            .queue_delete(queue.as_str().into(), opts)
            .await
            .map_err(|e| map_err(&e, &format!("deleting queue '{queue}'")))?;
        self.inner.recording.forget_queue(&queue);
        Ok(n)
    }

    async fn delete_exchange(&self, exchange: &str, if_unused: bool) -> Result<()> {
        let slot = self.inner.channels.admin().await?;
        let opts = ExchangeDeleteOptions {
            if_unused,
            nowait: false,
        };
        slot.channel()?
            .exchange_delete(exchange.into(), opts)
            .await
            .map_err(|e| map_err(&e, &format!("deleting exchange '{exchange}'")))?;
        self.inner.recording.forget_exchange(exchange);
        Ok(())
    }

    async fn unbind(&self, b: &Binding) -> Result<()> {
        b.validate()?;
        let mut b = b.clone();
        if let Destination::Queue(d) = &mut b.destination {
            *d = self.resolve(d);
        }
        {
            let slot = self.inner.channels.admin().await?;
            unbind(slot.channel()?, &b).await?;
        }
        self.inner.recording.forget_binding(&b);
        Ok(())
    }

    async fn purge(&self, queue: &str) -> Result<u32> {
        let queue = self.resolve(queue);
        let slot = self.inner.channels.admin().await?;
        slot.channel()?
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(|e| map_err(&e, &format!("purging queue '{queue}'")))
    }

    async fn publish(&self, publish: Publish) -> Result<Confirmation> {
        self.inner.publisher.publish(publish).await
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Subscription> {
        self.inner.channels.check_open()?;
        let (_, conn) = self
            .inner
            .channels
            .consume
            .connection(self.inner.reconnect_wait)
            .await?;
        let (tag, stream) = self.inner.subscriptions.consume(conn, queue, options).await?;
        Ok(Subscription::new(tag, stream))
    }

    async fn get(&self, queue: &str, no_ack: bool) -> Result<Option<Delivery>> {
        let queue = self.resolve(queue);
        // A get on a missing queue would close the get channel, and with it return every
        // earlier delivery taken with get and not yet settled: the queue is checked on the
        // declarations channel first. (Only a queue deleted between the two can still close it.)
        {
            let admin = self.inner.channels.admin().await?;
            check_queue(admin.channel()?, &queue).await?;
        }
        let slot = self.inner.channels.getter().await?;
        // Settles of earlier gets go out first, as they would in order on one channel.
        if let Some(ack) = slot.ack() {
            ack.flush().await;
        }
        let got = slot
            .channel()?
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack })
            .await
            .map_err(|e| map_err(&e, &format!("getting from queue '{queue}'")))?;
        let Some(msg) = got else { return Ok(None) };
        let Some(ack) = slot.ack().cloned() else {
            return Err(Error::closed("the basic.get channel has no ack task"));
        };
        let d = msg.delivery;
        let tag = d.delivery_tag;
        let acker = if no_ack {
            ack.skip(tag);
            Acker::settled(tag)
        } else {
            Acker::new(ack, tag)
        };
        Ok(Some(to_delivery(d, acker).with_message_count(msg.message_count)))
    }

    /// Connected when both connections are up; the reconnects of both added up.
    fn connection_state(&self) -> mqtransport_core::ConnectionState {
        let c = &self.inner.channels;
        let reconnects = c.consume.reconnects() + c.publish.reconnects();
        match self.state() {
            LinkState::Up(_) => mqtransport_core::ConnectionState::up(reconnects),
            LinkState::Blocked(_) => mqtransport_core::ConnectionState::up(reconnects).with_blocked(true),
            LinkState::Down | LinkState::Closed => mqtransport_core::ConnectionState::down(reconnects),
        }
    }

    async fn ping(&self) -> Result<()> {
        let c = &self.inner.channels;
        c.check_open()?;
        for link in [&c.consume, &c.publish] {
            link.connection(Duration::ZERO).await.map_err(|_| {
                Error::new(
                    ErrorKind::Connection,
                    format!("the {} connection to {} is down", link.role, c.url),
                )
            })?;
        }
        drop(c.admin().await?);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.subscriptions.close_all();
        self.inner.channels.publish.close().await;
        self.inner.channels.consume.close().await;
        Ok(())
    }
}
