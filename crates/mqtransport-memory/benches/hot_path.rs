//! The cost of one message on the embedded broker's hot path, without threads: one task on a
//! current-thread runtime publishes a batch of messages to a queue, then consumes and acks
//! them, and does the same through a bounded `tokio::sync::mpsc` channel for comparison.
//!
//! With no second core there is no cross-core traffic and no scheduling between workers, so
//! what this measures is the work each message takes. Under callgrind it is a count of
//! instructions, the same in every run whatever else the machine does:
//!
//! ```sh
//! cargo bench -p mqtransport-memory --bench hot_path                   # time per message
//! cargo bench -p mqtransport-memory --bench hot_path --no-run          # then, for instructions:
//! MQT_HOT_PATH_CASE=memory MQT_BENCH_ROUNDS=1 valgrind --tool=callgrind \
//!     target/release/deps/hot_path-<hash> --bench
//! ```
//!
//! The instructions per message are the callgrind total divided by the messages the run
//! prints as run (the runtime's start-up is a few hundred thousand instructions of it).
//! `MQT_HOT_PATH_CASE` is `memory`, `mpsc` (a bare `Bytes` through the channel) or `typed` (a
//! `Publish` through the channel, handed out as an acked `Delivery`: what the messages cost
//! without the broker).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use mqtransport_core::{Acker, ConsumeOptions, Delivery, Envelope, Publish, Queue, ShortStr, Topology, Transport};
use mqtransport_memory::MemoryBroker;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Messages published before they are consumed: within the flow limit and the prefetch, so
/// that the publisher never waits for the consumer (one task plays both).
const BATCH: usize = 500;

/// Publishes and consumes `batches` batches through the embedded broker.
async fn memory(batches: usize) -> Result<Duration, BoxError> {
    let broker = MemoryBroker::new();
    let conn = broker.connect();
    conn.declare(&Topology::new().queue(Queue::transient("hot"))).await?;
    let mut consumer = conn.consume("hot", ConsumeOptions::default().prefetch(1000)).await?;
    let name = ShortStr::from("hot");
    let body = Bytes::from_static(&[b'x'; 64]);
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..BATCH {
            conn.publish(Publish::to_queue(name.clone(), Envelope::new(body.clone())))
                .await?;
        }
        for _ in 0..BATCH {
            let delivery = consumer.next().await.ok_or("the consumer ended")??;
            delivery.ack().await?;
        }
    }
    Ok(start.elapsed())
}

/// The same through a bounded mpsc channel.
async fn mpsc(batches: usize) -> Result<Duration, BoxError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let body = Bytes::from_static(&[b'x'; 64]);
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..BATCH {
            tx.send(body.clone()).await?;
        }
        for _ in 0..BATCH {
            black_box(rx.recv().await.ok_or("the channel closed")?);
        }
    }
    Ok(start.elapsed())
}

/// The same messages through a bounded mpsc channel: a `Publish` in, a `Delivery` out (with an
/// acker that has nothing to settle), acked. What the messages cost without the broker.
async fn typed(batches: usize) -> Result<Duration, BoxError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Publish>(1024);
    let name = ShortStr::from("hot");
    let body = Bytes::from_static(&[b'x'; 64]);
    let mut tag = 0;
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..BATCH {
            tx.send(Publish::to_queue(name.clone(), Envelope::new(body.clone())))
                .await?;
        }
        for _ in 0..BATCH {
            let p = rx.recv().await.ok_or("the channel closed")?;
            tag += 1;
            let delivery = Delivery::new(p.envelope, p.exchange, p.routing_key, false, Acker::settled(tag));
            delivery.ack().await?;
        }
    }
    Ok(start.elapsed())
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once with few messages.
    let quick = !std::env::args().any(|a| a == "--bench");
    let batches = if quick { 20 } else { 4_000 };
    let messages = batches * BATCH;
    let case = std::env::var("MQT_HOT_PATH_CASE").ok();
    let wanted = |c: &str| case.as_deref().is_none_or(|w| w == c);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let per_message = |d: Duration| d.as_secs_f64() * 1e9 / messages as f64;
    let rounds: usize = std::env::var("MQT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (mut m, mut p, mut t) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        if wanted("memory") {
            m = m.min(rt.block_on(memory(batches))?);
        }
        if wanted("mpsc") {
            p = p.min(rt.block_on(mpsc(batches))?);
        }
        if wanted("typed") {
            t = t.min(rt.block_on(typed(batches))?);
        }
    }
    println!(
        "{messages} messages per case and round, {} run per case, one thread",
        messages * rounds
    );
    if wanted("memory") {
        println!(
            "{:<48} {:>8.1} ns/message",
            "memory publish->consume->ack",
            per_message(m)
        );
    }
    if wanted("mpsc") {
        println!(
            "{:<48} {:>8.1} ns/message",
            "mpsc bounded(1024) send->recv",
            per_message(p)
        );
    }
    if wanted("typed") {
        println!(
            "{:<48} {:>8.1} ns/message",
            "mpsc bounded(1024) Publish->Delivery->ack",
            per_message(t)
        );
    }
    if case.is_none() {
        println!(
            "ratio time memory/mpsc: {:.2} (memory/mpsc of Publish->Delivery: {:.2})",
            m.as_secs_f64() / p.as_secs_f64(),
            m.as_secs_f64() / t.as_secs_f64()
        );
    }
    Ok(())
}
