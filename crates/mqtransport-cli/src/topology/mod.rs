//! `mqt topology`: a topology file (TOML, YAML or JSON) applied to a broker, compared with it,
//! linted for RabbitMQ pitfalls, and exported from a RabbitMQ broker's definitions.
//!
//! ```toml
//! [[exchanges]]
//! name = "shop"
//! type = "topic"            # direct, fanout, topic, headers; durable unless `durable = false`
//!
//! [[queues]]
//! name = "orders"
//! type = "quorum"           # classic (default), quorum, stream
//! arguments = { "x-delivery-limit" = 5, "x-dead-letter-exchange" = "shop.dlx" }
//!
//! [[bindings]]
//! exchange = "shop"
//! queue = "orders"          # or `to_exchange = "..."`
//! routing_key = "order.*"
//! ```

mod diff;
mod file;
mod lint;
mod management;

pub use diff::{Difference, diff};
pub use file::{Format, TopologyFile};
pub use lint::{Finding, lint};
pub use management::{Management, management_url};
