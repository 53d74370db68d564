//! [`Consumer`]: what an app does with one queue, and the dispatch by message name at the
//! bottom of its middleware stack.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{Either, Ready, ready};
use mqtransport_core::hash::FxHashMap;
use mqtransport_core::{BoxFuture, Queue};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

use crate::delivery::Incoming;
use crate::handler::{BoxedHandler, Handler, erase};
use crate::message::Message;
use crate::outcome::{BoxError, Outcome};
use crate::retry::RetryPolicy;

/// A consumer's middleware stack as a boxed tower service: what every layer wraps.
pub type HandlerService = BoxCloneService<Incoming, Outcome, BoxError>;

/// A layer applied to a boxed stack, kept until the app is built.
pub(crate) type LayerFn = Arc<dyn Fn(HandlerService) -> HandlerService + Send + Sync>;

/// Boxes a tower layer so that it can be kept and applied to any consumer's stack.
pub(crate) fn layer_fn<L>(layer: L) -> LayerFn
where
    L: Layer<HandlerService> + Send + Sync + 'static,
    L::Service: Service<Incoming, Response = Outcome> + Clone + Send + 'static,
    <L::Service as Service<Incoming>>::Error: Into<BoxError>,
    <L::Service as Service<Incoming>>::Future: Send + 'static,
{
    Arc::new(move |inner| BoxCloneService::new(layer.layer(inner).map_err(Into::into)))
}

/// What happens to a message no handler of the consumer serves (an unknown name, or no name
/// and no default message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnknownMessage {
    /// Dead-letter it with the reason: nothing is lost, and it can be replayed once a handler
    /// exists. The default.
    #[default]
    DeadLetter,
    /// Acknowledge and drop it, with a warning in the log (for queues that also carry
    /// messages this service does not care about).
    Discard,
}

/// When a consumer acknowledges a delivery: after its handler (at least once, the default) or
/// before it (at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Acknowledge {
    /// After the handler, by its outcome: a message is never lost, and may run twice (after a
    /// crash, a lost connection, or a retry). The default.
    #[default]
    AfterHandling,
    /// As soon as the delivery arrives, before the handler runs: the message is never run
    /// twice, and is lost if the process dies while handling it (Kombu's simple consumers,
    /// `auto_ack` in spirit). The prefetch still bounds what the broker sends ahead. A
    /// handler's failure is not retried: the message goes to the dead-letter queue with the
    /// reason (with [`DeadLetterPolicy::Broker`] it is gone).
    OnReceipt,
    /// The broker's no-ack mode (pika's `auto_ack=True`): the broker forgets each message as it
    /// sends it. The cheapest, and the least safe: RabbitMQ applies no prefetch to such a
    /// consumer, so deliveries pile up in the client while handlers are busy, and every one
    /// of them is lost with the process. Failures go as with [`OnReceipt`](Self::OnReceipt).
    BrokerNoAck,
}

impl Acknowledge {
    /// Whether the message is acknowledged before the handler runs.
    pub fn is_at_most_once(self) -> bool {
        !matches!(self, Acknowledge::AfterHandling)
    }
}

/// Where a message goes when it can never be handled: failed validation, a malformed body, a
/// permanent error, or retries exhausted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterPolicy {
    /// Publish a copy to this queue (declared by the app unless the topology already declares
    /// it) with the reason, the attempts and the original route in `x-mqt-*` headers, wait for
    /// the broker's confirm, then ack the original. The default, as `<queue>.dlq`.
    Queue(String),
    /// Reject the delivery without requeue: the queue's own `x-dead-letter-exchange` takes it
    /// (with RabbitMQ's `x-death` history, but without the reason), or, if it has none, the
    /// broker drops it.
    Broker,
}

/// What an app does with one queue: handlers by message name, a fallback, prefetch and
/// concurrency, retries, dead letters, and middleware.
///
/// ```
/// use std::time::Duration;
/// use mqtransport::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "orders.created")]
/// struct OrderCreated { id: u64 }
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "orders.cancelled")]
/// struct OrderCancelled { id: u64 }
///
/// async fn created(order: OrderCreated) {}
/// async fn cancelled(order: OrderCancelled) {}
///
/// let orders: Consumer = Consumer::for_queue(Queue::durable("orders"))
///     .handle(created)              // dispatched by the message's name
///     .handle(cancelled)
///     .prefetch(64)
///     .concurrency(16)              // handlers in flight at once
///     .retry(RetryPolicy::max_attempts(5))
///     .timeout(Duration::from_secs(30));
/// # let _ = orders;
/// ```
pub struct Consumer<S = ()> {
    /// The queue; for a subscription, empty until the app declares its server-named queue.
    pub(crate) queue: String,
    pub(crate) declare: Option<Queue>,
    /// For [`Consumer::subscribe`]: the exchange and the binding keys.
    pub(crate) subscription: Option<(String, Vec<String>)>,
    pub(crate) handlers: Vec<(String, BoxedHandler<S>)>,
    /// The typed messages handled, for the app's AsyncAPI document.
    pub(crate) docs: Vec<crate::MessageDoc>,
    pub(crate) fallback: Option<BoxedHandler<S>>,
    pub(crate) untyped: UntypedNaming,
    pub(crate) prefetch: u16,
    pub(crate) concurrency: usize,
    pub(crate) unknown: UnknownMessage,
    pub(crate) retry: RetryPolicy,
    /// Whether `retry` was set (an at-most-once consumer refuses a retry policy).
    pub(crate) retry_set: bool,
    pub(crate) acknowledge: Acknowledge,
    pub(crate) dead_letter: DeadLetterPolicy,
    /// Whether `dead_letter` was chosen (an exclusive queue needs a chosen one).
    pub(crate) dead_letter_chosen: bool,
    pub(crate) layers: Vec<LayerFn>,
    /// The handler deadline set by [`timeout`](Consumer::timeout).
    pub(crate) handler_timeout: Option<Duration>,
    /// Mistakes found while registering, reported by `build()`.
    pub(crate) problems: Vec<String>,
}

impl<S> fmt::Debug for Consumer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.queue)
            .field(
                "messages",
                &self.handlers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            )
            .field("fallback", &self.fallback.is_some())
            .field("prefetch", &self.prefetch)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("dead_letter", &self.dead_letter)
            .finish_non_exhaustive()
    }
}

/// The default prefetch: unacknowledged deliveries the broker sends ahead.
pub const DEFAULT_PREFETCH: u16 = 64;
/// The default concurrency: handlers running at once per consumer.
pub const DEFAULT_CONCURRENCY: usize = 16;

impl<S: Clone + Send + Sync + 'static> Consumer<S> {
    /// Consumes the existing queue `queue` (declared by the app's topology, or by someone
    /// else: the app does not declare it). Defaults: prefetch 64, 16 handlers at once,
    /// [`RetryPolicy::default`], dead letters to `<queue>.dlq`, unknown messages dead-lettered.
    ///
    /// The app declares the dead-letter queue at build unless it exists: a durable queue of the
    /// consumed queue's type when the app knows it (a quorum queue's dead letters go to a
    /// quorum queue, replicated as the messages were; dead letters are worth keeping), else a
    /// durable classic queue. For a queue another team owns, choose where its dead letters go
    /// with [`dead_letter_queue`](Self::dead_letter_queue) or
    /// [`dead_letter`](Self::dead_letter). An exclusive queue must choose (its default would
    /// outlive it); a [subscription](Self::subscribe) has its own default.
    pub fn new(queue: impl Into<String>) -> Self {
        let queue = queue.into();
        Consumer {
            dead_letter: DeadLetterPolicy::Queue(format!("{queue}.dlq")),
            dead_letter_chosen: false,
            queue,
            declare: None,
            subscription: None,
            handlers: Vec::new(),
            docs: Vec::new(),
            fallback: None,
            untyped: UntypedNaming::default(),
            prefetch: DEFAULT_PREFETCH,
            concurrency: DEFAULT_CONCURRENCY,
            handler_timeout: None,
            unknown: UnknownMessage::default(),
            retry: RetryPolicy::default(),
            retry_set: false,
            acknowledge: Acknowledge::default(),
            layers: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// A subscription: every message `exchange` routes with one of `binding_keys` (topic
    /// patterns such as `orders.*` or `#.eu`, direct keys, or none for a fanout), delivered to
    /// this app instance's own queue, as pub/sub consumers do (the RabbitMQ tutorials' logs,
    /// routing and topics).
    ///
    /// The queue is server-named, exclusive and auto-delete: each running instance gets every
    /// message, and the queue is gone when the app stops (on SQS, which has no exclusive queues,
    /// an ordinary queue that the app deletes at shutdown; on RabbitMQ it is declared again,
    /// under a new name, and bound again after a reconnect; messages published meanwhile miss
    /// it, as with any subscription). Its dead letters go to one durable queue shared by every
    /// subscriber of the exchange, `<exchange>.dlq` (`mqt.<exchange>.dlq` for the broker's own
    /// `amq.` exchanges, whose prefix RabbitMQ reserves); choose another with
    /// [`dead_letter_queue`](Self::dead_letter_queue), or none with
    /// [`dead_letter(DeadLetterPolicy::Broker)`](Self::dead_letter) (a subscription queue has no
    /// dead-letter exchange, so the broker drops them). The exchange must exist: declare it in
    /// the app's topology, or it is another service's.
    ///
    /// ```
    /// # use mqtransport::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(name = "orders.created")]
    /// struct OrderCreated { id: u64 }
    ///
    /// async fn created(order: OrderCreated) {}
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mqtransport::Result<()> {
    /// let app = App::builder()
    ///     .url("memory://docs-subscribe")
    ///     .topology(Topology::new().exchange(Exchange::topic("shop")))
    ///     .consumer(Consumer::subscribe("shop", ["orders.*"]).handle(created))
    ///     .build()
    ///     .await?;
    /// let running = app.start().await?;
    /// assert!(running.consumers()[0].queue.starts_with("amq.gen-"));
    /// # running.shutdown().await
    /// # }
    /// ```
    pub fn subscribe<K: Into<String>>(exchange: impl Into<String>, binding_keys: impl IntoIterator<Item = K>) -> Self {
        let exchange = exchange.into();
        let mut c = Consumer::new(String::new());
        c.dead_letter = DeadLetterPolicy::Queue(if exchange.starts_with("amq.") {
            format!("mqt.{exchange}.dlq")
        } else {
            format!("{exchange}.dlq")
        });
        let mut keys: Vec<String> = binding_keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            keys.push(String::new());
        }
        c.subscription = Some((exchange, keys));
        c
    }

    /// Declares `queue` when the app is built, and consumes it.
    pub fn for_queue(queue: Queue) -> Self {
        let mut c = Consumer::new(queue.name.clone());
        c.declare = Some(queue);
        c
    }

    /// Handles the message type that `handler` takes: deliveries whose name is that message's
    /// name go to it.
    ///
    /// A delivery's name is its `type` property, which every mqtransport publisher sets. Other
    /// clients (pika, Kombu, FastStream) usually send none; for those the consumer looks, in
    /// this order, at the header named by [`name_from_header`](Self::name_from_header), the
    /// top-level JSON field named by [`name_from_field`](Self::name_from_field), and the
    /// [`default_message`](Self::default_message). A delivery still without a name, or with a
    /// name no handler serves, goes to the [`fallback`](Self::fallback) if there is one, else
    /// to the [`on_unknown`](Self::on_unknown) policy (dead-lettered by default, with the
    /// reason).
    ///
    /// The consumer does not try each registered type in turn until one decodes: a JSON
    /// object decodes as any type whose fields it has (unknown fields are ignored), so the
    /// first registered type would win silently, and reordering handlers would change where
    /// messages go.
    ///
    /// ```
    /// # use mqtransport::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(name = "user.signed_up")]
    /// struct SignedUp { user: u64 }
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(name = "user.deleted")]
    /// struct Deleted { user: u64 }
    ///
    /// async fn signed_up(e: SignedUp) {}
    /// async fn deleted(e: Deleted) {}
    ///
    /// // A Python service publishes {"event": "user.deleted", "user": 7} with no type.
    /// let users: Consumer = Consumer::new("users")
    ///     .handle(signed_up)
    ///     .handle(deleted)
    ///     .name_from_field("event")
    ///     .default_message::<SignedUp>(); // neither type nor "event": a sign-up
    /// # let _ = users;
    /// ```
    pub fn handle<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        match H::message() {
            Ok(Some(name)) => {
                self.docs.extend(H::message_doc());
                self.add(name.to_owned(), erase(handler));
            }
            Ok(None) => self.problems.push(format!(
                "a handler given to .handle() on queue '{}' takes no message argument, so it names no message type: give it a #[derive(Message)] argument, or register it with .handle_name(name, handler) or .fallback(handler)",
                self.queue
            )),
            Err(e) => self.problems.push(format!("on queue '{}': {e}", self.queue)),
        }
        self
    }

    /// Handles messages called `name`, whatever the handler's arguments (e.g. a raw
    /// [`Envelope`](crate::Envelope) from another system).
    pub fn handle_name<H, T>(mut self, name: impl Into<String>, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        if let Err(e) = H::message() {
            self.problems.push(format!("on queue '{}': {e}", self.queue));
        }
        self.add(name.into(), erase(handler));
        self
    }

    fn add(&mut self, name: String, handler: BoxedHandler<S>) {
        if self.handlers.iter().any(|(n, _)| *n == name) {
            self.problems
                .push(format!("queue '{}' has two handlers for message '{name}'", self.queue));
            return;
        }
        self.handlers.push((name, handler));
    }

    /// Handles every message no other handler serves (instead of the unknown-message policy).
    pub fn fallback<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        if self.fallback.is_some() {
            self.problems
                .push(format!("queue '{}' has two fallback handlers", self.queue));
        }
        self.fallback = Some(erase(handler));
        self
    }

    /// Messages without a name (`type`), as other clients may send, are taken to be `M`
    /// (after the header and field of [`name_from_header`](Self::name_from_header) and
    /// [`name_from_field`](Self::name_from_field), if set, named nothing).
    pub fn default_message<M: Message>(self) -> Self {
        self.default_name(M::NAME)
    }

    /// Messages without a name are taken to be called `name` (see
    /// [`default_message`](Self::default_message)).
    pub fn default_name(mut self, name: impl Into<String>) -> Self {
        self.untyped.default_name = Some(name.into());
        self
    }

    /// A message without a `type` is named by its string header `key` (e.g. Celery's `task`),
    /// if it has one. See [`handle`](Self::handle) for the whole order.
    pub fn name_from_header(mut self, key: impl Into<String>) -> Self {
        self.untyped.header = Some(key.into());
        self
    }

    /// A message without a `type` is named by the string field `field` of its JSON object
    /// body (e.g. `{"event": "user.deleted", …}`), if it has one. The body is parsed for it
    /// only when the delivery has no name otherwise. See [`handle`](Self::handle) for the
    /// whole order.
    pub fn name_from_field(mut self, field: impl Into<String>) -> Self {
        self.untyped.field = Some(field.into());
        self
    }

    /// At most `prefetch` unacknowledged deliveries sent ahead by the broker (0: unlimited).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// At most `n` handlers running at once (at least 1). Ordering is only kept with 1. The
    /// handlers of one consumer interleave on its task, as async code does: a handler that
    /// computes for long should do it in `tokio::task::spawn_blocking` (or the app should run
    /// several consumers), so that the others are not held up.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// What happens to a message no handler serves.
    pub fn on_unknown(mut self, policy: UnknownMessage) -> Self {
        self.unknown = policy;
        self
    }

    /// How failures are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self.retry_set = true;
        self
    }

    /// When deliveries are acknowledged: after handling (the default, at least once) or on
    /// receipt (at most once; see [`Acknowledge`]). An at-most-once consumer never runs a
    /// message twice, so it refuses a retry policy at build.
    pub fn acknowledge(mut self, when: Acknowledge) -> Self {
        self.acknowledge = when;
        self
    }

    /// What `build()` and [`Running::add_consumer`](crate::Running::add_consumer) refuse in
    /// this consumer on its own: mistakes found while registering, an empty queue name, and
    /// settings that contradict each other.
    pub(crate) fn problems_on_its_own(&self) -> Vec<String> {
        let empty = (self.queue.is_empty() && self.subscription.is_none()).then(|| {
            "a consumer has an empty queue name (for a server-named queue of its own, use Consumer::subscribe)"
                .to_owned()
        });
        let exclusive = self.declare.as_ref().is_some_and(|q| q.exclusive);
        let dead_letters = (exclusive && !self.dead_letter_chosen).then(|| {
            format!(
                "queue '{0}' is exclusive, so its default dead-letter queue '{0}.dlq' would outlive it, one per app instance: \
                 choose one shared by every instance with .dead_letter_queue(name), or none with \
                 .dead_letter(DeadLetterPolicy::Broker) (for a pub/sub queue of its own, use Consumer::subscribe)",
                self.queue
            )
        });
        let retries = (self.acknowledge.is_at_most_once() && self.retry_set && self.retry.attempts_allowed() > 1).then(|| {
            format!(
                "consumer on queue '{}' acknowledges on receipt ({:?}) and so never runs a message twice, but has a retry policy of {} attempts: drop the retry policy, or acknowledge after handling",
                self.queue,
                self.acknowledge,
                self.retry.attempts_allowed()
            )
        });
        self.problems
            .iter()
            .cloned()
            .chain(empty)
            .chain(dead_letters)
            .chain(retries)
            .collect()
    }

    /// Where messages go that can never be handled.
    pub fn dead_letter(mut self, policy: DeadLetterPolicy) -> Self {
        self.dead_letter = policy;
        self.dead_letter_chosen = true;
        self
    }

    /// Dead letters go to `queue` (declared by the app unless the topology declares it or it
    /// exists).
    pub fn dead_letter_queue(self, queue: impl Into<String>) -> Self {
        self.dead_letter(DeadLetterPolicy::Queue(queue.into()))
    }

    /// A handler that runs longer than `limit` is cancelled and its message retried: a shortcut
    /// for `.layer(tower::timeout::TimeoutLayer::new(limit))`.
    ///
    /// On RabbitMQ a delivery must be settled within the broker's `consumer_timeout` (30
    /// minutes by default) or the broker closes the channel and redelivers it. A delivery may
    /// wait behind others prefetched before it, so the longest it stays unacknowledged is about
    /// `limit × ⌈prefetch / concurrency⌉`: [`App`](crate::App) warns at build when that reaches
    /// the broker's timeout (see [`App::warnings`](crate::App::warnings)).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.handler_timeout = Some(self.handler_timeout.map_or(limit, |t| t.min(limit)));
        self.layer(tower::timeout::TimeoutLayer::new(limit))
    }

    /// A warning when a delivery of this consumer could stay unacknowledged as long as
    /// `broker_limit` (the broker's consumer timeout): it may wait behind the deliveries
    /// prefetched before it, each handled for up to the handler timeout, then run to the
    /// timeout itself. `None` without a handler timeout: how long a handler runs is unknown.
    pub(crate) fn unacked_too_long(&self, broker_limit: Duration) -> Option<String> {
        let deadline = self.handler_timeout?;
        let advice = "RabbitMQ would close the channel and redeliver the message; lower the timeout or the \
                      prefetch, raise the concurrency, or raise the broker's consumer_timeout (and tell the \
                      transport, e.g. the URL's ?consumer_timeout= in milliseconds)";
        if self.prefetch == 0 {
            return Some(format!(
                "consumer on queue '{}': with an unlimited prefetch a delivery may wait behind any number of \
                 others, each handled for up to {deadline:?}, past the broker's consumer timeout \
                 ({broker_limit:?}); {advice}",
                self.queue
            ));
        }
        let concurrency = u32::try_from(self.concurrency).unwrap_or(u32::MAX).max(1);
        let turns = u32::from(self.prefetch).div_ceil(concurrency);
        let longest = deadline.saturating_mul(turns);
        (longest >= broker_limit).then(|| {
            format!(
                "consumer on queue '{}': a delivery may stay unacknowledged for up to {longest:?} ({turns} handler \
                 timeouts of {deadline:?}: prefetch {}, concurrency {}), which reaches the broker's consumer \
                 timeout ({broker_limit:?}); {advice}",
                self.queue, self.prefetch, self.concurrency
            )
        })
    }

    /// Wraps this consumer's handlers in a tower layer. Any `tower::Layer` whose service takes
    /// an [`Incoming`] and returns an [`Outcome`] works; an error it returns is turned into an
    /// outcome by [`Outcome::from_error`]. The last layer added is the outermost.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service: Service<Incoming, Response = Outcome> + Clone + Send + 'static,
        <L::Service as Service<Incoming>>::Error: Into<BoxError>,
        <L::Service as Service<Incoming>>::Future: Send + 'static,
    {
        self.layers.push(layer_fn(layer));
        self
    }

    /// The queue consumed (empty for a [subscription](Self::subscribe) before its app is
    /// built).
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The stack: dispatch by name, wrapped in this consumer's layers.
    pub(crate) fn service(&self, state: S) -> HandlerService {
        let table = Table {
            queue: self.queue.clone(),
            by_name: self.handlers.iter().map(|(n, h)| (n.clone(), Arc::clone(h))).collect(),
            fallback: self.fallback.clone(),
            untyped: self.untyped.clone(),
            unknown: self.unknown,
        };
        let mut service = BoxCloneService::new(Dispatch {
            table: Arc::new(table),
            state,
        });
        for layer in &self.layers {
            service = layer(service);
        }
        service
    }
}

struct Table<S> {
    queue: String,
    by_name: FxHashMap<String, BoxedHandler<S>>,
    fallback: Option<BoxedHandler<S>>,
    untyped: UntypedNaming,
    unknown: UnknownMessage,
}

/// Where the name of a message without a `type` comes from, tried in this order.
#[derive(Debug, Clone, Default)]
pub(crate) struct UntypedNaming {
    header: Option<String>,
    field: Option<String>,
    default_name: Option<String>,
}

impl UntypedNaming {
    fn is_set(&self) -> bool {
        self.header.is_some() || self.field.is_some() || self.default_name.is_some()
    }

    /// The name of `envelope`, which has no `type`.
    fn name_of(&self, envelope: &mqtransport_core::Envelope) -> Option<String> {
        let from_header = || {
            let key = self.header.as_deref()?;
            envelope.header(key)?.as_str().map(str::to_owned)
        };
        let from_field = || {
            let field = self.field.as_deref()?;
            let body: serde_json::Value = serde_json::from_slice(&envelope.body).ok()?;
            body.get(field)?.as_str().map(str::to_owned)
        };
        from_header().or_else(from_field).or_else(|| self.default_name.clone())
    }
}

impl<S> Table<S> {
    fn unknown(&self, req: &Incoming) -> Outcome {
        let why = match req.name() {
            Some(name) => format!("no handler for message '{name}' on queue '{}'", self.queue),
            None if self.untyped.is_set() => format!(
                "the message has no name (type), and its header, field or the default message of queue '{}' named no handler",
                self.queue
            ),
            None => format!(
                "the message has no name (type) and queue '{}' names no default message",
                self.queue
            ),
        };
        match self.unknown {
            UnknownMessage::DeadLetter => Outcome::dead_letter(why),
            UnknownMessage::Discard => {
                tracing::warn!(
                    queue = %self.queue,
                    message_id = req.envelope().properties().message_id.as_deref().unwrap_or(""),
                    "{why}: discarded"
                );
                Outcome::Ack
            }
        }
    }
}

/// The innermost service: finds the handler for the delivery's name and runs it.
struct Dispatch<S> {
    table: Arc<Table<S>>,
    state: S,
}

impl<S: Clone> Clone for Dispatch<S> {
    fn clone(&self) -> Self {
        Dispatch {
            table: Arc::clone(&self.table),
            state: self.state.clone(),
        }
    }
}

type HandlerOk = fn(Outcome) -> Result<Outcome, BoxError>;

impl<S: Clone + Send + Sync + 'static> Service<Incoming> for Dispatch<S> {
    type Response = Outcome;
    type Error = BoxError;
    type Future =
        Either<futures_util::future::Map<BoxFuture<'static, Outcome>, HandlerOk>, Ready<Result<Outcome, BoxError>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        let table = &self.table;
        let untyped;
        let name = match req.name() {
            Some(name) => Some(name),
            None => {
                untyped = table.untyped.name_of(req.envelope());
                untyped.as_deref()
            }
        };
        let handler = name.and_then(|n| table.by_name.get(n)).or(table.fallback.as_ref());
        match handler {
            Some(h) => Either::Left(h.call(req, self.state.clone()).map(Ok as HandlerOk)),
            None => Either::Right(ready(Ok(table.unknown(&req)))),
        }
    }
}
