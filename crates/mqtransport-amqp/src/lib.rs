//! # mqtransport-amqp
//!
//! The RabbitMQ transport of mqtransport (`amqp://`), on lapin. lapin's types stay inside this
//! crate; `mqtransport_amqp::lapin` is the explicit escape hatch.
//!
//! - Publishers and consumers use separate connections (a blocked connection stops acks too),
//!   named `mqtransport-…` so they can be found in `rabbitmqctl list_connections`.
//! - Publishing: publisher confirms always on, pipelined on one channel with a bounded window of
//!   unconfirmed publishes ([`AmqpOptions::max_unconfirmed`]); mandatory by default, so an
//!   unroutable message comes back as [`Confirmation::Returned`] to the caller that sent it
//!   (a `basic.return` carries no delivery tag and lapin pairs it with whichever confirm comes
//!   next, so a per-channel ledger matches returns to publishes by content and settles each
//!   publish only once no other confirm can still carry its return); a confirm that never arrives
//!   fails with [`ErrorKind::Timeout`] after the configured timeout (30 s by default), and no step
//!   of a publish waits past it.
//! - Consuming: one channel per consumer with its QoS, polled directly by the application's
//!   stream; acks are coalesced into `multiple = true` over contiguous delivery tags by a
//!   per-channel task, which sends whatever has queued up at once (no timer).
//! - Declarations and `basic.get` use their own channels, so a failed declare cannot requeue
//!   deliveries taken with `get`; a channel closed by an error is reopened on next use.
//!
//! - Recovery is owned here, not by lapin: each connection is supervised; when it is lost the
//!   transport reconnects with exponential backoff and jitter, re-declares the topology it
//!   declared (server-named queues get new names, and their bindings and consumers move with
//!   them), re-opens every consumer with its QoS behind the same [`Consumer`] stream, and
//!   re-sends publishes that were unconfirmed at the loss ([`Unconfirmed`]). Publishes during an
//!   outage wait up to the confirm timeout, then fail with [`ErrorKind::Timeout`]. Deliveries
//!   unacknowledged at the loss come back redelivered; settling the old ones reports
//!   [`ErrorKind::Closed`]. A consumer cancelled by the broker (its queue deleted) or whose
//!   channel the broker closed (a consumer timeout; a refused request on the direct reply-to
//!   channel) is resumed, after declaring the queue again if this transport declared it; a
//!   queue that is gone and was not declared here ends the stream with [`ErrorKind::NotFound`].
//!   This starts when the stream is next polled (a consumer being awaited is woken at once), or
//!   for the reply consumer when a request needs its channel. `connection.blocked` shows in
//!   [`AmqpTransport::state`].
//! - TLS (`amqps://`) with the `tls` feature: rustls with the ring provider, a private CA file
//!   and client certificates ([`TlsOptions`]).
//!
//! Headers travel losslessly in type and value; their order does not survive (lapin decodes
//! tables sorted by key), and RabbitMQ has no unsigned 64-bit type (such values that fit are sent
//! signed, larger ones are refused naming the header).
//!
//! Capabilities: those of RabbitMQ 3.x ([`Capabilities::rabbitmq`]).

mod acker;
mod confirms;
mod convert;
mod link;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::{Channel, Connection};
use mqtransport_core::{
    Acker, Binding, BrokerUrl, Capabilities, Confirmation, ConsumeOptions, Consumer, DIRECT_REPLY_TO, Declared,
    DeleteQueue, Delivery, Destination, Envelope, Error, ErrorKind, Exchange, ExchangeKind, Publish, Queue, QueueInfo,
    Result, Scheme, Scope, ShortStr, Topology, Transport,
};
use tokio::sync::Mutex;

use crate::acker::ChannelAck;
use crate::confirms::{Confirming, Sent, Settled};
use crate::convert::{from_properties, map_err, to_properties, to_table};
pub use crate::link::LinkState;
use crate::link::{Link, OnUp};

/// lapin itself, for what this crate does not cover. Its types may change with lapin's version.
pub use lapin;

/// What happens to a publish that was sent but not confirmed when the connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unconfirmed {
    /// Send it again on the new connection (at-least-once: it may arrive twice).
    #[default]
    Resend,
    /// Fail the publish with a [`ErrorKind::Connection`] error; the caller decides.
    Fail,
}

/// Options of the RabbitMQ transport.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// How long a publish may take, waiting for the connection and for the broker's confirm,
    /// before it fails with a timeout.
    pub confirm_timeout: Duration,
    /// How long other operations wait for a lost connection to come back.
    pub reconnect_wait: Duration,
    /// What happens to publishes unconfirmed at a connection loss.
    pub unconfirmed: Unconfirmed,
    /// At most this many publishes wait for their confirm at once; further publishes wait for
    /// a place (back-pressure) within their own confirm timeout.
    pub max_unconfirmed: usize,
    /// Prefix of the connection names shown by `rabbitmqctl list_connections`.
    pub connection_name: String,
    /// TLS settings for `amqps://` (with the `tls` feature).
    pub tls: TlsOptions,
}

/// TLS settings for `amqps://` URLs. The server certificate is checked against the bundled
/// web PKI roots plus `ca_file`; `client_cert_file` + `client_key_file` authenticate the client.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra trusted CA certificates (PEM), e.g. a private CA that signed the broker's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM) for certificate authentication.
    pub client_cert_file: Option<std::path::PathBuf>,
    /// The client's PKCS#8 private key (PEM).
    pub client_key_file: Option<std::path::PathBuf>,
}

impl TlsOptions {
    fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::invalid(format!("cannot read the TLS {what} '{}': {e}", path.display())))
    }

    /// The lapin TLS configuration: files are read (and problems reported naming them) here.
    pub(crate) fn lapin_config(&self) -> Result<lapin::tcp::OwnedTLSConfig> {
        let cert_chain = match &self.ca_file {
            Some(p) => Some(
                String::from_utf8(Self::read(p, "CA file")?)
                    .map_err(|_| Error::invalid(format!("the TLS CA file '{}' is not PEM text", p.display())))?,
            ),
            None => None,
        };
        let identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: Self::read(c, "client certificate")?,
                key: Self::read(k, "client key")?,
            }),
            (None, None) => None,
            _ => {
                return Err(Error::invalid(
                    "TLS client authentication needs both client_cert_file and client_key_file",
                ));
            }
        };
        Ok(lapin::tcp::OwnedTLSConfig { identity, cert_chain })
    }
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            confirm_timeout: Duration::from_secs(30),
            reconnect_wait: Duration::from_secs(30),
            unconfirmed: Unconfirmed::Resend,
            max_unconfirmed: 1024,
            connection_name: "mqtransport".into(),
            tls: TlsOptions::default(),
        }
    }
}

/// One reusable channel of one connection generation, reopened when lost or closed by an error.
#[derive(Default)]
struct Slot {
    generation: u64,
    channel: Option<Channel>,
    /// The ack task of the channel (for `basic.get` deliveries).
    ack: Option<Arc<ChannelAck>>,
    /// The channel with its publish ledger, when in confirm mode.
    confirming: Option<Arc<Confirming>>,
}

/// What this transport declared, to declare again after a reconnect.
#[derive(Default)]
struct Recorded {
    exchanges: Vec<Exchange>,
    queues: Vec<Queue>,
    bindings: Vec<Binding>,
    /// Current names of server-named queues.
    server_named: Vec<String>,
    /// A server-named queue's first name → its current name.
    renames: HashMap<String, String>,
}

impl Recorded {
    fn resolve(&self, name: &str) -> String {
        self.renames.get(name).cloned().unwrap_or_else(|| name.to_owned())
    }

    fn has_queue(&self, name: &str) -> bool {
        self.queues.iter().any(|q| q.name == name)
    }

    fn rename(&mut self, old: &str, new: &str) {
        for q in &mut self.queues {
            if q.name == old {
                q.name = new.to_owned();
            }
        }
        for b in &mut self.bindings {
            if let Destination::Queue(d) = &mut b.destination
                && d == old
            {
                *d = new.to_owned();
            }
        }
        for n in &mut self.server_named {
            if n == old {
                *n = new.to_owned();
            }
        }
        for v in self.renames.values_mut() {
            if v == old {
                *v = new.to_owned();
            }
        }
        self.renames.entry(old.to_owned()).or_insert_with(|| new.to_owned());
    }
}

/// A consumer the application holds, restarted on every new connection.
struct ConsumerSpec {
    queue: String,
    options: ConsumeOptions,
    tag: String,
    cancelled: AtomicBool,
    state: std::sync::Mutex<SpecState>,
}

/// The subscription the application's stream polls directly (no task in between).
struct Live {
    consumer: lapin::Consumer,
    ack: Arc<ChannelAck>,
    channel: Channel,
    conn: Arc<Connection>,
    queue: String,
}

#[derive(Default)]
struct SpecState {
    live: Option<Live>,
    /// An error for the stream to yield before it ends.
    ended: Option<Error>,
    finished: bool,
    /// The stream, parked while there is no live subscription.
    waker: Option<std::task::Waker>,
}

impl ConsumerSpec {
    fn state(&self) -> std::sync::MutexGuard<'_, SpecState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the application's stream after an error.
    fn finish(&self, error: Error) {
        let waker = {
            let mut st = self.state();
            st.live = None;
            st.ended = Some(error);
            st.finished = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn done(&self) -> bool {
        self.cancelled.load(Ordering::Acquire) || self.state().finished
    }

    /// Hands a fresh subscription to the stream and wakes it.
    fn install(
        &self,
        inner: &Inner,
        channel: Channel,
        consumer: lapin::Consumer,
        conn: Arc<Connection>,
        queue: String,
    ) {
        if self.queue == DIRECT_REPLY_TO {
            *inner.reply.lock().unwrap_or_else(PoisonError::into_inner) = Some(Confirming::new(channel.clone(), None));
        }
        let ack = ChannelAck::spawn(channel.clone(), Arc::clone(&inner.closed), format!("queue '{queue}'"));
        let waker = {
            let mut st = self.state();
            if st.finished || self.cancelled.load(Ordering::Acquire) {
                None
            } else {
                st.live = Some(Live {
                    consumer,
                    ack,
                    channel,
                    conn,
                    queue,
                });
                st.waker.take()
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct Inner {
    shown: String,
    consume: Arc<Link>,
    publish: Arc<Link>,
    admin: Mutex<Slot>,
    getter: Mutex<Slot>,
    publisher: Mutex<Slot>,
    /// The publisher channel while it is usable: publishing clones it out under a brief lock and
    /// holds no lock while sending, so concurrent publishes pipeline on it.
    publisher_fast: std::sync::Mutex<Option<Arc<Confirming>>>,
    /// The channel consuming `amq.rabbitmq.reply-to`: requests that want direct replies must be
    /// published on it.
    reply: std::sync::Mutex<Option<Arc<Confirming>>>,
    closed: Arc<AtomicBool>,
    /// The window of publishes awaiting their confirm.
    window: Arc<tokio::sync::Semaphore>,
    options: AmqpOptions,
    consumer_count: AtomicU64,
    recorded: std::sync::Mutex<Recorded>,
    specs: std::sync::Mutex<Vec<Arc<ConsumerSpec>>>,
}

impl Inner {
    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn resolve(&self, name: &str) -> String {
        self.recorded().resolve(name)
    }
}

/// A connection to RabbitMQ (one connection for consuming and one for publishing), supervised
/// and recovered by the transport. Clones share the connections.
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
        let tls = match url.scheme() {
            Scheme::Amqp => None,
            #[cfg(feature = "tls")]
            Scheme::Amqps => Some(options.tls.clone()),
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
        };
        let uri = url.expose_secret_uri();
        let shown = url.to_string();
        let suffix = unique_suffix();
        let this: Arc<OnceLock<Weak<Inner>>> = Arc::default();
        let restore_target = Arc::clone(&this);
        let on_consume_up: OnUp = Arc::new(move |conn| {
            let target = restore_target.get().and_then(Weak::upgrade);
            Box::pin(async move {
                match target {
                    Some(inner) => restore(inner, conn).await,
                    None => Ok(()),
                }
            })
        });
        let nothing: OnUp = Arc::new(|_| Box::pin(async { Ok(()) }));
        let name = |role: &str| format!("{}-{role}-{suffix}", options.connection_name);
        let consume = Link::open(
            "consume",
            uri.clone(),
            tls.clone(),
            shown.clone(),
            name("consume"),
            on_consume_up,
        )
        .await?;
        let publish = Link::open("publish", uri, tls, shown.clone(), name("publish"), nothing).await?;
        let inner = Arc::new(Inner {
            shown,
            consume,
            publish,
            admin: Mutex::default(),
            getter: Mutex::default(),
            publisher: Mutex::default(),
            publisher_fast: std::sync::Mutex::new(None),
            reply: std::sync::Mutex::new(None),
            closed: Arc::new(AtomicBool::new(false)),
            window: Arc::new(tokio::sync::Semaphore::new(options.max_unconfirmed.max(1))),
            options,
            consumer_count: AtomicU64::new(0),
            recorded: std::sync::Mutex::default(),
            specs: std::sync::Mutex::default(),
        });
        let _ = this.set(Arc::downgrade(&inner));
        Ok(AmqpTransport { inner })
    }

    /// The state of the connections: `Blocked` when the broker blocked publishing, `Down` while
    /// either connection is being recovered, `Closed` after [`close`](Transport::close).
    pub fn state(&self) -> LinkState {
        let (c, p) = (self.inner.consume.state(), self.inner.publish.state());
        match (c, p) {
            (LinkState::Closed, _) | (_, LinkState::Closed) => LinkState::Closed,
            (LinkState::Down, _) | (_, LinkState::Down) => LinkState::Down,
            (_, LinkState::Blocked(g)) | (LinkState::Blocked(g), _) => LinkState::Blocked(g),
            (LinkState::Up(g), LinkState::Up(_)) => LinkState::Up(g),
        }
    }

    /// Publishes currently sent (or waiting to be) and not yet confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.inner.options.max_unconfirmed.max(1) - self.inner.window.available_permits()
    }

    /// The names of this transport's two connections, as `rabbitmqctl list_connections name`
    /// shows them.
    pub fn connection_names(&self) -> [&str; 2] {
        [self.inner.consume.name.as_str(), self.inner.publish.name.as_str()]
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::closed(format!("connection to {} is closed", self.inner.shown)));
        }
        Ok(())
    }

    /// The channel in `slot` for the link's current connection, opened (in confirm mode if
    /// asked) when missing, lost, or closed by an error.
    async fn channel<'a>(
        &self,
        slot: &'a Mutex<Slot>,
        link: &Link,
        wait: Duration,
        confirm: bool,
        with_ack: bool,
    ) -> Result<tokio::sync::MutexGuard<'a, Slot>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.check_open()?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (generation, conn) = link.connection(left).await?;
            let mut guard = slot.lock().await;
            let usable =
                guard.generation == generation && guard.channel.as_ref().is_some_and(|c| c.status().connected());
            if usable {
                return Ok(guard);
            }
            // Opening a channel on a connection that died unnoticed must not hang. lapin does not
            // always fail an open asked for just as the connection died, so the open is given up
            // as soon as the link sees the connection go (its supervisor looks at least every
            // half second), and is bounded by the deadline besides.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let opened = if conn.status().connected() {
                tokio::select! {
                    opened = tokio::time::timeout(left, self.open_channel(&conn, confirm, with_ack)) => {
                        opened.unwrap_or_else(|_| Err(Error::new(ErrorKind::Connection, "opening a channel timed out")))
                    }
                    () = link.wait_past(generation, left) => {
                        Err(Error::new(ErrorKind::Connection, "the connection was lost while a channel was being opened"))
                    }
                }
            } else {
                Err(Error::new(ErrorKind::Connection, "the connection is lost"))
            };
            match opened {
                Ok((ch, ack)) => {
                    guard.ack = ack;
                    // A publish watches the publishing link for the loss of its channel's
                    // connection; a confirming channel of another link is not watched.
                    let watched = std::ptr::eq(link, &*self.inner.publish).then_some(generation);
                    guard.confirming = confirm.then(|| Confirming::new(ch.clone(), watched));
                    guard.channel = Some(ch);
                    guard.generation = generation;
                    return Ok(guard);
                }
                // The connection died before the supervisor noticed: wait for the next one.
                Err(e) if matches!(e.kind(), ErrorKind::Connection | ErrorKind::Closed) => {
                    drop(guard);
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "RabbitMQ at {} was unreachable for {wait:?} ({} connection)",
                                self.inner.shown, link.role
                            ),
                        ));
                    }
                    link.wait_past(
                        generation,
                        deadline.saturating_duration_since(tokio::time::Instant::now()),
                    )
                    .await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn open_channel(
        &self,
        conn: &Connection,
        confirm: bool,
        with_ack: bool,
    ) -> Result<(Channel, Option<Arc<ChannelAck>>)> {
        {
            let ch = conn
                .create_channel()
                .await
                .map_err(|e| map_err(&e, &format!("opening a channel to {}", self.inner.shown)))?;
            if confirm {
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| map_err(&e, "enabling publisher confirms"))?;
            }
            let ack =
                with_ack.then(|| ChannelAck::spawn(ch.clone(), Arc::clone(&self.inner.closed), "basic.get".into()));
            Ok((ch, ack))
        }
    }

    /// The publisher channel: the cached one while usable, else (re)opened through its slot.
    async fn publisher_channel(&self, wait: Duration) -> Result<Arc<Confirming>> {
        let cached = self
            .inner
            .publisher_fast
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(ch) = cached.filter(|c| c.channel.status().connected()) {
            self.check_open()?;
            return Ok(ch);
        }
        let slot = self
            .channel(&self.inner.publisher, &self.inner.publish, wait, true, false)
            .await?;
        let ch = slot
            .confirming
            .clone()
            .ok_or_else(|| Error::closed("the publisher channel is not in confirm mode"))?;
        *self.inner.publisher_fast.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&ch));
        Ok(ch)
    }

    async fn admin(&self) -> Result<tokio::sync::MutexGuard<'_, Slot>> {
        self.channel(
            &self.inner.admin,
            &self.inner.consume,
            self.inner.options.reconnect_wait,
            false,
            false,
        )
        .await
    }

    fn record(&self, topology: &Topology, declared: &Declared) {
        let mut r = self.inner.recorded();
        for x in &topology.exchanges {
            if !r.exchanges.iter().any(|e| e.name == x.name) {
                r.exchanges.push(x.clone());
            }
        }
        for (q, info) in topology.queues.iter().zip(&declared.queues) {
            if r.has_queue(&info.name) {
                continue;
            }
            let mut q = q.clone();
            if q.name.is_empty() {
                r.server_named.push(info.name.clone());
            }
            q.name.clone_from(&info.name);
            r.queues.push(q);
        }
        let last_server_named = declared.last_server_named(topology).map(str::to_owned);
        for b in &topology.bindings {
            let mut b = b.clone();
            if let (Destination::Queue(d), Some(n)) = (&mut b.destination, &last_server_named)
                && d.is_empty()
            {
                d.clone_from(n);
            }
            if !r.bindings.contains(&b) {
                r.bindings.push(b);
            }
        }
    }
}

fn channel_of(slot: &Slot) -> Result<&Channel> {
    slot.channel.as_ref().ok_or_else(|| Error::closed("no channel"))
}

fn lapin_kind(kind: ExchangeKind) -> lapin::ExchangeKind {
    match kind {
        ExchangeKind::Direct => lapin::ExchangeKind::Direct,
        ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
        ExchangeKind::Topic => lapin::ExchangeKind::Topic,
        ExchangeKind::Headers => lapin::ExchangeKind::Headers,
    }
}

async fn declare_exchange(ch: &Channel, x: &Exchange) -> Result<()> {
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
    .map_err(|e| map_err(&e, &format!("declaring exchange '{}'", x.name)))
}

async fn declare_queue(ch: &Channel, q: &Queue) -> Result<QueueInfo> {
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
    Ok(QueueInfo {
        name: ok.name().as_str().to_owned(),
        message_count: ok.message_count(),
        consumer_count: ok.consumer_count(),
    })
}

async fn bind(ch: &Channel, b: &Binding) -> Result<()> {
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
            .map_err(|e| map_err(&e, &what)),
        Destination::Exchange(x) => ch
            .exchange_bind(
                x.as_str().into(),
                b.source.as_str().into(),
                b.routing_key.as_str().into(),
                ExchangeBindOptions::default(),
                args,
            )
            .await
            .map_err(|e| map_err(&e, &what)),
    }
}

/// After a reconnect: declares the recorded topology again, then restarts every consumer.
async fn restore(inner: Arc<Inner>, conn: Arc<Connection>) -> Result<()> {
    let closed = || {
        inner
            .closed
            .load(Ordering::Acquire)
            .then(|| Error::closed("the transport was closed during a reconnect"))
    };
    if let Some(e) = closed() {
        return Err(e);
    }
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| map_err(&e, "opening a channel to restore the topology"))?;
    let (exchanges, queues, server_named) = {
        let r = inner.recorded();
        (r.exchanges.clone(), r.queues.clone(), r.server_named.clone())
    };
    for x in &exchanges {
        declare_exchange(&ch, x).await?;
    }
    for q in &queues {
        if let Some(e) = closed() {
            return Err(e);
        }
        if server_named.contains(&q.name) {
            // A server-named queue cannot be declared by name: it gets a new one, and its
            // bindings and consumers follow it.
            let mut fresh = q.clone();
            fresh.name.clear();
            let info = declare_queue(&ch, &fresh).await?;
            inner.recorded().rename(&q.name, &info.name);
        } else {
            declare_queue(&ch, q).await?;
        }
    }
    // Bindings are read after the renames above.
    let bindings = inner.recorded().bindings.clone();
    for b in &bindings {
        bind(&ch, b).await?;
    }
    let _ = ch.close(200, "OK".into()).await;
    let specs: Vec<Arc<ConsumerSpec>> = inner.specs.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for spec in specs.into_iter().filter(|s| !s.done()) {
        tokio::spawn(resubscribe(Arc::downgrade(&inner), spec, Arc::clone(&conn)));
    }
    Ok(())
}

/// Opens a channel with the consumer's QoS and subscribes.
async fn subscribe(conn: &Connection, spec: &ConsumerSpec, queue: &str) -> Result<(Channel, lapin::Consumer)> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| map_err(&e, &format!("opening a consumer channel for '{queue}'")))?;
    if spec.queue == DIRECT_REPLY_TO {
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| map_err(&e, "enabling publisher confirms"))?;
    }
    let o = &spec.options;
    if o.prefetch > 0 && !o.no_ack {
        ch.basic_qos(o.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|e| map_err(&e, "setting the prefetch"))?;
    }
    let opts = BasicConsumeOptions {
        no_local: false,
        no_ack: o.no_ack,
        exclusive: o.exclusive,
        nowait: false,
    };
    let consumer = ch
        .basic_consume(queue.into(), spec.tag.as_str().into(), opts, to_table(&o.arguments)?)
        .await
        .map_err(|e| map_err(&e, &format!("consuming from queue '{queue}'")))?;
    Ok((ch, consumer))
}

/// Subscribes `spec` on `conn` (after a reconnect or a broker-side cancel) and hands the
/// subscription to the application's stream.
async fn resubscribe(inner: Weak<Inner>, spec: Arc<ConsumerSpec>, conn: Arc<Connection>) {
    if spec.done() {
        return;
    }
    let Some(i) = inner.upgrade() else { return };
    let queue = i.resolve(&spec.queue);
    drop(i);
    match subscribe(&conn, &spec, &queue).await {
        Ok((ch, consumer)) => {
            if let Some(i) = inner.upgrade() {
                spec.install(&i, ch, consumer, conn, queue);
            }
        }
        // A connection problem is retried by the next reconnect; anything else (the queue is
        // gone, access refused) ends the application's stream with the error.
        Err(e) => {
            if conn.status().connected() && !matches!(e.kind(), ErrorKind::Connection | ErrorKind::Closed) {
                spec.finish(e);
            }
        }
    }
}

/// Starts resuming the direct reply-to consumer if its channel is closed and its stream has
/// not noticed yet (it notices when next polled, but a request waits for the channel now).
fn revive_reply_consumer(inner: &Arc<Inner>) {
    let spec = inner
        .specs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|s| s.queue == DIRECT_REPLY_TO && !s.done())
        .cloned();
    let Some(spec) = spec else { return };
    let ended = {
        let mut st = spec.state();
        if st.live.as_ref().is_some_and(|l| !l.channel.status().connected()) {
            st.live.take()
        } else {
            None
        }
    };
    if let Some(ended) = ended {
        tokio::spawn(recover(Arc::downgrade(inner), spec, ended));
    }
}

/// A subscription ended. If the connection is gone, the reconnect resubscribes. Otherwise the
/// broker cancelled it (its queue was deleted) or closed its channel (a consumer timeout; a
/// refused request published on the direct reply-to channel): resume, declaring the queue again
/// if it is part of the recorded topology; a queue that is gone and not recorded ends the
/// application's stream.
async fn recover(inner: Weak<Inner>, spec: Arc<ConsumerSpec>, ended: Live) {
    let Live { conn, queue, .. } = ended;
    if spec.done() || !conn.status().connected() {
        return;
    }
    let Some(i) = inner.upgrade() else { return };
    let (q, bindings) = {
        let r = i.recorded();
        let q = r.queues.iter().find(|q| q.name == queue).cloned();
        let b: Vec<Binding> = r
            .bindings
            .iter()
            .filter(|b| matches!(&b.destination, Destination::Queue(d) if *d == queue))
            .cloned()
            .collect();
        (q, b)
    };
    drop(i);
    let Some(q) = q else {
        // Not ours to declare: resume if it is still there.
        match subscribe(&conn, &spec, &queue).await {
            Ok((ch, consumer)) => {
                if let Some(i) = inner.upgrade() {
                    spec.install(&i, ch, consumer, conn, queue);
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => spec.finish(Error::new(
                ErrorKind::NotFound,
                format!("consumer cancelled by the broker: queue '{queue}' was deleted"),
            )),
            // A connection problem is retried by the next reconnect.
            Err(e) => {
                if conn.status().connected() && !matches!(e.kind(), ErrorKind::Connection | ErrorKind::Closed) {
                    spec.finish(e);
                }
            }
        }
        return;
    };
    let restored = async {
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| map_err(&e, "re-declaring a deleted queue"))?;
        declare_queue(&ch, &q).await?;
        for b in &bindings {
            bind(&ch, b).await?;
        }
        let _ = ch.close(200, "OK".into()).await;
        Ok::<(), Error>(())
    }
    .await;
    match restored {
        Ok(()) => resubscribe(inner, spec, conn).await,
        Err(e) => spec.finish(e),
    }
}

impl Transport for AmqpTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities::rabbitmq()
    }

    async fn declare(&self, topology: &Topology) -> Result<Declared> {
        topology.validate()?;
        let declared = {
            let slot = self.admin().await?;
            let ch = channel_of(&slot)?;
            for x in &topology.exchanges {
                declare_exchange(ch, x).await?;
            }
            let mut declared = Declared::default();
            for q in &topology.queues {
                let mut q = q.clone();
                q.name = self.inner.resolve(&q.name);
                declared.queues.push(declare_queue(ch, &q).await?);
            }
            for b in &topology.bindings {
                let mut b = b.clone();
                if let Destination::Queue(d) = &mut b.destination {
                    *d = self.inner.resolve(d);
                }
                bind(ch, &b).await?;
            }
            declared
        };
        self.record(topology, &declared);
        Ok(declared)
    }

    async fn queue_info(&self, queue: &str) -> Result<QueueInfo> {
        let queue = self.inner.resolve(queue);
        let slot = self.admin().await?;
        let opts = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let ok = channel_of(&slot)?
            .queue_declare(queue.as_str().into(), opts, Default::default())
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
            .exchange_declare(exchange.into(), lapin::ExchangeKind::Direct, opts, Default::default())
            .await
            .map_err(|e| map_err(&e, &format!("checking exchange '{exchange}'")))
    }

    async fn delete_queue(&self, queue: &str, options: DeleteQueue) -> Result<u32> {
        let queue = self.inner.resolve(queue);
        let slot = self.admin().await?;
        let opts = QueueDeleteOptions {
            if_unused: options.if_unused,
            if_empty: options.if_empty,
            nowait: false,
        };
        let n = channel_of(&slot)?
            .queue_delete(queue.as_str().into(), opts)
            .await
            .map_err(|e| map_err(&e, &format!("deleting queue '{queue}'")))?;
        let mut r = self.inner.recorded();
        r.queues.retain(|q| q.name != queue);
        r.bindings
            .retain(|b| !matches!(&b.destination, Destination::Queue(d) if *d == queue));
        Ok(n)
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
            .map_err(|e| map_err(&e, &format!("deleting exchange '{exchange}'")))?;
        let mut r = self.inner.recorded();
        r.exchanges.retain(|x| x.name != exchange);
        r.bindings
            .retain(|b| b.source != exchange && !matches!(&b.destination, Destination::Exchange(d) if d == exchange));
        Ok(())
    }

    async fn unbind(&self, b: &Binding) -> Result<()> {
        b.validate()?;
        let mut b = b.clone();
        if let Destination::Queue(d) = &mut b.destination {
            *d = self.inner.resolve(d);
        }
        {
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
                    .map_err(|e| map_err(&e, &what))?,
                Destination::Exchange(x) => ch
                    .exchange_unbind(
                        x.as_str().into(),
                        b.source.as_str().into(),
                        b.routing_key.as_str().into(),
                        ExchangeUnbindOptions::default(),
                        args,
                    )
                    .await
                    .map_err(|e| map_err(&e, &what))?,
            }
        }
        self.inner.recorded().bindings.retain(|x| *x != b);
        Ok(())
    }

    async fn purge(&self, queue: &str) -> Result<u32> {
        let queue = self.inner.resolve(queue);
        let slot = self.admin().await?;
        channel_of(&slot)?
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
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
            return Err(Error::oversized(&exchange, &routing_key, envelope.body.len(), max));
        }
        let routing_key = if exchange.is_empty() {
            ShortStr::from(self.inner.resolve(&routing_key))
        } else {
            routing_key
        };
        let props = to_properties(envelope.properties())?;
        let opts = BasicPublishOptions {
            mandatory,
            immediate: false,
        };
        let timeout = self.inner.options.confirm_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // A place in the window of unconfirmed publishes, held until the confirm arrives.
        let _place = match tokio::time::timeout_at(deadline, Arc::clone(&self.inner.window).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Error::closed(format!("connection to {} is closed", self.inner.shown))),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the message to exchange '{exchange}' with routing key '{routing_key}' waited {timeout:?} for a place among {} unconfirmed publishes",
                        self.inner.options.max_unconfirmed
                    ),
                ));
            }
        };
        let what = || format!("the message to exchange '{exchange}' with routing key '{routing_key}'");
        // `stage` says what the publish was waiting for when its time ran out.
        let timed_out = |stage: &str| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "{} was not confirmed by RabbitMQ at {} within {timeout:?} ({stage})",
                    what(),
                    self.inner.shown
                ),
            )
        };
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // A request asking for a direct reply must go out on the channel consuming replies.
            let reply_channel = if envelope.properties().reply_to.as_deref() == Some(DIRECT_REPLY_TO) {
                self.inner.reply.lock().unwrap_or_else(PoisonError::into_inner).clone()
            } else {
                None
            };
            let ch = match reply_channel {
                // The reply channel was closed under its consumer (a refused request closes
                // it): resume the consumer, whose new channel takes the request.
                Some(ch) if !ch.channel.status().connected() => {
                    revive_reply_consumer(&self.inner);
                    if tokio::time::Instant::now() >= deadline {
                        return Err(timed_out("waiting for the reply consumer's channel"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Some(ch) => ch,
                None => match self.publisher_channel(left).await {
                    Ok(ch) => ch,
                    Err(e) if e.kind() == ErrorKind::Timeout => {
                        return Err(timed_out("waiting for a connection and a publishing channel"));
                    }
                    Err(e) => return Err(e),
                },
            };
            // The ledger of the channel pairs returns with their publishes (see `confirms`).
            let sent = mandatory.then(|| {
                Box::new(Sent {
                    exchange: exchange.clone(),
                    routing_key: routing_key.clone(),
                    body: envelope.body.clone(),
                    properties: props.clone(),
                })
            });
            let sending = ch.send(
                timeout,
                sent,
                exchange.clone(),
                routing_key.clone(),
                opts,
                envelope.body.clone(),
                props.clone(),
            );
            // lapin may never answer a send, or a confirm, on a connection that died just then:
            // once the publishing link has left the channel's connection, the wait ends as a
            // loss (sent again on the next connection, or failed, as the policy says).
            let lost = {
                let link = &self.inner.publish;
                // A little past the deadline: at the deadline itself the timeouts answer.
                let wait = deadline.saturating_duration_since(tokio::time::Instant::now()) + Duration::from_secs(1);
                let generation = ch.generation;
                async move {
                    match generation {
                        Some(g) => link.wait_past(g, wait).await,
                        None => std::future::pending().await,
                    }
                }
            };
            tokio::pin!(lost);
            let lost_error = || {
                Error::new(
                    ErrorKind::Connection,
                    format!(
                        "the connection to {} was lost with {} in flight",
                        self.inner.shown,
                        what()
                    ),
                )
            };
            // Sending is bounded by the same deadline: a dead connection must not hang it.
            // An answer ready together with the loss wins: it is what happened.
            let sent = tokio::select! {
                biased;
                sent = tokio::time::timeout_at(deadline, sending) => match sent {
                    Err(_) => return Err(timed_out("sending it")),
                    Ok(sent) => sent.map_err(|e| map_err(&e, &format!("publishing {}", what()))),
                },
                () = &mut lost => Err(lost_error()),
            };
            let failed = match sent {
                Ok(settled) => match tokio::select! {
                    biased;
                    settled = tokio::time::timeout_at(deadline, settled) => Some(settled),
                    () = &mut lost => None,
                } {
                    None => lost_error(),
                    Some(Err(_)) => return Err(timed_out("sent, waiting for its confirm")),
                    Some(Ok(Ok(Settled::Confirmed))) => return Ok(Confirmation::Confirmed),
                    Some(Ok(Ok(Settled::Returned { reply_code, reply_text }))) => {
                        return Ok(Confirmation::Returned { reply_code, reply_text });
                    }
                    Some(Ok(Ok(Settled::Nacked))) => return Ok(Confirmation::Nacked),
                    Some(Ok(Ok(Settled::NotRequested))) => {
                        return Err(Error::new(
                            ErrorKind::Connection,
                            "the publishing channel is not in confirm mode",
                        ));
                    }
                    Some(Ok(Ok(Settled::Failed(e)))) => map_err(&e, &format!("publishing {}", what())),
                    // The ledger went away with the runtime: nothing will confirm it.
                    Some(Ok(Err(_))) => Error::new(
                        ErrorKind::Connection,
                        format!("{} lost its confirm: the publisher channel's ledger stopped", what()),
                    ),
                },
                Err(e) => e,
            };
            // The broker refused it on this channel (404, 406, 403): not worth sending again.
            if failed.scope() == Some(Scope::Channel) {
                return Err(failed);
            }
            // Lost with the connection: send it again once reconnected, or fail.
            if self.inner.options.unconfirmed == Unconfirmed::Fail || self.inner.closed.load(Ordering::Acquire) {
                return Err(failed);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(timed_out(&format!("lost with its connection: {}", failed.message())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Consumer> {
        self.check_open()?;
        let (_, conn) = self.inner.consume.connection(self.inner.options.reconnect_wait).await?;
        let n = self.inner.consumer_count.fetch_add(1, Ordering::Relaxed);
        let tag = options
            .consumer_tag
            .clone()
            .unwrap_or_else(|| format!("mqt-{}-{n}", std::process::id()));
        let spec = Arc::new(ConsumerSpec {
            queue: queue.to_owned(),
            options,
            tag: tag.clone(),
            cancelled: AtomicBool::new(false),
            state: std::sync::Mutex::default(),
        });
        // Subscribe now, so that errors (a missing queue, an exclusive lock) reach the caller.
        let resolved = self.inner.resolve(queue);
        let (ch, lapin_consumer) = subscribe(&conn, &spec, &resolved).await?;
        spec.install(&self.inner, ch, lapin_consumer, conn, resolved);
        self.inner
            .specs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&spec));
        let stream = RecoveringStream {
            spec,
            inner: Arc::downgrade(&self.inner),
        };
        Ok(Consumer::new(tag, stream))
    }

    async fn get(&self, queue: &str, no_ack: bool) -> Result<Option<Delivery>> {
        let queue = self.inner.resolve(queue);
        let slot = self
            .channel(
                &self.inner.getter,
                &self.inner.consume,
                self.inner.options.reconnect_wait,
                false,
                true,
            )
            .await?;
        // Settles of earlier gets go out first, as they would in order on one channel.
        if let Some(ack) = &slot.ack {
            ack.flush().await;
        }
        let got = channel_of(&slot)?
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack })
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
            Acker::settled(tag)
        } else {
            Acker::new(ack, tag)
        };
        Ok(Some(to_delivery(d, acker).with_message_count(msg.message_count)))
    }

    async fn ping(&self) -> Result<()> {
        self.check_open()?;
        for link in [&self.inner.consume, &self.inner.publish] {
            link.connection(Duration::ZERO).await.map_err(|_| {
                Error::new(
                    ErrorKind::Connection,
                    format!("the {} connection to {} is down", link.role, self.inner.shown),
                )
            })?;
        }
        drop(self.admin().await?);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let specs = std::mem::take(&mut *self.inner.specs.lock().unwrap_or_else(PoisonError::into_inner));
        for s in specs {
            s.cancelled.store(true, Ordering::Release);
            s.finish(Error::closed(format!(
                "consumer on queue '{}' ended: the connection was closed",
                s.queue
            )));
        }
        self.inner.publish.close().await;
        self.inner.consume.close().await;
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
        acker,
    )
}

/// The application's side of a consumer: stays open across reconnects and polls the current
/// subscription directly. Dropping it cancels the consumer; deliveries already taken stay valid
/// until settled or dropped.
struct RecoveringStream {
    spec: Arc<ConsumerSpec>,
    inner: Weak<Inner>,
}

impl Stream for RecoveringStream {
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.spec.state();
        if let Some(live) = st.live.as_mut() {
            match Pin::new(&mut live.consumer).poll_next(cx) {
                Poll::Ready(Some(Ok(d))) => {
                    let acker = if self.spec.options.no_ack {
                        Acker::settled(d.delivery_tag)
                    } else {
                        Acker::new(
                            Arc::clone(&live.ack) as Arc<dyn mqtransport_core::AckHandle>,
                            d.delivery_tag,
                        )
                    };
                    return Poll::Ready(Some(Ok(to_delivery(d, acker))));
                }
                // lapin holds the waker until the next delivery.
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(_)) | None) => {
                    if let (Some(ended), Ok(rt)) = (st.live.take(), tokio::runtime::Handle::try_current()) {
                        rt.spawn(recover(self.inner.clone(), Arc::clone(&self.spec), ended));
                    }
                }
            }
        }
        if let Some(e) = st.ended.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if st.finished {
            return Poll::Ready(None);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for RecoveringStream {
    fn drop(&mut self) {
        self.spec.cancelled.store(true, Ordering::Release);
        if let Some(i) = self.inner.upgrade() {
            let still_consumed = {
                let mut specs = i.specs.lock().unwrap_or_else(PoisonError::into_inner);
                specs.retain(|s| !Arc::ptr_eq(s, &self.spec));
                specs.iter().any(|s| s.queue == self.spec.queue)
            };
            // The broker deletes an auto-delete queue with its last consumer: forget it, so that
            // a later reconnect does not bring it back (as RabbitMQ's own clients do).
            if !still_consumed {
                let mut r = i.recorded();
                let name = r.resolve(&self.spec.queue);
                if r.queues.iter().any(|q| q.name == name && q.auto_delete) {
                    r.queues.retain(|q| q.name != name);
                    r.bindings
                        .retain(|b| !matches!(&b.destination, Destination::Queue(d) if *d == name));
                }
            }
        }
        let ch = self.spec.state().live.take().map(|l| l.channel);
        if let (Some(ch), Ok(rt)) = (ch, tokio::runtime::Handle::try_current()) {
            let tag = self.spec.tag.clone();
            rt.spawn(async move {
                let _ = ch
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await;
            });
        }
    }
}
