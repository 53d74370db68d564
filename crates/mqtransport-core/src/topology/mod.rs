//! The topology model: exchanges, queues and bindings as plain owned data.
//!
//! ```
//! use std::time::Duration;
//! use mqtransport_core::topology::{Binding, Exchange, Queue, Topology};
//!
//! let topology = Topology::new()
//!     .exchange(Exchange::topic("events"))
//!     .queue(Queue::quorum("orders").dead_letter_exchange("dlx"))
//!     .queue(Queue::durable("audit").message_ttl(Duration::from_secs(60)))
//!     .bind(Binding::queue("orders", "events", "orders.*"))
//!     .bind(Binding::queue("audit", "events", "#"));
//! topology.validate()?;
//! # Ok::<(), mqtransport_core::Error>(())
//! ```

mod binding;
mod exchange;
mod queue;
mod rules;

pub use binding::{Binding, Destination};
pub use exchange::{BUILTIN_EXCHANGES, Exchange, ExchangeKind};
pub use queue::{Overflow, Queue, QueueType, integer_argument, invalid_argument};
pub use rules::MAX_NAME_LEN;

use crate::error::{Error, Result};

/// Everything an application declares: exchanges, then queues, then bindings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// Exchanges, declared first.
    pub exchanges: Vec<Exchange>,
    /// Queues, declared second.
    pub queues: Vec<Queue>,
    /// Bindings, declared last.
    pub bindings: Vec<Binding>,
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Self {
        Topology::default()
    }

    /// Adds an exchange.
    pub fn exchange(mut self, exchange: Exchange) -> Self {
        self.exchanges.push(exchange);
        self
    }

    /// Adds a queue.
    pub fn queue(mut self, queue: Queue) -> Self {
        self.queues.push(queue);
        self
    }

    /// Adds a binding.
    pub fn bind(mut self, binding: Binding) -> Self {
        self.bindings.push(binding);
        self
    }

    /// Adds everything in `other`.
    pub fn merge(mut self, other: Topology) -> Self {
        self.exchanges.extend(other.exchanges);
        self.queues.extend(other.queues);
        self.bindings.extend(other.bindings);
        self
    }

    /// Validates every entity, and that no name is declared twice with different options.
    pub fn validate(&self) -> Result<()> {
        for (i, x) in self.exchanges.iter().enumerate() {
            x.validate()?;
            if let Some(prev) = self.exchanges[..i].iter().find(|p| p.name == x.name) {
                x.check_equivalent(prev, "/").map_err(|e| {
                    Error::invalid(format!(
                        "exchange '{}' is declared twice with different options: {}",
                        x.name,
                        e.message()
                    ))
                })?;
            }
        }
        for (i, q) in self.queues.iter().enumerate() {
            q.validate("/")?;
            if q.name.is_empty() {
                continue;
            }
            if let Some(prev) = self.queues[..i].iter().find(|p| p.name == q.name) {
                let same = q.exclusive == prev.exclusive && q.check_equivalent(prev, "/").is_ok();
                if !same {
                    return Err(Error::invalid(format!(
                        "queue '{}' is declared twice with different options",
                        q.name
                    )));
                }
            }
        }
        for b in &self.bindings {
            b.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn rejects_long_and_reserved_names() {
        let long = "q".repeat(256);
        let e = Queue::durable(long).validate("/").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("256 bytes"));
        assert!(Queue::durable("q".repeat(255)).validate("/").is_ok());
        let e = Queue::durable("amq.foo").validate("/").unwrap_err();
        assert_eq!(e.reply_code(), Some(403));
        assert!(e.message().contains("'amq.foo'"));
        assert!(Exchange::direct("amq.direct").validate().is_ok());
        assert_eq!(
            Exchange::direct("amq.x").validate().unwrap_err().reply_code(),
            Some(403)
        );
    }

    #[test]
    fn rejects_contradictions_naming_the_queue() {
        let e = Queue::quorum("q1").exclusive().validate("/").unwrap_err();
        assert_eq!(
            e.message(),
            "PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue 'q1' in vhost '/'"
        );
        let e = Queue::transient("q2")
            .argument("x-queue-type", "quorum")
            .validate("/")
            .unwrap_err();
        assert!(e.message().contains("'non-durable'"));
        let e = Queue::durable("q3")
            .dead_letter_routing_key("k")
            .validate("/")
            .unwrap_err();
        assert!(e.message().ends_with("routing_key_but_no_dlx_defined"));
        let e = Queue::durable("q4")
            .argument("x-message-ttl", -1i32)
            .validate("/")
            .unwrap_err();
        assert!(e.message().ends_with("{value_negative,-1}"));
        let e = Queue::durable("q5")
            .argument("x-message-ttl", "abc")
            .validate("/")
            .unwrap_err();
        assert!(e.message().ends_with("\"expected integer, got longstr\""));
        let e = Queue::quorum("q6").max_priority(5).validate("/").unwrap_err();
        assert!(e.message().contains("of queue type rabbit_quorum_queue"));
    }

    #[test]
    fn equivalence_follows_rabbitmq() {
        let base = Queue::durable("q").message_ttl(Duration::from_secs(1));
        assert!(
            base.clone()
                .argument("x-unknown", 1i32)
                .check_equivalent(&base, "/")
                .is_ok()
        );
        let e = Queue::durable("q").check_equivalent(&base, "/").unwrap_err();
        assert_eq!(
            e.message(),
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '1000' of type 'signedint'"
        );
        let wide = Queue::durable("q").argument("x-message-ttl", 1000i64);
        assert!(wide.check_equivalent(&base, "/").is_ok());
        let text = Queue::durable("q").argument("x-message-ttl", "1000");
        assert!(text.check_equivalent(&base, "/").is_err());
        let classic = Queue::durable("q").argument("x-queue-type", "classic");
        assert!(classic.check_equivalent(&Queue::durable("q"), "/").is_ok());
        let e = Queue::transient("q")
            .check_equivalent(&Queue::durable("q"), "/")
            .unwrap_err();
        assert!(e.message().contains("inequivalent arg 'durable'"));
        let e = Exchange::fanout("x")
            .check_equivalent(&Exchange::direct("x"), "/")
            .unwrap_err();
        assert!(e.message().contains("received 'fanout' but current is 'direct'"));
    }

    #[test]
    fn topology_rejects_conflicting_duplicates() {
        let t = Topology::new().queue(Queue::durable("a")).queue(Queue::transient("a"));
        assert!(t.validate().unwrap_err().message().contains("queue 'a'"));
        let t = Topology::new().bind(Binding::queue("q", "", "q"));
        assert_eq!(t.validate().unwrap_err().reply_code(), Some(403));
    }
}
