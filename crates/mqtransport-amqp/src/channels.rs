//! The transport's reusable channels: one for publishing (in confirm mode), one for
//! declarations and one for `basic.get`, each reopened on next use when lost or closed by an
//! error. Declarations and gets use channels of their own, so that a failed declare cannot
//! requeue deliveries taken with `get`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use mqtransport_core::{Error, ErrorKind, Result};
use tokio::sync::{Mutex, MutexGuard};

use crate::acker::ChannelAck;
use crate::confirms::Confirming;
use crate::convert::map_err;
use crate::link::Link;

/// One channel of one connection generation, reopened when lost or closed by an error.
#[derive(Default)]
pub(crate) struct ChannelSlot {
    generation: u64,
    channel: Option<Channel>,
    /// The ack task of the channel (for `basic.get` deliveries).
    ack: Option<Arc<ChannelAck>>,
    /// The channel with its publish ledger, when in confirm mode.
    confirming: Option<Arc<Confirming>>,
}

impl ChannelSlot {
    /// The open channel.
    pub(crate) fn channel(&self) -> Result<&Channel> {
        self.channel.as_ref().ok_or_else(|| Error::closed("no channel"))
    }

    /// The ack task of a `basic.get` channel.
    pub(crate) fn ack(&self) -> Option<&Arc<ChannelAck>> {
        self.ack.as_ref()
    }
}

/// What a slot's channel is for.
#[derive(Clone, Copy)]
struct Kind {
    /// Publisher confirms on.
    confirm: bool,
    /// With an ack task, for settling `basic.get` deliveries.
    with_ack: bool,
}

/// The channels, and the links they are opened on.
pub(crate) struct Channels {
    /// The broker's URL without the password, for messages.
    pub(crate) url: String,
    pub(crate) consume: Arc<Link>,
    pub(crate) publish: Arc<Link>,
    closed: Arc<AtomicBool>,
    reconnect_wait: Duration,
    admin: Mutex<ChannelSlot>,
    getter: Mutex<ChannelSlot>,
    publisher: Mutex<ChannelSlot>,
    /// The publisher channel while it is usable: publishing clones it out under a brief lock and
    /// holds no lock while sending, so concurrent publishes pipeline on it.
    publisher_cached: std::sync::Mutex<Option<Arc<Confirming>>>,
}

impl Channels {
    pub(crate) fn new(
        url: String,
        consume: Arc<Link>,
        publish: Arc<Link>,
        closed: Arc<AtomicBool>,
        reconnect_wait: Duration,
    ) -> Self {
        Channels {
            url,
            consume,
            publish,
            closed,
            reconnect_wait,
            admin: Mutex::default(),
            getter: Mutex::default(),
            publisher: Mutex::default(),
            publisher_cached: std::sync::Mutex::new(None),
        }
    }

    /// Fails once the application closed the transport.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed(format!("connection to {} is closed", self.url)));
        }
        Ok(())
    }

    /// The channel for declarations (on the consuming connection).
    pub(crate) async fn admin(&self) -> Result<MutexGuard<'_, ChannelSlot>> {
        let kind = Kind {
            confirm: false,
            with_ack: false,
        };
        self.slot(&self.admin, &self.consume, self.reconnect_wait, kind).await
    }

    /// The channel for `basic.get` (on the consuming connection), with its ack task.
    pub(crate) async fn getter(&self) -> Result<MutexGuard<'_, ChannelSlot>> {
        let kind = Kind {
            confirm: false,
            with_ack: true,
        };
        self.slot(&self.getter, &self.consume, self.reconnect_wait, kind).await
    }

    /// The publisher channel: the cached one while usable, else (re)opened through its slot,
    /// waiting up to `wait` for a connection.
    pub(crate) async fn publisher(&self, wait: Duration) -> Result<Arc<Confirming>> {
        let cached = self
            .publisher_cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(ch) = cached.filter(|c| c.channel.status().connected()) {
            self.check_open()?;
            return Ok(ch);
        }
        let kind = Kind {
            confirm: true,
            with_ack: false,
        };
        let slot = self.slot(&self.publisher, &self.publish, wait, kind).await?;
        let ch = slot
            .confirming
            .clone()
            .ok_or_else(|| Error::closed("the publisher channel is not in confirm mode"))?;
        *self.publisher_cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&ch));
        Ok(ch)
    }

    /// Stops publishing on `ch`, which the broker closed: the next publish opens a new
    /// publisher channel, even if lapin has not yet seen the close.
    pub(crate) async fn discard_publisher(&self, ch: &Arc<Confirming>) {
        {
            let mut cached = self.publisher_cached.lock().unwrap_or_else(PoisonError::into_inner);
            if cached.as_ref().is_some_and(|c| Arc::ptr_eq(c, ch)) {
                *cached = None;
            }
        }
        let mut slot = self.publisher.lock().await;
        if slot.confirming.as_ref().is_some_and(|c| Arc::ptr_eq(c, ch)) {
            slot.channel = None;
            slot.confirming = None;
        }
    }

    /// The channel in `slot` for the link's current connection, opened when missing, lost, or
    /// closed by an error.
    async fn slot<'a>(
        &self,
        slot: &'a Mutex<ChannelSlot>,
        link: &Link,
        wait: Duration,
        kind: Kind,
    ) -> Result<MutexGuard<'a, ChannelSlot>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.check_open()?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (generation, conn) = link.connection(left).await?;
            let mut guard = slot.lock().await;
            let usable =
                guard.generation == generation && guard.channel.as_ref().is_some_and(|c| c.status().connected());
            if usable {
                return Ok(guard);
            }
            // Opening a channel on a connection that died unnoticed must not hang. lapin does not
            // always fail an open asked for just as the connection died, so the open is given up
            // as soon as the link sees the connection go (its supervisor looks at least every
            // half second), and is bounded by the deadline besides.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let opened = if conn.status().connected() {
                tokio::select! {
                    opened = tokio::time::timeout(left, self.open(&conn, kind)) => {
                        opened.unwrap_or_else(|_| Err(Error::new(ErrorKind::Connection, "opening a channel timed out")))
                    }
                    () = link.wait_past(generation, left) => {
                        Err(Error::new(ErrorKind::Connection, "the connection was lost while a channel was being opened"))
                    }
                }
            } else {
                Err(Error::new(ErrorKind::Connection, "the connection is lost"))
            };
            match opened {
                Ok((ch, ack)) => {
                    guard.ack = ack;
                    // A publish watches the publishing link for the loss of its channel's
                    // connection; a confirming channel of another link is not watched.
                    let watched = std::ptr::eq(link, &*self.publish).then_some(generation);
                    guard.confirming = kind.confirm.then(|| Confirming::new(ch.clone(), watched));
                    guard.channel = Some(ch);
                    guard.generation = generation;
                    return Ok(guard);
                }
                // The connection died before the supervisor noticed: wait for the next one.
                Err(e) if matches!(e.kind(), ErrorKind::Connection | ErrorKind::Closed) => {
                    drop(guard);
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "RabbitMQ at {} was unreachable for {wait:?} ({} connection)",
                                self.url, link.role
                            ),
                        ));
                    }
                    link.wait_past(
                        generation,
                        deadline.saturating_duration_since(tokio::time::Instant::now()),
                    )
                    .await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn open(&self, conn: &Connection, kind: Kind) -> Result<(Channel, Option<Arc<ChannelAck>>)> {
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| map_err(&e, &format!("opening a channel to {}", self.url)))?;
        if kind.confirm {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| map_err(&e, "enabling publisher confirms"))?;
        }
        let ack = kind
            .with_ack
            .then(|| ChannelAck::spawn(ch.clone(), Arc::clone(&self.closed), "basic.get".into()));
        Ok((ch, ack))
    }
}
