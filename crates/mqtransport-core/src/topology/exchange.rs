//! [`Exchange`] and [`ExchangeKind`].

use super::rules::{check_name_len, compare_arg};
use crate::error::{Error, Result, Scope};
use crate::field::{FieldTable, FieldValue};

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
