//! The application layer end to end, each scenario on the embedded broker (paused clock) and on
//! RabbitMQ: typed dispatch, extractors, bad input, retries, dead letters, middleware,
//! producers and graceful shutdown.

// Scenarios are test code run through a macro, not `#[test]` functions: a failed expectation
// panics, as in any test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use garde::Validate;
use mqtransport::middleware::{ConcurrencyLimitLayer, Next, from_fn};
use mqtransport::prelude::*;
use mqtransport::{
    Acknowledge, Backoff, DeadLetterPolicy, Disposition, ErrorKind, Extension, FieldValue, FromRef, Incoming,
    PublishOptions, UnknownMessage, headers,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message, Validate)]
#[message(name = "orders.created")]
struct OrderCreated {
    #[garde(range(min = 1))]
    id: u64,
    #[garde(length(min = 1))]
    customer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "orders.cancelled")]
struct OrderCancelled {
    id: u64,
}

/// No name given: called `ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
struct Ping {
    n: u32,
}

type Tx<T> = mpsc::UnboundedSender<T>;

fn order(id: u64) -> OrderCreated {
    OrderCreated {
        id,
        customer: "ada".into(),
    }
}

fn fixed(ms: u64) -> RetryPolicy {
    RetryPolicy::max_attempts(3).backoff(Backoff::fixed(Duration::from_millis(ms)))
}

app_suite!(
    typed_messages_reach_their_handlers,
    untyped_messages_are_named_by_header_field_or_default,
    events_to_nobody_are_dropped_and_commands_fail,
    at_most_once_consumers_never_run_a_message_twice,
    plain_bodies_travel_both_ways,
    state_can_hold_the_apps_own_producers,
    a_running_app_adds_a_consumer,
    bad_input_is_dead_lettered_with_its_reason,
    unknown_messages_can_be_discarded,
    a_panicking_handler_is_retried,
    failures_retry_with_backoff_then_dead_letter,
    permanent_errors_dead_letter_at_once,
    retry_after_overrides_the_backoff,
    requeue_redelivers_at_once,
    state_and_sub_state_reach_handlers,
    handlers_publish_and_reply,
    concurrency_limits_handlers_in_flight,
    timeouts_retry_the_message,
    handler_timeouts_past_the_consumer_timeout_are_warned_about,
    middleware_runs_in_order_and_feeds_extractors,
    shutdown_drains_in_flight_handlers,
    shutdown_deadline_requeues_unfinished_work,
    build_errors_name_what_is_wrong,
    producers_confirm_return_and_pipeline,
    blocking_producer_publishes_from_a_thread,
    dead_letters_can_go_to_the_broker,
    a_deleted_dead_letter_queue_is_declared_again,
);

#[derive(Debug)]
enum Seen2 {
    Created(OrderCreated, mqtransport::DeliveryInfo),
    Cancelled(OrderCancelled),
}

async fn typed_messages_reach_their_handlers(fx: Arc<Fx>) -> TestResult {
    async fn created(order: OrderCreated, State(tx): State<Tx<Seen2>>, info: mqtransport::DeliveryInfo) {
        let _ = tx.send(Seen2::Created(order, info));
    }
    async fn cancelled(State(tx): State<Tx<Seen2>>, order: OrderCancelled) {
        let _ = tx.send(Seen2::Cancelled(order));
    }
    let q = fx.queue("orders");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .handle(created)
                .handle(cancelled),
        )
        .build()
        .await?;
    let created_p = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let cancelled_p = app.producer::<OrderCancelled>(Route::queue(q.as_str()));
    let running = app.start().await?;
    created_p.send(&order(1)).await?;
    cancelled_p.send(&OrderCancelled { id: 2 }).await?;

    let mut got_created = None;
    let mut got_cancelled = None;
    for _ in 0..2 {
        match recv(&mut rx, "a handled message").await? {
            Seen2::Created(o, info) => got_created = Some((o, info)),
            Seen2::Cancelled(o) => got_cancelled = Some(o),
        }
    }
    let (o, info) = got_created.ok_or("the created handler did not run")?;
    assert_eq!(o, order(1));
    assert_eq!(got_cancelled, Some(OrderCancelled { id: 2 }));
    assert_eq!(info.attempt(), 1);
    assert_eq!(info.queue(), q);
    assert_eq!(info.original_exchange(), "");
    assert_eq!(info.original_routing_key(), q);
    assert_eq!(info.name(), Some("orders.created"));
    assert!(!info.redelivered());
    assert!(info.timestamp().is_some());
    let id = info.message_id().ok_or("no message id")?;
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "7", "a UUIDv7: {id}");
    running.shutdown().await?;
    Ok(())
}

async fn untyped_messages_are_named_by_header_field_or_default(fx: Arc<Fx>) -> TestResult {
    async fn created(order: OrderCreated, State(tx): State<Tx<String>>) {
        let _ = tx.send(format!("created {}", order.id));
    }
    async fn cancelled(order: OrderCancelled, State(tx): State<Tx<String>>) {
        let _ = tx.send(format!("cancelled {}", order.id));
    }
    let q = fx.queue("untyped");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .handle(created)
                .handle(cancelled)
                .name_from_header("event")
                .name_from_field("kind")
                .default_message::<OrderCreated>(),
        )
        .build()
        .await?;
    let running = app.start().await?;
    // As other clients would send them: no type, no content type.
    let conn = fx.conn().await?;
    for envelope in [
        Envelope::new(r#"{"id":6}"#).with_header("event", "orders.cancelled"),
        Envelope::new(r#"{"kind":"orders.cancelled","id":7}"#),
        // The header comes before the field.
        Envelope::new(r#"{"kind":"orders.created","id":8}"#).with_header("event", "orders.cancelled"),
        Envelope::new(r#"{"id":5,"customer":"bob"}"#),
    ] {
        conn.publish(Publish::to_queue(q.as_str(), envelope)).await?;
    }
    let mut got = BTreeSet::new();
    for _ in 0..4 {
        got.insert(recv(&mut rx, "an untyped message").await?);
    }
    assert_eq!(
        got,
        BTreeSet::from(["cancelled 6", "cancelled 7", "cancelled 8", "created 5"].map(String::from))
    );
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

async fn events_to_nobody_are_dropped_and_commands_fail(fx: Arc<Fx>) -> TestResult {
    let x = fx.exchange("broadcast");
    let app = fx
        .app(App::builder())
        .topology(Topology::new().exchange(Exchange::fanout(&x)))
        .build()
        .await?;
    let command = app.producer::<OrderCreated>(Route::exchange(x.as_str()));
    let err = command.send(&order(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unroutable, "{err}");
    let event = command.clone().events();
    event.send(&order(2)).await?;
    assert_eq!(event.publish(&order(3)).await?, mqtransport::Confirmation::Confirmed);
    app.transport().close().await?;
    Ok(())
}

async fn at_most_once_consumers_never_run_a_message_twice(fx: Arc<Fx>) -> TestResult {
    /// Order 1 fails; order 2 hangs until the app is stopped under it.
    async fn created(order: OrderCreated, State(tx): State<Tx<u64>>) -> Result<(), HandlerError> {
        let _ = tx.send(order.id);
        if order.id == 1 {
            return Err(HandlerError::transient("flaky"));
        }
        std::future::pending::<()>().await;
        Ok(())
    }
    for mode in [Acknowledge::OnReceipt, Acknowledge::BrokerNoAck] {
        let refused = fx
            .app(App::with_state(mpsc::unbounded_channel::<u64>().0))
            .consumer(
                Consumer::new("unused")
                    .handle(created)
                    .acknowledge(mode)
                    .retry(RetryPolicy::max_attempts(2)),
            )
            .build()
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("never runs a message twice"), "{refused}");

        let q = fx.queue(&format!("at-most-once-{mode:?}"));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (hook, mut settled) = settlements();
        let app = fx
            .app(App::with_state(tx))
            .on_settle(hook)
            .shutdown_timeout(Duration::ZERO)
            .consumer(
                Consumer::for_queue(Queue::durable(&q))
                    .handle(created)
                    .acknowledge(mode),
            )
            .build()
            .await?;
        let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
        let running = app.start().await?;
        orders.send(&order(1)).await?;
        assert_eq!(recv(&mut rx, "the failing order").await?, 1);
        match settled.next().await?.disposition {
            Disposition::DeadLettered { reason, .. } => {
                assert!(
                    reason.contains("acknowledged on receipt, so not run again: flaky"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Stopped while handling: acknowledged already, so gone rather than run again.
        orders.send(&order(2)).await?;
        assert_eq!(recv(&mut rx, "the hanging order").await?, 2);
        running.shutdown().await?;
        let conn = fx.conn().await?;
        assert_eq!(conn.queue_info(&q).await?.message_count, 0, "{mode:?}");
        assert_eq!(conn.queue_info(&format!("{q}.dlq")).await?.message_count, 1);
        conn.close().await?;
        assert!(rx.try_recv().is_err(), "a message ran twice");
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "greeting", codec = "text")]
struct Greeting(String);

async fn plain_bodies_travel_both_ways(fx: Arc<Fx>) -> TestResult {
    /// (what, text, content type, has a message id and a timestamp, persistent)
    type Got = (&'static str, String, Option<String>, bool, bool);
    fn got(what: &'static str, info: &DeliveryInfo, text: String) -> Got {
        let props = info.envelope().properties();
        (
            what,
            text,
            props.content_type.clone(),
            props.message_id.is_some() && props.timestamp.is_some(),
            props.delivery_mode == Some(mqtransport::DeliveryMode::Persistent),
        )
    }
    async fn greeted(info: DeliveryInfo, g: Greeting, State(tx): State<Tx<Got>>) {
        let _ = tx.send(got("typed", &info, g.0));
    }
    async fn plain(info: DeliveryInfo, text: String, State(tx): State<Tx<Got>>) {
        let _ = tx.send(got("text", &info, text));
    }
    async fn binary(info: DeliveryInfo, body: bytes::Bytes, State(tx): State<Tx<Got>>) {
        let _ = tx.send(got("bytes", &info, format!("{body:?}")));
    }
    let q = fx.queue("plain");
    let bin = fx.queue("binary");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(greeted).fallback(plain))
        .consumer(Consumer::for_queue(Queue::durable(&bin)).fallback(binary))
        .build()
        .await?;
    let text = app.plain_producer(Route::queue(q.as_str()));
    let typed = app.producer::<Greeting>(Route::queue(q.as_str()));
    let bytes_out = app.plain_producer(Route::queue(bin.as_str()));
    let conn = fx.conn().await?;
    let running = app.start().await?;
    let plain_text = Some("text/plain; charset=utf-8".to_owned());

    text.send_text("Hello World!").await?;
    assert_eq!(
        recv(&mut rx, "the plain text").await?,
        ("text", "Hello World!".into(), plain_text.clone(), true, true)
    );
    typed.send(&Greeting("hi".into())).await?;
    assert_eq!(
        recv(&mut rx, "the typed text").await?,
        ("typed", "hi".into(), plain_text, true, true)
    );
    // As pika sends it: a bare body; and a JSON string, unquoted.
    conn.publish(Publish::to_queue(q.as_str(), Envelope::new("from pika")))
        .await?;
    assert_eq!(
        recv(&mut rx, "the bare body").await?,
        ("text", "from pika".into(), None, false, false)
    );
    conn.publish(Publish::to_queue(
        q.as_str(),
        Envelope::new(r#""quoted""#).with_content_type("application/json"),
    ))
    .await?;
    assert_eq!(recv(&mut rx, "the JSON string").await?.1, "quoted");
    bytes_out.send_bytes(vec![0xca, 0xfe]).await?;
    assert_eq!(
        recv(&mut rx, "the bytes").await?,
        (
            "bytes",
            r#"b"\xca\xfe""#.into(),
            Some("application/octet-stream".into()),
            true,
            true
        )
    );
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

async fn state_can_hold_the_apps_own_producers(fx: Arc<Fx>) -> TestResult {
    #[derive(Clone)]
    struct Services {
        cancellations: Producer<OrderCancelled>,
        seen: Tx<u64>,
    }
    async fn created(order: OrderCreated, State(s): State<Services>) -> Result<(), HandlerError> {
        s.cancellations
            .send(&OrderCancelled { id: order.id })
            .await
            .map_err(HandlerError::transient)
    }
    async fn cancelled(order: OrderCancelled, State(s): State<Services>) {
        let _ = s.seen.send(order.id);
    }
    let orders = fx.queue("orders");
    let cancellations = fx.queue("cancellations");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let route = Route::queue(cancellations.as_str());
    let app = fx
        .app(App::with_state_from(move |publisher| Services {
            cancellations: publisher.producer(route),
            seen: tx,
        }))
        .consumer(Consumer::for_queue(Queue::durable(&orders)).handle(created))
        .consumer(Consumer::for_queue(Queue::durable(&cancellations)).handle(cancelled))
        .build()
        .await?;
    let producer = app.producer::<OrderCreated>(Route::queue(orders.as_str()));
    let running = app.start().await?;
    producer.send(&order(4)).await?;
    assert_eq!(recv(&mut rx, "the cancellation the handler sent").await?, 4);
    running.shutdown().await?;

    // Two consumers on one queue would split its traffic between two handler sets.
    let err = fx
        .app(App::with_state(mpsc::unbounded_channel::<u64>().0))
        .consumer(Consumer::new(&orders).handle(cancelled_by_id))
        .consumer(Consumer::new(&orders).handle(created_by_id))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has two consumers in this app"), "{err}");
    Ok(())
}

async fn a_running_app_adds_a_consumer(fx: Arc<Fx>) -> TestResult {
    async fn created(order: OrderCreated, State(tx): State<Tx<u64>>) {
        let _ = tx.send(order.id);
    }
    let first = fx.queue("first");
    let later = fx.queue("later");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .consumer(Consumer::for_queue(Queue::durable(&first)).handle(created))
        .build()
        .await?;
    let to_later = app.producer::<OrderCreated>(Route::queue(later.as_str()));
    let mut running = app.start().await?;
    running
        .add_consumer(Consumer::for_queue(Queue::durable(&later)).handle(created))
        .await?;
    to_later.send(&order(11)).await?;
    assert_eq!(recv(&mut rx, "a message to the added consumer").await?, 11);
    let queues: Vec<String> = running.consumers().into_iter().map(|c| c.queue).collect();
    assert_eq!(queues, [first.clone(), later.clone()]);

    // The app's own state type, and one consumer per queue.
    let wrong_state = running
        .add_consumer(Consumer::<()>::new(&later).handle(cancelled_by_id))
        .await
        .unwrap_err();
    assert!(
        wrong_state.to_string().contains("which is not this app's"),
        "{wrong_state}"
    );
    let twice = running
        .add_consumer(Consumer::new(&first).handle(created))
        .await
        .unwrap_err();
    assert!(twice.to_string().contains("already has a consumer"), "{twice}");
    running.shutdown().await?;
    Ok(())
}

async fn cancelled_by_id(_o: OrderCancelled) {}
async fn created_by_id(_o: OrderCreated) {}

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

#[derive(Clone)]
struct AppState {
    handled: Arc<AtomicUsize>,
    tx: Tx<String>,
}

impl FromRef<AppState> for Tx<String> {
    fn from_ref(state: &AppState) -> Self {
        state.tx.clone()
    }
}

async fn state_and_sub_state_reach_handlers(fx: Arc<Fx>) -> TestResult {
    async fn created(State(state): State<AppState>, State(tx): State<Tx<String>>, order: OrderCreated) {
        let n = state.handled.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = tx.send(format!("{} #{n}", order.customer));
    }
    let q = fx.queue("state");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let state = AppState {
        handled: Arc::new(AtomicUsize::new(0)),
        tx,
    };
    let app = fx
        .app(App::with_state(state.clone()))
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(7)).await?;
    assert_eq!(recv(&mut rx, "the handler").await?, "ada #1");
    assert_eq!(state.handled.load(Ordering::SeqCst), 1);
    running.shutdown().await?;
    Ok(())
}

async fn handlers_publish_and_reply(fx: Arc<Fx>) -> TestResult {
    #[derive(Clone)]
    struct Routes {
        out: String,
        tenants: Tx<Option<String>>,
    }
    async fn created(
        order: OrderCreated,
        publisher: Publisher,
        headers: Headers,
        State(r): State<Routes>,
    ) -> mqtransport::Result<()> {
        let _ = r.tenants.send(headers.get_str("x-tenant").map(str::to_owned));
        publisher
            .send(&Route::queue(r.out.as_str()), &OrderCancelled { id: order.id })
            .await?;
        if publisher.reply_to().is_some() {
            publisher.reply(&Ping { n: 42 }).await?;
        }
        Ok(())
    }
    let q = fx.queue("in");
    let out = fx.queue("out");
    let replies = fx.queue("replies");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(Routes {
            out: out.clone(),
            tenants: tx,
        }))
        .name("billing")
        .topology(
            Topology::new()
                .queue(Queue::durable(&out))
                .queue(Queue::durable(&replies)),
        )
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let publisher = app.publisher();
    let running = app.start().await?;
    let confirmation = publisher
        .publish_with(
            &Route::queue(q.as_str()),
            &order(8),
            PublishOptions::default()
                .reply_to(replies.as_str())
                .correlation_id("c-8")
                .header("x-tenant", "acme"),
        )
        .await?;
    assert!(confirmation.is_confirmed());
    assert_eq!(recv(&mut rx, "the tenant header").await?.as_deref(), Some("acme"));

    let conn = fx.conn().await?;
    let published = get(&conn, &out).await?;
    assert_eq!(
        mqtransport::decode::<OrderCancelled>(&published)?,
        OrderCancelled { id: 8 }
    );
    let props = published.properties();
    assert_eq!(props.kind.as_deref(), Some("orders.cancelled"));
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    assert_eq!(props.app_id.as_deref(), Some("billing"));
    assert_eq!(props.delivery_mode, Some(mqtransport::DeliveryMode::Persistent));

    let reply = get(&conn, &replies).await?;
    assert_eq!(mqtransport::decode::<Ping>(&reply)?, Ping { n: 42 });
    assert_eq!(reply.properties().kind.as_deref(), Some("ping"));
    assert_eq!(reply.properties().correlation_id.as_deref(), Some("c-8"));
    running.shutdown().await?;
    conn.close().await?;
    Ok(())
}

#[derive(Clone)]
struct Gate {
    permits: Arc<Semaphore>,
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    started: Tx<u64>,
}

async fn concurrency_limits_handlers_in_flight(fx: Arc<Fx>) -> TestResult {
    async fn created(order: OrderCreated, State(g): State<Gate>) {
        let now = g.now.fetch_add(1, Ordering::SeqCst) + 1;
        g.max.fetch_max(now, Ordering::SeqCst);
        let _ = g.started.send(order.id);
        if let Ok(p) = g.permits.acquire().await {
            p.forget();
        }
        g.now.fetch_sub(1, Ordering::SeqCst);
    }
    let q = fx.queue("limited");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gate = Gate {
        permits: Arc::new(Semaphore::new(0)),
        now: Arc::default(),
        max: Arc::default(),
        started: tx,
    };
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::with_state(gate.clone()))
        .on_settle(hook)
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created).concurrency(2))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    for id in 1..=6 {
        orders.send(&order(id)).await?;
    }
    // Two run at once...
    recv(&mut rx, "the first handler").await?;
    recv(&mut rx, "the second handler").await?;
    // ...and no third starts while they are blocked.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "a third handler started past the limit");
    gate.permits.add_permits(6);
    settled.take(6).await?;
    assert_eq!(gate.max.load(Ordering::SeqCst), 2);
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

#[derive(Clone, Debug, PartialEq)]
struct Trail(Vec<&'static str>);

async fn middleware_runs_in_order_and_feeds_extractors(fx: Arc<Fx>) -> TestResult {
    async fn app_layer(mut req: Incoming, next: Next) -> Outcome {
        req.extensions_mut().insert(Trail(vec!["app"]));
        next.run(req).await
    }
    async fn consumer_layer(mut req: Incoming, next: Next) -> Outcome {
        if let Some(t) = req.extensions_mut().get_mut::<Trail>() {
            t.0.push("consumer");
        }
        next.run(req).await
    }
    async fn created(Extension(trail): Extension<Trail>, _o: OrderCreated, State(tx): State<Tx<Trail>>) {
        let _ = tx.send(trail);
    }
    async fn needs_missing(_o: OrderCancelled, Extension(_n): Extension<u64>) {}

    let q = fx.queue("middleware");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::with_state(tx))
        .on_settle(hook)
        .layer(from_fn(app_layer))
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .handle(created)
                .handle(needs_missing)
                .layer(from_fn(consumer_layer))
                .layer(ConcurrencyLimitLayer::new(1)),
        )
        .build()
        .await?;
    let created_p = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let cancelled_p = app.producer::<OrderCancelled>(Route::queue(q.as_str()));
    let running = app.start().await?;
    created_p.send(&order(10)).await?;
    assert_eq!(recv(&mut rx, "the trail").await?, Trail(vec!["app", "consumer"]));
    cancelled_p.send(&OrderCancelled { id: 10 }).await?;
    let mut seen = settled.take(2).await?;
    seen.retain(|s| s.envelope.properties().kind.as_deref() == Some("orders.cancelled"));
    let reason = match &seen[0].disposition {
        Disposition::DeadLettered { reason, .. } => reason.clone(),
        other => return Err(format!("expected a dead letter, got {other:?}").into()),
    };
    assert!(reason.contains("no extension of type `u64`"), "{reason}");
    running.shutdown().await?;
    Ok(())
}

async fn shutdown_drains_in_flight_handlers(fx: Arc<Fx>) -> TestResult {
    #[derive(Clone)]
    struct Hold {
        started: Tx<()>,
        release: Arc<Semaphore>,
    }
    async fn created(_o: OrderCreated, State(h): State<Hold>) {
        let _ = h.started.send(());
        if let Ok(p) = h.release.acquire().await {
            p.forget();
        }
    }
    let q = fx.queue("drain");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::with_state(Hold {
            started: tx,
            release: Arc::clone(&release),
        }))
        .on_settle(hook)
        .shutdown_timeout(Duration::from_secs(60))
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(11)).await?;
    recv(&mut rx, "the handler to start").await?;
    let mut shutdown = tokio::spawn(running.shutdown());
    // Shutdown waits for the handler...
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut shutdown)
            .await
            .is_err(),
        "shutdown did not wait for the in-flight handler"
    );
    // ...which finishes, and its delivery is acked.
    release.add_permits(1);
    shutdown.await??;
    assert_eq!(settled.next().await?.disposition, Disposition::Acked);
    let conn = fx.conn().await?;
    assert_eq!(conn.queue_info(&q).await?.message_count, 0);
    conn.close().await?;
    Ok(())
}

async fn shutdown_deadline_requeues_unfinished_work(fx: Arc<Fx>) -> TestResult {
    async fn created(_o: OrderCreated, State(tx): State<Tx<()>>) {
        let _ = tx.send(());
        std::future::pending::<()>().await;
    }
    let q = fx.queue("deadline");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .shutdown_timeout(Duration::from_millis(200))
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(12)).await?;
    recv(&mut rx, "the handler to start").await?;
    let started = tokio::time::Instant::now();
    running.shutdown().await?;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    // The cancelled handler's message is back in the queue, not lost.
    let conn = fx.conn().await?;
    let back = get(&conn, &q).await?;
    assert_eq!(mqtransport::decode::<OrderCreated>(&back)?, order(12));
    conn.close().await?;
    Ok(())
}

async fn build_errors_name_what_is_wrong(fx: Arc<Fx>) -> TestResult {
    async fn created(_o: OrderCreated) {}
    async fn no_message(_h: Headers) {}
    let missing = fx.queue("missing");
    let e = fx
        .app(App::builder())
        .consumer(Consumer::new(&missing).handle(created))
        .build()
        .await
        .expect_err("a missing queue fails the build");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains(&format!("queue '{missing}'")), "{e}");
    assert!(e.message().contains("does not exist"), "{e}");

    let q = fx.queue("config");
    let e = fx
        .app(App::builder())
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .handle(created)
                .handle(created)
                .handle(no_message),
        )
        .build()
        .await
        .expect_err("a misconfigured consumer fails the build");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("two handlers for message 'orders.created'"), "{e}");
    assert!(e.message().contains(".handle_name(name, handler)"), "{e}");

    // An inequivalent re-declaration names the queue.
    let conn = fx.conn().await?;
    conn.declare(&Topology::new().queue(Queue::durable(&q))).await?;
    let e = fx
        .app(App::builder())
        .consumer(Consumer::for_queue(Queue::transient(&q)).handle(created))
        .build()
        .await
        .expect_err("an inequivalent queue fails the build");
    assert_eq!(e.kind(), ErrorKind::Precondition);
    assert!(e.message().contains(&q), "{e}");
    conn.close().await?;

    let e = App::builder().url("kafka://x").build().await.expect_err("no kafka");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("kafka"), "{e}");

    // Connection errors name the broker without its password (real sockets: on a real clock).
    if fx.is_memory() {
        return Ok(());
    }
    let e = App::builder()
        .url("amqp://app:s3cret@127.0.0.1:1/%2f")
        .build()
        .await
        .expect_err("nothing listens on port 1");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    Ok(())
}

async fn producers_confirm_return_and_pipeline(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("many");
    let nowhere = fx.exchange("nowhere");
    let app = fx
        .app(App::builder())
        .topology(
            Topology::new()
                .exchange(Exchange::direct(&nowhere))
                .queue(Queue::durable(&q)),
        )
        .build()
        .await?;
    let returned = app.producer::<OrderCreated>(Route::new(nowhere.as_str(), "no.binding"));
    assert!(matches!(
        returned.publish(&order(1)).await?,
        Confirmation::Returned { reply_code: 312, .. }
    ));
    let e = returned.send(&order(1)).await.expect_err("unroutable");
    assert_eq!(e.kind(), ErrorKind::Unroutable);
    assert!(
        e.message().contains("'orders.created'") && e.message().contains(&nowhere),
        "{e}"
    );

    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let mut batch: Vec<OrderCreated> = (1..=50).map(order).collect();
    batch[20].id = 0; // invalid: refused before publishing (debug builds validate)
    let results = orders.publish_many(&batch).await;
    assert_eq!(results.len(), 50);
    for (i, r) in results.iter().enumerate() {
        if i == 20 {
            let e = r.as_ref().expect_err("the invalid message is refused");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.message().contains("id: "), "{e}");
        } else {
            assert_eq!(r.as_ref().ok(), Some(&Confirmation::Confirmed), "message {i}: {r:?}");
        }
    }
    let conn = fx.conn().await?;
    assert_eq!(conn.queue_info(&q).await?.message_count, 49);
    // Turned off, validation lets it through (a consumer would dead-letter it).
    orders.clone().validate(false).send(&batch[20]).await?;
    assert_eq!(conn.queue_info(&q).await?.message_count, 50);
    conn.close().await?;
    app.transport().close().await?;
    Ok(())
}

async fn blocking_producer_publishes_from_a_thread(fx: Arc<Fx>) -> TestResult {
    // A real thread takes part: virtual time must not run ahead while it works.
    if fx.is_memory() {
        tokio::time::resume();
    }
    let q = fx.queue("blocking");
    let app = fx
        .app(App::builder())
        .topology(Topology::new().queue(Queue::durable(&q)))
        .build()
        .await?;
    let blocking = app.producer::<OrderCreated>(Route::queue(q.as_str())).blocking()?;
    let mut expected = 2;
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
        // Inside a current-thread runtime it is refused, not a deadlock.
        let e = blocking.send(&order(1)).expect_err("refused inside the runtime");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    } else {
        // On a multi-thread runtime: from a task (blocking in place) and from spawn_blocking.
        blocking.send(&order(1))?;
        let b = blocking.clone();
        tokio::task::spawn_blocking(move || b.send(&order(4))).await??;
        expected += 2;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send((blocking.send(&order(2)), blocking.publish(&order(3))));
    });
    let (sent, published) = rx.await?;
    sent?;
    assert_eq!(published?, Confirmation::Confirmed);
    let conn = fx.conn().await?;
    assert_eq!(conn.queue_info(&q).await?.message_count, expected);
    conn.close().await?;
    app.transport().close().await?;
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
