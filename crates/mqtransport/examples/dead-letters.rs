//! Dead letters and delays: a payment service whose gateway is down dead-letters the orders
//! it cannot charge; once the gateway is back, an operator looks at the dead letters, replays
//! the ones worth replaying and purges the rest. Reminders are published with a delay, and the
//! shortest arrives first. On the embedded broker by default, on RabbitMQ with `MQT_URL`:
//!
//! ```sh
//! cargo run -p mqtransport --example dead-letters
//! MQT_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p mqtransport --example dead-letters
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mqtransport::prelude::*;
use mqtransport::{Backoff, DeadLetterFilter, Disposition, Replay};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "payments.charge")]
struct Charge {
    order: u64,
    cents: u64,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "payments.remind")]
struct Remind {
    order: u64,
}

#[derive(Clone)]
struct Gateway {
    up: Arc<AtomicBool>,
    done: mpsc::UnboundedSender<String>,
}

async fn charge(c: Charge, State(gateway): State<Gateway>) -> Result<(), HandlerError> {
    if c.cents == 0 {
        return Err(HandlerError::permanent(format!(
            "order {} has nothing to charge",
            c.order
        )));
    }
    if !gateway.up.load(Ordering::Acquire) {
        return Err(HandlerError::transient("payment gateway unavailable"));
    }
    let _ = gateway
        .done
        .send(format!("charged order {} ({} cents)", c.order, c.cents));
    Ok(())
}

async fn remind(r: Remind, State(gateway): State<Gateway>) {
    let _ = gateway.done.send(format!("reminded order {}", r.order));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let up = Arc::new(AtomicBool::new(false));
    let (done, mut events) = mpsc::unbounded_channel();
    let (dead_lettered, mut dead_letters) = mpsc::unbounded_channel();
    let app = App::with_state(Gateway {
        up: Arc::clone(&up),
        done,
    })
    // The demo's own delay queues, so that it can remove them at the end.
    .delay_prefix("example.delay")
    .on_settle(move |e| {
        if matches!(e.disposition, Disposition::DeadLettered { .. }) {
            let _ = dead_lettered.send(());
        }
    })
    .consumer(
        Consumer::for_queue(Queue::durable("payments"))
            .handle(charge)
            .handle(remind)
            // Two retries, 50 ms apart, then the dead-letter queue `payments.dlq`.
            .retry(RetryPolicy::max_retries(2).backoff(Backoff::fixed(Duration::from_millis(50)))),
    )
    .build()
    .await?;
    let charges = app.producer::<Charge>(Route::queue("payments"));
    let reminders = app.producer::<Remind>(Route::queue("payments"));
    let dead = app.dead_letters("payments.dlq");
    let running = app.start().await?;

    // Delayed: the 100 ms reminder overtakes the 400 ms one published before it.
    reminders
        .send_delayed(&Remind { order: 2 }, Duration::from_millis(400))
        .await?;
    reminders
        .send_delayed(&Remind { order: 1 }, Duration::from_millis(100))
        .await?;
    for _ in 0..2 {
        println!("{}", events.recv().await.unwrap_or_default());
    }

    // The gateway is down: three orders fail three times each and are dead-lettered.
    for (order, cents) in [(10, 1999), (11, 0), (12, 500)] {
        charges.send(&Charge { order, cents }).await?;
    }
    for _ in 0..3 {
        dead_letters.recv().await;
    }
    for row in dead.summary().await? {
        println!("{} dead letter(s): {} {:?}", row.count, row.reason, row.names);
    }
    for letter in dead.list(&DeadLetterFilter::new(), 10).await? {
        println!("{letter}\n{}", letter.body_text());
    }

    // The gateway is back: replay what the outage killed (a dry run first), purge the rest.
    up.store(true, Ordering::Release);
    let outage = DeadLetterFilter::new().reason_contains("gateway unavailable");
    for entry in dead
        .replay(&Replay::new().filter(outage.clone()).dry_run(true))
        .await?
        .entries
    {
        println!("{entry}");
    }
    let report = dead.replay(&Replay::new().filter(outage).rate_limit(50)).await?;
    println!("replayed {} of {} dead letters", report.replayed(), report.examined);
    for _ in 0..report.replayed() {
        println!("{}", events.recv().await.unwrap_or_default());
    }
    println!("purged {} dead letter(s)", dead.purge(&DeadLetterFilter::new()).await?);
    running.shutdown().await?;

    // The demo removes what it declared, so that it can run against a shared broker.
    let conn = mqtransport::connect(&mqtransport::url_from_env()).await?;
    for queue in ["payments", "payments.dlq"] {
        conn.delete_queue(queue, Default::default()).await?;
    }
    let delays = mqtransport::delay::delay_topology("example.delay");
    for queue in &delays.queues {
        conn.delete_queue(&queue.name, Default::default()).await?;
    }
    for exchange in &delays.exchanges {
        conn.delete_exchange(&exchange.name, false).await?;
    }
    conn.close().await?;
    Ok(())
}
