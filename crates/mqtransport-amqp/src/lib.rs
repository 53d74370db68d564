//! # mqtransport-amqp
//!
//! The RabbitMQ transport of mqtransport (`amqp://`), on lapin. lapin's types stay inside this
//! crate; `mqtransport_amqp::lapin` is the explicit escape hatch.
//!
//! - Publishers and consumers use separate connections (a blocked connection stops acks too),
//!   named `mqtransport-…` so they can be found in `rabbitmqctl list_connections`.
//! - Publishing: publisher confirms always on, pipelined on one channel; mandatory by default, so
//!   an unroutable message comes back as [`Confirmation::Returned`]; a confirm that never arrives
//!   fails with [`ErrorKind::Timeout`] after the configured timeout (30 s by default).
//! - Consuming: one channel per consumer with its QoS; acks are coalesced into `multiple = true`
//!   over contiguous delivery tags by a per-channel task.
//! - Declarations and `basic.get` use their own channels, so a failed declare cannot requeue
//!   deliveries taken with `get`; a channel closed by an error is reopened on next use.
//!
//! Capabilities: those of RabbitMQ 3.x ([`Capabilities::rabbitmq`]).
//!
//! Not yet: reconnection and recovery after a lost connection, TLS (`amqps://`).

mod acker;
mod convert;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::{Channel, Connection, ConnectionProperties};
use mqtransport_core::{
    Acker, Binding, BrokerUrl, Capabilities, Confirmation, ConsumeOptions, Consumer, Declared,
    DeleteQueue, Delivery, Destination, Envelope, Error, ErrorKind, ExchangeKind, Publish,
    QueueInfo, Result, Scheme, ShortStr, Topology, Transport,
};
use tokio::sync::Mutex;

use crate::acker::ChannelAck;
use crate::convert::{from_properties, map_err, to_properties, to_table};

/// lapin itself, for what this crate does not cover. Its types may change with lapin's version.
pub use lapin;

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Options of the RabbitMQ transport.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// How long a publish waits for the broker's confirm before failing with a timeout.
    pub confirm_timeout: Duration,
    /// Prefix of the connection names shown by `rabbitmqctl list_connections`.
    pub connection_name: String,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            confirm_timeout: Duration::from_secs(30),
            connection_name: "mqtransport".into(),
        }
    }
}

/// One reusable channel, reopened when an error closed it.
struct Slot {
    channel: Option<Channel>,
    /// The ack task of the current channel (for `basic.get` deliveries).
    ack: Option<Arc<ChannelAck>>,
}

struct Inner {
    shown: String,
    consume_conn: Connection,
    publish_conn: Connection,
    admin: Mutex<Slot>,
    getter: Mutex<Slot>,
    publisher: Mutex<Slot>,
    /// The channel consuming `amq.rabbitmq.reply-to`: requests that want direct replies must be
    /// published on it.
    reply: std::sync::Mutex<Option<Channel>>,
    closed: Arc<AtomicBool>,
    options: AmqpOptions,
    consumers: AtomicU64,
}

/// A connection to RabbitMQ (one connection for consuming and one for publishing). Clones share
/// the connections.
#[derive(Clone)]
pub struct AmqpTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("url", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

fn empty_slot() -> Mutex<Slot> {
    Mutex::new(Slot {
        channel: None,
        ack: None,
    })
}

impl AmqpTransport {
    /// Connects to the broker at `url` (`amqp://user:password@host:port/vhost`).
    pub async fn connect(url: &BrokerUrl) -> Result<Self> {
        AmqpTransport::connect_with(url, AmqpOptions::default()).await
    }

    /// Connects with options.
    pub async fn connect_with(url: &BrokerUrl, options: AmqpOptions) -> Result<Self> {
        match url.scheme() {
            Scheme::Amqp => {}
            Scheme::Amqps => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("'{url}': TLS (amqps://) is not supported by this build yet"),
                ));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "the RabbitMQ transport takes amqp:// URLs, not '{url}'"
                )));
            }
        }
        let uri = url.expose_secret_uri();
        let shown = url.to_string();
        let open = |role: &str| {
            let name = format!("{}-{role}-{}", options.connection_name, std::process::id());
            let props = ConnectionProperties::default().with_connection_name(name.into());
            let uri = uri.clone();
            let shown = shown.clone();
            async move {
                Connection::connect(&uri, props).await.map_err(|e| {
                    Error::new(
                        ErrorKind::Connection,
                        format!("cannot connect to RabbitMQ at {shown}: {e}"),
                    )
                })
            }
        };
        let consume_conn = open("consume").await?;
        let publish_conn = open("publish").await?;
        Ok(AmqpTransport {
            inner: Arc::new(Inner {
                shown,
                consume_conn,
                publish_conn,
                admin: empty_slot(),
                getter: empty_slot(),
                publisher: empty_slot(),
                reply: std::sync::Mutex::new(None),
                closed: Arc::new(AtomicBool::new(false)),
                options,
                consumers: AtomicU64::new(0),
            }),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::closed(format!(
                "connection to {} is closed",
                self.inner.shown
            )));
        }
        Ok(())
    }

    /// The channel in `slot`, opened (and put in confirm mode) if it is missing or was closed.
    async fn channel<'a>(
        &self,
        slot: &'a Mutex<Slot>,
        conn: &Connection,
        confirm: bool,
        with_ack: bool,
    ) -> Result<tokio::sync::MutexGuard<'a, Slot>> {
        self.check_open()?;
        let mut guard = slot.lock().await;
        let usable = guard
            .channel
            .as_ref()
            .is_some_and(|c| c.status().connected());
        if !usable {
            let ch = conn
                .create_channel()
                .await
                .map_err(|e| map_err(&e, &format!("opening a channel to {}", self.inner.shown)))?;
            if confirm {
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| map_err(&e, "enabling publisher confirms"))?;
            }
            guard.ack = with_ack.then(|| {
                ChannelAck::spawn(
                    ch.clone(),
                    Arc::clone(&self.inner.closed),
                    "basic.get".into(),
                )
            });
            guard.channel = Some(ch);
        }
        Ok(guard)
    }

    async fn admin(&self) -> Result<tokio::sync::MutexGuard<'_, Slot>> {
        self.channel(&self.inner.admin, &self.inner.consume_conn, false, false)
            .await
    }
}

fn channel_of(slot: &Slot) -> Result<&Channel> {
    slot.channel
        .as_ref()
        .ok_or_else(|| Error::closed("no channel"))
}

fn lapin_kind(kind: ExchangeKind) -> lapin::ExchangeKind {
    match kind {
        ExchangeKind::Direct => lapin::ExchangeKind::Direct,
        ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
        ExchangeKind::Topic => lapin::ExchangeKind::Topic,
        ExchangeKind::Headers => lapin::ExchangeKind::Headers,
    }
}

impl Transport for AmqpTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities::rabbitmq()
    }

    async fn declare(&self, topology: &Topology) -> Result<Declared> {
        topology.validate()?;
        let slot = self.admin().await?;
        let ch = channel_of(&slot)?;
        for x in &topology.exchanges {
            let opts = ExchangeDeclareOptions {
                passive: false,
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                nowait: false,
            };
            ch.exchange_declare(
                x.name.as_str().into(),
                lapin_kind(x.kind),
                opts,
                to_table(&x.arguments)?,
            )
            .await
            .map_err(|e| map_err(&e, &format!("declaring exchange '{}'", x.name)))?;
        }
        let mut declared = Declared::default();
        for q in &topology.queues {
            let opts = QueueDeclareOptions {
                passive: false,
                durable: q.durable,
                exclusive: q.exclusive,
                auto_delete: q.auto_delete,
                nowait: false,
            };
            let ok = ch
                .queue_declare(q.name.as_str().into(), opts, to_table(&q.arguments)?)
                .await
                .map_err(|e| map_err(&e, &format!("declaring queue '{}'", q.name)))?;
            declared.queues.push(QueueInfo {
                name: ok.name().as_str().to_owned(),
                message_count: ok.message_count(),
                consumer_count: ok.consumer_count(),
            });
        }
        for b in &topology.bindings {
            let args = to_table(&b.arguments)?;
            let what = format!("binding '{}' to '{}'", b.destination.name(), b.source);
            match &b.destination {
                Destination::Queue(q) => ch
                    .queue_bind(
                        q.as_str().into(),
                        b.source.as_str().into(),
                        b.routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        args,
                    )
                    .await
                    .map_err(|e| map_err(&e, &what))?,
                Destination::Exchange(x) => ch
                    .exchange_bind(
                        x.as_str().into(),
                        b.source.as_str().into(),
                        b.routing_key.as_str().into(),
                        ExchangeBindOptions::default(),
                        args,
                    )
                    .await
                    .map_err(|e| map_err(&e, &what))?,
            }
        }
        Ok(declared)
    }

    async fn queue_info(&self, queue: &str) -> Result<QueueInfo> {
        let slot = self.admin().await?;
        let opts = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let ok = channel_of(&slot)?
            .queue_declare(queue.into(), opts, Default::default())
            .await
            .map_err(|e| map_err(&e, &format!("checking queue '{queue}'")))?;
        Ok(QueueInfo {
            name: ok.name().as_str().to_owned(),
            message_count: ok.message_count(),
            consumer_count: ok.consumer_count(),
        })
    }

    async fn exchange_exists(&self, exchange: &str) -> Result<()> {
        let slot = self.admin().await?;
        let opts = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        channel_of(&slot)?
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Direct,
                opts,
                Default::default(),
            )
            .await
            .map_err(|e| map_err(&e, &format!("checking exchange '{exchange}'")))
    }

    async fn delete_queue(&self, queue: &str, options: DeleteQueue) -> Result<u32> {
        let slot = self.admin().await?;
        let opts = QueueDeleteOptions {
            if_unused: options.if_unused,
            if_empty: options.if_empty,
            nowait: false,
        };
        channel_of(&slot)?
            .queue_delete(queue.into(), opts)
            .await
            .map_err(|e| map_err(&e, &format!("deleting queue '{queue}'")))
    }

    async fn delete_exchange(&self, exchange: &str, if_unused: bool) -> Result<()> {
        let slot = self.admin().await?;
        let opts = ExchangeDeleteOptions {
            if_unused,
            nowait: false,
        };
        channel_of(&slot)?
            .exchange_delete(exchange.into(), opts)
            .await
            .map_err(|e| map_err(&e, &format!("deleting exchange '{exchange}'")))
    }

    async fn unbind(&self, b: &Binding) -> Result<()> {
        b.validate()?;
        let slot = self.admin().await?;
        let ch = channel_of(&slot)?;
        let args = to_table(&b.arguments)?;
        let what = format!("unbinding '{}' from '{}'", b.destination.name(), b.source);
        match &b.destination {
            Destination::Queue(q) => ch
                .queue_unbind(
                    q.as_str().into(),
                    b.source.as_str().into(),
                    b.routing_key.as_str().into(),
                    args,
                )
                .await
                .map_err(|e| map_err(&e, &what)),
            Destination::Exchange(x) => ch
                .exchange_unbind(
                    x.as_str().into(),
                    b.source.as_str().into(),
                    b.routing_key.as_str().into(),
                    ExchangeUnbindOptions::default(),
                    args,
                )
                .await
                .map_err(|e| map_err(&e, &what)),
        }
    }

    async fn purge(&self, queue: &str) -> Result<u32> {
        let slot = self.admin().await?;
        channel_of(&slot)?
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
            .map_err(|e| map_err(&e, &format!("purging queue '{queue}'")))
    }

    async fn publish(&self, publish: Publish) -> Result<Confirmation> {
        self.check_open()?;
        let Publish {
            exchange,
            routing_key,
            mandatory,
            envelope,
        } = publish;
        let max = Capabilities::rabbitmq().max_message_size;
        if envelope.body.len() > max {
            return Err(Error::invalid(format!(
                "message to exchange '{exchange}' with routing key '{routing_key}' is {} bytes, larger than the broker's maximum of {max} bytes",
                envelope.body.len()
            )));
        }
        let props = to_properties(envelope.properties())?;
        let opts = BasicPublishOptions {
            mandatory,
            immediate: false,
        };
        // A request asking for a direct reply must go out on the channel consuming the replies.
        let reply_channel = if envelope.properties().reply_to.as_deref() == Some(REPLY_TO) {
            self.inner
                .reply
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        } else {
            None
        };
        let confirm = match reply_channel {
            Some(ch) => ch
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    opts,
                    &envelope.body,
                    props,
                )
                .await
                .map_err(|e| map_err(&e, &format!("publishing to exchange '{exchange}'")))?,
            None => {
                let slot = self
                    .channel(&self.inner.publisher, &self.inner.publish_conn, true, false)
                    .await?;
                channel_of(&slot)?
                    .basic_publish(
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        opts,
                        &envelope.body,
                        props,
                    )
                    .await
                    .map_err(|e| map_err(&e, &format!("publishing to exchange '{exchange}'")))?
            }
        };
        let timeout = self.inner.options.confirm_timeout;
        let answer = tokio::time::timeout(timeout, confirm).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("no publisher confirm within {timeout:?} for the message to exchange '{exchange}' with routing key '{routing_key}'"),
            )
        })?;
        match answer.map_err(|e| map_err(&e, &format!("publishing to exchange '{exchange}'")))? {
            lapin::Confirmation::Ack(None) => Ok(Confirmation::Confirmed),
            lapin::Confirmation::Ack(Some(ret)) | lapin::Confirmation::Nack(Some(ret)) => {
                Ok(Confirmation::Returned {
                    reply_code: ret.reply_code,
                    reply_text: ret.reply_text.as_str().to_owned(),
                })
            }
            lapin::Confirmation::Nack(None) => Ok(Confirmation::Nacked),
            lapin::Confirmation::NotRequested => Err(Error::new(
                ErrorKind::Connection,
                "the publishing channel is not in confirm mode",
            )),
        }
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Consumer> {
        self.check_open()?;
        let ch = self
            .inner
            .consume_conn
            .create_channel()
            .await
            .map_err(|e| {
                map_err(
                    &e,
                    &format!("opening a consumer channel to {}", self.inner.shown),
                )
            })?;
        let is_reply = queue == REPLY_TO;
        if is_reply {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| map_err(&e, "enabling publisher confirms"))?;
        }
        if options.prefetch > 0 && !options.no_ack {
            ch.basic_qos(options.prefetch, BasicQosOptions { global: false })
                .await
                .map_err(|e| map_err(&e, "setting the prefetch"))?;
        }
        let n = self.inner.consumers.fetch_add(1, Ordering::Relaxed);
        let tag = options
            .consumer_tag
            .clone()
            .unwrap_or_else(|| format!("mqt-{}-{n}", std::process::id()));
        let opts = BasicConsumeOptions {
            no_local: false,
            no_ack: options.no_ack,
            exclusive: options.exclusive,
            nowait: false,
        };
        let inner = ch
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                opts,
                to_table(&options.arguments)?,
            )
            .await
            .map_err(|e| map_err(&e, &format!("consuming from queue '{queue}'")))?;
        if is_reply {
            *self
                .inner
                .reply
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ch.clone());
        }
        let ack = ChannelAck::spawn(
            ch.clone(),
            Arc::clone(&self.inner.closed),
            format!("queue '{queue}'"),
        );
        let stream = DeliveryStream {
            inner,
            channel: ch,
            tag: tag.clone(),
            queue: queue.to_owned(),
            no_ack: options.no_ack,
            ack,
            finished: false,
            closed: Arc::clone(&self.inner.closed),
        };
        Ok(Consumer::new(tag, stream))
    }

    async fn get(&self, queue: &str, no_ack: bool) -> Result<Option<Delivery>> {
        let slot = self
            .channel(&self.inner.getter, &self.inner.consume_conn, false, true)
            .await?;
        // Settles of earlier gets go out first, as they would in order on one channel.
        if let Some(ack) = &slot.ack {
            ack.flush().await;
        }
        let got = channel_of(&slot)?
            .basic_get(queue.into(), BasicGetOptions { no_ack })
            .await
            .map_err(|e| map_err(&e, &format!("getting from queue '{queue}'")))?;
        let Some(msg) = got else { return Ok(None) };
        let Some(ack) = slot.ack.clone() else {
            return Err(Error::closed("the basic.get channel has no ack task"));
        };
        let d = msg.delivery;
        let tag = d.delivery_tag;
        let acker = if no_ack {
            ack.skip(tag);
            Acker::settled()
        } else {
            Acker::new(ack, tag)
        };
        Ok(Some(
            to_delivery(d, acker).with_message_count(msg.message_count),
        ))
    }

    async fn ping(&self) -> Result<()> {
        self.check_open()?;
        for conn in [&self.inner.consume_conn, &self.inner.publish_conn] {
            if !conn.status().connected() {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("connection to {} is down", self.inner.shown),
                ));
            }
        }
        drop(self.admin().await?);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let _ = self.inner.publish_conn.close(200, "OK".into()).await;
        let _ = self.inner.consume_conn.close(200, "OK".into()).await;
        Ok(())
    }
}

fn to_delivery(d: lapin::message::Delivery, acker: Acker) -> Delivery {
    let mut envelope = Envelope::new(Bytes::from(d.data));
    if let Some(p) = from_properties(&d.properties) {
        *envelope.properties_mut() = p;
    }
    Delivery::new(
        envelope,
        ShortStr::from(d.exchange.as_str()),
        ShortStr::from(d.routing_key.as_str()),
        d.redelivered,
        d.delivery_tag,
        acker,
    )
}

/// A consumer's deliveries. Dropping it cancels the consumer; its channel stays open until every
/// delivery taken from it is settled or dropped.
struct DeliveryStream {
    inner: lapin::Consumer,
    channel: Channel,
    tag: String,
    queue: String,
    no_ack: bool,
    ack: Arc<ChannelAck>,
    finished: bool,
    closed: Arc<AtomicBool>,
}

impl Stream for DeliveryStream {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(d))) => {
                let acker = if self.no_ack {
                    Acker::settled()
                } else {
                    Acker::new(
                        Arc::clone(&self.ack) as Arc<dyn mqtransport_core::AckHandle>,
                        d.delivery_tag,
                    )
                };
                Poll::Ready(Some(Ok(to_delivery(d, acker))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finished = true;
                Poll::Ready(Some(Err(map_err(
                    &e,
                    &format!("consumer on queue '{}'", self.queue),
                ))))
            }
            Poll::Ready(None) => {
                self.finished = true;
                let err = if self.closed.load(Ordering::Acquire) {
                    Error::closed(format!(
                        "consumer on queue '{}' ended: the connection was closed",
                        self.queue
                    ))
                } else {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "consumer cancelled by the broker: queue '{}' was deleted or is gone",
                            self.queue
                        ),
                    )
                };
                Poll::Ready(Some(Err(err)))
            }
        }
    }
}

impl Drop for DeliveryStream {
    fn drop(&mut self) {
        if self.finished || self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (channel, tag) = (self.channel.clone(), self.tag.clone());
            rt.spawn(async move {
                let _ = channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await;
            });
        }
    }
}
