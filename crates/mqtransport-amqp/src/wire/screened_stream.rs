//! The broker's socket as the AMQP client sees it: what the client writes goes to the broker as
//! it is, and what the broker sends reaches the client through the [screen](super::screen),
//! screened inside the client's own read call.
//!
//! The screen works on whole method and content-header frames, so bytes read from the broker
//! wait here until the screen has decided on them. Body and heartbeat frames pass as they
//! arrive.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use tokio::io::ReadBuf;

use super::screen::{Screen, Step};

/// The broker's side of a connection: TCP, or a TLS session over it.
pub(crate) trait BrokerIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

impl<T> BrokerIo for T where T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

/// Why the screen ended a connection the client could not have made sense of.
pub(crate) type Diagnosis = Arc<Mutex<Option<String>>>;

/// Free room below which a read first makes more: a read should be able to take a few frames.
const MIN_READ_ROOM: usize = 4096;
/// How much the read buffer grows by when it must.
const GROWTH: usize = 64 * 1024;

/// What the client reads and writes in place of the broker's socket.
pub(crate) struct ScreenedStream {
    broker: Box<dyn BrokerIo>,
    screen: Screen,
    diagnosis: Diagnosis,
    /// Bytes read from the broker; `buf[start..end]` are not yet handed on or dropped. The
    /// whole vector is initialised, so reads go straight into its free tail.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How many bytes at `buf[start..]` the screen has let through as they are.
    ready: usize,
    /// Bytes the screen made in place of a frame, handed on after the `ready` bytes.
    replacement: Option<Replacement>,
    /// The screen found the stream unreadable: the client reads the end of the stream.
    failed: bool,
}

/// A frame the screen rewrote: `with` goes to the client in place of the `replaces` bytes
/// that follow the bytes let through before it.
struct Replacement {
    with: Vec<u8>,
    handed: usize,
    replaces: usize,
}

impl ScreenedStream {
    /// The client's view of `broker`, read through `screen`; a reason to end the connection
    /// is left in `diagnosis`.
    pub(crate) fn new(broker: Box<dyn BrokerIo>, screen: Screen, diagnosis: Diagnosis) -> Self {
        ScreenedStream {
            broker,
            screen,
            diagnosis,
            buf: vec![0; GROWTH],
            start: 0,
            end: 0,
            ready: 0,
            replacement: None,
            failed: false,
        }
    }

    /// Hands on what the screen has decided, if anything: the bytes let through first, then a
    /// replacement.
    fn hand_on(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.ready > 0 {
            let n = self.ready.min(out.len());
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            self.ready -= n;
            return Some(n);
        }
        let replacement = self.replacement.as_mut()?;
        self.start += std::mem::take(&mut replacement.replaces);
        let rest = &replacement.with[replacement.handed..];
        if rest.is_empty() {
            // Nothing to hand on (a frame replaced by nothing): never a read of 0, which
            // would tell the client the stream ended.
            self.replacement = None;
            return None;
        }
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        replacement.handed += n;
        if replacement.handed == replacement.with.len() {
            self.replacement = None;
        }
        Some(n)
    }

    /// Runs the screen over the buffered bytes until it lets something through, rewrites a
    /// frame, needs more, or fails.
    fn screen_buffered(&mut self) {
        let mut ready = 0;
        loop {
            match self.screen.step(&self.buf[self.start + ready..self.end]) {
                Step::Pass(n) => ready += n,
                Step::Replace { consumed, with } => {
                    self.replacement = Some(Replacement {
                        with,
                        handed: 0,
                        replaces: consumed,
                    });
                    break;
                }
                Step::NeedMore => break,
                Step::Fail(why) => {
                    tracing::warn!("closing the connection to the broker: {why}");
                    *self.diagnosis.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                    self.failed = true;
                    ready = 0;
                    break;
                }
            }
        }
        self.ready = ready;
    }

    /// Makes at least [`MIN_READ_ROOM`] free bytes after `end`, keeping `buf[start..end]`.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end >= MIN_READ_ROOM {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < MIN_READ_ROOM {
            self.buf.resize(self.buf.len() + GROWTH, 0);
        }
    }
}

impl futures_io::AsyncRead for ScreenedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if let Some(n) = this.hand_on(out) {
                return Poll::Ready(Ok(n));
            }
            if this.failed {
                return Poll::Ready(Ok(0));
            }
            this.screen_buffered();
            if this.ready > 0 || this.replacement.is_some() || this.failed {
                continue;
            }
            this.make_room();
            let mut read = ReadBuf::new(&mut this.buf[this.end..]);
            ready!(Pin::new(&mut *this.broker).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            this.end += n;
        }
    }
}

impl futures_io::AsyncWrite for ScreenedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().broker).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().broker).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().broker).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().broker).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_io::AsyncRead;
    use tokio::io::AsyncWriteExt;

    use super::super::screen::frame;
    use super::*;

    /// Reads `stream` to its end, in reads of at most 100 bytes, as the client would.
    async fn read_to_end(stream: &mut ScreenedStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut piece = [0; 100];
        loop {
            let n = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut piece))
                .await
                .unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&piece[..n]);
        }
    }

    /// `connection.tune` with `frame_max`: what a broker sends first (as far as the screen
    /// cares).
    fn tune(frame_max: u32) -> Vec<u8> {
        let mut p = vec![0, 10, 0, 30, 0, 0];
        p.extend_from_slice(&frame_max.to_be_bytes());
        p.extend_from_slice(&[0, 60]);
        frame(1, 0, &p)
    }

    /// A `basic.deliver` on channel 1 whose routing key is `key`.
    fn deliver(key: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 60, 0, 60, 3, b'c', b't', b'g'];
        p.extend_from_slice(&1u64.to_be_bytes());
        p.push(0);
        p.extend_from_slice(&[2, b'e', b'x']);
        p.push(key.len() as u8);
        p.extend_from_slice(key);
        frame(1, 1, &p)
    }

    /// What the client reads when the broker sends `sent` in pieces of `piece` bytes, and the
    /// diagnosis left, if any.
    async fn read_through(sent: Vec<u8>, piece: usize) -> (Vec<u8>, Option<String>) {
        let (broker, ours) = tokio::io::duplex(4096);
        let diagnosis = Diagnosis::default();
        let mut stream = ScreenedStream::new(Box::new(ours), Screen::new(None), Arc::clone(&diagnosis));
        let writer = tokio::spawn(async move {
            let mut broker = broker;
            for chunk in sent.chunks(piece) {
                if broker.write_all(chunk).await.is_err() {
                    break;
                }
            }
            let _ = broker.shutdown().await;
        });
        let got = read_to_end(&mut stream).await;
        drop(stream);
        writer.await.unwrap();
        let why = diagnosis.lock().unwrap().take();
        (got, why)
    }

    #[tokio::test]
    async fn frames_the_client_can_read_pass_unchanged_however_they_arrive() {
        let mut sent = tune(131_072);
        sent.extend(deliver(b"orders.created"));
        sent.extend(frame(3, 1, &[7; 300]));
        sent.extend(frame(8, 0, &[]));
        for piece in [1, 5, 64, 4096] {
            let (got, why) = read_through(sent.clone(), piece).await;
            assert_eq!(got, sent, "in pieces of {piece}");
            assert_eq!(why, None);
        }
    }

    #[tokio::test]
    async fn a_delivery_with_an_unreadable_routing_key_is_rewritten_in_place() {
        let mut before = tune(131_072);
        before.extend(deliver(b"ok"));
        let mut sent = before.clone();
        sent.extend(deliver(b"or\xffders"));
        sent.extend(frame(3, 1, b"body"));
        for piece in [1, 3, 4096] {
            let (got, why) = read_through(sent.clone(), piece).await;
            assert_eq!(got[..before.len()], before[..], "in pieces of {piece}");
            let text = String::from_utf8_lossy(&got[before.len()..]);
            assert!(text.contains("or\u{fffd}ders"), "{text}");
            assert!(got.ends_with(&frame(3, 1, b"body")), "what follows is untouched");
            assert_eq!(why, None);
        }
    }

    #[tokio::test]
    async fn a_stream_that_is_not_amqp_ends_with_a_diagnosis() {
        let (got, why) = read_through(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), 7).await;
        assert!(got.is_empty());
        let why = why.unwrap_or_default();
        assert!(why.contains("this is not an AMQP 0-9-1 server"), "{why}");
    }

    #[tokio::test]
    async fn a_method_frame_larger_than_the_read_buffer_is_held_whole_and_passed() {
        let mut sent = tune(512 * 1024);
        let mut big = vec![0, 90, 0, 10];
        big.extend(std::iter::repeat_n(b'x', 3 * GROWTH));
        sent.extend(frame(1, 1, &big));
        sent.extend(frame(8, 0, &[]));
        let (got, why) = read_through(sent.clone(), 1000).await;
        assert_eq!(got, sent);
        assert_eq!(why, None);
    }
}
