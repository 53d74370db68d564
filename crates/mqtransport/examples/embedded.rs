//! The embedded broker end to end: a topic exchange, a work queue with a dead-letter queue, a
//! producer task and a consumer that acks good orders and rejects bad ones.
//!
//! ```sh
//! cargo run -p mqtransport --example embedded
//! MQT_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p mqtransport --example embedded
//! ```

use std::time::Duration;

use futures_util::StreamExt;
use mqtransport::prelude::*;

#[tokio::main]
async fn main() -> mqtransport::Result<()> {
    let url = mqtransport::url_from_env();
    let conn = mqtransport::connect(&url).await?;
    // A BrokerUrl displays without its password.
    println!("connected to {}", mqtransport::BrokerUrl::parse(&url)?);

    conn.declare(
        &Topology::new()
            .exchange(Exchange::topic("shop"))
            .exchange(Exchange::fanout("shop.dlx"))
            .queue(Queue::durable("orders").dead_letter_exchange("shop.dlx"))
            .queue(Queue::durable("orders.dlq"))
            .bind(Binding::queue("orders", "shop", "orders.*"))
            .bind(Binding::queue("orders.dlq", "shop.dlx", "")),
    )
    .await?;

    // Producer: publishes from its own task; every publish waits for the broker's confirm.
    let producer = conn.clone();
    let produced = tokio::spawn(async move {
        for id in 1..=5 {
            let body = if id == 4 {
                "not json".to_owned()
            } else {
                format!(r#"{{"id":{id}}}"#)
            };
            let envelope = Envelope::new(body)
                .with_kind("orders.created")
                .with_content_type("application/json");
            producer
                .publish(Publish::new("shop", "orders.created", envelope))
                .await?
                .into_result("shop", "orders.created")?;
        }
        mqtransport::Result::Ok(())
    });

    // Consumer: acks what parses, rejects (dead-letters) what does not.
    let mut consumer = conn.consume("orders", ConsumeOptions::default().prefetch(16)).await?;
    for _ in 0..5 {
        let Some(delivery) = consumer.next().await else {
            break;
        };
        let delivery = delivery?;
        let body = String::from_utf8_lossy(&delivery.envelope.body).into_owned();
        if body.starts_with('{') {
            println!("handled {body} (routing key {})", delivery.routing_key);
            delivery.ack().await?;
        } else {
            println!("rejected {body:?}: not JSON, dead-lettered");
            delivery.reject(false).await?;
        }
    }
    produced
        .await
        .map_err(|e| mqtransport::Error::new(mqtransport::ErrorKind::Closed, format!("producer task: {e}")))??;

    // The rejected order waits in the dead-letter queue with its history.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while conn.queue_info("orders.dlq").await?.message_count == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(dead) = conn.get("orders.dlq", false).await? {
        let reason = dead
            .envelope
            .header("x-first-death-reason")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "dead letter: {:?} (reason: {reason})",
            String::from_utf8_lossy(&dead.envelope.body)
        );
        dead.ack().await?;
    }

    // The demo removes what it declared, so that it can run against a shared broker.
    for queue in ["orders", "orders.dlq"] {
        conn.delete_queue(queue, Default::default()).await?;
    }
    for exchange in ["shop", "shop.dlx"] {
        conn.delete_exchange(exchange, false).await?;
    }
    conn.close().await
}
