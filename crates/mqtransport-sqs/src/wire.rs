//! How an [`Envelope`] travels as an SQS message, and how any SQS message becomes one.
//!
//! SQS allows 10 message attributes and a text body. A message we send carries:
//!
//! - the body as is when it is text SQS accepts (UTF-8 without control characters other than
//!   tab, CR and LF), else base64 (a flag says which);
//! - `mqt-properties` (Binary): every AMQP property and header, the exchange and routing key it
//!   was published with, losslessly ([`fields`](crate::fields));
//! - `type` and `content_type` (String) copies of the message name and content type, for plain
//!   SQS consumers.
//!
//! A message from a plain SQS client (no `mqt-properties`) is read as: the body's bytes; the
//! message name from a `type` (or `Type`, `message_type`) attribute; the content type from
//! `content_type` (or `content-type`, `ContentType`); every other attribute as a header
//! (String as text, Number as an integer or float, Binary as bytes); SQS's message id and sent
//! time as the message id and timestamp.
//!
//! Every delivery also carries [`headers::RECEIVE_COUNT`] (SQS's `ApproximateReceiveCount`).

use std::collections::HashMap;

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use mqtransport_core::{Envelope, Error, FieldValue, Properties, Result, headers};

use crate::fields::{Reader, put_properties, put_str, read_properties};

/// The attribute that carries our properties, headers and route.
pub(crate) const PROPERTIES_ATTRIBUTE: &str = "mqt-properties";
/// The message name, for plain SQS consumers.
pub(crate) const TYPE_ATTRIBUTE: &str = "type";
/// The content type, for plain SQS consumers.
pub(crate) const CONTENT_TYPE_ATTRIBUTE: &str = "content_type";

/// Version of the `mqt-properties` layout.
const VERSION: u8 = 1;
/// The body is base64 (it was not text SQS accepts).
const BODY_BASE64: u8 = 1;
/// The body is empty (SQS refuses an empty body, so one character stands in).
const BODY_EMPTY: u8 = 1 << 1;

/// A message ready for `SendMessage`.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) body: String,
    pub(crate) attributes: HashMap<String, MessageAttributeValue>,
    /// Body plus attributes, as SQS counts them against its size limit.
    pub(crate) size: usize,
    /// FIFO: the message group.
    pub(crate) group: Option<String>,
    /// FIFO: the deduplication id (the message id).
    pub(crate) deduplication: Option<String>,
}

/// Whether SQS accepts `s` as a message body: XML 1.0 characters only.
fn sqs_text(s: &str) -> bool {
    s.chars().all(
        |c| matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..),
    )
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| Error::invalid(format!("an SQS message attribute could not be built: {e}")))
}

/// Encodes a message published to `exchange` with `routing_key`.
pub(crate) fn encode(exchange: &str, routing_key: &str, envelope: &Envelope) -> Result<Outgoing> {
    let raw = &envelope.body;
    let (body, flags) = match std::str::from_utf8(raw) {
        _ if raw.is_empty() => ("-".to_owned(), BODY_EMPTY),
        Ok(text) if sqs_text(text) => (text.to_owned(), 0),
        _ => (base64::engine::general_purpose::STANDARD.encode(raw), BODY_BASE64),
    };
    let props = envelope.properties();
    let mut block = BytesMut::with_capacity(64);
    block.extend_from_slice(&[VERSION, flags]);
    put_str(&mut block, exchange.as_bytes());
    put_str(&mut block, routing_key.as_bytes());
    put_properties(&mut block, props)?;
    let block = block.freeze();

    let mut size = body.len();
    let mut attributes = HashMap::new();
    size += PROPERTIES_ATTRIBUTE.len() + "Binary".len() + block.len();
    attributes.insert(
        PROPERTIES_ATTRIBUTE.to_owned(),
        MessageAttributeValue::builder()
            .data_type("Binary")
            .binary_value(Blob::new(block.to_vec()))
            .build()
            .map_err(|e| Error::invalid(format!("an SQS message attribute could not be built: {e}")))?,
    );
    for (name, value) in [
        (TYPE_ATTRIBUTE, &props.kind),
        (CONTENT_TYPE_ATTRIBUTE, &props.content_type),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty() && sqs_text(v)) {
            size += name.len() + "String".len() + v.len();
            attributes.insert(name.to_owned(), string_attribute(v)?);
        }
    }
    let group = envelope.header(headers::GROUP_ID).map(FieldValue::display_value);
    // A replayed dead letter keeps its message id; SQS would drop it as a duplicate for 5 minutes.
    let deduplication =
        props.message_id.as_ref().map(
            |id| match envelope.header(headers::REPLAYED).and_then(FieldValue::as_i64) {
                Some(n) => format!("{id}-replay-{n}"),
                None => id.clone(),
            },
        );
    Ok(Outgoing {
        body,
        attributes,
        size,
        group,
        deduplication,
    })
}

/// A received message, read.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) envelope: Envelope,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    /// SQS's `ApproximateReceiveCount` (1 on the first delivery).
    pub(crate) receive_count: u32,
}

/// Reads a message received from `queue`. Never fails: a message whose `mqt-properties`
/// cannot be read is delivered with [`headers::UNREADABLE`] saying why, so that the App
/// dead-letters it with the reason instead of it coming back forever.
pub(crate) fn decode(queue: &str, message: &Message) -> Incoming {
    let system = message.attributes();
    let system_attr = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name)).map(String::as_str);
    let receive_count = system_attr(MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let body = message.body().unwrap_or("");
    let attributes = message.message_attributes();
    let ours = attributes
        .and_then(|a| a.get(PROPERTIES_ATTRIBUTE))
        .and_then(|v| v.binary_value());
    let plain = ours.is_none();
    let (mut envelope, exchange, routing_key) = match ours {
        Some(block) => match read_ours(block.as_ref(), body) {
            Ok(read) => read,
            Err(e) => {
                let envelope = Envelope::new(Bytes::copy_from_slice(body.as_bytes()))
                    .with_header(headers::UNREADABLE, e.message().to_owned());
                (envelope, String::new(), queue.to_owned())
            }
        },
        None => (read_plain(body, attributes), String::new(), queue.to_owned()),
    };
    if plain {
        let props = envelope.properties_mut();
        props.message_id = message.message_id().map(str::to_owned);
        props.timestamp = system_attr(MessageSystemAttributeName::SentTimestamp)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(|ms| ms / 1000);
    }
    if let Some(group) = system_attr(MessageSystemAttributeName::MessageGroupId)
        && envelope.header(headers::GROUP_ID).is_none()
    {
        envelope.headers_mut().insert(headers::GROUP_ID, group.to_owned());
    }
    envelope
        .headers_mut()
        .insert(headers::RECEIVE_COUNT, i64::from(receive_count));
    Incoming {
        envelope,
        exchange,
        routing_key,
        receive_count,
    }
}

fn read_ours(block: &[u8], body: &str) -> Result<(Envelope, String, String)> {
    let mut r = Reader::new(block, "mqt-properties attribute");
    let version = r.u8()?;
    if version != VERSION {
        return Err(Error::new(
            mqtransport_core::ErrorKind::Codec,
            format!("the mqt-properties attribute has version {version}; this build reads version {VERSION}"),
        ));
    }
    let flags = r.u8()?;
    let exchange = r.string()?;
    let routing_key = r.string()?;
    let props = read_properties(&mut r)?;
    let body = if flags & BODY_EMPTY != 0 {
        Bytes::new()
    } else if flags & BODY_BASE64 != 0 {
        Bytes::from(base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| {
            Error::new(
                mqtransport_core::ErrorKind::Codec,
                format!("the base64 body cannot be read: {e}"),
            )
        })?)
    } else {
        Bytes::copy_from_slice(body.as_bytes())
    };
    Ok((Envelope::with_properties(body, props), exchange, routing_key))
}

/// A message from a plain SQS client.
fn read_plain(body: &str, attributes: Option<&HashMap<String, MessageAttributeValue>>) -> Envelope {
    let mut props = Properties::default();
    let mut table = mqtransport_core::FieldTable::new();
    for (name, value) in attributes.into_iter().flatten() {
        let text = value.string_value();
        match name.as_str() {
            "type" | "Type" | "message_type" if text.is_some() => props.kind = text.map(str::to_owned),
            "content_type" | "content-type" | "ContentType" if text.is_some() => {
                props.content_type = text.map(str::to_owned);
            }
            _ => {
                let field = if value.data_type().starts_with("Number") {
                    let n = text.unwrap_or("");
                    n.parse::<i64>()
                        .map(FieldValue::I64)
                        .or_else(|_| n.parse::<f64>().map(FieldValue::F64))
                        .unwrap_or_else(|_| FieldValue::string(n))
                } else if let Some(b) = value.binary_value() {
                    FieldValue::Bytes(Bytes::copy_from_slice(b.as_ref()))
                } else {
                    FieldValue::string(text.unwrap_or(""))
                };
                table.insert(name.clone(), field);
            }
        }
    }
    if !table.is_empty() {
        props.headers = Some(table);
    }
    Envelope::with_properties(Bytes::copy_from_slice(body.as_bytes()), props)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(out: &Outgoing) -> Message {
        Message::builder()
            .body(out.body.clone())
            .message_id("sqs-id")
            .set_message_attributes(Some(out.attributes.clone()))
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .build()
    }

    #[test]
    fn an_envelope_round_trips_with_its_route() {
        let env = Envelope::new("{\"id\":1}")
            .with_kind("OrderPlaced")
            .with_content_type("application/json")
            .with_message_id("m-1")
            .with_header("x-mqt-attempt", 2i64)
            .with_header("tenant", "acme");
        let out = encode("orders", "eu.created", &env).unwrap();
        assert_eq!(out.body, "{\"id\":1}");
        assert!(out.attributes.contains_key(TYPE_ATTRIBUTE));
        let back = decode("q", &received(&out));
        assert_eq!(
            (back.exchange.as_str(), back.routing_key.as_str()),
            ("orders", "eu.created")
        );
        assert_eq!(back.receive_count, 2);
        assert_eq!(back.envelope.body, env.body);
        let mut expected = env.clone();
        expected.headers_mut().insert(headers::RECEIVE_COUNT, 2i64);
        assert_eq!(back.envelope.properties(), expected.properties());
    }

    #[test]
    fn a_replay_is_not_a_duplicate_of_its_original() {
        let original = Envelope::new("x").with_message_id("m-1");
        let replay = original.clone().with_header(headers::REPLAYED, 1i64);
        let (a, b) = (
            encode("", "q.fifo", &original).unwrap(),
            encode("", "q.fifo", &replay).unwrap(),
        );
        assert_eq!(a.deduplication.as_deref(), Some("m-1"));
        assert_ne!(a.deduplication, b.deduplication);
    }

    #[test]
    fn binary_and_empty_bodies_round_trip() {
        for body in [vec![0u8, 159, 146, 150, 1, 2], Vec::new(), b"tab\tok\x07bell".to_vec()] {
            let out = encode("", "q", &Envelope::new(body.clone())).unwrap();
            assert!(sqs_text(&out.body) && !out.body.is_empty());
            assert_eq!(decode("q", &received(&out)).envelope.body.as_ref(), body.as_slice());
        }
    }

    #[test]
    fn a_plain_sqs_message_is_read_from_its_attributes() {
        let attr = |t: &str, v: &str| {
            MessageAttributeValue::builder()
                .data_type(t)
                .string_value(v)
                .build()
                .unwrap()
        };
        let message = Message::builder()
            .body("{\"n\":1}")
            .message_id("sqs-7")
            .message_attributes("type", attr("String", "Ping"))
            .message_attributes("retries", attr("Number", "3"))
            .message_attributes("ratio", attr("Number.float", "0.5"))
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000123")
            .build();
        let got = decode("q", &message);
        let p = got.envelope.properties();
        assert_eq!(p.kind.as_deref(), Some("Ping"));
        assert_eq!(p.message_id.as_deref(), Some("sqs-7"));
        assert_eq!(p.timestamp, Some(1_700_000_000));
        assert_eq!(got.envelope.header("retries"), Some(&FieldValue::I64(3)));
        assert_eq!(got.envelope.header("ratio"), Some(&FieldValue::F64(0.5)));
        assert_eq!(got.routing_key, "q");
        let bare = decode("q", &Message::builder().body("hello").build());
        assert_eq!(bare.envelope.body.as_ref(), b"hello");
        assert_eq!(bare.receive_count, 1);
    }

    #[test]
    fn a_damaged_properties_attribute_is_delivered_as_unreadable() {
        let message = Message::builder()
            .body("x")
            .message_attributes(
                PROPERTIES_ATTRIBUTE,
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(Blob::new(vec![1, 0, 0, 0]))
                    .build()
                    .unwrap(),
            )
            .build();
        let got = decode("q", &message);
        let why = got
            .envelope
            .header(headers::UNREADABLE)
            .and_then(FieldValue::as_str)
            .unwrap();
        assert!(why.contains("mqt-properties"), "{why}");
    }
}
