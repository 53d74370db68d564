//! W3C trace context in message headers (feature `opentelemetry`): a publish carries the
//! current span's context as `traceparent` (and `tracestate`), and a delivery's span is made a
//! child, or given a link, of the context its message carries, whoever published it.
//!
//! The header values are written and read here, by the W3C Trace Context format
//! (`00-<trace id>-<span id>-<flags>`), so that no global propagator needs installing.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use mqtransport_core::{Envelope, FieldValue, headers};

/// How a delivery's span relates to the span that published its message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceParent {
    /// The delivery's span is a child of the producer's: one trace across services.
    #[default]
    Child,
    /// The delivery's span starts its own trace, linked to the producer's (for fan-out, batch
    /// or long-delayed work, where one trace would mislead).
    Link,
}

/// Writes the current span's context into `envelope`'s headers, unless it has none (no
/// OpenTelemetry layer, or no span) or the message carries a `traceparent` already.
pub(crate) fn inject(envelope: &mut Envelope) {
    if envelope.header(headers::TRACEPARENT).is_some() {
        return;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    let traceparent = format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
    let tracestate = sc.trace_state().header();
    let table = envelope.headers_mut();
    table.insert(headers::TRACEPARENT, traceparent);
    if !tracestate.is_empty() {
        table.insert(headers::TRACESTATE, tracestate);
    }
}

/// The remote span context a message carries, if its `traceparent` is valid.
pub(crate) fn extract(envelope: &Envelope) -> Option<SpanContext> {
    let traceparent = envelope.header(headers::TRACEPARENT).and_then(FieldValue::as_str)?;
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = envelope
        .header(headers::TRACESTATE)
        .and_then(FieldValue::as_str)
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let sc = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
    sc.is_valid().then_some(sc)
}

/// Relates `span` (a delivery's) to the producer's span its message names, as `how` says.
pub(crate) fn relate(span: &tracing::Span, envelope: &Envelope, how: TraceParent) {
    let Some(remote) = extract(envelope) else {
        return;
    };
    match how {
        TraceParent::Child => {
            // Fails only for a span no OpenTelemetry layer sees: then there is nothing to relate.
            let _ = span.set_parent(Context::new().with_remote_span_context(remote));
        }
        TraceParent::Link => span.add_link(remote),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_read_and_a_broken_one_ignored() {
        let env = Envelope::new("x")
            .with_header(
                headers::TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .with_header(headers::TRACESTATE, "congo=t61rcWkgMzE");
        let sc = extract(&env).unwrap();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
        for broken in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(
                extract(&Envelope::new("x").with_header(headers::TRACEPARENT, broken)).is_none(),
                "{broken}"
            );
        }
    }
}
