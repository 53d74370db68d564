//! A queue's arguments (`x-message-ttl`, `x-max-length`, `x-dead-letter-exchange`, …), parsed
//! once when it is declared.

use std::time::Duration;

use mqtransport_core::{Envelope, FieldValue, Queue, QueueType};
use tokio::time::Instant;

/// Parsed queue arguments.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) kind: QueueType,
    pub(crate) ttl: Option<Duration>,
    pub(crate) max_len: Option<usize>,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) overflow: Overflow,
    pub(crate) dlx: Option<String>,
    pub(crate) dlrk: Option<String>,
    pub(crate) delivery_limit: Option<u32>,
    pub(crate) max_priority: Option<u8>,
    pub(crate) expires: Option<Duration>,
    /// `x-single-active-consumer`.
    pub(crate) single_active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

impl Config {
    pub(crate) fn of(q: &Queue) -> Self {
        let args = &q.arguments;
        let int = |k: &str| {
            args.get(k)
                .and_then(FieldValue::as_i64)
                .and_then(|v| u64::try_from(v).ok())
        };
        let text = |k: &str| args.get(k).and_then(FieldValue::as_str).map(str::to_owned);
        Config {
            kind: q.queue_type(),
            ttl: int("x-message-ttl").map(Duration::from_millis),
            max_len: int("x-max-length").map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
            max_bytes: int("x-max-length-bytes").map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
            overflow: match text("x-overflow").as_deref() {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            dlx: text("x-dead-letter-exchange"),
            dlrk: text("x-dead-letter-routing-key"),
            delivery_limit: int("x-delivery-limit").map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            max_priority: int("x-max-priority").map(|v| u8::try_from(v).unwrap_or(u8::MAX)),
            expires: int("x-expires").map(Duration::from_millis),
            single_active: args.get("x-single-active-consumer") == Some(&FieldValue::Bool(true)),
        }
    }

    /// When a message published at `now` expires: the lower of the queue's TTL and the
    /// message's own `expiration`, if either is set.
    pub(crate) fn expires_at(&self, envelope: &Envelope, now: Instant) -> Option<Instant> {
        let per_message = envelope
            .properties()
            .expiration
            .as_deref()
            .and_then(|e| e.parse::<u64>().ok())
            .map(Duration::from_millis);
        let ttl = match (self.ttl, per_message) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ttl.map(|t| now + t)
    }
}
