//! The "both" service: an order service takes a request, asks the pricing service for a quote
//! over request/reply, and answers its own caller. Three services, two hops, every failure a
//! typed error. On the embedded broker by default, on RabbitMQ with `MQT_URL`:
//!
//! ```sh
//! cargo run -p mqtransport --example pipeline
//! MQT_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p mqtransport --example pipeline
//! ```

use mqtransport::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "orders.place")]
struct PlaceOrder {
    sku: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "orders.placed")]
struct OrderPlaced {
    order: u64,
    total_cents: u64,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "pricing.quote-requested")]
struct QuoteRequested {
    sku: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "pricing.quoted")]
struct Quoted {
    total_cents: u64,
}

/// The pricing service.
async fn quote(request: QuoteRequested) -> Result<Quoted, HandlerError> {
    match request.sku.as_str() {
        "notebook" => Ok(Quoted {
            total_cents: 450 * u64::from(request.quantity),
        }),
        other => Err(HandlerError::permanent(format!("no price for '{other}'"))),
    }
}

/// The order service: consumes a request, calls pricing, replies. A pricing failure is its
/// own failure, which its caller receives with the reason.
async fn place(order: PlaceOrder, publisher: Publisher, info: DeliveryInfo) -> Result<OrderPlaced, HandlerError> {
    let pricing = publisher.requester::<QuoteRequested, Quoted>(Route::queue("pricing"));
    let quoted = pricing
        .request(&QuoteRequested {
            sku: order.sku.clone(),
            quantity: order.quantity,
        })
        .await
        .map_err(|e| HandlerError::permanent(format!("pricing {}: {e}", order.sku)))?;
    Ok(OrderPlaced {
        order: info.delivery_tag(),
        total_cents: quoted.total_cents,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .init();
    // Each service is an app of its own, as it would be a process of its own.
    let pricing = App::builder()
        .name("pricing")
        .consumer(Consumer::for_queue(Queue::durable("pricing")).handle(quote))
        .build()
        .await?
        .start()
        .await?;
    let orders = App::builder()
        .name("orders")
        .consumer(Consumer::for_queue(Queue::durable("orders")).handle(place))
        .build()
        .await?
        .start()
        .await?;
    let shop = App::builder().name("shop").build().await?;
    let place_order = shop.requester::<PlaceOrder, OrderPlaced>(Route::queue("orders"));

    for (sku, quantity) in [("notebook", 2), ("globe", 1)] {
        match place_order
            .request(&PlaceOrder {
                sku: sku.into(),
                quantity,
            })
            .await
        {
            Ok(placed) => println!(
                "{quantity} x {sku}: order {} for {} cents",
                placed.order, placed.total_cents
            ),
            Err(e) => println!("{quantity} x {sku}: {e}"),
        }
    }
    shop.transport().close().await?;
    orders.shutdown().await?;
    pricing.shutdown().await?;

    // The demo removes what it declared, so that it can run against a shared broker.
    let conn = mqtransport::connect(&mqtransport::url_from_env()).await?;
    for queue in ["orders", "orders.dlq", "pricing", "pricing.dlq"] {
        conn.delete_queue(queue, Default::default()).await?;
    }
    conn.close().await?;
    Ok(())
}
