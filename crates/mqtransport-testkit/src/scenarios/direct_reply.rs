//! Scenarios: direct reply-to.

use super::prelude::*;

/// One request over direct reply-to: `client` sends "2+2" to `q` with correlation id `id`, the
/// suite's first connection answers "4" to the address the request carries, and the reply is
/// read from `replies`. Checks the address's form; returns the reply and the address.
async fn direct_reply_round_trip(
    c: &Ctx,
    client: &DynTransport,
    replies: &mut Subscription,
    q: &str,
    id: &str,
) -> Result<(mqtransport_core::Delivery, String), Failure> {
    let request = env("2+2")
        .with_reply_to("amq.rabbitmq.reply-to")
        .with_correlation_id(id);
    check_eq!(
        client.publish(Publish::to_queue(q, request)).await?,
        Confirmation::Confirmed
    );
    let req = get_one(c, q).await?;
    // The broker replaced the pseudo-queue's name with this channel's reply address.
    let reply_to = req.envelope.properties().reply_to.clone().unwrap_or_default();
    check!(
        reply_to.starts_with("amq.rabbitmq.reply-to.") && reply_to.len() > 23,
        "{reply_to}"
    );
    c.conn()
        .publish(Publish::new("", &reply_to, env("4").with_correlation_id(id)))
        .await?;
    req.ack().await?;
    Ok((c.next(replies).await?, reply_to))
}

/// Direct reply-to: the request carries a generated `amq.rabbitmq.reply-to.…` address and the
/// reply published to it reaches the requester.
pub async fn direct_reply_to_round_trip(c: Ctx) -> TestResult {
    let q = c.queue("rpc");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let client = c.connect().await?;
    expect_err(
        client
            .publish(Publish::to_queue(
                &q,
                env("early").with_reply_to("amq.rabbitmq.reply-to"),
            ))
            .await,
        406,
        "no reply consumer",
    )?;
    let client = c.connect().await?;
    expect_err(
        client.consume("amq.rabbitmq.reply-to", ConsumeOptions::default()).await,
        406,
        "acking reply consumer",
    )?;
    let client = c.connect().await?;
    let mut replies = client
        .consume("amq.rabbitmq.reply-to", ConsumeOptions::default().no_ack(true))
        .await?;
    let (r, reply_to) = direct_reply_round_trip(&c, &client, &mut replies, &q, "req-1").await?;
    check_eq!(
        (
            body(&r),
            r.envelope.properties().correlation_id.as_deref(),
            r.routing_key.as_str()
        ),
        ("4".to_owned(), Some("req-1"), reply_to.as_str())
    );
    Ok(())
}

/// A request refused by the broker (sent to a missing exchange, which closes the channel it went
/// out on) fails alone: the reply consumer keeps receiving replies to later requests.
pub async fn a_refused_request_keeps_the_reply_consumer(c: Ctx) -> TestResult {
    let (q, missing) = (c.queue("rpc"), c.exchange("no-such-exchange"));
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let client = c.connect().await?;
    let mut replies = client
        .consume("amq.rabbitmq.reply-to", ConsumeOptions::default().no_ack(true))
        .await?;
    let lost = env("lost").with_reply_to("amq.rabbitmq.reply-to");
    expect_err(
        client.publish(Publish::new(&missing, "k", lost)).await,
        404,
        "request to a missing exchange",
    )?;
    let (r, _) = direct_reply_round_trip(&c, &client, &mut replies, &q, "req-2").await?;
    check_eq!(
        (body(&r), r.envelope.properties().correlation_id.as_deref()),
        ("4".to_owned(), Some("req-2"))
    );
    Ok(())
}

/// A connection has one direct reply-to consumer: a second one is refused, and requests go on
/// reaching their queue and getting their replies; once the first is dropped, a new one works.
pub async fn a_second_reply_consumer_is_refused(c: Ctx) -> TestResult {
    let q = c.queue("rpc");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let client = c.connect().await?;
    let no_ack = || ConsumeOptions::default().no_ack(true);
    let mut replies = client.consume("amq.rabbitmq.reply-to", no_ack()).await?;
    let e = expect_err(
        client.consume("amq.rabbitmq.reply-to", no_ack()).await,
        406,
        "a second reply consumer",
    )?;
    check_eq!(e.message(), "PRECONDITION_FAILED - reply consumer already set");
    let (r, _) = direct_reply_round_trip(&c, &client, &mut replies, &q, "req-3").await?;
    check_eq!(body(&r), "4");
    drop(replies);
    client.ping().await?;
    let mut again = client.consume("amq.rabbitmq.reply-to", no_ack()).await?;
    let (r, _) = direct_reply_round_trip(&c, &client, &mut again, &q, "req-4").await?;
    check_eq!(
        (body(&r), r.envelope.properties().correlation_id.as_deref()),
        ("4".to_owned(), Some("req-4"))
    );
    Ok(())
}
