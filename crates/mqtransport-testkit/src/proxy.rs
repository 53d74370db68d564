//! A TCP fault proxy for recovery tests: it sits between a client and a broker and can cut every
//! connection (with RST or FIN), stall either direction, delay traffic, or refuse new
//! connections. Fault tests go through it and never touch the shared broker itself.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How connections are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// An abortive close: the peer sees a connection reset.
    Reset,
    /// An orderly close: the peer reads end of file.
    Fin,
}

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the broker.
    ToServer,
    /// From the broker to the client.
    ToClient,
}

/// The controls of one proxied connection.
struct ConnCtl {
    cut: watch::Sender<Option<Cut>>,
    /// Whole frames to write to this client between the broker's frames.
    inject: Arc<Mutex<Vec<u8>>>,
}

#[derive(Default)]
struct Shared {
    refuse: AtomicBool,
    stall: [AtomicBool; 2],
    delay_ms: AtomicU64,
    resume: Notify,
    live: AtomicUsize,
    accepted: AtomicUsize,
    forwarded: [AtomicU64; 2],
    injected: Notify,
    conns: Mutex<Vec<ConnCtl>>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free local port that forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_owned();
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                s.accepted.fetch_add(1, Ordering::Relaxed);
                if s.refuse.load(Ordering::Acquire) {
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                let s = Arc::clone(&s);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        serve(s, client, server).await;
                    }
                });
            }
        });
        Ok(FaultProxy { addr, shared, task })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every open connection.
    pub fn cut(&self, how: Cut) {
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner));
        for c in conns {
            let _ = c.cut.send(Some(how));
        }
    }

    /// Refuses (resets) new connections while `on`.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::Release);
    }

    /// Stops forwarding in `direction` while `on` (bytes wait in the socket buffers).
    pub fn stall(&self, direction: Direction, on: bool) {
        self.shared.stall[direction as usize].store(on, Ordering::Release);
        if !on {
            self.shared.resume.notify_waiters();
        }
    }

    /// Delays every forwarded chunk by `delay`.
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::Release);
    }

    /// Connections currently open through the proxy.
    pub fn live_connections(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// Sends `frames` (whole AMQP frames) to every connected client, between two frames of the
    /// broker's: e.g. [`connection_blocked`] to simulate a broker resource alarm without raising
    /// one on the shared broker.
    pub fn inject_to_client(&self, frames: &[u8]) {
        for c in self.shared.conns.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            c.inject
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(frames);
        }
        self.shared.injected.notify_waiters();
    }

    /// Bytes forwarded so far in `direction` (to wait until a request has really been sent).
    /// Bytes count as the proxy writes them on: an answer to them is never seen first.
    pub fn forwarded(&self, direction: Direction) -> u64 {
        self.shared.forwarded[direction as usize].load(Ordering::Acquire)
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Acquire)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut(Cut::Reset);
    }
}

async fn serve(s: Arc<Shared>, client: TcpStream, server: TcpStream) {
    let (cut_tx, cut_rx) = watch::channel(None);
    let inject = Arc::new(Mutex::new(Vec::new()));
    s.conns.lock().unwrap_or_else(PoisonError::into_inner).push(ConnCtl {
        cut: cut_tx,
        inject: Arc::clone(&inject),
    });
    s.live.fetch_add(1, Ordering::AcqRel);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(forward(
        Arc::clone(&s),
        Direction::ToServer,
        cr,
        sw,
        cut_rx.clone(),
        Arc::clone(&inject),
    ));
    let down = tokio::spawn(forward(Arc::clone(&s), Direction::ToClient, sr, cw, cut_rx, inject));
    let _ = tokio::join!(up, down);
    s.live.fetch_sub(1, Ordering::AcqRel);
}

/// Waits while `dir` is stalled; `false` if the connection was cut meanwhile.
async fn wait_while_stalled(s: &Shared, dir: Direction, cut: &mut watch::Receiver<Option<Cut>>) -> bool {
    while s.stall[dir as usize].load(Ordering::Acquire) {
        let resumed = s.resume.notified();
        tokio::select! {
            biased;
            _ = cut.changed() => return false,
            _ = resumed => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    cut.borrow().is_none()
}

/// The length of the first whole AMQP frame in `buf` (7-byte header, payload, end octet).
fn frame_len(buf: &[u8]) -> Option<usize> {
    let size = u32::from_be_bytes(buf.get(3..7)?.try_into().ok()?) as usize;
    let len = 7 + size + 1;
    (buf.len() >= len).then_some(len)
}

/// A `connection.blocked` method frame (class 10, method 60) with `reason`.
pub fn connection_blocked(reason: &str) -> Vec<u8> {
    let mut payload = vec![0, 10, 0, 60, reason.len().min(255) as u8];
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(255)]);
    method_frame(&payload)
}

/// A `connection.unblocked` method frame (class 10, method 61).
pub fn connection_unblocked() -> Vec<u8> {
    method_frame(&[0, 10, 0, 61])
}

fn method_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![1, 0, 0];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

async fn forward(
    s: Arc<Shared>,
    dir: Direction,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut cut: watch::Receiver<Option<Cut>>,
    inject: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    // Broker-to-client bytes not yet forwarded because they end inside a frame.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        if !wait_while_stalled(&s, dir, &mut cut).await {
            break;
        }
        let injected = s.injected.notified();
        let n = tokio::select! {
            biased;
            _ = cut.changed() => break,
            _ = injected, if dir == Direction::ToClient => 0,
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
        };
        if dir == Direction::ToClient {
            // Forward whole frames only, so that injected frames land between two frames.
            partial.extend_from_slice(&buf[..n]);
            let mut whole = 0;
            while let Some(len) = frame_len(&partial[whole..]) {
                whole += len;
            }
            let mut out: Vec<u8> = partial.drain(..whole).collect();
            out.extend(std::mem::take(
                &mut *inject.lock().unwrap_or_else(PoisonError::into_inner),
            ));
            if !wait_while_stalled(&s, dir, &mut cut).await {
                break;
            }
            if !out.is_empty() {
                // Counted before the write: the peer may answer it (and the test see the
                // answer) before this task runs again after the write.
                s.forwarded[dir as usize].fetch_add(out.len() as u64, Ordering::AcqRel);
                if to.write_all(&out).await.is_err() {
                    return;
                }
            }
            continue;
        }
        let delay = s.delay_ms.load(Ordering::Acquire);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        // Hold what was read while stalled. A cut is final: nothing read before it is
        // forwarded after it.
        if !wait_while_stalled(&s, dir, &mut cut).await {
            break;
        }
        // Counted before the write, as above.
        s.forwarded[dir as usize].fetch_add(n as u64, Ordering::AcqRel);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let how = *cut.borrow();
    match how {
        Some(Cut::Reset) => {
            let _ = from.as_ref().set_zero_linger();
            let _ = to.as_ref().set_zero_linger();
        }
        _ => {
            let _ = to.shutdown().await;
        }
    }
}
