//! Scenarios: consumers, acks, requeue.

use super::prelude::*;

/// Competing consumers are served strictly round-robin in subscription order.
pub async fn competing_consumers_are_served_round_robin(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let conn = c.connect().await?;
        consumers.push(conn.consume(&q, ConsumeOptions::default().no_ack(true)).await?);
    }
    for i in 0..9 {
        c.send(&q, &format!("m{i}")).await?;
    }
    for (k, consumer) in consumers.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(body(&c.next(consumer).await?));
        }
        let want: Vec<String> = (0..3).map(|j| format!("m{}", k + 3 * j)).collect();
        check_eq!(got, want);
    }
    Ok(())
}

/// Prefetch bounds unacknowledged deliveries per consumer; an ack releases the next.
pub async fn prefetch_bounds_unacked_deliveries(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..5 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(2)).await?;
    let d0 = c.next(&mut consumer).await?;
    let d1 = c.next(&mut consumer).await?;
    check_eq!((body(&d0), body(&d1)), ("m0".to_owned(), "m1".to_owned()));
    c.wait_count(&q, 3).await?;
    d0.ack().await?;
    let d2 = c.next(&mut consumer).await?;
    check_eq!(body(&d2), "m2");
    c.wait_count(&q, 2).await?;
    d1.ack().await?;
    d2.ack().await?;
    Ok(())
}

/// An acked message is gone: the next message published is the next one delivered.
pub async fn ack_removes_the_message(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "first").await?;
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    let d = c.next(&mut consumer).await?;
    d.ack().await?;
    drop(consumer);
    c.send(&q, "second").await?;
    c.wait_count(&q, 1).await?;
    check_eq!(c.drain(&q).await?, vec!["second".to_owned()]);
    Ok(())
}

/// Acks in another order than delivered (as concurrent handlers give them) each release their
/// delivery, and the channel stays open: an ack of a later delivery sent alone must not be
/// named again by a later `multiple` ack (RabbitMQ closes the channel on an unknown tag).
pub async fn out_of_order_acks_settle_every_delivery(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 1..=6 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(3)).await?;
    let d1 = c.next(&mut consumer).await?;
    let d2 = c.next(&mut consumer).await?;
    let d3 = c.next(&mut consumer).await?;
    // The last one first: its credit brings m4, so the broker has taken that ack.
    d3.ack().await?;
    let d4 = c.next(&mut consumer).await?;
    check_eq!(body(&d4), "m4");
    // Then the gap fills.
    d1.ack().await?;
    d2.ack().await?;
    let d5 = c.next(&mut consumer).await?;
    let d6 = c.next(&mut consumer).await?;
    check_eq!((body(&d5), body(&d6)), ("m5".to_owned(), "m6".to_owned()));
    d6.ack().await?;
    d4.ack().await?;
    d5.ack().await?;
    // Had the channel closed, its unacked messages would be back in the queue.
    c.send(&q, "after").await?;
    let after = c.next(&mut consumer).await?;
    check_eq!(body(&after), "after");
    after.ack().await?;
    drop(consumer);
    c.wait_count(&q, 0).await?;
    Ok(())
}

/// nack with requeue redelivers the message with `redelivered = true`.
pub async fn nack_with_requeue_redelivers(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "again").await?;
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    let d = c.next(&mut consumer).await?;
    check!(!d.redelivered);
    d.nack(true).await?;
    let d = c.next(&mut consumer).await?;
    check_eq!((body(&d), d.redelivered), ("again".to_owned(), true));
    d.reject(true).await?;
    let d = c.next(&mut consumer).await?;
    check!(d.redelivered);
    d.ack().await?;
    Ok(())
}

/// Classic queues put requeued messages back at their original position.
pub async fn requeue_restores_original_position(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..6 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let m0 = get_one(&c, &q).await?;
    let m1 = get_one(&c, &q).await?;
    let m2 = get_one(&c, &q).await?;
    m2.reject(true).await?;
    m0.reject(true).await?;
    let mut order = Vec::new();
    while let Some(d) = c.get(&q).await? {
        order.push(format!("{}{}", body(&d), if d.redelivered { "(r)" } else { "" }));
        d.ack().await?;
    }
    check_eq!(order, vec!["m0(r)", "m2(r)", "m3", "m4", "m5"]);
    m1.ack().await?;
    Ok(())
}

/// A delivery dropped without being settled goes back to the queue, redelivered.
pub async fn dropped_delivery_is_requeued(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "dropped").await?;
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    drop(c.next(&mut consumer).await?);
    let d = c.next(&mut consumer).await?;
    check_eq!((body(&d), d.redelivered), ("dropped".to_owned(), true));
    d.ack().await?;
    Ok(())
}

/// Closing a connection requeues its unacknowledged deliveries.
pub async fn closing_connection_requeues_unacked(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "m0").await?;
    c.send(&q, "m1").await?;
    let other = c.connect().await?;
    let mut consumer = other.consume(&q, ConsumeOptions::default().prefetch(10)).await?;
    let d0 = c.next(&mut consumer).await?;
    let d1 = c.next(&mut consumer).await?;
    c.wait_count(&q, 0).await?;
    other.close().await?;
    c.wait_count(&q, 2).await?;
    let r = get_one(&c, &q).await?;
    check_eq!((body(&r), r.redelivered), ("m0".to_owned(), true));
    r.ack().await?;
    // The closed connection's deliveries can no longer be settled.
    check!(d0.ack().await.is_err());
    drop(d1);
    Ok(())
}

/// `declare-ok` counts ready messages only, and consumers.
pub async fn declare_ok_counts_ready_only(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..3 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    let d = c.next(&mut consumer).await?;
    c.wait_count(&q, 2).await?;
    let info = c
        .declare(Topology::new().queue(Queue::durable(&q)))
        .await?
        .queues
        .remove(0);
    check_eq!((info.message_count, info.consumer_count), (2, 1));
    d.ack().await?;
    Ok(())
}
