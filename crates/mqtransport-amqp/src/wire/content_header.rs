//! The content header of a delivery, checked before the AMQP client reads it, and when it
//! cannot be read, replaced by one it can read that says why.
//!
//! The replacement keeps the class, weight and body size, every property that is readable,
//! short strings that are not UTF-8 made readable (invalid bytes become U+FFFD, cut to 255
//! bytes), and headers that are readable. Headers that are not readable are replaced. Into the
//! headers go [`headers::UNREADABLE`] with the reason and, when the frame can hold them,
//! [`headers::UNREADABLE_PROPERTIES`] with the property list exactly as the broker sent it.

use mqtransport_core::headers;

use super::table::{Unreadable, check_table, put_bytes_entry, put_long_string_entry, put_short_string, short_string};

/// The basic class's properties in the order of their flag bits (bit 15 first).
const PROPERTIES: [(&str, Kind); 14] = [
    ("content_type", Kind::Short),
    ("content_encoding", Kind::Short),
    ("headers", Kind::Table),
    ("delivery_mode", Kind::Octet),
    ("priority", Kind::Octet),
    ("correlation_id", Kind::Short),
    ("reply_to", Kind::Short),
    ("expiration", Kind::Short),
    ("message_id", Kind::Short),
    ("timestamp", Kind::Timestamp),
    ("type", Kind::Short),
    ("user_id", Kind::Short),
    ("app_id", Kind::Short),
    ("cluster_id", Kind::Short),
];

/// The flag bit of the headers property.
const HEADERS_FLAG: u16 = 1 << 13;
/// Class id, weight and body size precede the property flags.
const FIXED: usize = 12;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Short,
    Table,
    Octet,
    Timestamp,
}

/// One property as found in the payload.
struct Found {
    index: usize,
    range: std::ops::Range<usize>,
    problem: Option<Unreadable>,
}

/// Reads the property list of a content-header `payload` (the frame without its 7-byte header
/// and end octet); `Ok` when the AMQP client can read all of it.
///
/// Every delivery passes here: nothing is allocated unless something is unreadable.
pub(crate) fn check(payload: &[u8]) -> Result<(), Unreadable> {
    let mut first = None;
    let whole = scan(payload, &mut |f| {
        if first.is_none() {
            first = f.problem;
        }
    });
    match first {
        Some(problem) => Err(problem),
        None => whole,
    }
}

/// Hands each property of `payload` to `each`, with its problem if any; returns whether the
/// list as a whole is readable (no unknown flags, nothing cut short, nothing left over).
fn scan(payload: &[u8], each: &mut dyn FnMut(Found)) -> Result<(), Unreadable> {
    let Some(flags) = payload.get(FIXED..FIXED + 2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Err(Unreadable("the content header is cut short".into()));
    };
    if flags & 0b11 != 0 {
        return Err(Unreadable(format!(
            "the property flags {flags:#06x} name unknown properties"
        )));
    }
    let mut at = FIXED + 2;
    for (index, (name, kind)) in PROPERTIES.iter().enumerate() {
        if flags & (1 << (15 - index)) == 0 {
            continue;
        }
        let start = at;
        let (end, problem) = match kind {
            Kind::Short => match short_string(payload, at) {
                Some((s, end)) => (
                    end,
                    std::str::from_utf8(s)
                        .err()
                        .map(|_| Unreadable(format!("the property {name} is not valid UTF-8"))),
                ),
                None => return Err(Unreadable(format!("the property {name} is cut short"))),
            },
            Kind::Table => match check_table(payload, at, "the headers") {
                Ok(end) => (end, None),
                Err(problem) => {
                    // The table's own length still says where the next property starts.
                    let len = payload
                        .get(at..at + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
                    match len.map(|l| at + 4 + l).filter(|&e| e <= payload.len()) {
                        Some(end) => (end, Some(problem)),
                        None => return Err(problem),
                    }
                }
            },
            Kind::Octet | Kind::Timestamp => {
                let end = at + if *kind == Kind::Octet { 1 } else { 8 };
                if end > payload.len() {
                    return Err(Unreadable(format!("the property {name} is cut short")));
                }
                (end, None)
            }
        };
        each(Found {
            index,
            range: start..end,
            problem,
        });
        at = end;
    }
    if at == payload.len() {
        Ok(())
    } else {
        Err(Unreadable("the content header has bytes after its properties".into()))
    }
}

/// A content-header payload the AMQP client can read, standing in for `payload`, which it
/// cannot (`reason` says why), at most `max_payload` bytes long when that is possible.
pub(crate) fn replace(payload: &[u8], reason: &str, max_payload: usize) -> Vec<u8> {
    let mut found = Vec::new();
    // What is unreadable as a whole is already in `reason`; the properties read are kept.
    let _ = scan(payload, &mut |f| found.push(f));
    let original = payload.get(FIXED..).unwrap_or_default();
    let with_original = build(payload, &found, reason, Some(original), true);
    if with_original.len() <= max_payload {
        return with_original;
    }
    let with_headers = build(payload, &found, reason, None, true);
    if with_headers.len() <= max_payload {
        return with_headers;
    }
    build(payload, &found, reason, None, false)
}

/// The replacement: readable properties kept, readable headers kept when `keep_headers`, the
/// reason and (when given) the original property list added to the headers.
fn build(payload: &[u8], found: &[Found], reason: &str, original: Option<&[u8]>, keep_headers: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + reason.len() + 64);
    out.extend_from_slice(payload.get(..FIXED).unwrap_or(&[0; FIXED]));
    let mut flags = HEADERS_FLAG;
    for f in found {
        flags |= 1 << (15 - f.index);
    }
    out.extend_from_slice(&flags.to_be_bytes());
    let mut headers_written = false;
    let put_headers = |out: &mut Vec<u8>, readable: Option<&[u8]>| {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        if let Some(table) = readable {
            out.extend_from_slice(table.get(4..).unwrap_or_default());
        }
        put_long_string_entry(out, headers::UNREADABLE, reason.as_bytes());
        if let Some(original) = original {
            put_bytes_entry(out, headers::UNREADABLE_PROPERTIES, original);
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    };
    for f in found {
        if f.index > 2 && !headers_written {
            put_headers(&mut out, None);
            headers_written = true;
        }
        let bytes = &payload[f.range.clone()];
        match PROPERTIES[f.index].1 {
            Kind::Table => {
                put_headers(&mut out, (keep_headers && f.problem.is_none()).then_some(bytes));
                headers_written = true;
            }
            Kind::Short if f.problem.is_some() => {
                put_short_string(&mut out, &String::from_utf8_lossy(bytes.get(1..).unwrap_or_default()));
            }
            _ => out.extend_from_slice(bytes),
        }
    }
    if !headers_written {
        put_headers(&mut out, None);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::table::tests::table;
    use super::*;
    use mqtransport_testkit::raw_amqp::nested_table as nested;

    /// A content header payload: class 60, weight 0, body size 5, then `flags` and `list`.
    fn payload(flags: u16, list: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(list);
        p
    }

    /// Reads a payload with the AMQP client's own parser.
    fn client_reads(p: &[u8]) -> Option<lapin::BasicProperties> {
        use lapin::protocol::basic::parse_properties;
        parse_properties(&p[FIXED..]).ok().map(|(_, props)| props)
    }

    #[test]
    fn a_readable_header_passes() {
        // content_type "a/b", delivery_mode 2, message_id "m1"
        let p = payload(0x8000 | 0x1000 | 0x0080, b"\x03a/b\x02\x02m1");
        assert_eq!(check(&p), Ok(()));
        assert!(client_reads(&p).is_some());
    }

    #[test]
    fn a_message_id_that_is_not_utf8_becomes_readable_and_says_so() {
        let p = payload(0x1000 | 0x0080, b"\x02\x03\xff\xfeA");
        let e = check(&p).unwrap_err();
        assert_eq!(e.0, "the property message_id is not valid UTF-8");
        assert!(client_reads(&p).is_none(), "the client would fail on it");
        let r = replace(&p, &e.0, 131_064);
        assert_eq!(check(&r), Ok(()));
        let props = client_reads(&r).expect("the replacement is readable");
        assert_eq!(
            props.message_id().as_ref().map(|s| s.as_str()),
            Some("\u{fffd}\u{fffd}A")
        );
        assert_eq!(props.delivery_mode(), &Some(2));
        let h = props.headers().as_ref().expect("headers");
        let reason = h.inner().get(headers::UNREADABLE).expect("the reason");
        assert_eq!(reason.as_long_string().map(|s| s.to_string()), Some(e.0.clone()));
        let original = h.inner().get(headers::UNREADABLE_PROPERTIES).expect("the original");
        assert_eq!(
            original.as_byte_array().map(|b| b.as_slice().to_vec()),
            Some(p[FIXED..].to_vec())
        );
    }

    #[test]
    fn headers_nested_too_deep_are_replaced_and_what_follows_kept() {
        let mut list = nested(2_500);
        list.extend_from_slice(b"\x02ok");
        let p = payload(HEADERS_FLAG | 0x0080, &list);
        let e = check(&p).unwrap_err();
        assert!(e.0.contains("deeper than 64"), "{e:?}");
        // Too large to carry the original in a 4 KiB frame: only the reason goes.
        let r = replace(&p, &e.0, 4096 - 8);
        assert!(r.len() <= 4096 - 8);
        let props = client_reads(&r).expect("readable");
        assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("ok"));
        let h = props.headers().as_ref().expect("headers");
        assert!(h.inner().contains_key(headers::UNREADABLE));
        assert!(!h.inner().contains_key(headers::UNREADABLE_PROPERTIES));
    }

    #[test]
    fn readable_headers_are_kept_beside_the_reason() {
        let mut entries = Vec::new();
        put_long_string_entry(&mut entries, "tenant", b"t1");
        let mut list = table(&entries);
        list.extend_from_slice(b"\x01\xff");
        let p = payload(HEADERS_FLAG | 0x0020, &list);
        let r = replace(&p, "the property type is not valid UTF-8", 131_064);
        let props = client_reads(&r).expect("readable");
        let h = props.headers().as_ref().expect("headers");
        assert!(h.inner().contains_key("tenant") && h.inner().contains_key(headers::UNREADABLE));
        assert_eq!(props.kind().as_ref().map(|s| s.as_str()), Some("\u{fffd}"));
    }

    #[test]
    fn a_replacement_always_fits_the_frame() {
        let mut entries = Vec::new();
        put_long_string_entry(&mut entries, "big", &[b'b'; 3900]);
        let mut list = table(&entries);
        list.extend_from_slice(b"\x01\xff");
        let p = payload(HEADERS_FLAG | 0x0080, &list);
        assert!(p.len() <= 4088);
        let r = replace(&p, &"r".repeat(300), 4088);
        assert!(r.len() <= 4088, "{}", r.len());
        let props = client_reads(&r).expect("readable");
        let h = props.headers().as_ref().expect("headers");
        assert!(h.inner().contains_key(headers::UNREADABLE) && !h.inner().contains_key("big"));
    }

    #[test]
    fn unknown_flags_and_truncation_are_unreadable() {
        assert!(check(&payload(0x0001, b"")).is_err());
        assert!(check(&payload(0x0080, b"\x05ab")).is_err());
        assert!(check(&payload(0x0080, b"\x01ab")).is_err(), "bytes left over");
        let r = replace(&payload(0x0080, b"\x05ab"), "cut short", 131_064);
        assert!(client_reads(&r).is_some());
    }

    mod properties {
        use super::*;
        use crate::convert::{from_properties, to_properties};
        use bytes::Bytes;
        use mqtransport_core::{Decimal, DeliveryMode, FieldTable, FieldValue, Properties};
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        fn value() -> impl Strategy<Value = FieldValue> {
            let leaf = prop_oneof![
                any::<bool>().prop_map(FieldValue::Bool),
                any::<i8>().prop_map(FieldValue::I8),
                any::<u8>().prop_map(FieldValue::U8),
                any::<i16>().prop_map(FieldValue::I16),
                any::<u16>().prop_map(FieldValue::U16),
                any::<i32>().prop_map(FieldValue::I32),
                any::<u32>().prop_map(FieldValue::U32),
                any::<i64>().prop_map(FieldValue::I64),
                (-1e9f64..1e9).prop_map(FieldValue::F64),
                (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| FieldValue::LongString(Bytes::from(b))),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| FieldValue::Bytes(Bytes::from(b))),
                any::<u64>().prop_map(FieldValue::Timestamp),
                Just(FieldValue::Void),
            ];
            leaf.prop_recursive(6, 64, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
                    proptest::collection::btree_map("\\PC{1,12}", inner, 0..6)
                        .prop_map(|m| FieldValue::Table(table(m))),
                ]
            })
        }

        fn table(m: BTreeMap<String, FieldValue>) -> FieldTable {
            let mut t = FieldTable::new();
            for (k, v) in m {
                t.insert(k, v);
            }
            t
        }

        fn short() -> impl Strategy<Value = Option<String>> {
            proptest::option::of("\\PC{0,40}".prop_filter("fits a short string", |s| s.len() <= 255))
        }

        prop_compose! {
            fn props()(
                content_type in short(), message_id in short(), kind in short(), reply_to in short(),
                headers in proptest::option::of(proptest::collection::btree_map("\\PC{1,12}", value(), 0..8)),
                persistent in proptest::option::of(any::<bool>()), priority in proptest::option::of(0u8..10),
                timestamp in proptest::option::of(any::<u64>()),
            ) -> Properties {
                let mut p = Properties::default();
                p.content_type = content_type;
                p.message_id = message_id;
                p.kind = kind;
                p.reply_to = reply_to;
                p.headers = headers.map(table);
                p.delivery_mode = persistent.map(|b| if b { DeliveryMode::Persistent } else { DeliveryMode::Transient });
                p.priority = priority;
                p.timestamp = timestamp;
                p
            }
        }

        /// A content-header payload of `p` as the AMQP client encodes it.
        fn encode(p: &Properties) -> Vec<u8> {
            let lapin_props = to_properties(p).expect("convertible");
            let list = lapin::protocol::basic::gen_properties(&lapin_props)(Vec::new().into())
                .expect("encodes")
                .write;
            let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            payload.extend_from_slice(&list);
            payload
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// What the client encodes, the screen lets through, and it reads back exactly.
            #[test]
            fn client_encoded_properties_pass_and_round_trip(p in props()) {
                let payload = encode(&p);
                prop_assert_eq!(check(&payload), Ok(()));
                let back = client_reads(&payload).expect("the client reads its own encoding");
                let back = from_properties(&back).unwrap_or_default();
                prop_assert_eq!(back, p);
            }

            /// Corrupted bytes: what the screen lets through, the client reads; what it stops,
            /// its replacement the client reads. Never a panic.
            #[test]
            fn corrupted_headers_are_read_or_replaced(p in props(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4), cut in any::<usize>()) {
                let mut payload = encode(&p);
                for (at, byte) in flips {
                    let i = FIXED + at % (payload.len() - FIXED);
                    payload[i] = byte;
                }
                if cut % 4 == 0 {
                    payload.truncate(FIXED + cut % (payload.len() - FIXED + 1));
                }
                match check(&payload) {
                    Ok(()) => prop_assert!(client_reads(&payload).is_some(), "passed but unreadable: {:?}", payload),
                    Err(why) => {
                        let replaced = replace(&payload, &why.0, 131_064);
                        prop_assert_eq!(check(&replaced), Ok(()));
                        prop_assert!(client_reads(&replaced).is_some());
                    }
                }
            }
        }
    }
}
