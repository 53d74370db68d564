//! The screen: reads the frames a broker sends before the AMQP client does, and lets through
//! only frames the client can read.
//!
//! Body and heartbeat frames pass as they stream in. Method and content-header frames are held
//! until complete and checked: a delivery whose exchange or routing key is not UTF-8 gets them
//! made readable, and its content header is then marked unreadable; a content header whose
//! properties the client cannot read is replaced ([`content_header::replace`]). A stream that is
//! not AMQP 0-9-1 at all ends the connection with a diagnosis instead of reaching the client's
//! parser.

use super::content_header;
use super::table::{put_short_string, short_string};

const METHOD: u8 = 1;
const HEADER: u8 = 2;
const BODY: u8 = 3;
const HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// AMQP's smallest `frame_max`, which holds until the connection is tuned.
const FRAME_MIN_SIZE: u32 = 4096;

/// What to do with the bytes at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Hand the first `n` bytes to the client as they are.
    Pass(usize),
    /// Hand `with` to the client in place of the first `consumed` bytes.
    Replace { consumed: usize, with: Vec<u8> },
    /// The front is an incomplete frame: read more first.
    NeedMore,
    /// The stream cannot be AMQP 0-9-1: end the connection, for this reason.
    Fail(String),
}

/// The fields of a method frame that carry other clients' text, by (class, method): `S` a short
/// string, a digit the width of a fixed field.
fn layout(class: u16, method: u16) -> Option<&'static [u8]> {
    Some(match (class, method) {
        // basic.deliver: consumer tag, delivery tag, redelivered, exchange, routing key
        (60, 60) => b"S81SS",
        // basic.get-ok: delivery tag, redelivered, exchange, routing key, message count
        (60, 71) => b"81SS4",
        // basic.return: reply code, reply text, exchange, routing key
        (60, 50) => b"2SSS",
        _ => return None,
    })
}

/// The inbound half of a connection, frame by frame.
pub(crate) struct Screen {
    /// Bytes of a pass-through frame not yet handed on.
    passing: usize,
    /// The connection's `frame_max`: AMQP's minimum until `connection.tune`, then the
    /// server's, lowered to the client's own limit when it asks for one. No frame may be
    /// larger, so no frame makes the screen hold more than this.
    frame_max: u32,
    client_frame_max: Option<u32>,
    /// The first bytes have been seen to be an AMQP frame.
    started: bool,
    /// Channels whose next content header is unreadable, and why.
    marked: Vec<(u16, String)>,
}

impl Screen {
    /// A screen for a new connection; `client_frame_max` is the limit the client asks for, if
    /// any (e.g. the URL's `frame_max`).
    pub(crate) fn new(client_frame_max: Option<u32>) -> Self {
        Screen {
            passing: 0,
            frame_max: FRAME_MIN_SIZE,
            client_frame_max: client_frame_max.filter(|&m| m > 0),
            started: false,
            marked: Vec::new(),
        }
    }

    /// The next step for `buf`, the bytes received and not yet handed on.
    pub(crate) fn step(&mut self, buf: &[u8]) -> Step {
        if self.passing > 0 {
            let n = self.passing.min(buf.len());
            if n == 0 {
                return Step::NeedMore;
            }
            self.passing -= n;
            return Step::Pass(n);
        }
        if !self.started {
            if let Some(fail) = self.first_bytes(buf) {
                return fail;
            }
        }
        let Some(head) = buf.get(..7) else {
            return Step::NeedMore;
        };
        let kind = head[0];
        let channel = u16::from_be_bytes([head[1], head[2]]);
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let total = 7 + size + 1;
        if total > self.frame_max as usize && kind != HEARTBEAT {
            return Step::Fail(format!(
                "the server sent a frame of {total} bytes, more than the connection's frame_max of {}",
                self.frame_max
            ));
        }
        match kind {
            BODY | HEARTBEAT => {
                self.passing = total;
                self.step(buf)
            }
            METHOD | HEADER => {
                let Some(frame) = buf.get(..total) else {
                    return Step::NeedMore;
                };
                if frame[total - 1] != FRAME_END {
                    return Step::Fail(format!(
                        "the server sent a frame that does not end with 0xCE (type {kind}, channel {channel}, {size} bytes)"
                    ));
                }
                let payload = &frame[7..total - 1];
                if kind == METHOD {
                    self.method(channel, payload, total)
                } else {
                    self.content_header(channel, payload, total)
                }
            }
            other => Step::Fail(format!("the server sent a frame of unknown type {other}")),
        }
    }

    /// Diagnoses a stream that does not start as AMQP 0-9-1 does (a method frame on channel 0).
    fn first_bytes(&mut self, buf: &[u8]) -> Option<Step> {
        if buf.starts_with(b"AMQP") {
            let version = buf.get(4..8).map(|v| format!("{v:?}")).unwrap_or_default();
            return Some(Step::Fail(format!(
                "the server refused AMQP 0-9-1 and offered protocol header AMQP{version}: it speaks another AMQP version"
            )));
        }
        let first = *buf.first()?;
        if first != METHOD || buf.get(1..3).is_some_and(|c| c != [0, 0]) {
            let shown = String::from_utf8_lossy(&buf[..buf.len().min(24)]).replace(|c: char| c.is_control(), "·");
            return Some(Step::Fail(format!(
                "this is not an AMQP 0-9-1 server (it sent \"{shown}\")"
            )));
        }
        self.started = buf.len() >= 3;
        None
    }

    fn method(&mut self, channel: u16, payload: &[u8], total: usize) -> Step {
        let (Some(class), Some(method)) = (
            payload.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]])),
            payload.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]])),
        ) else {
            return Step::Pass(total);
        };
        if (class, method) == (10, 30) {
            // connection.tune: channel max (2), frame max (4), heartbeat (2)
            if let Some(b) = payload.get(6..10) {
                let server = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let server = if server == 0 { u32::MAX } else { server };
                self.frame_max = self
                    .client_frame_max
                    .map_or(server, |c| c.min(server))
                    .max(FRAME_MIN_SIZE);
            }
            return Step::Pass(total);
        }
        let Some(layout) = layout(class, method) else {
            return Step::Pass(total);
        };
        match readable_method(payload, layout) {
            None => Step::Pass(total),
            Some((fixed, reason)) => {
                self.marked.retain(|(c, _)| *c != channel);
                self.marked.push((channel, reason));
                Step::Replace {
                    consumed: total,
                    with: frame(METHOD, channel, &fixed),
                }
            }
        }
    }

    fn content_header(&mut self, channel: u16, payload: &[u8], total: usize) -> Step {
        let marked = self
            .marked
            .iter()
            .position(|(c, _)| *c == channel)
            .map(|i| self.marked.swap_remove(i).1);
        let reason = match (content_header::check(payload), marked) {
            (Ok(()), None) => return Step::Pass(total),
            (Ok(()), Some(m)) => m,
            (Err(e), None) => e.0,
            (Err(e), Some(m)) => format!("{m}; {}", e.0),
        };
        tracing::warn!(
            channel,
            "a delivery's properties cannot be read as sent, passed on marked unreadable: {reason}"
        );
        let max_payload = (self.frame_max as usize).saturating_sub(8);
        Step::Replace {
            consumed: total,
            with: frame(HEADER, channel, &content_header::replace(payload, &reason, max_payload)),
        }
    }
}

/// `None` when the method's short strings are all UTF-8; else the payload with them made
/// readable, and why.
fn readable_method(payload: &[u8], layout: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut at = 4;
    let mut bad = Vec::new();
    for (i, field) in layout.iter().enumerate() {
        if *field == b'S' {
            let (s, next) = short_string(payload, at)?;
            if std::str::from_utf8(s).is_err() {
                bad.push(i);
            }
            at = next;
        } else {
            at += usize::from(field - b'0');
        }
    }
    if bad.is_empty() {
        return None;
    }
    let strings = layout.iter().filter(|f| **f == b'S').count();
    let mut out = payload[..4].to_vec();
    let mut at = 4;
    let mut what = Vec::new();
    let mut seen = 0;
    for (i, field) in layout.iter().enumerate() {
        if *field == b'S' {
            let (s, next) = short_string(payload, at)?;
            seen += 1;
            if bad.contains(&i) {
                put_short_string(&mut out, &String::from_utf8_lossy(s));
                // The last two short strings of each layout are the exchange and the routing key.
                what.push(match strings - seen {
                    0 => "routing key",
                    1 => "exchange",
                    _ if class_method(payload) == (60, 50) => "reply text",
                    _ => "consumer tag",
                });
            } else {
                out.extend_from_slice(&payload[at..next]);
            }
            at = next;
        } else {
            let next = at + usize::from(field - b'0');
            out.extend_from_slice(payload.get(at..next)?);
            at = next;
        }
    }
    out.extend_from_slice(payload.get(at..)?);
    Some((out, format!("the delivery's {} is not valid UTF-8", what.join(" and "))))
}

fn class_method(payload: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    )
}

/// A frame of `kind` on `channel` around `payload`.
pub(super) fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.push(kind);
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(FRAME_END);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tune(frame_max: u32) -> Vec<u8> {
        let mut p = vec![0, 10, 0, 30, 0, 0];
        p.extend_from_slice(&frame_max.to_be_bytes());
        p.extend_from_slice(&[0, 60]);
        frame(METHOD, 0, &p)
    }

    fn deliver(routing_key: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 60, 0, 60, 3, b'c', b't', b'g'];
        p.extend_from_slice(&7u64.to_be_bytes());
        p.push(0);
        p.push(0); // exchange ""
        p.push(routing_key.len() as u8);
        p.extend_from_slice(routing_key);
        frame(METHOD, 1, &p)
    }

    fn header(list_flags: u16, list: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        p.extend_from_slice(&list_flags.to_be_bytes());
        p.extend_from_slice(list);
        frame(HEADER, 1, &p)
    }

    /// Runs the screen over `input` fed in pieces of `chunk` bytes, as the stream would; returns
    /// what the client gets.
    fn run(input: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
        let mut screen = Screen::new(None);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match screen.step(&buf[pos..]) {
                    Step::Pass(n) => pos += n,
                    Step::Replace { consumed, with } => {
                        out.extend_from_slice(&buf[..pos]);
                        out.extend_from_slice(&with);
                        buf.drain(..pos + consumed);
                        pos = 0;
                    }
                    Step::NeedMore => break,
                    Step::Fail(why) => return Err(why),
                }
            }
            out.extend_from_slice(&buf[..pos]);
            buf.drain(..pos);
        }
        assert!(buf.is_empty(), "everything was handed on");
        Ok(out)
    }

    #[test]
    fn readable_frames_pass_unchanged_whatever_the_pieces() {
        let mut input = tune(131_072);
        input.extend(deliver(b"orders"));
        input.extend(header(0x0080, b"\x02m1"));
        input.extend(frame(BODY, 1, b"hi"));
        input.extend(frame(HEARTBEAT, 0, b""));
        for chunk in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(run(&input, chunk).unwrap(), input, "chunk {chunk}");
        }
    }

    #[test]
    fn an_unreadable_header_is_replaced_and_the_rest_passes() {
        let mut input = tune(131_072);
        input.extend(deliver(b"orders"));
        let bad = header(0x0080, b"\x02\xff\xfe");
        input.extend(&bad);
        input.extend(frame(BODY, 1, b"hi"));
        for chunk in [1, 5, 4096] {
            let out = run(&input, chunk).unwrap();
            assert_ne!(out, input);
            assert!(out.ends_with(&frame(BODY, 1, b"hi")));
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("the property message_id is not valid UTF-8"), "{text}");
        }
    }

    #[test]
    fn a_routing_key_that_is_not_utf8_marks_the_delivery() {
        let mut input = tune(131_072);
        input.extend(deliver(b"or\xffders"));
        input.extend(header(0x0080, b"\x02m1"));
        let out = run(&input, 4096).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("or\u{fffd}ders"), "{text}");
        assert!(text.contains("the delivery's routing key is not valid UTF-8"), "{text}");
    }

    #[test]
    fn a_frame_larger_than_frame_max_ends_the_connection() {
        let mut input = tune(8192);
        input.extend(frame(METHOD, 1, &[0; 9000]));
        let e = run(&input, 4096).unwrap_err();
        assert!(e.contains("more than the connection's frame_max of 8192"), "{e}");
    }

    #[test]
    fn a_server_that_is_not_amqp_is_diagnosed() {
        let e = run(b"HTTP/1.1 400 Bad Request\r\n\r\n", 4096).unwrap_err();
        assert!(e.contains("this is not an AMQP 0-9-1 server"), "{e}");
        let e = run(b"AMQP\x00\x00\x09\x00", 4096).unwrap_err();
        assert!(e.contains("another AMQP version"), "{e}");
    }
}
