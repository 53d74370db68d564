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

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use mqtransport_core::router::Router;
use mqtransport_core::{
    Binding, ConsumeOptions, Envelope, Exchange, Publish, Queue, ShortStr, Topology, Transport,
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

/// `queues` producer/consumer pairs over bounded mpsc channels; each consumer "acks" by counting.
async fn mpsc_case(queues: usize, per_queue: usize) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..queues {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
        tasks.push(tokio::spawn(async move {
            let b = body();
            for _ in 0..per_queue {
                if tx.send(b.clone()).await.is_err() {
                    break;
                }
            }
        }));
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(m) = rx.recv().await {
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

/// `MQT_BENCH_CASE=memory|mpsc|routing` runs only that family (for profiling).
fn wanted(case: &str) -> bool {
    std::env::var("MQT_BENCH_CASE").map_or(true, |c| c == case)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn best<F: FnMut() -> Result<Duration, BoxError>>(mut f: F) -> Result<Duration, BoxError> {
    let mut best = Duration::MAX;
    for _ in 0..rounds() {
        best = best.min(f()?);
    }
    Ok(best)
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once with few messages.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let n = if quick { 10_000 } else { messages() };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("{:<52} {:>14}", "case", "msgs/s");
    let mut ratios = Vec::new();
    for queues in [1usize, 4] {
        let per_queue = n / queues;
        let total = per_queue * queues;
        // Interleave the two so that machine noise hits both alike.
        let mut mpsc_best = Duration::MAX;
        let mut mem_best = Duration::MAX;
        for _ in 0..rounds() {
            if wanted("mpsc") {
                mpsc_best = mpsc_best.min(rt.block_on(mpsc_case(queues, per_queue)));
            }
            if wanted("memory") {
                mem_best = mem_best.min(rt.block_on(memory_case(queues, per_queue))?);
            }
        }
        let (m, b) = (rate(total, mem_best), rate(total, mpsc_best));
        println!(
            "{:<52} {:>14.0}",
            format!("mpsc baseline, {queues} channel(s)"),
            b
        );
        println!(
            "{:<52} {:>14.0}",
            format!("memory publish->consume->ack, {queues} queue(s)"),
            m
        );
        ratios.push((queues, m / b));
    }
    let routes = if quick { 10_000 } else { 2_000_000 };
    let mut per_route = Vec::new();
    for bindings in [10usize, 10_000, 100_000]
        .into_iter()
        .filter(|_| wanted("routing"))
    {
        let d = best(|| routing_case(bindings, routes))?;
        println!(
            "{:<52} {:>14.0}",
            format!("topic routing, {bindings} bindings (routes/s)"),
            rate(routes, d)
        );
        per_route.push((bindings, d));
    }
    for (queues, ratio) in ratios {
        println!("ratio memory/mpsc {queues} queue(s): {ratio:.2}");
    }
    if let (Some((_, small)), Some((_, large))) = (per_route.first(), per_route.last()) {
        println!(
            "ratio routing 100000/10 bindings (time per route): {:.2}",
            large.as_secs_f64() / small.as_secs_f64()
        );
    }
    Ok(())
}
