//! The `Transport` contract every broker implements (its type-erased twin, [`DynTransport`],
//! is in `dyn_transport`), and the values that cross it: [`Publish`], [`Confirmation`], [`Delivery`] with its [`Acker`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::field::FieldTable;
use crate::shortstr::ShortStr;
use crate::topology::{Binding, Topology};

pub use crate::capabilities::{Capabilities, DEFAULT_MAX_MESSAGE_SIZE, DIRECT_REPLY_TO, RABBITMQ_CONSUMER_TIMEOUT};
pub use crate::dyn_transport::DynTransport;

/// A boxed, `Send` future, as returned by the erased transport.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A queue as the broker reports it (`queue.declare-ok`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The name (the generated one for server-named queues).
    pub name: String,
    /// Ready messages (unacknowledged ones are not counted).
    pub message_count: u32,
    /// Active consumers.
    pub consumer_count: u32,
}

/// What [`Transport::declare`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// One entry per queue of the topology, in order, with server-generated names filled in.
    pub queues: Vec<QueueInfo>,
}

impl Declared {
    /// The generated name of the last server-named queue of `topology` (declared as `""`),
    /// which a binding to the queue `""` refers to, as on an AMQP channel.
    pub fn last_server_named(&self, topology: &Topology) -> Option<&str> {
        topology
            .queues
            .iter()
            .zip(&self.queues)
            .rev()
            .find(|(q, _)| q.name.is_empty())
            .map(|(_, info)| info.name.as_str())
    }
}

/// Options of [`Transport::delete_queue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteQueue {
    /// Fail if the queue has consumers.
    pub if_unused: bool,
    /// Fail if the queue has ready messages.
    pub if_empty: bool,
}

/// A message to publish, with where it goes. Hold the exchange and routing key as [`ShortStr`]
/// to publish many messages without allocating.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// The exchange (`""` is the default exchange, which routes by queue name).
    pub exchange: ShortStr,
    /// The routing key.
    pub routing_key: ShortStr,
    /// Report an unroutable message as [`Confirmation::Returned`] instead of dropping it.
    /// On by default.
    pub mandatory: bool,
    /// The message.
    pub envelope: Envelope,
}

impl Publish {
    /// Refuses, before anything is sent, a body larger than `max` bytes or properties that do
    /// not fit in a content-header frame of `frame_max` bytes (or nest headers deeper than
    /// [`MAX_HEADER_DEPTH`](crate::MAX_HEADER_DEPTH)), with an error naming where the message
    /// was going and the limit.
    pub fn check_size(&self, max: usize, frame_max: u32) -> Result<()> {
        if let Err(e) = self.envelope.properties().check_frame(frame_max) {
            return Err(e.context(format_args!(
                "message to exchange '{}' with routing key '{}'",
                self.exchange, self.routing_key
            )));
        }
        if self.envelope.body.len() > max {
            return Err(Error::oversized(
                &self.exchange,
                &self.routing_key,
                self.envelope.body.len(),
                max,
            ));
        }
        Ok(())
    }

    /// Publishes `envelope` to `exchange` with `routing_key`, mandatory.
    pub fn new(exchange: impl Into<ShortStr>, routing_key: impl Into<ShortStr>, envelope: Envelope) -> Self {
        Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: true,
            envelope,
        }
    }

    /// Publishes `envelope` straight to `queue` through the default exchange, mandatory.
    pub fn to_queue(queue: impl Into<ShortStr>, envelope: Envelope) -> Self {
        Publish::new(ShortStr::EMPTY, queue, envelope)
    }

    /// Sets the mandatory flag.
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }
}

/// How the broker answered a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Confirmation {
    /// Every queue the message was routed to has taken responsibility for it (or, not
    /// mandatory, it was routed nowhere and dropped).
    Confirmed,
    /// Mandatory and unroutable: returned to the publisher (`basic.return`).
    Returned {
        /// AMQP reply code, `312` for `NO_ROUTE`.
        reply_code: u16,
        /// Reply text, e.g. `NO_ROUTE`.
        reply_text: String,
    },
    /// The broker refused the message (e.g. a full `reject-publish` queue).
    Nacked,
}

impl Confirmation {
    /// Whether the broker confirmed the message.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, Confirmation::Confirmed)
    }

    /// `Ok(())` when confirmed; otherwise a typed error (`Unroutable` or `Nacked`) naming where
    /// the message was sent.
    pub fn into_result(self, exchange: &str, routing_key: &str) -> Result<()> {
        match self {
            Confirmation::Confirmed => Ok(()),
            Confirmation::Returned { reply_code, reply_text } => Err(Error::new(
                crate::error::ErrorKind::Unroutable,
                format!(
                    "message to exchange '{exchange}' with routing key '{routing_key}' was returned: {reply_code} {reply_text}"
                ),
            )),
            Confirmation::Nacked => Err(Error::new(
                crate::error::ErrorKind::Nacked,
                format!("message to exchange '{exchange}' with routing key '{routing_key}' was nacked by the broker"),
            )),
        }
    }
}

/// Options of [`Transport::consume`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumeOptions {
    /// At most this many unacknowledged deliveries to this consumer; 0 is unlimited.
    pub prefetch: u16,
    /// Deliveries are acknowledged when sent (AMQP `no-ack`); their ackers do nothing.
    pub no_ack: bool,
    /// No other consumer may consume from the queue meanwhile.
    pub exclusive: bool,
    /// The consumer tag; generated when `None`.
    pub consumer_tag: Option<String>,
    /// Consumer arguments (e.g. `x-priority`).
    pub arguments: FieldTable,
}

impl ConsumeOptions {
    /// Sets the prefetch.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets no-ack mode.
    pub fn no_ack(mut self, no_ack: bool) -> Self {
        self.no_ack = no_ack;
        self
    }

    /// Makes the consumer exclusive.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Processed: remove it.
    Ack,
    /// Not processed: requeue it, or (without requeue) dead-letter or drop it.
    Nack {
        /// Put it back in the queue.
        requeue: bool,
    },
    /// As `Nack`, with AMQP's `basic.reject`.
    Reject {
        /// Put it back in the queue.
        requeue: bool,
    },
    /// Return it to its queue, to be delivered again after the delay (SQS: the message's
    /// visibility timeout). Only for a transport whose
    /// [`Capabilities::redelivery_delay`] covers the delay; others requeue at once.
    RequeueAfter(std::time::Duration),
}

/// The transport side of an [`Acker`]: settles delivery `tag`. Implementations must be cheap: the
/// call happens once per delivery, on the consumer's task (batch the wire work).
pub trait AckHandle: Send + Sync + 'static {
    /// Settles one delivery.
    fn settle(&self, tag: u64, settle: Settle) -> Result<()>;
}

/// Settles one delivery exactly once. Dropping it unsettled requeues the delivery.
pub struct Acker {
    handle: Option<Arc<dyn AckHandle>>,
    tag: u64,
}

impl Acker {
    /// An acker that settles `tag` through `handle`.
    #[inline]
    pub fn new(handle: Arc<dyn AckHandle>, tag: u64) -> Self {
        Acker {
            handle: Some(handle),
            tag,
        }
    }

    /// An acker for delivery `tag`, which needs no settling (consumed with `no_ack`).
    #[inline]
    pub fn settled(tag: u64) -> Self {
        Acker { handle: None, tag }
    }

    /// The delivery tag this acker settles.
    #[inline]
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// Whether the delivery was already settled.
    pub fn is_settled(&self) -> bool {
        self.handle.is_none()
    }

    #[inline]
    fn settle(&mut self, settle: Settle) -> Result<()> {
        match self.handle.take() {
            Some(h) => h.settle(self.tag, settle),
            None => Ok(()),
        }
    }

    /// [`settle`](Self::settle), consuming the acker. `settle` takes the handle out, so what
    /// is left owns nothing and is not dropped: `Drop` would only find the delivery settled.
    #[inline]
    fn finish(self, settle: Settle) -> Result<()> {
        std::mem::ManuallyDrop::new(self).settle(settle)
    }

    /// Acknowledges the delivery.
    ///
    /// The settlement goes to the transport when this is called; the future only carries the
    /// outcome, so awaiting it never waits on the broker.
    #[inline]
    pub fn ack(self) -> impl Future<Output = Result<()>> + Send + 'static {
        std::future::ready(self.finish(Settle::Ack))
    }

    /// Negatively acknowledges: requeue, or dead-letter / drop. Settles when called, like
    /// [`ack`](Self::ack).
    pub fn nack(self, requeue: bool) -> impl Future<Output = Result<()>> + Send + 'static {
        std::future::ready(self.finish(Settle::Nack { requeue }))
    }

    /// Rejects: requeue, or dead-letter / drop. Settles when called, like [`ack`](Self::ack).
    pub fn reject(self, requeue: bool) -> impl Future<Output = Result<()>> + Send + 'static {
        std::future::ready(self.finish(Settle::Reject { requeue }))
    }

    /// Returns the delivery to its queue to come back after `delay` (see
    /// [`Settle::RequeueAfter`]). Settles when called, like [`ack`](Self::ack).
    pub fn requeue_after(self, delay: std::time::Duration) -> impl Future<Output = Result<()>> + Send + 'static {
        std::future::ready(self.finish(Settle::RequeueAfter(delay)))
    }
}

impl Drop for Acker {
    #[inline]
    fn drop(&mut self) {
        // An unsettled delivery goes back to the queue. Errors (a closed connection) mean the
        // broker requeues it anyway.
        let _ = self.settle(Settle::Nack { requeue: true });
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acker")
            .field("tag", &self.tag)
            .field("settled", &self.is_settled())
            .finish()
    }
}

/// A message delivered from a queue.
///
/// Every consumer loop moves deliveries by value, so a delivery is kept within 128 bytes: on
/// x86-64 the compiler copies a value that size inline, and calls `memcpy` for a larger one.
/// (That is why the delivery tag lives only in the acker.)
#[derive(Debug)]
#[non_exhaustive]
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: ShortStr,
    /// The routing key it was published with.
    pub routing_key: ShortStr,
    /// It was delivered before and returned to the queue.
    pub redelivered: bool,
    /// For [`Transport::get`]: ready messages left in the queue after this one.
    pub message_count: Option<u32>,
    /// Settles the delivery. It holds the delivery tag ([`delivery_tag`](Self::delivery_tag)).
    pub acker: Acker,
}

impl Delivery {
    /// Builds a delivery (for transports); its delivery tag is the acker's.
    #[inline]
    pub fn new(envelope: Envelope, exchange: ShortStr, routing_key: ShortStr, redelivered: bool, acker: Acker) -> Self {
        Delivery {
            envelope,
            exchange,
            routing_key,
            redelivered,
            message_count: None,
            acker,
        }
    }

    /// The delivery tag (per consumer or `get` channel), kept by the [`acker`](Self::acker) that
    /// settles it.
    #[inline]
    pub fn delivery_tag(&self) -> u64 {
        self.acker.tag()
    }

    /// Sets the `basic.get` message count.
    pub fn with_message_count(mut self, count: u32) -> Self {
        self.message_count = Some(count);
        self
    }

    /// How many times the broker has delivered this message before (quorum queues'
    /// `x-delivery-count`), if the broker counts.
    pub fn delivery_count(&self) -> Option<u64> {
        self.envelope
            .header(crate::envelope::headers::X_DELIVERY_COUNT)
            .and_then(|v| v.as_i64())
            .and_then(|v| u64::try_from(v).ok())
    }

    /// Acknowledges the delivery (see [`Acker::ack`]).
    #[inline]
    pub fn ack(self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.acker.ack()
    }

    /// Negatively acknowledges the delivery (see [`Acker::nack`]).
    pub fn nack(self, requeue: bool) -> impl Future<Output = Result<()>> + Send + 'static {
        self.acker.nack(requeue)
    }

    /// Rejects the delivery (see [`Acker::reject`]).
    pub fn reject(self, requeue: bool) -> impl Future<Output = Result<()>> + Send + 'static {
        self.acker.reject(requeue)
    }
}

/// A stream of deliveries from one queue. Dropping it cancels the consumer; deliveries already
/// received stay valid and must still be settled (or are requeued when dropped). Deliveries the
/// broker had pushed to the consumer (up to its prefetch) that the stream never yielded go back
/// to the queue at once, marked redelivered.
///
/// The stream yields an error and ends if the consumer's queue is deleted (an
/// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) error, on every transport, whoever
/// declared the queue: no transport declares it again behind the application's back) or the
/// connection closes for good.
pub struct Subscription {
    tag: String,
    inner: Pin<Box<dyn Stream<Item = Result<Delivery>> + Send>>,
}

impl Subscription {
    /// Wraps a transport's delivery stream.
    pub fn new(tag: impl Into<String>, stream: impl Stream<Item = Result<Delivery>> + Send + 'static) -> Self {
        Subscription {
            tag: tag.into(),
            inner: Box::pin(stream),
        }
    }

    /// The consumer tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Cancels the consumer (same as dropping it).
    pub fn cancel(self) {}
}

impl Stream for Subscription {
    type Item = Result<Delivery>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// A connection to a broker. One value is one connection: exclusive queues belong to it, and
/// closing it requeues its unacknowledged deliveries.
///
/// Implementations write `async fn`; callers that pick the transport at run time use
/// [`DynTransport`].
pub trait Transport: Send + Sync + 'static {
    /// What the transport supports.
    fn capabilities(&self) -> Capabilities;

    /// Declares exchanges, queues, then bindings; idempotent. A declaration that conflicts with
    /// an existing entity fails with [`ErrorKind::Precondition`](crate::ErrorKind::Precondition).
    fn declare(&self, topology: &Topology) -> impl Future<Output = Result<Declared>> + Send;

    /// Passive declare: the queue's counts, or `NotFound`.
    fn queue_info(&self, queue: &str) -> impl Future<Output = Result<QueueInfo>> + Send;

    /// Passive declare of an exchange: `Ok` if it exists, else `NotFound`.
    fn exchange_exists(&self, exchange: &str) -> impl Future<Output = Result<()>> + Send;

    /// Deletes a queue; returns how many ready messages it held. A missing queue is not an error.
    fn delete_queue(&self, queue: &str, options: DeleteQueue) -> impl Future<Output = Result<u32>> + Send;

    /// Deletes an exchange. A missing exchange is not an error.
    fn delete_exchange(&self, exchange: &str, if_unused: bool) -> impl Future<Output = Result<()>> + Send;

    /// Removes a binding.
    fn unbind(&self, binding: &Binding) -> impl Future<Output = Result<()>> + Send;

    /// Removes every ready message; returns how many.
    fn purge(&self, queue: &str) -> impl Future<Output = Result<u32>> + Send;

    /// Publishes and waits for the broker's confirmation. Concurrent calls are pipelined.
    fn publish(&self, publish: Publish) -> impl Future<Output = Result<Confirmation>> + Send;

    /// Publishes a message for the broker to deliver after `delay`, by its own mechanism, and
    /// waits for the confirmation. Only for a transport whose
    /// [`Capabilities::native_delay`] covers `delay`; the default refuses with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported). (The framework delays
    /// through TTL wait queues everywhere else.)
    fn publish_delayed(
        &self,
        publish: Publish,
        delay: std::time::Duration,
    ) -> impl Future<Output = Result<Confirmation>> + Send {
        let system = self.capabilities().system;
        drop(publish);
        async move {
            Err(Error::new(
                crate::error::ErrorKind::Unsupported,
                format!("the {system} transport cannot delay a message by itself (asked for {delay:?})"),
            ))
        }
    }

    /// Starts a consumer on `queue`.
    fn consume(&self, queue: &str, options: ConsumeOptions) -> impl Future<Output = Result<Subscription>> + Send;

    /// Takes one message (`basic.get`); `None` when the queue is empty.
    fn get(&self, queue: &str, no_ack: bool) -> impl Future<Output = Result<Option<Delivery>>> + Send;

    /// Checks that the broker answers.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// The state of the connection(s) underneath, read without asking the broker (for health
    /// and metrics). The default, for a transport without a connection to lose: always up.
    fn connection_state(&self) -> crate::ConnectionState {
        crate::ConnectionState::default()
    }

    /// Closes the connection: consumers end, unacknowledged deliveries are requeued, exclusive
    /// queues are deleted.
    fn close(&self) -> impl Future<Output = Result<()>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorded(std::sync::Mutex<Vec<(u64, Settle)>>);

    impl AckHandle for Recorded {
        fn settle(&self, tag: u64, settle: Settle) -> Result<()> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((tag, settle));
            Ok(())
        }
    }

    #[test]
    fn a_delivery_is_moved_inline() {
        assert!(std::mem::size_of::<Delivery>() <= 128);
        assert!(std::mem::size_of::<Option<Result<Delivery>>>() <= 128);
    }

    #[tokio::test]
    async fn a_delivery_reports_and_settles_the_tag_its_acker_holds() {
        let handle = Arc::new(Recorded(std::sync::Mutex::new(Vec::new())));
        let acker = Acker::new(Arc::clone(&handle) as Arc<dyn AckHandle>, 7);
        let d = Delivery::new(Envelope::default(), ShortStr::EMPTY, ShortStr::from("k"), false, acker);
        assert_eq!(d.delivery_tag(), 7);
        d.ack().await.unwrap();
        let no_ack = Delivery::new(
            Envelope::default(),
            ShortStr::EMPTY,
            ShortStr::from("k"),
            false,
            Acker::settled(9),
        );
        assert_eq!((no_ack.delivery_tag(), no_ack.acker.is_settled()), (9, true));
        drop(no_ack);
        assert_eq!(*handle.0.lock().unwrap(), vec![(7, Settle::Ack)]);
    }

    #[tokio::test]
    async fn an_acker_settles_exactly_once_however_it_ends() {
        let handle = Arc::new(Recorded(std::sync::Mutex::new(Vec::new())));
        let acker = |tag| Acker::new(Arc::clone(&handle) as Arc<dyn AckHandle>, tag);
        acker(1).ack().await.unwrap();
        acker(2).nack(false).await.unwrap();
        acker(3).reject(true).await.unwrap();
        drop(acker(4));
        assert_eq!(
            *handle.0.lock().unwrap(),
            vec![
                (1, Settle::Ack),
                (2, Settle::Nack { requeue: false }),
                (3, Settle::Reject { requeue: true }),
                (4, Settle::Nack { requeue: true }),
            ]
        );
        assert_eq!(Arc::strong_count(&handle), 1, "every acker released its handle");
    }
}
