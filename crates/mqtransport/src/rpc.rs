//! Request/reply: a typed [`Requester`] that publishes a request and waits for its reply over
//! direct reply-to ([`DIRECT_REPLY_TO`]: no queue per caller or per call; on a broker without
//! it, such as SQS, one reply queue per app, `mqt.reply.<id>`, deleted at shutdown), and the typed
//! [`RpcError`] it fails with. The responder is an ordinary handler that returns its answer (a
//! [`Message`], or a `Result` of one: see [`Outcome::Reply`](crate::Outcome::Reply)), or sends
//! it with [`Publisher::reply`](crate::Publisher::reply). A handler that fails for good (its
//! error is permanent, its retries are spent, or its next retry would come after the caller's
//! deadline) or a request that cannot be read is answered with the reason before it is
//! dead-lettered. A transient failure retried in time is waited for: the caller gets the
//! answer of the attempt that succeeds.
//!
//! Every requester of an app shares one reply consumer (RabbitMQ allows one per connection),
//! started with the first request; replies are matched to their calls by correlation id. A call
//! never hangs: it ends with its reply, a failure the responder sent back, a refusal by the
//! broker, the loss of the reply channel, or its deadline.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use mqtransport_core::{
    Confirmation, ConsumeOptions, DIRECT_REPLY_TO, DynTransport, Envelope, Error, Queue, Topology, Transport, headers,
};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::message::{DecodeError, Message, decode};
use crate::publish::{PublishOptions, Publisher, Route};

/// How long a call waits for its reply unless told otherwise.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call got no response.
#[derive(Debug)]
#[non_exhaustive]
pub enum RpcError {
    /// The responder's handler failed for good (a permanent error, or its retries spent) and
    /// said why. The responder dead-lettered the request after replying.
    Failed {
        /// The responder's reason.
        reason: String,
    },
    /// The responder refused the request without handling it: it could not be read
    /// (malformed, invalid) or no handler serves its name. The responder dead-lettered it
    /// after replying.
    Rejected {
        /// The responder's reason.
        reason: String,
    },
    /// The broker routed the request to no queue (no responder's queue is bound to the route).
    NoRoute {
        /// The broker's reply code and text.
        reason: String,
    },
    /// The broker refused the request (a negative confirm).
    Nacked,
    /// No reply came within the deadline (no responder, or one too slow). The request carried
    /// the deadline, so a responder that takes it later skips it.
    Timeout(Duration),
    /// The reply channel was lost while the call waited (the connection dropped): its reply,
    /// if any comes, cannot reach it. Said at once, not at the deadline.
    ConnectionLost(String),
    /// The request could not be sent (e.g. it is invalid, too large, or the broker is
    /// unreachable).
    Publish(Error),
    /// The reply came but could not be read as the response type.
    Decode(DecodeError),
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Failed { reason } => write!(f, "the responder failed to handle the request: {reason}"),
            RpcError::Rejected { reason } => write!(f, "the responder refused the request: {reason}"),
            RpcError::NoRoute { reason } => write!(f, "the request was routed to no queue ({reason})"),
            RpcError::Nacked => f.write_str("the broker refused the request"),
            RpcError::Timeout(after) => write!(f, "no reply within {after:?}"),
            RpcError::ConnectionLost(why) => write!(f, "the reply channel was lost while waiting: {why}"),
            RpcError::Publish(e) => write!(f, "the request could not be sent: {e}"),
            RpcError::Decode(e) => write!(f, "the reply could not be read: {e}"),
        }
    }
}

impl std::error::Error for RpcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RpcError::Publish(e) => Some(e),
            RpcError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// What the reply consumer hands a waiting call.
type Answer = Result<Envelope, RpcError>;

/// The app's one reply consumer and the calls waiting on it, by correlation id.
pub(crate) struct Replies {
    transport: DynTransport,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// Whether the reply consumer runs (it is started by the first call, and again after it
    /// ended).
    running: AtomicBool,
    /// Held while a call starts the reply consumer, so that only one does.
    starting: tokio::sync::Mutex<()>,
    next: AtomicU64,
    /// Makes correlation ids unique across processes sharing a responder.
    prefix: String,
    /// Where replies go: [`DIRECT_REPLY_TO`], or on a broker without it this app's own reply
    /// queue (`mqt.reply.<id>`), declared by the first call and deleted at shutdown.
    address: Mutex<String>,
}

impl Replies {
    pub(crate) fn new(transport: DynTransport) -> Arc<Self> {
        Arc::new(Replies {
            transport,
            waiting: Mutex::default(),
            running: AtomicBool::new(false),
            starting: tokio::sync::Mutex::new(()),
            next: AtomicU64::new(0),
            prefix: uuid::Uuid::now_v7().simple().to_string(),
            address: Mutex::new(DIRECT_REPLY_TO.to_owned()),
        })
    }

    /// Where this app's replies go.
    fn address(&self) -> String {
        self.address.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Deletes the reply queue, if this app made one (a broker without direct reply-to).
    pub(crate) async fn close(&self) {
        let address = self.address();
        if address != DIRECT_REPLY_TO
            && let Err(e) = self.transport.delete_queue(&address, Default::default()).await
        {
            tracing::info!(reply_queue = address, "could not delete the reply queue: {e}");
        }
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<Answer>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls waiting for a reply now.
    fn in_flight(&self) -> usize {
        self.waiting().len()
    }

    /// Starts the reply consumer unless it runs.
    async fn listen(self: &Arc<Self>) -> Result<(), RpcError> {
        if self.running.load(Ordering::Acquire) {
            return Ok(());
        }
        let _starting = self.starting.lock().await;
        if self.running.load(Ordering::Acquire) {
            return Ok(());
        }
        let address = if self.transport.capabilities().direct_reply_to {
            DIRECT_REPLY_TO.to_owned()
        } else {
            // No direct reply-to (SQS): a reply queue of this app's own. Not exclusive, as such
            // brokers have none; deleted at shutdown.
            let name = format!("mqt.reply.{}", self.prefix);
            self.transport
                .declare(&Topology::new().queue(Queue::durable(&name)))
                .await
                .map_err(RpcError::Publish)?;
            name
        };
        let mut replies = self
            .transport
            .consume(&address, ConsumeOptions::default().no_ack(true))
            .await
            .map_err(RpcError::Publish)?;
        *self.address.lock().unwrap_or_else(PoisonError::into_inner) = address;
        self.running.store(true, Ordering::Release);
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(item) = replies.next().await {
                let Some(this) = this.upgrade() else { return };
                match item {
                    Ok(delivery) => this.answer(delivery.envelope),
                    // The transport says replies in flight were lost (its reply channel was
                    // replaced); the consumer goes on for later calls.
                    Err(e) => this.fail_all(&e.to_string()),
                }
            }
            if let Some(this) = this.upgrade() {
                this.running.store(false, Ordering::Release);
                this.fail_all("the reply consumer ended");
            }
        });
        Ok(())
    }

    fn answer(&self, reply: Envelope) {
        let Some(id) = reply.properties().correlation_id.as_deref() else {
            tracing::debug!("a reply without a correlation id was dropped");
            return;
        };
        match self.waiting().remove(id) {
            Some(call) => {
                let _ = call.send(Ok(reply));
            }
            None => tracing::debug!(correlation_id = id, "a reply came for no waiting call (it gave up)"),
        }
    }

    fn fail_all(&self, why: &str) {
        for (_, call) in self.waiting().drain() {
            let _ = call.send(Err(RpcError::ConnectionLost(why.to_owned())));
        }
    }

    /// Registers a call: its correlation id, and the guard that forgets it when the call ends
    /// (also when its future is dropped).
    fn register(self: &Arc<Self>) -> (String, oneshot::Receiver<Answer>, Waiting) {
        let id = format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(id.clone(), tx);
        let guard = Waiting {
            replies: Arc::clone(self),
            id: id.clone(),
        };
        (id, rx, guard)
    }
}

/// Forgets a call when it ends, however it ends.
struct Waiting {
    replies: Arc<Replies>,
    id: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.replies.waiting().remove(&self.id);
    }
}

/// A typed request/reply client bound to one route: sends `Req`, waits for `Resp`. `Clone +
/// Send + Sync`; get it from [`App::requester`](crate::App::requester).
///
/// ```
/// use mqtransport::prelude::*;
/// use mqtransport::RpcError;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, Message)]
/// #[message(name = "math.square")]
/// struct Square { n: i64 }
///
/// #[derive(Debug, Serialize, Deserialize, Message)]
/// #[message(name = "math.squared")]
/// struct Squared { n: i64 }
///
/// // The responder: an ordinary handler; what it returns is the reply.
/// async fn square(req: Square) -> Result<Squared, HandlerError> {
///     if req.n > 3_000_000_000 {
///         return Err(HandlerError::permanent("too large to square"));
///     }
///     Ok(Squared { n: req.n * req.n })
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = App::builder()
///     .url("memory://rpc-docs")
///     .consumer(Consumer::for_queue(Queue::durable("math")).handle(square).retry(RetryPolicy::none()))
///     .build()
///     .await?;
/// let math = app.requester::<Square, Squared>(Route::queue("math"));
/// let running = app.start().await?;
///
/// assert_eq!(math.request(&Square { n: 12 }).await?.n, 144);
/// match math.request(&Square { n: 4_000_000_000 }).await {
///     Err(RpcError::Failed { reason }) => assert!(reason.contains("too large")),
///     other => panic!("{other:?}"),
/// }
/// running.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct Requester<Req, Resp> {
    replies: Arc<Replies>,
    publisher: Publisher,
    route: Route,
    timeout: Duration,
    _messages: PhantomData<fn(&Req) -> Resp>,
}

impl<Req, Resp> Clone for Requester<Req, Resp> {
    fn clone(&self) -> Self {
        Requester {
            replies: Arc::clone(&self.replies),
            publisher: self.publisher.clone(),
            route: self.route.clone(),
            timeout: self.timeout,
            _messages: PhantomData,
        }
    }
}

impl<Req, Resp> fmt::Debug for Requester<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requester")
            .field("route", &self.route)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<Req: Message, Resp: Message> Requester<Req, Resp> {
    pub(crate) fn new(replies: Arc<Replies>, publisher: Publisher, route: Route) -> Self {
        Requester {
            replies,
            publisher,
            route,
            timeout: DEFAULT_RPC_TIMEOUT,
            _messages: PhantomData,
        }
    }

    /// Calls of the app's requesters waiting for their replies now (a call that ended, or
    /// whose future was dropped, is not counted).
    pub fn waiting(&self) -> usize {
        self.replies.in_flight()
    }

    /// The same requester with another default deadline per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `request` and waits for the reply, at most the requester's timeout (30 s unless
    /// [`with_timeout`](Self::with_timeout) says otherwise). Dropping the future cancels the
    /// call: a reply that comes later is dropped.
    pub async fn request(&self, request: &Req) -> Result<Resp, RpcError> {
        self.request_within(request, self.timeout).await
    }

    /// Sends `request` and waits for the reply at most `timeout`. The deadline travels with the
    /// request (as its `expiration` and the [`headers::DEADLINE`] header), so that neither the
    /// broker nor a responder spends time on it once the caller has given up.
    pub async fn request_within(&self, request: &Req, timeout: Duration) -> Result<Resp, RpcError> {
        let publish = self
            .publisher
            .build(
                &self.route,
                request,
                &PublishOptions::default().transient(),
                self.publisher.validates(),
            )
            .map_err(RpcError::Publish)?;
        let reply = call(&self.replies, &self.publisher, publish, timeout).await?;
        decode::<Resp>(&reply).map_err(RpcError::Decode)
    }
}

/// A request/reply client for raw envelopes, for services that do not speak typed messages
/// (e.g. a pika `rpc_server.py` answering with a bare body): the request goes out as given,
/// with `reply_to`, a correlation id and the deadline added; the reply comes back as it is.
/// Get it from [`App::raw_requester`](crate::App::raw_requester).
#[derive(Clone)]
pub struct RawRequester {
    replies: Arc<Replies>,
    publisher: Publisher,
    route: Route,
    timeout: Duration,
}

impl fmt::Debug for RawRequester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRequester")
            .field("route", &self.route)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RawRequester {
    pub(crate) fn new(replies: Arc<Replies>, publisher: Publisher, route: Route) -> Self {
        RawRequester {
            replies,
            publisher,
            route,
            timeout: DEFAULT_RPC_TIMEOUT,
        }
    }

    /// The same requester with another deadline per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `request` to the requester's route (the route's routing key) and waits for the
    /// reply, at most the requester's timeout.
    pub async fn request(&self, request: Envelope) -> Result<Envelope, RpcError> {
        // A route without a routing key uses the envelope's name (`type`), as typed publishes do.
        let routing_key = self
            .route
            .routing_key_for(request.properties().kind.as_deref().unwrap_or(""));
        let exchange = mqtransport_core::ShortStr::from(self.route.exchange_name());
        let publish = mqtransport_core::Publish::new(exchange, routing_key, request);
        call(&self.replies, &self.publisher, publish, self.timeout).await
    }
}

/// One call: registers it, publishes `publish` with the reply address, correlation id and
/// deadline, and waits for its answer. A reply that carries [`headers::RPC_ERROR`] is the
/// responder's failure.
async fn call(
    replies: &Arc<Replies>,
    publisher: &Publisher,
    mut publish: mqtransport_core::Publish,
    timeout: Duration,
) -> Result<Envelope, RpcError> {
    let started = tokio::time::Instant::now();
    replies.listen().await?;
    let (id, answer, _waiting) = replies.register();
    let reply_to = replies.address();
    // Every direct reply-to address (one per channel) under the one pseudo-queue.
    let reply_queue = if reply_to.starts_with(mqtransport_core::DIRECT_REPLY_TO) {
        mqtransport_core::DIRECT_REPLY_TO
    } else {
        reply_to.as_str()
    };
    let receive = tracing::debug_span!(
        "receive",
        otel.name = %format_args!("receive {reply_queue}"),
        otel.kind = "consumer",
        messaging.system = publisher.inner.system,
        messaging.operation.type = "receive",
        messaging.operation.name = "receive",
        messaging.destination.name = reply_queue,
        messaging.message.conversation_id = id.as_str(),
        mqt.outcome = tracing::field::Empty,
    );
    let deadline_ms = SystemTime::now()
        .checked_add(timeout)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(i64::MAX, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let props = publish.envelope.properties_mut();
    props.reply_to = Some(reply_to);
    props.correlation_id = Some(id);
    props.expiration = Some(timeout.max(Duration::from_millis(1)).as_millis().to_string());
    publish.envelope.headers_mut().insert(headers::DEADLINE, deadline_ms);
    match publisher.publish_stamped(publish.mandatory(true)).await {
        Ok(Confirmation::Confirmed) => {}
        Ok(Confirmation::Returned { reply_code, reply_text }) => {
            return Err(RpcError::NoRoute {
                reason: format!("{reply_code} {reply_text}"),
            });
        }
        Ok(Confirmation::Nacked) => return Err(RpcError::Nacked),
        Ok(other) => {
            return Err(RpcError::Publish(Error::new(
                mqtransport_core::ErrorKind::Nacked,
                format!("the request was not confirmed: {other:?}"),
            )));
        }
        Err(e) => return Err(RpcError::Publish(e)),
    }
    let left = timeout.saturating_sub(started.elapsed());
    let reply = match tokio::time::timeout(left, answer).instrument(receive.clone()).await {
        Err(_) => {
            receive.record("mqt.outcome", "timeout");
            return Err(RpcError::Timeout(timeout));
        }
        Ok(Err(_)) => {
            receive.record("mqt.outcome", "connection_lost");
            return Err(RpcError::ConnectionLost("the reply consumer ended".to_owned()));
        }
        Ok(Ok(answer)) => answer?,
    };
    receive.record("mqt.outcome", "replied");
    // The wait for the reply links to the responder's span that sent it.
    #[cfg(feature = "opentelemetry")]
    crate::observe::relate(&receive, &reply, crate::TraceParent::Link);
    if let Some(why) = reply.header(headers::RPC_ERROR) {
        let reason = why.as_str().map_or_else(|| why.display_value(), str::to_owned);
        let refused = reply.header(headers::RPC_FAILURE).and_then(|v| v.as_str()) == Some("rejected");
        return Err(if refused {
            RpcError::Rejected { reason }
        } else {
            RpcError::Failed { reason }
        });
    }
    Ok(reply)
}
