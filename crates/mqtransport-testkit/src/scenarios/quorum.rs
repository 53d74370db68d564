//! Scenarios: quorum queues.

use super::prelude::*;

/// Past `x-delivery-limit` returns a message is dead-lettered with reason `delivery_limit`;
/// `x-delivery-count` counts the returns.
pub async fn quorum_delivery_limit_dead_letters(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let q = c.queue("qq");
    c.declare(with_dlq(
        Topology::new().queue(Queue::quorum(&q).delivery_limit(1).dead_letter_exchange(&dlx)),
        &dlx,
        &dlq,
    ))
    .await?;
    c.send(&q, "poison").await?;
    for expected in 0..2u64 {
        c.wait_count(&q, 1).await?;
        let d = get_one(&c, &q).await?;
        check_eq!(d.delivery_count(), Some(expected));
        d.nack(true).await?;
    }
    c.wait_count(&dlq, 1).await?;
    check_eq!(c.count(&q).await?, 0);
    let d = get_one(&c, &dlq).await?;
    check_eq!(text(&deaths(&d)[0], "reason"), Some("delivery_limit"));
    check!(!d.redelivered);
    d.ack().await?;
    Ok(())
}

/// Quorum queues requeue rejected messages at the back.
pub async fn quorum_requeue_goes_to_the_back(c: Ctx) -> TestResult {
    let q = c.queue("qq");
    c.declare(Topology::new().queue(Queue::quorum(&q))).await?;
    for i in 0..4 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let m0 = get_one(&c, &q).await?;
    let m1 = get_one(&c, &q).await?;
    m1.reject(true).await?;
    m0.reject(true).await?;
    c.wait_count(&q, 4).await?;
    check_eq!(c.drain(&q).await?, vec!["m2", "m3", "m1", "m0"]);
    Ok(())
}
