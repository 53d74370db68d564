//! [`DeliveryParts`]: what one delivery carries, in the one shape every reader of it shares.

use std::fmt;

use mqtransport_core::{Envelope, FieldValue, ShortStr, headers};

/// What a delivery carries: the message, where it came from and how often it was tried.
///
/// One value per delivery, shared by reference (an `Arc`) by the [`Incoming`](crate::Incoming)
/// that middleware sees, the [`DeliveryInfo`](crate::DeliveryInfo) and
/// [`Headers`](crate::Headers) extractors, and the runtime that settles the delivery: taking
/// them copies nothing. Like `http::request::Parts` in axum.
///
/// Two routes are told apart by name: the *delivered* exchange and routing key are the ones the
/// message came through this time (`""` and the queue's name for a retry, which comes back
/// through the default exchange); the *original* ones are those it was first published with.
pub struct DeliveryParts {
    pub(crate) envelope: Envelope,
    pub(crate) queue: ShortStr,
    pub(crate) exchange: ShortStr,
    pub(crate) routing_key: ShortStr,
    pub(crate) redelivered: bool,
    pub(crate) delivery_tag: u64,
    /// Set when a handler function starts (its arguments extracted): a failure after it is
    /// the handler's, one before it (a message that cannot be read or dispatched) a refusal.
    pub(crate) handler_started: std::sync::atomic::AtomicBool,
    /// The delivery's `process` span, once [`TraceLayer`](crate::middleware::TraceLayer) made
    /// it: the settling's span is its child.
    pub(crate) process_span: std::sync::OnceLock<tracing::Span>,
}

impl Clone for DeliveryParts {
    fn clone(&self) -> Self {
        DeliveryParts {
            envelope: self.envelope.clone(),
            queue: self.queue.clone(),
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            redelivered: self.redelivered,
            delivery_tag: self.delivery_tag,
            handler_started: std::sync::atomic::AtomicBool::new(self.handler_started()),
            process_span: self.process_span.clone(),
        }
    }
}

impl DeliveryParts {
    pub(crate) fn mark_handler_started(&self) {
        self.handler_started.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn handler_started(&self) -> bool {
        self.handler_started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The message: properties, headers, body.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The message name (AMQP `type`), if the publisher set one.
    pub fn name(&self) -> Option<&str> {
        self.envelope.properties().kind.as_deref()
    }

    /// The message id (`message_id` property; mqtransport sends a UUIDv7).
    pub fn message_id(&self) -> Option<&str> {
        self.envelope.properties().message_id.as_deref()
    }

    /// The correlation id.
    pub fn correlation_id(&self) -> Option<&str> {
        self.envelope.properties().correlation_id.as_deref()
    }

    /// Where a reply should go.
    pub fn reply_to(&self) -> Option<&str> {
        self.envelope.properties().reply_to.as_deref()
    }

    /// When it was published, in seconds since the Unix epoch (`timestamp` property).
    pub fn timestamp(&self) -> Option<u64> {
        self.envelope.properties().timestamp
    }

    /// The header `key`.
    pub fn header(&self, key: &str) -> Option<&FieldValue> {
        self.envelope.header(key)
    }

    /// The queue it was consumed from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The exchange it came through this time (`""` for the default exchange, which is also how
    /// a retried message comes back).
    pub fn delivered_exchange(&self) -> &str {
        &self.exchange
    }

    /// The routing key it came with this time.
    pub fn delivered_routing_key(&self) -> &str {
        &self.routing_key
    }

    /// The exchange it was first published to: for a retried message the original one (from
    /// `x-mqt-original-exchange`), not the default exchange it came back through.
    pub fn original_exchange(&self) -> &str {
        self.original(headers::ORIGINAL_EXCHANGE).unwrap_or(&self.exchange)
    }

    /// The routing key it was first published with (for a retried message, from
    /// `x-mqt-original-routing-key`).
    pub fn original_routing_key(&self) -> &str {
        self.original(headers::ORIGINAL_ROUTING_KEY)
            .unwrap_or(&self.routing_key)
    }

    fn original(&self, header: &str) -> Option<&str> {
        self.envelope.header(header).and_then(FieldValue::as_str)
    }

    /// The broker delivered it before (a requeue, or a redelivery after a lost connection).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The delivery tag.
    pub fn delivery_tag(&self) -> u64 {
        self.delivery_tag
    }

    /// Which attempt this is: 1 for the first delivery, counted by the framework's retries
    /// (`x-mqt-attempt`).
    pub fn attempt(&self) -> u32 {
        attempt_of(&self.envelope)
    }
}

impl fmt::Debug for DeliveryParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryParts")
            .field("message_id", &self.message_id())
            .field("name", &self.name())
            .field("queue", &self.queue())
            .field("delivered_exchange", &self.delivered_exchange())
            .field("delivered_routing_key", &self.delivered_routing_key())
            .field("original_exchange", &self.original_exchange())
            .field("original_routing_key", &self.original_routing_key())
            .field("redelivered", &self.redelivered)
            .field("delivery_tag", &self.delivery_tag)
            .field("attempt", &self.attempt())
            .finish()
    }
}

/// The attempt number an envelope carries (`x-mqt-attempt`, 1 when absent or nonsense).
/// The attempt a delivery is: its [`headers::ATTEMPT`] (1 when absent), plus the deliveries of
/// this very message before this one where the transport counts them
/// ([`headers::RECEIVE_COUNT`], on transports that retry by redelivering in place).
fn attempt_of(envelope: &Envelope) -> u32 {
    let stamped = envelope
        .header(headers::ATTEMPT)
        .and_then(FieldValue::as_i64)
        .and_then(|a| u32::try_from(a).ok())
        .filter(|a| *a >= 1)
        .unwrap_or(1);
    let earlier = envelope
        .header(headers::RECEIVE_COUNT)
        .and_then(FieldValue::as_i64)
        .and_then(|n| u32::try_from(n).ok())
        .map_or(0, |n| n.saturating_sub(1));
    stamped.saturating_add(earlier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_come_from_the_header() {
        assert_eq!(attempt_of(&Envelope::new("x")), 1);
        assert_eq!(attempt_of(&Envelope::new("x").with_header(headers::ATTEMPT, 3i64)), 3);
        assert_eq!(attempt_of(&Envelope::new("x").with_header(headers::ATTEMPT, 2i32)), 2);
        assert_eq!(attempt_of(&Envelope::new("x").with_header(headers::ATTEMPT, -4i32)), 1);
        assert_eq!(attempt_of(&Envelope::new("x").with_header(headers::ATTEMPT, "7")), 1);
        let redelivered = Envelope::new("x").with_header(headers::RECEIVE_COUNT, 3i64);
        assert_eq!(attempt_of(&redelivered), 3, "two deliveries before this one");
        assert_eq!(attempt_of(&redelivered.with_header(headers::ATTEMPT, 2i64)), 4);
    }
}
