//! Dead-lettering as RabbitMQ 3.10 does it: the reasons, the `x-death` history a dead letter
//! carries, and the rule that drops a dead letter going round a cycle of expiries.

use std::time::SystemTime;

use mqtransport_core::envelope::headers::X_DEATH;
use mqtransport_core::{Envelope, FieldTable, FieldValue, ShortStr};

use super::message::MsgData;

/// Why a message was dead-lettered (the `x-death` reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Rejected,
    Expired,
    MaxLen,
    DeliveryLimit,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::MaxLen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message leaving a queue for its dead-letter exchange.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub(crate) exchange: ShortStr,
    pub(crate) routing_keys: Vec<ShortStr>,
    pub(crate) envelope: Envelope,
}

impl DeadLetter {
    /// `data`, dead in queue `queue` (whose name is `key` as a routing key) for `reason`, on
    /// its way to exchange `dlx`: routed by `dlrk` if the queue sets one (and then without its
    /// `CC` header), else by every key it was published with (`CC` and `BCC` keys too); its
    /// `expiration` removed and its death recorded with the routing key and `CC` keys, as
    /// RabbitMQ 3.10 does.
    pub(crate) fn of(
        data: MsgData,
        reason: Reason,
        queue: &str,
        key: &ShortStr,
        dlx: &str,
        dlrk: Option<&str>,
    ) -> Self {
        let MsgData { mut envelope, route } = data;
        let (exchange, routing_key, cc, bcc) = route.parts(key);
        let mut keys = Vec::with_capacity(1 + cc.len() + bcc.len());
        keys.push(routing_key.clone());
        keys.extend(cc.iter().cloned());
        let expiration = envelope.properties_mut().expiration.take();
        record_death(envelope.headers_mut(), queue, reason, exchange, &keys, expiration);
        let routing_keys = match dlrk {
            Some(k) => {
                envelope.headers_mut().remove("CC");
                vec![ShortStr::from(k)]
            }
            None => {
                keys.extend(bcc.iter().cloned());
                keys
            }
        };
        DeadLetter {
            exchange: ShortStr::from(dlx),
            routing_keys,
            envelope,
        }
    }
}

/// Updates `x-death` the way RabbitMQ 3.10 writes it: a first entry in the order it was
/// observed, an entry added or updated later sorted by key and moved to the front, counted by
/// (queue, reason); pinned by the conformance scenarios `reject_dead_letters_with_x_death` and
/// `retry_loop_counts_deaths`.
fn record_death(
    headers: &mut FieldTable,
    queue: &str,
    reason: Reason,
    exchange: &str,
    keys: &[ShortStr],
    expiration: Option<String>,
) {
    let time = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let keys_value = FieldValue::Array(keys.iter().map(|k| FieldValue::from(k.as_str())).collect());
    let mut deaths: Vec<FieldValue> = match headers.get(X_DEATH) {
        Some(FieldValue::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let first = deaths.is_empty();
    let same = |d: &FieldValue| {
        d.as_table().is_some_and(|t| {
            t.get("queue").and_then(FieldValue::as_str) == Some(queue)
                && t.get("reason").and_then(FieldValue::as_str) == Some(reason.as_str())
        })
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let FieldValue::Table(mut t) = deaths.remove(i) else {
                return;
            };
            let count = t.get("count").and_then(FieldValue::as_i64).unwrap_or(0) + 1;
            t.insert("count", count);
            t.sort_by_key();
            t
        }
        None => {
            let mut t = FieldTable::new()
                .with("count", 1i64)
                .with("reason", reason.as_str())
                .with("queue", queue)
                .with("time", FieldValue::Timestamp(time))
                .with("exchange", exchange)
                .with("routing-keys", keys_value);
            if let Some(e) = expiration {
                t.insert("original-expiration", e);
            }
            if !first {
                t.sort_by_key();
            }
            t
        }
    };
    deaths.insert(0, FieldValue::Table(entry));
    headers.insert(X_DEATH, FieldValue::Array(deaths));
    for (k, v) in [
        ("x-first-death-exchange", exchange),
        ("x-first-death-queue", queue),
        ("x-first-death-reason", reason.as_str()),
    ] {
        if !headers.contains_key(k) {
            headers.insert(k, v);
        }
    }
}

/// RabbitMQ's cycle rule: delivering a dead letter to `queue` is a cycle when `queue` already
/// appears in its `x-death` and no death on the way since was a rejection.
pub(crate) fn is_cycle(queue: &str, envelope: &Envelope) -> bool {
    let Some(FieldValue::Array(deaths)) = envelope.header(X_DEATH) else {
        return false;
    };
    for d in deaths {
        let Some(t) = d.as_table() else { continue };
        if t.get("reason").and_then(FieldValue::as_str) == Some("rejected") {
            return false;
        }
        if t.get("queue").and_then(FieldValue::as_str) == Some(queue) {
            return true;
        }
    }
    false
}
