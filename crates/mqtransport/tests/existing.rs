//! Entities an app does not own, each scenario on the embedded broker and on RabbitMQ: used
//! without declaring them, a clear error when they are missing or declared otherwise, and a
//! chosen dead-letter queue for exclusive queues.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::Arc;

use common::*;
use mqtransport::prelude::*;
use mqtransport::{DeadLetterPolicy, ErrorKind, Transport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "audit.entry")]
struct Entry {
    n: u32,
}

async fn entry(_e: Entry) {}

async fn existing_entities_are_checked_and_never_declared(fx: Arc<Fx>) -> TestResult {
    // Another team's exchange (with an argument we do not know) and queue.
    let theirs = fx.exchange("theirs");
    let their_queue = fx.queue("their-queue");
    let conn = fx.conn().await?;
    conn.declare(
        &Topology::new()
            .exchange(Exchange::topic(&theirs).argument("x-team", "billing"))
            .queue(Queue::durable(&their_queue).max_length(1000)),
    )
    .await?;

    // Used as they are: a binding of ours to their exchange, a producer to their queue.
    let ours = fx.queue("ours");
    let app = fx
        .app(App::builder())
        .existing_exchange(theirs.as_str())
        .existing_queue(their_queue.as_str())
        .topology(
            Topology::new()
                .queue(Queue::durable(&ours))
                .bind(Binding::queue(&ours, &theirs, "audit.*")),
        )
        .consumer(Consumer::new(&ours).handle(entry))
        .build()
        .await?;
    app.producer::<Entry>(Route::queue(their_queue.as_str()))
        .send(&Entry { n: 1 })
        .await?;
    app.transport().close().await?;
    assert_eq!(conn.queue_info(&their_queue).await?.message_count, 1);

    // Declared otherwise: the error says what to do.
    let err = fx
        .app(App::builder())
        .topology(Topology::new().exchange(Exchange::fanout(&theirs)))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Precondition, "{err}");
    assert!(err.to_string().contains("existing_exchange"), "{err}");

    // Missing: named, and said to be someone else's.
    let err = fx
        .app(App::builder())
        .existing_exchange(format!("{theirs}-missing"))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("another service owns it"), "{err}");
    let err = fx
        .app(App::builder())
        .existing_queue(format!("{their_queue}-missing"))
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("queue '{their_queue}-missing' does not exist")),
        "{err}"
    );
    conn.close().await?;
    Ok(())
}

async fn an_exclusive_queue_must_choose_where_its_dead_letters_go(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("inbox");
    let err = fx
        .app(App::builder())
        .consumer(Consumer::for_queue(Queue::durable(&q).exclusive()).handle(entry))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("queue '{q}' is exclusive")), "{err}");

    let shared = fx.queue("inboxes-dead");
    let app = fx
        .app(App::builder())
        .consumer(
            Consumer::for_queue(Queue::durable(&q).exclusive())
                .handle(entry)
                .dead_letter_queue(shared.as_str()),
        )
        .build()
        .await?;
    app.transport().close().await?;
    let app = fx
        .app(App::builder())
        .consumer(
            Consumer::for_queue(Queue::durable(&q).exclusive())
                .handle(entry)
                .dead_letter(DeadLetterPolicy::Broker),
        )
        .build()
        .await?;
    app.transport().close().await?;
    // No per-instance dead-letter queue was made.
    let conn = fx.conn().await?;
    let per_instance = conn.queue_info(&format!("{q}.dlq")).await.unwrap_err();
    assert_eq!(per_instance.kind(), ErrorKind::NotFound);
    conn.close().await?;
    Ok(())
}

app_suite!(
    existing_entities_are_checked_and_never_declared,
    an_exclusive_queue_must_choose_where_its_dead_letters_go,
);
