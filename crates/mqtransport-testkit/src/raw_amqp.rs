//! A bare AMQP 0-9-1 publisher for tests: it sends a message's content header exactly as
//! given, byte for byte, so that a test can publish what RabbitMQ accepts but no well-behaved
//! client would encode (short strings that are not UTF-8, headers nested thousands deep,
//! headers larger than a frame), and waits for the broker's confirm.

use std::io;

use mqtransport_core::BrokerUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection with one channel in confirm mode.
pub struct RawPublisher {
    stream: TcpStream,
    /// The connection's negotiated `frame_max`.
    pub frame_max: u32,
}

fn short(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

fn method(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    p
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn protocol(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl RawPublisher {
    /// Connects and logs in as the URL says, and opens channel 1 in confirm mode.
    pub async fn connect(url: &BrokerUrl) -> io::Result<Self> {
        let stream = TcpStream::connect((url.host(), url.port().unwrap_or(5672))).await?;
        let mut p = RawPublisher { stream, frame_max: 0 };
        p.stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        p.expect(10, 10).await?;
        let mut args = 0u32.to_be_bytes().to_vec();
        short(&mut args, b"PLAIN");
        let user = url.username().unwrap_or("guest");
        let pass = url.password().unwrap_or("guest");
        let response = format!("\0{user}\0{pass}");
        args.extend_from_slice(&(response.len() as u32).to_be_bytes());
        args.extend_from_slice(response.as_bytes());
        short(&mut args, b"en_US");
        p.send(0, &method(10, 11, &args)).await?;
        let tune = p.expect(10, 30).await?;
        p.frame_max = u32::from_be_bytes([tune[6], tune[7], tune[8], tune[9]]);
        let mut args = tune[4..6].to_vec();
        args.extend_from_slice(&p.frame_max.to_be_bytes());
        args.extend_from_slice(&0u16.to_be_bytes());
        p.send(0, &method(10, 31, &args)).await?;
        let mut args = Vec::new();
        short(&mut args, url.vhost().as_bytes());
        short(&mut args, b"");
        args.push(0);
        p.send(0, &method(10, 40, &args)).await?;
        p.expect(10, 41).await?;
        p.send(1, &method(20, 10, b"\x00")).await?;
        p.expect(20, 11).await?;
        p.send(1, &method(85, 10, b"\x00")).await?;
        p.expect(85, 11).await?;
        Ok(p)
    }

    async fn send(&mut self, channel: u16, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&frame(1, channel, payload)).await
    }

    /// Reads frames until a method frame; returns its payload.
    async fn next_method(&mut self) -> io::Result<Vec<u8>> {
        loop {
            let mut head = [0u8; 7];
            self.stream.read_exact(&mut head).await?;
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
            let mut payload = vec![0u8; size + 1];
            self.stream.read_exact(&mut payload).await?;
            payload.pop();
            if head[0] == 1 {
                return Ok(payload);
            }
        }
    }

    /// The next method, which must be `class.method`; a close from the broker is an error
    /// with its reply text.
    async fn expect(&mut self, class: u16, id: u16) -> io::Result<Vec<u8>> {
        let m = self.next_method().await?;
        let got = (u16::from_be_bytes([m[0], m[1]]), u16::from_be_bytes([m[2], m[3]]));
        if got == (class, id) {
            return Ok(m);
        }
        if got == (10, 50) || got == (20, 40) {
            let text_len = usize::from(m[6]);
            let text = String::from_utf8_lossy(&m[7..7 + text_len]).into_owned();
            return Err(protocol(format!(
                "the broker closed: {} {text}",
                u16::from_be_bytes([m[4], m[5]])
            )));
        }
        Err(protocol(format!(
            "expected method {class}.{id}, got {}.{}",
            got.0, got.1
        )))
    }

    /// Publishes `body` to `exchange` with `routing_key`, its content header's property list
    /// being `flags` and `list` exactly; waits for the confirm.
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &[u8],
        flags: u16,
        list: &[u8],
        body: &[u8],
    ) -> io::Result<()> {
        let mut args = 0u16.to_be_bytes().to_vec();
        short(&mut args, exchange.as_bytes());
        short(&mut args, routing_key);
        args.push(0);
        let mut out = frame(1, 1, &method(60, 40, &args));
        let mut header = 60u16.to_be_bytes().to_vec();
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        header.extend_from_slice(&flags.to_be_bytes());
        header.extend_from_slice(list);
        out.extend(frame(2, 1, &header));
        if !body.is_empty() {
            out.extend(frame(3, 1, body));
        }
        self.stream.write_all(&out).await?;
        self.expect(60, 80).await.map(drop)
    }

    /// Closes the connection politely.
    pub async fn close(mut self) -> io::Result<()> {
        let mut args = 200u16.to_be_bytes().to_vec();
        short(&mut args, b"bye");
        args.extend_from_slice(&[0, 0, 0, 0]);
        self.send(0, &method(10, 50, &args)).await?;
        self.expect(10, 51).await.map(drop)
    }
}

/// A header table (with its length prefix) nested `depth` levels deep, built without
/// recursion: each level is one entry `n` holding the next, the innermost `k = 1`.
pub fn nested_table(depth: usize) -> Vec<u8> {
    let innermost: &[u8] = b"\x00\x00\x00\x07\x01kI\x00\x00\x00\x01";
    let mut t = Vec::with_capacity(innermost.len() + 7 * depth);
    for level in 1..depth {
        let inside = innermost.len() + 7 * (depth - 1 - level);
        t.extend_from_slice(&((3 + inside) as u32).to_be_bytes());
        t.extend_from_slice(b"\x01nF");
    }
    t.extend_from_slice(innermost);
    t
}
