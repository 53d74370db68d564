//! # mqtransport-testkit
//!
//! The transport conformance suite, written once and run against every transport (the embedded
//! broker and RabbitMQ), and the helpers it is built from.
//!
//! A transport's test file instantiates the suite with a [`Connector`]:
//!
//! ```ignore
//! mqtransport_testkit::conformance_tests!(
//!     connector = MyConnector::new(),
//!     attr = tokio::test(start_paused = true)
//! );
//! ```
//!
//! Each scenario becomes one test. Names are unique per run; everything a scenario creates is
//! deleted afterwards, whether it passed or not. A connector that cannot reach its broker prints
//! `SKIPPED: <service> not reachable at <url>` and the test passes, unless `MQT_REQUIRE_BROKERS=1`
//! is set, when it fails.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mqtransport_core::{
    BoxFuture, Confirmation, DeleteQueue, Delivery, DynTransport, Envelope, Error, Publish, Subscription, Topology,
    Transport,
};

pub mod proxy;
pub mod rabbit_node;
pub mod raw_amqp;
pub mod scenarios;

/// How long a scenario waits for an event before it fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Opens connections to one broker for the suite.
pub trait Connector: Send + Sync + 'static {
    /// What is connected to, for messages: e.g. `RabbitMQ at amqp://127.0.0.1:5672`.
    fn describe(&self) -> String;
    /// Opens a new connection to the same broker.
    fn connect(&self) -> BoxFuture<'_, mqtransport_core::Result<DynTransport>>;
}

/// A scenario failure: what was expected and what happened.
pub struct Failure(pub String);

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(format!("unexpected error: {e}"))
    }
}

/// What a scenario returns.
pub type TestResult = Result<(), Failure>;

/// Fails the scenario unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure(format!("{} (line {}): {}", stringify!($cond), line!(), format!($($fmt)+))));
        }
    };
    ($cond:expr) => {
        if !$cond {
            return Err($crate::Failure(format!("check failed (line {}): {}", line!(), stringify!($cond))));
        }
    };
}

/// Fails the scenario unless both sides are equal.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::Failure(format!(
                        "line {}: {} == {}\n  left: {:?}\n right: {:?}",
                        line!(),
                        stringify!($left),
                        stringify!($right),
                        l,
                        r
                    )));
                }
            }
        }
    };
}

/// Everything one scenario needs: connections to the broker under test, unique names, waiting
/// helpers. Everything named through it is deleted when the scenario ends.
pub struct Ctx {
    conn: DynTransport,
    connector: Arc<dyn Connector>,
    prefix: String,
    created: Arc<Mutex<Created>>,
}

#[derive(Default)]
struct Created {
    queues: Vec<String>,
    exchanges: Vec<String>,
    conns: Vec<DynTransport>,
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn lock(m: &Mutex<Created>) -> std::sync::MutexGuard<'_, Created> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ctx {
    /// The scenario's first connection.
    pub fn conn(&self) -> &DynTransport {
        &self.conn
    }

    /// Opens another connection to the same broker (closed when the scenario ends).
    pub async fn connect(&self) -> Result<DynTransport, Failure> {
        let c = self.connector.connect().await?;
        lock(&self.created).conns.push(c.clone());
        Ok(c)
    }

    /// A queue name unique to this run, deleted at the end.
    pub fn queue(&self, base: &str) -> String {
        let name = format!("{}.{base}", self.prefix);
        lock(&self.created).queues.push(name.clone());
        name
    }

    /// An exchange name unique to this run, deleted at the end.
    pub fn exchange(&self, base: &str) -> String {
        let name = format!("{}.x.{base}", self.prefix);
        lock(&self.created).exchanges.push(name.clone());
        name
    }

    /// Records a name the broker generated, for deletion at the end.
    pub fn adopt_queue(&self, name: &str) {
        lock(&self.created).queues.push(name.to_owned());
    }

    /// Declares `topology` on the first connection.
    pub async fn declare(&self, topology: Topology) -> Result<mqtransport_core::Declared, Failure> {
        Ok(self.conn.declare(&topology).await?)
    }

    /// Publishes and returns the confirmation.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: Envelope,
    ) -> Result<Confirmation, Failure> {
        Ok(self.conn.publish(Publish::new(exchange, routing_key, envelope)).await?)
    }

    /// Publishes `body` to `queue` through the default exchange and requires a confirm.
    pub async fn send(&self, queue: &str, body: &str) -> TestResult {
        let c = self.publish("", queue, Envelope::new(body.to_owned())).await?;
        check_eq!(c, Confirmation::Confirmed);
        Ok(())
    }

    /// Ready messages in `queue`.
    pub async fn count(&self, queue: &str) -> Result<u32, Failure> {
        Ok(self.conn.queue_info(queue).await?.message_count)
    }

    /// The next delivery of `consumer`, failing after [`DEADLINE`].
    pub async fn next(&self, consumer: &mut Subscription) -> Result<Delivery, Failure> {
        match tokio::time::timeout(DEADLINE, consumer.next()).await {
            Ok(Some(Ok(d))) => Ok(d),
            Ok(Some(Err(e))) => Err(Failure(format!("consumer {} failed: {e}", consumer.tag()))),
            Ok(None) => Err(Failure(format!("consumer {} ended", consumer.tag()))),
            Err(_) => Err(Failure(format!(
                "no delivery to consumer {} within {DEADLINE:?}",
                consumer.tag()
            ))),
        }
    }

    /// `basic.get` with acknowledgement, on the first connection.
    pub async fn get(&self, queue: &str) -> Result<Option<Delivery>, Failure> {
        Ok(self.conn.get(queue, false).await?)
    }

    /// Takes every ready message of `queue` (no-ack) and returns their bodies in order.
    pub async fn drain(&self, queue: &str) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        while let Some(d) = self.conn.get(queue, true).await? {
            out.push(body(&d));
        }
        Ok(out)
    }

    /// Waits until `cond` returns true, polling, for at most [`DEADLINE`].
    pub async fn eventually<F, Fut>(&self, what: &str, mut cond: F) -> TestResult
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool, Failure>>,
    {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if cond().await? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure(format!("timed out after {DEADLINE:?} waiting until {what}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `queue` holds exactly `n` ready messages.
    pub async fn wait_count(&self, queue: &str, n: u32) -> TestResult {
        self.eventually(&format!("queue '{queue}' holds {n} messages"), || async move {
            Ok(self.count(queue).await? == n)
        })
        .await
    }

    async fn cleanup(&self) {
        let created = std::mem::take(&mut *lock(&self.created));
        for c in &created.conns {
            let _ = c.close().await;
        }
        let conn = match self.connector.connect().await {
            Ok(c) => c,
            Err(_) => self.conn.clone(),
        };
        for q in &created.queues {
            let _ = conn.delete_queue(q, DeleteQueue::default()).await;
        }
        for x in &created.exchanges {
            let _ = conn.delete_exchange(x, false).await;
        }
        let _ = conn.close().await;
        let _ = self.conn.close().await;
    }
}

/// The body of a delivery as text.
pub fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.envelope.body).into_owned()
}

/// Whether a broker must be reachable (`MQT_REQUIRE_BROKERS=1`).
pub fn brokers_required() -> bool {
    std::env::var("MQT_REQUIRE_BROKERS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The connection `connected` opened to `service` at `url`, or `None` after printing
/// `SKIPPED: …` when the broker is unreachable and not required (see [`brokers_required`]).
/// Panics when it is required, or when connecting failed for another reason than reach.
pub fn reachable_or_skip<T>(service: &str, url: &str, connected: mqtransport_core::Result<T>) -> Option<T> {
    match connected {
        Ok(t) => Some(t),
        Err(e) if !brokers_required() && e.kind() == mqtransport_core::ErrorKind::Connection => {
            println!("SKIPPED: {service} not reachable at {url} ({e})");
            None
        }
        Err(e) => panic!("{service} at {url}: cannot connect: {e}"),
    }
}

/// Runs one scenario against `connector`: connects (or skips), runs, cleans up, and panics with
/// the failure if there was one.
pub async fn run<C, F, Fut>(connector: C, name: &str, scenario: F)
where
    C: Connector,
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = TestResult>,
{
    let connector: Arc<dyn Connector> = Arc::new(connector);
    let conn = match connector.connect().await {
        Ok(c) => c,
        Err(e) if !brokers_required() && e.kind() == mqtransport_core::ErrorKind::Connection => {
            println!("SKIPPED: {} not reachable ({e})", connector.describe());
            return;
        }
        Err(e) => panic!("{}: cannot connect: {e}", connector.describe()),
    };
    if let Some(missing) = scenarios::unmet(name, &conn.capabilities()) {
        println!(
            "SKIPPED (capability): scenario {name} needs {missing}, which {} lacks",
            connector.describe()
        );
        let _ = conn.close().await;
        return;
    }
    let created = Arc::new(Mutex::new(Created::default()));
    let ctx = Ctx {
        conn: conn.clone(),
        connector: Arc::clone(&connector),
        prefix: format!("mqt-ct-{name}-{}", unique_suffix()),
        created: Arc::clone(&created),
    };
    let cleanup = Ctx {
        conn,
        connector,
        prefix: String::new(),
        created,
    };
    // A panic inside the scenario must not skip the cleanup on a shared broker.
    let guarded = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario(ctx)));
    let outcome = tokio::time::timeout(Duration::from_secs(120), guarded).await;
    cleanup.cleanup().await;
    let against = cleanup.connector.describe();
    match outcome {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(f))) => panic!("scenario {name} failed against {against}:\n{f:?}"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("scenario {name} did not finish within 120 s against {against}"),
    }
}

/// Instantiates the conformance suite: one test per scenario.
///
/// `connector` is an expression evaluated once per test (so each test may get a fresh broker);
/// `attr` is the test attribute, e.g. `tokio::test(start_paused = true)` for the embedded broker
/// or `tokio::test(flavor = "multi_thread")` for a real one.
#[macro_export]
macro_rules! conformance_tests {
    (connector = $conn:expr, attr = $attr:meta $(,)?) => {
        $crate::__for_each_scenario!($crate::__conformance_test, ($conn), ($attr));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    (($conn:expr), ($attr:meta), $($name:ident)*) => {
        $(
            #[$attr]
            async fn $name() {
                $crate::run($conn, stringify!($name), $crate::scenarios::$name).await;
            }
        )*
    };
}
