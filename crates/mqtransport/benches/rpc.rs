//! Request/reply through the App (`Requester` calling a handler that returns its reply) against
//! raw lapin over direct reply-to written the fastest way, side by side in one run on the local
//! RabbitMQ (`MQT_TEST_AMQP_URL`); and the App's round trips on the embedded broker.
//!
//! - sequential: one call at a time; p50 and p99 latency;
//! - concurrent: 64 calls in flight; calls per second. Raw lapin keeps one reply consumer and a
//!   map of waiting calls by correlation id, and its responder answers each request on a task
//!   of its own (publish, confirm, ack); the App's responder runs up to 64 handlers at once.
//!
//! Raw lapin runs twice: bare (a request with only `reply_to` and `correlation_id`, a reply
//! with only `correlation_id`), and with the properties the App's messages carry (content
//! type, type, message id, timestamp; the request's deadline as `expiration` and
//! `x-mqt-deadline`, sent mandatory), since RabbitMQ takes longer over a message with
//! properties and a caller that must not hang sends its deadline along. Two mixed cases say
//! which side costs what: the App's requester calling raw lapin's responder, and raw lapin's
//! caller calling the App's responder (both with the App's properties; sequential only).
//!
//! ```sh
//! cargo bench -p mqtransport --bench rpc
//! MQT_BENCH_MESSAGES=20000 MQT_BENCH_ROUNDS=5 cargo bench -p mqtransport --bench rpc
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mqtransport::prelude::*;
use mqtransport::{DynTransport, MemoryBroker, Running};
use mqtransport_amqp::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use mqtransport_amqp::lapin::types::{AMQPValue, FieldTable};
use mqtransport_amqp::lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

const IN_FLIGHT: usize = 64;
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.echo")]
struct Echo {
    n: u64,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.echoed")]
struct Echoed {
    n: u64,
}

async fn echo(request: Echo) -> Echoed {
    Echoed { n: request.n }
}

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// The App pair: a responder consuming `queue`, and a caller's requester.
async fn app_pair(
    responder_transport: DynTransport,
    caller_transport: DynTransport,
    queue: &str,
) -> (Running, App, Requester<Echo, Echoed>) {
    let responder = App::builder()
        .transport(responder_transport)
        .tracing(false)
        .consumer(
            Consumer::for_queue(Queue::transient(queue))
                .handle(echo)
                .concurrency(IN_FLIGHT),
        )
        .build()
        .await
        .expect("responder");
    let running = responder.start().await.expect("start");
    let caller = App::builder()
        .transport(caller_transport)
        .tracing(false)
        .build()
        .await
        .expect("caller");
    let requester = caller.requester::<Echo, Echoed>(Route::queue(queue));
    (running, caller, requester)
}

async fn app_sequential(requester: &Requester<Echo, Echoed>, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let start = Instant::now();
        let r = requester.request(&Echo { n: i }).await.expect("reply");
        assert_eq!(r.n, i);
        lat.push(start.elapsed());
    }
    lat.sort();
    lat
}

async fn app_concurrent(requester: &Requester<Echo, Echoed>, n: usize) -> Duration {
    let start = Instant::now();
    let mut window = FuturesUnordered::new();
    for i in 0..n as u64 {
        if window.len() == IN_FLIGHT {
            let done: Result<Echoed, RpcError> = window.next().await.expect("in flight");
            done.expect("reply");
        }
        let r = requester.clone();
        window.push(async move { r.request(&Echo { n: i }).await });
    }
    while let Some(done) = window.next().await {
        done.expect("reply");
    }
    start.elapsed()
}

/// What raw lapin puts on its messages: nothing but the RPC fields, or what the App's carry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Props {
    Bare,
    AsTheApp,
}

impl Props {
    /// `props` with a message's content type, type, message id and timestamp, when the App's
    /// are wanted.
    fn stamp(self, props: BasicProperties, kind: &str) -> BasicProperties {
        if self == Props::Bare {
            return props;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        props
            .with_content_type("application/json".into())
            .with_type(kind.into())
            .with_message_id(uuid::Uuid::now_v7().to_string().into())
            .with_timestamp(now.as_secs())
    }
}

/// Raw lapin's responder: each request answered on a task of its own.
async fn raw_responder(server: &Connection, queue: &str, props: Props) -> tokio::task::JoinHandle<()> {
    let ch = server.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    ch.basic_qos(256, BasicQosOptions::default()).await.expect("qos");
    let mut requests = ch
        .basic_consume(
            queue.into(),
            "raw-rpc-server".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    tokio::spawn(async move {
        while let Some(Ok(req)) = requests.next().await {
            let ch = ch.clone();
            tokio::spawn(async move {
                let to = req.properties.reply_to().clone().unwrap_or_else(|| "".into());
                let props = props.stamp(
                    BasicProperties::default()
                        .with_correlation_id(req.properties.correlation_id().clone().unwrap_or_else(|| "".into())),
                    "bench.echoed",
                );
                if let Ok(confirm) = ch
                    .basic_publish("".into(), to, BasicPublishOptions::default(), &req.data, props)
                    .await
                {
                    let _ = confirm.await;
                }
                let _ = req.acker.ack(BasicAckOptions::default()).await;
            });
        }
    })
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// Raw lapin's caller: one reply consumer handing replies to waiting calls by correlation id.
struct RawCaller {
    ch: Channel,
    props: Props,
    waiting: Waiting,
    reader: tokio::task::JoinHandle<()>,
}

impl RawCaller {
    async fn new(conn: &Connection, props: Props) -> RawCaller {
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let mut replies = ch
            .basic_consume(
                REPLY_TO.into(),
                "raw-rpc-client".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("replies");
        let waiting: Waiting = Arc::default();
        let w = Arc::clone(&waiting);
        let reader = tokio::spawn(async move {
            while let Some(Ok(reply)) = replies.next().await {
                let id = reply.properties.correlation_id().as_ref().map(|c| c.to_string());
                if let Some(call) = id.and_then(|id| w.lock().unwrap().remove(&id)) {
                    let _ = call.send(reply.data);
                }
            }
        });
        RawCaller {
            ch,
            props,
            waiting,
            reader,
        }
    }

    async fn call(&self, queue: &str, i: u64) {
        let id = i.to_string();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id.clone(), tx);
        let body = serde_json::to_vec(&Echo { n: i }).expect("encodes");
        let mut props = BasicProperties::default()
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id(id.into());
        let mut options = BasicPublishOptions::default();
        if self.props == Props::AsTheApp {
            let deadline = std::time::SystemTime::now() + Duration::from_secs(30);
            let deadline_ms = deadline
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as i64;
            let mut headers = FieldTable::default();
            headers.insert("x-mqt-deadline".into(), AMQPValue::LongLongInt(deadline_ms));
            props = props.with_expiration("30000".into()).with_headers(headers);
            options.mandatory = true;
        }
        let props = self.props.stamp(props, "bench.echo");
        let confirm = self
            .ch
            .basic_publish("".into(), queue.into(), options, &body, props)
            .await
            .expect("request");
        confirm.await.expect("confirm");
        let reply = rx.await.expect("reply");
        assert_eq!(reply, body);
    }
}

async fn raw_sequential(caller: &RawCaller, queue: &str, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let start = Instant::now();
        caller.call(queue, i).await;
        lat.push(start.elapsed());
    }
    lat.sort();
    lat
}

async fn raw_concurrent(caller: &RawCaller, queue: &str, n: usize) -> Duration {
    let start = Instant::now();
    let mut window = FuturesUnordered::new();
    for i in 0..n as u64 {
        if window.len() == IN_FLIGHT {
            window.next().await;
        }
        window.push(caller.call(queue, i));
    }
    while window.next().await.is_some() {}
    start.elapsed()
}

fn report(name: &str, seq: &[Duration], per_second: f64) {
    println!(
        "{name:<34} {:>9.0}us {:>9.0}us {:>12.0}",
        pct(seq, 0.5).as_secs_f64() * 1e6,
        pct(seq, 0.99).as_secs_f64() * 1e6,
        per_second
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick {
        200
    } else {
        env_usize("MQT_BENCH_MESSAGES").unwrap_or(10_000)
    };
    let rounds = if quick {
        1
    } else {
        env_usize("MQT_BENCH_ROUNDS").unwrap_or(3)
    };
    println!("{n} calls each; concurrent: {IN_FLIGHT} in flight");
    println!("{:<34} {:>11} {:>11} {:>12}", "case", "p50", "p99", "calls/s");

    // The embedded broker.
    let broker = MemoryBroker::new();
    let (running, caller, requester) = app_pair(
        DynTransport::new(broker.connect()),
        DynTransport::new(broker.connect()),
        "bench-rpc",
    )
    .await;
    let seq = app_sequential(&requester, n).await;
    let took = app_concurrent(&requester, n).await;
    report("memory: App", &seq, n as f64 / took.as_secs_f64());
    running.shutdown().await.expect("shutdown");
    drop(caller);

    // RabbitMQ.
    let url = std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let raw = match Connection::connect(&url, ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) if !mqtransport_testkit::brokers_required() => {
            println!("SKIPPED: RabbitMQ not reachable at {url} ({e})");
            return;
        }
        Err(e) => panic!("RabbitMQ not reachable: {e}"),
    };
    let raw_server = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connects");
    let admin = raw.create_channel().await.expect("channel");
    let mut raws = Vec::new();
    for (props, name) in [(Props::Bare, "bare"), (Props::AsTheApp, "props")] {
        let queue = format!("mqt-bench-rpc-raw-{name}-{}", std::process::id());
        admin
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
        let serving = raw_responder(&raw_server, &queue, props).await;
        let caller = RawCaller::new(&raw, props).await;
        raws.push((queue, serving, caller));
    }
    let qo = format!("mqt-bench-rpc-app-{}", std::process::id());
    let (running, caller, requester) = app_pair(
        mqtransport::connect(&url).await.expect("connects"),
        mqtransport::connect(&url).await.expect("connects"),
        &qo,
    )
    .await;
    // Which side costs what: the App's requester calling raw lapin's responder (with the App's
    // properties), and raw lapin's caller calling the App's responder; sequential only.
    let app_to_raw = caller.requester::<Echo, Echoed>(Route::queue(raws[1].0.as_str()));
    let (mut app_caller, mut app_responder) = (Vec::new(), Vec::new());
    // Best sequential run (by p50) and best concurrent time of each: raw bare, raw with the
    // App's properties, the App.
    let mut seq: [Vec<Duration>; 3] = Default::default();
    let mut took = [Duration::MAX; 3];
    let keep = |best: &mut Vec<Duration>, run: Vec<Duration>| {
        if best.is_empty() || pct(&run, 0.5) < pct(best, 0.5) {
            *best = run;
        }
    };
    // Rounds interleaved, so that the machine's noise falls on every case alike.
    for _ in 0..rounds {
        for (i, (queue, _, raw_caller)) in raws.iter().enumerate() {
            keep(&mut seq[i], raw_sequential(raw_caller, queue, n).await);
            took[i] = took[i].min(raw_concurrent(raw_caller, queue, n).await);
        }
        keep(&mut seq[2], app_sequential(&requester, n).await);
        took[2] = took[2].min(app_concurrent(&requester, n).await);
        keep(&mut app_caller, app_sequential(&app_to_raw, n).await);
        keep(&mut app_responder, raw_sequential(&raws[1].2, &qo, n).await);
    }
    let rate = took.map(|t| n as f64 / t.as_secs_f64());
    report("rabbitmq: raw lapin, bare", &seq[0], rate[0]);
    report("rabbitmq: raw lapin, App's props", &seq[1], rate[1]);
    report("rabbitmq: App", &seq[2], rate[2]);
    for (name, lat) in [
        ("rabbitmq: App caller, raw responder", &app_caller),
        ("rabbitmq: raw caller, App responder", &app_responder),
    ] {
        println!(
            "{name:<34} {:>9.0}us {:>9.0}us {:>12}",
            pct(lat, 0.5).as_secs_f64() * 1e6,
            pct(lat, 0.99).as_secs_f64() * 1e6,
            "-"
        );
    }
    for (i, against) in [(0, "bare"), (1, "with the App's properties")] {
        println!(
            "App / raw lapin {against}: sequential p50 {:.2} (lower is better), concurrent calls/s {:.2}",
            pct(&seq[2], 0.5).as_secs_f64() / pct(&seq[i], 0.5).as_secs_f64(),
            rate[2] / rate[i]
        );
    }
    running.shutdown().await.expect("shutdown");
    drop(caller);
    for (queue, serving, raw_caller) in raws {
        serving.abort();
        raw_caller.reader.abort();
        let _ = admin
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let cleanup = mqtransport::connect(&url).await.expect("connects");
    for q in [qo.clone(), format!("{qo}.dlq")] {
        let _ = cleanup.delete_queue(&q, Default::default()).await;
    }
    let _ = cleanup.close().await;
}
