//! Scenarios: declare.

use super::prelude::*;

/// Declaring the same topology twice succeeds and reports the same queue.
pub async fn declare_is_idempotent(c: Ctx) -> TestResult {
    let (q, x) = (c.queue("q"), c.exchange("x"));
    let t = Topology::new()
        .exchange(Exchange::topic(&x))
        .queue(Queue::durable(&q).message_ttl(Duration::from_secs(60)))
        .bind(Binding::queue(&q, &x, "a.#"));
    let first = c.declare(t.clone()).await?;
    let second = c.declare(t).await?;
    check_eq!(
        first.queues,
        vec![QueueInfo {
            name: q.clone(),
            message_count: 0,
            consumer_count: 0
        }]
    );
    check_eq!(second.queues, first.queues);
    Ok(())
}

/// Re-declaring with another durable or auto-delete flag is PRECONDITION_FAILED naming the queue.
pub async fn redeclare_with_other_flags_fails(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::transient(&q))).await?;
    let e = expect_err(
        c.conn().declare(&Topology::new().queue(Queue::durable(&q))).await,
        406,
        "durable",
    )?;
    check_eq!(e.kind(), ErrorKind::Precondition);
    check_eq!(
        e.message(),
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
        )
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::transient(&q).auto_delete()))
            .await,
        406,
        "auto_delete",
    )?;
    check!(e.message().contains("inequivalent arg 'auto_delete'"), "{e}");
    Ok(())
}

/// Known arguments are compared by value (numbers across widths); unknown ones are ignored.
pub async fn redeclare_with_other_arguments_fails(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).argument("x-message-ttl", 1000i32)))
        .await?;
    let e = expect_err(
        c.conn().declare(&Topology::new().queue(Queue::durable(&q))).await,
        406,
        "no ttl",
    )?;
    check!(
        e.message().contains("inequivalent arg 'x-message-ttl'") && e.message().contains(&q),
        "{e}"
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::durable(&q).argument("x-message-ttl", 2000i32)))
            .await,
        406,
        "other ttl",
    )?;
    check!(e.message().contains("received '2000' but current is '1000'"), "{e}");
    let same = Queue::durable(&q)
        .argument("x-message-ttl", 1000i64)
        .argument("x-mqt-unknown", "ignored")
        .argument("x-queue-type", "classic");
    c.declare(Topology::new().queue(same)).await?;
    Ok(())
}

/// Re-declaring a queue as exclusive is RESOURCE_LOCKED (405), not 406.
pub async fn exclusive_flag_mismatch_is_locked(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::durable(&q).exclusive()))
            .await,
        405,
        "exclusive",
    )?;
    check_eq!(e.kind(), ErrorKind::ResourceLocked);
    Ok(())
}

/// Passive declares of missing queues and exchanges are NOT_FOUND naming them.
pub async fn passive_declare_of_missing_entities_is_not_found(c: Ctx) -> TestResult {
    let (q, x) = (c.queue("missing"), c.exchange("missing"));
    let e = expect_err(c.conn().queue_info(&q).await, 404, "queue")?;
    check_eq!(e.kind(), ErrorKind::NotFound);
    check_eq!(e.message(), format!("NOT_FOUND - no queue '{q}' in vhost '/'"));
    let e = expect_err(c.conn().exchange_exists(&x).await, 404, "exchange")?;
    check_eq!(e.message(), format!("NOT_FOUND - no exchange '{x}' in vhost '/'"));
    Ok(())
}

/// An exchange re-declared with another type or durability is PRECONDITION_FAILED.
pub async fn exchange_redeclare_must_match(c: Ctx) -> TestResult {
    let x = c.exchange("x");
    c.declare(Topology::new().exchange(Exchange::direct(&x))).await?;
    c.declare(Topology::new().exchange(Exchange::direct(&x))).await?;
    let e = expect_err(
        c.conn().declare(&Topology::new().exchange(Exchange::fanout(&x))).await,
        406,
        "type",
    )?;
    check_eq!(
        e.message(),
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'fanout' but current is 'direct'"
        )
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().exchange(Exchange::direct(&x).transient()))
            .await,
        406,
        "durable",
    )?;
    check!(e.message().contains("inequivalent arg 'durable'"), "{e}");
    c.conn().exchange_exists(&x).await?;
    Ok(())
}

/// `amq.` names are reserved (403); built-in exchanges may be re-declared equivalently; names over
/// 255 bytes are refused before reaching the broker.
pub async fn reserved_and_oversized_names_are_refused(c: Ctx) -> TestResult {
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::durable("amq.mqt-probe")))
            .await,
        403,
        "queue",
    )?;
    check_eq!(
        e.message(),
        "ACCESS_REFUSED - queue name 'amq.mqt-probe' contains reserved prefix 'amq.*'"
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().exchange(Exchange::direct("amq.mqt-probe")))
            .await,
        403,
        "exchange",
    )?;
    check!(e.message().contains("reserved prefix 'amq.*'"), "{e}");
    c.declare(Topology::new().exchange(Exchange::direct("amq.direct")))
        .await?;
    expect_err(
        c.conn().delete_exchange("amq.direct", false).await,
        403,
        "delete amq.direct",
    )?;
    let long = format!("{}{}", c.queue("q"), "x".repeat(256));
    match c.conn().declare(&Topology::new().queue(Queue::durable(&long))).await {
        Err(e) if e.kind() == ErrorKind::InvalidInput => check!(e.message().contains("255"), "{e}"),
        other => {
            return Err(Failure(format!("256+ byte name: expected InvalidInput, got {other:?}")));
        }
    }
    Ok(())
}

/// Quorum queues must be durable, not exclusive, not auto-delete.
pub async fn quorum_queue_rejects_invalid_properties(c: Ctx) -> TestResult {
    let q = c.queue("qq");
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::transient(&q).argument("x-queue-type", "quorum")))
            .await,
        406,
        "non-durable",
    )?;
    check_eq!(
        e.message(),
        format!("PRECONDITION_FAILED - invalid property 'non-durable' for queue '{q}' in vhost '/'")
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::quorum(&q).auto_delete()))
            .await,
        406,
        "auto-delete",
    )?;
    check!(e.message().contains("'auto-delete'"), "{e}");
    c.declare(Topology::new().queue(Queue::quorum(&q))).await?;
    let e = expect_err(
        c.conn().declare(&Topology::new().queue(Queue::durable(&q))).await,
        406,
        "as classic",
    )?;
    check!(e.message().contains("inequivalent arg 'x-queue-type'"), "{e}");
    Ok(())
}

/// An empty queue name gets a fresh `amq.gen-` name of 30 characters each time.
pub async fn server_named_queues_are_generated(c: Ctx) -> TestResult {
    let a = c.declare(Topology::new().queue(Queue::server_named())).await?;
    let b = c.declare(Topology::new().queue(Queue::server_named())).await?;
    let (a, b) = (&a.queues[0].name, &b.queues[0].name);
    c.adopt_queue(a);
    c.adopt_queue(b);
    check!(a.starts_with("amq.gen-") && a.len() == 30, "{a}");
    check!(a != b, "two declares gave the same name {a}");
    c.send(a, "to-generated").await?;
    check_eq!(c.drain(a).await?, vec!["to-generated".to_owned()]);
    Ok(())
}
