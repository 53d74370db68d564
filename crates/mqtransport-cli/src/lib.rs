//! `mqt`, the mqtransport command line, as a library: each command is a function here over
//! the mqtransport library, and the binary (`src/main.rs`) parses the arguments, calls it and
//! prints what it returns.
//!
//! | command | module |
//! |---|---|
//! | `mqt bench` | [`bench`](mod@bench): the load tool (producers, consumers, rates, latency percentiles) |
//! | `mqt publish` | [`publish`]: messages to a queue or an exchange, confirmed |
//! | `mqt consume` | [`consume`]: messages from a queue, acked, requeued or not acked |
//! | `mqt dlq` | [`dlq`]: list, show, replay and purge a dead-letter queue |
//! | `mqt topology` | [`topology`]: apply, diff, lint and export topology files |
//! | `mqt docs` | [`docs`]: an app's AsyncAPI document as a page, written or served |
//!
//! The broker comes from a URL ([`broker`]); output is for people unless asked for JSON
//! ([`output`], [`render`]).

pub mod bench;
pub mod broker;
pub mod consume;
pub mod dlq;
pub mod docs;
pub mod output;
pub mod publish;
pub mod render;
pub mod topology;
