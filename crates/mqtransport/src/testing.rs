//! Testing an app without a server: [`TestApp`] runs the real [`App`](crate::App) on a
//! private embedded broker and records what happened to every delivery and what the handlers
//! published.
//!
//! ```
//! use mqtransport::prelude::*;
//! use mqtransport::testing::TestApp;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(name = "orders.created")]
//! struct OrderCreated {
//!     id: u64,
//! }
//!
//! async fn on_created(order: OrderCreated) -> Result<(), HandlerError> {
//!     if order.id == 0 {
//!         return Err(HandlerError::permanent("order id 0"));
//!     }
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> mqtransport::Result<()> {
//! let app = TestApp::start(
//!     App::builder().consumer(Consumer::for_queue(Queue::durable("orders")).handle(on_created)),
//! )
//! .await?;
//! app.publish(&Route::queue("orders"), &OrderCreated { id: 7 }).await?;
//! app.publish(&Route::queue("orders"), &OrderCreated { id: 0 }).await?;
//! app.wait_idle().await?;
//!
//! assert_eq!(app.acked().len(), 1);
//! let dead = app.dead_lettered();
//! assert_eq!(dead.len(), 1);
//! assert!(dead[0].reason().unwrap_or_default().contains("order id 0"));
//! app.shutdown().await
//! # }
//! ```
//!
//! Run such tests on tokio's paused clock (`#[tokio::test(start_paused = true)]`): retry
//! delays then pass at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mqtransport_core::{Confirmation, DynTransport, Envelope, Error, ErrorKind, Publish, Result, Transport};
use mqtransport_memory::MemoryBroker;

use crate::app::AppBuilder;
use crate::message::{DecodeError, Message, decode};
use crate::publish::{PublishObserver, Publisher, PublisherInner, Route};
use crate::running::Running;
pub use crate::settled::Disposition;
use crate::settled::SettleObserver;

/// How long [`TestApp::wait_idle`] waits, in tokio time.
pub const IDLE_DEADLINE: Duration = Duration::from_secs(600);

/// What happened to one delivery.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The queue it was consumed from.
    pub queue: String,
    /// The message as delivered.
    pub envelope: Envelope,
    /// What the runtime did.
    pub disposition: Disposition,
}

impl Settled {
    /// The message name.
    pub fn name(&self) -> Option<&str> {
        self.envelope.properties().kind.as_deref()
    }

    /// Why it was retried or dead-lettered.
    pub fn reason(&self) -> Option<&str> {
        match &self.disposition {
            Disposition::Retried { reason, .. }
            | Disposition::DeadLettered { reason, .. }
            | Disposition::Returned { reason }
            | Disposition::Dropped { reason } => Some(reason),
            _ => None,
        }
    }

    /// The message decoded as `M`.
    pub fn decode<M: Message>(&self) -> std::result::Result<M, DecodeError> {
        decode(&self.envelope)
    }
}

/// A message the app published (from a handler, or through [`App::publisher`](crate::App::publisher)).
#[derive(Debug, Clone)]
pub struct Published {
    /// The exchange.
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The message.
    pub envelope: Envelope,
    /// The broker's answer (`None` if the publish failed).
    pub confirmation: Option<Confirmation>,
}

impl Published {
    /// The message name.
    pub fn name(&self) -> Option<&str> {
        self.envelope.properties().kind.as_deref()
    }

    /// The message decoded as `M`.
    pub fn decode<M: Message>(&self) -> std::result::Result<M, DecodeError> {
        decode(&self.envelope)
    }
}

#[derive(Default)]
struct Recorder {
    settled: Mutex<Vec<Settled>>,
    published: Mutex<Vec<Published>>,
}

impl SettleObserver for Recorder {
    fn settled(&self, queue: &str, envelope: &Envelope, disposition: &Disposition, _elapsed: std::time::Duration) {
        self.settled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Settled {
                queue: queue.to_owned(),
                envelope: envelope.clone(),
                disposition: disposition.clone(),
            });
    }
}

impl PublishObserver for Recorder {
    fn published(&self, publish: &Publish, result: &Result<Confirmation>, _elapsed: std::time::Duration) {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Published {
                exchange: publish.exchange.to_string(),
                routing_key: publish.routing_key.to_string(),
                envelope: publish.envelope.clone(),
                confirmation: result.as_ref().ok().cloned(),
            });
    }
}

/// The real app on a private embedded broker, recording every settled delivery and every
/// message the app published. See the [module docs](self).
pub struct TestApp {
    broker: MemoryBroker,
    running: Running,
    /// The test's own connection and publisher: what it publishes is not recorded.
    conn: DynTransport,
    input: Publisher,
    recorder: Arc<Recorder>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl TestApp {
    /// Builds `app` on a new private embedded broker (whatever URL it was given) and starts it.
    pub async fn start<S: Clone + Send + Sync + 'static>(app: AppBuilder<S>) -> Result<TestApp> {
        TestApp::start_on(MemoryBroker::new(), app).await
    }

    /// Builds `app` on `broker` and starts it.
    pub async fn start_on<S: Clone + Send + Sync + 'static>(
        broker: MemoryBroker,
        app: AppBuilder<S>,
    ) -> Result<TestApp> {
        let recorder = Arc::new(Recorder::default());
        let mut app = app.transport(DynTransport::new(broker.connect()));
        app.publish_observers
            .push(Arc::clone(&recorder) as Arc<dyn PublishObserver>);
        app.settle_observers
            .push(Arc::clone(&recorder) as Arc<dyn SettleObserver>);
        let running = app.build().await?.start().await?;
        let conn = DynTransport::new(broker.connect());
        let input = Publisher::new(PublisherInner {
            system: "memory",
            replies: crate::rpc::Replies::new(conn.clone()),
            transport: conn.clone(),
            app_id: Some("mqtransport-testing".into()),
            validate: false,
            observers: Vec::new(),
            unconfirmed: Default::default(),
            runtime: None,
            sends: Default::default(),
            delays: crate::delay::Delays::new(crate::delay::DEFAULT_PREFIX),
        });
        Ok(TestApp {
            broker,
            running,
            conn,
            input,
            recorder,
        })
    }

    /// The embedded broker.
    pub fn broker(&self) -> &MemoryBroker {
        &self.broker
    }

    /// A connection of the test's own, to inspect queues or publish raw messages.
    pub fn transport(&self) -> &DynTransport {
        &self.conn
    }

    /// The app's publisher (what it publishes is recorded).
    pub fn app_publisher(&self) -> Publisher {
        self.running.publisher()
    }

    /// Publishes `message` to `route` as the test's input (not recorded); fails unless the
    /// broker confirms it. The message is not validated, so tests can send invalid ones.
    pub async fn publish<M: Message>(&self, route: &Route, message: &M) -> Result<()> {
        self.input.send(route, message).await
    }

    /// Publishes a raw message as the test's input, e.g. a malformed body.
    pub async fn publish_envelope(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: Envelope,
    ) -> Result<Confirmation> {
        self.conn.publish(Publish::new(exchange, routing_key, envelope)).await
    }

    /// Waits until the app is idle: no handler running, and no message ready or unacked in any
    /// queue the app consumes or in its retry wait queues. Fails after [`IDLE_DEADLINE`] of
    /// tokio time.
    pub async fn wait_idle(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + IDLE_DEADLINE;
        let mut quiet = 0;
        loop {
            if self.is_idle() {
                quiet += 1;
                // Idle twice in a row, with the runtime given a turn in between.
                if quiet == 2 {
                    return Ok(());
                }
                tokio::task::yield_now().await;
                continue;
            }
            quiet = 0;
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the app was not idle after {IDLE_DEADLINE:?}: {} handler(s) running; queues {:?}",
                        self.running.in_flight(),
                        self.busy_queues()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn busy_queues(&self) -> Vec<(String, usize, usize)> {
        self.running
            .watched_queues()
            .into_iter()
            .filter_map(|q| {
                let s = self.broker.queue_stats(&q)?;
                (s.ready + s.unacked > 0).then_some((q, s.ready, s.unacked))
            })
            .collect()
    }

    fn is_idle(&self) -> bool {
        self.running.in_flight() == 0 && self.busy_queues().is_empty()
    }

    /// Every settled delivery, in order.
    pub fn settled(&self) -> Vec<Settled> {
        self.recorder
            .settled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn settled_where(&self, keep: impl Fn(&Disposition) -> bool) -> Vec<Settled> {
        self.settled().into_iter().filter(|s| keep(&s.disposition)).collect()
    }

    /// Deliveries acknowledged.
    pub fn acked(&self) -> Vec<Settled> {
        self.settled_where(|s| matches!(s, Disposition::Acked))
    }

    /// Deliveries retried (each failed attempt once).
    pub fn retried(&self) -> Vec<Settled> {
        self.settled_where(|s| matches!(s, Disposition::Retried { .. }))
    }

    /// Deliveries dead-lettered.
    pub fn dead_lettered(&self) -> Vec<Settled> {
        self.settled_where(|s| matches!(s, Disposition::DeadLettered { .. }))
    }

    /// Deliveries requeued.
    pub fn requeued(&self) -> Vec<Settled> {
        self.settled_where(|s| matches!(s, Disposition::Requeued | Disposition::Returned { .. }))
    }

    /// Messages the app published, in order.
    pub fn published(&self) -> Vec<Published> {
        self.recorder
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes every message waiting in `queue` (e.g. a dead-letter queue), in order.
    pub async fn drain(&self, queue: &str) -> Result<Vec<Envelope>> {
        let mut out = Vec::new();
        while let Some(d) = self.conn.get(queue, true).await? {
            out.push(d.envelope);
        }
        Ok(out)
    }

    /// Shuts the app down gracefully.
    pub async fn shutdown(self) -> Result<()> {
        let result = self.running.shutdown().await;
        let _ = self.conn.close().await;
        result
    }
}
