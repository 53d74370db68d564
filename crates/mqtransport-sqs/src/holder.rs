//! The messages a consumer (or `get`) holds: their receipt handles by delivery tag, the
//! settling of them in batches, and the lease that keeps them invisible while they are held.
//!
//! - ack: `DeleteMessageBatch`; nack or reject without requeue: also deleted (SQS queues of this
//!   transport have no dead-letter exchange; the App's dead-letter queue takes failures);
//! - requeue: visibility 0; requeue after a delay: visibility = the delay (at most what is left of
//!   SQS's 12 hours since the receive);
//! - the lease: a third of a visibility timeout after a message was received (or last
//!   extended), its visibility is extended by the visibility timeout, until it is settled (or
//!   SQS's 12 hours run out).
//!
//! Settling is not awaited by the caller (an [`AckHandle`] is synchronous): a settle that SQS
//! refuses is logged, and the message comes back when its visibility timeout ends (at least
//! once, never lost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry};
use mqtransport_core::{AckHandle, Error, ErrorKind, Result, Settle};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::client::{Sqs, sdk_error};
use crate::options::MAX_VISIBILITY;

/// A received message not settled yet.
struct Held {
    url: Arc<str>,
    receipt: String,
    received: Instant,
    extended: Instant,
}

enum Op {
    Delete {
        url: Arc<str>,
        receipt: String,
    },
    Visibility {
        url: Arc<str>,
        receipt: String,
        seconds: i32,
    },
    /// Answered once every op before it is done.
    Flush(oneshot::Sender<()>),
}

/// The held messages of one consumer or of a transport's gets.
pub(crate) struct Holder {
    held: Mutex<HashMap<u64, Held>>,
    next_tag: AtomicU64,
    /// Signalled at each settle (a consumer waits for room under its prefetch).
    pub(crate) settled: Notify,
    ops: mpsc::UnboundedSender<Op>,
    closed: AtomicBool,
}

impl Holder {
    /// A holder with its settle and lease tasks.
    pub(crate) fn new(sqs: Arc<Sqs>) -> Arc<Self> {
        let (ops, rx) = mpsc::unbounded_channel();
        let holder = Arc::new(Holder {
            held: Mutex::new(HashMap::new()),
            next_tag: AtomicU64::new(1),
            settled: Notify::new(),
            ops,
            closed: AtomicBool::new(false),
        });
        tokio::spawn(settle_ops(Arc::clone(&sqs), rx));
        tokio::spawn(lease(sqs, Arc::downgrade(&holder)));
        holder
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many messages are held.
    pub(crate) fn len(&self) -> usize {
        self.held().len()
    }

    /// Holds a received message; returns its delivery tag.
    pub(crate) fn hold(&self, url: &Arc<str>, receipt: String) -> u64 {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.held().insert(
            tag,
            Held {
                url: Arc::clone(url),
                receipt,
                received: now,
                extended: now,
            },
        );
        tag
    }

    /// Deletes a message that is not held (no-ack consumers, delay hops).
    pub(crate) fn delete(&self, url: &Arc<str>, receipt: String) {
        let _ = self.ops.send(Op::Delete {
            url: Arc::clone(url),
            receipt,
        });
    }

    /// Waits until every settle made so far has reached SQS.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Op::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Returns every held message to its queue at once (the connection closes) and refuses
    /// later settles.
    pub(crate) async fn release_all(&self, sqs: &Sqs) {
        self.closed.store(true, Ordering::Release);
        self.flush().await;
        let held: Vec<Held> = self.held().drain().map(|(_, h)| h).collect();
        let mut by_url: HashMap<Arc<str>, Vec<(String, i32)>> = HashMap::new();
        for h in held {
            by_url.entry(h.url).or_default().push((h.receipt, 0));
        }
        for (url, entries) in by_url {
            change_visibility(sqs, &url, entries).await;
        }
        self.settled.notify_one();
    }
}

impl AckHandle for Holder {
    fn settle(&self, tag: u64, settle: Settle) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed(
                "the SQS transport was closed; the message comes back when its visibility timeout ends",
            ));
        }
        let Some(h) = self.held().remove(&tag) else {
            return Err(Error::new(
                ErrorKind::Precondition,
                format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
            ));
        };
        self.settled.notify_one();
        let op = match settle {
            Settle::Ack | Settle::Nack { requeue: false } | Settle::Reject { requeue: false } => Op::Delete {
                url: h.url,
                receipt: h.receipt,
            },
            Settle::Nack { requeue: true } | Settle::Reject { requeue: true } => Op::Visibility {
                url: h.url,
                receipt: h.receipt,
                seconds: 0,
            },
            Settle::RequeueAfter(delay) => {
                let left = MAX_VISIBILITY.saturating_sub(h.received.elapsed() + Duration::from_secs(1));
                Op::Visibility {
                    url: h.url,
                    receipt: h.receipt,
                    seconds: whole_seconds(delay.min(left)),
                }
            }
        };
        self.ops
            .send(op)
            .map_err(|_| Error::closed("the SQS settle task has stopped"))
    }
}

/// Makes received messages that nobody holds visible again at once.
pub(crate) async fn release(sqs: &Sqs, url: &str, receipts: Vec<String>) {
    change_visibility(sqs, url, receipts.into_iter().map(|r| (r, 0)).collect()).await;
}

/// A duration in whole seconds, rounded up (never early), as SQS takes it.
pub(crate) fn whole_seconds(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

async fn settle_ops(sqs: Arc<Sqs>, mut rx: mpsc::UnboundedReceiver<Op>) {
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while ops.len() < 100 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut deletes: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        let mut changes: HashMap<Arc<str>, Vec<(String, i32)>> = HashMap::new();
        let mut flushes = Vec::new();
        for op in ops {
            match op {
                Op::Delete { url, receipt } => deletes.entry(url).or_default().push(receipt),
                Op::Visibility { url, receipt, seconds } => changes.entry(url).or_default().push((receipt, seconds)),
                Op::Flush(done) => flushes.push(done),
            }
        }
        let mut calls = Vec::new();
        for (url, receipts) in &deletes {
            for chunk in receipts.chunks(10) {
                calls.push(futures_util::future::Either::Left(delete_settled(&sqs, url, chunk)));
            }
        }
        for (url, entries) in &changes {
            calls.push(futures_util::future::Either::Right(change_visibility(
                &sqs,
                url,
                entries.clone(),
            )));
        }
        futures_util::future::join_all(calls).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Deletes up to 10 received messages in one `DeleteMessageBatch`; returns how many SQS deleted.
/// One it did not delete is logged: it will be delivered again.
pub(crate) async fn delete_messages(sqs: &Sqs, url: &str, receipts: &[String]) -> Result<usize> {
    let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(r)
                .build()
                .ok()
        })
        .collect();
    let out = sqs
        .client
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| sdk_error(&e, "deleting messages"))?;
    for f in out.failed() {
        tracing::warn!(
            queue_url = url,
            "SQS did not delete a message, it will be delivered again: {}: {}",
            f.code(),
            f.message().unwrap_or("")
        );
    }
    Ok(out.successful().len())
}

/// Deletes settled messages; a failure is logged (the messages come back, at least once).
async fn delete_settled(sqs: &Sqs, url: &str, receipts: &[String]) {
    if let Err(e) = delete_messages(sqs, url, receipts).await {
        tracing::warn!(
            queue_url = url,
            "settled messages could not be deleted, they will be delivered again: {e}"
        );
    }
}

async fn change_visibility(sqs: &Sqs, url: &str, entries: Vec<(String, i32)>) {
    for chunk in entries.chunks(10) {
        let batch: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, (r, seconds))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(*seconds)
                    .build()
                    .ok()
            })
            .collect();
        let result = sqs
            .client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(batch))
            .send()
            .await;
        match result {
            Ok(out) => {
                for f in out.failed() {
                    tracing::debug!(
                        queue_url = url,
                        "SQS did not change a message's visibility: {}",
                        f.code()
                    );
                }
            }
            Err(e) => tracing::warn!(
                queue_url = url,
                "could not change the visibility of messages: {}",
                sdk_error(&e, "changing visibility")
            ),
        }
    }
}

/// Extends the visibility of each held message once a third of its visibility timeout has
/// passed since it was received or last extended. Looking every sixth of the timeout, an
/// extension goes out at the latest half-way through: the other half is the margin for the call.
async fn lease(sqs: Arc<Sqs>, holder: Weak<Holder>) {
    let visibility = sqs.options.visibility;
    let period = visibility / 3;
    loop {
        tokio::time::sleep(visibility / 6).await;
        let Some(h) = holder.upgrade() else { return };
        if h.closed.load(Ordering::Acquire) {
            return;
        }
        let mut due: HashMap<Arc<str>, Vec<(String, i32)>> = HashMap::new();
        {
            let now = Instant::now();
            let mut held = h.held();
            for m in held.values_mut() {
                let within_limit = m.received.elapsed() + visibility < MAX_VISIBILITY;
                if now.duration_since(m.extended) >= period && within_limit {
                    m.extended = now;
                    due.entry(Arc::clone(&m.url))
                        .or_default()
                        .push((m.receipt.clone(), whole_seconds(visibility)));
                }
            }
        }
        drop(h);
        for (url, entries) in due {
            change_visibility(&sqs, &url, entries).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }
}
