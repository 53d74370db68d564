//! Scenarios: round trip.

use super::prelude::*;

/// A delivery's envelope without the delivery count a transport may add
/// ([`headers::RECEIVE_COUNT`](mqtransport_core::headers::RECEIVE_COUNT), on SQS).
fn as_published(d: &mqtransport_core::Delivery) -> Envelope {
    let mut e = d.envelope.clone();
    let key = mqtransport_core::headers::RECEIVE_COUNT;
    if e.header(key).is_some() {
        e.headers_mut().remove(key);
        if e.properties().headers.as_ref().is_some_and(FieldTable::is_empty) {
            e.properties_mut().headers = None;
        }
    }
    e
}

/// Every basic property and every header type come back unchanged.
pub async fn properties_and_headers_round_trip(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let nested = FieldTable::new().with("inner", "v").with("n", 7i32);
    let headers = FieldTable::new()
        .with("t", true)
        .with("b", -5i8)
        .with("s", -300i16)
        .with("I", -70000i32)
        .with("l", -5_000_000_000i64)
        .with("f", 1.5f32)
        .with("d", 2.25f64)
        .with("D", Decimal { scale: 2, value: 12345 })
        .with("S", "text")
        .with(
            "S-binary",
            FieldValue::LongString(Bytes::from_static(&[0xff, 0xfe, 0x00, 0x61])),
        )
        .with("S-empty", "")
        .with("x", FieldValue::Bytes(Bytes::from_static(b"\x00\x01")))
        .with("T", FieldValue::Timestamp(1_700_000_000))
        .with("F", nested.clone())
        .with(
            "A",
            FieldValue::Array(vec![
                FieldValue::Void,
                1i32.into(),
                FieldValue::Table(nested),
                FieldValue::Array(vec!["x".into()]),
            ]),
        )
        .with("V", FieldValue::Void);
    let mut e = Envelope::new(Bytes::from_static(&[0u8, 159, 146, 150, 255]));
    let p = e.properties_mut();
    p.content_type = Some("application/octet-stream".into());
    p.content_encoding = Some("identity".into());
    p.headers = Some(headers);
    p.delivery_mode = Some(DeliveryMode::Persistent);
    p.priority = Some(3);
    p.correlation_id = Some("corr".into());
    p.reply_to = Some("somewhere".into());
    p.expiration = Some("60000".into());
    p.message_id = Some("01890000-0000-7000-8000-000000000000".into());
    p.timestamp = Some(1_700_000_001);
    p.kind = Some("orders.created".into());
    p.app_id = Some("conformance".into());
    p.cluster_id = Some("c1".into());
    c.publish("", &q, e.clone()).await?;
    let d = get_one(&c, &q).await?;
    check_eq!(as_published(&d), e);
    d.ack().await?;
    c.publish("", &q, Envelope::new("bare")).await?;
    let d = get_one(&c, &q).await?;
    check_eq!(as_published(&d).properties(), &mqtransport_core::Properties::default());
    d.ack().await?;
    Ok(())
}
