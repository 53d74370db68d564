//! What a transport can do natively ([`Capabilities`]), and the RabbitMQ limits the embedded
//! broker shares.

/// What a transport can do natively; the framework emulates the rest or refuses clearly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The broker's OpenTelemetry `messaging.system` name: `rabbitmq`, or `memory` for the
    /// embedded broker.
    pub system: &'static str,
    /// Exchanges and bindings are native (else the core `Router` emulates them).
    pub native_exchanges: bool,
    /// Queues can dead-letter to an exchange (`x-dead-letter-exchange`).
    pub dead_letter_exchanges: bool,
    /// Per-queue and per-message TTL.
    pub message_ttl: bool,
    /// The longest delay the broker applies by itself, through
    /// [`Transport::publish_delayed`](crate::Transport::publish_delayed) (e.g. SQS
    /// `DelaySeconds`, up to 15 minutes). `None`: the framework delays through TTL wait queues
    /// and dead-letter exchanges, and does so for longer delays too.
    pub native_delay: Option<std::time::Duration>,
    /// The longest delay with which a delivery can be returned to its queue in place
    /// ([`Settle::RequeueAfter`](crate::Settle::RequeueAfter); SQS: its visibility timeout, up
    /// to 12 hours). A retry within it keeps the message where it is (and, on a FIFO queue,
    /// holds back the rest of its group) instead of publishing a copy. `None`: no such thing.
    pub redelivery_delay: Option<std::time::Duration>,
    /// Exclusive and auto-delete queues, and exclusive consumers.
    pub exclusive_queues: bool,
    /// Queue length limits (`x-max-length`, `x-max-length-bytes`, `x-overflow`).
    pub length_limits: bool,
    /// Consumer arguments: consumer priorities (`x-priority`) and single active consumer.
    pub consumer_arguments: bool,
    /// A queue delivers in order: competing consumers take turns, and a requeued message goes
    /// back to its place. (SQS standard queues deliver in about that order, not exactly.)
    pub ordered_queues: bool,
    /// Message priorities (`x-max-priority`).
    pub priorities: bool,
    /// [`DIRECT_REPLY_TO`] direct reply-to.
    pub direct_reply_to: bool,
    /// Quorum queues with `x-delivery-limit`.
    pub quorum_queues: bool,
    /// The largest body the broker accepts, in bytes.
    pub max_message_size: usize,
    /// The largest content-header frame: a message's properties (mostly its headers) must fit
    /// in [`frame_limit::max_properties_size`](crate::frame_limit::max_properties_size) of it.
    /// RabbitMQ's negotiated `frame_max`; the embedded broker applies RabbitMQ's default.
    pub frame_max: u32,
    /// How long a delivery may stay unacknowledged before the broker takes it back and
    /// redelivers it: RabbitMQ's `consumer_timeout` (30 minutes by default), after which it
    /// closes the consumer's channel. `None`: no limit (the embedded broker). The App warns at
    /// build when a consumer could hold a delivery longer.
    pub delivery_timeout: Option<std::time::Duration>,
}

/// The pseudo-queue of RabbitMQ's direct reply-to: a requester consumes it (no-ack) and puts it
/// in a request's `reply_to`; the responder sees a per-channel name that starts with it.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The largest body RabbitMQ 3.x accepts by default (`max_message_size`, 128 MiB), and the
/// embedded broker's default.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// RabbitMQ's default `consumer_timeout`: 30 minutes.
pub const RABBITMQ_CONSUMER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl Capabilities {
    /// The capabilities of a RabbitMQ 3.x broker (and of the embedded broker).
    pub fn rabbitmq() -> Self {
        Capabilities {
            system: "rabbitmq",
            native_exchanges: true,
            dead_letter_exchanges: true,
            message_ttl: true,
            native_delay: None,
            redelivery_delay: None,
            exclusive_queues: true,
            length_limits: true,
            consumer_arguments: true,
            ordered_queues: true,
            priorities: true,
            direct_reply_to: true,
            quorum_queues: true,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            frame_max: crate::DEFAULT_FRAME_MAX,
            delivery_timeout: Some(RABBITMQ_CONSUMER_TIMEOUT),
        }
    }
}
