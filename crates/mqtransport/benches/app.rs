//! The App's consume path (decode JSON, validate, dispatch by name, run the handler, ack)
//! against a bare transport loop (consume, ack) on the same pre-filled queue, side by side in
//! one run, on the embedded broker, on RabbitMQ (`MQT_TEST_AMQP_URL`) and, built with the `sqs`
//! feature, on SQS (`MQT_TEST_SQS_URL`; against moto, a Python server, the absolute figure says
//! little about AWS, only that the path works and what it costs beside the bare loop). On the embedded broker
//! also against a bare bounded tokio mpsc carrying the same bodies: the floor of any in-process
//! hand-off. The message is one integer field; the handler does nothing.
//!
//! ```sh
//! cargo bench -p mqtransport --bench app                     # full run
//! MQT_BENCH_MESSAGES=20000 cargo bench -p mqtransport --bench app
//! ```
//!
//! Prints messages per second for each case and the ratio `app/bare` per broker; built with the
//! `metrics` feature, also the App recording metrics to a Prometheus recorder, and the ratio
//! `app with metrics/app`.
//! `MQT_BENCH_SQS_MESSAGES` (default 300) sets the SQS count.
//! `MQT_BENCH_BROKER=memory` (or `rabbitmq`, `sqs`) runs one broker only, `MQT_BENCH_CASE=app` (or
//! `bare`, `mpsc`, `metrics`) one case only (for profiling).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mqtransport::prelude::*;
use mqtransport::{DynTransport, MemoryBroker};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Serialize, Deserialize, Message, garde::Validate)]
#[message(name = "bench.order")]
struct Order {
    #[garde(range(min = 1))]
    id: u64,
}

fn order(id: u64) -> Order {
    Order { id }
}

const PREFETCH: u16 = 256;

#[derive(Clone)]
enum Broker {
    Memory(MemoryBroker),
    /// RabbitMQ or SQS, by URL.
    Url(String),
}

impl Broker {
    async fn connect(&self) -> Result<DynTransport, BoxError> {
        Ok(match self {
            Broker::Memory(b) => DynTransport::new(b.connect()),
            Broker::Url(url) => mqtransport::connect(url).await?,
        })
    }
}

/// Declares `queue` and fills it with `n` encoded orders.
async fn fill(conn: &DynTransport, queue: &str, n: usize) -> Result<(), BoxError> {
    conn.declare(&Topology::new().queue(Queue::durable(queue))).await?;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for i in 0..n {
        let envelope = mqtransport::encode(&order(i as u64 + 1))?;
        pending.push(conn.publish(Publish::to_queue(queue, envelope)));
        if pending.len() >= 512 {
            pending.next().await.transpose()?;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

/// Consume and ack `n` deliveries with the transport alone.
async fn bare(broker: &Broker, queue: &str, n: usize) -> Result<Duration, BoxError> {
    let conn = broker.connect().await?;
    fill(&conn, queue, n).await?;
    let start = Instant::now();
    let mut consumer = conn
        .consume(queue, ConsumeOptions::default().prefetch(PREFETCH))
        .await?;
    for _ in 0..n {
        let d = consumer.next().await.ok_or("consumer ended")??;
        d.ack().await?;
    }
    let elapsed = start.elapsed();
    drop(consumer);
    conn.delete_queue(queue, Default::default()).await?;
    conn.close().await?;
    Ok(elapsed)
}

/// A bare bounded mpsc (capacity = the prefetch) carrying the same encoded bodies from a
/// producer task to a receiver that takes `n`.
async fn mpsc(n: usize) -> Result<Duration, BoxError> {
    let body = mqtransport::encode(&order(1))?.body;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(usize::from(PREFETCH));
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        for _ in 0..n {
            if tx.send(body.clone()).await.is_err() {
                return;
            }
        }
    });
    for _ in 0..n {
        let b = rx.recv().await.ok_or("the mpsc closed early")?;
        std::hint::black_box(&b);
    }
    let elapsed = start.elapsed();
    producer.await?;
    Ok(elapsed)
}

#[derive(Clone)]
struct Count {
    seen: Arc<AtomicUsize>,
}

async fn handle(order: Order, State(count): State<Count>) {
    std::hint::black_box(&order);
    count.seen.fetch_add(1, Ordering::Relaxed);
}

/// Consume `n` deliveries through the App: decode, validate, dispatch, handle, ack; with
/// `metrics`, recording them (feature `metrics`, to the Prometheus recorder `main` installed).
async fn app(broker: &Broker, queue: &str, n: usize, metrics: bool) -> Result<Duration, BoxError> {
    let setup = broker.connect().await?;
    fill(&setup, queue, n).await?;
    let settled = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    // When the last delivery was settled: the shutdown after it is not timed (the bare loop's
    // is not either).
    let finished: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let (s, d, f) = (Arc::clone(&settled), Arc::clone(&done), Arc::clone(&finished));
    let app = App::with_state(Count { seen: Arc::default() });
    #[cfg(feature = "metrics")]
    let app = app.metrics(metrics);
    #[cfg(not(feature = "metrics"))]
    let _ = metrics;
    let app = app
        .transport(broker.connect().await?)
        .on_settle(move |_| {
            if s.fetch_add(1, Ordering::Relaxed) + 1 == n {
                let _ = f.set(Instant::now());
                d.notify_one();
            }
        })
        .consumer(
            Consumer::new(queue)
                .handle(handle)
                .concurrency(
                    std::env::var("MQT_BENCH_CONCURRENCY")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(mqtransport::DEFAULT_CONCURRENCY),
                )
                .prefetch(PREFETCH)
                .dead_letter(mqtransport::DeadLetterPolicy::Broker),
        )
        .build()
        .await?;
    let start = Instant::now();
    let running = app.start().await?;
    // Returns the error of a consumer that failed instead of waiting forever.
    running.run_until(done.notified()).await?;
    let elapsed = finished
        .get()
        .map_or_else(|| start.elapsed(), |at| at.duration_since(start));
    setup.delete_queue(queue, Default::default()).await?;
    setup.close().await?;
    Ok(elapsed)
}

/// Runs a case; if it fails, deletes its queue before reporting the error.
async fn cleaned(
    broker: &Broker,
    queue: &str,
    case: impl std::future::Future<Output = Result<Duration, BoxError>>,
) -> Result<Duration, BoxError> {
    let result = case.await;
    if result.is_err()
        && let Ok(conn) = broker.connect().await
    {
        let _ = conn.delete_queue(queue, Default::default()).await;
        let _ = conn.close().await;
    }
    result
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

/// Whether `case` runs (`MQT_BENCH_CASE` names one, else all).
fn wanted(case: &str) -> bool {
    std::env::var("MQT_BENCH_CASE").map_or(true, |c| c == case)
}

fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let rounds = if quick {
        1
    } else {
        env_usize("MQT_BENCH_ROUNDS").unwrap_or(3)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let url = std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    // `MQT_BENCH_BROKER=memory|rabbitmq` runs one broker only (for profiling).
    let only = std::env::var("MQT_BENCH_BROKER").ok();
    let rabbit_up = rt.block_on(async { mqtransport::connect(&url).await.map(drop) });
    let mut brokers = vec![(
        "memory",
        Broker::Memory(MemoryBroker::new()),
        if quick {
            2_000
        } else {
            env_usize("MQT_BENCH_MESSAGES").unwrap_or(200_000)
        },
    )];
    match rabbit_up {
        Ok(()) => brokers.push((
            "rabbitmq",
            Broker::Url(url.clone()),
            if quick {
                500
            } else {
                env_usize("MQT_BENCH_MESSAGES").map_or(50_000, |n| n / 4)
            },
        )),
        Err(e) if std::env::var("MQT_REQUIRE_BROKERS").is_ok_and(|v| v == "1") => {
            return Err(format!("RabbitMQ is required but not reachable: {e}").into());
        }
        Err(e) => println!("SKIPPED: RabbitMQ not reachable ({e})"),
    }
    #[cfg(feature = "sqs")]
    {
        let sqs = std::env::var("MQT_TEST_SQS_URL")
            .unwrap_or_else(|_| "sqs://test:test@us-east-1/?endpoint=http://127.0.0.1:4566".into());
        let sqs = format!("{sqs}{}wait=1s", if sqs.contains('?') { "&" } else { "?" });
        match rt.block_on(async { mqtransport::connect(&sqs).await.map(drop) }) {
            Ok(()) => brokers.push((
                "sqs",
                Broker::Url(sqs),
                // moto takes some 50 sends a second: a few hundred messages say enough.
                if quick {
                    50
                } else {
                    env_usize("MQT_BENCH_SQS_MESSAGES").unwrap_or(300)
                },
            )),
            Err(e) if std::env::var("MQT_REQUIRE_BROKERS").is_ok_and(|v| v == "1") => {
                return Err(format!("SQS is required but not reachable: {e}").into());
            }
            Err(e) => println!("SKIPPED: SQS not reachable ({e})"),
        }
    }
    println!("{:<52} {:>12}", "case", "per second");
    let mut ratios = Vec::new();
    let mut mpsc_ratio = None;
    let mut metrics_ratios = Vec::new();
    #[cfg(feature = "metrics")]
    let _prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    brokers.retain(|(name, _, _)| only.as_deref().is_none_or(|o| o == *name));
    for (name, broker, n) in &brokers {
        let (mut b, mut a, mut m, mut am) = (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
        let in_memory = matches!(broker, Broker::Memory(_));
        // Interleaved round by round, so that machine noise hits all alike; best of each.
        for round in 0..rounds {
            let q = format!("mqt-bench-app-{}-{round}", std::process::id());
            if in_memory && wanted("mpsc") {
                m = m.min(rt.block_on(mpsc(*n))?);
            }
            if wanted("bare") {
                b = b.min(rt.block_on(cleaned(
                    broker,
                    &format!("{q}-bare"),
                    bare(broker, &format!("{q}-bare"), *n),
                ))?);
            }
            if wanted("app") {
                a = a.min(rt.block_on(cleaned(
                    broker,
                    &format!("{q}-app"),
                    app(broker, &format!("{q}-app"), *n, false),
                ))?);
            }
            if cfg!(feature = "metrics") && wanted("metrics") {
                am = am.min(rt.block_on(cleaned(
                    broker,
                    &format!("{q}-metrics"),
                    app(broker, &format!("{q}-metrics"), *n, true),
                ))?);
            }
        }
        if in_memory {
            println!(
                "{:<52} {:>12.0}",
                format!("{name}: bare bounded mpsc ({n} bodies)"),
                rate(*n, m)
            );
            mpsc_ratio = Some(rate(*n, a) / rate(*n, m));
        }
        println!(
            "{:<52} {:>12.0}",
            format!("{name}: bare consume + ack ({n} messages)"),
            rate(*n, b)
        );
        println!(
            "{:<52} {:>12.0}",
            format!("{name}: app decode + validate + dispatch + ack"),
            rate(*n, a)
        );
        if am != Duration::MAX {
            println!(
                "{:<52} {:>12.0}",
                format!("{name}: app with metrics (Prometheus recorder)"),
                rate(*n, am)
            );
            metrics_ratios.push((name, rate(*n, am) / rate(*n, a)));
        }
        ratios.push((name, rate(*n, a) / rate(*n, b)));
    }
    for (name, r) in ratios {
        println!("ratio app/bare {name}: {r:.2}");
    }
    if let Some(r) = mpsc_ratio {
        println!("ratio app/mpsc memory: {r:.2}");
    }
    for (name, r) in metrics_ratios {
        println!("ratio app with metrics/app {name}: {r:.2}");
    }
    Ok(())
}
