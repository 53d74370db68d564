//! Publishing: the app's [`Publisher`], [`Route`] and [`PublishOptions`]. The typed
//! producers bound to one route are in [`producer`](crate::producer).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mqtransport_core::{
    Confirmation, DeliveryMode, DynTransport, Envelope, Error, ErrorKind, FieldValue, Publish, Result, ShortStr,
    Transport,
};
use tracing::Instrument;

use crate::message::{Message, encode};
use crate::producer::Producer;

/// Where a message is published: an exchange and a routing key.
///
/// ```
/// use mqtransport::Route;
///
/// let to_queue = Route::queue("orders"); // the default exchange, routing key = queue
/// let by_name = Route::exchange("shop"); // routing key = the message name
/// let explicit = Route::new("shop", "orders.eu.created");
/// # let _ = (to_queue, by_name, explicit);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    exchange: ShortStr,
    /// `None`: the message name.
    routing_key: Option<ShortStr>,
}

impl Route {
    /// `exchange` with `routing_key`.
    pub fn new(exchange: impl Into<ShortStr>, routing_key: impl Into<ShortStr>) -> Self {
        Route {
            exchange: exchange.into(),
            routing_key: Some(routing_key.into()),
        }
    }

    /// Straight to `queue`, through the default exchange.
    pub fn queue(queue: impl Into<ShortStr>) -> Self {
        Route::new(ShortStr::EMPTY, queue)
    }

    /// `exchange`, with the message name as the routing key (the usual choice for topic
    /// exchanges, where consumers bind to name patterns such as `orders.*`).
    pub fn exchange(exchange: impl Into<ShortStr>) -> Self {
        Route {
            exchange: exchange.into(),
            routing_key: None,
        }
    }

    /// The exchange.
    pub fn exchange_name(&self) -> &str {
        &self.exchange
    }

    /// The routing key for a message called `name`.
    pub fn routing_key_for(&self, name: &str) -> ShortStr {
        match &self.routing_key {
            Some(k) => k.clone(),
            None => ShortStr::from(name),
        }
    }
}

/// Per-publish settings beyond the message itself.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// Headers to send (framework headers use the `x-mqt-` prefix; avoid it).
    pub headers: Vec<(String, FieldValue)>,
    /// Priority (for queues with `x-max-priority`).
    pub priority: Option<u8>,
    /// Per-message TTL.
    pub expiration: Option<Duration>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Where replies go.
    pub reply_to: Option<String>,
    /// The message id; a new UUIDv7 when `None`.
    pub message_id: Option<String>,
    /// Overrides the route's routing key.
    pub routing_key: Option<String>,
    /// Written to disk by durable queues (default true).
    pub persistent: bool,
    /// Report an unroutable message as [`Confirmation::Returned`] (default true).
    pub mandatory: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            headers: Vec::new(),
            priority: None,
            expiration: None,
            correlation_id: None,
            reply_to: None,
            message_id: None,
            routing_key: None,
            persistent: true,
            mandatory: true,
        }
    }
}

impl PublishOptions {
    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets a per-message TTL.
    pub fn expiration(mut self, ttl: Duration) -> Self {
        self.expiration = Some(ttl);
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets where replies go.
    pub fn reply_to(mut self, address: impl Into<String>) -> Self {
        self.reply_to = Some(address.into());
        self
    }

    /// Sets the message id (for idempotent re-publishing of the same logical message).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Overrides the routing key.
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }

    /// Transient delivery (not written to disk).
    pub fn transient(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// Drops an unroutable message instead of returning it.
    pub fn not_mandatory(mut self) -> Self {
        self.mandatory = false;
        self
    }
}

/// Counts a publish as unconfirmed while it lives.
struct Unconfirmed<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Unconfirmed<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Unconfirmed(count)
    }
}

impl Drop for Unconfirmed<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sees every publish (the testing support records them; the `metrics` feature counts them).
pub(crate) trait PublishObserver: Send + Sync {
    /// `elapsed`: from the publish to the broker's answer.
    fn published(&self, publish: &Publish, result: &Result<Confirmation>, elapsed: Duration);
}

pub(crate) struct PublisherInner {
    pub(crate) transport: DynTransport,
    /// The transport's `messaging.system`, for spans.
    pub(crate) system: &'static str,
    pub(crate) app_id: Option<String>,
    pub(crate) validate: bool,
    pub(crate) observers: Vec<Arc<dyn PublishObserver>>,
    /// Publishes sent and not yet answered (for [`Health`](crate::Health)).
    pub(crate) unconfirmed: std::sync::atomic::AtomicUsize,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    /// The app's reply consumer and the calls waiting on it.
    pub(crate) replies: Arc<crate::rpc::Replies>,
    /// The delay levels: delayed publishes and retries.
    pub(crate) delays: crate::delay::Delays,
    /// The producers and requesters made, for the AsyncAPI document.
    pub(crate) sends: crate::asyncapi::SendDocs,
}

/// Where the answer to a message goes: its `reply_to`, with its correlation id (or, lacking
/// one, its message id).
#[derive(Debug, Clone)]
pub(crate) struct ReplyTo {
    address: String,
    correlation_id: Option<String>,
}

impl ReplyTo {
    /// The reply address of a message with these properties; `None` if it asked for no reply.
    pub(crate) fn of(request: &mqtransport_core::Properties) -> Option<ReplyTo> {
        let address = request.reply_to.as_deref().filter(|a| !a.is_empty())?;
        Some(ReplyTo {
            address: address.to_owned(),
            correlation_id: request.correlation_id.clone().or_else(|| request.message_id.clone()),
        })
    }

    /// The address.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// `reply` on its way to this address, carrying the correlation id.
    pub(crate) fn publish(&self, mut reply: Envelope) -> Publish {
        reply.properties_mut().correlation_id.clone_from(&self.correlation_id);
        // RabbitMQ returns direct reply-to messages as unroutable even when it delivers them.
        let mandatory = !self.address.starts_with(mqtransport_core::DIRECT_REPLY_TO);
        Publish::to_queue(self.address.as_str(), reply).mandatory(mandatory)
    }
}

/// Publishes typed messages and raw envelopes: `Clone + Send + Sync`, one for the whole app.
/// Get it from [`App::publisher`](crate::App::publisher), or as a handler argument, where it
/// can also [`reply`](Publisher::reply) to the message being handled.
///
/// Every publish waits for the broker's confirm and returns it: [`Confirmation::Returned`] for
/// an unroutable message, [`Confirmation::Nacked`] for a refused one. [`send`](Publisher::send)
/// turns both into errors.
#[derive(Clone)]
pub struct Publisher {
    pub(crate) inner: Arc<PublisherInner>,
    reply: Option<Arc<ReplyTo>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("app_id", &self.inner.app_id)
            .field("validate", &self.inner.validate)
            .field("reply_to", &self.reply.as_ref().map(|r| r.address.as_str()))
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(inner: PublisherInner) -> Self {
        Publisher {
            inner: Arc::new(inner),
            reply: None,
        }
    }

    /// This publisher, replying to the message `incoming` (if it asked for replies).
    pub(crate) fn replying_to(&self, incoming: &Envelope) -> Self {
        let reply = ReplyTo::of(incoming.properties()).map(Arc::new);
        Publisher {
            inner: Arc::clone(&self.inner),
            reply,
        }
    }

    /// This app's publisher, replying to nothing: what producers and requesters hold.
    fn unbound(&self) -> Publisher {
        Publisher {
            inner: Arc::clone(&self.inner),
            reply: None,
        }
    }

    /// Whether this app's publishes are validated before they are sent.
    pub(crate) fn validates(&self) -> bool {
        self.inner.validate
    }

    /// A request/reply client for raw envelopes (see [`RawRequester`](crate::RawRequester)).
    pub fn raw_requester(&self, route: Route) -> crate::rpc::RawRequester {
        crate::rpc::RawRequester::new(Arc::clone(&self.inner.replies), self.unbound(), route)
    }

    /// The transport underneath, for what the typed API does not cover.
    pub fn transport(&self) -> &DynTransport {
        &self.inner.transport
    }

    /// A typed request/reply client sending `Req` to `route` and waiting for `Resp`: e.g. for
    /// a handler that asks another service before it answers. See
    /// [`App::requester`](crate::App::requester).
    pub fn requester<Req: Message, Resp: Message>(&self, route: Route) -> crate::rpc::Requester<Req, Resp> {
        self.inner.sends.add(crate::asyncapi::SendDoc {
            route: route.clone(),
            message: Some(crate::MessageDoc::of::<Req>()),
            reply: Some(crate::MessageDoc::of::<Resp>()),
        });
        crate::rpc::Requester::new(Arc::clone(&self.inner.replies), self.unbound(), route)
    }

    /// A producer of plain text or bytes bound to `route` (see
    /// [`PlainProducer`](crate::PlainProducer)).
    pub fn plain_producer(&self, route: Route) -> crate::PlainProducer {
        crate::PlainProducer::new(self.unbound(), route)
    }

    /// A typed producer of `M` bound to `route`.
    pub fn producer<M: Message>(&self, route: Route) -> Producer<M> {
        self.inner.sends.add(crate::asyncapi::SendDoc {
            route: route.clone(),
            message: Some(crate::MessageDoc::of::<M>()),
            reply: None,
        });
        Producer::new(self.unbound(), route, self.inner.validate)
    }

    /// Encodes `message` into the envelope it would be published as.
    pub fn envelope<M: Message>(&self, message: &M, options: &PublishOptions, validate: bool) -> Result<Envelope> {
        if validate && let Err(invalid) = message.validate() {
            return Err(Error::invalid(format!(
                "message '{}' is invalid and was not published: {invalid}",
                M::NAME
            )));
        }
        Ok(self.stamped(encode(message)?, options))
    }

    /// `envelope` with the properties every publish of this app carries (a new message id, the
    /// time, the app's name) and those `options` set.
    pub(crate) fn stamped(&self, mut envelope: Envelope, options: &PublishOptions) -> Envelope {
        let props = envelope.properties_mut();
        props.message_id = Some(options.message_id.clone().unwrap_or_else(new_message_id));
        props.timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        if options.persistent {
            props.delivery_mode = Some(DeliveryMode::Persistent);
        }
        props.app_id.clone_from(&self.inner.app_id);
        props.priority = options.priority;
        props.expiration = options.expiration.map(|d| d.as_millis().to_string());
        props.correlation_id.clone_from(&options.correlation_id);
        props.reply_to.clone_from(&options.reply_to);
        if !options.headers.is_empty() {
            let headers = envelope.headers_mut();
            for (k, v) in &options.headers {
                headers.insert(k.clone(), v.clone());
            }
        }
        envelope
    }

    /// Publishes `message` to `route` and returns the broker's confirmation as a value: a
    /// returned (unroutable) or nacked message is `Ok` with [`Confirmation::Returned`] or
    /// [`Confirmation::Nacked`], for the caller to inspect. [`send`](Self::send) turns those into
    /// errors instead.
    pub async fn publish<M: Message>(&self, route: &Route, message: &M) -> Result<Confirmation> {
        self.publish_with(route, message, PublishOptions::default()).await
    }

    /// What publishing `message` to `route` with `options` sends: the encoded envelope, the
    /// route's exchange, and the options' routing key or else the route's.
    pub(crate) fn build<M: Message>(
        &self,
        route: &Route,
        message: &M,
        options: &PublishOptions,
        validate: bool,
    ) -> Result<Publish> {
        let envelope = self.envelope(message, options, validate)?;
        Ok(addressed(route, M::NAME, envelope, options))
    }

    /// Publishes `message` to `route` with `options`.
    pub async fn publish_with<M: Message>(
        &self,
        route: &Route,
        message: &M,
        options: PublishOptions,
    ) -> Result<Confirmation> {
        let publish = self.build(route, message, &options, self.inner.validate)?;
        self.publish_stamped(publish).await
    }

    /// Publishes `message` to `route` and succeeds only if the broker confirmed it: a returned
    /// or nacked message is an error ([`ErrorKind::Unroutable`], [`ErrorKind::Nacked`]) naming
    /// the message and the route. [`publish`](Self::publish) returns the confirmation instead.
    ///
    /// A failure whose [`Error::is_outcome_unknown`] is true (a confirm lost with its
    /// connection, or not back within the confirm timeout, e.g. while the broker blocks
    /// publishers) may still have delivered the message: sending it again may deliver it
    /// twice. Retry such a failure only where consumers tolerate duplicates (e.g. by message
    /// id); every other failure means the message was not enqueued.
    pub async fn send<M: Message>(&self, route: &Route, message: &M) -> Result<()> {
        let publish = self.build(route, message, &PublishOptions::default(), self.inner.validate)?;
        self.publish_confirmed(publish, M::NAME).await
    }

    /// Publishes `publish` (a message called `name`) and requires the broker's confirm.
    pub(crate) async fn publish_confirmed(&self, publish: Publish, name: &str) -> Result<()> {
        let (exchange, routing_key) = (publish.exchange.clone(), publish.routing_key.clone());
        let confirmation = self.publish_stamped(publish).await?;
        confirmed(confirmation, name, &exchange, &routing_key)
    }

    /// Publishes a raw message, for interoperating with other clients: nothing is added to it.
    pub async fn publish_raw(&self, publish: Publish) -> Result<Confirmation> {
        self.publish_in_span(publish, false).await
    }

    /// Publishes a message this app made (a typed publish, a request, a reply): with the
    /// `opentelemetry` feature, its `send` span's context goes into its headers, unless it
    /// carries a `traceparent` already.
    pub(crate) async fn publish_stamped(&self, publish: Publish) -> Result<Confirmation> {
        self.publish_in_span(publish, true).await
    }

    /// Publishes `publish` in a `send` span that ends with the broker's answer; `trace`: write
    /// the span's context into the message.
    async fn publish_in_span(
        &self,
        #[cfg_attr(not(feature = "opentelemetry"), allow(unused_mut))] mut publish: Publish,
        trace: bool,
    ) -> Result<Confirmation> {
        if !crate::observe::spans_wanted() {
            #[cfg(feature = "opentelemetry")]
            if trace {
                crate::observe::inject(&mut publish.envelope);
            }
            return self.publish_observed(publish).await;
        }
        let span = crate::observe::send_span(&publish, self.inner.system);
        #[cfg(feature = "opentelemetry")]
        if trace {
            let _entered = span.enter();
            crate::observe::inject(&mut publish.envelope);
        }
        #[cfg(not(feature = "opentelemetry"))]
        let _ = trace;
        let result = self.publish_observed(publish).instrument(span.clone()).await;
        span.record("mqt.outcome", crate::observe::publish_outcome(&result));
        result
    }

    /// Publishes `publish`, counted as unconfirmed until answered, and tells the observers.
    async fn publish_observed(&self, publish: Publish) -> Result<Confirmation> {
        let _unconfirmed = Unconfirmed::new(&self.inner.unconfirmed);
        if self.inner.observers.is_empty() {
            return self.inner.transport.publish(publish).await;
        }
        let started = std::time::Instant::now();
        let result = self.inner.transport.publish(publish.clone()).await;
        let elapsed = started.elapsed();
        for observer in &self.inner.observers {
            observer.published(&publish, &result, elapsed);
        }
        result
    }

    /// Publishes `publish` to arrive after `delay` (see [`delay`](crate::delay)): the
    /// confirmation is the broker's for the first wait queue; `Returned` means no route to a
    /// wait queue could be made.
    pub async fn publish_raw_delayed(&self, publish: Publish, delay: Duration) -> Result<Confirmation> {
        self.inner.delays.publish(&self.inner.transport, publish, delay).await
    }

    /// Publishes sent through this publisher (and its clones) and not yet answered.
    pub(crate) fn unconfirmed(&self) -> usize {
        self.inner.unconfirmed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The queues and exchanges this app's delays use.
    #[cfg(feature = "memory")]
    pub(crate) fn delay_topology(&self) -> mqtransport_core::Topology {
        self.inner.delays.topology()
    }

    /// Replies to the message being handled: publishes `message` to its `reply_to` address with
    /// its correlation id (or, lacking one, its message id). Fails with
    /// [`ErrorKind::InvalidInput`] if the message asked for no reply.
    pub async fn reply<M: Message>(&self, message: &M) -> Result<()> {
        let Some(reply) = &self.reply else {
            return Err(Error::invalid(format!(
                "cannot reply with '{}': the message being handled has no reply_to",
                M::NAME
            )));
        };
        let envelope = self.envelope(message, &PublishOptions::default().transient(), self.inner.validate)?;
        self.publish_confirmed(reply.publish(envelope), M::NAME).await
    }

    /// The address the message being handled asked replies to go to.
    pub fn reply_to(&self) -> Option<&str> {
        self.reply.as_ref().map(|r| r.address.as_str())
    }
}

/// `Ok` for a confirmed publish, else an error naming what was sent where.
pub(crate) fn confirmed(confirmation: Confirmation, name: &str, exchange: &str, routing_key: &str) -> Result<()> {
    match confirmation {
        Confirmation::Confirmed => Ok(()),
        Confirmation::Returned { reply_code, reply_text } => Err(Error::new(
            ErrorKind::Unroutable,
            format!(
                "message '{name}' to exchange '{exchange}' with routing key '{routing_key}' was returned as unroutable ({reply_code} {reply_text})"
            ),
        )),
        Confirmation::Nacked => Err(Error::new(
            ErrorKind::Nacked,
            format!(
                "message '{name}' to exchange '{exchange}' with routing key '{routing_key}' was refused by the broker"
            ),
        )),
        other => Err(Error::new(
            ErrorKind::Nacked,
            format!(
                "message '{name}' to exchange '{exchange}' with routing key '{routing_key}' was not confirmed: {other:?}"
            ),
        )),
    }
}

/// `envelope`, a message called `name`, on its way to `route`: the route's exchange, the
/// options' routing key or else the route's, mandatory as the options say.
pub(crate) fn addressed(route: &Route, name: &str, envelope: Envelope, options: &PublishOptions) -> Publish {
    let routing_key = match &options.routing_key {
        Some(k) => ShortStr::from(k.as_str()),
        None => route.routing_key_for(name),
    };
    Publish::new(route.exchange.clone(), routing_key, envelope).mandatory(options.mandatory)
}

/// A UUIDv7: time-ordered, so ids sort by publish time.
pub(crate) fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
