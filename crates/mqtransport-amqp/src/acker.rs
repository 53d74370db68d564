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

/// A frame the ack task sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Ack { tag: u64, multiple: bool },
    Nack { tag: u64, requeue: bool },
    Reject { tag: u64, requeue: bool },
}

/// The ack task's state: which tags are settled, which acks are not yet sent. Pure: it decides
/// which frames to send, `run` sends them.
struct Tags {
    /// Lowest tag not yet settled.
    next: u64,
    /// Settled tags at or above `next`.
    settled: BTreeSet<u64>,
    unsent_acks: BTreeSet<u64>,
}

impl Tags {
    fn new() -> Self {
        Tags {
            next: 1,
            settled: BTreeSet::new(),
            unsent_acks: BTreeSet::new(),
        }
    }

    /// Records a settle; nacks and rejects are sent at once, acks wait for [`Tags::acks`].
    fn record(&mut self, tag: u64, cmd: Cmd) -> Option<Frame> {
        let now = match cmd {
            Cmd::Skip => None,
            Cmd::Settle(Settle::Ack) => {
                self.unsent_acks.insert(tag);
                None
            }
            Cmd::Settle(Settle::Nack { requeue }) => Some(Frame::Nack { tag, requeue }),
            Cmd::Settle(Settle::Reject { requeue }) => Some(Frame::Reject { tag, requeue }),
            // RabbitMQ has no redelivery delay (its capabilities say so): requeued at once.
            Cmd::Settle(Settle::RequeueAfter(_)) => Some(Frame::Nack { tag, requeue: true }),
        };
        if tag >= self.next {
            self.settled.insert(tag);
        }
        now
    }

    /// The acks to send now: one `multiple` ack for the contiguous settled prefix (none of those
    /// tags is outstanding except the acks not yet sent), then, one by one, the acks beyond a
    /// gap (a delivery still being handled): holding them would hold back prefetch credit.
    ///
    /// The `multiple` ack names the highest *unsent* ack of the prefix, never a tag already
    /// settled alone: RabbitMQ looks the named tag up among the outstanding deliveries and
    /// closes the channel (406 unknown delivery tag) if it is not there.
    fn acks(&mut self) -> Vec<Frame> {
        while self.settled.remove(&self.next) {
            self.next += 1;
        }
        let prefix = self.next - 1;
        let mut out = Vec::new();
        if let Some(&tag) = self.unsent_acks.range(..=prefix).next_back() {
            out.push(Frame::Ack { tag, multiple: true });
            self.unsent_acks.retain(|t| *t > prefix);
        }
        out.extend(
            std::mem::take(&mut self.unsent_acks)
                .into_iter()
                .map(|tag| Frame::Ack { tag, multiple: false }),
        );
        out
    }
}

async fn send(channel: &Channel, frame: Frame) {
    let _ = match frame {
        Frame::Ack { tag, multiple } => channel.basic_ack(tag, BasicAckOptions { multiple }).await,
        Frame::Nack { tag, requeue } => {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue,
                    },
                )
                .await
        }
        Frame::Reject { tag, requeue } => channel.basic_reject(tag, BasicRejectOptions { requeue }).await,
    };
}

async fn run(channel: Channel, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut tags = Tags::new();
    let mut batch = Vec::with_capacity(256);
    // Draining whatever has queued up batches acks under load and sends them at once when idle.
    while rx.recv_many(&mut batch, 4096).await > 0 {
        for msg in batch.drain(..) {
            match msg {
                Msg::Tag(tag, cmd) => {
                    if let Some(frame) = tags.record(tag, cmd) {
                        send(&channel, frame).await;
                    }
                }
                Msg::Flush(done) => {
                    for frame in tags.acks() {
                        send(&channel, frame).await;
                    }
                    let _ = done.send(());
                }
            }
        }
        for frame in tags.acks() {
            send(&channel, frame).await;
        }
    }
    let _ = channel.close(200, "OK".into()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(t: &mut Tags, tag: u64) {
        assert_eq!(t.record(tag, Cmd::Settle(Settle::Ack)), None);
    }

    #[test]
    fn contiguous_acks_coalesce_into_one_multiple_ack() {
        let mut t = Tags::new();
        for tag in 1..=3 {
            ack(&mut t, tag);
        }
        assert_eq!(t.acks(), [Frame::Ack { tag: 3, multiple: true }]);
        assert_eq!(t.acks(), []);
    }

    #[test]
    fn acks_past_a_gap_go_alone_until_the_gap_fills() {
        let mut t = Tags::new();
        ack(&mut t, 1);
        ack(&mut t, 3); // 2 is still being handled
        assert_eq!(
            t.acks(),
            [
                Frame::Ack { tag: 1, multiple: true },
                Frame::Ack {
                    tag: 3,
                    multiple: false
                }
            ]
        );
        ack(&mut t, 2);
        ack(&mut t, 4);
        // 2 fills the gap: one multiple ack covers 2..=4 (3 is no longer outstanding).
        assert_eq!(t.acks(), [Frame::Ack { tag: 4, multiple: true }]);
    }

    #[test]
    fn a_multiple_ack_never_names_a_tag_already_settled() {
        let mut t = Tags::new();
        ack(&mut t, 3); // sent alone: 1 and 2 are still being handled
        assert_eq!(
            t.acks(),
            [Frame::Ack {
                tag: 3,
                multiple: false
            }]
        );
        ack(&mut t, 1);
        ack(&mut t, 2);
        // The prefix is now 1..=3, but 3 is no longer outstanding: the ack must name 2.
        assert_eq!(t.acks(), [Frame::Ack { tag: 2, multiple: true }]);
        // Same when the tag beyond was nacked rather than acked.
        assert_eq!(
            t.record(5, Cmd::Settle(Settle::Nack { requeue: true })),
            Some(Frame::Nack { tag: 5, requeue: true })
        );
        ack(&mut t, 4);
        assert_eq!(t.acks(), [Frame::Ack { tag: 4, multiple: true }]);
        // A prefix made only of tags settled alone sends nothing.
        ack(&mut t, 7);
        assert_eq!(
            t.acks(),
            [Frame::Ack {
                tag: 7,
                multiple: false
            }]
        );
        assert_eq!(
            t.record(6, Cmd::Settle(Settle::Reject { requeue: false })),
            Some(Frame::Reject { tag: 6, requeue: false })
        );
        assert_eq!(t.acks(), []);
    }

    #[test]
    fn nacks_and_rejects_go_at_once_and_count_as_settled() {
        let mut t = Tags::new();
        assert_eq!(
            t.record(1, Cmd::Settle(Settle::Nack { requeue: true })),
            Some(Frame::Nack { tag: 1, requeue: true })
        );
        assert_eq!(
            t.record(2, Cmd::Settle(Settle::Reject { requeue: false })),
            Some(Frame::Reject { tag: 2, requeue: false })
        );
        assert_eq!(t.record(3, Cmd::Skip), None);
        ack(&mut t, 4);
        assert_eq!(t.acks(), [Frame::Ack { tag: 4, multiple: true }]);
    }
}
