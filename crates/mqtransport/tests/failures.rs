//! Handlers that fail, end to end on the embedded broker (paused clock) and on RabbitMQ: bad
//! input, panics, retries with backoff, timeouts, requeues and dead letters.

// Scenarios are test code run through a macro, not `#[test]` functions: a failed expectation
// panics, as in any test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::orders::*;
use common::*;
use mqtransport::prelude::*;
use mqtransport::{DeadLetterPolicy, Disposition, FieldValue, PublishOptions, UnknownMessage, headers};
use tokio::sync::mpsc;

app_suite!(
    bad_input_is_dead_lettered_with_its_reason,
    unknown_messages_can_be_discarded,
    a_panicking_handler_is_retried,
    failures_retry_with_backoff_then_dead_letter,
    permanent_errors_dead_letter_at_once,
    retry_after_overrides_the_backoff,
    requeue_redelivers_at_once,
    timeouts_retry_the_message,
    handler_timeouts_past_the_consumer_timeout_are_warned_about,
    dead_letters_can_go_to_the_broker,
    a_deleted_dead_letter_queue_is_declared_again,
);

async fn bad_input_is_dead_lettered_with_its_reason(fx: Arc<Fx>) -> TestResult {
    async fn created(order: OrderCreated, State(tx): State<Tx<u64>>) {
        let _ = tx.send(order.id);
    }
    let q = fx.queue("bad");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::with_state(tx))
        .on_settle(hook)
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let running = app.start().await?;
    let conn = fx.conn().await?;
    let typed = |body: &str, content_type: &str| {
        Envelope::new(body.to_owned())
            .with_kind("orders.created")
            .with_content_type(content_type)
    };
    let bad = [
        (typed("not json", "application/json"), "is malformed (application/json)"),
        (typed("<order/>", "text/xml"), "content type 'text/xml'"),
        (
            typed(r#"{"id":0,"customer":""}"#, "application/json"),
            "message 'orders.created' is invalid: customer: length is lower than 1; id: lower than 1",
        ),
        (
            Envelope::new("{}").with_kind("orders.refunded"),
            "no handler for message 'orders.refunded'",
        ),
        (Envelope::new("{}"), "has no name (type)"),
    ];
    for (env, _) in &bad {
        conn.publish(Publish::to_queue(q.as_str(), env.clone())).await?;
    }
    // The consumer goes on: a good message after the bad ones is handled.
    conn.publish(Publish::to_queue(
        q.as_str(),
        typed(r#"{"id":9,"customer":"cy"}"#, "application/json; charset=utf-8"),
    ))
    .await?;
    assert_eq!(recv(&mut rx, "the good message").await?, 9);

    let seen = settled.take(6).await?;
    let dead: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s.disposition, Disposition::DeadLettered { .. }))
        .collect();
    assert_eq!(dead.len(), 5, "{seen:#?}");
    assert_eq!(seen.iter().filter(|s| s.disposition == Disposition::Acked).count(), 1);

    let dlq = format!("{q}.dlq");
    let mut errors = BTreeSet::new();
    for _ in 0..bad.len() {
        let env = get(&conn, &dlq).await?;
        assert_eq!(header_str(&env, headers::ORIGINAL_QUEUE), Some(q.as_str()));
        assert_eq!(header_str(&env, headers::ORIGINAL_ROUTING_KEY), Some(q.as_str()));
        assert_eq!(env.header(headers::ATTEMPT).and_then(FieldValue::as_i64), Some(1));
        errors.insert(header_str(&env, headers::ERROR).ok_or("no x-mqt-error")?.to_owned());
    }
    for (_, expected) in &bad {
        assert_eq!(
            errors.iter().filter(|e| e.contains(expected)).count(),
            1,
            "expected one dead letter saying {expected:?}, got {errors:#?}"
        );
    }
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

async fn unknown_messages_can_be_discarded(fx: Arc<Fx>) -> TestResult {
    async fn created(_order: OrderCreated) {}
    let q = fx.queue("discard");
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::builder())
        .on_settle(hook)
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .on_unknown(UnknownMessage::Discard)
                .handle(created),
        )
        .build()
        .await?;
    let running = app.start().await?;
    let conn = fx.conn().await?;
    conn.publish(Publish::to_queue(
        q.as_str(),
        Envelope::new("{}").with_kind("something.else"),
    ))
    .await?;
    assert_eq!(settled.next().await?.disposition, Disposition::Acked);
    assert_eq!(conn.queue_info(&format!("{q}.dlq")).await?.message_count, 0);
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

async fn a_panicking_handler_is_retried(fx: Arc<Fx>) -> TestResult {
    async fn created(order: OrderCreated, info: mqtransport::DeliveryInfo, State(tx): State<Tx<(u64, u32)>>) {
        if order.id == 1 && info.attempt() == 1 {
            panic!("boom on the first attempt");
        }
        let _ = tx.send((order.id, info.attempt()));
    }
    let q = fx.queue("panics");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::with_state(tx))
        .on_settle(hook)
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .handle(created)
                .retry(fixed(100)),
        )
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(1)).await?;
    orders.send(&order(2)).await?;
    let mut handled = vec![
        recv(&mut rx, "a handled order").await?,
        recv(&mut rx, "a handled order").await?,
    ];
    handled.sort_unstable();
    assert_eq!(handled, [(1, 2), (2, 1)]);
    let retried = settled
        .take(3)
        .await?
        .into_iter()
        .find_map(|s| match s.disposition {
            Disposition::Retried { attempt, reason, .. } => Some((attempt, reason)),
            _ => None,
        })
        .ok_or("no retry was reported")?;
    assert_eq!(retried.0, 1);
    assert!(
        retried.1.contains("the handler panicked: boom on the first attempt"),
        "{}",
        retried.1
    );
    running.shutdown().await?;
    Ok(())
}

async fn failures_retry_with_backoff_then_dead_letter(fx: Arc<Fx>) -> TestResult {
    async fn created(_order: OrderCreated) -> Result<(), HandlerError> {
        Err(HandlerError::transient("payment gateway down"))
    }
    let q = fx.queue("retries");
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::builder())
        .on_settle(hook)
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .handle(created)
                .retry(fixed(100)),
        )
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders
        .publish_with(&order(3), PublishOptions::default().message_id("order-3"))
        .await?;

    let first = settled.next().await?;
    let started = tokio::time::Instant::now();
    assert!(
        matches!(&first.disposition, Disposition::Retried { attempt: 1, delay, reason } if *delay == Duration::from_millis(100) && reason == "payment gateway down"),
        "{first:?}"
    );
    let second = settled.next().await?;
    assert!(
        matches!(second.disposition, Disposition::Retried { attempt: 2, .. }),
        "{second:?}"
    );
    let last = settled.next().await?;
    let waited = started.elapsed();
    let dlq = format!("{q}.dlq");
    assert_eq!(
        last.disposition,
        Disposition::DeadLettered {
            queue: Some(dlq.clone()),
            reason: "gave up after 3 attempt(s): payment gateway down".into()
        }
    );
    // Two waits of 100 ms: a TTL never fires early (a little slack for the observer's clock).
    assert!(waited >= Duration::from_millis(190), "{waited:?}");

    let conn = fx.conn().await?;
    let dead = get(&conn, &dlq).await?;
    assert_eq!(dead.properties().message_id.as_deref(), Some("order-3"));
    assert_eq!(mqtransport::decode::<OrderCreated>(&dead)?, order(3));
    assert_eq!(dead.header(headers::ATTEMPT).and_then(FieldValue::as_i64), Some(3));
    assert_eq!(
        header_str(&dead, headers::ERROR),
        Some("gave up after 3 attempt(s): payment gateway down")
    );
    assert_eq!(header_str(&dead, headers::ORIGINAL_EXCHANGE), Some(""));
    assert_eq!(header_str(&dead, headers::ORIGINAL_ROUTING_KEY), Some(q.as_str()));
    // SQS retries in place (the message's visibility), without the delay levels.
    if fx.is_sqs() {
        return Ok(running.shutdown().await?);
    }
    // The broker's own record of the last wait: 100 ms is 64 + 32 + 4 ms of wait queues.
    let deaths = dead
        .header(headers::X_DEATH)
        .and_then(FieldValue::as_array)
        .ok_or("no x-death")?;
    let mut waited: Vec<String> = deaths
        .iter()
        .filter_map(FieldValue::as_table)
        .filter(|t| t.get("reason").and_then(FieldValue::as_str) == Some("expired"))
        .filter_map(|t| t.get("queue").and_then(FieldValue::as_str).map(str::to_owned))
        .collect();
    waited.sort();
    let p = fx.delay_prefix();
    assert_eq!(
        waited,
        [
            format!("{p}.wait.32ms"),
            format!("{p}.wait.4ms"),
            format!("{p}.wait.64ms")
        ]
    );
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

async fn permanent_errors_dead_letter_at_once(fx: Arc<Fx>) -> TestResult {
    async fn created(order: OrderCreated) -> Result<(), HandlerError> {
        Err(HandlerError::permanent(format!(
            "customer {} is blocked",
            order.customer
        )))
    }
    let q = fx.queue("permanent");
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::builder())
        .on_settle(hook)
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(4)).await?;
    let s = settled.next().await?;
    assert_eq!(
        s.disposition,
        Disposition::DeadLettered {
            queue: Some(format!("{q}.dlq")),
            reason: "customer ada is blocked".into()
        }
    );
    running.shutdown().await?;
    Ok(())
}

async fn retry_after_overrides_the_backoff(fx: Arc<Fx>) -> TestResult {
    async fn created(info: mqtransport::DeliveryInfo, _o: OrderCreated, State(tx): State<Tx<u32>>) -> Outcome {
        let _ = tx.send(info.attempt());
        if info.attempt() == 1 {
            Outcome::retry_after(Duration::from_millis(300), "rate limited")
        } else {
            Outcome::Ack
        }
    }
    let q = fx.queue("retry-after");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created).retry(fixed(10)))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(5)).await?;
    assert_eq!(recv(&mut rx, "the first attempt").await?, 1);
    let started = tokio::time::Instant::now();
    assert_eq!(recv(&mut rx, "the second attempt").await?, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
    running.shutdown().await?;
    Ok(())
}

async fn requeue_redelivers_at_once(fx: Arc<Fx>) -> TestResult {
    async fn created(info: mqtransport::DeliveryInfo, _o: OrderCreated, State(tx): State<Tx<bool>>) -> Outcome {
        let _ = tx.send(info.redelivered());
        if info.redelivered() {
            Outcome::Ack
        } else {
            Outcome::Requeue
        }
    }
    let q = fx.queue("requeue");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::with_state(tx))
        .on_settle(hook)
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(6)).await?;
    assert!(!recv(&mut rx, "the first delivery").await?);
    assert!(recv(&mut rx, "the redelivery").await?);
    let s = settled.take(2).await?;
    assert_eq!(s[0].disposition, Disposition::Requeued);
    assert_eq!(s[1].disposition, Disposition::Acked);
    running.shutdown().await?;
    Ok(())
}

async fn timeouts_retry_the_message(fx: Arc<Fx>) -> TestResult {
    async fn created(info: mqtransport::DeliveryInfo, _o: OrderCreated) {
        if info.attempt() == 1 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    let q = fx.queue("timeouts");
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::builder())
        .on_settle(hook)
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .handle(created)
                .retry(fixed(50))
                // The second attempt must finish within it, however loaded the machine: a
                // generous timeout, which only the first attempt (an hour's sleep) runs into.
                .timeout(Duration::from_secs(2)),
        )
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(9)).await?;
    let first = settled.next().await?;
    assert!(
        matches!(&first.disposition, Disposition::Retried { attempt: 1, reason, .. } if reason == "the handler timed out"),
        "{first:?}"
    );
    assert_eq!(settled.next().await?.disposition, Disposition::Acked);
    running.shutdown().await?;
    Ok(())
}

/// RabbitMQ redelivers what stays unacknowledged past its `consumer_timeout` (30 minutes by
/// default): a consumer whose handler timeout, times the deliveries that may wait before one,
/// reaches it is warned about at build. The embedded broker has no such timeout.
async fn handler_timeouts_past_the_consumer_timeout_are_warned_about(fx: Arc<Fx>) -> TestResult {
    async fn created(_o: OrderCreated) {}
    let (slow, quick, unbounded) = (fx.queue("slow"), fx.queue("quick"), fx.queue("unbounded"));
    let app = fx
        .app(App::builder())
        .consumer(
            // Four turns of ten minutes: forty minutes.
            Consumer::for_queue(Queue::durable(&slow))
                .handle(created)
                .prefetch(8)
                .concurrency(2)
                .timeout(Duration::from_secs(600)),
        )
        .consumer(
            // Four turns of a minute.
            Consumer::for_queue(Queue::durable(&quick))
                .handle(created)
                .prefetch(8)
                .concurrency(2)
                .timeout(Duration::from_secs(60)),
        )
        .consumer(
            Consumer::for_queue(Queue::durable(&unbounded))
                .handle(created)
                .prefetch(0)
                .timeout(Duration::from_secs(1)),
        )
        .build()
        .await?;
    let warnings = app.warnings();
    if fx.is_rabbit() {
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(
            warnings[0].contains(&format!("queue '{slow}'")) && warnings[0].contains("up to 2400s (4 handler timeouts"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[1].contains(&format!("queue '{unbounded}'")) && warnings[1].contains("unlimited prefetch"),
            "{}",
            warnings[1]
        );
    } else {
        assert!(warnings.is_empty(), "{warnings:#?}");
    }
    Ok(())
}

async fn dead_letters_can_go_to_the_broker(fx: Arc<Fx>) -> TestResult {
    async fn created(_o: OrderCreated) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("no"))
    }
    let q = fx.queue("to-broker");
    let parked = fx.queue("parked");
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::builder())
        .on_settle(hook)
        .topology(Topology::new().queue(Queue::durable(&parked)))
        .consumer(
            Consumer::for_queue(
                Queue::durable(&q)
                    .dead_letter_exchange("")
                    .dead_letter_routing_key(parked.as_str()),
            )
            .handle(created)
            .dead_letter(DeadLetterPolicy::Broker),
        )
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(13)).await?;
    assert_eq!(
        settled.next().await?.disposition,
        Disposition::DeadLettered {
            queue: None,
            reason: "no".into()
        }
    );
    let conn = fx.conn().await?;
    let dead = get(&conn, &parked).await?;
    assert_eq!(header_str(&dead, "x-first-death-reason"), Some("rejected"));
    assert_eq!(header_str(&dead, "x-first-death-queue"), Some(q.as_str()));
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

async fn a_deleted_dead_letter_queue_is_declared_again(fx: Arc<Fx>) -> TestResult {
    async fn created(_o: OrderCreated) -> Outcome {
        Outcome::dead_letter("unwanted")
    }
    let q = fx.queue("dlq-gone");
    let dlq = format!("{q}.dlq");
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::builder())
        .on_settle(hook)
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let conn = fx.conn().await?;
    conn.queue_info(&dlq).await?;
    conn.delete_queue(&dlq, Default::default()).await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(14)).await?;
    assert!(matches!(
        settled.next().await?.disposition,
        Disposition::DeadLettered { .. }
    ));
    let dead = get(&conn, &dlq).await?;
    assert_eq!(header_str(&dead, headers::ERROR), Some("unwanted"));
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}
