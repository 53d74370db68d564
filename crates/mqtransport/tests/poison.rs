//! Poison messages never stop a queue: what the broker accepted but the app cannot read goes to
//! the dead-letter queue with the reason, and what does not fit in a frame is refused before it
//! is sent (or, for the framework's own copies, trimmed to fit). Each scenario runs on the
//! embedded broker and on RabbitMQ; those that need hand-built frames run on RabbitMQ only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::Arc;

use common::*;
use mqtransport::prelude::*;
use mqtransport::testing::Disposition;
use mqtransport::{BrokerUrl, Envelope, ErrorKind, FieldValue, Publish, Transport, headers};
use mqtransport_testkit::raw_amqp::{RawPublisher, nested_table};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "poison.job")]
struct Job {
    n: u32,
}

async fn job(j: Job, State(tx): State<mpsc::UnboundedSender<u32>>) {
    let _ = tx.send(j.n);
}

/// A content header's flag bits.
const TYPE: u16 = 1 << 5;
const MESSAGE_ID: u16 = 1 << 7;
const HEADERS: u16 = 1 << 13;

/// A short string of raw bytes.
fn short(b: &[u8]) -> Vec<u8> {
    let mut v = vec![b.len() as u8];
    v.extend_from_slice(b);
    v
}

/// An app consuming a queue named after `base` with the `job` handler, which reports the jobs it
/// handles; with the settlements it records.
async fn job_app(fx: &Fx, base: &str) -> Result<(String, App, mpsc::UnboundedReceiver<u32>, Settlements), BoxError> {
    let q = fx.queue(base);
    let (tx, handled) = mpsc::unbounded_channel();
    let (hook, settled) = settlements();
    let app = fx
        .app(App::with_state(tx))
        .on_settle(hook)
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(job))
        .build()
        .await?;
    Ok((q, app, handled, settled))
}

async fn unreadable_frames_are_dead_lettered_and_the_queue_goes_on(fx: Arc<Fx>) -> TestResult {
    let Some(url) = fx.rabbit_url() else {
        println!("SKIPPED on the embedded broker: needs hand-built AMQP frames (RabbitMQ)");
        return Ok(());
    };
    let (q, app, mut handled, mut settled) = job_app(&fx, "frames").await?;
    let jobs = app.producer::<Job>(Route::queue(q.as_str()));
    let running = app.start().await?;

    let body = br#"{"n":1}"#;
    let name = short(b"poison.job");
    let mut raw = RawPublisher::connect(&BrokerUrl::parse(url)?).await?;
    // 1. a message id that is not UTF-8
    let mut list = short(b"\xff\xfe-id");
    list.extend(&name);
    raw.publish("", q.as_bytes(), MESSAGE_ID | TYPE, &list, body).await?;
    // 2. a header name that is not UTF-8
    let mut list = 11u32.to_be_bytes().to_vec();
    list.extend(b"\x04k\xc3\x28yS\x00\x00\x00\x01v");
    list.extend(&name);
    raw.publish("", q.as_bytes(), HEADERS | TYPE, &list, body).await?;
    // 3. headers nested 2,500 deep (RabbitMQ takes them; a recursive parser overflows its stack)
    let mut list = nested_table(2_500);
    list.extend(&name);
    raw.publish("", q.as_bytes(), HEADERS | TYPE, &list, body).await?;
    // 4. a message type that is not UTF-8
    raw.publish("", q.as_bytes(), TYPE, &short(b"poison.\xe2\x28job"), body)
        .await?;
    raw.close().await?;
    // and one good message behind them
    jobs.send(&Job { n: 2 }).await?;

    // Settled in any order (the consumer runs handlers concurrently).
    let seen = settled.take(5).await?;
    let mut reasons = Vec::new();
    for s in &seen {
        match &s.disposition {
            Disposition::DeadLettered { queue, reason } => {
                assert_eq!(queue.as_deref(), Some(format!("{q}.dlq").as_str()));
                reasons.push(reason.clone());
            }
            Disposition::Acked => assert_eq!(s.envelope.properties().kind.as_deref(), Some("poison.job")),
            other => panic!("expected a dead letter or an ack, got {other:?}"),
        }
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "unreadable message: the headers hold a name that is not valid UTF-8 (k\u{fffd}(y)",
            "unreadable message: the headers nest tables or arrays deeper than 64 levels",
            "unreadable message: the property message_id is not valid UTF-8",
            "unreadable message: the property type is not valid UTF-8",
        ]
    );
    assert_eq!(recv(&mut handled, "the good message").await?, 2);
    assert!(handled.try_recv().is_err(), "no handler saw a poison message");

    // In the dead-letter queue with the reason, and the original properties where they fit.
    let conn = fx.conn().await?;
    let dlq = format!("{q}.dlq");
    let mut dead = Vec::new();
    for _ in 0..4 {
        dead.push(get(&conn, &dlq).await?);
    }
    let by_id = dead
        .iter()
        .find(|d| header_str(d, headers::ERROR).is_some_and(|e| e.contains("message_id")))
        .expect("the dead letter of the bad message id");
    assert_eq!(by_id.properties().message_id.as_deref(), Some("\u{fffd}\u{fffd}-id"));
    match by_id.header(headers::UNREADABLE_PROPERTIES) {
        // flags (message id and type), then the message id's raw bytes
        Some(FieldValue::Bytes(b)) => assert!(b.starts_with(b"\x00\xa0\x05\xff\xfe-id"), "{b:?}"),
        other => panic!("the original properties are kept: {other:?}"),
    }
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

async fn a_delivery_marked_unreadable_never_reaches_a_handler(fx: Arc<Fx>) -> TestResult {
    let (q, app, mut handled, mut settled) = job_app(&fx, "marked").await?;
    let running = app.start().await?;
    let conn = fx.conn().await?;
    let marked = Envelope::new(r#"{"n":7}"#)
        .with_kind("poison.job")
        .with_header(headers::UNREADABLE, "the property type is not valid UTF-8");
    conn.publish(Publish::to_queue(q.as_str(), marked))
        .await?
        .into_result("", &q)?;
    let seen = settled.next().await?;
    assert_eq!(
        seen.disposition,
        Disposition::DeadLettered {
            queue: Some(format!("{q}.dlq")),
            reason: "unreadable message: the property type is not valid UTF-8".into()
        }
    );
    assert!(handled.try_recv().is_err());
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

async fn a_header_too_large_for_a_frame_is_refused_before_sending(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("big-header");
    let conn = fx.conn().await?;
    conn.declare(&Topology::new().queue(Queue::durable(&q))).await?;
    let frame_max = conn.capabilities().frame_max;
    let big = Envelope::new("x").with_header("blob", "b".repeat(frame_max as usize));
    let e = conn
        .publish(Publish::to_queue(q.as_str(), big))
        .await
        .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains(&format!("frame_max {frame_max}")), "{e}");
    assert!(e.to_string().contains(&q), "names where it was going: {e}");
    // Nothing was sent, and the connection is fine.
    conn.publish(Publish::to_queue(q.as_str(), Envelope::new("after")))
        .await?
        .into_result("", &q)?;
    assert_eq!(get(&conn, &q).await?.body.as_ref(), b"after");
    // The limit is exact: properties of exactly the largest size go through (RabbitMQ takes
    // them), one byte more is refused.
    let max = mqtransport::core::frame_limit::max_properties_size(frame_max);
    // A table holding one long string: 4 (table) + 1 + 4 ("blob") + 1 + 4 + n.
    let exact = Envelope::new("exact").with_header("blob", "b".repeat(max - 14));
    assert_eq!(exact.properties().encoded_size()?, max);
    conn.publish(Publish::to_queue(q.as_str(), exact))
        .await?
        .into_result("", &q)?;
    assert_eq!(get(&conn, &q).await?.body.as_ref(), b"exact");
    let over = Envelope::new("over").with_header("blob", "b".repeat(max - 13));
    let e = conn
        .publish(Publish::to_queue(q.as_str(), over))
        .await
        .expect_err("one byte over");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    // Headers nested too deep are refused the same way.
    let mut deep = FieldValue::I32(1);
    for _ in 0..100 {
        deep = FieldValue::Table(mqtransport::FieldTable::new().with("n", deep));
    }
    let e = conn
        .publish(Publish::to_queue(
            q.as_str(),
            Envelope::new("x").with_header("deep", deep),
        ))
        .await
        .expect_err("too deep");
    assert!(e.to_string().contains("deeper than 64"), "{e}");
    conn.close().await?;
    Ok(())
}

async fn a_dead_letter_copy_that_outgrows_a_frame_is_trimmed(fx: Arc<Fx>) -> TestResult {
    async fn fail(_j: Job) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("x".repeat(5_000)))
    }
    let q = fx.queue("trim");
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::builder())
        .on_settle(hook)
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(fail))
        .build()
        .await?;
    let running = app.start().await?;
    let conn = fx.conn().await?;
    // The message fits with 100 bytes to spare; the stamps of its dead-letter copy do not.
    let frame_max = conn.capabilities().frame_max as usize;
    let filler = frame_max - 22 - 100 - 40;
    let env = Envelope::new(r#"{"n":1}"#)
        .with_kind("poison.job")
        .with_header("trace-blob", "t".repeat(filler))
        .with_header("tenant", "acme");
    conn.publish(Publish::to_queue(q.as_str(), env))
        .await?
        .into_result("", &q)?;
    assert!(matches!(
        settled.next().await?.disposition,
        Disposition::DeadLettered { .. }
    ));
    let dead = get(&conn, &format!("{q}.dlq")).await?;
    assert_eq!(header_str(&dead, headers::DROPPED), Some("trace-blob"));
    assert_eq!(header_str(&dead, "tenant"), Some("acme"));
    assert!(header_str(&dead, headers::ERROR).unwrap().starts_with("xxx"));
    assert_eq!(header_str(&dead, headers::ORIGINAL_QUEUE), Some(q.as_str()));
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

app_suite!(
    unreadable_frames_are_dead_lettered_and_the_queue_goes_on,
    a_delivery_marked_unreadable_never_reaches_a_handler,
    a_header_too_large_for_a_frame_is_refused_before_sending,
    a_dead_letter_copy_that_outgrows_a_frame_is_trimmed,
);
