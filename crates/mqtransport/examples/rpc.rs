//! Request/reply: a caller asks a pricing service for quotes and waits for each answer; one
//! request fails at the responder and comes back as a typed error instead of a hang. On the
//! embedded broker by default, on RabbitMQ with `MQT_URL`:
//!
//! ```sh
//! cargo run -p mqtransport --example rpc
//! MQT_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p mqtransport --example rpc
//! ```

use mqtransport::RpcError;
use mqtransport::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "pricing.quote-requested")]
struct QuoteRequested {
    sku: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "pricing.quoted")]
struct Quoted {
    sku: String,
    total_cents: u64,
}

/// The responder: an ordinary handler; what it returns is the reply.
async fn quote(request: QuoteRequested) -> Result<Quoted, HandlerError> {
    let unit_cents = match request.sku.as_str() {
        "notebook" => 450,
        "pencil" => 80,
        other => return Err(HandlerError::permanent(format!("no price for '{other}'"))),
    };
    Ok(Quoted {
        total_cents: unit_cents * u64::from(request.quantity),
        sku: request.sku,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let app = App::builder() // the broker: $MQT_URL, else memory://
        .name("pricing")
        .consumer(Consumer::for_queue(Queue::durable("pricing")).handle(quote))
        .build()
        .await?;
    let pricing = app.requester::<QuoteRequested, Quoted>(Route::queue("pricing"));
    let running = app.start().await?;

    for (sku, quantity) in [("notebook", 3), ("pencil", 12), ("stapler", 1)] {
        let request = QuoteRequested {
            sku: sku.into(),
            quantity,
        };
        match pricing.request(&request).await {
            Ok(q) => println!("{quantity} x {}: {} cents", q.sku, q.total_cents),
            Err(RpcError::Failed { reason }) => println!("{quantity} x {sku}: refused by the service: {reason}"),
            Err(e) => return Err(e.into()),
        }
    }
    running.shutdown().await?;

    // The demo removes what it declared, so that it can run against a shared broker.
    let conn = mqtransport::connect(&mqtransport::url_from_env()).await?;
    for queue in ["pricing", "pricing.dlq"] {
        conn.delete_queue(queue, Default::default()).await?;
    }
    conn.close().await?;
    Ok(())
}
