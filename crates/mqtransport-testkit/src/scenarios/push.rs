//! Scenarios: deliveries are pushed to consumers up to their prefetch whether or not the
//! application reads them, and what that means for an observer (counts, `get`, redelivery).

use super::prelude::*;

/// Bodies and redelivered flags of every ready message of `queue`, taken no-ack.
async fn drain_flags(c: &Ctx, queue: &str) -> Result<Vec<(String, bool)>, Failure> {
    let mut out = Vec::new();
    while let Some(d) = c.conn().get(queue, true).await? {
        out.push((body(&d), d.redelivered));
    }
    Ok(out)
}

/// A consumer that reads nothing still holds its prefetch: counts leave them out, `get` takes
/// what follows, and closing its connection returns them redelivered.
pub async fn deliveries_are_pushed_to_consumers_that_do_not_read(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let other = c.connect().await?;
    let idle = other.consume(&q, ConsumeOptions::default().prefetch(3)).await?;
    for i in 0..5 {
        c.send(&q, &format!("m{i}")).await?;
    }
    c.wait_count(&q, 2).await?;
    let got = get_one(&c, &q).await?;
    check_eq!(body(&got), "m3");
    got.ack().await?;
    other.close().await?;
    drop(idle);
    c.wait_count(&q, 4).await?;
    check_eq!(
        drain_flags(&c, &q).await?,
        vec![
            ("m0".to_owned(), true),
            ("m1".to_owned(), true),
            ("m2".to_owned(), true),
            ("m4".to_owned(), false)
        ]
    );
    Ok(())
}

/// Purging leaves what was pushed to a consumer; deleting the queue counts only ready messages.
pub async fn purge_and_delete_leave_what_consumers_hold(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let other = c.connect().await?;
    let _idle = other.consume(&q, ConsumeOptions::default().prefetch(2)).await?;
    for i in 0..5 {
        c.send(&q, &format!("m{i}")).await?;
    }
    c.wait_count(&q, 3).await?;
    check_eq!(c.conn().purge(&q).await?, 3);
    c.send(&q, "m5").await?;
    check_eq!(c.conn().delete_queue(&q, DeleteQueue::default()).await?, 1);
    Ok(())
}

/// A cancelled consumer's deliveries that the application never read go back to the queue at
/// once (redelivered); the one it read waits for its settling.
pub async fn cancelled_consumer_returns_unread_deliveries(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let other = c.connect().await?;
    let mut consumer = other.consume(&q, ConsumeOptions::default().prefetch(3)).await?;
    for i in 0..3 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let read = c.next(&mut consumer).await?;
    check_eq!(body(&read), "m0");
    drop(consumer);
    c.wait_count(&q, 2).await?;
    check_eq!(
        drain_flags(&c, &q).await?,
        vec![("m1".to_owned(), true), ("m2".to_owned(), true)]
    );
    read.ack().await?;
    other.ping().await?;
    check_eq!(c.count(&q).await?, 0);
    Ok(())
}
