//! What fits in an AMQP 0-9-1 content header: the encoded size of a message's properties, the
//! nesting depth of its headers, and how a framework copy (a retry or a dead letter) is trimmed
//! to fit.
//!
//! RabbitMQ carries a message's properties in one content-header frame, which must not exceed
//! the connection's negotiated `frame_max`. A publish whose properties do not fit makes the
//! broker close the whole connection (`501 FRAME_ERROR`), so a transport measures the properties
//! first ([`Properties::encoded_size`]) and refuses such a publish with an error naming the
//! limit. The embedded broker applies the same limit, so that a test on `memory://` fails where
//! RabbitMQ would.

use crate::envelope::headers;
use crate::{Error, FieldTable, FieldValue, Properties, Result};

/// The negotiated `frame_max` RabbitMQ 3.x offers by default (128 KiB), and the embedded
/// broker's.
pub const DEFAULT_FRAME_MAX: u32 = 131_072;

/// The deepest nesting of tables and arrays in headers that mqtransport sends or reads
/// (RabbitMQ's own headers, e.g. `x-death`, nest three deep). Deeper headers are refused on
/// publish and treated as unreadable on delivery.
pub const MAX_HEADER_DEPTH: usize = 64;

/// Bytes of a content-header frame that are not the property list: the frame's own header (7)
/// and end octet (1), class id, weight, body size and property flags (14).
const CONTENT_HEADER_OVERHEAD: usize = 7 + 1 + 14;

/// The largest property list (encoded properties) a content-header frame of `frame_max` bytes
/// holds.
pub fn max_properties_size(frame_max: u32) -> usize {
    (frame_max as usize).saturating_sub(CONTENT_HEADER_OVERHEAD)
}

fn short_string_size(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, |s| 1 + s.len())
}

/// The encoded size of one field value, tag included; `Err` past [`MAX_HEADER_DEPTH`].
fn value_size(v: &FieldValue, depth: usize) -> Result<usize> {
    Ok(1 + match v {
        FieldValue::Bool(_) | FieldValue::I8(_) | FieldValue::U8(_) => 1,
        FieldValue::I16(_) | FieldValue::U16(_) => 2,
        FieldValue::I32(_) | FieldValue::U32(_) | FieldValue::F32(_) => 4,
        FieldValue::I64(_) | FieldValue::U64(_) | FieldValue::F64(_) | FieldValue::Timestamp(_) => 8,
        FieldValue::Decimal(_) => 5,
        FieldValue::LongString(b) | FieldValue::Bytes(b) => 4 + b.len(),
        FieldValue::Void => 0,
        FieldValue::Array(items) => {
            let depth = deeper(depth)?;
            let mut n = 4;
            for x in items {
                n += value_size(x, depth)?;
            }
            n
        }
        FieldValue::Table(t) => table_size(t, deeper(depth)?)?,
    })
}

fn deeper(depth: usize) -> Result<usize> {
    if depth >= MAX_HEADER_DEPTH {
        return Err(Error::invalid(format!(
            "headers nest tables or arrays deeper than {MAX_HEADER_DEPTH} levels"
        )));
    }
    Ok(depth + 1)
}

/// The encoded size of a field table (its length prefix included).
fn table_size(t: &FieldTable, depth: usize) -> Result<usize> {
    let mut n = 4;
    for (k, v) in t.iter() {
        n += 1 + k.len() + value_size(v, depth)?;
    }
    Ok(n)
}

/// The encoded size of one header entry (name and value).
fn entry_size(key: &str, v: &FieldValue) -> usize {
    1 + key.len() + value_size(v, 1).unwrap_or(usize::MAX / 4)
}

impl Properties {
    /// The size in bytes of these properties encoded as an AMQP 0-9-1 property list, the part of
    /// a content-header frame that grows with the message. Fails (invalid input) on headers
    /// nested deeper than [`MAX_HEADER_DEPTH`].
    ///
    /// ```
    /// use mqtransport_core::{FieldTable, Properties};
    /// let mut p = Properties::default();
    /// p.message_id = Some("42".into());
    /// p.headers = Some(FieldTable::new().with("k", "v"));
    /// // "42" as a short string (3) + a table of one entry: 4 + (1 + 1) + (1 + 4 + 1)
    /// assert_eq!(p.encoded_size().unwrap(), 3 + 12);
    /// ```
    pub fn encoded_size(&self) -> Result<usize> {
        let octets = usize::from(self.delivery_mode.is_some()) + usize::from(self.priority.is_some());
        let headers = match &self.headers {
            Some(t) => table_size(t, 1)?,
            None => 0,
        };
        Ok(short_string_size(&self.content_type)
            + short_string_size(&self.content_encoding)
            + headers
            + octets
            + short_string_size(&self.correlation_id)
            + short_string_size(&self.reply_to)
            + short_string_size(&self.expiration)
            + short_string_size(&self.message_id)
            + if self.timestamp.is_some() { 8 } else { 0 }
            + short_string_size(&self.kind)
            + short_string_size(&self.user_id)
            + short_string_size(&self.app_id)
            + short_string_size(&self.cluster_id))
    }

    /// Refuses properties that do not fit in a content header of `frame_max` bytes, with an
    /// error naming the size and the limit. Properties without headers always fit (ten short
    /// strings are at most 2,560 bytes, below AMQP's smallest `frame_max` of 4,096), so only
    /// headers are measured.
    pub fn check_frame(&self, frame_max: u32) -> Result<()> {
        if self.headers.is_none() {
            return Ok(());
        }
        let size = self.encoded_size()?;
        let max = max_properties_size(frame_max);
        if size > max {
            return Err(Error::invalid(format!(
                "the message's properties (mostly headers) encode to {size} bytes, more than the {max} bytes \
                 a content-header frame holds (frame_max {frame_max}); send large data in the body"
            )));
        }
        Ok(())
    }

    /// Trims the headers of a copy the framework makes (a retry or a dead letter) until the
    /// properties fit a content header of `frame_max` bytes, so the copy always reaches its
    /// queue. Deterministic, in this order:
    ///
    /// 1. `x-mqt-error` is cut to 256 bytes;
    /// 2. other headers are dropped, the largest first (equal sizes by name), never the
    ///    framework's own `x-mqt-attempt`, `x-mqt-error` and `x-mqt-original-*` headers;
    ///    the names dropped are recorded, comma-separated, in `x-mqt-dropped-headers`.
    ///
    /// Returns the names dropped (empty when the properties fitted).
    pub fn fit_frame(&mut self, frame_max: u32) -> Vec<String> {
        let max = max_properties_size(frame_max);
        let fits = |p: &Properties| p.encoded_size().is_ok_and(|n| n <= max);
        if fits(self) {
            return Vec::new();
        }
        let Some(table) = self.headers.as_mut() else {
            return Vec::new();
        };
        if let Some(reason) = table.get(headers::ERROR).and_then(FieldValue::as_str) {
            if reason.len() > 256 {
                let cut = format!("{}…", char_prefix(reason, 256));
                table.insert(headers::ERROR, cut);
            }
        }
        let kept = |k: &str| {
            k == headers::ATTEMPT
                || k == headers::ERROR
                || k == headers::DROPPED
                || k.starts_with("x-mqt-original-")
                || k.starts_with("x-mqt-delay-")
        };
        let mut candidates: Vec<(usize, String)> = table
            .iter()
            .filter(|(k, _)| !kept(k))
            .map(|(k, v)| (entry_size(k, v), k.to_owned()))
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut dropped = Vec::new();
        for (_, name) in candidates {
            if fits(self) {
                break;
            }
            if let Some(t) = self.headers.as_mut() {
                t.remove(&name);
                dropped.push(name);
                let list = dropped.join(",");
                t.insert(headers::DROPPED, truncate_list(&list));
            }
        }
        dropped
    }
}

/// The list of dropped header names, cut to 1 KiB so that recording it cannot outgrow a frame.
fn truncate_list(list: &str) -> String {
    if list.len() <= 1024 {
        return list.to_owned();
    }
    format!("{},…", char_prefix(list, 1024))
}

/// The longest prefix of `text` that is at most `max` bytes and ends at a character boundary,
/// for cutting text to a size the wire allows.
///
/// ```
/// use mqtransport_core::frame_limit::char_prefix;
/// assert_eq!(char_prefix("héllo", 2), "h"); // 'é' takes two bytes
/// assert_eq!(char_prefix("héllo", 3), "hé");
/// assert_eq!(char_prefix("hi", 10), "hi");
/// ```
pub fn char_prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn nested(depth: usize) -> FieldTable {
        let mut t = FieldTable::new().with("leaf", 1i32);
        for _ in 1..depth {
            t = FieldTable::new().with("n", FieldValue::Table(t));
        }
        t
    }

    #[test]
    fn the_size_counts_every_property() {
        let mut p = Properties::default();
        assert_eq!(p.encoded_size().unwrap(), 0);
        p.delivery_mode = Some(crate::DeliveryMode::Persistent);
        p.priority = Some(1);
        p.timestamp = Some(1);
        p.kind = Some("abc".into());
        assert_eq!(p.encoded_size().unwrap(), 1 + 1 + 8 + 4);
        p.headers = Some(FieldTable::new().with("b", FieldValue::Bytes(Bytes::from_static(b"xyz"))));
        assert_eq!(p.encoded_size().unwrap(), 14 + 4 + 2 + 1 + 4 + 3);
    }

    #[test]
    fn headers_deeper_than_the_limit_are_refused() {
        let mut p = Properties {
            headers: Some(nested(MAX_HEADER_DEPTH)),
            ..Properties::default()
        };
        assert!(p.encoded_size().is_ok());
        p.headers = Some(nested(MAX_HEADER_DEPTH + 1));
        let e = p.encoded_size().unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("deeper than 64"), "{e}");
    }

    #[test]
    fn a_header_larger_than_a_frame_is_refused_naming_the_limit() {
        let p = Properties {
            headers: Some(FieldTable::new().with("big", "x".repeat(5000))),
            ..Properties::default()
        };
        assert!(p.check_frame(8192).is_ok());
        let e = p.check_frame(4096).unwrap_err();
        assert!(e.to_string().contains("4074 bytes"), "{e}");
        assert!(e.to_string().contains("frame_max 4096"), "{e}");
    }

    #[test]
    fn a_copy_is_trimmed_largest_foreign_header_first_and_says_so() {
        let mut p = Properties {
            headers: Some(
                FieldTable::new()
                    .with("small", "s")
                    .with("big", "b".repeat(3900))
                    .with("bigger", "c".repeat(4000))
                    .with(headers::ATTEMPT, 3i64)
                    .with(headers::ERROR, "e".repeat(2000))
                    .with(headers::ORIGINAL_QUEUE, "q"),
            ),
            ..Properties::default()
        };
        let dropped = p.fit_frame(4096);
        assert_eq!(dropped, vec!["bigger".to_owned(), "big".to_owned()]);
        let h = p.headers.as_ref().unwrap();
        assert_eq!(h.get(headers::DROPPED).and_then(FieldValue::as_str), Some("bigger,big"));
        assert!(h.get(headers::ERROR).and_then(FieldValue::as_str).unwrap().len() < 300);
        assert!(h.contains_key("small") && h.contains_key(headers::ORIGINAL_QUEUE));
        assert!(p.encoded_size().unwrap() <= max_properties_size(4096));
        // Trimming what fits changes nothing.
        let before = p.clone();
        assert!(p.fit_frame(4096).is_empty());
        assert_eq!(p, before);
    }
}
