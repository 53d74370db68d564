//! Running a bench: the queues, the consumers' apps, the producers, the progress, the report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use mqtransport::prelude::*;
use mqtransport::{
    Acknowledge, Confirmation, DeadLetterPolicy, Envelope, Publish, Publisher, Running, Topology, Transport,
};

use super::config::{BenchConfig, QueueKind, StopAfter};
use super::report::{BenchReport, Latency};

/// How the run is going, as reported every [`PROGRESS_EVERY`].
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Publishes confirmed so far.
    pub confirmed: u64,
    /// Messages consumed so far.
    pub consumed: u64,
    /// Since the first publish.
    pub elapsed: Duration,
}

/// How often [`run`] reports its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The largest latency recorded: a minute, in microseconds.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Counts and latencies, shared by the producers and the consumers' handler.
struct Stats {
    /// When publishing began (the apps' connects and declarations are not timed).
    started: std::sync::OnceLock<Instant>,
    sent: AtomicU64,
    confirmed: AtomicU64,
    returned: AtomicU64,
    nacked: AtomicU64,
    failed: AtomicU64,
    consumed: AtomicU64,
    /// Microseconds from `started` to the last publish answered / message consumed.
    last_confirmed_us: AtomicU64,
    last_consumed_us: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    confirm_latency: Mutex<Histogram<u64>>,
}

impl Stats {
    fn new() -> anyhow::Result<Stats> {
        let histogram = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("cannot make a latency histogram");
        Ok(Stats {
            started: std::sync::OnceLock::new(),
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            last_confirmed_us: AtomicU64::new(0),
            last_consumed_us: AtomicU64::new(0),
            latency: Mutex::new(histogram()?),
            confirm_latency: Mutex::new(histogram()?),
        })
    }

    /// Starts the clock (once).
    fn begin(&self) {
        self.started.get_or_init(Instant::now);
    }

    fn elapsed(&self) -> Duration {
        self.started.get().map_or(Duration::ZERO, Instant::elapsed)
    }

    fn since_start_us(&self) -> u64 {
        u64::try_from(self.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn progress(&self) -> Progress {
        Progress {
            confirmed: self.confirmed.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
            elapsed: self.elapsed(),
        }
    }

    /// A message consumed: its latency from the send time its body carries.
    fn took(&self, body: &[u8]) {
        if let Some(sent) = body.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            let latency = now_us().saturating_sub(u64::from_be_bytes(sent));
            self.latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .saturating_record(latency.max(1));
        }
        self.consumed.fetch_add(1, Ordering::Relaxed);
        self.last_consumed_us.store(self.since_start_us(), Ordering::Relaxed);
    }

    /// A publish answered after `took`.
    fn answered(&self, result: &mqtransport::Result<Confirmation>, took: Duration) {
        let counter = match result {
            Ok(Confirmation::Confirmed) => {
                let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                self.confirm_latency
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .saturating_record(us.max(1));
                &self.confirmed
            }
            Ok(Confirmation::Returned { .. }) => &self.returned,
            Ok(_) => &self.nacked,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.last_confirmed_us.store(self.since_start_us(), Ordering::Relaxed);
    }
}

/// Microseconds since the Unix epoch: the send time a body carries.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The consumers' handler: every message, whatever its name.
async fn take(body: Bytes, State(stats): State<Arc<Stats>>) {
    stats.took(&body);
}

fn declaration(name: &str, kind: QueueKind) -> Queue {
    match kind {
        QueueKind::Classic => Queue::durable(name),
        QueueKind::Quorum => Queue::quorum(name),
    }
}

/// Runs the bench on the broker `url` names, calling `progress` every [`PROGRESS_EVERY`];
/// deletes its queues whether it succeeded or not.
pub async fn run(url: &str, config: &BenchConfig, mut progress: impl FnMut(&Progress)) -> anyhow::Result<BenchReport> {
    config.check()?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let queues: Vec<String> = (0..config.queues)
        .map(|i| format!("mqt-bench-{}-{i}", &tag[..12]))
        .collect();
    let stats = Arc::new(Stats::new()?);
    let result = measure(url, config, &queues, &stats, &mut progress).await;
    let cleanup = delete_queues(url, &queues).await;
    let report = result?;
    cleanup?;
    Ok(report)
}

/// Deletes the bench's queues over a connection of its own (the apps' are closed by then).
async fn delete_queues(url: &str, queues: &[String]) -> anyhow::Result<()> {
    let transport = crate::broker::connect(url).await?;
    for q in queues {
        transport
            .delete_queue(q, Default::default())
            .await
            .with_context(|| format!("cannot delete the bench queue '{q}'"))?;
    }
    let _ = transport.close().await;
    Ok(())
}

/// The apps: consumer `c` of queue `c % queues` lives in app `c / queues` (a queue has one
/// consumer per app), so competing consumers of a queue are separate connections, as separate
/// service instances are. App 0 declares every queue and publishes.
async fn start_apps(
    url: &str,
    config: &BenchConfig,
    queues: &[String],
    stats: &Arc<Stats>,
) -> anyhow::Result<Vec<Running>> {
    let apps = config.consumers.div_ceil(queues.len()).max(1);
    let mut running = Vec::with_capacity(apps);
    for a in 0..apps {
        let mut builder = App::with_state(Arc::clone(stats)).url(url).name("mqt-bench");
        if a == 0 {
            let topology = queues
                .iter()
                .fold(Topology::new(), |t, q| t.queue(declaration(q, config.queue_kind)));
            builder = builder.topology(topology);
        }
        for c in (a * queues.len()..((a + 1) * queues.len()).min(config.consumers)).map(|c| c % queues.len()) {
            let acknowledge = if config.auto_ack {
                Acknowledge::BrokerNoAck
            } else {
                Acknowledge::AfterHandling
            };
            builder = builder.consumer(
                Consumer::for_queue(declaration(&queues[c], config.queue_kind))
                    .prefetch(config.prefetch)
                    .acknowledge(acknowledge)
                    .dead_letter(DeadLetterPolicy::Broker)
                    .fallback(take),
            );
        }
        let app = builder.build().await.context("cannot set up the bench")?;
        running.push(app.start().await.context("cannot start the bench's consumers")?);
    }
    Ok(running)
}

async fn measure(
    url: &str,
    config: &BenchConfig,
    queues: &[String],
    stats: &Arc<Stats>,
    progress: &mut impl FnMut(&Progress),
) -> anyhow::Result<BenchReport> {
    let apps = start_apps(url, config, queues, stats).await?;
    let publisher = apps
        .first()
        .map(Running::publisher)
        .context("the bench started no app")?;
    stats.begin();
    let deadline = match config.stop {
        StopAfter::Duration(d) => Some(tokio::time::Instant::now() + d),
        StopAfter::Count(_) => None,
    };
    let mut producers: FuturesUnordered<_> = (0..config.producers)
        .map(|i| {
            produce(
                publisher.clone(),
                config.clone(),
                queues.to_vec(),
                i,
                deadline,
                Arc::clone(stats),
            )
        })
        .collect();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    // Publishing: until every producer is done.
    while !producers.is_empty() {
        tokio::select! {
            _ = tick.tick() => progress(&stats.progress()),
            Some(()) = producers.next() => {}
        }
    }
    // Draining: until everything confirmed is consumed, or nothing came for the drain timeout.
    if config.consumers > 0 {
        let mut last = (stats.consumed.load(Ordering::Relaxed), Instant::now());
        loop {
            let consumed = stats.consumed.load(Ordering::Relaxed);
            if consumed >= stats.confirmed.load(Ordering::Relaxed) {
                break;
            }
            if consumed != last.0 {
                last = (consumed, Instant::now());
            } else if last.1.elapsed() >= config.drain_timeout {
                break;
            }
            tick.tick().await;
            progress(&stats.progress());
        }
    }
    progress(&stats.progress());
    for app in apps {
        app.shutdown()
            .await
            .context("the bench's app did not shut down cleanly")?;
    }
    Ok(report(url, config, queues, stats))
}

/// Producer `i`: publishes its share (or until the deadline), round robin over the queues,
/// keeping up to the confirm window unconfirmed, paced to the rate if one is set.
async fn produce(
    publisher: Publisher,
    config: BenchConfig,
    queues: Vec<String>,
    i: usize,
    deadline: Option<tokio::time::Instant>,
    stats: Arc<Stats>,
) {
    let share = config.share(i);
    let padding = Bytes::from(vec![0u8; config.size - 8]);
    let started = tokio::time::Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut n: u64 = 0;
    loop {
        let more = share.is_none_or(|s| n < s) && deadline.is_none_or(|d| tokio::time::Instant::now() < d);
        if !more {
            break;
        }
        if in_flight.len() >= config.confirm_window {
            in_flight.next().await;
            continue;
        }
        if let Some(rate) = config.rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            if due > tokio::time::Instant::now() {
                // Confirms keep coming while the producer waits for its next slot.
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                }
            }
        }
        let mut body = BytesMut::with_capacity(config.size);
        body.put_u64(now_us());
        body.put_slice(&padding);
        let queue = queues[(n as usize + i) % queues.len()].as_str();
        let publish = Publish::to_queue(queue, Envelope::new(body.freeze())).mandatory(true);
        let publisher = &publisher;
        let stats = &stats;
        stats.sent.fetch_add(1, Ordering::Relaxed);
        in_flight.push(async move {
            let sent = Instant::now();
            let result = publisher.publish_raw(publish).await;
            stats.answered(&result, sent.elapsed());
        });
        n += 1;
    }
    while in_flight.next().await.is_some() {}
}

fn report(url: &str, config: &BenchConfig, queues: &[String], stats: &Stats) -> BenchReport {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let secs = |us: u64| us as f64 / 1e6;
    let publish_seconds = secs(load(&stats.last_confirmed_us));
    let consume_seconds = secs(load(&stats.last_consumed_us));
    let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let latency = Latency::of(&stats.latency.lock().unwrap_or_else(PoisonError::into_inner));
    let confirm_latency = Latency::of(&stats.confirm_latency.lock().unwrap_or_else(PoisonError::into_inner));
    BenchReport {
        broker: crate::broker::redacted(url),
        queues: queues.to_vec(),
        queue_type: config.queue_kind,
        producers: config.producers,
        consumers: config.consumers,
        size: config.size,
        confirm_window: config.confirm_window,
        prefetch: config.prefetch,
        auto_ack: config.auto_ack,
        published: load(&stats.sent),
        confirmed: load(&stats.confirmed),
        returned: load(&stats.returned),
        nacked: load(&stats.nacked),
        failed: load(&stats.failed),
        consumed: load(&stats.consumed),
        publish_seconds,
        consume_seconds,
        publish_rate: rate(load(&stats.confirmed), publish_seconds),
        consume_rate: rate(load(&stats.consumed), consume_seconds),
        latency,
        confirm_latency,
    }
}
