//! Turning a [`Consumer`] into a consumer that runs: its runtime and its middleware stack,
//! when the app is built and when a running app adds one
//! ([`Running::add_consumer`](crate::Running::add_consumer)).

use std::sync::Arc;

use mqtransport_core::{DynTransport, Error, Result, ShortStr, Subscription, Topology, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::consumer::{Consumer, DeadLetterPolicy, HandlerService, LayerFn, layer_fn};
use crate::consumer_status::SettleHealth;
use crate::declaration::dead_letter_queue;
use crate::delivery::ConsumerCtx;
use crate::middleware::TraceLayer;
use crate::publish::Publisher;
use crate::runtime::{ConsumerRuntime, DeadLetterTarget, Stop, Tracker};
use crate::settled::SettleObserver;

/// What an app of state `S` needs to run a consumer, kept for the app's lifetime.
pub(crate) struct Attach<S> {
    pub(crate) state: S,
    pub(crate) layers: Vec<LayerFn>,
    pub(crate) tracing: bool,
    #[cfg(feature = "opentelemetry")]
    pub(crate) trace_parent: crate::TraceParent,
    pub(crate) topology: Topology,
    pub(crate) transport: DynTransport,
    pub(crate) redacted_url: String,
    pub(crate) publisher: Publisher,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) observers: Vec<Arc<dyn SettleObserver>>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<Arc<crate::observe::Metrics>>,
}

impl<S: Clone + Send + Sync + 'static> Attach<S> {
    /// The runtime of `c` (whose queue is declared and named) and its stack: the dispatch by
    /// name, the consumer's layers, the app's layers, then the trace span outermost.
    pub(crate) fn runtime(&self, c: &Consumer<S>) -> (Arc<ConsumerRuntime>, HandlerService) {
        let mut service = c.service(self.state.clone());
        for layer in &self.layers {
            service = layer(service);
        }
        if self.tracing {
            let trace = TraceLayer::new();
            #[cfg(feature = "opentelemetry")]
            let trace = trace.trace_parent(self.trace_parent);
            service = layer_fn(trace)(service);
        }
        let capabilities = self.transport.capabilities();
        let runtime = Arc::new(ConsumerRuntime {
            owns_queue: c.subscription.is_some() && !capabilities.exclusive_queues,
            ctx: Arc::new(ConsumerCtx {
                queue: ShortStr::from(c.queue.as_str()),
                system: capabilities.system,
                publisher: self.publisher.clone(),
            }),
            prefetch: c.prefetch,
            concurrency: c.concurrency,
            retry: c.retry,
            acknowledge: c.acknowledge,
            dead_letter: match &c.dead_letter {
                DeadLetterPolicy::Queue(name) => DeadLetterTarget::Queue {
                    name: ShortStr::from(name.as_str()),
                    declaration: dead_letter_queue(name, c, &self.topology),
                },
                DeadLetterPolicy::Broker => DeadLetterTarget::Broker,
            },
            transport: self.transport.clone(),
            tracker: Arc::clone(&self.tracker),
            observers: self.observers.clone(),
            settle_health: SettleHealth::default(),
            ended: std::sync::Mutex::new(None),
            #[cfg(feature = "metrics")]
            in_flight_gauge: self.metrics.as_ref().map(|m| m.in_flight(&c.queue)),
        });
        (runtime, service)
    }
}

/// Runs a subscribed consumer on a task of its own until `stop`; a failure is also reported
/// on `failed`, which ends the app's `run`.
pub(crate) fn spawn_consumer(
    runtime: Arc<ConsumerRuntime>,
    service: HandlerService,
    stream: Subscription,
    stop: Stop,
    failed: mpsc::UnboundedSender<Error>,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let result = Arc::clone(&runtime).run(service, stream, stop).await;
        let reason = match &result {
            Ok(()) => "the app stopped it".to_owned(),
            Err(e) => e.to_string(),
        };
        *runtime.ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
        if let Err(e) = &result {
            let _ = failed.send(Error::new(e.kind(), e.message()));
        }
        result
    })
}
