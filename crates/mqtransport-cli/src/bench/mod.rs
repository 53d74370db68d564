//! `mqt bench`: a load tool in the spirit of RabbitMQ's PerfTest, on any transport.
//!
//! Producers publish bodies of a chosen size through the app's [`Publisher`](mqtransport::Publisher),
//! each keeping a window of unconfirmed publishes (at a chosen rate or as fast as confirms
//! come back), spread round robin over the bench's queues. Consumers are app consumers
//! (prefetch, manual or broker auto-ack). Each body carries its send time, so the consumers
//! measure the latency from publish to handling; each publish's confirm latency is measured
//! too. The queues are made for the run, uniquely named, and deleted after it.

mod config;
mod prometheus;
mod report;
mod run;

pub use config::{BenchConfig, MIN_SIZE, QueueKind, StopAfter};
pub use prometheus::serve_prometheus;
pub use report::{BenchReport, Latency};
pub use run::{PROGRESS_EVERY, Progress, run};
