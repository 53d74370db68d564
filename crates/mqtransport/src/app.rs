//! The [`App`]: broker connection, topology, shared state, consumers, producers, start and
//! graceful shutdown.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mqtransport_core::{BrokerUrl, DynTransport, Error, Result, Topology, Transport};
use tokio::sync::{mpsc, watch};
use tower::{Layer, Service};

use crate::attach::{Attach, spawn_consumer};
use crate::consumer::{Consumer, HandlerService, LayerFn, layer_fn};
use crate::declaration::{Existing, declare};
use crate::delivery::Incoming;
use crate::message::Message;
use crate::outcome::{BoxError, Outcome};
use crate::producer::Producer;
use crate::publish::{PublishObserver, Publisher, PublisherInner, Route};
use crate::running::{Running, RunningInner};
use crate::runtime::{ConsumerRuntime, Tracker};
use crate::settled::{OnSettle, SettleObserver, SettledDelivery};

/// How long [`Running::shutdown`] lets in-flight handlers finish by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// An application: one broker connection, its topology, consumers with their handlers and
/// middleware, and a [`Publisher`]. Build it with [`App::builder`] (no shared state) or
/// [`App::with_state`], then [`run`](App::run) it.
///
/// ```
/// use mqtransport::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "greeting")]
/// struct Greeting {
///     text: String,
/// }
///
/// #[derive(Clone)]
/// struct Config {
///     loud: bool,
/// }
///
/// async fn greet(greeting: Greeting, State(config): State<Config>) {
///     if config.loud {
///         println!("{}!", greeting.text.to_uppercase());
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mqtransport::Result<()> {
/// let app = App::with_state(Config { loud: true })
///     .url("memory://docs-app") // default: $MQT_URL, else memory://
///     .consumer(Consumer::for_queue(Queue::durable("greetings")).handle(greet))
///     .build() // connects, pings, declares
///     .await?;
/// let greetings = app.producer::<Greeting>(Route::queue("greetings"));
/// let running = app.start().await?;
/// greetings.send(&Greeting { text: "hello".into() }).await?;
/// running.shutdown().await?; // stops consuming, lets in-flight handlers finish, closes
/// # Ok(())
/// # }
/// ```
pub struct App {
    transport: DynTransport,
    redacted_url: String,
    publisher: Publisher,
    runtimes: Vec<Arc<ConsumerRuntime>>,
    /// Each runtime's middleware stack. Only `start` uses them, consuming the app; the mutex
    /// makes the app `Sync` although a boxed stack is only `Send`.
    services: Mutex<Vec<HandlerService>>,
    shutdown_timeout: Duration,
    tracker: Arc<Tracker>,
    /// What `build` found risky but not wrong (also logged as warnings).
    warnings: Vec<String>,
    /// An `Attach<S>` of the app's state type, for consumers added while it runs.
    attach: Arc<dyn Any + Send + Sync>,
    /// The app's metrics, when it records them: `start` samples the gauges.
    #[cfg(feature = "metrics")]
    metrics: Option<Arc<crate::observe::Metrics>>,
    /// What the AsyncAPI document says: the app's name, its topology and its consumers.
    title: String,
    topology: Topology,
    receives: Vec<crate::asyncapi::ReceiveDoc>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("broker", &self.redacted_url)
            .field("queues", &self.runtimes.iter().map(|r| r.queue()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl App {
    /// An app without shared state.
    pub fn builder() -> AppBuilder<()> {
        AppBuilder::new(StateInit::Ready(()))
    }

    /// An app whose handlers share `state` (taken by [`State<T>`](crate::State) arguments).
    pub fn with_state<S: Clone + Send + Sync + 'static>(state: S) -> AppBuilder<S> {
        AppBuilder::new(StateInit::Ready(state))
    }

    /// An app whose state is made when the app is built, from its [`Publisher`]: for state
    /// that holds the app's own producers or requesters, which exist only once it is
    /// connected.
    ///
    /// ```
    /// # use mqtransport::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(name = "orders.created")]
    /// struct OrderCreated { id: u64 }
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(name = "invoices.requested")]
    /// struct InvoiceRequested { order: u64 }
    ///
    /// #[derive(Clone)]
    /// struct Services {
    ///     invoices: Producer<InvoiceRequested>,
    /// }
    ///
    /// async fn created(order: OrderCreated, State(s): State<Services>) -> Result<(), HandlerError> {
    ///     s.invoices.send(&InvoiceRequested { order: order.id }).await.map_err(HandlerError::transient)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mqtransport::Result<()> {
    /// let app = App::with_state_from(|publisher| Services {
    ///     invoices: publisher.producer(Route::queue("invoices")),
    /// })
    /// .url("memory://docs-state-from")
    /// .topology(Topology::new().queue(Queue::durable("invoices")))
    /// .consumer(Consumer::for_queue(Queue::durable("orders")).handle(created))
    /// .build()
    /// .await?;
    /// # let _ = app;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_state_from<S, F>(make: F) -> AppBuilder<S>
    where
        S: Clone + Send + Sync + 'static,
        F: FnOnce(&Publisher) -> S + Send + 'static,
    {
        AppBuilder::new(StateInit::FromPublisher(Box::new(make)))
    }

    /// Publishes typed or raw messages.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// A typed producer of `M` bound to `route`.
    pub fn producer<M: Message>(&self, route: Route) -> Producer<M> {
        self.publisher.producer(route)
    }

    /// A producer of plain text or bytes for `route` (see [`PlainProducer`](crate::PlainProducer)).
    pub fn plain_producer(&self, route: Route) -> crate::PlainProducer {
        self.publisher.plain_producer(route)
    }

    /// What [`build`](AppBuilder::build) found risky but not wrong, each also logged as a
    /// warning: e.g. a consumer whose deliveries could stay unacknowledged past the broker's
    /// consumer timeout (see [`Consumer::timeout`]). Empty on the embedded broker, which has no
    /// such timeout.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A typed request/reply client: [`request`](crate::Requester::request) sends a `Req` to
    /// `route` and waits for the `Resp` its responder replies with (over direct reply-to), or a
    /// typed [`RpcError`](crate::RpcError). All requesters of the app share one reply
    /// consumer, started by the first request.
    pub fn requester<Req: Message, Resp: Message>(&self, route: Route) -> crate::Requester<Req, Resp> {
        self.publisher.requester(route)
    }

    /// A request/reply client for raw envelopes, for interoperating with services that do not
    /// speak typed messages (see [`RawRequester`](crate::RawRequester)).
    pub fn raw_requester(&self, route: Route) -> crate::RawRequester {
        self.publisher.raw_requester(route)
    }

    /// The dead letters in `queue` (e.g. `orders.dlq`): list, summarise, replay, purge. They
    /// stay reachable after the app stops through [`DeadLetters::new`](crate::DeadLetters::new)
    /// over any connection.
    pub fn dead_letters(&self, queue: impl Into<String>) -> crate::DeadLetters {
        crate::DeadLetters::new(self.transport.clone(), queue)
    }

    /// The app's AsyncAPI 3.0 document (JSON): a channel per queue it consumes or sends to
    /// and per exchange it declares or sends to; a `receive` operation per consumer; a `send`
    /// operation per producer and requester made so far (with a requester's reply); each
    /// message with its content type and, for a type that also derives
    /// `schemars::JsonSchema` (feature `asyncapi`), its JSON Schema.
    ///
    /// An app writes it as it starts when the environment variable [`ASYNCAPI_ENV`]
    /// (`MQT_ASYNCAPI`) names a file: `MQT_ASYNCAPI=asyncapi.json cargo run`, then
    /// `mqt docs serve asyncapi.json`.
    ///
    /// [`ASYNCAPI_ENV`]: crate::ASYNCAPI_ENV
    ///
    /// ```
    /// # use mqtransport::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(name = "shop.order")]
    /// struct Order { id: u64 }
    /// async fn take(_: Order) {}
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let app = App::builder()
    ///     .url("memory://asyncapi-doc")
    ///     .consumer(Consumer::for_queue(Queue::durable("orders")).handle(take))
    ///     .build()
    ///     .await?;
    /// let doc = app.asyncapi();
    /// assert_eq!(doc["asyncapi"], "3.0.0");
    /// assert_eq!(doc["operations"]["receive_queue_orders"]["action"], "receive");
    /// assert!(doc["components"]["messages"]["shop.order"].is_object());
    /// # Ok(())
    /// # }
    /// ```
    pub fn asyncapi(&self) -> serde_json::Value {
        let url = (self.redacted_url != GIVEN_TRANSPORT).then_some(self.redacted_url.as_str());
        crate::asyncapi::document(&crate::asyncapi::AppDoc {
            title: &self.title,
            url,
            system: self.transport.capabilities().system,
            topology: &self.topology,
            receives: &self.receives,
            sends: &self.publisher.inner.sends.all(),
        })
    }

    /// The broker connection.
    pub fn transport(&self) -> &DynTransport {
        &self.transport
    }

    /// Checks that the broker answers.
    pub async fn ping(&self) -> Result<()> {
        self.transport.ping().await
    }

    /// Starts every consumer and returns at once; the app runs until
    /// [`Running::shutdown`]. A consumer that cannot start (its queue is missing, or locked by
    /// an exclusive consumer) fails the start, and nothing keeps running.
    pub async fn start(self) -> Result<Running> {
        if let Some(path) = std::env::var_os(crate::ASYNCAPI_ENV) {
            let path = std::path::PathBuf::from(path);
            let text = serde_json::to_string_pretty(&self.asyncapi()).map_err(|e| Error::invalid(e.to_string()))?;
            std::fs::write(&path, text).map_err(|e| {
                Error::invalid(format!(
                    "cannot write the AsyncAPI document to '{}' ({} is set): {e}",
                    path.display(),
                    crate::ASYNCAPI_ENV
                ))
            })?;
            tracing::info!(path = %path.display(), "wrote the app's AsyncAPI document");
        }
        let (stop_tx, stop_rx) = watch::channel(None);
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let services = self.services.into_inner().unwrap_or_else(PoisonError::into_inner);
        let mut subscribed = Vec::with_capacity(self.runtimes.len());
        for (rt, service) in self.runtimes.iter().zip(services) {
            match rt.subscribe().await {
                Ok(stream) => subscribed.push((Arc::clone(rt), service, stream)),
                Err(e) => {
                    drop(subscribed);
                    let _ = self.transport.close().await;
                    return Err(e);
                }
            }
        }
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.sample(self.publisher.clone(), self.transport.clone(), stop_rx.clone());
        }
        let tasks = subscribed
            .into_iter()
            .map(|(rt, service, stream)| spawn_consumer(rt, service, stream, stop_rx.clone(), failed_tx.clone()))
            .collect();
        Ok(Running::new(RunningInner {
            transport: self.transport,
            publisher: self.publisher,
            runtimes: self.runtimes,
            tasks,
            stop: stop_tx,
            failed: failed_rx,
            report_failure: failed_tx,
            shutdown_timeout: self.shutdown_timeout,
            tracker: self.tracker,
            attach: self.attach,
        }))
    }

    /// Runs until ctrl-c or SIGTERM, then shuts down gracefully. Returns the error of a
    /// consumer that failed (e.g. its queue was deleted), after shutting down the rest.
    pub async fn run(self) -> Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send) -> Result<()> {
        let running = self.start().await?;
        running.run_until(signal).await
    }
}

/// Resolves at ctrl-c or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Builds an [`App`]. Made by [`App::builder`] or [`App::with_state`].
#[must_use = "an AppBuilder does nothing until .build().await"]
pub struct AppBuilder<S = ()> {
    state: StateInit<S>,
    url: Option<String>,
    transport: Option<DynTransport>,
    topology: Topology,
    consumers: Vec<Consumer<S>>,
    layers: Vec<LayerFn>,
    shutdown_timeout: Duration,
    name: Option<String>,
    validate_on_publish: bool,
    tracing: bool,
    delay_prefix: String,
    #[cfg(feature = "metrics")]
    metrics: bool,
    #[cfg(feature = "opentelemetry")]
    pub(crate) trace_parent: crate::TraceParent,
    /// Exchanges and queues the app uses without declaring them.
    existing: Existing,
    pub(crate) publish_observers: Vec<Arc<dyn PublishObserver>>,
    pub(crate) settle_observers: Vec<Arc<dyn SettleObserver>>,
}

impl<S> fmt::Debug for AppBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppBuilder")
            .field("url", &self.url.as_deref().map(redact))
            .field("topology", &self.topology)
            .field("consumers", &self.consumers)
            .finish_non_exhaustive()
    }
}

/// What an app's errors call a transport given as a value (it has no URL).
const GIVEN_TRANSPORT: &str = "the given transport";

fn redact(url: &str) -> String {
    BrokerUrl::parse(url).map_or_else(|_| "(an invalid URL)".to_owned(), |u| u.to_string())
}

/// An app's state, or how to make it once the app's publisher exists.
enum StateInit<S> {
    Ready(S),
    FromPublisher(Box<dyn FnOnce(&Publisher) -> S + Send>),
}

impl<S: Clone + Send + Sync + 'static> AppBuilder<S> {
    fn new(state: StateInit<S>) -> Self {
        AppBuilder {
            state,
            url: None,
            transport: None,
            topology: Topology::new(),
            consumers: Vec::new(),
            layers: Vec::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            name: None,
            validate_on_publish: cfg!(debug_assertions),
            tracing: true,
            delay_prefix: crate::delay::DEFAULT_PREFIX.to_owned(),
            #[cfg(feature = "metrics")]
            metrics: true,
            #[cfg(feature = "opentelemetry")]
            trace_parent: crate::TraceParent::default(),
            existing: Existing::default(),
            publish_observers: Vec::new(),
            settle_observers: Vec::new(),
        }
    }

    /// The broker URL (`memory://…`, `amqp://…`). Default: the `MQT_URL` environment
    /// variable, else `memory://`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Uses an open connection instead of a URL (e.g. to a [`MemoryBroker`](crate::MemoryBroker)
    /// shared with a test). The app closes it at shutdown.
    pub fn transport(mut self, transport: DynTransport) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Adds to the topology declared at build time (and re-declared by the RabbitMQ transport
    /// after every reconnect).
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = std::mem::take(&mut self.topology).merge(topology);
        self
    }

    /// The app uses exchange `name`, which another service declares: `build()` checks that it
    /// exists (a passive declare) and never declares it, so its settings are the owner's
    /// business. Bindings of the app's topology may name it.
    pub fn existing_exchange(mut self, name: impl Into<String>) -> Self {
        self.existing.exchanges.push(name.into());
        self
    }

    /// The app uses queue `name`, which another service declares: `build()` checks that it
    /// exists and never declares it. (A consumer made with [`Consumer::new`] already consumes
    /// a queue without declaring it; this is for queues the app only publishes to or binds.)
    pub fn existing_queue(mut self, name: impl Into<String>) -> Self {
        self.existing.queues.push(name.into());
        self
    }

    /// Adds a consumer.
    pub fn consumer(mut self, consumer: Consumer<S>) -> Self {
        self.consumers.push(consumer);
        self
    }

    /// Wraps every consumer's stack in a tower layer (outside the consumers' own layers); see
    /// [`Consumer::layer`].
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

    /// How long in-flight handlers may run on at shutdown (30 s by default).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The application's name, sent as `app_id` on everything it publishes.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether producers validate messages before publishing (default: in debug builds).
    /// Consumers always validate.
    pub fn validate_on_publish(mut self, validate: bool) -> Self {
        self.validate_on_publish = validate;
        self
    }

    /// Calls `hook` after every delivery is settled, with what was done (for metrics, audit
    /// logs, tests). It runs on the handler's task: keep it quick.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use mqtransport::{App, Disposition};
    ///
    /// let dead = Arc::new(AtomicUsize::new(0));
    /// let counter = Arc::clone(&dead);
    /// let builder = App::builder().on_settle(move |event| {
    ///     if matches!(event.disposition, Disposition::DeadLettered { .. }) {
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// });
    /// # let _ = builder;
    /// ```
    pub fn on_settle<F>(mut self, hook: F) -> Self
    where
        F: Fn(SettledDelivery<'_>) + Send + Sync + 'static,
    {
        self.settle_observers.push(Arc::new(OnSettle(hook)));
        self
    }

    /// Whether the app records metrics (feature `metrics`; on by default): through the
    /// `metrics` facade, to whatever recorder the application installed (e.g.
    /// `metrics-exporter-prometheus`; the `operations` example serves them), named after the
    /// OpenTelemetry messaging metrics:
    ///
    /// | metric | kind | labels |
    /// |---|---|---|
    /// | `messaging.client.sent.messages` | counter | `messaging.system`, `messaging.destination.name` (the exchange, or the queue for the default exchange), `message`, `outcome` (`confirmed`, `returned`, `nacked`, `failed`) |
    /// | `messaging.client.operation.duration` | histogram, seconds | as above, with `messaging.operation.name` = `send` |
    /// | `messaging.client.consumed.messages` | counter | `messaging.system`, `messaging.destination.name` (the queue), `message`, `outcome` (`acked`, `requeued`, `retried`, `dead_lettered`, `dropped`, `returned`, `expired`) |
    /// | `messaging.process.duration` | histogram, seconds | as the consumed counter: from the delivery reaching the consumer to its settling |
    ///
    /// `message` is the message name; no label carries a message id.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// How each delivery's span relates to the span that published its message (feature
    /// `opentelemetry`): a child (the default: one trace across services) or a link.
    #[cfg(feature = "opentelemetry")]
    pub fn trace_parent(mut self, parent: crate::TraceParent) -> Self {
        self.trace_parent = parent;
        self
    }

    /// The prefix of the queues and exchanges that delay messages (default `mqt.delay`; see
    /// [`delay`](crate::delay)). Apps that delay messages to each other's queues share them,
    /// so keep the default unless the virtual host is shared with something else of that name.
    pub fn delay_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.delay_prefix = prefix.into();
        self
    }

    /// Whether every delivery gets a [`TraceLayer`](crate::middleware::TraceLayer) span (default: yes).
    pub fn tracing(mut self, on: bool) -> Self {
        self.tracing = on;
        self
    }

    /// Connects, pings the broker, declares the topology (with the queues consumers declare and
    /// their dead-letter queues) and checks that every consumed queue exists. Errors name the
    /// broker (without its password) or the entity at fault.
    pub async fn build(self) -> Result<App> {
        let problems: Vec<String> = self.consumers.iter().flat_map(Consumer::problems_on_its_own).collect();
        let mut problems = problems;
        let mut seen = std::collections::HashSet::new();
        for c in self.consumers.iter().filter(|c| c.subscription.is_none()) {
            if !seen.insert(c.queue.as_str()) {
                problems.push(format!(
                    "queue '{}' has two consumers in this app, whose handlers would each get a share of its messages: register every handler on one consumer",
                    c.queue
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::invalid(format!(
                "the app is misconfigured: {}",
                problems.join("; ")
            )));
        }
        let (transport, redacted_url) = match self.transport {
            Some(t) => (t, GIVEN_TRANSPORT.to_owned()),
            None => {
                let url = self.url.unwrap_or_else(crate::url_from_env);
                let redacted_url = redact(&url);
                let t = crate::connect(&url).await.map_err(|e| {
                    if e.message().contains(&redacted_url) {
                        e
                    } else {
                        e.context(format_args!("cannot connect to {redacted_url}"))
                    }
                })?;
                (t, redacted_url)
            }
        };
        let mut consumers = self.consumers;
        let declared = async {
            self.existing.check(&transport, &redacted_url).await?;
            declare(&transport, &redacted_url, &self.topology, &mut consumers).await
        };
        match declared.await {
            Ok(()) => {}
            Err(e) => {
                let _ = transport.close().await;
                return Err(e);
            }
        }

        let capabilities = transport.capabilities();
        let warnings: Vec<String> = capabilities
            .delivery_timeout
            .map(|limit| consumers.iter().filter_map(|c| c.unacked_too_long(limit)).collect())
            .unwrap_or_default();
        for w in &warnings {
            tracing::warn!("{w}");
        }
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let (mut publish_observers, mut settle_observers) = (self.publish_observers, self.settle_observers);
        #[cfg(feature = "metrics")]
        let metrics = self
            .metrics
            .then(|| Arc::new(crate::observe::Metrics::new(capabilities.system)));
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &metrics {
            publish_observers.push(Arc::clone(metrics) as Arc<dyn PublishObserver>);
            settle_observers.push(Arc::clone(metrics) as Arc<dyn crate::settled::SettleObserver>);
        }
        let publisher = Publisher::new(PublisherInner {
            system: capabilities.system,
            replies: crate::rpc::Replies::new(transport.clone()),
            transport: transport.clone(),
            app_id: self.name.clone(),
            validate: self.validate_on_publish,
            observers: publish_observers,
            unconfirmed: Default::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            sends: Default::default(),
            delays: crate::delay::Delays::new(self.delay_prefix),
        });
        let state = match self.state {
            StateInit::Ready(state) => state,
            StateInit::FromPublisher(make) => make(&publisher),
        };
        let tracker = Arc::new(Tracker::default());
        let attach = Attach {
            state,
            layers: self.layers,
            tracing: self.tracing,
            #[cfg(feature = "opentelemetry")]
            trace_parent: self.trace_parent,
            topology: self.topology.clone(),
            transport: transport.clone(),
            redacted_url: redacted_url.clone(),
            publisher: publisher.clone(),
            tracker: Arc::clone(&tracker),
            observers: settle_observers,
            #[cfg(feature = "metrics")]
            metrics: metrics.clone(),
        };
        let (runtimes, services): (Vec<_>, Vec<_>) = consumers.iter().map(|c| attach.runtime(c)).unzip();
        let receives = consumers
            .iter()
            .map(|c| crate::asyncapi::ReceiveDoc {
                queue: c.queue.clone(),
                subscription: c.subscription.clone(),
                messages: c.docs.clone(),
                any: c.fallback.is_some(),
            })
            .collect();
        Ok(App {
            transport,
            redacted_url,
            publisher,
            runtimes,
            services: Mutex::new(services),
            shutdown_timeout: self.shutdown_timeout,
            tracker,
            warnings,
            attach: Arc::new(attach),
            #[cfg(feature = "metrics")]
            metrics,
            title: self.name.unwrap_or_else(|| "mqtransport app".to_owned()),
            topology: self.topology,
            receives,
        })
    }
}
