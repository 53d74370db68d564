//! mqtransport's RabbitMQ transport against a raw lapin loop written the best way, in one run,
//! on the local RabbitMQ (`MQT_TEST_AMQP_URL`):
//!
//! - publish with confirms: both pipelined with a window of 256 outstanding confirms;
//! - consume with manual ack, prefetch 256: raw lapin acks each delivery; ours coalesces;
//! - request/reply round trip over direct reply-to, one at a time (latency).
//!
//! ```sh
//! cargo bench -p mqtransport-amqp --bench vs_lapin
//! MQT_BENCH_MESSAGES=5000 cargo bench -p mqtransport-amqp --bench vs_lapin
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mqtransport_amqp::AmqpTransport;
use mqtransport_core::{BrokerUrl, ConsumeOptions, Envelope, Publish, Queue, ShortStr, Topology, Transport};

const WINDOW: usize = 256;
const PREFETCH: u16 = 256;

fn url() -> String {
    std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn n() -> usize {
    std::env::var("MQT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn queue_name(tag: &str) -> String {
    format!("mqt-bench-{tag}-{}", std::process::id())
}

async fn raw_conn() -> Connection {
    Connection::connect(&url(), ConnectionProperties::default())
        .await
        .expect("raw lapin connects")
}

async fn raw_declare(ch: &lapin::Channel, q: &str) {
    ch.queue_declare(q.into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
}

async fn raw_publish(ch: &lapin::Channel, q: &str, body: &[u8], n: usize) -> Duration {
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(WINDOW);
    for _ in 0..n {
        if pending.len() == WINDOW {
            let c: lapin::PublisherConfirm = pending.pop_front().expect("pending");
            c.await.expect("confirm");
        }
        let c = ch
            .basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        pending.push_back(c);
    }
    for c in pending {
        c.await.expect("confirm");
    }
    start.elapsed()
}

async fn ours_publish(t: &AmqpTransport, q: &str, body: &[u8], n: usize) -> Duration {
    let key = ShortStr::from(q);
    let body = bytes::Bytes::copy_from_slice(body);
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for _ in 0..n {
        if inflight.len() == WINDOW {
            let done: mqtransport_core::Result<mqtransport_core::Confirmation> =
                inflight.next().await.expect("in flight");
            done.expect("confirmed");
        }
        inflight.push(t.publish(Publish::to_queue(key.clone(), Envelope::new(body.clone()))));
    }
    while let Some(r) = inflight.next().await {
        r.expect("confirmed");
    }
    start.elapsed()
}

async fn raw_consume(conn: &Connection, q: &str, n: usize) -> Duration {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume(
            q.into(),
            "raw-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let start = Instant::now();
    for _ in 0..n {
        let d = consumer.next().await.expect("delivery").expect("ok");
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let took = start.elapsed();
    let _ = ch.close(200, "OK".into()).await;
    took
}

async fn ours_consume(t: &AmqpTransport, q: &str, n: usize) -> Duration {
    let mut consumer = t
        .consume(q, ConsumeOptions::default().prefetch(PREFETCH))
        .await
        .expect("consume");
    let start = Instant::now();
    for _ in 0..n {
        let d = consumer.next().await.expect("delivery").expect("ok");
        d.ack().await.expect("ack");
    }
    start.elapsed()
}

/// Round trips over direct reply-to through a responder task; returns the sorted latencies.
async fn ours_rpc(t: &AmqpTransport, responder: AmqpTransport, q: &str, body: &[u8], n: usize) -> Vec<Duration> {
    let mut requests = responder
        .consume(q, ConsumeOptions::default().prefetch(PREFETCH))
        .await
        .expect("consume");
    let serving = tokio::spawn(async move {
        while let Some(Ok(req)) = requests.next().await {
            let to = req.envelope.properties().reply_to.clone().unwrap_or_default();
            let mut reply = Envelope::new(req.envelope.body.clone());
            reply.properties_mut().correlation_id = req.envelope.properties().correlation_id.clone();
            let _ = responder
                .publish(Publish::to_queue(to.as_str(), reply).mandatory(false))
                .await;
            let _ = req.ack().await;
        }
    });
    let mut replies = t
        .consume("amq.rabbitmq.reply-to", ConsumeOptions::default().no_ack(true))
        .await
        .expect("replies");
    let key = ShortStr::from(q);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let req = Envelope::new(bytes::Bytes::copy_from_slice(body))
            .with_reply_to("amq.rabbitmq.reply-to")
            .with_correlation_id(i.to_string());
        t.publish(Publish::to_queue(key.clone(), req)).await.expect("request");
        let r = replies.next().await.expect("reply").expect("ok");
        assert_eq!(
            r.envelope.properties().correlation_id.as_deref(),
            Some(i.to_string().as_str())
        );
        lat.push(start.elapsed());
    }
    serving.abort();
    lat.sort();
    lat
}

async fn raw_rpc(conn: &Connection, server: &Connection, q: &str, body: &[u8], n: usize) -> Vec<Duration> {
    let sch = server.create_channel().await.expect("channel");
    sch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    sch.basic_qos(PREFETCH, BasicQosOptions::default()).await.expect("qos");
    let mut requests = sch
        .basic_consume(
            q.into(),
            "raw-rpc-server".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let serving = tokio::spawn(async move {
        while let Some(Ok(req)) = requests.next().await {
            let to = req.properties.reply_to().clone().unwrap_or_else(|| "".into());
            let props = BasicProperties::default()
                .with_correlation_id(req.properties.correlation_id().clone().unwrap_or_else(|| "".into()));
            let confirm = sch
                .basic_publish("".into(), to, BasicPublishOptions::default(), &req.data, props)
                .await
                .expect("reply");
            let _ = confirm.await;
            let _ = req.acker.ack(BasicAckOptions::default()).await;
        }
    });
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut replies = ch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "raw-rpc-client".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("replies");
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let props = BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(i.to_string().into());
        let confirm = ch
            .basic_publish("".into(), q.into(), BasicPublishOptions::default(), body, props)
            .await
            .expect("request");
        confirm.await.expect("confirm");
        let r = replies.next().await.expect("reply").expect("ok");
        assert_eq!(
            r.properties.correlation_id().as_ref().map(|c| c.as_str()),
            Some(i.to_string().as_str())
        );
        lat.push(start.elapsed());
    }
    serving.abort();
    lat.sort();
    lat
}

fn pct(lat: &[Duration], p: f64) -> Duration {
    let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
    lat.get(i).copied().unwrap_or_default()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 200 } else { n() };
    let url_parsed = BrokerUrl::parse(&url()).expect("MQT_TEST_AMQP_URL parses");
    let ours = match AmqpTransport::connect(&url_parsed).await {
        Ok(t) => t,
        Err(e) if !mqtransport_testkit::brokers_required() => {
            println!("SKIPPED: RabbitMQ not reachable at {url_parsed} ({e})");
            return;
        }
        Err(e) => panic!("RabbitMQ not reachable at {url_parsed}: {e}"),
    };
    let responder = AmqpTransport::connect(&url_parsed).await.expect("responder connects");
    let raw = raw_conn().await;
    let raw_server = raw_conn().await;
    let pub_ch = raw.create_channel().await.expect("channel");
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");

    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "case", "raw lapin", "mqtransport", "ours/raw"
    );
    for (label, size) in [("64 B", 64usize), ("4 KiB", 4096)] {
        let body = vec![b'x'; size];
        let (qr, qo) = (queue_name(&format!("raw-{size}")), queue_name(&format!("ours-{size}")));
        raw_declare(&pub_ch, &qr).await;
        ours.declare(&Topology::new().queue(Queue::transient(&qo)))
            .await
            .expect("declare");
        // Publish (fills the queues for the consume case), interleaved.
        let r = raw_publish(&pub_ch, &qr, &body, n).await;
        let o = ours_publish(&ours, &qo, &body, n).await;
        let (rr, or) = (rate(n, r), rate(n, o));
        println!(
            "{:<44} {:>12.0} {:>12.0} {:>8.2}",
            format!("publish with confirms, {label} (msgs/s)"),
            rr,
            or,
            or / rr
        );
        let r = raw_consume(&raw, &qr, n).await;
        let o = ours_consume(&ours, &qo, n).await;
        let (rr, or) = (rate(n, r), rate(n, o));
        println!(
            "{:<44} {:>12.0} {:>12.0} {:>8.2}",
            format!("consume + ack, {label} (msgs/s)"),
            rr,
            or,
            or / rr
        );
        let rpc_n = (n / 10).max(50);
        let (rq, oq) = (
            queue_name(&format!("rawrpc-{size}")),
            queue_name(&format!("oursrpc-{size}")),
        );
        raw_declare(&pub_ch, &rq).await;
        ours.declare(&Topology::new().queue(Queue::transient(&oq)))
            .await
            .expect("declare");
        let rl = raw_rpc(&raw, &raw_server, &rq, &body, rpc_n).await;
        let ol = ours_rpc(&ours, responder.clone(), &oq, &body, rpc_n).await;
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (a, b) = (pct(&rl, p), pct(&ol, p));
            println!(
                "{:<44} {:>10.0}us {:>10.0}us {:>8.2}",
                format!("request/reply round trip {name}, {label}"),
                a.as_secs_f64() * 1e6,
                b.as_secs_f64() * 1e6,
                b.as_secs_f64() / a.as_secs_f64()
            );
        }
        for q in [&qr, &rq] {
            let _ = pub_ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for q in [&qo, &oq] {
            let _ = ours.delete_queue(q, Default::default()).await;
        }
    }
    let _ = ours.close().await;
    let _ = responder.close().await;
}
