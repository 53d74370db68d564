//! A consumer: one task long-polls its queue (`ReceiveMessage`, up to 10 at a time, never more
//! than the prefetch leaves room for) and hands the deliveries to the subscription's stream.
//! Messages still waiting out a delay longer than SQS's 15 minutes are sent on, not delivered
//! (see [`DELIVER_AT`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use mqtransport_core::{AckHandle, Acker, Delivery, Error, ErrorKind, FieldValue, Result, Scope, ShortStr, headers};
use tokio::sync::{mpsc, watch};

use crate::client::{Sqs, sdk_error};
use crate::holder::{Holder, whole_seconds};
use crate::options::MAX_DELAY_SECONDS;
use crate::wire::{self, Incoming};

/// On a message delayed longer than SQS's `DelaySeconds` allow: when it is due (milliseconds
/// since the Unix epoch). Received early, it is sent again with the rest of its delay (at most
/// 15 minutes a hop) and the early copy deleted.
pub(crate) const DELIVER_AT: &str = "x-mqt-deliver-at";

/// What a consumer task needs.
pub(crate) struct Poll {
    pub(crate) sqs: Arc<Sqs>,
    pub(crate) holder: Arc<Holder>,
    pub(crate) queue: String,
    pub(crate) url: Arc<str>,
    pub(crate) prefetch: u16,
    pub(crate) no_ack: bool,
    pub(crate) closed: watch::Receiver<bool>,
    /// Held for its `Drop`: counts the consumer while the task runs.
    pub(crate) _counted: Counted,
}

/// Counts a consumer of a queue while it runs.
pub(crate) struct Counted {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    queue: String,
}

impl Counted {
    pub(crate) fn new(counts: Arc<Mutex<HashMap<String, usize>>>, queue: &str) -> Self {
        *counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(queue.to_owned())
            .or_default() += 1;
        Counted {
            counts,
            queue: queue.to_owned(),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.queue) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.queue);
            }
        }
    }
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Receives up to `max` messages from `url`, waiting up to `wait`.
pub(crate) async fn receive(sqs: &Sqs, url: &str, max: usize, wait: Duration) -> Result<Vec<Message>> {
    let out = sqs
        .client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
        .wait_time_seconds(whole_seconds(wait))
        .visibility_timeout(whole_seconds(sqs.options.visibility))
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| sdk_error(&e, "receiving messages"))?;
    Ok(out.messages.unwrap_or_default())
}

/// Receives up to `max` of the ready messages of `queue` at once: a short poll, and when that
/// finds nothing though SQS counts ready messages, a one-second long poll (a short poll asks
/// only some of SQS's servers and may miss the few messages a queue holds). Empty: none ready.
pub(crate) async fn receive_ready(sqs: &Sqs, queue: &str, url: &str, max: usize) -> Result<Vec<Message>> {
    let received = receive(sqs, url, max, Duration::ZERO).await?;
    if received.is_empty() && crate::queues::info(sqs, queue, url).await?.message_count > 0 {
        return receive(sqs, url, max, Duration::from_secs(1)).await;
    }
    Ok(received)
}

/// If the message is still early, sends it on with the rest of its delay and deletes it;
/// returns whether it did.
pub(crate) async fn hop_if_early(
    sqs: &Sqs,
    holder: &Holder,
    url: &Arc<str>,
    m: &Message,
    incoming: &mut Incoming,
) -> bool {
    let Some(at) = incoming.envelope.header(DELIVER_AT).and_then(FieldValue::as_i64) else {
        return false;
    };
    let left = at - now_millis();
    if left <= 0 {
        incoming.envelope.headers_mut().remove(DELIVER_AT);
        return false;
    }
    let mut envelope = incoming.envelope.clone();
    envelope.headers_mut().remove(headers::RECEIVE_COUNT);
    let delay = Duration::from_millis(u64::try_from(left).unwrap_or(0)).min(MAX_DELAY_SECONDS);
    let sent = match wire::encode(&incoming.exchange, &incoming.routing_key, &envelope) {
        Ok(out) => sqs
            .client
            .send_message()
            .queue_url(url.as_ref())
            .message_body(out.body)
            .set_message_attributes(Some(out.attributes))
            .delay_seconds(whole_seconds(delay))
            .send()
            .await
            .map_err(|e| sdk_error(&e, "sending a delayed message on")),
        Err(e) => Err(e),
    };
    match sent {
        // The early copy goes only once the next one is stored.
        Ok(_) => holder.delete(url, m.receipt_handle().unwrap_or_default().to_owned()),
        Err(e) => tracing::warn!(
            queue_url = url.as_ref(),
            "a delayed message could not be sent on; it comes back after its visibility timeout: {e}"
        ),
    }
    true
}

/// Turns a received message into a delivery held by `holder` (or deleted at once, no-ack).
pub(crate) fn delivery(
    holder: &Arc<Holder>,
    url: &Arc<str>,
    m: &Message,
    incoming: Incoming,
    no_ack: bool,
) -> Delivery {
    let receipt = m.receipt_handle().unwrap_or_default().to_owned();
    let acker = if no_ack {
        holder.delete(url, receipt);
        Acker::settled(0)
    } else {
        let tag = holder.hold(url, receipt);
        Acker::new(Arc::clone(holder) as Arc<dyn AckHandle>, tag)
    };
    Delivery::new(
        incoming.envelope,
        ShortStr::from(incoming.exchange.as_str()),
        ShortStr::from(incoming.routing_key.as_str()),
        incoming.receive_count > 1,
        acker,
    )
}

/// The consumer task: runs until the subscription is dropped, the transport closes, or the
/// queue is deleted (then the stream gets a `NotFound` error and ends).
pub(crate) async fn run(mut p: Poll, tx: mpsc::Sender<Result<Delivery>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // Room under the prefetch.
        let room = loop {
            let settled = p.holder.settled.notified();
            let held = p.holder.len();
            if p.prefetch == 0 || held < usize::from(p.prefetch) {
                break if p.prefetch == 0 {
                    10
                } else {
                    usize::from(p.prefetch) - held
                };
            }
            tokio::select! {
                () = settled => {}
                () = tx.closed() => return,
                _ = p.closed.changed() => return,
            }
        };
        if tx.is_closed() || *p.closed.borrow() {
            return;
        }
        // Not cancelled once sent: messages SQS hands to a dropped request would stay
        // invisible for the whole visibility timeout. What comes after the end goes back.
        let received = receive(&p.sqs, &p.url, room, p.sqs.options.wait).await;
        let messages = match received {
            Ok(m) => {
                backoff = Duration::from_millis(100);
                m
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let gone = Error::broker(
                    404,
                    format!("NOT_FOUND - queue '{}' was deleted; the consumer has ended", p.queue),
                    Scope::Channel,
                );
                let _ = tx.send(Err(gone)).await;
                return;
            }
            Err(e) => {
                tracing::warn!(
                    queue = p.queue,
                    "receiving from SQS failed, trying again in {backoff:?}: {e}"
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => return,
                    _ = p.closed.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if *p.closed.borrow() {
            let receipts = messages.iter().filter_map(|m| m.receipt_handle().map(str::to_owned));
            crate::holder::release(&p.sqs, &p.url, receipts.collect()).await;
            return;
        }
        for m in &messages {
            let mut incoming = wire::decode(&p.queue, m);
            if hop_if_early(&p.sqs, &p.holder, &p.url, m, &mut incoming).await {
                continue;
            }
            let d = delivery(&p.holder, &p.url, m, incoming, p.no_ack);
            // A stream that is gone drops the delivery, which requeues it.
            let _ = tx.send(Ok(d)).await;
        }
    }
}
