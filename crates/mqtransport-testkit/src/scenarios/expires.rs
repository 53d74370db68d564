//! Scenarios: queue expiry (`x-expires`): what counts as using a queue.

use super::prelude::*;

/// Publishes to `queue` (mandatory) until the broker returns the message because the queue is
/// gone; fails if it is still there after `within`.
async fn wait_until_gone(c: &Ctx, queue: &str, within: Duration) -> TestResult {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match c.publish("", queue, env("probe")).await? {
            Confirmation::Returned { .. } => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(Failure(format!("queue '{queue}' still exists after {within:?}")));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Whether `queue` still takes a mandatory publish.
async fn still_there(c: &Ctx, queue: &str) -> Result<bool, Failure> {
    Ok(c.publish("", queue, env("probe")).await? == Confirmation::Confirmed)
}

/// Publishing to a queue does not use it: it expires while messages keep arriving.
pub async fn queue_expiry_ignores_publishes(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).expires(Duration::from_millis(1000))))
        .await?;
    wait_until_gone(&c, &q, Duration::from_secs(6)).await
}

/// A queue is used while it has consumers, and expires once the last one has left.
pub async fn queue_expires_after_its_last_consumer_leaves(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).expires(Duration::from_millis(1000))))
        .await?;
    let consumer = c.conn().consume(&q, ConsumeOptions::default().no_ack(true)).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    check!(still_there(&c, &q).await?, "the queue expired while it had a consumer");
    drop(consumer);
    c.conn().ping().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check!(
        still_there(&c, &q).await?,
        "the queue expired at once when its consumer left"
    );
    wait_until_gone(&c, &q, Duration::from_secs(6)).await
}

/// A passive declare uses a queue: asking for its counts keeps it alive.
pub async fn passive_declare_keeps_a_queue_alive(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).expires(Duration::from_millis(1000))))
        .await?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.conn().queue_info(&q).await?;
    }
    wait_until_gone(&c, &q, Duration::from_secs(6)).await
}
