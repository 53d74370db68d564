//! The future of the [`Trace`](super::Trace) service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::Span;

use crate::outcome::Outcome;

pin_project_lite::pin_project! {
    /// Runs the inner future inside the delivery's span and records the outcome.
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        span: Span,
    }
}

impl<F> TraceFuture<F> {
    pub(crate) fn new(inner: F, span: Span) -> Self {
        TraceFuture { inner, span }
    }
}

impl<F, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<Outcome, E>>,
{
    type Output = Result<Outcome, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = std::task::ready!(this.inner.poll(cx));
        let outcome = match &result {
            Ok(o) => o.as_str(),
            Err(_) => "error",
        };
        this.span.record("mqt.outcome", outcome);
        Poll::Ready(result)
    }
}
