//! The application layer end to end, each scenario on the embedded broker (paused clock) and on
//! RabbitMQ: typed dispatch, extractors, state, replies, middleware and build errors.

// Scenarios are test code run through a macro, not `#[test]` functions: a failed expectation
// panics, as in any test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::orders::*;
use common::*;
use mqtransport::middleware::{ConcurrencyLimitLayer, Next, from_fn};
use mqtransport::prelude::*;
use mqtransport::{Acknowledge, Disposition, ErrorKind, Extension, FromRef, Incoming, PublishOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

app_suite!(
    typed_messages_reach_their_handlers,
    untyped_messages_are_named_by_header_field_or_default,
    events_to_nobody_are_dropped_and_commands_fail,
    at_most_once_consumers_never_run_a_message_twice,
    plain_bodies_travel_both_ways,
    state_can_hold_the_apps_own_producers,
    a_running_app_adds_a_consumer,
    state_and_sub_state_reach_handlers,
    handlers_publish_and_reply,
    middleware_runs_in_order_and_feeds_extractors,
    build_errors_name_what_is_wrong,
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
