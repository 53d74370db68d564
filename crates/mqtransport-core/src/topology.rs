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

use std::time::Duration;

use crate::error::{Error, Result, Scope};
use crate::field::{FieldTable, FieldValue};

/// The longest queue or exchange name AMQP can carry (a short string).
pub const MAX_NAME_LEN: usize = 255;

/// The kind of an exchange: how it routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// Routes to bindings whose key equals the routing key.
    Direct,
    /// Routes to every binding; the routing key is ignored.
    Fanout,
    /// Routes by pattern: `*` is one word, `#` zero or more, words separated by `.`.
    Topic,
    /// Routes by header values (`x-match` all/any).
    Headers,
}

impl ExchangeKind {
    /// The AMQP type name (`direct`, `fanout`, `topic`, `headers`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }

    /// Parses an AMQP type name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            other => {
                return Err(Error::broker(
                    503,
                    format!("COMMAND_INVALID - unknown exchange type '{other}'"),
                    Scope::Connection,
                ));
            }
        })
    }
}

/// An exchange declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The exchange name.
    pub name: String,
    /// How it routes.
    pub kind: ExchangeKind,
    /// Survives a broker restart (default `true`).
    pub durable: bool,
    /// Deleted when its last binding as a source is removed.
    pub auto_delete: bool,
    /// Cannot be published to directly, only through exchange-to-exchange bindings.
    pub internal: bool,
    /// Extra arguments (`alternate-exchange`, ...).
    pub arguments: FieldTable,
}

impl Exchange {
    /// A durable exchange of `kind`.
    pub fn new(name: impl Into<String>, kind: ExchangeKind) -> Self {
        Exchange {
            name: name.into(),
            kind,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        }
    }

    /// A durable direct exchange.
    pub fn direct(name: impl Into<String>) -> Self {
        Exchange::new(name, ExchangeKind::Direct)
    }

    /// A durable fanout exchange.
    pub fn fanout(name: impl Into<String>) -> Self {
        Exchange::new(name, ExchangeKind::Fanout)
    }

    /// A durable topic exchange.
    pub fn topic(name: impl Into<String>) -> Self {
        Exchange::new(name, ExchangeKind::Topic)
    }

    /// A durable headers exchange.
    pub fn headers(name: impl Into<String>) -> Self {
        Exchange::new(name, ExchangeKind::Headers)
    }

    /// Not durable.
    pub fn transient(mut self) -> Self {
        self.durable = false;
        self
    }

    /// Deleted when its last source binding goes.
    pub fn auto_delete(mut self) -> Self {
        self.auto_delete = true;
        self
    }

    /// Internal: only reachable through exchange-to-exchange bindings.
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    /// Unroutable messages go to `exchange` instead.
    pub fn alternate_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.arguments.insert("alternate-exchange", exchange.into());
        self
    }

    /// Sets an argument.
    pub fn argument(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.arguments.insert(key, value);
        self
    }

    /// The alternate exchange, if one is set.
    pub fn alternate(&self) -> Option<&str> {
        self.arguments.get("alternate-exchange").and_then(FieldValue::as_str)
    }

    /// Checks the name: at most 255 bytes, not the default exchange, no reserved `amq.` prefix.
    pub fn validate(&self) -> Result<()> {
        check_name_len("exchange", &self.name)?;
        if self.name.is_empty() {
            return Err(Error::broker(
                403,
                "ACCESS_REFUSED - operation not permitted on the default exchange",
                Scope::Channel,
            ));
        }
        if self.name.starts_with("amq.") && builtin_exchange(&self.name).is_none() {
            return Err(Error::broker(
                403,
                format!(
                    "ACCESS_REFUSED - exchange name '{}' contains reserved prefix 'amq.*'",
                    self.name
                ),
                Scope::Channel,
            ));
        }
        Ok(())
    }

    /// Checks that re-declaring `self` over `existing` is equivalent, as RabbitMQ does: type,
    /// durable, auto-delete, internal and `alternate-exchange` must match.
    pub fn check_equivalent(&self, existing: &Exchange, vhost: &str) -> Result<()> {
        let mismatch = |arg: &str, got: &str, cur: &str| {
            Error::broker(
                406,
                format!(
                    "PRECONDITION_FAILED - inequivalent arg '{arg}' for exchange '{}' in vhost '{vhost}': received '{got}' but current is '{cur}'",
                    self.name
                ),
                Scope::Channel,
            )
        };
        if self.kind != existing.kind {
            return Err(mismatch("type", self.kind.as_str(), existing.kind.as_str()));
        }
        for (arg, a, b) in [
            ("durable", self.durable, existing.durable),
            ("auto_delete", self.auto_delete, existing.auto_delete),
            ("internal", self.internal, existing.internal),
        ] {
            if a != b {
                return Err(mismatch(arg, &a.to_string(), &b.to_string()));
            }
        }
        compare_arg(
            "alternate-exchange",
            "exchange",
            &self.name,
            vhost,
            &self.arguments,
            &existing.arguments,
        )
    }
}

/// The exchanges every broker has, as `(name, kind)`.
pub const BUILTIN_EXCHANGES: [(&str, ExchangeKind); 5] = [
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

fn builtin_exchange(name: &str) -> Option<ExchangeKind> {
    BUILTIN_EXCHANGES.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

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
        let invalid = |arg: &str, reason: String| {
            Error::broker(
                406,
                format!("PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '{vhost}': {reason}"),
                Scope::Channel,
            )
        };
        let int_arg = |arg: &str, min: i64| -> Result<Option<i64>> {
            let Some(v) = self.arguments.get(arg) else {
                return Ok(None);
            };
            let Some(n) = v.as_i64() else {
                return Err(invalid(arg, format!("\"expected integer, got {}\"", v.type_name())));
            };
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

fn compare_arg(arg: &str, what: &str, name: &str, vhost: &str, mine: &FieldTable, theirs: &FieldTable) -> Result<()> {
    let (a, b) = (mine.get(arg), theirs.get(arg));
    let same = match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            // Numbers compare by value; a string never equals a number.
            let x_num = x.as_i64().is_some();
            let y_num = y.as_i64().is_some();
            x_num == y_num && x.loose_eq(y)
        }
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(inequivalent(arg, what, name, vhost, a, b))
    }
}

fn inequivalent(
    arg: &str,
    what: &str,
    name: &str,
    vhost: &str,
    got: Option<&FieldValue>,
    cur: Option<&FieldValue>,
) -> Error {
    let describe = |v: Option<&FieldValue>, full: bool| match v {
        None => "none".to_string(),
        Some(v) if full => format!("the value '{}' of type '{}'", v.display_value(), v.type_name()),
        Some(v) => format!("'{}'", v.display_value()),
    };
    // RabbitMQ spells out the type only when the other side is absent.
    let full = got.is_none() || cur.is_none();
    Error::broker(
        406,
        format!(
            "PRECONDITION_FAILED - inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received {} but current is {}",
            describe(got, full),
            describe(cur, full)
        ),
        Scope::Channel,
    )
}

fn check_name_len(what: &str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} name is {} bytes long, the maximum is {MAX_NAME_LEN}: '{}…'",
            name.len(),
            name.chars().take(32).collect::<String>()
        )));
    }
    Ok(())
}

fn duration_ms(d: Duration) -> FieldValue {
    int_value(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An integer argument as clients send it: int32 when it fits (RabbitMQ's `signedint`), else int64.
fn int_value(v: i64) -> FieldValue {
    match i32::try_from(v) {
        Ok(small) => FieldValue::I32(small),
        Err(_) => FieldValue::I64(v),
    }
}

/// What a binding routes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A queue, by name.
    Queue(String),
    /// An exchange, by name (an exchange-to-exchange binding).
    Exchange(String),
}

impl Destination {
    /// The destination's name.
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(n) | Destination::Exchange(n) => n,
        }
    }
}

/// A binding from a source exchange to a queue or another exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The exchange messages come from.
    pub source: String,
    /// Where they go.
    pub destination: Destination,
    /// The binding key (a pattern for topic exchanges).
    pub routing_key: String,
    /// Arguments (`x-match` and the header values for headers exchanges).
    pub arguments: FieldTable,
}

impl Binding {
    /// Binds `queue` to `exchange` with `routing_key`.
    pub fn queue(queue: impl Into<String>, exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        Binding {
            source: exchange.into(),
            destination: Destination::Queue(queue.into()),
            routing_key: routing_key.into(),
            arguments: FieldTable::new(),
        }
    }

    /// Binds exchange `destination` to exchange `source` with `routing_key`.
    pub fn exchange(destination: impl Into<String>, source: impl Into<String>, routing_key: impl Into<String>) -> Self {
        Binding {
            source: source.into(),
            destination: Destination::Exchange(destination.into()),
            routing_key: routing_key.into(),
            arguments: FieldTable::new(),
        }
    }

    /// Sets the binding arguments (for headers exchanges: `x-match` and the values to match).
    pub fn arguments(mut self, arguments: FieldTable) -> Self {
        self.arguments = arguments;
        self
    }

    /// Checks names and the default exchange rule.
    pub fn validate(&self) -> Result<()> {
        check_name_len("exchange", &self.source)?;
        check_name_len("binding destination", self.destination.name())?;
        if self.source.is_empty() || matches!(&self.destination, Destination::Exchange(d) if d.is_empty()) {
            return Err(Error::broker(
                403,
                "ACCESS_REFUSED - operation not permitted on the default exchange",
                Scope::Channel,
            ));
        }
        Ok(())
    }
}

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
