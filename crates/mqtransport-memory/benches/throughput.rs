//! Throughput of the embedded broker, measured side by side with a bare `tokio::sync::mpsc`
//! channel in the same run, and topic routing cost against the number of bindings.
//!
//! ```sh
//! cargo bench -p mqtransport-memory --bench throughput            # full run
//! MQT_BENCH_MESSAGES=100000 cargo bench -p mqtransport-memory      # shorter
//! ```
//!
//! Prints one line per case, then the ratios `memory/mpsc` (higher is better for the broker)
//! and `routing 100000/10` (time per route with 100,000 bindings over time with 10).
//!
//! The baseline channel carries a bare `Bytes`. A third case, an mpsc channel that carries a
//! `Publish` in and hands out a `Delivery` that is acked, costs what the messages themselves
//! cost, without the broker: the `memory/mpsc` line also gives the broker's rate against it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use mqtransport_core::router::Router;
use mqtransport_core::{
    Acker, Binding, ConsumeOptions, Delivery, Envelope, Exchange, Publish, Queue, ShortStr, Topology, Transport,
};
use mqtransport_memory::MemoryBroker;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn messages() -> usize {
    std::env::var("MQT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn rounds() -> usize {
    std::env::var("MQT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// The same 64-byte body everywhere.
fn body() -> Bytes {
    Bytes::from_static(&[b'x'; 64])
}

/// `queues` producer/consumer pairs over mpsc channels, bounded at 1024 or unbounded (like a
/// broker queue); each consumer "acks" by counting.
async fn mpsc_case(queues: usize, per_queue: usize, bounded: bool) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..queues {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
        let (utx, mut urx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        tasks.push(tokio::spawn(async move {
            let b = body();
            for _ in 0..per_queue {
                let sent = if bounded {
                    tx.send(b.clone()).await.is_ok()
                } else {
                    utx.send(b.clone()).is_ok()
                };
                if !sent {
                    break;
                }
            }
        }));
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let m = if bounded { rx.recv().await } else { urx.recv().await };
                let Some(m) = m else { break };
                black_box(&m);
                n += 1;
                if n == per_queue {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    start.elapsed()
}

/// `queues` producer/consumer pairs over bounded mpsc channels that carry what the broker
/// carries: the producer sends the `Publish` it would publish, the consumer makes the
/// `Delivery` a broker would hand it (with an acker that has nothing to settle) and acks it.
/// The cost of the messages themselves, with the channel's mechanics instead of the broker's.
async fn typed_mpsc_case(queues: usize, per_queue: usize) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..queues {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Publish>(1024);
        let name = ShortStr::from(format!("bench-{i}"));
        tasks.push(tokio::spawn(async move {
            let b = body();
            for _ in 0..per_queue {
                tx.send(Publish::to_queue(name.clone(), Envelope::new(b.clone())))
                    .await
                    .map_err(|_| "the channel closed")?;
            }
            Ok::<(), BoxError>(())
        }));
        tasks.push(tokio::spawn(async move {
            for tag in 1..=per_queue as u64 {
                let p = rx.recv().await.ok_or("the channel closed")?;
                let acker = Acker::settled(tag);
                Delivery::new(p.envelope, p.exchange, p.routing_key, false, acker)
                    .ack()
                    .await?;
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

/// `queues` producer/consumer pairs through the embedded broker: publish (confirmed), consume
/// with prefetch, ack every delivery.
async fn memory_case(queues: usize, per_queue: usize) -> Result<Duration, BoxError> {
    let broker = MemoryBroker::new();
    let setup = broker.connect();
    let mut t = Topology::new();
    for i in 0..queues {
        t = t.queue(Queue::transient(format!("bench-{i}")));
    }
    setup.declare(&t).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..queues {
        // Held once, as a producer holds its routing key: publishing then allocates nothing.
        let name = ShortStr::from(format!("bench-{i}"));
        let consumer_conn = broker.connect();
        let mut consumer = consumer_conn
            .consume(&name, ConsumeOptions::default().prefetch(1000))
            .await?;
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(d) = consumer.next().await {
                d?.ack().await?;
                n += 1;
                if n == per_queue {
                    break;
                }
            }
            drop(consumer_conn);
            Ok::<(), BoxError>(())
        }));
        let producer = broker.connect();
        tasks.push(tokio::spawn(async move {
            let b = body();
            for _ in 0..per_queue {
                producer
                    .publish(Publish::to_queue(name.clone(), Envelope::new(b.clone())))
                    .await?;
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

/// A topic exchange with `n` bindings of four shapes, and keys that each match a few of them.
fn routing_case(n: usize, routes: usize) -> Result<Duration, BoxError> {
    let mut r = Router::new();
    r.declare_exchange(&Exchange::topic("t"))?;
    for i in 0..n {
        let pattern = match i % 4 {
            0 => format!("svc{i}.orders.*"),
            1 => format!("svc{i}.#"),
            2 => format!("*.events{i}.created"),
            _ => format!("#.audit{i}"),
        };
        r.bind(&Binding::queue(format!("q{}", i % 64), "t", pattern))?;
    }
    let keys: Vec<String> = (0..1024)
        .map(|j| {
            let i = (j * 7919) % n.max(1);
            match j % 3 {
                0 => format!("svc{i}.orders.created"),
                1 => format!("eu.events{i}.created"),
                _ => format!("shop.eu.audit{i}"),
            }
        })
        .collect();
    let start = Instant::now();
    let mut matched = 0usize;
    for k in 0..routes {
        let key = keys[k % keys.len()].as_str();
        matched += r.route("t", &[key], None)?.queues().len();
    }
    black_box(matched);
    Ok(start.elapsed())
}

/// `MQT_BENCH_CASE=memory|mpsc|routing` runs only that family (for profiling; `mpsc` includes
/// the mpsc of `Publish` -> `Delivery`).
fn wanted(case: &str) -> bool {
    std::env::var("MQT_BENCH_CASE").map_or(true, |c| c == case)
}

/// `MQT_BENCH_QUEUES=1|4` runs only that many queues (for profiling).
fn wanted_queues(queues: usize) -> bool {
    std::env::var("MQT_BENCH_QUEUES").map_or(true, |q| q == queues.to_string())
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once with few messages.
    let quick = std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let n = if quick { 10_000 } else { messages() };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("{:<56} {:>12}", "case", "per second");
    let mut ratios = Vec::new();
    for queues in [1usize, 4].into_iter().filter(|q| wanted_queues(*q)) {
        let per_queue = n / queues;
        let total = per_queue * queues;
        // Interleave the cases round by round so that machine noise hits them alike.
        let (mut bounded, mut unbounded, mut memory) = (Duration::MAX, Duration::MAX, Duration::MAX);
        let mut typed = Duration::MAX;
        for _ in 0..rounds() {
            if wanted("mpsc") {
                bounded = bounded.min(rt.block_on(mpsc_case(queues, per_queue, true)));
                unbounded = unbounded.min(rt.block_on(mpsc_case(queues, per_queue, false)));
                typed = typed.min(rt.block_on(typed_mpsc_case(queues, per_queue))?);
            }
            if wanted("memory") {
                memory = memory.min(rt.block_on(memory_case(queues, per_queue))?);
            }
        }
        let (b, u, m) = (rate(total, bounded), rate(total, unbounded), rate(total, memory));
        let t = rate(total, typed);
        for (name, r) in [
            (format!("mpsc bounded(1024), {queues} channel(s)"), b),
            (format!("mpsc unbounded, {queues} channel(s)"), u),
            (
                format!("mpsc bounded(1024) of Publish->Delivery, {queues} channel(s)"),
                t,
            ),
            (format!("memory publish->consume->ack, {queues} queue(s)"), m),
        ] {
            println!("{name:<56} {r:>12.0}");
        }
        if wanted("mpsc") && wanted("memory") {
            ratios.push((queues, m / b, m / u, m / t));
        }
    }
    let routes = if quick { 10_000 } else { 1_000_000 };
    let sizes = [10usize, 10_000, 100_000];
    let mut per_route = [Duration::MAX; 3];
    if wanted("routing") {
        for _ in 0..rounds() {
            for (k, bindings) in sizes.iter().enumerate() {
                per_route[k] = per_route[k].min(routing_case(*bindings, routes)?);
            }
        }
        for (bindings, d) in sizes.iter().zip(per_route) {
            println!(
                "{:<56} {:>12.0}",
                format!("topic routing, {bindings} bindings (routes)"),
                rate(routes, d)
            );
        }
    }
    for (queues, bounded, unbounded, typed) in ratios {
        println!(
            "ratio memory/mpsc {queues} queue(s): {bounded:.2} (vs unbounded mpsc: {unbounded:.2}; vs mpsc of Publish->Delivery: {typed:.2})"
        );
    }
    if wanted("routing") {
        println!(
            "ratio routing 100000/10 bindings (time per route): {:.2}",
            per_route[2].as_secs_f64() / per_route[0].as_secs_f64()
        );
    }
    Ok(())
}
