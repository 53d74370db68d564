//! Metrics (feature `metrics`): after a scripted run on the embedded broker, the counters and
//! histograms say what happened (acks, a retry, dead letters, a request and its reply), with
//! OpenTelemetry's names and labels, and never a message id.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
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

/// What a metric added up to.
#[derive(Debug)]
enum Total {
    Counter(u64),
    /// How many values were recorded.
    Histogram(usize),
    Gauge,
}

/// (metric name, sorted labels) → total.
type Seen = HashMap<(String, Vec<(String, String)>), Total>;

/// Adds what the recorder saw since the last snapshot to `totals` (a snapshot hands out each
/// counter's increase and each histogram's values once), and returns the totals.
fn seen(snapshotter: &metrics_util::debugging::Snapshotter, totals: &mut Seen) {
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let mut labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let entry = (key.key().name().to_owned(), labels);
        let total = totals.entry(entry).or_insert(match value {
            DebugValue::Counter(_) => Total::Counter(0),
            DebugValue::Histogram(_) => Total::Histogram(0),
            DebugValue::Gauge(_) => Total::Gauge,
        });
        match (total, value) {
            (Total::Counter(t), DebugValue::Counter(n)) => *t += n,
            (Total::Histogram(t), DebugValue::Histogram(values)) => *t += values.len(),
            _ => {}
        }
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
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
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
    let mut totals = Seen::new();
    loop {
        seen(&snapshotter, &mut totals);
        if consumed(&totals, "dead_lettered") >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead letters were not counted: {:#?}",
            totals.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.shutdown().await.unwrap();

    seen(&snapshotter, &mut totals);
    let s = totals;
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
