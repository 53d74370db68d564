//! [`Queue`], its [`QueueType`] and [`Overflow`] behaviour, and the arguments RabbitMQ checks.

use std::time::Duration;

use super::rules::{check_name_len, compare_arg, duration_ms, inequivalent, int_value};
use crate::error::{Error, Result, Scope};
use crate::field::{FieldTable, FieldValue};

/// The type of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueType {
    /// A classic queue: requeued messages return to their original position.
    Classic,
    /// A replicated quorum queue: requeued messages go to the back; `x-delivery-limit`.
    Quorum,
}

/// What a full queue does with the next message (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest message.
    DropHead,
    /// Refuse the new message (the publisher gets a nack).
    RejectPublish,
    /// Refuse and dead-letter the new message.
    RejectPublishDlx,
}

impl Overflow {
    /// The argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        }
    }
}

/// A queue declaration. Options the broker understands are kept as AMQP arguments, so the
/// declaration is exactly what goes on the wire; the builder methods write them.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// The queue name; empty asks the broker to generate one (`amq.gen-…`).
    pub name: String,
    /// Survives a broker restart.
    pub durable: bool,
    /// Owned by the declaring connection, deleted when it closes.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Arguments (`x-message-ttl`, `x-dead-letter-exchange`, `x-queue-type`, ...).
    pub arguments: FieldTable,
}

impl Queue {
    fn with_flags(name: impl Into<String>, durable: bool) -> Self {
        Queue {
            name: name.into(),
            durable,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::new(),
        }
    }

    /// A durable classic queue.
    pub fn durable(name: impl Into<String>) -> Self {
        Queue::with_flags(name, true)
    }

    /// A non-durable classic queue.
    pub fn transient(name: impl Into<String>) -> Self {
        Queue::with_flags(name, false)
    }

    /// A durable quorum queue.
    pub fn quorum(name: impl Into<String>) -> Self {
        Queue::durable(name).argument("x-queue-type", "quorum")
    }

    /// A server-named, exclusive, auto-delete queue (for replies and private subscriptions).
    pub fn server_named() -> Self {
        Queue::transient("").exclusive().auto_delete()
    }

    /// Owned by this connection only.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Deleted when its last consumer goes.
    pub fn auto_delete(mut self) -> Self {
        self.auto_delete = true;
        self
    }

    /// Sets an argument.
    pub fn argument(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.arguments.insert(key, value);
        self
    }

    /// Messages expire after `ttl` in the queue (`x-message-ttl`).
    pub fn message_ttl(self, ttl: Duration) -> Self {
        self.argument("x-message-ttl", duration_ms(ttl))
    }

    /// The queue is deleted after `idle` without use (`x-expires`).
    pub fn expires(self, idle: Duration) -> Self {
        self.argument("x-expires", duration_ms(idle))
    }

    /// At most `n` ready messages (`x-max-length`).
    pub fn max_length(self, n: u32) -> Self {
        self.argument("x-max-length", int_value(i64::from(n)))
    }

    /// At most `n` bytes of ready message bodies (`x-max-length-bytes`).
    pub fn max_length_bytes(self, n: u64) -> Self {
        self.argument("x-max-length-bytes", int_value(i64::try_from(n).unwrap_or(i64::MAX)))
    }

    /// What happens when the queue is full (`x-overflow`).
    pub fn overflow(self, overflow: Overflow) -> Self {
        self.argument("x-overflow", overflow.as_str())
    }

    /// Rejected, expired and overflowed messages go to `exchange` (`x-dead-letter-exchange`;
    /// `""` is the default exchange).
    pub fn dead_letter_exchange(self, exchange: impl Into<String>) -> Self {
        self.argument("x-dead-letter-exchange", exchange.into())
    }

    /// Dead letters are published with this routing key instead of their own.
    pub fn dead_letter_routing_key(self, key: impl Into<String>) -> Self {
        self.argument("x-dead-letter-routing-key", key.into())
    }

    /// Quorum queues: a message returned more than `n` times is dead-lettered or dropped.
    pub fn delivery_limit(self, n: u32) -> Self {
        self.argument("x-delivery-limit", int_value(i64::from(n)))
    }

    /// Classic queues: priorities 0..=`max` are honoured (`x-max-priority`).
    pub fn max_priority(self, max: u8) -> Self {
        self.argument("x-max-priority", i32::from(max))
    }

    /// The queue type (`x-queue-type`; absent means classic).
    pub fn queue_type(&self) -> QueueType {
        match self.arguments.get("x-queue-type").and_then(FieldValue::as_str) {
            Some("quorum") => QueueType::Quorum,
            _ => QueueType::Classic,
        }
    }

    /// Checks the declaration the way RabbitMQ 3.10 does, returning its error (code and text).
    pub fn validate(&self, vhost: &str) -> Result<()> {
        check_name_len("queue", &self.name)?;
        let q = &self.name;
        if q.starts_with("amq.") {
            return Err(Error::broker(
                403,
                format!("ACCESS_REFUSED - queue name '{q}' contains reserved prefix 'amq.*'"),
                Scope::Channel,
            ));
        }
        let invalid = |arg: &str, reason: String| invalid_argument(arg, q, vhost, &reason);
        let int_arg = |arg: &str, min: i64| -> Result<Option<i64>> {
            let Some(v) = self.arguments.get(arg) else {
                return Ok(None);
            };
            let n = integer_argument(arg, v, q, vhost)?;
            if n < 0 {
                return Err(invalid(arg, format!("{{value_negative,{n}}}")));
            }
            if n < min {
                return Err(invalid(arg, format!("{{value_zero,{n}}}")));
            }
            Ok(Some(n))
        };
        int_arg("x-message-ttl", 0)?;
        int_arg("x-expires", 1)?;
        int_arg("x-max-length", 0)?;
        int_arg("x-max-length-bytes", 0)?;
        int_arg("x-delivery-limit", 0)?;
        if let Some(p) = int_arg("x-max-priority", 0)?
            && p > 255
        {
            return Err(invalid("x-max-priority", format!("{{max_value_exceeded,{p}}}")));
        }
        if let Some(v) = self.arguments.get("x-overflow")
            && !matches!(v.as_str(), Some("drop-head" | "reject-publish" | "reject-publish-dlx"))
        {
            return Err(invalid("x-overflow", "invalid_overflow".into()));
        }
        if let Some(v) = self.arguments.get("x-queue-type")
            && !matches!(v.as_str(), Some("classic" | "quorum"))
        {
            return Err(invalid(
                "x-queue-type",
                format!("\"unsupported queue type '{}'\"", v.display_value()),
            ));
        }
        if self.arguments.contains_key("x-dead-letter-routing-key")
            && !self.arguments.contains_key("x-dead-letter-exchange")
        {
            return Err(invalid(
                "x-dead-letter-routing-key",
                "routing_key_but_no_dlx_defined".into(),
            ));
        }
        if self.queue_type() == QueueType::Quorum {
            let property = |p: &str| {
                Error::broker(
                    406,
                    format!("PRECONDITION_FAILED - invalid property '{p}' for queue '{q}' in vhost '{vhost}'"),
                    Scope::Channel,
                )
            };
            if q.is_empty() {
                return Err(Error::broker(
                    406,
                    "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue",
                    Scope::Channel,
                ));
            }
            if !self.durable {
                return Err(property("non-durable"));
            }
            if self.exclusive {
                return Err(property("exclusive-owner"));
            }
            if self.auto_delete {
                return Err(property("auto-delete"));
            }
            for arg in ["x-max-priority", "x-queue-mode"] {
                if self.arguments.contains_key(arg) {
                    return Err(Error::broker(
                        406,
                        format!(
                            "PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '{vhost}' of queue type rabbit_quorum_queue"
                        ),
                        Scope::Channel,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that re-declaring `self` over `existing` is equivalent, as RabbitMQ 3.10 does
    /// (the `exclusive` flag is checked by the broker, which knows the owner).
    pub fn check_equivalent(&self, existing: &Queue, vhost: &str) -> Result<()> {
        for (arg, a, b) in [
            ("durable", self.durable, existing.durable),
            ("auto_delete", self.auto_delete, existing.auto_delete),
        ] {
            if a != b {
                return Err(Error::broker(
                    406,
                    format!(
                        "PRECONDITION_FAILED - inequivalent arg '{arg}' for queue '{}' in vhost '{vhost}': received '{a}' but current is '{b}'",
                        self.name
                    ),
                    Scope::Channel,
                ));
            }
        }
        // x-queue-type: a missing value is the same as classic.
        let qt = |q: &Queue| q.arguments.get("x-queue-type").cloned();
        let (mine, theirs) = (qt(self), qt(existing));
        let classic = Some(FieldValue::from("classic"));
        let same_type = match (&mine, &theirs) {
            (None, None) => true,
            (None, t) | (t, None) => *t == classic,
            (Some(a), Some(b)) => a.loose_eq(b),
        };
        if !same_type {
            return Err(inequivalent(
                "x-queue-type",
                "queue",
                &self.name,
                vhost,
                mine.as_ref(),
                theirs.as_ref(),
            ));
        }
        for arg in COMPARED_QUEUE_ARGS {
            compare_arg(arg, "queue", &self.name, vhost, &self.arguments, &existing.arguments)?;
        }
        Ok(())
    }
}

/// RabbitMQ's 406 for an argument `arg` it refuses on queue `queue` (a queue argument, or a
/// consumer argument such as `x-priority`), with `reason` as it words it.
pub fn invalid_argument(arg: &str, queue: &str, vhost: &str, reason: &str) -> Error {
    Error::broker(
        406,
        format!("PRECONDITION_FAILED - invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {reason}"),
        Scope::Channel,
    )
}

/// The integer `value` of argument `arg` on queue `queue`, or RabbitMQ's 406 when it is not an
/// integer.
pub fn integer_argument(arg: &str, value: &FieldValue, queue: &str, vhost: &str) -> Result<i64> {
    value.as_i64().ok_or_else(|| {
        invalid_argument(
            arg,
            queue,
            vhost,
            &format!("\"expected integer, got {}\"", value.type_name()),
        )
    })
}

/// Queue arguments RabbitMQ compares on re-declare; unknown arguments are ignored.
const COMPARED_QUEUE_ARGS: [&str; 10] = [
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-overflow",
    "x-delivery-limit",
    "x-single-active-consumer",
];
