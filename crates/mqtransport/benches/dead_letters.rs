//! Working with dead letters and delays, on the embedded broker and on the local RabbitMQ
//! (`MQT_TEST_AMQP_URL`):
//!
//! - `DeadLetters` over a queue of N dead letters: count, list, summary, a dry-run replay, a
//!   replay to another queue and a purge, in dead letters per second;
//! - delayed publishes: how late each delay (1 ms to 2 s) arrives, p50 and max over a few.
//!
//! ```sh
//! cargo bench -p mqtransport --bench dead_letters
//! MQT_BENCH_MESSAGES=10000 cargo bench -p mqtransport --bench dead_letters
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use mqtransport::prelude::*;
use mqtransport::{
    DeadLetterFilter, DeadLetters, DynTransport, Envelope, MemoryBroker, Publish, Replay, Transport, headers,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.tick")]
struct Tick {
    sent_ns: u64,
    delay_ms: u64,
}

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn rate(n: usize, took: Duration) -> String {
    format!("{:>10.0} /s  ({took:.2?})", n as f64 / took.as_secs_f64())
}

async fn connect(broker: &Option<MemoryBroker>, url: &str) -> Result<DynTransport, BoxError> {
    Ok(match broker {
        Some(b) => DynTransport::new(b.connect()),
        None => mqtransport::connect(url).await?,
    })
}

async fn dead_letter_tools(label: &str, conn: &DynTransport, n: usize) -> Result<(), BoxError> {
    let dlq = format!("mqt-bench-dlq-{}", std::process::id());
    let parked = format!("{dlq}.parked");
    conn.declare(
        &Topology::new()
            .queue(Queue::durable(&dlq))
            .queue(Queue::durable(&parked)),
    )
    .await?;
    for i in 0..n {
        let mut e = Envelope::new(format!(r#"{{"id":{i}}}"#))
            .with_header(headers::ERROR, if i % 10 == 0 { "card declined" } else { "timeout" })
            .with_header(headers::ORIGINAL_QUEUE, "orders")
            .with_header(headers::ATTEMPT, 3i64);
        e.properties_mut().kind = Some("orders.created".into());
        conn.publish(Publish::to_queue(dlq.as_str(), e)).await?;
    }
    let dead = DeadLetters::new(conn.clone(), &dlq);
    let t = Instant::now();
    assert_eq!(dead.count().await? as usize, n);
    println!("{label}: count                        {}", rate(n, t.elapsed()));
    let t = Instant::now();
    assert_eq!(dead.list(&DeadLetterFilter::new(), n).await?.len(), n);
    println!("{label}: list all                     {}", rate(n, t.elapsed()));
    let t = Instant::now();
    assert_eq!(dead.summary().await?.len(), 2);
    println!("{label}: summary                      {}", rate(n, t.elapsed()));
    let t = Instant::now();
    assert_eq!(dead.replay(&Replay::new().dry_run(true)).await?.replayed(), n);
    println!("{label}: replay, dry run              {}", rate(n, t.elapsed()));
    let t = Instant::now();
    let to_parked = Replay::new()
        .filter(DeadLetterFilter::new().reason_contains("declined"))
        .to(mqtransport::ReplayTarget::Route(Route::queue(parked.as_str())));
    assert_eq!(dead.replay(&to_parked).await?.replayed(), n.div_ceil(10));
    println!("{label}: replay a tenth, of all read  {}", rate(n, t.elapsed()));
    let t = Instant::now();
    let left = n - n.div_ceil(10);
    assert_eq!(
        dead.purge(&DeadLetterFilter::new().name("orders.created")).await? as usize,
        left
    );
    println!("{label}: purge, filtered              {}", rate(left, t.elapsed()));
    conn.delete_queue(&dlq, Default::default()).await?;
    conn.delete_queue(&parked, Default::default()).await?;
    Ok(())
}

async fn on_tick(t: Tick, State(tx): State<mpsc::UnboundedSender<(Tick, u64)>>) {
    let _ = tx.send((t, now_ns()));
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// How late delayed messages arrive on RabbitMQ, through a private set of delay levels.
async fn delay_lateness(url: &str, rounds: usize) -> Result<(), BoxError> {
    let q = format!("mqt-bench-delay-{}", std::process::id());
    let q = q.as_str();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let prefix = format!("{q}.delay");
    let app = App::with_state(tx)
        .url(url)
        .delay_prefix(prefix.as_str())
        .consumer(Consumer::for_queue(Queue::durable(q)).handle(on_tick))
        .build()
        .await?;
    let ticks = app.producer::<Tick>(Route::queue(q));
    let running = app.start().await?;
    // The first delayed publish declares the levels: not part of the figures.
    ticks
        .send_delayed(
            &Tick {
                sent_ns: 0,
                delay_ms: 1,
            },
            Duration::from_millis(1),
        )
        .await?;
    rx.recv().await.ok_or("stopped")?;
    for delay_ms in [1u64, 10, 100, 1000, 2000] {
        let mut late = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            ticks
                .send_delayed(
                    &Tick {
                        sent_ns: now_ns(),
                        delay_ms,
                    },
                    Duration::from_millis(delay_ms),
                )
                .await?;
            let (t, at) = rx.recv().await.ok_or("stopped")?;
            late.push(Duration::from_nanos(at - t.sent_ns) - Duration::from_millis(t.delay_ms));
        }
        late.sort();
        println!(
            "rabbitmq: delay {delay_ms:>5} ms arrives late by p50 {:.2?}, max {:.2?}",
            late[late.len() / 2],
            late[late.len() - 1]
        );
    }
    running.shutdown().await?;
    let conn = mqtransport::connect(url).await?;
    let levels = mqtransport::delay::delay_topology(&prefix);
    for queue in levels
        .queues
        .iter()
        .map(|q| q.name.as_str())
        .chain([q, &format!("{q}.dlq")])
    {
        conn.delete_queue(queue, Default::default()).await?;
    }
    for x in &levels.exchanges {
        conn.delete_exchange(&x.name, false).await?;
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let n = if quick {
        200
    } else {
        env_usize("MQT_BENCH_MESSAGES").unwrap_or(5_000)
    };
    let rounds = if quick { 1 } else { 5 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let url = std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    rt.block_on(async {
        let memory = Some(MemoryBroker::new());
        dead_letter_tools("memory", &connect(&memory, &url).await?, n).await?;
        match connect(&None, &url).await {
            Ok(conn) => {
                dead_letter_tools("rabbitmq", &conn, n).await?;
                conn.close().await?;
                delay_lateness(&url, rounds).await?;
            }
            Err(e) => println!("SKIPPED: RabbitMQ not reachable at {url}: {e}"),
        }
        Ok(())
    })
}
