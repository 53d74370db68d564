//! Scenarios: which consumer gets a message: consumer priorities (`x-priority`) and single
//! active consumer (`x-single-active-consumer`).

use super::prelude::*;

fn with_priority(prefetch: u16, priority: i64) -> ConsumeOptions {
    let mut o = ConsumeOptions::default().prefetch(prefetch);
    o.arguments.insert("x-priority", priority);
    o
}

/// Messages go to the consumers of the highest priority while they have credit; lower ones
/// get what those cannot take.
pub async fn consumer_priority_serves_the_highest_first(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    // The low consumer's prefetch is what it takes here: when the high one acks, the next
    // message can only go to it, whenever the ack reaches the broker.
    let mut low = c.conn().consume(&q, with_priority(3, 1)).await?;
    let mut high = c.conn().consume(&q, with_priority(2, 10)).await?;
    for i in 0..5 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut to_high = Vec::new();
    for _ in 0..2 {
        to_high.push(c.next(&mut high).await?);
    }
    let mut to_low = Vec::new();
    for _ in 0..3 {
        to_low.push(c.next(&mut low).await?);
    }
    check_eq!(to_high.iter().map(body).collect::<Vec<_>>(), vec!["m0", "m1"]);
    check_eq!(to_low.iter().map(body).collect::<Vec<_>>(), vec!["m2", "m3", "m4"]);
    // Credit back on the high consumer, none left on the low one: the next message is the
    // high one's.
    to_high.remove(0).ack().await?;
    c.send(&q, "m5").await?;
    check_eq!(body(&c.next(&mut high).await?), "m5");
    for d in to_high.into_iter().chain(to_low) {
        d.ack().await?;
    }
    Ok(())
}

/// A consumer priority must be an integer.
pub async fn consumer_priority_must_be_an_integer(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let mut o = ConsumeOptions::default();
    o.arguments.insert("x-priority", "high");
    let e = expect_err(c.conn().consume(&q, o).await, 406, "x-priority as a string")?;
    check_eq!(
        e.message(),
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' in vhost '/': \"expected integer, got longstr\""
        )
    );
    Ok(())
}

/// With `x-single-active-consumer` one consumer takes everything; when it leaves, the next
/// in line takes over, with what it left unsettled.
pub async fn single_active_consumer_takes_everything_until_it_leaves(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).argument("x-single-active-consumer", true)))
        .await?;
    let mut first = c.conn().consume(&q, ConsumeOptions::default().prefetch(10)).await?;
    let other = c.connect().await?;
    let mut second = other.consume(&q, ConsumeOptions::default().prefetch(10)).await?;
    for i in 0..3 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(c.next(&mut first).await?);
    }
    check_eq!(held.iter().map(body).collect::<Vec<_>>(), vec!["m0", "m1", "m2"]);
    held.remove(0).ack().await?;
    drop(first);
    drop(held);
    let mut taken = Vec::new();
    for _ in 0..2 {
        let d = c.next(&mut second).await?;
        taken.push((body(&d), d.redelivered));
        d.ack().await?;
    }
    // Each was returned on its own: the order they come back in is not the point.
    taken.sort();
    check_eq!(taken, vec![("m1".to_owned(), true), ("m2".to_owned(), true)]);
    c.send(&q, "m3").await?;
    check_eq!(body(&c.next(&mut second).await?), "m3");
    Ok(())
}
