//! Scenarios: max length.

use super::prelude::*;

/// `x-max-length` with drop-head keeps the newest and dead-letters the oldest (`maxlen`).
pub async fn max_length_drops_head(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let q = c.queue("q");
    c.declare(with_dlq(
        Topology::new().queue(Queue::durable(&q).max_length(2).dead_letter_exchange(&dlx)),
        &dlx,
        &dlq,
    ))
    .await?;
    for i in 0..5 {
        c.send(&q, &format!("m{i}")).await?;
    }
    check_eq!(c.drain(&q).await?, vec!["m3".to_owned(), "m4".to_owned()]);
    c.wait_count(&dlq, 3).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!(
        (body(&d), text(&deaths(&d)[0], "reason")),
        ("m0".to_owned(), Some("maxlen"))
    );
    d.ack().await?;
    Ok(())
}

/// `reject-publish` nacks what does not fit; `reject-publish-dlx` also dead-letters it.
pub async fn reject_publish_overflow_nacks(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let (q, q2) = (c.queue("q"), c.queue("q2"));
    let t = Topology::new()
        .queue(Queue::durable(&q).max_length(2).overflow(Overflow::RejectPublish))
        .queue(
            Queue::durable(&q2)
                .max_length(1)
                .overflow(Overflow::RejectPublishDlx)
                .dead_letter_exchange(&dlx),
        );
    c.declare(with_dlq(t, &dlx, &dlq)).await?;
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(c.publish("", &q, env(&format!("m{i}"))).await?);
    }
    use Confirmation::{Confirmed, Nacked};
    check_eq!(got, vec![Confirmed, Confirmed, Nacked, Nacked]);
    check_eq!(c.drain(&q).await?, vec!["m0".to_owned(), "m1".to_owned()]);
    check_eq!(c.publish("", &q2, env("n0")).await?, Confirmed);
    check_eq!(c.publish("", &q2, env("n1")).await?, Nacked);
    c.wait_count(&dlq, 1).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!(
        (body(&d), text(&deaths(&d)[0], "reason")),
        ("n1".to_owned(), Some("maxlen"))
    );
    d.ack().await?;
    Ok(())
}

/// `x-max-length-bytes` counts body bytes only.
pub async fn max_length_bytes_counts_bodies(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).max_length_bytes(10)))
        .await?;
    for b in ["b0xx", "b1xx", "b2xx", "b3xx"] {
        c.publish("", &q, env(b).with_header("padding", "p".repeat(100)))
            .await?;
    }
    c.send(&q, "").await?;
    check_eq!(
        c.drain(&q).await?,
        vec!["b2xx".to_owned(), "b3xx".to_owned(), String::new()]
    );
    Ok(())
}

/// A requeued message goes back even above a `reject-publish` (or `-dlx`) limit: the limit
/// refuses publishes, not returns.
pub async fn requeue_goes_back_above_a_reject_publish_limit(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    for overflow in [Overflow::RejectPublish, Overflow::RejectPublishDlx] {
        let q = c.queue(&format!("{overflow:?}"));
        let t = Topology::new().queue(
            Queue::durable(&q)
                .max_length(1)
                .overflow(overflow)
                .dead_letter_exchange(&dlx),
        );
        c.declare(with_dlq(t, &dlx, &dlq)).await?;
        c.send(&q, "m0").await?;
        let held = get_one(&c, &q).await?;
        c.send(&q, "m1").await?;
        held.nack(true).await?;
        c.wait_count(&q, 2).await?;
        check_eq!(c.drain(&q).await?, vec!["m0".to_owned(), "m1".to_owned()]);
    }
    c.conn().ping().await?;
    check_eq!(c.count(&dlq).await?, 0);
    Ok(())
}

/// A requeued message that takes a drop-head queue over its limit drops the head.
pub async fn requeue_above_a_drop_head_limit_drops_the_head(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let q = c.queue("q");
    let t = Topology::new().queue(Queue::durable(&q).max_length(1).dead_letter_exchange(&dlx));
    c.declare(with_dlq(t, &dlx, &dlq)).await?;
    c.send(&q, "m0").await?;
    let held = get_one(&c, &q).await?;
    c.send(&q, "m1").await?;
    held.nack(true).await?;
    c.wait_count(&dlq, 1).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!(
        (body(&d), text(&deaths(&d)[0], "reason")),
        ("m0".to_owned(), Some("maxlen"))
    );
    d.ack().await?;
    check_eq!(c.drain(&q).await?, vec!["m1".to_owned()]);
    Ok(())
}
