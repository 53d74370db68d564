//! Sending: one task per SQS queue gathers the sends waiting for it into `SendMessageBatch`
//! calls of up to 10 messages (and within SQS's size limit for a batch), several batches in
//! flight at once (one at a time for a FIFO queue, which keeps their order). A send is
//! confirmed when SQS answers for that message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use mqtransport_core::{Error, ErrorKind, Result};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::client::{Sqs, is_missing_queue, sdk_error};
use crate::wire::Outgoing;

/// Batches in flight per standard queue.
const BATCHES_IN_FLIGHT: usize = 8;
/// SQS's most messages per batch.
const BATCH_SIZE: usize = 10;

/// What became of one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// SQS has the message.
    Stored,
    /// The queue does not exist (any more).
    NoQueue,
}

/// One message to send.
pub(crate) struct Job {
    pub(crate) message: Outgoing,
    pub(crate) delay_seconds: Option<i32>,
    pub(crate) done: oneshot::Sender<Result<Sent>>,
}

/// The send task of each queue, by URL.
#[derive(Default)]
pub(crate) struct Senders {
    by_url: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
}

impl Senders {
    /// Sends `message` to the queue at `url` and waits for SQS's answer.
    pub(crate) async fn send(
        &self,
        sqs: &Arc<Sqs>,
        url: &str,
        fifo: bool,
        message: Outgoing,
        delay_seconds: Option<i32>,
    ) -> Result<Sent> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            message,
            delay_seconds,
            done,
        };
        {
            let mut by_url = self.by_url.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = by_url.entry(url.to_owned()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(Arc::clone(sqs), url.to_owned(), fifo, rx));
                tx
            });
            if let Err(mpsc::error::SendError(job)) = tx.send(job) {
                let _ = job.done.send(Err(Error::closed("the SQS send task has stopped")));
            }
        }
        answer
            .await
            .map_err(|_| Error::closed("the SQS send task stopped before SQS answered").outcome_unknown())?
    }
}

async fn run(sqs: Arc<Sqs>, url: String, fifo: bool, mut rx: mpsc::UnboundedReceiver<Job>) {
    let in_flight = Arc::new(Semaphore::new(if fifo { 1 } else { BATCHES_IN_FLIGHT }));
    let max = sqs.options.max_message_size;
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut size = first.message.size;
        let mut batch = vec![first];
        while batch.len() < BATCH_SIZE {
            match rx.try_recv() {
                Ok(job) if size + job.message.size <= max => {
                    size += job.message.size;
                    batch.push(job);
                }
                Ok(job) => {
                    next = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let sqs = Arc::clone(&sqs);
        let url = url.clone();
        let call = async move {
            send_batch(&sqs, &url, batch).await;
            drop(permit);
        };
        if fifo {
            call.await;
        } else {
            tokio::spawn(call);
        }
    }
}

fn same_error(e: &Error) -> Error {
    Error::new(e.kind(), e.message().to_owned())
}

async fn send_batch(sqs: &Sqs, url: &str, batch: Vec<Job>) {
    if let [_] = batch.as_slice() {
        let Some(job) = batch.into_iter().next() else { return };
        let m = &job.message;
        let result = sqs
            .client
            .send_message()
            .queue_url(url)
            .message_body(&m.body)
            .set_message_attributes(Some(m.attributes.clone()))
            .set_delay_seconds(job.delay_seconds)
            .set_message_group_id(m.group.clone())
            .set_message_deduplication_id(m.deduplication.clone())
            .send()
            .await;
        let _ = job.done.send(match result {
            Ok(_) => Ok(Sent::Stored),
            Err(e) => answer_error(sdk_error(&e, "sending a message")),
        });
        return;
    }
    let mut entries = Vec::with_capacity(batch.len());
    for (i, job) in batch.iter().enumerate() {
        let m = &job.message;
        let entry = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(&m.body)
            .set_message_attributes(Some(m.attributes.clone()))
            .set_delay_seconds(job.delay_seconds)
            .set_message_group_id(m.group.clone())
            .set_message_deduplication_id(m.deduplication.clone())
            .build();
        match entry {
            Ok(entry) => entries.push(entry),
            Err(e) => {
                let e = Error::invalid(format!("an SQS batch entry could not be built: {e}"));
                for job in batch {
                    let _ = job.done.send(Err(same_error(&e)));
                }
                return;
            }
        }
    }
    let result = sqs
        .client
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await;
    match result {
        Ok(out) => {
            let failed: HashMap<&str, String> = out
                .failed()
                .iter()
                .map(|f| {
                    (
                        f.id(),
                        format!("{}: {}", f.code(), f.message().unwrap_or("(no message)")),
                    )
                })
                .collect();
            for (i, job) in batch.into_iter().enumerate() {
                let answer = match failed.get(i.to_string().as_str()) {
                    None => Ok(Sent::Stored),
                    Some(why) if is_missing_queue(Some(why)) => Ok(Sent::NoQueue),
                    Some(why) => Err(Error::new(ErrorKind::Nacked, format!("SQS refused the message: {why}"))),
                };
                let _ = job.done.send(answer);
            }
        }
        Err(e) => {
            let e = sdk_error(&e, "sending a batch of messages");
            for job in batch {
                let _ = job.done.send(answer_error(same_error(&e)));
            }
        }
    }
}

/// A missing queue is an answer (the message was routed nowhere); any other error is the
/// send's error, and whether SQS stored the message is unknown.
fn answer_error(e: Error) -> Result<Sent> {
    match e.kind() {
        ErrorKind::NotFound => Ok(Sent::NoQueue),
        ErrorKind::Connection => Err(e.outcome_unknown()),
        _ => Err(e),
    }
}
