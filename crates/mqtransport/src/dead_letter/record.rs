//! One dead letter read back ([`DeadLetter`]) and which ones an operation applies to
//! ([`DeadLetterFilter`]).

use std::fmt;
use std::time::{Duration, SystemTime};

use mqtransport_core::{Envelope, FieldTable, FieldValue, headers};

/// A message in a dead-letter queue, with what is known about its failure.
///
/// Read from the framework's `x-mqt-*` headers when the App dead-lettered it, and from the
/// broker's `x-death` history when the broker did (a rejected, expired or over-length message
/// routed by a dead-letter exchange).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The message id.
    pub message_id: Option<String>,
    /// The message name (the `type` property).
    pub name: Option<String>,
    /// Why it failed: the handler's last error, or the broker's reason (`rejected`, `expired`,
    /// `maxlen`, `delivery_limit`) and queue.
    pub reason: String,
    /// The attempts made, when the App counted them.
    pub attempts: Option<u32>,
    /// When it failed for good.
    pub failed_at: Option<SystemTime>,
    /// The queue whose consumer gave up on it.
    pub queue: Option<String>,
    /// The exchange it was first published to (`""`: the default exchange).
    pub original_exchange: Option<String>,
    /// The routing key it was first published with.
    pub original_routing_key: Option<String>,
    /// How many times it was replayed from a dead-letter queue before.
    pub replays: u32,
    /// The message itself.
    pub envelope: Envelope,
}

impl DeadLetter {
    /// Reads what is known about a dead-lettered message.
    pub fn from_envelope(envelope: Envelope) -> Self {
        let text = |key: &str| envelope.header(key).and_then(FieldValue::as_str).map(str::to_owned);
        let death = first_death(&envelope);
        let death_text = |key: &str| {
            death
                .and_then(|d| d.get(key))
                .and_then(FieldValue::as_str)
                .map(str::to_owned)
        };
        let reason = text(headers::ERROR)
            .or_else(|| {
                let why = death_text("reason")?;
                Some(match death_text("queue") {
                    Some(q) => format!("{why} in queue '{q}' (dead-lettered by the broker)"),
                    None => format!("{why} (dead-lettered by the broker)"),
                })
            })
            .unwrap_or_else(|| "unknown: no x-mqt-error or x-death header".to_owned());
        let failed_at = envelope
            .header(headers::FAILED_AT)
            .and_then(FieldValue::as_i64)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
            .or_else(|| match death.and_then(|d| d.get("time")) {
                Some(FieldValue::Timestamp(secs)) => Some(SystemTime::UNIX_EPOCH + Duration::from_secs(*secs)),
                _ => None,
            });
        let original_routing_key = text(headers::ORIGINAL_ROUTING_KEY).or_else(|| {
            death
                .and_then(|d| d.get("routing-keys"))
                .and_then(FieldValue::as_array)
                .and_then(|keys| keys.first())
                .and_then(FieldValue::as_str)
                .map(str::to_owned)
        });
        DeadLetter {
            message_id: envelope.properties().message_id.clone(),
            name: envelope.properties().kind.clone(),
            reason,
            attempts: envelope
                .header(headers::ATTEMPT)
                .and_then(FieldValue::as_i64)
                .and_then(|n| u32::try_from(n).ok()),
            failed_at,
            queue: text(headers::ORIGINAL_QUEUE).or_else(|| death_text("queue")),
            original_exchange: text(headers::ORIGINAL_EXCHANGE).or_else(|| death_text("exchange")),
            original_routing_key,
            replays: replays_of(&envelope),
            envelope,
        }
    }

    /// The body for people: pretty-printed when it is JSON, the text when it is UTF-8, else
    /// its size.
    pub fn body_text(&self) -> String {
        let body = &self.envelope.body;
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body)
            && let Ok(pretty) = serde_json::to_string_pretty(&json)
        {
            return pretty;
        }
        match std::str::from_utf8(body) {
            Ok(text) => text.to_owned(),
            Err(_) => format!("({} bytes, not UTF-8)", body.len()),
        }
    }
}

impl fmt::Display for DeadLetter {
    /// One line: id, name, the queue it failed in and why.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) from queue '{}': {}",
            self.message_id.as_deref().unwrap_or("(no id)"),
            self.name.as_deref().unwrap_or("no name"),
            self.queue.as_deref().unwrap_or("?"),
            self.reason
        )
    }
}

/// The replay count a message carries (`x-mqt-replayed`, 0 when absent or nonsense).
pub(crate) fn replays_of(envelope: &Envelope) -> u32 {
    envelope
        .header(headers::REPLAYED)
        .and_then(FieldValue::as_i64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// The most recent entry of the broker's `x-death` history (RabbitMQ keeps it first).
fn first_death(envelope: &Envelope) -> Option<&FieldTable> {
    envelope
        .header(headers::X_DEATH)
        .and_then(FieldValue::as_array)
        .and_then(|deaths| deaths.first())
        .and_then(FieldValue::as_table)
}

/// Which dead letters an operation applies to; every condition set must hold. The default
/// matches every dead letter.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use mqtransport::DeadLetterFilter;
///
/// let filter = DeadLetterFilter::new()
///     .name("orders.created")
///     .reason_contains("timeout")
///     .failed_after(SystemTime::now() - Duration::from_secs(3600));
/// # let _ = filter;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    names: Vec<String>,
    reason: Option<String>,
    after: Option<SystemTime>,
    before: Option<SystemTime>,
    message_ids: Vec<String>,
}

impl DeadLetterFilter {
    /// Matches every dead letter.
    pub fn new() -> Self {
        DeadLetterFilter::default()
    }

    /// Only messages called `name` (several calls: any of them).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// Only messages whose reason contains `text`.
    pub fn reason_contains(mut self, text: impl Into<String>) -> Self {
        self.reason = Some(text.into());
        self
    }

    /// Only messages that failed at or after `time` (a message with no recorded time does not
    /// match).
    pub fn failed_after(mut self, time: SystemTime) -> Self {
        self.after = Some(time);
        self
    }

    /// Only messages that failed before `time` (a message with no recorded time does not
    /// match).
    pub fn failed_before(mut self, time: SystemTime) -> Self {
        self.before = Some(time);
        self
    }

    /// Only the message with id `id` (several calls: any of them).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_ids.push(id.into());
        self
    }

    /// Only the messages with these ids.
    pub fn message_ids<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.message_ids.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Whether it matches every dead letter.
    pub fn is_everything(&self) -> bool {
        *self == DeadLetterFilter::default()
    }

    /// Whether `letter` matches.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let any_of = |wanted: &[String], value: &Option<String>| {
            wanted.is_empty() || value.as_ref().is_some_and(|v| wanted.contains(v))
        };
        any_of(&self.names, &letter.name)
            && any_of(&self.message_ids, &letter.message_id)
            && self.reason.as_ref().is_none_or(|r| letter.reason.contains(r.as_str()))
            && self.after.is_none_or(|t| letter.failed_at.is_some_and(|at| at >= t))
            && self.before.is_none_or(|t| letter.failed_at.is_some_and(|at| at < t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framework_dead_letter() -> Envelope {
        let mut e = Envelope::new(r#"{"id":1}"#)
            .with_header(headers::ERROR, "gave up after 3 attempt(s): boom")
            .with_header(headers::ATTEMPT, 3i64)
            .with_header(headers::FAILED_AT, 1_700_000_000_000i64)
            .with_header(headers::ORIGINAL_QUEUE, "orders")
            .with_header(headers::ORIGINAL_EXCHANGE, "")
            .with_header(headers::ORIGINAL_ROUTING_KEY, "orders")
            .with_header(headers::REPLAYED, 2i64);
        e.properties_mut().kind = Some("orders.created".into());
        e.properties_mut().message_id = Some("m-1".into());
        e
    }

    #[test]
    fn the_framework_headers_tell_the_story() {
        let d = DeadLetter::from_envelope(framework_dead_letter());
        assert_eq!(d.reason, "gave up after 3 attempt(s): boom");
        assert_eq!(d.attempts, Some(3));
        assert_eq!(d.queue.as_deref(), Some("orders"));
        assert_eq!(d.replays, 2);
        assert_eq!(
            d.failed_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
        );
        assert_eq!(d.body_text(), "{\n  \"id\": 1\n}");
    }

    #[test]
    fn a_broker_dead_letter_is_read_from_x_death() {
        let death = FieldTable::new()
            .with("reason", "expired")
            .with("queue", "jobs")
            .with("exchange", "work")
            .with("time", FieldValue::Timestamp(1_700_000_000))
            .with("routing-keys", FieldValue::Array(vec!["jobs.eu".into()]));
        let e = Envelope::new(vec![0xff, 0xfe]).with_header(headers::X_DEATH, FieldValue::Array(vec![death.into()]));
        let d = DeadLetter::from_envelope(e);
        assert_eq!(d.reason, "expired in queue 'jobs' (dead-lettered by the broker)");
        assert_eq!(d.queue.as_deref(), Some("jobs"));
        assert_eq!(d.original_exchange.as_deref(), Some("work"));
        assert_eq!(d.original_routing_key.as_deref(), Some("jobs.eu"));
        assert_eq!(d.attempts, None);
        assert_eq!(d.body_text(), "(2 bytes, not UTF-8)");
    }

    #[test]
    fn every_condition_of_a_filter_must_hold() {
        let d = DeadLetter::from_envelope(framework_dead_letter());
        let at = d.failed_at.unwrap();
        assert!(DeadLetterFilter::new().matches(&d));
        assert!(DeadLetterFilter::new().name("x").name("orders.created").matches(&d));
        assert!(!DeadLetterFilter::new().name("x").matches(&d));
        assert!(DeadLetterFilter::new().reason_contains("boom").matches(&d));
        assert!(
            !DeadLetterFilter::new()
                .reason_contains("boom")
                .message_id("m-2")
                .matches(&d)
        );
        assert!(
            DeadLetterFilter::new()
                .failed_after(at)
                .failed_before(at + Duration::from_millis(1))
                .matches(&d)
        );
        assert!(!DeadLetterFilter::new().failed_before(at).matches(&d));
        assert!(DeadLetterFilter::new().is_everything());
    }
}
