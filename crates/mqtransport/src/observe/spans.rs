//! The spans of a publish (`send`) and of a delivery's settling (`settle`), named and
//! attributed after OpenTelemetry's messaging conventions (`{operation} {destination}`), as the
//! delivery's `process` span (made by [`TraceLayer`](crate::middleware::TraceLayer)) is.
//!
//! Both are at DEBUG level, as the `process` span is by default: with no subscriber, or one
//! that filters DEBUG out, making them costs a callsite check.

use mqtransport_core::{DIRECT_REPLY_TO, Envelope, Publish};
use tracing::Span;

/// Whether a DEBUG span could be enabled at all (the global maximum level): when not, the
/// `send` and `settle` spans are not made, nor their futures wrapped.
pub(crate) fn spans_wanted() -> bool {
    tracing::Level::DEBUG <= tracing::level_filters::LevelFilter::current()
}

/// Where a publish goes, as spans and metrics name it: the exchange, or the queue for the
/// default exchange, with every direct reply-to address under the one pseudo-queue (each
/// channel's address differs).
pub(crate) fn destination(publish: &Publish) -> &str {
    if !publish.exchange.is_empty() {
        &publish.exchange
    } else if publish.routing_key.starts_with(DIRECT_REPLY_TO) {
        DIRECT_REPLY_TO
    } else {
        &publish.routing_key
    }
}

/// The span of one publish, from the send to the broker's answer. `mqt.outcome` is recorded
/// when the answer comes (`confirmed`, `returned`, `nacked`, `failed`).
pub(crate) fn send_span(publish: &Publish, system: &'static str) -> Span {
    let props = publish.envelope.properties();
    let destination = destination(publish);
    tracing::debug_span!(
        "send",
        otel.name = %format_args!("send {destination}"),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = destination,
        messaging.rabbitmq.destination.routing_key = publish.routing_key.as_str(),
        messaging.message.id = props.message_id.as_deref(),
        messaging.message.conversation_id = props.correlation_id.as_deref(),
        messaging.message.body.size = publish.envelope.body.len(),
        mqt.message.name = props.kind.as_deref(),
        mqt.outcome = tracing::field::Empty,
    )
}

/// The span of settling one delivery of `queue` (the ack, the retry's or dead letter's copy,
/// the reply), a child of `parent` (the delivery's `process` span, or the current span when
/// the app makes none). `mqt.outcome` is recorded once settled (`acked`, `retried`,
/// `dead_lettered`, ...).
pub(crate) fn settle_span(parent: &Span, queue: &str, envelope: &Envelope, system: &'static str) -> Span {
    let props = envelope.properties();
    tracing::debug_span!(
        parent: parent,
        "settle",
        otel.name = %format_args!("settle {queue}"),
        otel.kind = "client",
        messaging.system = system,
        messaging.operation.type = "settle",
        messaging.operation.name = "settle",
        messaging.destination.name = queue,
        messaging.message.id = props.message_id.as_deref(),
        mqt.message.name = props.kind.as_deref(),
        mqt.outcome = tracing::field::Empty,
    )
}

/// The outcome of a publish, as spans and metrics name it.
pub(crate) fn publish_outcome(result: &mqtransport_core::Result<mqtransport_core::Confirmation>) -> &'static str {
    use mqtransport_core::Confirmation;
    match result {
        Ok(Confirmation::Confirmed) => "confirmed",
        Ok(Confirmation::Returned { .. }) => "returned",
        Ok(_) => "nacked",
        Err(_) => "failed",
    }
}
