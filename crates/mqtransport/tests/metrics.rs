//! Metrics (feature `metrics`): after a scripted run on the embedded broker, the counters and
//! histograms say what happened (acks, a retry, dead letters, a request and its reply), with
//! OpenTelemetry's names and labels, and never a message id.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/intercept.rs"]
mod intercept;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use intercept::{Intercept, Intercepted};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use mqtransport::prelude::*;
use mqtransport::{DynTransport, MemoryBroker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "shop.order")]
struct Order {
    id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "math.square")]
struct Square {
    n: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "math.squared")]
struct Squared {
    n: i64,
}

async fn take(order: Order) -> Result<(), HandlerError> {
    match order.id {
        2 => Err(HandlerError::transient("gateway down")),
        3 => Err(HandlerError::permanent("no such product")),
        _ => Ok(()),
    }
}

async fn square(req: Square) -> Squared {
    Squared { n: req.n * req.n }
}

/// A recorder that keeps every value where a test can read it at any time (counters' totals,
/// gauges' latest values, histograms' samples), installed for one test's thread: the tests
/// run on current-thread runtimes, so everything the app records goes to it.
#[derive(Clone)]
struct TestRecorder(Arc<Registry<Key, AtomicStorage>>);

impl TestRecorder {
    fn new() -> Self {
        TestRecorder(Arc::new(Registry::atomic()))
    }

    /// (metric name, sorted labels) → what it holds now.
    fn seen(&self) -> Seen {
        let mut seen = Seen::new();
        for (key, c) in self.0.get_counter_handles() {
            seen.insert(entry(&key), Total::Counter(c.load(Ordering::Relaxed)));
        }
        for (key, g) in self.0.get_gauge_handles() {
            seen.insert(entry(&key), Total::Gauge(f64::from_bits(g.load(Ordering::Relaxed))));
        }
        for (key, h) in self.0.get_histogram_handles() {
            seen.insert(entry(&key), Total::Histogram(h.data().len()));
        }
        seen
    }
}

fn entry(key: &Key) -> (String, Vec<(String, String)>) {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    labels.sort();
    (key.name().to_owned(), labels)
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0.get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0.get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

/// What a metric holds.
#[derive(Debug, PartialEq)]
enum Total {
    Counter(u64),
    /// How many values were recorded.
    Histogram(usize),
    Gauge(f64),
}

/// (metric name, sorted labels) → total.
type Seen = HashMap<(String, Vec<(String, String)>), Total>;

/// Waits (on the paused clock: advancing it) until what the recorder holds satisfies `ok`.
async fn until(recorder: &TestRecorder, what: &str, ok: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = recorder.seen();
        if ok(&seen) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:#?}",
            seen.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    v.sort();
    v
}

fn counter(seen: &Seen, name: &str, pairs: &[(&str, &str)]) -> u64 {
    match seen.get(&(name.to_owned(), labels(pairs))) {
        Some(Total::Counter(n)) => *n,
        other => panic!(
            "{name} {pairs:?}: {other:?}\nall: {:#?}",
            seen.keys().collect::<Vec<_>>()
        ),
    }
}

fn histogram_count(seen: &Seen, name: &str, pairs: &[(&str, &str)]) -> usize {
    match seen.get(&(name.to_owned(), labels(pairs))) {
        Some(Total::Histogram(n)) => *n,
        other => panic!("{name} {pairs:?}: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_scripted_run_is_counted_by_outcome() {
    let recorder = TestRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);

    let broker = MemoryBroker::new();
    let app = App::builder()
        .transport(DynTransport::new(broker.connect()))
        .consumer(
            Consumer::for_queue(Queue::durable("orders"))
                .retry(RetryPolicy::max_attempts(2).backoff(mqtransport::Backoff::fixed(Duration::from_millis(10))))
                .handle(take),
        )
        .consumer(Consumer::for_queue(Queue::durable("math")).handle(square))
        .build()
        .await
        .unwrap();
    let orders = app.producer::<Order>(Route::queue("orders"));
    let lost = app.producer::<Order>(Route::queue("nowhere"));
    let math = app.requester::<Square, Squared>(Route::queue("math"));
    let running = app.start().await.unwrap();
    for id in [1, 2, 3, 4] {
        orders.send(&Order { id }).await.unwrap();
    }
    assert_eq!(math.request(&Square { n: 3 }).await.unwrap().n, 9);
    assert!(lost.send(&Order { id: 5 }).await.is_err());
    // Order 2: attempt 1 retried, attempt 2 dead-lettered; order 3 dead-lettered at once.
    let consumed = |s: &Seen, outcome: &str| {
        let key = (
            "messaging.client.consumed.messages".to_owned(),
            labels(&[
                ("messaging.system", "memory"),
                ("messaging.destination.name", "orders"),
                ("message", "shop.order"),
                ("outcome", outcome),
            ]),
        );
        match s.get(&key) {
            Some(Total::Counter(n)) => *n,
            _ => 0,
        }
    };
    until(&recorder, "the dead letters counted", |s| {
        consumed(s, "dead_lettered") >= 2
    })
    .await;
    running.shutdown().await.unwrap();
    let s = recorder.seen();
    let on = |outcome| {
        [
            ("messaging.system", "memory"),
            ("messaging.destination.name", "orders"),
            ("message", "shop.order"),
            ("outcome", outcome),
        ]
    };
    assert_eq!(counter(&s, "messaging.client.consumed.messages", &on("acked")), 2);
    assert_eq!(counter(&s, "messaging.client.consumed.messages", &on("retried")), 1);
    assert_eq!(
        counter(&s, "messaging.client.consumed.messages", &on("dead_lettered")),
        2
    );
    assert_eq!(histogram_count(&s, "messaging.process.duration", &on("acked")), 2);
    assert_eq!(counter(&s, "messaging.client.sent.messages", &on("confirmed")), 4);
    let nowhere = [
        ("messaging.system", "memory"),
        ("messaging.destination.name", "nowhere"),
        ("message", "shop.order"),
        ("outcome", "returned"),
    ];
    assert_eq!(counter(&s, "messaging.client.sent.messages", &nowhere), 1);
    let mut sent_duration = on("confirmed").to_vec();
    sent_duration.push(("messaging.operation.name", "send"));
    assert_eq!(
        histogram_count(&s, "messaging.client.operation.duration", &sent_duration),
        4
    );
    // The request, handled and answered; its reply counted under the reply-to pseudo-queue.
    let request = [
        ("messaging.system", "memory"),
        ("messaging.destination.name", "math"),
        ("message", "math.square"),
        ("outcome", "acked"),
    ];
    assert_eq!(counter(&s, "messaging.client.consumed.messages", &request), 1);
    let reply = [
        ("messaging.system", "memory"),
        ("messaging.destination.name", "amq.rabbitmq.reply-to"),
        ("message", "math.squared"),
        ("outcome", "confirmed"),
    ];
    assert_eq!(counter(&s, "messaging.client.sent.messages", &reply), 1);
    // No label anywhere holds a message id.
    for (_, pairs) in s.keys() {
        assert!(pairs.iter().all(|(k, _)| !k.contains("id")), "{pairs:?}");
    }
}

/// A handler that waits for a permit: deliveries stay in flight until the test lets them go.
async fn held(_: Order, State(gate): State<Arc<tokio::sync::Semaphore>>) {
    if let Ok(permit) = gate.acquire().await {
        permit.forget();
    }
}

/// The embedded broker, with publishes that wait for a permit and a connection state the test
/// sets: what the gauges read is then known.
struct Scripted {
    publishes: Arc<tokio::sync::Semaphore>,
    connected: Arc<std::sync::atomic::AtomicBool>,
    reconnects: Arc<AtomicU64>,
}

impl Intercept for Scripted {
    async fn publish(&self, inner: &DynTransport, publish: Publish) -> mqtransport::Result<Confirmation> {
        if let Ok(permit) = self.publishes.acquire().await {
            permit.forget();
        }
        inner.publish(publish).await
    }
    fn connection_state(&self, _inner: &DynTransport) -> mqtransport::ConnectionState {
        let reconnects = self.reconnects.load(Ordering::Relaxed);
        if self.connected.load(Ordering::Relaxed) {
            mqtransport::ConnectionState::up(reconnects)
        } else {
            mqtransport::ConnectionState::down(reconnects)
        }
    }
}

fn gauge(seen: &Seen, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    match seen.get(&(name.to_owned(), labels(pairs))) {
        Some(Total::Gauge(v)) => Some(*v),
        _ => None,
    }
}

/// The gauges: deliveries in flight per consumer (moving with each), and, read every
/// `METRICS_SAMPLE_INTERVAL`, the unconfirmed publishes, the connection and its reconnects.
#[tokio::test(start_paused = true)]
async fn gauges_follow_handlers_publishes_and_the_connection() {
    let recorder = TestRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let handlers = Arc::new(tokio::sync::Semaphore::new(0));
    let publishes = Arc::new(tokio::sync::Semaphore::new(3));
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reconnects = Arc::new(AtomicU64::new(0));
    let transport = Intercepted::transport(
        DynTransport::new(MemoryBroker::new().connect()),
        Scripted {
            publishes: Arc::clone(&publishes),
            connected: Arc::clone(&connected),
            reconnects: Arc::clone(&reconnects),
        },
    );
    let app = App::with_state(Arc::clone(&handlers))
        .transport(transport)
        .consumer(Consumer::for_queue(Queue::durable("held")).concurrency(4).handle(held))
        .build()
        .await
        .unwrap();
    let orders = app.producer::<Order>(Route::queue("held"));
    let running = app.start().await.unwrap();
    let system = [("messaging.system", "memory")];
    let in_flight = [("messaging.destination.name", "held"), ("messaging.system", "memory")];

    for id in 0..3 {
        orders.send(&Order { id }).await.unwrap();
    }
    until(&recorder, "3 in flight", |s| {
        gauge(s, "mqtransport.consumer.in_flight", &in_flight) == Some(3.0)
    })
    .await;
    handlers.add_permits(3);
    until(&recorder, "none in flight", |s| {
        gauge(s, "mqtransport.consumer.in_flight", &in_flight) == Some(0.0)
    })
    .await;

    // Two publishes wait for the broker: the unconfirmed gauge says so, then goes back to 0.
    let waiting: Vec<_> = (10..12)
        .map(|id| {
            let orders = orders.clone();
            tokio::spawn(async move { orders.send(&Order { id }).await })
        })
        .collect();
    until(&recorder, "2 unconfirmed", |s| {
        gauge(s, "mqtransport.publisher.unconfirmed", &system) == Some(2.0)
    })
    .await;
    let seen = recorder.seen();
    assert_eq!(gauge(&seen, "mqtransport.connection.up", &system), Some(1.0));
    assert_eq!(gauge(&seen, "mqtransport.connection.blocked", &system), Some(0.0));
    assert_eq!(counter(&seen, "mqtransport.connection.reconnects", &system), 0);
    publishes.add_permits(2);
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    handlers.add_permits(2);
    until(&recorder, "0 unconfirmed", |s| {
        gauge(s, "mqtransport.publisher.unconfirmed", &system) == Some(0.0)
    })
    .await;

    // The connection lost, then back after two reconnects.
    connected.store(false, Ordering::Relaxed);
    until(&recorder, "connection down", |s| {
        gauge(s, "mqtransport.connection.up", &system) == Some(0.0)
    })
    .await;
    reconnects.store(2, Ordering::Relaxed);
    connected.store(true, Ordering::Relaxed);
    until(&recorder, "connection back", |s| {
        gauge(s, "mqtransport.connection.up", &system) == Some(1.0)
            && s.get(&("mqtransport.connection.reconnects".to_owned(), labels(&system))) == Some(&Total::Counter(2))
    })
    .await;
    running.shutdown().await.unwrap();
}
