//! What users run on RabbitMQ (the transport, `Producer<T>`, the App consume path) against raw
//! lapin written the fastest way a user could, side by side in one run on the local RabbitMQ
//! (`MQT_TEST_AMQP_URL`), rounds interleaved, best round of each case:
//!
//! - publish with confirms: raw lapin keeps a `FuturesUnordered` window of 1,000 futures, each
//!   `basic_publish(…).await` then its confirm, and the transport (a raw `Envelope`) keeps the
//!   same window, both with a 64 B body and no properties; `Producer<T>` (JSON of a small
//!   struct, with content type, type, message id, timestamp, persistent) is compared with raw
//!   lapin publishing the same JSON with the same properties the same way (RabbitMQ takes
//!   markedly longer over a message with properties, so a bare raw publish would not be the
//!   same work);
//! - consume + ack, prefetch 500: raw lapin `basic_qos(500)`, `basic_consume`, and acks sent
//!   without awaiting each in turn (at most 256 ack futures in flight); the transport acks each
//!   delivery as a user would (`d.ack().await`); the App decodes, validates, dispatches to a
//!   handler that does nothing, and acks;
//!
//! Request/reply is measured by `benches/rpc.rs`.
//!
//! Client CPU per message (this process's user + system time, lapin's threads included) is
//! printed for the publish cases.
//!
//! ```sh
//! cargo bench -p mqtransport --bench vs_lapin
//! MQT_BENCH_MESSAGES=20000 MQT_BENCH_ROUNDS=3 cargo bench -p mqtransport --bench vs_lapin
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mqtransport::prelude::*;
use mqtransport::{AmqpTransport, BrokerUrl, ConsumeOptions, DynTransport, Envelope, Publish, Transport};
use mqtransport_amqp::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use mqtransport_amqp::lapin::types::FieldTable;
use mqtransport_amqp::lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use mqtransport_core::ShortStr;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

const WINDOW: usize = 1000;
const PREFETCH: u16 = 500;
const ACKS_IN_FLIGHT: usize = 256;
const BODY: usize = 64;

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.tick")]
struct Tick {
    n: u64,
    source: String,
}

fn url() -> String {
    std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn queue_name(tag: &str, round: usize) -> String {
    format!("mqt-bench-{tag}-{}-{round}", std::process::id())
}

/// This process's CPU time (user + system) so far, from `/proc/self/stat` (`None` elsewhere).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in USER_HZ, 100 per second on every architecture it runs on here.
    Some(Duration::from_millis(ticks * 10))
}

/// How long a case took and the CPU it used.
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Option<Duration>,
}

async fn measured<F: std::future::Future<Output = ()>>(case: F) -> Took {
    let cpu0 = cpu_time();
    let start = Instant::now();
    case.await;
    let wall = start.elapsed();
    let cpu = cpu0.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
    Took { wall, cpu }
}

async fn raw_declare(ch: &Channel, q: &str) {
    ch.queue_declare(q.into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
}

/// Raw lapin, the fastest way: a `FuturesUnordered` window of publish-then-confirm futures;
/// `message(i)` gives the body and properties of the `i`-th.
async fn raw_window<F>(ch: &Channel, q: &str, n: usize, message: F)
where
    F: Fn(usize) -> (Vec<u8>, BasicProperties),
{
    let one = |ch: Channel, (body, props): (Vec<u8>, BasicProperties)| {
        let q = q.to_owned();
        async move {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await?;
            confirm.await
        }
    };
    let mut window = FuturesUnordered::new();
    for i in 0..n {
        if window.len() == WINDOW {
            let done: Result<_, mqtransport_amqp::lapin::Error> = window.next().await.expect("in flight");
            done.expect("confirmed");
        }
        window.push(one(ch.clone(), message(i)));
    }
    while let Some(r) = window.next().await {
        r.expect("confirmed");
    }
}

/// Raw lapin: a 64 B body, no properties.
async fn raw_publish(ch: &Channel, q: &str, n: usize) {
    let body = vec![b'x'; BODY];
    raw_window(ch, q, n, |_| (body.clone(), BasicProperties::default())).await;
}

/// Raw lapin publishing what `Producer<T>` publishes: the struct as JSON with the same
/// properties (content type, type, a UUIDv7 message id, timestamp, persistent), the same way.
/// RabbitMQ itself takes longer over a message with properties, so `Producer<T>` is compared
/// with this.
async fn raw_publish_typed(ch: &Channel, q: &str, n: usize) {
    raw_window(ch, q, n, |i| {
        let body = serde_json::to_vec(&Tick {
            n: i as u64,
            source: "bench".into(),
        })
        .expect("encodes");
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(Tick::NAME.into())
            .with_message_id(uuid::Uuid::now_v7().to_string().into())
            .with_timestamp(timestamp)
            .with_delivery_mode(2);
        (body, props)
    })
    .await;
}

/// The transport: a raw envelope, the same window.
async fn transport_publish(t: &AmqpTransport, q: &str, n: usize) {
    let key = ShortStr::from(q);
    let body = bytes::Bytes::from(vec![b'x'; BODY]);
    let mut window = FuturesUnordered::new();
    for _ in 0..n {
        if window.len() == WINDOW {
            let done: mqtransport::Result<_> = window.next().await.expect("in flight");
            done.expect("confirmed");
        }
        window.push(t.publish(Publish::to_queue(key.clone(), Envelope::new(body.clone()))));
    }
    while let Some(r) = window.next().await {
        r.expect("confirmed");
    }
}

/// `Producer<T>`: JSON of a small struct, persistent, with a message id and timestamp; the same
/// window.
async fn producer_publish(producer: &Producer<Tick>, n: usize) {
    let mut window = FuturesUnordered::new();
    for i in 0..n {
        if window.len() == WINDOW {
            let done: mqtransport::Result<_> = window.next().await.expect("in flight");
            done.expect("confirmed");
        }
        let p = producer.clone();
        window.push(async move {
            p.publish(&Tick {
                n: i as u64,
                source: "bench".into(),
            })
            .await
        });
    }
    while let Some(r) = window.next().await {
        r.expect("confirmed");
    }
}

/// Raw lapin, the fastest way: prefetch 500, acks not awaited in turn (≤ 256 in flight).
async fn raw_consume(conn: &Connection, q: &str, n: usize) -> Took {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await.expect("qos");
    let took = measured(async {
        let mut consumer = ch
            .basic_consume(
                q.into(),
                "raw-bench".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut acks = FuturesUnordered::new();
        for _ in 0..n {
            let d = consumer.next().await.expect("delivery").expect("ok");
            if acks.len() == ACKS_IN_FLIGHT {
                let done: Result<_, mqtransport_amqp::lapin::Error> = acks.next().await.expect("ack in flight");
                done.expect("ack");
            }
            acks.push(async move { d.acker.ack(BasicAckOptions::default()).await });
        }
        while let Some(r) = acks.next().await {
            r.expect("ack");
        }
    })
    .await;
    let _ = ch.close(200, "OK".into()).await;
    took
}

/// The transport as a user writes it: each delivery acked.
async fn transport_consume(t: &AmqpTransport, q: &str, n: usize) -> Took {
    measured(async {
        let mut consumer = t
            .consume(q, ConsumeOptions::default().prefetch(PREFETCH))
            .await
            .expect("consume");
        for _ in 0..n {
            let d = consumer.next().await.expect("delivery").expect("ok");
            d.ack().await.expect("ack");
        }
    })
    .await
}

async fn on_tick(tick: Tick) {
    std::hint::black_box(&tick);
}

/// The App, on a connection of its own (it closes it at shutdown): decode, validate,
/// dispatch, a handler that does nothing, ack.
async fn app_consume(url: &BrokerUrl, q: &str, n: usize) -> Took {
    let t = AmqpTransport::connect(url).await.expect("connects");
    let settled = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let (s, d) = (Arc::clone(&settled), Arc::clone(&done));
    let app = App::builder()
        .transport(DynTransport::new(t.clone()))
        .tracing(false)
        .on_settle(move |_| {
            if s.fetch_add(1, Ordering::Relaxed) + 1 == n {
                d.notify_one();
            }
        })
        .consumer(
            Consumer::new(q)
                .handle(on_tick)
                .prefetch(PREFETCH)
                .dead_letter(mqtransport::DeadLetterPolicy::Broker),
        )
        .build()
        .await
        .expect("app");
    measured(async {
        let running = app.start().await.expect("start");
        running.run_until(done.notified()).await.expect("app ran");
    })
    .await
}

/// Whether `case` runs: `MQT_BENCH_CASE` (for profiling) names the cases to run by a part of
/// their names, e.g. `publish transport`; all run without it.
fn wanted(case: &str) -> bool {
    std::env::var("MQT_BENCH_CASE").map_or(true, |c| case.contains(c.as_str()))
}

/// The best (shortest) of each case over the rounds.
#[derive(Default)]
struct Best(std::collections::BTreeMap<&'static str, Took>);

impl Best {
    fn keep(&mut self, case: &'static str, took: Took) {
        if !wanted(case) {
            return;
        }
        let e = self.0.entry(case).or_insert(took);
        if took.wall < e.wall {
            *e = took;
        }
    }

    fn rate(&self, case: &str, n: usize) -> f64 {
        self.0.get(case).map_or(0.0, |t| n as f64 / t.wall.as_secs_f64())
    }

    fn cpu_per_message(&self, case: &str, n: usize) -> Option<f64> {
        let cpu = self.0.get(case)?.cpu?;
        Some(cpu.as_secs_f64() * 1e6 / n as f64)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick {
        500
    } else {
        env_usize("MQT_BENCH_MESSAGES").unwrap_or(100_000)
    };
    let rounds = if quick {
        1
    } else {
        env_usize("MQT_BENCH_ROUNDS").unwrap_or(2)
    };
    let url_parsed = BrokerUrl::parse(&url()).expect("MQT_TEST_AMQP_URL parses");
    let ours = match AmqpTransport::connect(&url_parsed).await {
        Ok(t) => t,
        Err(e) if !mqtransport_testkit::brokers_required() => {
            println!("SKIPPED: RabbitMQ not reachable at {url_parsed} ({e})");
            return;
        }
        Err(e) => panic!("RabbitMQ not reachable at {url_parsed}: {e}"),
    };
    let raw = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .expect("raw lapin connects");
    let raw_ch = raw.create_channel().await.expect("channel");
    raw_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let producer_app = App::builder()
        .transport(DynTransport::new(ours.clone()))
        .build()
        .await
        .expect("app");

    let mut best = Best::default();
    for round in 0..rounds {
        let (qr, qt, qp) = (
            queue_name("raw", round),
            queue_name("transport", round),
            queue_name("producer", round),
        );
        raw_declare(&raw_ch, &qr).await;
        for q in [&qt, &qp] {
            ours.declare(&Topology::new().queue(Queue::transient(q.as_str())))
                .await
                .expect("declare");
        }
        let producer = producer_app.producer::<Tick>(Route::queue(qp.as_str()));
        // The publishes fill the queues that the consume cases empty.
        if wanted("publish raw lapin") || wanted("consume raw lapin") {
            best.keep("publish raw lapin", measured(raw_publish(&raw_ch, &qr, n)).await);
        }
        if wanted("publish transport") || wanted("consume transport") {
            best.keep("publish transport", measured(transport_publish(&ours, &qt, n)).await);
        }
        if wanted("publish Producer<T>") || wanted("consume App") {
            best.keep("publish Producer<T>", measured(producer_publish(&producer, n)).await);
        }
        let qrt = queue_name("rawtyped", round);
        raw_declare(&raw_ch, &qrt).await;
        if wanted("publish raw lapin, typed") {
            best.keep(
                "publish raw lapin, typed",
                measured(raw_publish_typed(&raw_ch, &qrt, n)).await,
            );
        }
        let _ = raw_ch
            .queue_delete(qrt.as_str().into(), QueueDeleteOptions::default())
            .await;
        if wanted("consume raw lapin") {
            best.keep("consume raw lapin", raw_consume(&raw, &qr, n).await);
        }
        if wanted("consume transport") {
            best.keep("consume transport", transport_consume(&ours, &qt, n).await);
        }
        if wanted("consume App") {
            best.keep("consume App", app_consume(&url_parsed, &qp, n).await);
        }

        let _ = raw_ch
            .queue_delete(qr.as_str().into(), QueueDeleteOptions::default())
            .await;
        for q in [&qt, &qp] {
            let _ = ours.delete_queue(q, Default::default()).await;
        }
    }

    println!("{n} messages of {BODY} B (Producer<T>: JSON of a small struct), best of {rounds} rounds");
    println!("{:<28} {:>12} {:>10} {:>12}", "case", "msgs/s", "/ raw", "CPU us/msg");
    for (case, raw_case) in [
        ("publish raw lapin", "publish raw lapin"),
        ("publish transport", "publish raw lapin"),
        ("publish raw lapin, typed", "publish raw lapin, typed"),
        ("publish Producer<T>", "publish raw lapin, typed"),
        ("consume raw lapin", "consume raw lapin"),
        ("consume transport", "consume raw lapin"),
        ("consume App", "consume raw lapin"),
    ] {
        let rate = best.rate(case, n);
        println!(
            "{case:<28} {rate:>12.0} {:>10.2} {:>12}",
            rate / best.rate(raw_case, n),
            best.cpu_per_message(case, n)
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"))
        );
    }
    drop(producer_app);
    let _ = ours.close().await;
}
