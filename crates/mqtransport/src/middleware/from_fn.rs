//! [`from_fn`]: an async function as middleware.

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use mqtransport_core::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use crate::consumer::HandlerService;
use crate::delivery::Incoming;
use crate::outcome::{BoxError, IntoOutcome, Outcome};

/// Middleware from an async function of the delivery and the rest of the stack.
///
/// ```
/// use mqtransport::middleware::{Next, from_fn};
/// use mqtransport::{Consumer, Incoming, Outcome};
///
/// // Drops messages from a tenant that is switched off, before any handler runs.
/// async fn tenant_gate(req: Incoming, next: Next) -> Outcome {
///     if req.envelope().header("x-tenant").and_then(|v| v.as_str()) == Some("suspended") {
///         return Outcome::Ack;
///     }
///     next.run(req).await
/// }
///
/// let consumer: Consumer = Consumer::new("orders").layer(from_fn(tenant_gate));
/// # let _ = consumer;
/// ```
pub fn from_fn<F>(f: F) -> FromFnLayer<F> {
    FromFnLayer { f }
}

/// The layer [`from_fn`] makes.
#[derive(Clone)]
pub struct FromFnLayer<F> {
    f: F,
}

impl<F> fmt::Debug for FromFnLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFnLayer").finish_non_exhaustive()
    }
}

impl<F: Clone> Layer<HandlerService> for FromFnLayer<F> {
    type Service = FromFn<F>;

    fn layer(&self, inner: HandlerService) -> FromFn<F> {
        FromFn {
            f: self.f.clone(),
            inner,
        }
    }
}

/// The service [`from_fn`] makes.
#[derive(Clone)]
pub struct FromFn<F> {
    f: F,
    inner: HandlerService,
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

impl<F, Fut, O> Service<Incoming> for FromFn<F>
where
    F: Fn(Incoming, Next) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = O> + Send + 'static,
    O: IntoOutcome,
{
    type Response = Outcome;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Outcome, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        let next = Next {
            inner: self.inner.clone(),
        };
        (self.f)(req, next).map(|o| Ok(o.into_outcome())).boxed()
    }
}

/// The rest of the stack, for a [`from_fn`] middleware to call.
pub struct Next {
    inner: HandlerService,
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

impl Next {
    /// Runs the rest of the stack and the handler; an error becomes its outcome
    /// ([`Outcome::from_error`]).
    pub async fn run(self, req: Incoming) -> Outcome {
        match self.inner.oneshot(req).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::from_error(&*e),
        }
    }
}
