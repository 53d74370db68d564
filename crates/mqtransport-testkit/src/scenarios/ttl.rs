//! Scenarios: per-message and per-queue TTL.

use super::prelude::*;

/// Declares a queue `q` whose dead letters go to a queue `dlq`; returns both names.
async fn dead_lettering_queue(c: &Ctx) -> Result<(String, String), Failure> {
    let (dlx, dlq) = dlx_pair(c);
    let q = c.queue("q");
    c.declare(with_dlq(
        Topology::new().queue(Queue::durable(&q).dead_letter_exchange(&dlx)),
        &dlx,
        &dlq,
    ))
    .await?;
    Ok((q, dlq))
}

/// `x-message-ttl` expires messages, dead-lettered with reason `expired`.
pub async fn queue_ttl_expires_messages(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let q = c.queue("q");
    let t = Topology::new().queue(
        Queue::durable(&q)
            .message_ttl(Duration::from_millis(200))
            .dead_letter_exchange(&dlx),
    );
    c.declare(with_dlq(t, &dlx, &dlq)).await?;
    c.send(&q, "a").await?;
    c.send(&q, "b").await?;
    c.wait_count(&dlq, 2).await?;
    check_eq!(c.count(&q).await?, 0);
    let d = get_one(&c, &dlq).await?;
    let x = deaths(&d);
    check_eq!(text(&x[0], "reason"), Some("expired"));
    check!(!x[0].contains_key("original-expiration"));
    d.ack().await?;
    Ok(())
}

/// The lower of the queue's and the message's TTL wins; a delivered message keeps its
/// `expiration` unchanged.
pub async fn lower_ttl_wins(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).message_ttl(Duration::from_secs(60))))
        .await?;
    c.publish("", &q, env("short").with_expiration(Duration::from_millis(100)))
        .await?;
    c.publish("", &q, env("keep").with_expiration(Duration::from_secs(120)))
        .await?;
    c.wait_count(&q, 1).await?;
    let d = get_one(&c, &q).await?;
    check_eq!(
        (body(&d), d.envelope.properties().expiration.as_deref()),
        ("keep".to_owned(), Some("120000"))
    );
    d.ack().await?;
    Ok(())
}

/// Expiry is checked at the head only: a short TTL behind a long one waits.
pub async fn expiry_is_checked_at_the_head(c: Ctx) -> TestResult {
    let (q, dlq) = dead_lettering_queue(&c).await?;
    c.publish("", &q, env("long").with_expiration(Duration::from_millis(3000)))
        .await?;
    c.publish("", &q, env("short").with_expiration(Duration::from_millis(200)))
        .await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    check_eq!((c.count(&q).await?, c.count(&dlq).await?), (2, 0));
    c.wait_count(&dlq, 2).await?;
    check_eq!(c.drain(&dlq).await?, vec!["long".to_owned(), "short".to_owned()]);
    Ok(())
}

/// A malformed `expiration` is PRECONDITION_FAILED with RabbitMQ's text.
pub async fn invalid_expiration_is_refused(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let mut bad = env("m");
    bad.properties_mut().expiration = Some("abc".into());
    let e = expect_err(c.conn().publish(Publish::to_queue(&q, bad)).await, 406, "abc")?;
    check_eq!(
        e.message(),
        "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"
    );
    let mut neg = env("m");
    neg.properties_mut().expiration = Some("-1".into());
    let e = expect_err(c.conn().publish(Publish::to_queue(&q, neg)).await, 406, "-1")?;
    check!(e.message().ends_with("{value_negative,-1}"), "{e}");
    Ok(())
}

/// An expired message requeued behind an unexpired one stays until it reaches the head.
pub async fn expired_message_requeued_behind_another_waits_for_the_head(c: Ctx) -> TestResult {
    let (q, dlq) = dead_lettering_queue(&c).await?;
    c.publish("", &q, env("first")).await?;
    c.publish("", &q, env("short").with_expiration(Duration::from_millis(300)))
        .await?;
    let first = get_one(&c, &q).await?;
    let short = get_one(&c, &q).await?;
    first.nack(true).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    short.nack(true).await?;
    c.wait_count(&q, 2).await?;
    check_eq!(c.count(&dlq).await?, 0);
    let head = get_one(&c, &q).await?;
    check_eq!(body(&head), "first");
    head.ack().await?;
    c.wait_count(&dlq, 1).await?;
    check_eq!(c.count(&q).await?, 0);
    check_eq!(c.drain(&dlq).await?, vec!["short".to_owned()]);
    Ok(())
}

/// A message with a deadline behind one without expires when it becomes the head, with no
/// one looking at the queue.
pub async fn expiry_reaches_a_message_that_becomes_the_head(c: Ctx) -> TestResult {
    let (q, dlq) = dead_lettering_queue(&c).await?;
    c.publish("", &q, env("first")).await?;
    c.publish("", &q, env("timed").with_expiration(Duration::from_millis(500)))
        .await?;
    get_one(&c, &q).await?.ack().await?;
    c.wait_count(&dlq, 1).await?;
    check_eq!(c.count(&q).await?, 0);
    Ok(())
}
