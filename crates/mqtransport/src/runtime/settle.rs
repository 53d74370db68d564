//! Settling a delivery from its handler's [`Outcome`]: ack, requeue, a retry copy through a
//! wait queue, a dead letter, a reply; each in a `settle` span when spans are wanted.

use std::sync::Arc;
use std::time::Duration;

use mqtransport_core::{
    Acker, Confirmation, Envelope, Error, ErrorKind, FieldValue, Publish, Queue, Result, ShortStr, Topology, Transport,
    headers,
};
use tracing::Instrument;

use super::{ConsumerRuntime, DeadLetterTarget, MAX_REASON, callers_deadline, now_millis};
use crate::delivery::DeliveryParts;
use crate::outcome::Outcome;
use crate::publish::{PublishOptions, ReplyTo};
use crate::settled::Disposition;

impl ConsumerRuntime {
    /// Settles the delivery in a `settle` span, the child of its `process` span.
    pub(super) async fn settle(&self, outcome: Outcome, d: Handled) {
        self.in_settle_span(d, |d| self.settle_in_span(outcome, d)).await;
    }

    /// Runs `settling` on the delivery in a `settle` span (when spans are wanted), the child of
    /// its `process` span, or of the current span when it has none; records the outcome
    /// `settling` returns.
    async fn in_settle_span<F>(&self, d: Handled, settling: impl FnOnce(Handled) -> F)
    where
        F: Future<Output = &'static str>,
    {
        if !crate::observe::spans_wanted() {
            settling(d).await;
            return;
        }
        let span = {
            let parts = &d.parts;
            let current = tracing::Span::current();
            let parent = parts.process_span.get().unwrap_or(&current);
            crate::observe::settle_span(parent, self.queue(), &parts.envelope, self.ctx.system)
        };
        let outcome = settling(d).instrument(span.clone()).await;
        span.record("mqt.outcome", outcome);
    }

    async fn settle_in_span(&self, outcome: Outcome, d: Handled) -> &'static str {
        let attempt = d.parts.attempt();
        let parts = Arc::clone(&d.parts);
        let started = d.started;
        let envelope = parts.envelope();
        let disposition = match outcome {
            Outcome::Ack => {
                d.settle_ack().await;
                Disposition::Acked
            }
            Outcome::Reply(reply) => {
                // Boxed: a reply's publish would make every delivery's task larger.
                Box::pin(self.send_reply(&d.parts, *reply)).await;
                d.settle_ack().await;
                Disposition::Acked
            }
            // Acknowledged already: what failed is never run again, only kept for inspection.
            Outcome::Requeue | Outcome::Retry { .. } | Outcome::DeadLetter { .. }
                if self.acknowledge.is_at_most_once() =>
            {
                let reason = match outcome {
                    Outcome::Retry { reason, .. } | Outcome::DeadLetter { reason } => reason,
                    _ => "the handler asked for a requeue".to_owned(),
                };
                let reason = format!("acknowledged on receipt, so not run again: {reason}");
                Box::pin(self.dead_letter(d, attempt, reason)).await
            }
            Outcome::Requeue => {
                d.settle_requeue().await;
                Disposition::Requeued
            }
            // The rare paths are boxed, so that every delivery's task stays small.
            Outcome::Retry { after, reason } => match self.retry.delay(attempt) {
                Some(backoff) => {
                    let delay = after.unwrap_or(backoff);
                    match past_the_callers_deadline(&d.parts.envelope, delay) {
                        // The caller would have given up before the next attempt: it is told
                        // now, and the request is kept as a dead letter.
                        Some(late) => {
                            let reason = format!("{reason}; not retried: {late}");
                            Box::pin(self.dead_letter(d, attempt, reason)).await
                        }
                        None => Box::pin(self.retry_later(d, attempt, delay, reason)).await,
                    }
                }
                None => {
                    let reason = format!("gave up after {attempt} attempt(s): {reason}");
                    Box::pin(self.dead_letter(d, attempt, reason)).await
                }
            },
            Outcome::DeadLetter { reason } => Box::pin(self.dead_letter(d, attempt, reason)).await,
        };
        self.log(envelope, &disposition);
        for o in &self.observers {
            o.settled(self.queue(), envelope, &disposition, elapsed_since(started));
        }
        disposition.as_str()
    }

    fn log(&self, envelope: &Envelope, disposition: &Disposition) {
        let props = envelope.properties();
        let name = props.kind.as_deref().unwrap_or("");
        let id = props.message_id.as_deref().unwrap_or("");
        match disposition {
            Disposition::Acked | Disposition::Requeued | Disposition::Expired => {}
            Disposition::Retried { attempt, delay, reason } => tracing::warn!(
                queue = self.queue(),
                message = name,
                message_id = id,
                attempt,
                "attempt {attempt} failed, retrying in {delay:?}: {reason}"
            ),
            Disposition::DeadLettered { queue, reason } => tracing::warn!(
                queue = self.queue(),
                message = name,
                message_id = id,
                dead_letter_queue = queue.as_deref().unwrap_or("(broker)"),
                "dead-lettered: {reason}"
            ),
            Disposition::Dropped { reason } => tracing::error!(
                queue = self.queue(),
                message = name,
                message_id = id,
                "the message is lost: {reason}"
            ),
            Disposition::Returned { reason } => tracing::error!(
                queue = self.queue(),
                message = name,
                message_id = id,
                "could not retry or dead-letter the message, requeued it: {reason}"
            ),
        }
    }

    /// Publishes a copy as the next attempt to a wait queue that dead-letters it back after
    /// `delay`, waits for the confirm, then acks the original. A transport that can redeliver
    /// the message itself after `delay` (SQS: its visibility timeout) does so instead: the
    /// message keeps its place, and the transport counts its deliveries
    /// ([`headers::RECEIVE_COUNT`]).
    async fn retry_later(&self, d: Handled, attempt: u32, delay: Duration, reason: String) -> Disposition {
        if self
            .transport
            .capabilities()
            .redelivery_delay
            .is_some_and(|longest| delay <= longest)
        {
            d.settle_requeue_after(delay).await;
            return Disposition::Retried { attempt, delay, reason };
        }
        let mut copy = d.parts.envelope.clone();
        self.stamp(&mut copy, &d, attempt + 1, &reason);
        // The copy waits out its delay in the delay levels; an expiration would cut the wait short.
        copy.properties_mut().expiration = None;
        let sent = self
            .ctx
            .publisher
            .publish_raw_delayed(Publish::to_queue(self.ctx.queue.clone(), copy), delay)
            .await
            .and_then(|c| c.into_result("", self.queue()));
        match sent {
            Ok(()) => {
                self.settle_health.taken();
                d.settle_ack().await;
                Disposition::Retried { attempt, delay, reason }
            }
            Err(e) => {
                self.requeue_after_failure(d, format!("retry of attempt {attempt} failed: {e}"))
                    .await
            }
        }
    }

    /// Moves the message to the dead-letter queue with the reason, or rejects it to the broker.
    async fn dead_letter(&self, d: Handled, attempt: u32, reason: String) -> Disposition {
        self.reply_failure(&d.parts, &reason).await;
        let (name, declaration) = match &self.dead_letter {
            DeadLetterTarget::Broker if self.acknowledge.is_at_most_once() => {
                return Disposition::Dropped { reason };
            }
            DeadLetterTarget::Broker => {
                d.settle_reject().await;
                return Disposition::DeadLettered { queue: None, reason };
            }
            DeadLetterTarget::Queue { name, declaration } => (name.clone(), declaration.clone()),
        };
        let mut copy = d.parts.envelope.clone();
        copy.headers_mut().insert(headers::FAILED_AT, now_millis());
        self.stamp(&mut copy, &d, attempt, &reason);
        // A dead letter must not expire in the dead-letter queue.
        copy.properties_mut().expiration = None;
        match self.publish_copy(name.clone(), copy, Some(&declaration)).await {
            Ok(()) => {
                self.settle_health.taken();
                d.settle_ack().await;
                Disposition::DeadLettered {
                    queue: Some(name.to_string()),
                    reason,
                }
            }
            Err(e) if self.acknowledge.is_at_most_once() => {
                self.settle_health.refused(&e.to_string());
                Disposition::Dropped {
                    reason: format!("{reason}; dead-lettering to '{name}' failed: {e}"),
                }
            }
            Err(e) => {
                self.requeue_after_failure(d, format!("dead-lettering to '{name}' failed: {e}"))
                    .await
            }
        }
    }

    /// A request whose caller gave up waiting: acknowledged without running its handler.
    /// Its `settle` span (when spans are wanted) records the outcome `expired`.
    pub(super) async fn skip_expired(&self, d: Handled) {
        let parts = Arc::clone(&d.parts);
        let started = d.started;
        self.in_settle_span(d, |d| async move {
            tracing::info!(
                queue = self.queue(),
                message = d.parts.envelope.properties().kind.as_deref().unwrap_or(""),
                "skipping a request whose caller gave up waiting (its deadline passed)"
            );
            d.settle_ack().await;
            Disposition::Expired.as_str()
        })
        .await;
        for o in &self.observers {
            o.settled(
                self.queue(),
                &parts.envelope,
                &Disposition::Expired,
                elapsed_since(started),
            );
        }
    }

    /// A handler's reply, to the request's `reply_to` with its correlation id (or, lacking one,
    /// its message id). A reply that cannot be published is logged: its caller learns of the
    /// failure (a lost connection) or times out; the request is done either way.
    async fn send_reply(&self, parts: &DeliveryParts, reply: crate::outcome::Reply) {
        let Some(to) = ReplyTo::of(parts.envelope.properties()) else {
            tracing::debug!(
                queue = self.queue(),
                reply = reply.name,
                "a handler replied to a message that asked for no reply"
            );
            return;
        };
        let mut envelope = Envelope::new(reply.body);
        let props = envelope.properties_mut();
        props.content_type = Some(reply.content_type.to_owned());
        props.kind = Some(reply.name.to_owned());
        let envelope = self
            .ctx
            .publisher
            .stamped(envelope, &PublishOptions::default().transient());
        match self.ctx.publisher.publish_stamped(to.publish(envelope)).await {
            Ok(Confirmation::Confirmed) => {}
            Ok(other) => tracing::warn!(
                queue = self.queue(),
                reply_to = to.address(),
                "a reply was not delivered: {other:?}"
            ),
            Err(e) => tracing::warn!(
                queue = self.queue(),
                reply_to = to.address(),
                "a reply could not be published: {e}"
            ),
        }
    }

    /// A request that failed for good: its caller is told why (a reply carrying
    /// [`headers::RPC_ERROR`]) before the request is dead-lettered, instead of waiting for its
    /// deadline. Best effort: a caller that cannot be told still times out.
    async fn reply_failure(&self, parts: &DeliveryParts, reason: &str) {
        let Some(to) = ReplyTo::of(parts.envelope.properties()) else {
            return;
        };
        let failure = if parts.handler_started() { "handler" } else { "rejected" };
        let reply = Envelope::new(bytes::Bytes::new())
            .with_header(headers::RPC_ERROR, truncate(reason, MAX_REASON))
            .with_header(headers::RPC_FAILURE, failure);
        if let Err(e) = self.ctx.publisher.publish_stamped(to.publish(reply)).await {
            tracing::info!(queue = self.queue(), "could not tell a caller its request failed: {e}");
        }
    }

    /// After a failed retry or dead-letter publish: requeue, after a pause that doubles with
    /// each failure in a row (see [`SettleHealth`]), so that a broker that keeps refusing
    /// (a full dead-letter queue) does not become a hot redelivery loop.
    async fn requeue_after_failure(&self, d: Handled, reason: String) -> Disposition {
        tokio::time::sleep(self.settle_health.refused(&reason)).await;
        d.settle_requeue().await;
        Disposition::Returned { reason }
    }

    /// Writes the framework headers of a retry or dead-letter copy.
    fn stamp(&self, copy: &mut Envelope, d: &Handled, attempt: u32, reason: &str) {
        let queue = self.queue().to_owned();
        let headers = copy.headers_mut();
        headers.insert(headers::ATTEMPT, i64::from(attempt));
        headers.insert(headers::ERROR, truncate(reason, MAX_REASON));
        if !headers.contains_key(headers::ORIGINAL_EXCHANGE) {
            headers.insert(headers::ORIGINAL_EXCHANGE, d.parts.delivered_exchange());
        }
        if !headers.contains_key(headers::ORIGINAL_ROUTING_KEY) {
            headers.insert(headers::ORIGINAL_ROUTING_KEY, d.parts.delivered_routing_key());
        }
        headers.insert(headers::ORIGINAL_QUEUE, FieldValue::from(queue));
        // A copy of a message that carries no trace context continues the settling's trace.
        #[cfg(feature = "opentelemetry")]
        crate::observe::inject(copy);
        // The copy must reach its queue even when the stamps push it past a frame (or, where the
        // broker limits the whole message, past what the body leaves of it).
        let caps = self.transport.capabilities();
        let left = u32::try_from(caps.max_message_size.saturating_sub(copy.body.len())).unwrap_or(u32::MAX);
        let dropped = copy.properties_mut().fit_frame(caps.frame_max.min(left));
        if !dropped.is_empty() {
            tracing::warn!(
                queue = self.queue(),
                dropped = dropped.join(","),
                "the copy's headers did not fit in a frame: dropped the largest"
            );
        }
    }

    /// Publishes `envelope` to `queue` and requires a confirm. If the queue is missing and its
    /// declaration is known, declares it and tries once more.
    async fn publish_copy(&self, queue: ShortStr, envelope: Envelope, declaration: Option<&Queue>) -> Result<()> {
        let first = self
            .transport
            .publish(Publish::to_queue(queue.clone(), envelope.clone()))
            .await?;
        let confirmation = match (first, declaration) {
            (Confirmation::Returned { .. }, Some(decl)) => {
                self.transport.declare(&Topology::new().queue(decl.clone())).await?;
                self.transport
                    .publish(Publish::to_queue(queue.clone(), envelope))
                    .await?
            }
            (c, _) => c,
        };
        match confirmation {
            Confirmation::Confirmed => Ok(()),
            Confirmation::Returned { reply_code, reply_text } => Err(Error::new(
                ErrorKind::Unroutable,
                format!("queue '{queue}' does not exist ({reply_code} {reply_text})"),
            )),
            _ => Err(Error::new(
                ErrorKind::Nacked,
                format!("queue '{queue}' refused the message"),
            )),
        }
    }
}

fn elapsed_since(started: Option<std::time::Instant>) -> Duration {
    started.map_or(Duration::ZERO, |t| t.elapsed())
}

/// A delivery whose handler has run: its parts (as delivered) and the acker that settles it.
pub(super) struct Handled {
    pub(super) parts: Arc<DeliveryParts>,
    pub(super) acker: Acker,
    /// When the delivery reached the consumer, if anyone watches.
    pub(super) started: Option<std::time::Instant>,
}

impl Handled {
    async fn settle_ack(self) {
        report(self.acker.ack().await, "ack");
    }

    async fn settle_requeue(self) {
        report(self.acker.nack(true).await, "requeue");
    }

    async fn settle_reject(self) {
        report(self.acker.reject(false).await, "reject");
    }

    async fn settle_requeue_after(self, delay: Duration) {
        report(self.acker.requeue_after(delay).await, "requeue with a delay");
    }
}

/// A settle that fails (the connection was lost) needs no action: the broker has requeued the
/// delivery already. It is worth a line in the log.
pub(super) fn report(result: Result<()>, what: &str) {
    if let Err(e) = result {
        tracing::info!("could not {what} a delivery, the broker will redeliver it: {e}");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    format!("{}…", mqtransport_core::frame_limit::char_prefix(text, max))
}

/// Why a retry of a request after `delay` would be too late: its caller's deadline
/// ([`headers::DEADLINE`]) passes before then. `None` for a message without a deadline, or
/// one whose next attempt comes in time.
fn past_the_callers_deadline(envelope: &Envelope, delay: Duration) -> Option<String> {
    let deadline = callers_deadline(envelope)?;
    let next_attempt = now_millis().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    (next_attempt >= deadline)
        .then(|| format!("the next attempt, in {delay:?}, would come after the caller's deadline"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_at_a_char_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééééé", 3), "é…");
    }
}
