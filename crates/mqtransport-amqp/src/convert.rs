//! Conversions between mqtransport's types and lapin's, kept inside this crate.

use bytes::Bytes;
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable as LFieldTable, LongString, ShortString};
use lapin::{BasicProperties, ErrorKind as LErrorKind};
use mqtransport_core::{Decimal, DeliveryMode, Error, ErrorKind, FieldTable, FieldValue, Properties, Scope};

/// A header value as lapin encodes it. RabbitMQ has no unsigned 64-bit type: `U64` values that
/// fit are sent as signed 64-bit, larger ones are refused.
pub(crate) fn to_amqp(v: &FieldValue, key: &str) -> Result<AMQPValue, Error> {
    Ok(match v {
        FieldValue::Bool(b) => AMQPValue::Boolean(*b),
        FieldValue::I8(x) => AMQPValue::ShortShortInt(*x),
        FieldValue::U8(x) => AMQPValue::ShortShortUInt(*x),
        FieldValue::I16(x) => AMQPValue::ShortInt(*x),
        FieldValue::U16(x) => AMQPValue::ShortUInt(*x),
        FieldValue::I32(x) => AMQPValue::LongInt(*x),
        FieldValue::U32(x) => AMQPValue::LongUInt(*x),
        FieldValue::I64(x) => AMQPValue::LongLongInt(*x),
        FieldValue::U64(x) => {
            AMQPValue::LongLongInt(i64::try_from(*x).map_err(|_| {
                Error::invalid(format!("header '{key}': {x} does not fit AMQP's signed 64-bit integer"))
            })?)
        }
        FieldValue::F32(x) => AMQPValue::Float(*x),
        FieldValue::F64(x) => AMQPValue::Double(*x),
        FieldValue::Decimal(d) => AMQPValue::DecimalValue(DecimalValue {
            scale: d.scale,
            value: d.value,
        }),
        FieldValue::LongString(b) => AMQPValue::LongString(LongString::from(b.to_vec())),
        FieldValue::Bytes(b) => AMQPValue::ByteArray(b.to_vec().into()),
        FieldValue::Array(a) => {
            let mut arr = FieldArray::default();
            for x in a {
                arr.push(to_amqp(x, key)?);
            }
            AMQPValue::FieldArray(arr)
        }
        FieldValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        FieldValue::Table(t) => AMQPValue::FieldTable(to_table(t)?),
        FieldValue::Void => AMQPValue::Void,
    })
}

pub(crate) fn to_table(t: &FieldTable) -> Result<LFieldTable, Error> {
    let mut out = LFieldTable::default();
    for (k, v) in t {
        let key = ShortString::try_new(k).map_err(|_| {
            Error::invalid(format!(
                "header name is longer than 255 bytes: '{}…'",
                &k[..32.min(k.len())]
            ))
        })?;
        out.insert(key, to_amqp(v, k)?);
    }
    Ok(out)
}

pub(crate) fn from_amqp(v: &AMQPValue) -> FieldValue {
    match v {
        AMQPValue::Boolean(b) => FieldValue::Bool(*b),
        AMQPValue::ShortShortInt(x) => FieldValue::I8(*x),
        AMQPValue::ShortShortUInt(x) => FieldValue::U8(*x),
        AMQPValue::ShortInt(x) => FieldValue::I16(*x),
        AMQPValue::ShortUInt(x) => FieldValue::U16(*x),
        AMQPValue::LongInt(x) => FieldValue::I32(*x),
        AMQPValue::LongUInt(x) => FieldValue::U32(*x),
        AMQPValue::LongLongInt(x) => FieldValue::I64(*x),
        AMQPValue::Float(x) => FieldValue::F32(*x),
        AMQPValue::Double(x) => FieldValue::F64(*x),
        AMQPValue::DecimalValue(d) => FieldValue::Decimal(Decimal {
            scale: d.scale,
            value: d.value,
        }),
        AMQPValue::ShortString(s) => FieldValue::LongString(Bytes::copy_from_slice(s.as_str().as_bytes())),
        AMQPValue::LongString(s) => FieldValue::LongString(Bytes::copy_from_slice(s.as_bytes())),
        AMQPValue::FieldArray(a) => FieldValue::Array(a.as_slice().iter().map(from_amqp).collect()),
        AMQPValue::Timestamp(t) => FieldValue::Timestamp(*t),
        AMQPValue::FieldTable(t) => FieldValue::Table(from_table(t)),
        AMQPValue::ByteArray(b) => FieldValue::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => FieldValue::Void,
    }
}

pub(crate) fn from_table(t: &LFieldTable) -> FieldTable {
    t.inner().iter().map(|(k, v)| (k.as_str(), from_amqp(v))).collect()
}

fn short(s: &str, what: &str) -> Result<ShortString, Error> {
    ShortString::try_new(s).map_err(|_| Error::invalid(format!("the {what} property is longer than 255 bytes")))
}

pub(crate) fn to_properties(p: &Properties) -> Result<BasicProperties, Error> {
    let mut b = BasicProperties::default();
    if let Some(v) = &p.content_type {
        b = b.with_content_type(short(v, "content_type")?);
    }
    if let Some(v) = &p.content_encoding {
        b = b.with_content_encoding(short(v, "content_encoding")?);
    }
    if let Some(h) = &p.headers {
        b = b.with_headers(to_table(h)?);
    }
    if let Some(m) = p.delivery_mode {
        b = b.with_delivery_mode(m.as_u8());
    }
    if let Some(v) = p.priority {
        b = b.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        b = b.with_correlation_id(short(v, "correlation_id")?);
    }
    if let Some(v) = &p.reply_to {
        b = b.with_reply_to(short(v, "reply_to")?);
    }
    if let Some(v) = &p.expiration {
        b = b.with_expiration(short(v, "expiration")?);
    }
    if let Some(v) = &p.message_id {
        b = b.with_message_id(short(v, "message_id")?);
    }
    if let Some(v) = p.timestamp {
        b = b.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        b = b.with_type(short(v, "type")?);
    }
    if let Some(v) = &p.user_id {
        b = b.with_user_id(short(v, "user_id")?);
    }
    if let Some(v) = &p.app_id {
        b = b.with_app_id(short(v, "app_id")?);
    }
    if let Some(v) = &p.cluster_id {
        b = b.with_cluster_id(short(v, "cluster_id")?);
    }
    Ok(b)
}

/// `None` when the message carries no property at all (nothing to allocate).
pub(crate) fn from_properties(b: &BasicProperties) -> Option<Properties> {
    let s = |v: &Option<ShortString>| v.as_ref().map(|x| x.as_str().to_owned());
    let mut p = Properties::default();
    p.content_type = s(b.content_type());
    p.content_encoding = s(b.content_encoding());
    p.headers = b.headers().as_ref().map(from_table);
    p.delivery_mode = b.delivery_mode().map(|m| {
        if m == 2 {
            DeliveryMode::Persistent
        } else {
            DeliveryMode::Transient
        }
    });
    p.priority = *b.priority();
    p.correlation_id = s(b.correlation_id());
    p.reply_to = s(b.reply_to());
    p.expiration = s(b.expiration());
    p.message_id = s(b.message_id());
    p.timestamp = *b.timestamp();
    p.kind = s(b.kind());
    p.user_id = s(b.user_id());
    p.app_id = s(b.app_id());
    p.cluster_id = s(b.cluster_id());
    (p != Properties::default()).then_some(p)
}

/// Maps a lapin error to ours: broker-reported errors keep their reply code, text and scope.
pub(crate) fn map_err(e: &lapin::Error, context: &str) -> Error {
    match e.kind() {
        LErrorKind::ProtocolError(amqp) => {
            let scope = match amqp.kind() {
                lapin::protocol::AMQPErrorKind::Soft(_) => Scope::Channel,
                lapin::protocol::AMQPErrorKind::Hard(_) => Scope::Connection,
            };
            Error::broker(amqp.get_id(), amqp.get_message().as_str().to_owned(), scope)
        }
        LErrorKind::InvalidChannelState(..) | LErrorKind::InvalidChannel(_) => {
            Error::new(ErrorKind::Closed, format!("{context}: the channel is closed ({e})"))
        }
        _ => Error::new(ErrorKind::Connection, format!("{context}: {e}")),
    }
}

/// Whether the broker refused a queue that exists but cannot be used now: RabbitMQ answers
/// `404 NOT_FOUND - home node '…' of durable queue '…' in vhost '…' is down or inaccessible`
/// for a classic queue whose cluster node is down. Unlike a deleted queue it comes back with
/// its node.
pub(crate) fn queue_unavailable(e: &Error) -> bool {
    e.reply_code() == Some(404) && e.message().contains("is down or inaccessible")
}
