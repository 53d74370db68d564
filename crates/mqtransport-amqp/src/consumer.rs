//! Consumers that outlive their channel: the application's [`RecoveringStream`] stays open while
//! the subscription under it is re-opened after a reconnect, a broker cancel or a closed
//! channel.
//!
//! Every consumer the application holds is a [`ConsumerSpec`] in the transport's
//! [`Subscriptions`]. A subscription that ends is recovered by a task: on a new connection by
//! the restore ([`Subscriptions::resubscribe_all`]), otherwise by [`recover`], which declares
//! the queue again if this transport declared it. Both end in [`subscribe_and_install`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_core::Stream;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use mqtransport_core::{
    AckHandle, Acker, ConsumeOptions, DIRECT_REPLY_TO, Delivery, Envelope, Error, ErrorKind, Result, Scope, Settle,
    ShortStr,
};
use tokio::sync::watch;

use crate::acker::ChannelAck;
use crate::confirms::Confirming;
use crate::convert::{from_properties, map_err, queue_unavailable, to_table};
use crate::recorded::Recording;

/// The consumers the application holds, and what their recovery needs.
pub(crate) struct Subscriptions {
    specs: Mutex<Vec<Arc<ConsumerSpec>>>,
    /// The channel consuming [`DIRECT_REPLY_TO`]: requests that want direct replies must be
    /// published on it. A new value is sent each time its consumer is (re)subscribed.
    reply: watch::Sender<Option<Arc<Confirming>>>,
    recording: Arc<Recording>,
    closed: Arc<AtomicBool>,
    count: AtomicU64,
}

/// A consumer the application holds, re-opened on every new connection.
pub(crate) struct ConsumerSpec {
    queue: String,
    options: ConsumeOptions,
    tag: String,
    cancelled: AtomicBool,
    state: Mutex<SpecState>,
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
    waker: Option<Waker>,
    /// The direct reply-to subscription was replaced before the stream saw it end: replies to
    /// requests sent on its channel are lost, which the stream says before anything else.
    replies_lost: bool,
}

impl SpecState {
    /// Takes the live subscription away from the stream, which has not seen it end. For the
    /// reply consumer that loses the replies in flight: the stream is told, and woken to say so.
    fn take_unnoticed(&mut self, reply_consumer: bool) -> Option<Live> {
        let live = self.live.take()?;
        if reply_consumer {
            self.replies_lost = true;
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
        Some(live)
    }
}

impl ConsumerSpec {
    fn state(&self) -> MutexGuard<'_, SpecState> {
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

    fn is_over(&self) -> bool {
        self.cancelled.load(Ordering::Acquire) || self.state().finished
    }

    fn is_reply_consumer(&self) -> bool {
        self.queue == DIRECT_REPLY_TO
    }
}

impl Subscriptions {
    pub(crate) fn new(recording: Arc<Recording>, closed: Arc<AtomicBool>) -> Self {
        Subscriptions {
            specs: Mutex::default(),
            reply: watch::Sender::new(None),
            recording,
            closed,
            count: AtomicU64::new(0),
        }
    }

    fn specs(&self) -> MutexGuard<'_, Vec<Arc<ConsumerSpec>>> {
        self.specs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The channel of the direct reply-to consumer (`None` while there is none), told anew
    /// each time its consumer is (re)subscribed.
    pub(crate) fn reply_channels(&self) -> watch::Receiver<Option<Arc<Confirming>>> {
        self.reply.subscribe()
    }

    /// Subscribes a new consumer on `conn` (errors, such as a missing queue or an exclusive
    /// lock, reach the caller) and returns the application's stream of it.
    pub(crate) async fn consume(
        self: &Arc<Self>,
        conn: Arc<Connection>,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<(String, RecoveringStream)> {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let tag = options
            .consumer_tag
            .clone()
            .unwrap_or_else(|| format!("mqt-{}-{n}", std::process::id()));
        let spec = Arc::new(ConsumerSpec {
            queue: queue.to_owned(),
            options,
            tag: tag.clone(),
            cancelled: AtomicBool::new(false),
            state: Mutex::default(),
        });
        // Requests go out on the reply consumer's channel, so a connection has one reply
        // consumer, as on the embedded broker. It is registered before it subscribes, so that
        // two started at once cannot both pass.
        if spec.is_reply_consumer() {
            let mut specs = self.specs();
            if specs.iter().any(|s| s.is_reply_consumer() && !s.is_over()) {
                return Err(Error::broker(
                    406,
                    "PRECONDITION_FAILED - reply consumer already set",
                    Scope::Channel,
                ));
            }
            specs.push(Arc::clone(&spec));
        }
        let resolved = self.recording.resolve(queue);
        let (ch, consumer) = match subscribe(&conn, &spec, &resolved).await {
            Ok(subscribed) => subscribed,
            Err(e) => {
                self.specs().retain(|s| !Arc::ptr_eq(s, &spec));
                return Err(e);
            }
        };
        self.install(&spec, ch, consumer, conn, resolved);
        if !spec.is_reply_consumer() {
            self.specs().push(Arc::clone(&spec));
        }
        let stream = RecoveringStream {
            spec,
            subscriptions: Arc::downgrade(self),
        };
        Ok((tag, stream))
    }

    /// Hands a fresh subscription to the spec's stream and wakes it.
    fn install(
        &self,
        spec: &ConsumerSpec,
        channel: Channel,
        consumer: lapin::Consumer,
        conn: Arc<Connection>,
        queue: String,
    ) {
        if spec.is_reply_consumer() {
            self.reply.send_replace(Some(Confirming::new(channel.clone(), None)));
        }
        let ack = ChannelAck::spawn(channel.clone(), Arc::clone(&self.closed), format!("queue '{queue}'"));
        let waker = {
            let mut st = spec.state();
            if st.finished || spec.cancelled.load(Ordering::Acquire) {
                None
            } else {
                // A subscription the stream still holds ended without the stream noticing.
                drop(st.take_unnoticed(spec.is_reply_consumer()));
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

    /// On a new connection: subscribes every consumer still wanted again, each on a task.
    pub(crate) fn resubscribe_all(self: &Arc<Self>, conn: &Arc<Connection>) {
        let specs: Vec<Arc<ConsumerSpec>> = self.specs().clone();
        for spec in specs.into_iter().filter(|s| !s.is_over()) {
            let queue = self.recording.resolve(&spec.queue);
            tokio::spawn(subscribe_and_install(
                Arc::downgrade(self),
                spec,
                Arc::clone(conn),
                queue,
            ));
        }
    }

    /// Starts resuming the direct reply-to consumer if its channel is closed and its stream
    /// has not noticed yet (it notices when next polled, but a request waits for the channel
    /// now).
    pub(crate) fn revive_reply_consumer(self: &Arc<Self>) {
        let spec = self
            .specs()
            .iter()
            .find(|s| s.is_reply_consumer() && !s.is_over())
            .cloned();
        let Some(spec) = spec else { return };
        let ended = {
            let mut st = spec.state();
            if st.live.as_ref().is_some_and(|l| !l.channel.status().connected()) {
                st.take_unnoticed(true)
            } else {
                None
            }
        };
        if let Some(ended) = ended {
            tokio::spawn(recover(Arc::downgrade(self), spec, ended));
        }
    }

    /// Ends every consumer: the transport is closing.
    pub(crate) fn close_all(&self) {
        let specs = std::mem::take(&mut *self.specs());
        for s in specs {
            s.cancelled.store(true, Ordering::Release);
            s.finish(Error::closed(format!(
                "consumer on queue '{}' ended: the connection was closed",
                s.queue
            )));
        }
    }

    /// Forgets a consumer the application dropped; an auto-delete queue that lost its last
    /// consumer is forgotten too.
    fn forget(&self, spec: &Arc<ConsumerSpec>) {
        if spec.is_reply_consumer() {
            // A request now fails at once (no reply consumer) instead of going out on the
            // channel of one that is gone.
            self.reply.send_replace(None);
        }
        let still_consumed = {
            let mut specs = self.specs();
            specs.retain(|s| !Arc::ptr_eq(s, spec));
            specs.iter().any(|s| s.queue == spec.queue)
        };
        if !still_consumed {
            self.recording.forget_if_auto_delete(&spec.queue);
        }
    }
}

/// Opens a channel with the consumer's QoS and subscribes.
async fn subscribe(conn: &Connection, spec: &ConsumerSpec, queue: &str) -> Result<(Channel, lapin::Consumer)> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| map_err(&e, &format!("opening a consumer channel for '{queue}'")))?;
    if spec.is_reply_consumer() {
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

/// Subscribes `spec` to `queue` on `conn` and hands the subscription to the application's
/// stream. A connection problem is left to the next reconnect; a queue that exists but is
/// unavailable (its cluster node is down) is tried again until it is back; a missing queue
/// ends the stream saying the broker cancelled the consumer; anything else (access refused,
/// an exclusive lock) ends it with the error.
async fn subscribe_and_install(
    subscriptions: Weak<Subscriptions>,
    spec: Arc<ConsumerSpec>,
    conn: Arc<Connection>,
    queue: String,
) {
    let mut pause = UNAVAILABLE_RETRY_FIRST;
    loop {
        if spec.is_over() {
            return;
        }
        match subscribe(&conn, &spec, &queue).await {
            Ok((ch, consumer)) => {
                if let Some(s) = subscriptions.upgrade() {
                    s.install(&spec, ch, consumer, conn, queue);
                }
                return;
            }
            Err(e) if queue_unavailable(&e) && conn.status().connected() => {
                tracing::warn!(queue = %queue, "cannot consume yet, trying again in {pause:?}: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(UNAVAILABLE_RETRY_MAX);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return spec.finish(Error::new(
                    ErrorKind::NotFound,
                    format!("consumer cancelled by the broker: queue '{queue}' was deleted"),
                ));
            }
            Err(e) => {
                if conn.status().connected() && !matches!(e.kind(), ErrorKind::Connection | ErrorKind::Closed) {
                    spec.finish(e);
                }
                return;
            }
        }
    }
}

/// How long a consumer of an unavailable queue waits before it tries again, first and at most.
const UNAVAILABLE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const UNAVAILABLE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// A subscription ended. If the connection is gone, the reconnect resubscribes. Otherwise the
/// broker cancelled it or closed its channel: subscribe again. A queue that still exists (a
/// consumer timeout closed the channel; a refused request published on the direct reply-to
/// channel) is consumed again; one whose cluster node is down is waited for; a deleted one ends
/// the stream with `NotFound`, as on every transport (the `Subscription` contract), even if this
/// transport declared it.
async fn recover(subscriptions: Weak<Subscriptions>, spec: Arc<ConsumerSpec>, ended: Live) {
    let Live { conn, queue, .. } = ended;
    if spec.is_over() || !conn.status().connected() {
        return;
    }
    subscribe_and_install(subscriptions, spec, conn, queue).await;
}

/// Cancels a consumer the application dropped, then returns to the queue what the broker had
/// pushed to it and the application never read, as the embedded broker does: lapin ends the
/// consumer's stream after `basic.cancel-ok`, so what it yields until then was never handed
/// out. Bounded by [`UNREAD_RETURN_DEADLINE`]: what is left after it waits for the channel to
/// close, when the broker returns it anyway.
async fn cancel_and_return_unread(live: Live, tag: String, no_ack: bool) {
    use futures_util::StreamExt;
    let Live {
        mut consumer,
        ack,
        channel,
        ..
    } = live;
    let _ = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    if no_ack {
        return;
    }
    let _ = tokio::time::timeout(UNREAD_RETURN_DEADLINE, async {
        while let Some(Ok(d)) = consumer.next().await {
            let _ = ack.settle(d.delivery_tag, Settle::Nack { requeue: true });
        }
    })
    .await;
}

/// How long a cancelled consumer's unread deliveries are waited for.
const UNREAD_RETURN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// A lapin delivery as a core [`Delivery`] settled through `acker`.
pub(crate) fn to_delivery(d: lapin::message::Delivery, acker: Acker) -> Delivery {
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
pub(crate) struct RecoveringStream {
    spec: Arc<ConsumerSpec>,
    subscriptions: Weak<Subscriptions>,
}

impl Stream for RecoveringStream {
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.spec.state();
        if std::mem::take(&mut st.replies_lost) && !st.finished {
            return Poll::Ready(Some(Err(replies_lost())));
        }
        if let Some(live) = st.live.as_mut() {
            match Pin::new(&mut live.consumer).poll_next(cx) {
                Poll::Ready(Some(Ok(d))) => {
                    let acker = if self.spec.options.no_ack {
                        Acker::settled(d.delivery_tag)
                    } else {
                        Acker::new(Arc::clone(&live.ack) as Arc<dyn AckHandle>, d.delivery_tag)
                    };
                    return Poll::Ready(Some(Ok(to_delivery(d, acker))));
                }
                // lapin holds the waker until the next delivery.
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(_)) | None) => {
                    if let (Some(ended), Ok(rt)) = (st.live.take(), tokio::runtime::Handle::try_current()) {
                        rt.spawn(recover(self.subscriptions.clone(), Arc::clone(&self.spec), ended));
                    }
                    // Direct replies go to the channel the request went out on: with it gone,
                    // replies to requests in flight are lost. Their callers are told at once
                    // (the stream goes on with the next channel).
                    if self.spec.is_reply_consumer() && !st.finished {
                        return Poll::Ready(Some(Err(replies_lost())));
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

/// What the direct reply-to stream yields when its channel is gone with replies in flight.
fn replies_lost() -> Error {
    Error::new(
        ErrorKind::Connection,
        "the direct reply-to channel was lost: replies to requests sent before cannot arrive",
    )
}

impl Drop for RecoveringStream {
    fn drop(&mut self) {
        self.spec.cancelled.store(true, Ordering::Release);
        if let Some(s) = self.subscriptions.upgrade() {
            s.forget(&self.spec);
        }
        let live = self.spec.state().live.take();
        if let (Some(live), Ok(rt)) = (live, tokio::runtime::Handle::try_current()) {
            let tag = self.spec.tag.clone();
            let no_ack = self.spec.options.no_ack;
            rt.spawn(cancel_and_return_unread(live, tag, no_ack));
        }
    }
}
