//! Several message types on one queue, dispatched by name, with validation: what cannot be
//! handled (invalid, malformed, unknown) goes to the dead-letter queue with its reason.
//!
//! ```sh
//! cargo run -p mqtransport --example multi-type
//! MQT_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p mqtransport --example multi-type
//! ```

use garde::Validate;
use mqtransport::prelude::*;
use mqtransport::{Disposition, headers};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Message, Validate)]
#[message(name = "orders.created")]
struct OrderCreated {
    #[garde(range(min = 1))]
    id: u64,
    #[garde(length(min = 1))]
    customer: String,
}

#[derive(Debug, Serialize, Deserialize, Message, Validate)]
#[message(name = "orders.cancelled")]
struct OrderCancelled {
    #[garde(range(min = 1))]
    id: u64,
    #[garde(length(min = 3))]
    reason: String,
}

async fn created(order: OrderCreated) {
    println!("  handled orders.created: order {} for {}", order.id, order.customer);
}

async fn cancelled(order: OrderCancelled) {
    println!("  handled orders.cancelled: order {} ({})", order.id, order.reason);
}

const QUEUE: &str = "shop.orders";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (settled_tx, mut settled) = tokio::sync::mpsc::unbounded_channel();
    let app = App::builder()
        .consumer(
            Consumer::for_queue(Queue::durable(QUEUE))
                .handle(created) // dispatched by the message's `type`
                .handle(cancelled)
                .default_message::<OrderCreated>() // what an untyped message is taken to be
                .concurrency(1), // one at a time, so that the output reads in order
        )
        .on_settle(move |e| {
            let _ = settled_tx.send(e.disposition.clone());
        })
        .build()
        .await?;
    let publisher = app.publisher();
    let conn = app.transport().clone();
    let running = app.start().await?;
    let to = Route::queue(QUEUE);

    println!("publishing 7 messages to '{QUEUE}'");
    publisher
        .send(
            &to,
            &OrderCreated {
                id: 1,
                customer: "ada".into(),
            },
        )
        .await?;
    publisher
        .send(
            &to,
            &OrderCancelled {
                id: 1,
                reason: "changed my mind".into(),
            },
        )
        .await?;
    // A buggy producer that skips validation: the consumer still checks.
    let unchecked = publisher.producer::<OrderCancelled>(to.clone()).validate(false);
    unchecked
        .send(&OrderCancelled {
            id: 0,
            reason: "?".into(),
        })
        .await?;
    // Other clients: untyped JSON (taken as orders.created), a malformed body, an unknown type.
    let raw = |body: &str| Envelope::new(body.to_owned()).with_content_type("application/json");
    for envelope in [
        raw(r#"{"id":2,"customer":"bob"}"#),
        raw("{not json").with_kind("orders.created"),
        raw(r#"{"id":3}"#).with_kind("orders.refunded"),
    ] {
        publisher.publish_raw(Publish::to_queue(QUEUE, envelope)).await?;
    }
    publisher
        .send(
            &to,
            &OrderCreated {
                id: 4,
                customer: "cy".into(),
            },
        )
        .await?;

    let (mut acked, mut dead) = (0, 0);
    while acked + dead < 7 {
        match settled.recv().await {
            Some(Disposition::Acked) => acked += 1,
            Some(Disposition::DeadLettered { .. }) => dead += 1,
            Some(other) => println!("  {other:?}"),
            None => break,
        }
    }
    println!("{acked} handled, {dead} dead-lettered to '{QUEUE}.dlq':");
    while let Some(d) = conn.get(&format!("{QUEUE}.dlq"), false).await? {
        let reason = d
            .envelope
            .header(headers::ERROR)
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        println!("  - {reason}");
        d.ack().await?;
    }
    running.shutdown().await?;

    // The demo removes what it declared, so that it can run against a shared broker.
    let conn = mqtransport::connect(&mqtransport::url_from_env()).await?;
    for queue in [QUEUE.to_owned(), format!("{QUEUE}.dlq")] {
        conn.delete_queue(&queue, Default::default()).await?;
    }
    conn.close().await?;
    Ok(())
}
