//! The quickstart: a producer publishes `messages.rand { rnd }` every second and a consumer
//! logs each one. On the embedded broker by default, on RabbitMQ with `MQT_URL`:
//!
//! ```sh
//! cargo run -p mqtransport --example quickstart                  # 5 messages, then a graceful shutdown
//! cargo run -p mqtransport --example quickstart -- --forever     # until ctrl-c
//! MQT_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p mqtransport --example quickstart
//! ```

use std::time::Duration;

use mqtransport::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "messages.rand")]
struct Rand {
    rnd: u32,
}

/// The consumer: logs every message it gets.
async fn on_rand(message: Rand, info: DeliveryInfo) {
    tracing::info!(
        rnd = message.rnd,
        message_id = info.message_id(),
        "received messages.rand"
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let forever = std::env::args().any(|a| a == "--forever");

    let app = App::builder() // the broker: $MQT_URL, else memory://
        .name("quickstart")
        .consumer(Consumer::for_queue(Queue::durable("messages")).handle(on_rand))
        .build()
        .await?;
    let producer = app.producer::<Rand>(Route::queue("messages"));
    let running = app.start().await?;

    // The producer: one message a second, each confirmed by the broker.
    let produce = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for sent in 1.. {
            tick.tick().await;
            let message = Rand { rnd: fastrand::u32(..) };
            producer.send(&message).await?;
            tracing::info!(rnd = message.rnd, "published messages.rand");
            if !forever && sent == 5 {
                break;
            }
        }
        tick.tick().await; // a second for the last one to be handled
        anyhow::Ok(())
    };
    tokio::select! {
        done = produce => done?,
        _ = mqtransport::shutdown_signal() => tracing::info!("shutting down"),
    }
    running.shutdown().await?; // stops consuming, lets in-flight handlers finish

    if !forever {
        // The demo removes what it declared, so that it can run against a shared broker.
        let conn = mqtransport::connect(&mqtransport::url_from_env()).await?;
        for queue in ["messages", "messages.dlq"] {
            conn.delete_queue(queue, Default::default()).await?;
        }
        conn.close().await?;
    }
    Ok(())
}
