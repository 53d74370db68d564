//! Runs one consumer: takes deliveries, runs the middleware stack and handler for each (at most
//! `concurrency` at once), and settles each delivery exactly once from its [`Outcome`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use mqtransport_core::{
    Acker, ConsumeOptions, Delivery, DynTransport, Envelope, Error, FieldValue, Queue, Result, ShortStr, Transport,
    headers,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::consumer::{Acknowledge, HandlerService};
use crate::consumer_status::SettleHealth;
use crate::delivery::{ConsumerCtx, DeliveryParts, Incoming};
use crate::outcome::Outcome;
use crate::retry::RetryPolicy;
use crate::settled::SettleObserver;

mod settle;

use settle::{Handled, report};

/// Deliveries taken but not yet settled, over the whole app.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pub(crate) in_flight: AtomicUsize,
}

/// Counts one delivery as in flight until dropped (also when its task is cancelled).
struct InFlight(Arc<Tracker>);

impl InFlight {
    fn new(tracker: &Arc<Tracker>) -> Self {
        tracker.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(tracker))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The next delivery of a consumer's stream; never resolves once the stream is gone.
async fn next_delivery(stream: &mut Option<mqtransport_core::Subscription>) -> Option<Result<Delivery>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Tells consumers to stop: `Some(deadline)` by which in-flight handlers must finish.
pub(crate) type Stop = watch::Receiver<Option<Instant>>;

/// Where dead letters go, resolved at build time.
#[derive(Debug, Clone)]
pub(crate) enum DeadLetterTarget {
    Queue { name: ShortStr, declaration: Queue },
    Broker,
}

/// The longest reason kept in `x-mqt-error` (a header must fit in a frame).
const MAX_REASON: usize = 1024;

pub(crate) struct ConsumerRuntime {
    pub(crate) ctx: Arc<ConsumerCtx>,
    /// The queue is this app's own and goes at shutdown: a subscription's, on a broker without
    /// exclusive queues (which RabbitMQ would delete with the connection).
    pub(crate) owns_queue: bool,
    pub(crate) prefetch: u16,
    pub(crate) concurrency: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) acknowledge: Acknowledge,
    pub(crate) dead_letter: DeadLetterTarget,
    pub(crate) transport: DynTransport,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) observers: Vec<Arc<dyn SettleObserver>>,
    /// Retry and dead-letter copies the broker refused in a row.
    pub(crate) settle_health: SettleHealth,
    /// Why the consumer ended, once it has.
    pub(crate) ended: std::sync::Mutex<Option<String>>,
    /// Its deliveries being handled, when the app records metrics.
    #[cfg(feature = "metrics")]
    pub(crate) in_flight_gauge: Option<metrics::Gauge>,
}

impl ConsumerRuntime {
    pub(crate) fn queue(&self) -> &str {
        &self.ctx.queue
    }

    /// Starts consuming: errors (a missing queue, an exclusive lock) reach the caller here.
    pub(crate) async fn subscribe(&self) -> Result<mqtransport_core::Subscription> {
        self.transport
            .consume(
                self.queue(),
                ConsumeOptions::default()
                    .prefetch(self.prefetch)
                    .no_ack(self.acknowledge == Acknowledge::BrokerNoAck),
            )
            .await
            .map_err(|e| e.context(format_args!("cannot consume queue '{}'", self.queue())))
    }

    /// Runs the consumer until `stop` says so or the delivery stream fails, then lets in-flight
    /// handlers finish until the stop's deadline.
    ///
    /// One task takes deliveries and drives up to `concurrency` handlers at once, each with a
    /// clone of the middleware stack of its own: nothing is spawned per delivery, no lock passes
    /// between tasks, and when every handler slot is busy the stream is not polled, so the
    /// broker's prefetch is the only buffer. A consumer's handlers interleave on that task (as
    /// async code does): CPU-heavy work belongs in `spawn_blocking`, or in several consumers.
    pub(crate) async fn run(
        self: Arc<Self>,
        service: HandlerService,
        stream: mqtransport_core::Subscription,
        stop: Stop,
    ) -> Result<()> {
        let mut stream = Some(stream);
        let mut idle: Vec<HandlerService> = Vec::with_capacity(self.concurrency);
        for _ in 1..self.concurrency {
            idle.push(service.clone());
        }
        idle.push(service);
        let mut running = FuturesUnordered::new();
        let mut asked = stop.clone();
        let stop_asked = stopped(&mut asked);
        tokio::pin!(stop_asked);
        let ended = loop {
            let next = tokio::select! {
                biased;
                () = &mut stop_asked => break Ok(()),
                Some(service) = running.next(), if !running.is_empty() => {
                    idle.push(service);
                    // Handlers that finished meanwhile give their slots back in the same turn.
                    while let Some(Some(service)) = running.next().now_or_never() {
                        idle.push(service);
                    }
                    continue;
                }
                next = next_delivery(&mut stream), if !idle.is_empty() => next,
            };
            // The first delivery, then those already waiting, while slots are free: one turn of
            // the select for a batch.
            let mut next = Some(next);
            let failed = loop {
                match next.take() {
                    Some(Some(Ok(delivery))) => {
                        if let Some(service) = idle.pop() {
                            running.push(self.handle(service, delivery));
                        }
                    }
                    Some(Some(Err(e))) => {
                        break Some(e.context(format_args!("consumer of queue '{}' failed", self.queue())));
                    }
                    Some(None) => break Some(Error::closed(format!("consumer of queue '{}' ended", self.queue()))),
                    None => break None,
                }
                if idle.is_empty() {
                    break None;
                }
                next = stream.as_mut().and_then(|s| s.next().now_or_never());
            };
            if let Some(e) = failed {
                break Err(e);
            }
        };
        // Stop taking deliveries; what was prefetched but not taken goes back to the queue.
        drop(stream);
        self.drain(&mut running, stop).await;
        ended
    }

    /// Handles one delivery with `service`, and gives the service back for the next.
    async fn handle(&self, mut service: HandlerService, delivery: Delivery) -> HandlerService {
        let _in_flight = InFlight::new(&self.tracker);
        #[cfg(feature = "metrics")]
        let _handling = crate::observe::Handling::new(self.in_flight_gauge.as_ref());
        self.process(&mut service, delivery).await;
        service
    }

    /// Lets the handlers in flight finish, until the stop's deadline (after a failure, first
    /// for a stop to be asked); then drops the rest: their deliveries go back to the queue.
    async fn drain<F: std::future::Future>(&self, running: &mut FuturesUnordered<F>, mut stop: Stop) {
        let finished = {
            let all = async { while running.next().await.is_some() {} };
            tokio::pin!(all);
            tokio::select! {
                () = &mut all => true,
                () = stopped(&mut stop) => {
                    let deadline = (*stop.borrow()).unwrap_or_else(Instant::now);
                    tokio::time::timeout_at(deadline, &mut all).await.is_ok()
                }
            }
        };
        if !finished {
            let left = running.len();
            tracing::warn!(
                queue = self.queue(),
                handlers = left,
                "shutdown deadline passed: cancelling {left} handler(s); their messages go back to the queue"
            );
            running.clear();
        }
    }

    async fn process(&self, service: &mut HandlerService, delivery: Delivery) {
        // Timed only for those who watch (metrics, on_settle hooks, TestApp).
        let started = (!self.observers.is_empty()).then(std::time::Instant::now);
        let delivery_tag = delivery.delivery_tag();
        let Delivery {
            envelope,
            exchange,
            routing_key,
            redelivered,
            mut acker,
            ..
        } = delivery;
        if self.acknowledge == Acknowledge::OnReceipt {
            report(acker.ack().await, "ack on receipt");
            acker = Acker::settled(delivery_tag);
        }
        let parts = Arc::new(DeliveryParts {
            envelope,
            queue: self.ctx.queue.clone(),
            exchange,
            routing_key,
            redelivered,
            delivery_tag,
            handler_started: std::sync::atomic::AtomicBool::new(false),
            process_span: std::sync::OnceLock::new(),
        });
        // A delivery the transport could not read as sent never reaches a handler: it goes to
        // the dead-letter queue with the reason, and the queue moves on.
        if let Some(why) = parts.envelope.header(headers::UNREADABLE) {
            let outcome = Outcome::dead_letter(format!("unreadable message: {}", why.display_value()));
            return self.settle(outcome, Handled { parts, acker, started }).await;
        }
        if let Some(deadline) = callers_deadline(&parts.envelope)
            && deadline < now_millis()
        {
            return Box::pin(self.skip_expired(Handled { parts, acker, started })).await;
        }
        let req = Incoming::new(Arc::clone(&parts), Arc::clone(&self.ctx));
        let run = async move {
            service.ready().await?;
            service.call(req).await
        };
        let outcome = match AssertUnwindSafe(run).catch_unwind().await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Outcome::from_error(&*e),
            Err(panic) => Outcome::retry(format!("the handler panicked: {}", panic_text(&*panic))),
        };
        self.settle(outcome, Handled { parts, acker, started }).await;
    }
}

/// Resolves once a stop is requested.
async fn stopped(stop: &mut Stop) {
    while stop.borrow_and_update().is_none() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The message of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// A request's deadline ([`headers::DEADLINE`], ms since the Unix epoch): when its caller
/// stops waiting.
fn callers_deadline(envelope: &Envelope) -> Option<i64> {
    envelope.header(headers::DEADLINE).and_then(FieldValue::as_i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payloads_become_text() {
        assert_eq!(panic_text(&"boom"), "boom");
        assert_eq!(panic_text(&String::from("bang")), "bang");
        assert_eq!(panic_text(&5u8), "(a panic without a message)");
    }
}
