//! A started app: [`Running`], which adds consumers, reports their state, and shuts down.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mqtransport_core::{DynTransport, Error, Result, Transport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::attach::{Attach, spawn_consumer};
use crate::consumer::Consumer;
use crate::consumer_status::ConsumerStatus;
use crate::declaration::declare;
use crate::observe::{BrokerHealth, ConsumerHealth, ConsumerState, Health};
use crate::publish::Publisher;
use crate::runtime::{ConsumerRuntime, Tracker};

/// A started [`App`](crate::App).
pub struct Running {
    inner: Option<RunningInner>,
}

/// What a running app holds: its consumers' runtimes and tasks, and how to stop them.
pub(crate) struct RunningInner {
    pub(crate) transport: DynTransport,
    pub(crate) publisher: Publisher,
    pub(crate) runtimes: Vec<Arc<ConsumerRuntime>>,
    pub(crate) tasks: Vec<JoinHandle<Result<()>>>,
    pub(crate) stop: watch::Sender<Option<Instant>>,
    pub(crate) failed: mpsc::UnboundedReceiver<Error>,
    /// The sending side of `failed`, for consumers added later.
    pub(crate) report_failure: mpsc::UnboundedSender<Error>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) tracker: Arc<Tracker>,
    /// The app's `Attach<S>`, for consumers added later.
    pub(crate) attach: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

impl Running {
    pub(crate) fn new(inner: RunningInner) -> Self {
        Running { inner: Some(inner) }
    }

    fn inner(&self) -> &RunningInner {
        // `inner` is only taken by `shutdown`, which consumes `self`.
        self.inner
            .as_ref()
            .unwrap_or_else(|| unreachable!("Running used after shutdown"))
    }

    /// Publishes typed or raw messages.
    pub fn publisher(&self) -> Publisher {
        self.inner().publisher.clone()
    }

    /// Deliveries being handled right now, over every consumer.
    pub fn in_flight(&self) -> usize {
        self.inner()
            .tracker
            .in_flight
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Adds a consumer to the running app: it is checked and declared as `build()` does its
    /// consumers (its queue, its subscription, its dead-letter queue), then starts at once,
    /// with the app's state, middleware and tracing. `S` must be the app's state type.
    ///
    /// ```
    /// # use mqtransport::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(name = "reports.requested")]
    /// struct ReportRequested { id: u64 }
    ///
    /// async fn report(r: ReportRequested) {}
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mqtransport::Result<()> {
    /// let app = App::builder().url("memory://docs-add-consumer").build().await?;
    /// let mut running = app.start().await?;
    /// // Later, say once a feature flag is on (`()`: the app's state type, here none):
    /// running
    ///     .add_consumer(Consumer::<()>::for_queue(Queue::durable("reports")).handle(report))
    ///     .await?;
    /// assert_eq!(running.consumers()[0].queue, "reports");
    /// # running.shutdown().await
    /// # }
    /// ```
    pub async fn add_consumer<S: Clone + Send + Sync + 'static>(&mut self, consumer: Consumer<S>) -> Result<()> {
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| Error::closed("the app was shut down"))?;
        let Some(attach) = inner.attach.downcast_ref::<Attach<S>>() else {
            return Err(Error::invalid(format!(
                "the consumer of queue '{}' needs app state of type {}, which is not this app's",
                consumer.queue,
                std::any::type_name::<S>()
            )));
        };
        let mut problems = consumer.problems_on_its_own();
        if consumer.subscription.is_none() && inner.runtimes.iter().any(|rt| rt.queue() == consumer.queue) {
            problems.push(format!(
                "queue '{}' already has a consumer in this app: register every handler on one consumer",
                consumer.queue
            ));
        }
        if !problems.is_empty() {
            return Err(Error::invalid(format!(
                "the consumer is misconfigured: {}",
                problems.join("; ")
            )));
        }
        let mut consumers = [consumer];
        declare(
            &attach.transport,
            &attach.redacted_url,
            &attach.topology,
            &mut consumers,
        )
        .await?;
        let [consumer] = consumers;
        let (runtime, service) = attach.runtime(&consumer);
        let stream = runtime.subscribe().await?;
        let task = spawn_consumer(
            Arc::clone(&runtime),
            service,
            stream,
            inner.stop.subscribe(),
            inner.report_failure.clone(),
        );
        inner.runtimes.push(runtime);
        inner.tasks.push(task);
        Ok(())
    }

    /// Each consumer's state, in the order they were added.
    pub fn consumers(&self) -> Vec<ConsumerStatus> {
        self.inner()
            .runtimes
            .iter()
            .map(|rt| rt.settle_health.status(rt.queue()))
            .collect()
    }

    /// The app's health: whether the broker answers a ping (within
    /// [`HEALTH_PING_TIMEOUT`](crate::HEALTH_PING_TIMEOUT)), each consumer running, recovering
    /// (the broker does not answer; the transport resumes it when it does) or stopped with why,
    /// and the publishes awaiting the broker. For liveness and readiness probes.
    ///
    /// ```
    /// # use mqtransport::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mqtransport::Result<()> {
    /// let running = App::builder()
    ///     .url("memory://docs-health")
    ///     .consumer(Consumer::for_queue(Queue::durable("jobs")).fallback(|_: String| async {}))
    ///     .build()
    ///     .await?
    ///     .start()
    ///     .await?;
    /// let health = running.health().await;
    /// assert!(health.is_live() && health.is_ready());
    /// # running.shutdown().await
    /// # }
    /// ```
    pub async fn health(&self) -> Health {
        let inner = self.inner();
        let started = std::time::Instant::now();
        let pinged = tokio::time::timeout(crate::HEALTH_PING_TIMEOUT, inner.transport.ping()).await;
        let error = match pinged {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {:?}", crate::HEALTH_PING_TIMEOUT)),
        };
        let reachable = error.is_none();
        let consumers = inner
            .runtimes
            .iter()
            .map(|rt| {
                let ended = rt
                    .ended
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let state = match ended {
                    Some(reason) => ConsumerState::Stopped { reason },
                    None if reachable => ConsumerState::Running,
                    None => ConsumerState::Recovering,
                };
                ConsumerHealth {
                    queue: rt.queue().to_owned(),
                    state,
                    status: rt.settle_health.status(rt.queue()),
                }
            })
            .collect();
        Health {
            broker: BrokerHealth {
                reachable,
                error,
                ping: started.elapsed(),
                connection: inner.transport.connection_state(),
            },
            consumers,
            unconfirmed: inner.publisher.unconfirmed(),
        }
    }

    /// The queues consumed, with the delay's wait queues (where retries wait).
    #[cfg(feature = "memory")]
    pub(crate) fn watched_queues(&self) -> Vec<String> {
        let inner = self.inner();
        let consumed = inner.runtimes.iter().map(|rt| rt.queue().to_owned());
        let waiting = inner.publisher.delay_topology().queues.into_iter().map(|q| q.name);
        consumed.chain(waiting).collect()
    }

    /// Waits until `signal` completes or a consumer fails, then shuts down gracefully.
    pub async fn run_until(mut self, signal: impl Future<Output = ()> + Send) -> Result<()> {
        let failure = {
            let Some(inner) = self.inner.as_mut() else {
                return Ok(());
            };
            tokio::select! {
                _ = signal => None,
                e = inner.failed.recv() => e,
            }
        };
        let shut = self.shutdown().await;
        match failure {
            Some(e) => Err(e),
            None => shut,
        }
    }

    /// Shuts down gracefully: consumers stop taking deliveries (prefetched ones go back to the
    /// queue), in-flight handlers get the shutdown timeout to finish and are settled, the rest
    /// are cancelled (their messages go back to the queue), and the connection closes.
    pub async fn shutdown(mut self) -> Result<()> {
        let Some(inner) = self.inner.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + inner.shutdown_timeout;
        let _ = inner.stop.send(Some(deadline));
        let mut first_error = None;
        for task in inner.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(join) => {
                    first_error.get_or_insert_with(|| Error::closed(format!("a consumer task failed: {join}")));
                }
            }
        }
        for rt in inner.runtimes.iter().filter(|rt| rt.owns_queue) {
            if let Err(e) = inner.transport.delete_queue(rt.queue(), Default::default()).await {
                tracing::info!(queue = rt.queue(), "could not delete the subscription's queue: {e}");
            }
        }
        inner.publisher.inner.replies.close().await;
        let closed = inner.transport.close().await;
        match first_error {
            Some(e) => Err(e),
            None => closed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropped without `shutdown`: stop the consumers (their deliveries go back to the queue).
        if let Some(inner) = &self.inner {
            let _ = inner.stop.send(Some(Instant::now()));
        }
    }
}
