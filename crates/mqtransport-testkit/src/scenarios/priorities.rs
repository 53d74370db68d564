//! Scenarios: priority queues.

use super::prelude::*;

/// `x-max-priority` queues deliver by priority, capped at the maximum, FIFO within one.
pub async fn priority_queue_orders_by_priority(c: Ctx) -> TestResult {
    let q = c.queue("prio");
    c.declare(Topology::new().queue(Queue::durable(&q).max_priority(5)))
        .await?;
    let msgs: [(&str, Option<u8>); 8] = [
        ("p0", Some(0)),
        ("none", None),
        ("p5a", Some(5)),
        ("p3", Some(3)),
        ("p9", Some(9)),
        ("p255", Some(255)),
        ("p5b", Some(5)),
        ("p1", Some(1)),
    ];
    for (b, p) in msgs {
        let mut e = env(b);
        e.properties_mut().priority = p;
        c.publish("", &q, e).await?;
    }
    check_eq!(
        c.drain(&q).await?,
        vec!["p5a", "p9", "p255", "p5b", "p3", "p1", "p0", "none"]
    );
    Ok(())
}
