//! # mqtransport-amqp
//!
//! The RabbitMQ transport of mqtransport (`amqp://`, `amqps://`), on lapin. lapin's types stay
//! inside this crate; `mqtransport_amqp::lapin` is the explicit escape hatch.
//!
//! ```
//! use mqtransport_amqp::{AmqpOptions, AmqpTransport, Unconfirmed};
//! use mqtransport_core::{BrokerUrl, ErrorKind};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mqtransport_core::Result<()> {
//! let options = AmqpOptions {
//!     confirm_timeout: Duration::from_secs(5),
//!     unconfirmed: Unconfirmed::Fail, // a publish lost with its connection fails instead of being re-sent
//!     ..AmqpOptions::default()
//! };
//! // Nothing listens on port 1: the first connect fails at once, and its error names the
//! // broker without the password.
//! let url = BrokerUrl::parse("amqp://app:s3cret@127.0.0.1:1/%2f")?;
//! let err = AmqpTransport::connect_with(&url, options).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Connection);
//! assert!(err.message().contains("amqp://app:***@127.0.0.1:1"), "{err}");
//! assert!(!err.message().contains("s3cret"));
//! # Ok(())
//! # }
//! ```
//!
//! With a broker, the transport is used through the core [`Transport`](mqtransport_core::Transport)
//! trait (or, in applications, through the `mqtransport` facade's `App`):
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use mqtransport_amqp::AmqpTransport;
//! use mqtransport_core::{BrokerUrl, ConsumeOptions, Envelope, Publish, Queue, Topology, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mqtransport_core::Result<()> {
//! let rabbit = AmqpTransport::connect(&BrokerUrl::parse("amqp://guest:guest@127.0.0.1:5672/%2f")?).await?;
//! rabbit.declare(&Topology::new().queue(Queue::durable("greetings"))).await?;
//! rabbit.publish(Publish::to_queue("greetings", Envelope::new("hello"))).await?; // confirmed
//! let mut consumer = rabbit.consume("greetings", ConsumeOptions::default().prefetch(10)).await?;
//! if let Some(delivery) = consumer.next().await {
//!     delivery?.ack().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## How it works
//!
//! - Publishers and consumers use separate connections (a blocked connection stops acks too),
//!   named `mqtransport-…` so they can be found in `rabbitmqctl list_connections`.
//! - Publishing: publisher confirms always on, pipelined on one channel with a bounded window of
//!   unconfirmed publishes ([`AmqpOptions::max_unconfirmed`]); mandatory by default, so an
//!   unroutable message comes back as [`Confirmation::Returned`] to the caller that sent it
//!   (a `basic.return` carries no delivery tag and lapin pairs it with whichever confirm comes
//!   next, so a per-channel ledger matches returns to publishes by content and settles each
//!   publish only once no other confirm can still carry its return); a confirm that never arrives
//!   fails with [`ErrorKind::Timeout`] after the configured timeout (30 s by default), and no step
//!   of a publish waits past it.
//! - Consuming: one channel per consumer with its QoS, polled directly by the application's
//!   stream; acks are coalesced into `multiple = true` over contiguous delivery tags by a
//!   per-channel task, which sends whatever has queued up at once (no timer).
//! - Declarations and `basic.get` use their own channels, so a failed declare cannot requeue
//!   deliveries taken with `get`; a channel closed by an error is reopened on next use.
//!
//! - Recovery is owned here, not by lapin: each connection is supervised; when it is lost the
//!   transport reconnects with exponential backoff and jitter, re-declares the topology it
//!   declared (server-named queues get new names, and their bindings and consumers move with
//!   them), re-opens every consumer with its QoS behind the same [`Subscription`] stream, and
//!   re-sends publishes that were unconfirmed at the loss ([`Unconfirmed`]). Publishes during an
//!   outage wait up to the confirm timeout, then fail with [`ErrorKind::Timeout`]. Deliveries
//!   unacknowledged at the loss come back redelivered; settling the old ones reports
//!   [`ErrorKind::Closed`]. A consumer cancelled by the broker or whose channel the broker
//!   closed (a consumer timeout; a refused request on the direct reply-to channel) is resumed
//!   while its queue exists; a queue that was deleted ends the stream with
//!   [`ErrorKind::NotFound`], as on every transport, even one this transport declared (it is
//!   declared again only with the rest of the topology after a reconnect).
//!   The direct reply-to consumer's stream yields an [`ErrorKind::Connection`] error when its
//!   channel is lost (replies to requests sent on it cannot arrive), then goes on with the
//!   next channel: a requester fails its waiting calls at once instead of at their deadlines.
//!   This starts when the stream is next polled (a consumer being awaited is woken at once), or
//!   for the reply consumer when a request needs its channel. `connection.blocked` shows in
//!   [`AmqpTransport::state`].
//! - TLS (`amqps://`) with the `tls` feature: rustls with the ring provider, a private CA file
//!   and client certificates ([`TlsOptions`]).
//! - Frames from the broker are read by code of our own before lapin reads them. RabbitMQ
//!   accepts from other clients what lapin's parser cannot read (a `type`, `message_id` or
//!   header name that is not UTF-8; headers nested thousands deep, on which a recursive parser
//!   overflows its stack), and one such message would otherwise stop its queue. So lapin never
//!   holds the broker's socket: it runs on a runtime kit of ours whose stream passes what lapin
//!   writes to the socket (or the TLS session) as it is, and hands lapin what the broker sends
//!   through a screen, inside lapin's own read call: body frames stream through; every method
//!   and content header is checked without recursion, headers no deeper than
//!   [`MAX_HEADER_DEPTH`](mqtransport_core::MAX_HEADER_DEPTH). A content header lapin cannot
//!   read is replaced by a readable one (invalid bytes as U+FFFD, unreadable headers dropped)
//!   whose headers say why (`x-mqt-unreadable`) and keep the original property list
//!   (`x-mqt-unreadable-properties`, when the frame holds it); the App dead-letters such a
//!   delivery without running a handler.
//! - Limits: properties that do not fit in a content-header frame of the negotiated
//!   `frame_max` are refused before sending ([`ErrorKind::InvalidInput`], naming the limit),
//!   instead of RabbitMQ closing the connection. The heartbeat is 10 s
//!   ([`AmqpOptions::heartbeat`]): a dead peer is noticed within about 20 s. Connecting gives
//!   up after [`AmqpOptions::connect_timeout`] (10 s). The URL takes `heartbeat` (s),
//!   `connection_timeout` (ms), `frame_max`, `channel_max` and `consumer_timeout` (ms, the
//!   broker's, see [`AmqpOptions::consumer_timeout`]); other options are refused.
//! - Clusters: a URL may list several `host:port`s, comma-separated
//!   (`amqp://u:p@rabbit-1,rabbit-2,rabbit-3/vhost`). Connecting tries them in order; a
//!   reconnect starts after the address lost.
//!   [`AmqpTransport::connection_addresses`] tells which node each connection reached. A
//!   classic queue whose node is down (`404 … is down or inaccessible`) is waited for by its
//!   consumers and skipped by the restore, not taken for deleted.
//! - Errors: a refused login is [`ErrorKind::Auth`], a missing virtual host
//!   [`ErrorKind::NotFound`], neither transient; a publish that may have been delivered
//!   although it failed (its confirm lost or late) is marked
//!   [`Error::is_outcome_unknown`](mqtransport_core::Error::is_outcome_unknown).
//!
//! Headers travel losslessly in type and value; their order does not survive (lapin decodes
//! tables sorted by key), and RabbitMQ has no unsigned 64-bit type (such values that fit are sent
//! signed, larger ones are refused naming the header).
//!
//! Capabilities: those of RabbitMQ 3.x ([`Capabilities::rabbitmq`]), with the negotiated
//! `frame_max`.
//!
//! [`Capabilities::rabbitmq`]: mqtransport_core::Capabilities::rabbitmq
//! [`Confirmation::Returned`]: mqtransport_core::Confirmation::Returned
//! [`ErrorKind::Auth`]: mqtransport_core::ErrorKind::Auth
//! [`ErrorKind::Connection`]: mqtransport_core::ErrorKind::Connection
//! [`ErrorKind::Closed`]: mqtransport_core::ErrorKind::Closed
//! [`ErrorKind::InvalidInput`]: mqtransport_core::ErrorKind::InvalidInput
//! [`ErrorKind::NotFound`]: mqtransport_core::ErrorKind::NotFound
//! [`ErrorKind::Timeout`]: mqtransport_core::ErrorKind::Timeout
//! [`Subscription`]: mqtransport_core::Subscription

mod acker;
mod channels;
mod client_runtime;
mod confirms;
mod connector;
mod consumer;
mod convert;
mod declare;
mod link;
mod options;
mod publish;
mod recorded;
mod refusals;
mod restore;
mod transport;
mod wire;

/// lapin itself, for what this crate does not cover. Its types may change with lapin's version.
pub use lapin;
#[doc(inline)]
pub use link::LinkState;
#[doc(inline)]
pub use options::{AmqpOptions, TlsOptions, Unconfirmed};
#[doc(inline)]
pub use transport::{AmqpTransport, ConnectionAddresses, ConnectionStates};
