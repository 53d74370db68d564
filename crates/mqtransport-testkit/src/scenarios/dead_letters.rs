//! Scenarios: dead letters.

use super::prelude::*;

/// A rejected message reaches the dead-letter exchange with `x-death` as RabbitMQ writes it.
pub async fn reject_dead_letters_with_x_death(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let (input, src) = (c.exchange("in"), c.queue("src"));
    let t = Topology::new()
        .exchange(Exchange::direct(&input))
        .queue(Queue::durable(&src).dead_letter_exchange(&dlx))
        .bind(Binding::queue(&src, &input, "in-key"));
    c.declare(with_dlq(t, &dlx, &dlq)).await?;
    let msg = Envelope::new("dead")
        .with_expiration(Duration::from_secs(60))
        .with_header("app", "kept")
        .with_correlation_id("c-1");
    c.publish(&input, "in-key", msg).await?;
    get_one(&c, &src).await?.reject(false).await?;
    c.wait_count(&dlq, 1).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!(
        (d.exchange.as_str(), d.routing_key.as_str(), d.redelivered),
        (dlx.as_str(), "in-key", false)
    );
    check_eq!(d.envelope.properties().expiration, None);
    check_eq!(d.envelope.properties().correlation_id.as_deref(), Some("c-1"));
    check_eq!(d.envelope.header("app").and_then(FieldValue::as_str), Some("kept"));
    let x = deaths(&d);
    check_eq!(x.len(), 1);
    check_eq!(
        keys(&x[0]),
        vec![
            "count",
            "exchange",
            "original-expiration",
            "queue",
            "reason",
            "routing-keys",
            "time"
        ]
    );
    check_eq!(x[0].get("count").and_then(FieldValue::as_i64), Some(1));
    check_eq!(
        (text(&x[0], "reason"), text(&x[0], "queue"), text(&x[0], "exchange")),
        (Some("rejected"), Some(src.as_str()), Some(input.as_str()))
    );
    check_eq!(
        x[0].get("routing-keys"),
        Some(&FieldValue::Array(vec!["in-key".into()]))
    );
    check_eq!(text(&x[0], "original-expiration"), Some("60000"));
    check!(matches!(x[0].get("time"), Some(FieldValue::Timestamp(_))));
    let first = |k: &str| d.envelope.header(k).and_then(FieldValue::as_str).map(str::to_owned);
    check_eq!(first("x-first-death-exchange"), Some(input.clone()));
    check_eq!(first("x-first-death-queue"), Some(src.clone()));
    check_eq!(first("x-first-death-reason").as_deref(), Some("rejected"));
    d.ack().await?;
    Ok(())
}

/// Without a dead-letter exchange a rejected message is dropped.
pub async fn reject_without_dead_letter_exchange_drops(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "gone").await?;
    get_one(&c, &q).await?.reject(false).await?;
    c.send(&q, "next").await?;
    check_eq!(c.drain(&q).await?, vec!["next".to_owned()]);
    Ok(())
}

/// `x-dead-letter-routing-key` replaces the key; `x-death` keeps the original.
pub async fn dead_letter_routing_key_override(c: Ctx) -> TestResult {
    let (src, dlq) = (c.queue("src"), c.queue("dlq"));
    c.declare(
        Topology::new().queue(Queue::durable(&dlq)).queue(
            Queue::durable(&src)
                .dead_letter_exchange("")
                .dead_letter_routing_key(&dlq),
        ),
    )
    .await?;
    c.send(&src, "redirected").await?;
    get_one(&c, &src).await?.nack(false).await?;
    c.wait_count(&dlq, 1).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!((d.exchange.as_str(), d.routing_key.as_str()), ("", dlq.as_str()));
    check_eq!(
        deaths(&d)[0].get("routing-keys"),
        Some(&FieldValue::Array(vec![src.as_str().into()]))
    );
    d.ack().await?;
    Ok(())
}

/// A dead-letter exchange that does not exist drops the message silently.
pub async fn dead_letter_to_missing_exchange_drops(c: Ctx) -> TestResult {
    let (q, missing) = (c.queue("q"), c.exchange("missing-dlx"));
    c.declare(Topology::new().queue(Queue::durable(&q).dead_letter_exchange(&missing)))
        .await?;
    c.send(&q, "m").await?;
    get_one(&c, &q).await?.reject(false).await?;
    c.conn().ping().await?;
    c.send(&q, "after").await?;
    check_eq!(c.drain(&q).await?, vec!["after".to_owned()]);
    Ok(())
}

/// A retry loop (reject → TTL wait queue → back) counts deaths per (queue, reason), most recent
/// first, with later entries written sorted by key.
pub async fn retry_loop_counts_deaths(c: Ctx) -> TestResult {
    let (work, retry) = (c.queue("work"), c.queue("retry"));
    c.declare(
        Topology::new()
            .queue(
                Queue::durable(&work)
                    .dead_letter_exchange("")
                    .dead_letter_routing_key(&retry),
            )
            .queue(
                Queue::durable(&retry)
                    .message_ttl(Duration::from_millis(50))
                    .dead_letter_exchange("")
                    .dead_letter_routing_key(&work),
            ),
    )
    .await?;
    c.send(&work, "job").await?;
    for _ in 0..2 {
        c.wait_count(&work, 1).await?;
        get_one(&c, &work).await?.reject(false).await?;
    }
    c.wait_count(&work, 1).await?;
    let d = get_one(&c, &work).await?;
    let x = deaths(&d);
    check_eq!(x.len(), 2);
    check_eq!(
        (text(&x[0], "queue"), text(&x[0], "reason")),
        (Some(retry.as_str()), Some("expired"))
    );
    check_eq!(
        (text(&x[1], "queue"), text(&x[1], "reason")),
        (Some(work.as_str()), Some("rejected"))
    );
    check_eq!(x[0].get("count").and_then(FieldValue::as_i64), Some(2));
    check_eq!(x[1].get("count").and_then(FieldValue::as_i64), Some(2));
    check_eq!(
        keys(&x[0]),
        vec!["count", "exchange", "queue", "reason", "routing-keys", "time"]
    );
    d.ack().await?;
    Ok(())
}

/// An internal exchange takes dead letters: only publishing to it directly is refused.
pub async fn internal_dead_letter_exchange_delivers(c: Ctx) -> TestResult {
    let (dlx, dlq, q) = (c.exchange("dlx"), c.queue("dlq"), c.queue("q"));
    c.declare(
        Topology::new()
            .exchange(Exchange::fanout(&dlx).internal())
            .queue(Queue::durable(&dlq))
            .queue(Queue::durable(&q).dead_letter_exchange(&dlx))
            .bind(Binding::queue(&dlq, &dlx, "")),
    )
    .await?;
    c.send(&q, "dead").await?;
    get_one(&c, &q).await?.reject(false).await?;
    c.wait_count(&dlq, 1).await?;
    check_eq!(c.drain(&dlq).await?, vec!["dead".to_owned()]);
    Ok(())
}

/// Dead letters are routed by every key the message was published with: its routing key and
/// its `CC` and `BCC` keys.
pub async fn dead_letters_route_by_bcc_keys(c: Ctx) -> TestResult {
    let (x, dlx) = (c.exchange("x"), c.exchange("dlx"));
    let (q, dlq) = (c.queue("q"), c.queue("dlq"));
    c.declare(
        Topology::new()
            .exchange(Exchange::direct(&x))
            .exchange(Exchange::direct(&dlx))
            .queue(Queue::durable(&q).dead_letter_exchange(&dlx))
            .queue(Queue::durable(&dlq))
            .bind(Binding::queue(&q, &x, "k"))
            .bind(Binding::queue(&dlq, &dlx, "hidden")),
    )
    .await?;
    let m = env("bcc").with_header("BCC", FieldValue::Array(vec!["hidden".into()]));
    c.publish(&x, "k", m).await?;
    get_one(&c, &q).await?.reject(false).await?;
    c.wait_count(&dlq, 1).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!(body(&d), "bcc");
    // The death records the routing key and CC keys only: BCC keys stay hidden.
    check_eq!(
        deaths(&d)[0].get("routing-keys"),
        Some(&FieldValue::Array(vec!["k".into()]))
    );
    check!(d.envelope.header("BCC").is_none());
    d.ack().await?;
    Ok(())
}

/// With `x-dead-letter-routing-key` a dead letter loses its `CC` header (it is routed by that
/// key alone); without it the header stays.
pub async fn dead_letter_routing_key_removes_cc(c: Ctx) -> TestResult {
    let (x, q, keyed, dlq) = (c.exchange("x"), c.queue("q"), c.queue("keyed"), c.queue("dlq"));
    c.declare(
        Topology::new()
            .exchange(Exchange::direct(&x))
            .queue(Queue::durable(&dlq))
            .queue(Queue::durable(&q).dead_letter_exchange(""))
            .queue(
                Queue::durable(&keyed)
                    .dead_letter_exchange("")
                    .dead_letter_routing_key(&dlq),
            )
            .bind(Binding::queue(&q, &x, "k"))
            .bind(Binding::queue(&keyed, &x, "cc")),
    )
    .await?;
    // To `q` by its key and to `keyed` by the CC key; `q`'s dead letter routes by "k" and "cc"
    // through the default exchange, which has no such queues.
    let m = env("cc").with_header("CC", FieldValue::Array(vec!["cc".into()]));
    c.publish(&x, "k", m).await?;
    let d = get_one(&c, &q).await?;
    check!(d.envelope.header("CC").is_some());
    d.reject(false).await?;
    get_one(&c, &keyed).await?.reject(false).await?;
    c.wait_count(&dlq, 1).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!(d.routing_key.as_str(), dlq.as_str());
    check!(
        d.envelope.header("CC").is_none(),
        "CC kept: {:?}",
        d.envelope.properties().headers
    );
    check_eq!(
        deaths(&d)[0].get("routing-keys"),
        Some(&FieldValue::Array(vec!["k".into(), "cc".into()]))
    );
    d.ack().await?;
    Ok(())
}
