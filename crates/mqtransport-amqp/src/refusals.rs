//! Keeping one publish's refusal from failing its neighbours. RabbitMQ refuses some publishes by
//! closing the channel they came on (a missing or internal exchange, a malformed `expiration`
//! or `CC`), and lapin then fails every publish awaiting a confirm on that channel with the
//! same error, although most of them were not refused (and some were even enqueued).
//!
//! So the publisher first checks what it can before sending ([`publish_rules`] for the
//! properties; a passive declare before the first publish to each exchange), and when the
//! channel is closed all the same (an exchange deleted since), it [`blame`]s the refusal on the
//! publishes it names and sends the others again on a new channel, as after a lost connection.
//!
//! [`publish_rules`]: mqtransport_core::publish_rules

use std::sync::{Mutex, PoisonError};

use mqtransport_core::Error;
use mqtransport_core::hash::FxHashSet;
use mqtransport_core::topology::BUILTIN_EXCHANGES;

use crate::confirms::Outgoing;

/// Exchanges known to exist: seen by a passive declare before a first publish to them.
#[derive(Default)]
pub(crate) struct KnownExchanges(Mutex<FxHashSet<String>>);

impl KnownExchanges {
    /// Whether `exchange` needs no check before a publish: the default exchange, a built-in
    /// one, or one already seen.
    pub(crate) fn knows(&self, exchange: &str) -> bool {
        exchange.is_empty()
            || BUILTIN_EXCHANGES.iter().any(|(name, _)| *name == exchange)
            || self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(exchange)
    }

    /// Remembers that `exchange` exists.
    pub(crate) fn learn(&self, exchange: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(exchange.to_owned());
    }

    /// Forgets `exchange` (it was deleted): the next publish to it checks it again.
    pub(crate) fn forget(&self, exchange: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(exchange);
    }
}

/// Whose fault a channel-closing refusal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    /// The refusal names this publish (its exchange, its expiration).
    This,
    /// The refusal names something this publish does not have: another publish caused it.
    Other,
    /// The refusal does not say.
    Unknown,
}

/// Whose fault the channel-closing `refusal` is, as far as its text tells, for the publish
/// `outgoing` that was on the channel. RabbitMQ names the exchange or the expiration it
/// refused; a text cut short (past 255 bytes) names nothing for certain.
pub(crate) fn blame(refusal: &Error, outgoing: &Outgoing) -> Blame {
    let text = refusal.message();
    if text.ends_with("...") {
        return Blame::Unknown;
    }
    let names = |what: &str, value: &str| text.contains(&format!("{what} '{value}'"));
    let by = |this: bool| if this { Blame::This } else { Blame::Other };
    match refusal.reply_code() {
        Some(404) if text.starts_with("NOT_FOUND - no exchange '") => by(names("exchange", &outgoing.exchange)),
        Some(403) if text.starts_with("ACCESS_REFUSED - cannot publish to internal exchange '") => {
            by(names("exchange", &outgoing.exchange))
        }
        Some(406) if text == "PRECONDITION_FAILED - fast reply consumer does not exist" => by(outgoing
            .properties
            .reply_to()
            .as_ref()
            .is_some_and(|r| r.as_str() == mqtransport_core::DIRECT_REPLY_TO)),
        Some(406) if text.starts_with("PRECONDITION_FAILED - invalid expiration '") => {
            let expiration = outgoing.properties.expiration().as_ref().map(|e| e.as_str());
            by(expiration.is_some_and(|e| names("expiration", e)))
        }
        _ => Blame::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use lapin::BasicProperties;
    use mqtransport_core::{Scope, ShortStr};

    fn to(exchange: &str, expiration: Option<&str>) -> Outgoing {
        let mut properties = BasicProperties::default();
        if let Some(e) = expiration {
            properties = properties.with_expiration(e.into());
        }
        Outgoing {
            exchange: ShortStr::from(exchange),
            routing_key: ShortStr::from("k"),
            mandatory: true,
            body: Bytes::from_static(b"m"),
            properties,
        }
    }

    #[test]
    fn a_refusal_is_blamed_on_the_publish_it_names() {
        let missing = Error::broker(404, "NOT_FOUND - no exchange 'x' in vhost '/'", Scope::Channel);
        assert_eq!(blame(&missing, &to("x", None)), Blame::This);
        assert_eq!(blame(&missing, &to("x2", None)), Blame::Other);
        assert_eq!(blame(&missing, &to("", None)), Blame::Other);
        let internal = Error::broker(
            403,
            "ACCESS_REFUSED - cannot publish to internal exchange 'i' in vhost '/'",
            Scope::Channel,
        );
        assert_eq!(blame(&internal, &to("i", None)), Blame::This);
        assert_eq!(blame(&internal, &to("j", None)), Blame::Other);
        let expiration = Error::broker(
            406,
            "PRECONDITION_FAILED - invalid expiration 'abc': no_integer",
            Scope::Channel,
        );
        assert_eq!(blame(&expiration, &to("", Some("abc"))), Blame::This);
        assert_eq!(blame(&expiration, &to("", Some("100"))), Blame::Other);
        assert_eq!(blame(&expiration, &to("", None)), Blame::Other);
        let other = Error::broker(406, "PRECONDITION_FAILED - something else", Scope::Channel);
        assert_eq!(blame(&other, &to("x", None)), Blame::Unknown);
        let cut = Error::broker(
            404,
            format!("NOT_FOUND - no exchange '{}'", "n".repeat(300)),
            Scope::Channel,
        );
        assert_eq!(blame(&cut, &to("x", None)), Blame::Unknown);
    }

    #[test]
    fn known_exchanges() {
        let known = KnownExchanges::default();
        assert!(known.knows("") && known.knows("amq.topic"));
        assert!(!known.knows("x"));
        known.learn("x");
        assert!(known.knows("x"));
        known.forget("x");
        assert!(!known.knows("x"));
    }
}
