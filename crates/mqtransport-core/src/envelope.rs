//! The message as it travels: properties, headers and a `Bytes` body.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::field::FieldTable;

/// AMQP delivery mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    /// Mode 1: kept in memory only.
    Transient,
    /// Mode 2: written to disk by a durable queue.
    Persistent,
}

impl DeliveryMode {
    /// The wire value (1 or 2).
    pub fn as_u8(self) -> u8 {
        match self {
            DeliveryMode::Transient => 1,
            DeliveryMode::Persistent => 2,
        }
    }
}

/// The 14 AMQP 0-9-1 basic properties. Each is optional; a property that was not set is not sent.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Properties {
    /// MIME type of the body, e.g. `application/json`.
    pub content_type: Option<String>,
    /// Encoding of the body, e.g. `gzip`.
    pub content_encoding: Option<String>,
    /// Headers. `None` (no table) and an empty table are different on the wire and both kept.
    pub headers: Option<FieldTable>,
    /// Transient or persistent.
    pub delivery_mode: Option<DeliveryMode>,
    /// Message priority (0-255; queues with `x-max-priority` honour it).
    pub priority: Option<u8>,
    /// Correlates a reply with its request.
    pub correlation_id: Option<String>,
    /// Where replies go.
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as a decimal string (AMQP's own encoding).
    pub expiration: Option<String>,
    /// Application message id (mqtransport sends UUIDv7).
    pub message_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// The message type; mqtransport puts the message name here.
    pub kind: Option<String>,
    /// The authenticated user that published (checked by RabbitMQ).
    pub user_id: Option<String>,
    /// The publishing application.
    pub app_id: Option<String>,
    /// Deprecated by AMQP; carried unchanged.
    pub cluster_id: Option<String>,
}

const NO_PROPERTIES: Properties = Properties {
    content_type: None,
    content_encoding: None,
    headers: None,
    delivery_mode: None,
    priority: None,
    correlation_id: None,
    reply_to: None,
    expiration: None,
    message_id: None,
    timestamp: None,
    kind: None,
    user_id: None,
    app_id: None,
    cluster_id: None,
};

/// A message: properties (with headers) and an opaque body.
///
/// Cloning is cheap and never allocates: the body is a shared `Bytes` and the properties are
/// shared copy-on-write, so a broker can hand the same message to a consumer and keep it for a
/// requeue without copying. A message with no properties carries none at all.
///
/// ```
/// use mqtransport_core::{Envelope, FieldValue};
///
/// let env = Envelope::new("hello")
///     .with_kind("greeting")
///     .with_header("x-mqt-attempt", 1i32);
/// assert_eq!(env.header("x-mqt-attempt"), Some(&FieldValue::I32(1)));
/// assert_eq!(env.properties().kind.as_deref(), Some("greeting"));
/// ```
#[derive(Clone, Default)]
pub struct Envelope {
    /// `None` means every property is unset.
    properties: Option<Arc<Properties>>,
    /// The body, shared without copying.
    pub body: Bytes,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.properties() == other.properties()
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("properties", self.properties())
            .field("body", &self.body)
            .finish()
    }
}

impl Envelope {
    /// An envelope with `body` and no properties.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Envelope {
            properties: None,
            body: body.into(),
        }
    }

    /// An envelope with `body` and `properties`.
    pub fn with_properties(body: impl Into<Bytes>, properties: Properties) -> Self {
        Envelope {
            properties: Some(Arc::new(properties)),
            body: body.into(),
        }
    }

    /// The properties (all unset for a message that has none).
    #[inline]
    pub fn properties(&self) -> &Properties {
        self.properties.as_deref().unwrap_or(&NO_PROPERTIES)
    }

    /// The properties for changing; copied first if another clone of the envelope shares them.
    pub fn properties_mut(&mut self) -> &mut Properties {
        Arc::make_mut(self.properties.get_or_insert_with(Default::default))
    }

    /// The header `key`, if the message has headers and that key.
    pub fn header(&self, key: &str) -> Option<&crate::field::FieldValue> {
        self.properties().headers.as_ref()?.get(key)
    }

    /// The header table, created empty if the message had none.
    pub fn headers_mut(&mut self) -> &mut FieldTable {
        self.properties_mut().headers.get_or_insert_with(FieldTable::new)
    }

    /// Sets a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<crate::field::FieldValue>) -> Self {
        self.headers_mut().insert(key, value);
        self
    }

    /// Sets the message type (the message name).
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.properties_mut().kind = Some(kind.into());
        self
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.properties_mut().content_type = Some(content_type.into());
        self
    }

    /// Sets the message id.
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.properties_mut().message_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.properties_mut().correlation_id = Some(id.into());
        self
    }

    /// Sets the reply-to address.
    pub fn with_reply_to(mut self, reply_to: impl Into<String>) -> Self {
        self.properties_mut().reply_to = Some(reply_to.into());
        self
    }

    /// Sets the per-message TTL.
    pub fn with_expiration(mut self, ttl: std::time::Duration) -> Self {
        self.properties_mut().expiration = Some(ttl.as_millis().to_string());
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.properties_mut().priority = Some(priority);
        self
    }

    /// Marks the message persistent.
    pub fn persistent(mut self) -> Self {
        self.properties_mut().delivery_mode = Some(DeliveryMode::Persistent);
        self
    }
}

/// Header names the framework writes, all under one prefix, plus the W3C trace context.
pub mod headers {
    /// Prefix of every header mqtransport itself writes.
    pub const PREFIX: &str = "x-mqt-";
    /// How many times the message has been attempted (1 on the first delivery).
    pub const ATTEMPT: &str = "x-mqt-attempt";
    /// The error that sent the message to a retry or dead-letter queue.
    pub const ERROR: &str = "x-mqt-error";
    /// The exchange the message was first published to.
    pub const ORIGINAL_EXCHANGE: &str = "x-mqt-original-exchange";
    /// The routing key the message was first published with.
    pub const ORIGINAL_ROUTING_KEY: &str = "x-mqt-original-routing-key";
    /// The queue the message failed in.
    pub const ORIGINAL_QUEUE: &str = "x-mqt-original-queue";
    /// Headers dropped from a retry or dead-letter copy so that it fits in a frame
    /// (comma-separated names; see [`Properties::fit_frame`](crate::Properties::fit_frame)).
    pub const DROPPED: &str = "x-mqt-dropped-headers";
    /// Set by a transport on a delivery whose properties it could not read as sent (e.g. a
    /// short string that is not UTF-8, or headers nested too deep): why. The App dead-letters
    /// such a delivery without running a handler.
    pub const UNREADABLE: &str = "x-mqt-unreadable";
    /// With [`UNREADABLE`]: the delivery's property list exactly as the broker sent it, when it
    /// fits in the frame.
    pub const UNREADABLE_PROPERTIES: &str = "x-mqt-unreadable-properties";
    /// On a request: when its caller gives up waiting for the reply (milliseconds since the
    /// Unix epoch). A responder skips a request past it.
    pub const DEADLINE: &str = "x-mqt-deadline";
    /// On a reply: the request failed at the responder (it was dead-lettered: its handler
    /// failed for good, or it could not be read); the value is why.
    pub const RPC_ERROR: &str = "x-mqt-rpc-error";
    /// With [`RPC_ERROR`]: `handler` when the responder's handler failed, `rejected` when the
    /// request could not be read or dispatched (malformed, invalid, no handler for its name).
    pub const RPC_FAILURE: &str = "x-mqt-rpc-failure";
    /// On a dead letter: when it failed for good (milliseconds since the Unix epoch).
    pub const FAILED_AT: &str = "x-mqt-failed-at";
    /// How many times the message was replayed from a dead-letter queue.
    pub const REPLAYED: &str = "x-mqt-replayed";
    /// On a delayed message: the queue it is delivered to when its delay is over.
    pub const DELAY_QUEUE: &str = "x-mqt-delay-queue";
    /// On a delayed message: the exchange it is published to when its delay is over (with its
    /// own routing key).
    pub const DELAY_EXCHANGE: &str = "x-mqt-delay-exchange";
    /// Prefix of the delay's level headers: `x-mqt-delay-level-<n>` is present on a delayed
    /// message whose delay in milliseconds has bit `n` set.
    pub const DELAY_LEVEL_PREFIX: &str = "x-mqt-delay-level-";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    /// RabbitMQ's dead-letter history.
    pub const X_DEATH: &str = "x-death";
    /// How many times the broker has handed this message out, this time included (SQS's
    /// `ApproximateReceiveCount`); set by transports whose retries redeliver the message in
    /// place, so that the attempt is [`ATTEMPT`] plus the deliveries before this one.
    pub const RECEIVE_COUNT: &str = "x-mqt-receive-count";
    /// The message group of a message to a FIFO queue (SQS `MessageGroupId`): messages of one
    /// group are delivered in order, one at a time; groups go on independently.
    pub const GROUP_ID: &str = "x-mqt-group-id";
    /// Quorum queues' redelivery counter.
    pub const X_DELIVERY_COUNT: &str = "x-delivery-count";
}
