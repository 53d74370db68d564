//! One supervised connection: connect, watch for loss, reconnect with backoff and jitter.
//! lapin's own auto-recovery is not used.
//!
//! The link publishes its [`Phase`] on a `watch`. A link opened [`Restored::ByTransport`] does
//! not announce a new connection as up at once: it enters [`Phase::Restoring`], and the
//! transport's restore task (which watches the phase) declares the topology again and
//! re-opens consumers on it, then answers with [`Link::restored`]. Until then, operations
//! waiting for the connection keep waiting, so that none runs against a half-restored broker.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use mqtransport_core::{Error, ErrorKind, Result};
use tokio::sync::watch;

use crate::connector::Dialer;

/// The state of a connection, as [`crate::AmqpTransport::state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connected (the number counts connections made so far, starting at 1).
    Up(u64),
    /// Connected, but the broker blocked publishing (`connection.blocked`, e.g. a memory alarm).
    Blocked(u64),
    /// Lost; reconnecting.
    Down,
    /// Closed by the application.
    Closed,
}

/// Where a link is in its life, as its `watch` publishes it.
#[derive(Clone)]
pub(crate) enum Phase {
    Up(u64),
    Blocked(u64),
    Down,
    /// Connection `generation` is open and waits for the transport to restore onto it.
    Restoring(u64, Arc<Connection>),
    Closed,
}

impl Phase {
    fn public(&self) -> LinkState {
        match self {
            Phase::Up(g) => LinkState::Up(*g),
            Phase::Blocked(g) => LinkState::Blocked(*g),
            Phase::Down | Phase::Restoring(..) => LinkState::Down,
            Phase::Closed => LinkState::Closed,
        }
    }
}

/// Who restores what the application had onto a new connection of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restored {
    /// Nothing to restore: a new connection is up at once (the publishing link).
    Nothing,
    /// The transport's restore task, answering [`Link::restored`] (the consuming link).
    ByTransport,
}

/// How long a new connection waits for its restore before the link gives it up and tries a
/// new one (the restore may hang on a connection that dies under it).
pub(crate) const RESTORE_WAIT: Duration = Duration::from_secs(60);

pub(crate) struct Link {
    pub(crate) role: &'static str,
    dialer: Arc<Dialer>,
    pub(crate) url: String,
    pub(crate) name: String,
    current: Mutex<Option<(u64, Arc<Connection>)>>,
    /// The negotiated `frame_max` of the latest connection.
    frame_max: AtomicU32,
    /// The index of the broker address the latest connection reached: a reconnect tries the
    /// next one first (a cluster's other node, when this one died).
    address: AtomicUsize,
    state: watch::Sender<Phase>,
    /// The supervisor task, stopped by `close` so that no restore runs after it.
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Link {
    /// Connects once (errors go to the caller) and starts the supervisor.
    pub(crate) async fn open(
        role: &'static str,
        dialer: Arc<Dialer>,
        url: String,
        name: String,
        restored: Restored,
    ) -> Result<Arc<Link>> {
        let (state, _) = watch::channel(Phase::Down);
        let link = Arc::new(Link {
            role,
            dialer,
            url,
            name,
            current: Mutex::new(None),
            frame_max: AtomicU32::new(mqtransport_core::DEFAULT_FRAME_MAX),
            address: AtomicUsize::new(0),
            state,
            supervisor: Mutex::new(None),
        });
        let conn = link.connect_once(0).await?;
        // A link nobody else knows yet cannot be closed: this always installs.
        link.install(Arc::clone(&conn), 1);
        let task = tokio::spawn(supervise(Arc::downgrade(&link), conn, 1, restored));
        *link.supervisor.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Ok(link)
    }

    /// Connects, trying the broker's addresses from index `first`.
    async fn connect_once(&self, first: usize) -> Result<Arc<Connection>> {
        let props = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let (conn, address) = self.dialer.connect(props, self.role, first).await?;
        self.frame_max
            .store(conn.configuration().frame_max(), Ordering::Relaxed);
        self.address.store(address, Ordering::Relaxed);
        Ok(Arc::new(conn))
    }

    /// `host:port` of the broker address the link is connected to (`None` while it is not up).
    pub(crate) fn address(&self) -> Option<String> {
        matches!(self.state(), LinkState::Up(_) | LinkState::Blocked(_))
            .then(|| self.dialer.address(self.address.load(Ordering::Relaxed)))
    }

    /// Where a reconnect starts: the address after the one just lost.
    fn next_address(&self) -> usize {
        (self.address.load(Ordering::Relaxed) + 1) % self.dialer.address_count().max(1)
    }

    /// The negotiated `frame_max` of the latest connection (RabbitMQ's default before the first).
    pub(crate) fn frame_max(&self) -> u32 {
        self.frame_max.load(Ordering::Relaxed)
    }

    /// Announces `conn` as the link's connection; `false` (and nothing changes) once the link
    /// is closed: a close that races with a reconnect wins.
    fn install(&self, conn: Arc<Connection>, generation: u64) -> bool {
        // The connection is in place before the link is announced up: a caller woken by the
        // announcement finds it.
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((generation, conn));
        let installed = self.state.send_if_modified(|p| {
            let open = !matches!(p, Phase::Closed);
            if open {
                *p = Phase::Up(generation);
            }
            open
        });
        if !installed {
            *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        installed
    }

    pub(crate) fn state(&self) -> LinkState {
        self.state.borrow().public()
    }

    /// Connections made again after one was lost: the generation of the latest connection
    /// announced up, less the first.
    pub(crate) fn reconnects(&self) -> u64 {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .map_or(0, |(generation, _)| generation.saturating_sub(1))
    }

    /// The link's phases, for the transport's restore task. The receiver does not keep the
    /// link alive: once the link is gone, waiting on it ends.
    pub(crate) fn phases(&self) -> watch::Receiver<Phase> {
        self.state.subscribe()
    }

    /// The answer of the restore task for connection `generation`: announced as up, or (the
    /// restore failed) given up, so that the link tries a new connection. An answer for a
    /// connection the link has already given up is ignored.
    pub(crate) fn restored(&self, generation: u64, ok: bool) {
        self.end_restore(generation, ok);
    }

    /// Ends the restore of connection `generation` in one step under the watch's lock: up (the
    /// connection in place first, so a caller woken by the announcement finds it) or down.
    /// Nothing changes, and `false` is returned, unless the link is still restoring that
    /// connection: the restore task's answer and the supervisor giving up cannot both win.
    fn end_restore(&self, generation: u64, up: bool) -> bool {
        self.state.send_if_modified(|p| {
            let conn = match p {
                Phase::Restoring(g, conn) if *g == generation => Arc::clone(conn),
                _ => return false,
            };
            if up {
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((generation, conn));
                *p = Phase::Up(generation);
            } else {
                *p = Phase::Down;
            }
            true
        })
    }

    /// The current connection and its generation, waiting up to `wait` for the link to be up.
    pub(crate) async fn connection(&self, wait: Duration) -> Result<(u64, Arc<Connection>)> {
        let mut rx = self.state.subscribe();
        let up = tokio::time::timeout(
            wait,
            rx.wait_for(|s| matches!(s, Phase::Up(_) | Phase::Blocked(_) | Phase::Closed)),
        )
        .await;
        match up {
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "RabbitMQ at {} was unreachable for {wait:?} ({} connection)",
                    self.url, self.role
                ),
            )),
            Ok(Err(_)) => Err(Error::closed(format!("connection to {} is closed", self.url))),
            Ok(Ok(s)) if matches!(*s, Phase::Closed) => {
                Err(Error::closed(format!("connection to {} is closed", self.url)))
            }
            Ok(Ok(_)) => self
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .ok_or_else(|| Error::new(ErrorKind::Connection, format!("connection to {} is down", self.url))),
        }
    }

    /// Waits until the link has moved past connection `generation` (it was found dead by a
    /// caller before the supervisor noticed), at most `wait`.
    pub(crate) async fn wait_past(&self, generation: u64, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.moved_past(generation)).await;
    }

    /// Resolves once the link has moved past connection `generation`; for a caller bounded by
    /// a deadline of its own.
    pub(crate) async fn moved_past(&self, generation: u64) {
        let mut rx = self.state.subscribe();
        let _ = rx
            .wait_for(|s| !matches!(s, Phase::Up(g) | Phase::Blocked(g) if *g == generation))
            .await;
    }

    pub(crate) async fn close(&self) {
        self.state.send_replace(Phase::Closed);
        // Stop the supervisor first: a reconnect in progress must not restore the topology after
        // the application closed the transport (and perhaps deleted what it had declared).
        let task = self.supervisor.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let conn = self.current.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((_, c)) = conn {
            // A connection in the middle of failing may never answer the close: bounded.
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close(200, "OK".into())).await;
        }
    }
}

/// Exponential backoff from 100 ms to 5 s, with ±25 % jitter so that many clients do not
/// reconnect in step.
fn backoff(attempt: u32, seed: &mut u64) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let jitter = (*seed % (base / 2 + 1)) as i64 - (base / 4) as i64;
    Duration::from_millis(base.saturating_add_signed(jitter))
}

async fn supervise(link: std::sync::Weak<Link>, mut conn: Arc<Connection>, mut generation: u64, restored: Restored) {
    let mut seed = u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15;
    loop {
        // Watch this connection until it fails or the application closes it.
        let mut events = conn.events_listener();
        // Loss is decided by the connection's own status, checked after every event and every
        // half second: lapin also reports channel-level errors (a 404 on one channel) as error
        // events, and those must not tear the connection down.
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Event::ConnectionBlocked(_)) => {
                        if let Some(l) = link.upgrade() {
                            l.state.send_replace(Phase::Blocked(generation));
                        }
                    }
                    Some(Event::ConnectionUnblocked) => {
                        if let Some(l) = link.upgrade() {
                            l.state.send_replace(Phase::Up(generation));
                        }
                    }
                    Some(_) => {}
                    // The event stream ends with the connection.
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if !conn.status().connected() {
                break;
            }
            if link.upgrade().is_none_or(|l| l.state() == LinkState::Closed) {
                return;
            }
        }
        let Some(l) = link.upgrade() else { return };
        if l.state() == LinkState::Closed {
            return;
        }
        l.state.send_replace(Phase::Down);
        *l.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
        drop(l);
        // Reconnect.
        let mut attempt = 0;
        conn = loop {
            tokio::time::sleep(backoff(attempt, &mut seed)).await;
            attempt += 1;
            let Some(l) = link.upgrade() else { return };
            if l.state() == LinkState::Closed {
                return;
            }
            // Each address is tried within the connect timeout: one that hangs (a broker that
            // accepts and never answers) is abandoned for the next.
            let Ok(c) = l.connect_once(l.next_address()).await else {
                continue;
            };
            generation += 1;
            if restored == Restored::Nothing {
                if l.install(Arc::clone(&c), generation) {
                    break c;
                }
                // The application closed the link while it connected.
                let _ = c.close(200, "OK".into()).await;
                return;
            }
            // The transport restores what the application had (topology, consumers) before
            // the link is announced. A restore that fails or hangs (the new connection dying
            // under it) is given up, and the link tries again.
            let mut phases = l.phases();
            l.state.send_if_modified(|p| {
                let down = matches!(p, Phase::Down);
                if down {
                    *p = Phase::Restoring(generation, Arc::clone(&c));
                }
                down
            });
            drop(l);
            let _ = tokio::time::timeout(
                RESTORE_WAIT,
                phases.wait_for(|p| !matches!(p, Phase::Restoring(g, _) if *g == generation)),
            )
            .await;
            let Some(l) = link.upgrade() else { return };
            // No answer in time: given up, unless the answer lands first.
            l.end_restore(generation, false);
            if matches!(*phases.borrow(), Phase::Up(g) | Phase::Blocked(g) if g == generation) {
                break c;
            }
            if l.state() == LinkState::Closed {
                let _ = c.close(200, "OK".into()).await;
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close(320, "restore failed".into())).await;
        };
    }
}
