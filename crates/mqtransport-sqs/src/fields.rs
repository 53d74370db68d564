//! A compact, lossless binary encoding of AMQP properties, header tables and topology
//! declarations, for the one SQS message attribute (and the queue tags) that carry them.
//!
//! Sizes match AMQP 0-9-1's encoding of the same properties byte for byte (a table key and a
//! text property are a `u8` length and the bytes, a long string a `u32` length; every field
//! value is a type byte, AMQP's own letters, and its data), so a message's properties take as
//! many bytes of SQS's size limit as they take of an AMQP frame, and the frame checks of the
//! core apply. Decoding checks every length and limits nesting, so a damaged attribute is an
//! error naming what is wrong, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mqtransport_core::{Decimal, DeliveryMode, Error, FieldTable, FieldValue, MAX_HEADER_DEPTH, Properties, Result};

/// Appends `s`.
pub(crate) fn put_str(out: &mut BytesMut, s: &[u8]) {
    out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.put_slice(s);
}

/// Appends a short string (at most 255 bytes, as AMQP's), naming `what` if it is longer.
pub(crate) fn put_short(out: &mut BytesMut, s: &str, what: &str) -> Result<()> {
    let Ok(len) = u8::try_from(s.len()) else {
        return Err(Error::invalid(format!(
            "{what} '{}…' is {} bytes long; at most 255 are allowed",
            s.chars().take(32).collect::<String>(),
            s.len()
        )));
    };
    out.put_u8(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

/// Appends a table.
pub(crate) fn put_table(out: &mut BytesMut, table: &FieldTable) -> Result<()> {
    out.put_u32(u32::try_from(table.len()).unwrap_or(u32::MAX));
    for (key, value) in table.iter() {
        put_short(out, key, "a header name")?;
        put_value(out, value)?;
    }
    Ok(())
}

fn put_value(out: &mut BytesMut, value: &FieldValue) -> Result<()> {
    match value {
        FieldValue::Bool(v) => {
            out.put_u8(b't');
            out.put_u8(u8::from(*v));
        }
        FieldValue::I8(v) => {
            out.put_u8(b'b');
            out.put_i8(*v);
        }
        FieldValue::U8(v) => {
            out.put_u8(b'B');
            out.put_u8(*v);
        }
        FieldValue::I16(v) => {
            out.put_u8(b's');
            out.put_i16(*v);
        }
        FieldValue::U16(v) => {
            out.put_u8(b'u');
            out.put_u16(*v);
        }
        FieldValue::I32(v) => {
            out.put_u8(b'I');
            out.put_i32(*v);
        }
        FieldValue::U32(v) => {
            out.put_u8(b'i');
            out.put_u32(*v);
        }
        FieldValue::I64(v) => {
            out.put_u8(b'l');
            out.put_i64(*v);
        }
        FieldValue::U64(v) => {
            out.put_u8(b'L');
            out.put_u64(*v);
        }
        FieldValue::F32(v) => {
            out.put_u8(b'f');
            out.put_f32(*v);
        }
        FieldValue::F64(v) => {
            out.put_u8(b'd');
            out.put_f64(*v);
        }
        FieldValue::Decimal(d) => {
            out.put_u8(b'D');
            out.put_u8(d.scale);
            out.put_u32(d.value);
        }
        FieldValue::LongString(b) => {
            out.put_u8(b'S');
            put_str(out, b);
        }
        FieldValue::Bytes(b) => {
            out.put_u8(b'x');
            put_str(out, b);
        }
        FieldValue::Array(items) => {
            out.put_u8(b'A');
            out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for item in items {
                put_value(out, item)?;
            }
        }
        FieldValue::Timestamp(t) => {
            out.put_u8(b'T');
            out.put_u64(*t);
        }
        FieldValue::Table(t) => {
            out.put_u8(b'F');
            put_table(out, t)?;
        }
        FieldValue::Void => out.put_u8(b'V'),
    }
    Ok(())
}

/// Reads what the `put_*` functions wrote, naming `what` in its errors.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn damaged(&self, why: &str) -> Error {
        Error::new(
            mqtransport_core::ErrorKind::Codec,
            format!("the {} cannot be read: {why}", self.what),
        )
    }

    fn need(&self, n: usize) -> Result<()> {
        if self.buf.remaining() < n {
            return Err(self.damaged("it ends early"));
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.need(len)?;
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn string(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.damaged("a name or text is not UTF-8"))
    }

    /// A short string: a `u8` length and the bytes.
    pub(crate) fn short(&mut self) -> Result<String> {
        let len = usize::from(self.u8()?);
        self.need(len)?;
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        String::from_utf8(head.to_vec()).map_err(|_| self.damaged("a name or text is not UTF-8"))
    }

    pub(crate) fn table(&mut self) -> Result<FieldTable> {
        self.table_at(0)
    }

    fn table_at(&mut self, depth: usize) -> Result<FieldTable> {
        if depth > MAX_HEADER_DEPTH {
            return Err(self.damaged("headers nest too deep"));
        }
        let n = self.u32()?;
        let mut table = FieldTable::new();
        for _ in 0..n {
            let key = self.short()?;
            let value = self.value(depth)?;
            table.insert(key, value);
        }
        Ok(table)
    }

    fn value(&mut self, depth: usize) -> Result<FieldValue> {
        Ok(match self.u8()? {
            b't' => FieldValue::Bool(self.u8()? != 0),
            b'b' => FieldValue::I8(self.u8()? as i8),
            b'B' => FieldValue::U8(self.u8()?),
            b's' => FieldValue::I16(self.u16()? as i16),
            b'u' => FieldValue::U16(self.u16()?),
            b'I' => FieldValue::I32(self.u32()? as i32),
            b'i' => FieldValue::U32(self.u32()?),
            b'l' => FieldValue::I64(self.u64()? as i64),
            b'L' => FieldValue::U64(self.u64()?),
            b'f' => FieldValue::F32(f32::from_bits(self.u32()?)),
            b'd' => FieldValue::F64(f64::from_bits(self.u64()?)),
            b'D' => {
                let scale = self.u8()?;
                FieldValue::Decimal(Decimal {
                    scale,
                    value: self.u32()?,
                })
            }
            b'S' => FieldValue::LongString(Bytes::copy_from_slice(self.bytes()?)),
            b'x' => FieldValue::Bytes(Bytes::copy_from_slice(self.bytes()?)),
            b'A' => {
                if depth >= MAX_HEADER_DEPTH {
                    return Err(self.damaged("headers nest too deep"));
                }
                let n = self.u32()?;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                FieldValue::Array(items)
            }
            b'T' => FieldValue::Timestamp(self.u64()?),
            b'F' => FieldValue::Table(self.table_at(depth + 1)?),
            b'V' => FieldValue::Void,
            other => return Err(self.damaged(&format!("unknown value type {other:#04x}"))),
        })
    }
}

/// Which properties are present, one bit each, in this order.
const CONTENT_TYPE: u16 = 1;
const CONTENT_ENCODING: u16 = 1 << 1;
const HEADERS: u16 = 1 << 2;
const DELIVERY_MODE: u16 = 1 << 3;
const PRIORITY: u16 = 1 << 4;
const CORRELATION_ID: u16 = 1 << 5;
const REPLY_TO: u16 = 1 << 6;
const EXPIRATION: u16 = 1 << 7;
const MESSAGE_ID: u16 = 1 << 8;
const TIMESTAMP: u16 = 1 << 9;
const KIND: u16 = 1 << 10;
const USER_ID: u16 = 1 << 11;
const APP_ID: u16 = 1 << 12;
const CLUSTER_ID: u16 = 1 << 13;

/// Appends every property that is set.
pub(crate) fn put_properties(out: &mut BytesMut, p: &Properties) -> Result<()> {
    let strings = [
        (CONTENT_TYPE, &p.content_type),
        (CONTENT_ENCODING, &p.content_encoding),
        (CORRELATION_ID, &p.correlation_id),
        (REPLY_TO, &p.reply_to),
        (EXPIRATION, &p.expiration),
        (MESSAGE_ID, &p.message_id),
        (KIND, &p.kind),
        (USER_ID, &p.user_id),
        (APP_ID, &p.app_id),
        (CLUSTER_ID, &p.cluster_id),
    ];
    let mut present = 0u16;
    for (bit, value) in strings {
        if value.is_some() {
            present |= bit;
        }
    }
    for (bit, set) in [
        (HEADERS, p.headers.is_some()),
        (DELIVERY_MODE, p.delivery_mode.is_some()),
        (PRIORITY, p.priority.is_some()),
        (TIMESTAMP, p.timestamp.is_some()),
    ] {
        if set {
            present |= bit;
        }
    }
    out.put_u16(present);
    for (_, value) in strings {
        if let Some(s) = value {
            put_short(out, s, "a message property")?;
        }
    }
    if let Some(h) = &p.headers {
        put_table(out, h)?;
    }
    if let Some(m) = p.delivery_mode {
        out.put_u8(m.as_u8());
    }
    if let Some(pr) = p.priority {
        out.put_u8(pr);
    }
    if let Some(t) = p.timestamp {
        out.put_u64(t);
    }
    Ok(())
}

/// Where a text property lives in [`Properties`].
type TextProperty = fn(&mut Properties) -> &mut Option<String>;

/// Reads what [`put_properties`] wrote.
pub(crate) fn read_properties(r: &mut Reader<'_>) -> Result<Properties> {
    let present = r.u16()?;
    let mut p = Properties::default();
    let order: [(u16, TextProperty); 10] = [
        (CONTENT_TYPE, |p| &mut p.content_type),
        (CONTENT_ENCODING, |p| &mut p.content_encoding),
        (CORRELATION_ID, |p| &mut p.correlation_id),
        (REPLY_TO, |p| &mut p.reply_to),
        (EXPIRATION, |p| &mut p.expiration),
        (MESSAGE_ID, |p| &mut p.message_id),
        (KIND, |p| &mut p.kind),
        (USER_ID, |p| &mut p.user_id),
        (APP_ID, |p| &mut p.app_id),
        (CLUSTER_ID, |p| &mut p.cluster_id),
    ];
    for (bit, field) in order {
        if present & bit != 0 {
            *field(&mut p) = Some(r.short()?);
        }
    }
    if present & HEADERS != 0 {
        p.headers = Some(r.table()?);
    }
    if present & DELIVERY_MODE != 0 {
        p.delivery_mode = Some(match r.u8()? {
            1 => DeliveryMode::Transient,
            _ => DeliveryMode::Persistent,
        });
    }
    if present & PRIORITY != 0 {
        p.priority = Some(r.u8()?);
    }
    if present & TIMESTAMP != 0 {
        p.timestamp = Some(r.u64()?);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_property_and_value_type_round_trips() {
        let mut nested = FieldTable::new();
        nested.insert("deep", FieldValue::Array(vec![FieldValue::I8(-1), FieldValue::Void]));
        let mut headers = FieldTable::new();
        for (k, v) in [
            ("bool", FieldValue::Bool(true)),
            ("i8", FieldValue::I8(-8)),
            ("u8", FieldValue::U8(8)),
            ("i16", FieldValue::I16(-16)),
            ("u16", FieldValue::U16(16)),
            ("i32", FieldValue::I32(-32)),
            ("u32", FieldValue::U32(32)),
            ("i64", FieldValue::I64(-64)),
            ("u64", FieldValue::U64(64)),
            ("f32", FieldValue::F32(1.5)),
            ("f64", FieldValue::F64(-2.25)),
            ("dec", FieldValue::Decimal(Decimal { scale: 2, value: 314 })),
            ("s", FieldValue::string("text")),
            ("x", FieldValue::Bytes(Bytes::from_static(&[0, 255, 7]))),
            ("t", FieldValue::Timestamp(1_700_000_000)),
            ("table", FieldValue::Table(nested)),
        ] {
            headers.insert(k, v);
        }
        let mut p = Properties::default();
        p.content_type = Some("application/json".into());
        p.content_encoding = Some("gzip".into());
        p.headers = Some(headers);
        p.delivery_mode = Some(DeliveryMode::Persistent);
        p.priority = Some(3);
        p.correlation_id = Some("c".into());
        p.reply_to = Some("r".into());
        p.expiration = Some("1000".into());
        p.message_id = Some("m".into());
        p.timestamp = Some(42);
        p.kind = Some("OrderPlaced".into());
        p.user_id = Some("u".into());
        p.app_id = Some("a".into());
        p.cluster_id = Some("cl".into());
        let mut out = BytesMut::new();
        put_properties(&mut out, &p).unwrap();
        // AMQP counts the 2 bytes of property flags in the frame's own overhead.
        assert_eq!(
            out.len(),
            2 + p.encoded_size().unwrap(),
            "as many bytes as AMQP's encoding"
        );
        let mut r = Reader::new(&out, "properties");
        assert_eq!(read_properties(&mut r).unwrap(), p);
        assert!(r.is_empty());
        let mut out = BytesMut::new();
        put_properties(&mut out, &Properties::default()).unwrap();
        assert_eq!(
            read_properties(&mut Reader::new(&out, "properties")).unwrap(),
            Properties::default()
        );
    }

    #[test]
    fn names_longer_than_amqp_allows_are_refused() {
        let mut out = BytesMut::new();
        let table = FieldTable::new().with("k".repeat(256), 1i32);
        let e = put_table(&mut out, &table).unwrap_err();
        assert!(
            e.message().contains("a header name") && e.message().contains("256 bytes"),
            "{e}"
        );
    }

    #[test]
    fn damaged_input_is_an_error_naming_what() {
        let mut out = BytesMut::new();
        let mut p = Properties::default();
        p.kind = Some("OrderPlaced".into());
        put_properties(&mut out, &p).unwrap();
        for cut in 0..out.len() {
            let e = read_properties(&mut Reader::new(&out[..cut], "message properties")).unwrap_err();
            assert!(e.message().contains("message properties"), "{e}");
        }
        let bad = [0u8, 4, 0, 0, 0, 1, 1, b'k', b'?'];
        let e = read_properties(&mut Reader::new(&bad, "message properties")).unwrap_err();
        assert!(e.message().contains("unknown value type"), "{e}");
    }
}
