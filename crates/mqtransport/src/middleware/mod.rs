//! Middleware: tower layers for a consumer's stack.
//!
//! Any `tower::Layer` whose service takes an [`Incoming`](crate::Incoming) and returns an
//! [`Outcome`](crate::Outcome) works with [`Consumer::layer`](crate::Consumer::layer) and
//! [`AppBuilder::layer`](crate::AppBuilder::layer). Built in or re-exported:
//!
//! | layer | what it does |
//! |---|---|
//! | [`TraceLayer`] | a span per delivery with OpenTelemetry messaging attributes (on by default) |
//! | [`TimeoutLayer`] | cancels a handler after a time limit; the message is retried ([`Consumer::timeout`](crate::Consumer::timeout)) |
//! | [`ConcurrencyLimitLayer`] | at most N deliveries in this stack at once |
//! | [`GlobalConcurrencyLimitLayer`] | at most N at once across every consumer it is applied to (one shared semaphore) |
//! | [`from_fn`] | an async function as middleware |

mod from_fn;
pub mod trace;

pub use from_fn::{FromFn, FromFnLayer, Next, from_fn};
pub use tower::limit::{ConcurrencyLimitLayer, GlobalConcurrencyLimitLayer};
pub use tower::timeout::TimeoutLayer;
#[doc(inline)]
pub use trace::{DefaultMakeSpan, MakeSpan, Trace, TraceLayer};
