//! The state of one connection to the embedded broker, shared by its transport's clones, its
//! consumers' streams and its ackers. The connection closes when it is closed or the last of
//! these is dropped: its deliveries go back to their queues and its exclusive queues go.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mqtransport_core::{Error, Result};

use crate::broker::BrokerInner;
use crate::queue::QueueCell;
use crate::sync::lock;

/// One connection, shared by its transport's clones, its consumers' streams and its ackers.
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) broker: Arc<BrokerInner>,
    pub(crate) closed: Arc<AtomicBool>,
    /// This connection's direct reply-to pseudo-queue, once it consumes `amq.rabbitmq.reply-to`.
    pub(crate) reply: Mutex<Option<Arc<QueueCell>>>,
    pub(crate) get_tags: AtomicU64,
}

impl Conn {
    #[inline]
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed(format!(
                "connection to the embedded broker '{}' is closed",
                self.broker.name
            )));
        }
        Ok(())
    }

    pub(crate) fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(reply) = lock(&self.reply).take() {
            lock(&self.broker.replies).remove(&reply.name);
        }
        for q in self.broker.all_queues() {
            self.broker.release_connection(&q, self.id);
        }
        self.broker.drop_exclusive(self.id);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Conn {
    pub(crate) fn open(broker: Arc<BrokerInner>) -> Self {
        Conn {
            id: broker.next_id(),
            broker,
            closed: Arc::new(AtomicBool::new(false)),
            reply: Mutex::new(None),
            get_tags: AtomicU64::new(0),
        }
    }

    /// Forgets the direct reply-to pseudo-queue `q` when its consumer goes away.
    pub(crate) fn forget_reply(&self, q: &Arc<QueueCell>) {
        lock(&self.broker.replies).remove(&q.name);
        let mut reply = lock(&self.reply);
        if reply.as_ref().is_some_and(|r| Arc::ptr_eq(r, q)) {
            *reply = None;
        }
    }
}
