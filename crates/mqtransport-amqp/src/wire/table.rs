//! AMQP 0-9-1 field tables and short strings, read without trusting them: every length is
//! checked against its container, short strings and table keys against UTF-8, value types
//! against the set RabbitMQ and the AMQP client know, and nesting against
//! [`MAX_HEADER_DEPTH`] — with a loop and an explicit stack, so that no input, however deep,
//! can exhaust the thread's stack.

use mqtransport_core::MAX_HEADER_DEPTH;
use mqtransport_core::frame_limit::char_prefix;

/// Why bytes from the broker cannot be read by the AMQP client (a sentence for a header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable(pub(crate) String);

impl Unreadable {
    fn truncated(what: &str) -> Self {
        Unreadable(format!("{what} is cut short"))
    }
}

/// A short string at `buf[pos..]`: its bytes and the position after it.
pub(crate) fn short_string(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(*buf.get(pos)?);
    let end = pos + 1 + len;
    Some((buf.get(pos + 1..end)?, end))
}

fn u32_at(buf: &[u8], pos: usize) -> Option<usize> {
    let b = buf.get(pos..pos + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// The size of a value of type `tag` whose payload is fixed, or `None` for a type with a length
/// prefix or nested content.
fn fixed_size(tag: u8) -> Option<usize> {
    Some(match tag {
        b't' | b'b' | b'B' => 1,
        // RabbitMQ reads 's' as a signed 16-bit integer, as does the client.
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'D' => 5,
        b'V' => 0,
        _ => return None,
    })
}

/// A text for a value type tag in a message.
fn tag_text(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", char::from(tag))
    } else {
        format!("0x{tag:02x}")
    }
}

/// Checks the field table whose length prefix is at `buf[pos..]`; returns the position after
/// it. `what` names the table in the reason (e.g. "the headers").
pub(crate) fn check_table(buf: &[u8], pos: usize, what: &str) -> Result<usize, Unreadable> {
    let len = u32_at(buf, pos).ok_or_else(|| Unreadable::truncated(what))?;
    let end = pos
        .checked_add(4 + len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| Unreadable::truncated(what))?;
    // Open containers: where each ends, and whether it is a table (entries have keys).
    let mut open: Vec<(usize, bool)> = vec![(end, true)];
    let mut at = pos + 4;
    while let Some(&(until, is_table)) = open.last() {
        if at == until {
            open.pop();
            continue;
        }
        if is_table {
            let (key, next) = short_string(buf, at)
                .filter(|&(_, next)| next <= until)
                .ok_or_else(|| Unreadable::truncated(what))?;
            if std::str::from_utf8(key).is_err() {
                return Err(Unreadable(format!(
                    "{what} hold a name that is not valid UTF-8 ({})",
                    String::from_utf8_lossy(key)
                )));
            }
            at = next;
        }
        let tag = *buf
            .get(at)
            .filter(|_| at < until)
            .ok_or_else(|| Unreadable::truncated(what))?;
        at += 1;
        let size = match (fixed_size(tag), tag) {
            (Some(n), _) => n,
            (None, b'S' | b'x') => 4 + u32_at(buf, at).ok_or_else(|| Unreadable::truncated(what))?,
            (None, b'F' | b'A') => {
                if open.len() >= MAX_HEADER_DEPTH {
                    return Err(Unreadable(format!(
                        "{what} nest tables or arrays deeper than {MAX_HEADER_DEPTH} levels"
                    )));
                }
                let inner = u32_at(buf, at).ok_or_else(|| Unreadable::truncated(what))?;
                let inner_end = at
                    .checked_add(4 + inner)
                    .filter(|&e| e <= until)
                    .ok_or_else(|| Unreadable::truncated(what))?;
                open.push((inner_end, tag == b'F'));
                at += 4;
                continue;
            }
            (None, other) => {
                return Err(Unreadable(format!(
                    "{what} hold a value of unknown type {}",
                    tag_text(other)
                )));
            }
        };
        at = at
            .checked_add(size)
            .filter(|&e| e <= until)
            .ok_or_else(|| Unreadable::truncated(what))?;
    }
    Ok(end)
}

/// Appends a short string: `s` cut to 255 bytes at a character boundary.
pub(crate) fn put_short_string(out: &mut Vec<u8>, s: &str) {
    let s = char_prefix(s, 255);
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Appends a table entry whose value is a long string (`'S'`).
pub(crate) fn put_long_string_entry(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    put_short_string(out, key);
    out.push(b'S');
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// Appends a table entry whose value is a byte array (`'x'`).
pub(crate) fn put_bytes_entry(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    put_short_string(out, key);
    out.push(b'x');
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mqtransport_testkit::raw_amqp::nested_table as nested;

    /// A table of `entries` (already encoded), with its length prefix.
    pub(crate) fn table(entries: &[u8]) -> Vec<u8> {
        let mut t = (entries.len() as u32).to_be_bytes().to_vec();
        t.extend_from_slice(entries);
        t
    }

    #[test]
    fn a_well_formed_table_is_read_to_its_end() {
        let mut e = Vec::new();
        put_long_string_entry(&mut e, "name", b"value");
        put_bytes_entry(&mut e, "raw", &[0xff, 0x00]);
        e.extend_from_slice(b"\x01at\x01\x01bV\x01cA\x00\x00\x00\x02b\x05");
        let t = table(&e);
        assert_eq!(check_table(&t, 0, "the headers"), Ok(t.len()));
    }

    #[test]
    fn a_key_that_is_not_utf8_is_named() {
        let t = table(b"\x02\xc3\x28t\x01");
        let e = check_table(&t, 0, "the headers").unwrap_err();
        assert!(e.0.contains("not valid UTF-8"), "{e:?}");
    }

    #[test]
    fn nesting_is_limited_without_recursion() {
        assert!(check_table(&nested(MAX_HEADER_DEPTH), 0, "h").is_ok());
        let e = check_table(&nested(MAX_HEADER_DEPTH + 1), 0, "h").unwrap_err();
        assert!(e.0.contains("deeper than 64"), "{e:?}");
        // Far deeper than any stack would survive if the check recursed.
        assert!(check_table(&nested(100_000), 0, "h").is_err());
    }

    #[test]
    fn lengths_past_their_container_and_unknown_types_are_refused() {
        assert!(check_table(&table(b"\x01aS\x00\x00\x00\x09ab"), 0, "h").is_err());
        assert!(check_table(&[0, 0, 0, 9, 1], 0, "h").is_err());
        let e = check_table(&table(b"\x01az"), 0, "h").unwrap_err();
        assert!(e.0.contains("unknown type 'z'"), "{e:?}");
        // An inner table longer than the table holding it.
        assert!(check_table(&table(b"\x01aF\x00\x00\x00\x10"), 0, "h").is_err());
    }

    #[test]
    fn short_strings_are_cut_at_a_character_boundary() {
        let mut out = Vec::new();
        put_short_string(&mut out, &"é".repeat(200));
        assert_eq!(out[0], 254);
        assert!(std::str::from_utf8(&out[1..]).is_ok());
    }
}
