//! [`TraceLayer`], its service and the span makers.

use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::{Level, Span};

use super::future::TraceFuture;
use crate::delivery::Incoming;
use crate::outcome::Outcome;

/// Makes the span of one delivery.
pub trait MakeSpan: Clone + Send + Sync + 'static {
    /// The span for `req`. Declare a `mqt.outcome` field (as [`tracing::field::Empty`]) for the
    /// layer to record the outcome in.
    fn make_span(&self, req: &Incoming) -> Span;
}

impl<F> MakeSpan for F
where
    F: Fn(&Incoming) -> Span + Clone + Send + Sync + 'static,
{
    fn make_span(&self, req: &Incoming) -> Span {
        self(req)
    }
}

/// The default span, named `process`, with OpenTelemetry messaging attributes:
/// `otel.name` (`process <queue>`), `otel.kind` (`consumer`), `messaging.system`,
/// `messaging.operation.type` (`process`), `messaging.destination.name` (the queue),
/// `messaging.rabbitmq.destination.routing_key`, `messaging.message.id`,
/// `messaging.message.conversation_id`, `messaging.message.body.size`, plus `mqt.message.name`,
/// `mqt.attempt`, the W3C `traceparent` if the message has one, and `mqt.outcome` once known.
#[derive(Debug, Clone, Copy)]
pub struct DefaultMakeSpan {
    level: Level,
}

impl Default for DefaultMakeSpan {
    fn default() -> Self {
        DefaultMakeSpan { level: Level::DEBUG }
    }
}

impl DefaultMakeSpan {
    /// Spans at `level` (DEBUG by default, as tower-http's, so that an INFO log stays terse).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
}

macro_rules! process_span {
    ($level:expr, $req:expr) => {{
        let req = $req;
        let props = req.envelope().properties();
        tracing::span!(
            $level,
            "process",
            otel.name = %format_args!("process {}", req.queue()),
            otel.kind = "consumer",
            messaging.system = req.messaging_system(),
            messaging.operation.type = "process",
            messaging.destination.name = req.queue(),
            messaging.rabbitmq.destination.routing_key = req.delivered_routing_key(),
            messaging.message.id = props.message_id.as_deref(),
            messaging.message.conversation_id = props.correlation_id.as_deref(),
            messaging.message.body.size = req.envelope().body.len(),
            mqt.message.name = req.name(),
            mqt.attempt = req.attempt(),
            traceparent = req.envelope().header(mqtransport_core::headers::TRACEPARENT).and_then(|v| v.as_str()),
            mqt.outcome = tracing::field::Empty,
        )
    }};
}

impl MakeSpan for DefaultMakeSpan {
    fn make_span(&self, req: &Incoming) -> Span {
        // `span!` needs its level as a constant.
        match self.level {
            Level::ERROR => process_span!(Level::ERROR, req),
            Level::WARN => process_span!(Level::WARN, req),
            Level::INFO => process_span!(Level::INFO, req),
            Level::DEBUG => process_span!(Level::DEBUG, req),
            _ => process_span!(Level::TRACE, req),
        }
    }
}

/// A span per delivery: the handler (and every layer inside this one) runs in it, and the
/// outcome is recorded in its `mqt.outcome` field. With the `opentelemetry` feature, the span
/// is a child (or, see [`trace_parent`](Self::trace_parent), a link) of the span whose
/// `traceparent` the message carries. Apps get it by default
/// ([`AppBuilder::tracing`](crate::AppBuilder::tracing) turns it off).
#[derive(Debug, Clone, Default)]
pub struct TraceLayer<M = DefaultMakeSpan> {
    make_span: M,
    #[cfg(feature = "opentelemetry")]
    parent: crate::TraceParent,
}

impl TraceLayer {
    /// Spans from [`DefaultMakeSpan`].
    pub fn new() -> Self {
        TraceLayer::default()
    }
}

impl<M: MakeSpan> TraceLayer<M> {
    /// Spans from `make_span`.
    pub fn with_make_span<N: MakeSpan>(self, make_span: N) -> TraceLayer<N> {
        TraceLayer {
            make_span,
            #[cfg(feature = "opentelemetry")]
            parent: self.parent,
        }
    }

    /// How a delivery's span relates to the span that published its message (feature
    /// `opentelemetry`; a child by default).
    #[cfg(feature = "opentelemetry")]
    pub fn trace_parent(mut self, parent: crate::TraceParent) -> Self {
        self.parent = parent;
        self
    }
}

impl<S, M: Clone> Layer<S> for TraceLayer<M> {
    type Service = Trace<S, M>;

    fn layer(&self, inner: S) -> Trace<S, M> {
        Trace {
            inner,
            make_span: self.make_span.clone(),
            #[cfg(feature = "opentelemetry")]
            parent: self.parent,
        }
    }
}

/// The service [`TraceLayer`] makes.
#[derive(Debug, Clone)]
pub struct Trace<S, M = DefaultMakeSpan> {
    inner: S,
    make_span: M,
    #[cfg(feature = "opentelemetry")]
    parent: crate::TraceParent,
}

impl<S, M> Service<Incoming> for Trace<S, M>
where
    S: Service<Incoming, Response = Outcome>,
    M: MakeSpan,
{
    type Response = Outcome;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        let span = self.make_span.make_span(&req);
        // The runtime settles the delivery in a child of this span.
        if !span.is_disabled() {
            let _ = req.parts.process_span.set(span.clone());
        }
        #[cfg(feature = "opentelemetry")]
        crate::observe::relate(&span, req.envelope(), self.parent);
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        TraceFuture::new(inner, span)
    }
}
