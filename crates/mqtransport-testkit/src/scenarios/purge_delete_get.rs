//! Scenarios: purge, delete, get.

use super::prelude::*;

/// Purge removes ready messages and reports how many; unacknowledged ones survive.
pub async fn purge_removes_ready_messages_only(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..5 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let held = get_one(&c, &q).await?;
    check_eq!(c.conn().purge(&q).await?, 4);
    check_eq!(c.count(&q).await?, 0);
    held.reject(true).await?;
    c.wait_count(&q, 1).await?;
    check_eq!(c.drain(&q).await?, vec!["m0".to_owned()]);
    expect_err(c.conn().purge(&c.queue("missing")).await, 404, "purge missing")?;
    Ok(())
}

/// `if_unused` and `if_empty` guard deletion; delete reports ready messages; a missing queue is
/// fine to delete.
pub async fn delete_queue_conditions(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..4 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let held = get_one(&c, &q).await?;
    let consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    let in_use = DeleteQueue {
        if_unused: true,
        if_empty: false,
    };
    let e = expect_err(c.conn().delete_queue(&q, in_use).await, 406, "if_unused")?;
    check_eq!(
        e.message(),
        format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")
    );
    drop(consumer);
    c.eventually("the consumer is gone", || async {
        Ok(c.conn().queue_info(&q).await?.consumer_count == 0)
    })
    .await?;
    c.wait_count(&q, 3).await?;
    let not_empty = DeleteQueue {
        if_unused: false,
        if_empty: true,
    };
    let e = expect_err(c.conn().delete_queue(&q, not_empty).await, 406, "if_empty")?;
    check_eq!(
        e.message(),
        format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")
    );
    check_eq!(c.conn().delete_queue(&q, DeleteQueue::default()).await?, 3);
    held.ack().await?;
    check_eq!(c.conn().delete_queue(&q, DeleteQueue::default()).await?, 0);
    Ok(())
}

/// `basic.get` reports the ready messages left; an empty queue gives nothing.
pub async fn basic_get_reports_message_count(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..3 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut counts = Vec::new();
    while let Some(d) = c.get(&q).await? {
        counts.push(d.message_count);
        d.ack().await?;
    }
    check_eq!(counts, vec![Some(2), Some(1), Some(0)]);
    check!(c.get(&q).await?.is_none());
    Ok(())
}
