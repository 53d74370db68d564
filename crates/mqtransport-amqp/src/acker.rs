//! One ack task per channel: settles deliveries off the consumer's path and coalesces acks into
//! `multiple = true` over the contiguous prefix of settled delivery tags.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use mqtransport_core::{AckHandle, Error, Result, Settle};
use tokio::sync::{mpsc, oneshot};

/// What the ack task is told about one delivery tag.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd {
    Settle(Settle),
    /// Delivered with no-ack (a `basic.get` with `no_ack`): settled, nothing to send.
    Skip,
}

enum Msg {
    Tag(u64, Cmd),
    /// Answered once every settle sent before it is on the wire.
    Flush(oneshot::Sender<()>),
}

/// The sending side, shared by a consumer stream and its deliveries' ackers.
pub(crate) struct ChannelAck {
    tx: mpsc::UnboundedSender<Msg>,
    channel: Channel,
    closed: Arc<AtomicBool>,
    what: String,
}

impl ChannelAck {
    /// Starts the ack task for `channel`, whose delivery tags start at 1 and are used by this
    /// task's deliveries only. The task closes the channel once every sender is gone, which
    /// returns anything still unsettled to its queue.
    pub(crate) fn spawn(channel: Channel, closed: Arc<AtomicBool>, what: String) -> Arc<ChannelAck> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(channel.clone(), rx));
        Arc::new(ChannelAck {
            tx,
            channel,
            closed,
            what,
        })
    }

    pub(crate) fn skip(&self, tag: u64) {
        let _ = self.tx.send(Msg::Tag(tag, Cmd::Skip));
    }

    /// Waits until every settle issued so far has been written to the channel, so that a
    /// following operation on the same channel (a `basic.get`) sees its effect, as it would
    /// with the frames sent in order by hand.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl AckHandle for ChannelAck {
    fn settle(&self, tag: u64, settle: Settle) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed(format!(
                "cannot settle a delivery from {}: the connection is closed and the broker requeued it",
                self.what
            )));
        }
        if !self.channel.status().connected() {
            return Err(Error::closed(format!(
                "cannot settle a delivery from {}: its channel was lost and the broker requeued it",
                self.what
            )));
        }
        self.tx.send(Msg::Tag(tag, Cmd::Settle(settle))).map_err(|_| {
            Error::closed(format!(
                "cannot settle a delivery from {}: its channel is closed and the broker requeued it",
                self.what
            ))
        })
    }
}

/// The ack task's state: which tags are settled, which acks are not yet sent.
struct Tags {
    /// Lowest tag not yet settled.
    next: u64,
    /// Settled tags at or above `next`.
    settled: BTreeSet<u64>,
    unsent_acks: BTreeSet<u64>,
}

impl Tags {
    async fn apply(&mut self, channel: &Channel, tag: u64, cmd: Cmd) {
        match cmd {
            Cmd::Skip => {}
            Cmd::Settle(Settle::Ack) => {
                self.unsent_acks.insert(tag);
            }
            Cmd::Settle(Settle::Nack { requeue }) => {
                let opts = BasicNackOptions {
                    multiple: false,
                    requeue,
                };
                let _ = channel.basic_nack(tag, opts).await;
            }
            Cmd::Settle(Settle::Reject { requeue }) => {
                let _ = channel.basic_reject(tag, BasicRejectOptions { requeue }).await;
            }
        }
        if tag >= self.next {
            self.settled.insert(tag);
        }
    }

    /// Sends the acks collected so far: one `multiple` ack for the contiguous settled prefix
    /// (none of those tags is outstanding except the acks not yet sent), then, one by one, the
    /// acks beyond a gap (a delivery still being handled): holding them would hold back the
    /// consumer's prefetch credit.
    async fn send_acks(&mut self, channel: &Channel) {
        while self.settled.remove(&self.next) {
            self.next += 1;
        }
        let prefix = self.next - 1;
        if self.unsent_acks.first().is_some_and(|t| *t <= prefix) {
            let _ = channel.basic_ack(prefix, BasicAckOptions { multiple: true }).await;
            self.unsent_acks.retain(|t| *t > prefix);
        }
        for tag in std::mem::take(&mut self.unsent_acks) {
            let _ = channel.basic_ack(tag, BasicAckOptions { multiple: false }).await;
        }
    }
}

async fn run(channel: Channel, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut tags = Tags {
        next: 1,
        settled: BTreeSet::new(),
        unsent_acks: BTreeSet::new(),
    };
    let mut batch = Vec::with_capacity(256);
    // Draining whatever has queued up batches acks under load and sends them at once when idle.
    while rx.recv_many(&mut batch, 4096).await > 0 {
        for msg in batch.drain(..) {
            match msg {
                Msg::Tag(tag, cmd) => tags.apply(&channel, tag, cmd).await,
                Msg::Flush(done) => {
                    tags.send_acks(&channel).await;
                    let _ = done.send(());
                }
            }
        }
        tags.send_acks(&channel).await;
    }
    let _ = channel.close(200, "OK".into()).await;
}
