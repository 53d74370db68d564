//! The fixture of the app suite: one scenario, run against the embedded broker (on tokio's
//! paused clock) and against RabbitMQ (`MQT_TEST_AMQP_URL`), with unique names and cleanup.

#![allow(dead_code, unreachable_pub)]

pub mod intercept;
pub mod orders;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqtransport::testing::Disposition;
use mqtransport::{AppBuilder, DynTransport, Envelope, MemoryBroker, SettledDelivery, Transport};
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestResult = Result<(), BoxError>;

/// How long a scenario waits for an event before failing.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub enum Kind {
    Memory(MemoryBroker),
    Rabbit(String),
    /// An SQS-compatible server (with the `sqs` feature).
    Sqs(String),
}

pub struct Fx {
    kind: Kind,
    prefix: String,
    queues: Mutex<Vec<String>>,
    exchanges: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:x}{nanos:x}{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Fx {
    pub fn is_rabbit(&self) -> bool {
        matches!(self.kind, Kind::Rabbit(_))
    }

    /// On the embedded broker, whose tests run on tokio's paused clock.
    pub fn is_memory(&self) -> bool {
        matches!(self.kind, Kind::Memory(_))
    }

    pub fn is_sqs(&self) -> bool {
        matches!(self.kind, Kind::Sqs(_))
    }

    /// A unique queue name; the queue, its dead-letter queue and the given retry wait queues
    /// are deleted at the end.
    pub fn queue(&self, base: &str) -> String {
        let name = format!("{}.{base}", self.prefix);
        let mut q = lock(&self.queues);
        q.push(name.clone());
        q.push(format!("{name}.dlq"));
        name
    }

    /// The prefix of this scenario's delay levels (deleted at the end).
    pub fn delay_prefix(&self) -> String {
        format!("{}.delay", self.prefix)
    }

    /// Records any other queue for deletion.
    pub fn adopt_queue(&self, name: &str) {
        lock(&self.queues).push(name.to_owned());
    }

    pub fn exchange(&self, base: &str) -> String {
        let name = format!("{}.x.{base}", self.prefix);
        lock(&self.exchanges).push(name.clone());
        name
    }

    /// Points `app` at the broker under test, with the scenario's own delay levels.
    pub fn app<S: Clone + Send + Sync + 'static>(&self, app: AppBuilder<S>) -> AppBuilder<S> {
        let app = app.delay_prefix(self.delay_prefix());
        match &self.kind {
            Kind::Memory(b) => app.transport(DynTransport::new(b.connect())),
            Kind::Rabbit(url) | Kind::Sqs(url) => app.url(url.clone()),
        }
    }

    /// The URL of the broker under test (for the memory broker, a private one is not reachable
    /// by URL, so scenarios that need a URL use `app()`).
    pub fn rabbit_url(&self) -> Option<&str> {
        match &self.kind {
            Kind::Rabbit(u) => Some(u),
            Kind::Memory(_) | Kind::Sqs(_) => None,
        }
    }

    /// A connection of the scenario's own.
    pub async fn conn(&self) -> Result<DynTransport, BoxError> {
        Ok(match &self.kind {
            Kind::Memory(b) => DynTransport::new(b.connect()),
            Kind::Rabbit(url) | Kind::Sqs(url) => mqtransport::connect(url).await?,
        })
    }

    async fn cleanup(&self) {
        let Ok(conn) = self.conn().await else { return };
        let mut queues = std::mem::take(&mut *lock(&self.queues));
        let mut exchanges = std::mem::take(&mut *lock(&self.exchanges));
        let delays = mqtransport::delay::delay_topology(&self.delay_prefix());
        queues.extend(delays.queues.into_iter().map(|q| q.name));
        exchanges.extend(delays.exchanges.into_iter().map(|x| x.name));
        for q in queues {
            let _ = conn.delete_queue(&q, Default::default()).await;
        }
        for x in exchanges {
            let _ = conn.delete_exchange(&x, false).await;
        }
        let _ = conn.close().await;
    }
}

pub type Scenario = fn(Arc<Fx>) -> Pin<Box<dyn Future<Output = TestResult> + Send>>;

fn required() -> bool {
    std::env::var("MQT_REQUIRE_BROKERS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

pub async fn run(kind: Kind, name: &str, scenario: Scenario) {
    if let Kind::Sqs(url) = &kind {
        if let Some(why) = not_on_sqs(name) {
            println!("SKIPPED on SQS: {name}: {why}");
            return;
        }
        match mqtransport::connect(url).await {
            Ok(c) => {
                let _ = c.close().await;
            }
            Err(e) if !required() => {
                println!("SKIPPED: SQS not reachable ({e})");
                return;
            }
            Err(e) => panic!("SQS is required (MQT_REQUIRE_BROKERS=1) but not reachable: {e}"),
        }
    }
    if let Kind::Rabbit(url) = &kind {
        match mqtransport::connect(url).await {
            Ok(c) => {
                let _ = c.close().await;
            }
            Err(e) if !required() => {
                println!(
                    "SKIPPED: RabbitMQ not reachable at {} ({e})",
                    mqtransport::BrokerUrl::parse(url)
                        .map(|u| u.to_string())
                        .unwrap_or_default()
                );
                return;
            }
            Err(e) => panic!("RabbitMQ is required (MQT_REQUIRE_BROKERS=1) but not reachable: {e}"),
        }
    }
    let fx = Arc::new(Fx {
        kind,
        prefix: format!("mqt-app-{name}-{}", unique()),
        queues: Mutex::default(),
        exchanges: Mutex::default(),
    });
    let guarded = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario(Arc::clone(&fx))));
    let outcome = tokio::time::timeout(Duration::from_secs(120), guarded).await;
    fx.cleanup().await;
    match outcome {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => panic!("scenario {name} failed: {e}"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("scenario {name} did not finish within 120 s"),
    }
}

/// The SQS server under test (`MQT_TEST_SQS_URL`, default moto on 127.0.0.1:4566), polling
/// with short waits so that consumers stop quickly.
pub fn sqs_url() -> String {
    let url = std::env::var("MQT_TEST_SQS_URL")
        .unwrap_or_else(|_| "sqs://test:test@us-east-1/?endpoint=http://127.0.0.1:4566".into());
    format!("{url}{}wait=1s", if url.contains('?') { "&" } else { "?" })
}

/// Why an app scenario cannot run on SQS, if it cannot: each needs what SQS lacks.
fn not_on_sqs(scenario: &str) -> Option<&'static str> {
    Some(match scenario {
        "dead_letters_can_go_to_the_broker" | "dead_letters_the_broker_made_are_read_from_x_death" => {
            "dead-letter exchanges"
        }
        "a_full_dead_letter_queue_backs_the_consumer_off" | "existing_entities_are_checked_and_never_declared" => {
            "queue length limits (x-max-length)"
        }
        "an_exclusive_queue_must_choose_where_its_dead_letters_go" => "exclusive queues",
        "delays_of_many_sizes_arrive_in_order_of_their_due_time" => {
            "delays finer than a second (DelaySeconds counts whole seconds; each delay is rounded up, never early)"
        }
        _ => return None,
    })
}

pub fn rabbit_url() -> String {
    std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A direct connection to the RabbitMQ under test (`None`: SKIPPED), a fault proxy in front of
/// it, and a URL through the proxy (with 2 s heartbeats, so that a cut is noticed soon).
pub async fn rabbit_through_proxy() -> Option<(DynTransport, mqtransport_testkit::proxy::FaultProxy, String)> {
    let url = mqtransport::BrokerUrl::parse(&rabbit_url()).expect("URL parses");
    let direct = mqtransport_testkit::reachable_or_skip(
        "RabbitMQ",
        &url.to_string(),
        mqtransport::connect(&rabbit_url()).await,
    )?;
    let proxy =
        mqtransport_testkit::proxy::FaultProxy::start(&format!("{}:{}", url.host(), url.port().unwrap_or(5672)))
            .await
            .expect("proxy");
    let through = format!(
        "amqp://{}:{}@{}/%2f?heartbeat=2",
        url.username().unwrap_or("guest"),
        url.password().unwrap_or("guest"),
        proxy.addr()
    );
    Some((direct, proxy, through))
}

/// Instantiates each scenario on the embedded broker, on RabbitMQ and (with the `sqs` feature)
/// on SQS.
macro_rules! app_suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    $crate::common::run(
                        $crate::common::Kind::Memory(mqtransport::MemoryBroker::new()),
                        stringify!($name),
                        |fx| Box::pin(super::$name(fx)),
                    )
                    .await;
                }
            )*
        }
        #[cfg(feature = "sqs")]
        mod sqs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run(
                        $crate::common::Kind::Sqs($crate::common::sqs_url()),
                        stringify!($name),
                        |fx| Box::pin(super::$name(fx)),
                    )
                    .await;
                }
            )*
        }
        mod rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run(
                        $crate::common::Kind::Rabbit($crate::common::rabbit_url()),
                        stringify!($name),
                        |fx| Box::pin(super::$name(fx)),
                    )
                    .await;
                }
            )*
        }
    };
}

/// One settled delivery, owned.
#[derive(Debug, Clone)]
pub struct Seen {
    pub queue: String,
    pub envelope: Envelope,
    pub disposition: Disposition,
}

/// A settle hook feeding a channel, and its receiving end.
pub fn settlements() -> (impl Fn(SettledDelivery<'_>) + Send + Sync + 'static, Settlements) {
    let (tx, rx) = mpsc::unbounded_channel();
    let hook = move |e: SettledDelivery<'_>| {
        let _ = tx.send(Seen {
            queue: e.queue.to_owned(),
            envelope: e.envelope.clone(),
            disposition: e.disposition.clone(),
        });
    };
    (hook, Settlements(rx))
}

pub struct Settlements(mpsc::UnboundedReceiver<Seen>);

impl Settlements {
    /// The next disposition, failing after [`DEADLINE`].
    pub async fn next(&mut self) -> Result<Seen, BoxError> {
        match tokio::time::timeout(DEADLINE, self.0.recv()).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err("the app stopped reporting settlements".into()),
            Err(_) => Err(format!("no delivery was settled within {DEADLINE:?}").into()),
        }
    }

    /// The next `n` settlements.
    pub async fn take(&mut self, n: usize) -> Result<Vec<Seen>, BoxError> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await?);
        }
        Ok(out)
    }
}

/// Waits for the next value of a channel, failing after [`DEADLINE`].
pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> Result<T, BoxError> {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(format!("channel closed waiting for {what}").into()),
        Err(_) => Err(format!("timed out after {DEADLINE:?} waiting for {what}").into()),
    }
}

/// Takes one message from `queue` (no-ack), waiting for it up to [`DEADLINE`].
pub async fn get(conn: &DynTransport, queue: &str) -> Result<Envelope, BoxError> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(d) = conn.get(queue, true).await? {
            return Ok(d.envelope);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no message arrived in queue '{queue}' within {DEADLINE:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The string value of header `key`.
pub fn header_str<'a>(env: &'a Envelope, key: &str) -> Option<&'a str> {
    env.header(key).and_then(|v| v.as_str())
}
