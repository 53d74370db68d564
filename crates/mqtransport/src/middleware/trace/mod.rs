//! A tracing span per delivery, with OpenTelemetry's messaging attribute names: [`TraceLayer`].
//!
//! The library only emits spans and events; installing a subscriber (and an OpenTelemetry
//! exporter) is the application's choice.

mod future;
mod layer;

pub use future::TraceFuture;
pub use layer::{DefaultMakeSpan, MakeSpan, Trace, TraceLayer};
