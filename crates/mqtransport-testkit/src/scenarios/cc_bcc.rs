//! Scenarios: `CC` and `BCC` routing headers.

use super::prelude::*;

/// `CC` and `BCC` headers add routing keys; `BCC` is removed from every copy.
pub async fn cc_and_bcc_headers_add_routes(c: Ctx) -> TestResult {
    let x = c.exchange("x");
    let (q1, q2, q3) = (c.queue("q1"), c.queue("q2"), c.queue("q3"));
    c.declare(
        Topology::new()
            .exchange(Exchange::direct(&x))
            .queue(Queue::durable(&q1))
            .queue(Queue::durable(&q2))
            .queue(Queue::durable(&q3))
            .bind(Binding::queue(&q1, &x, "k1"))
            .bind(Binding::queue(&q2, &x, "k2"))
            .bind(Binding::queue(&q3, &x, "k3")),
    )
    .await?;
    let m = Envelope::new("copied")
        .with_header("CC", FieldValue::Array(vec!["k2".into()]))
        .with_header("BCC", FieldValue::Array(vec!["k3".into()]));
    c.publish(&x, "k1", m).await?;
    for q in [&q1, &q2, &q3] {
        let d = get_one(&c, q).await?;
        check_eq!(d.routing_key.as_str(), "k1");
        check!(
            d.envelope.header("CC").is_some() && d.envelope.header("BCC").is_none(),
            "{q}: {:?}",
            d.envelope.properties().headers
        );
        d.ack().await?;
    }
    let bad = Envelope::new("bad").with_header("CC", "k2");
    let e = expect_err(
        c.conn().publish(Publish::new(&x, "k1", bad)).await,
        406,
        "CC as a string",
    )?;
    check_eq!(
        e.message(),
        "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\",longstr}"
    );
    Ok(())
}
