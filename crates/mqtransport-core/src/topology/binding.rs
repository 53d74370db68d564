//! [`Binding`] and its [`Destination`].

use super::rules::check_name_len;
use crate::error::{Error, Result, Scope};
use crate::field::FieldTable;

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
