//! # mqtransport
//!
//! Typed messaging for Rust services: define messages, handle them with plain `async fn`s,
//! publish with broker confirms, and get retries, dead letters and graceful shutdown — over
//! RabbitMQ or the embedded in-process broker, chosen by URL. This crate is what applications
//! import.
//!
//! ```
//! use mqtransport::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(name = "orders.created")]
//! struct OrderCreated {
//!     id: u64,
//! }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(name = "orders.cancelled")]
//! struct OrderCancelled {
//!     id: u64,
//! }
//!
//! // Handlers are async fns; their arguments are extractors, in any order.
//! async fn created(order: OrderCreated, info: DeliveryInfo) {
//!     println!("created {} (attempt {})", order.id, info.attempt());
//! }
//!
//! async fn cancelled(order: OrderCancelled) -> Result<(), HandlerError> {
//!     if order.id == 0 {
//!         return Err(HandlerError::permanent("no such order")); // to orders.dlq, with the reason
//!     }
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mqtransport::Result<()> {
//! let app = App::builder()
//!     .url("memory://docs-crate") // the embedded broker; amqp://… for RabbitMQ
//!     .topology(Topology::new().exchange(Exchange::topic("shop")))
//!     .consumer(
//!         Consumer::for_queue(Queue::durable("orders"))
//!             .handle(created) // two message types on one queue, dispatched by name
//!             .handle(cancelled),
//!     )
//!     .topology(Topology::new().bind(Binding::queue("orders", "shop", "orders.*")))
//!     .build()
//!     .await?;
//! let created = app.producer::<OrderCreated>(Route::exchange("shop")); // routing key = the name
//! let running = app.start().await?;
//! created.send(&OrderCreated { id: 1 }).await?;
//! running.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! | | |
//! |---|---|
//! | messages | [`Message`] and `#[derive(Message)]`, [`Codec`], [`Invalid`] |
//! | the app | [`App`], [`AppBuilder`], [`Running`], [`Consumer`], [`ConsumerStatus`], [`RetryPolicy`], [`DeadLetterPolicy`] |
//! | operations | [`Running::health`] ([`Health`]: broker, consumers, unconfirmed publishes); metrics with the `metrics` feature |
//! | handlers | [`Handler`], extractors ([`FromDelivery`], [`State`], [`DeliveryInfo`], [`Headers`], [`Extension`]), [`Outcome`], [`HandlerError`] |
//! | publishing | [`Publisher`], [`Producer`], [`Route`], [`PublishOptions`], [`BlockingProducer`]; delayed with [`Producer::send_delayed`] and [`Producer::send_at`] ([`delay`]: how, without a broker plugin) |
//! | dead letters | [`DeadLetters`] (from [`App::dead_letters`], or over any connection): list, [`summary`](DeadLetters::summary), [`Replay`] with a [`DeadLetterFilter`], purge |
//! | request/reply | [`Requester`] (from [`App::requester`]), [`RawRequester`], [`RpcError`]; a responder is a handler returning its reply ([`Outcome::Reply`]) |
//! | middleware | [`middleware`]: tower layers over [`Incoming`] |
//! | tests of apps | [`testing::TestApp`] |
//! | the broker directly | [`connect`], [`transport`], the topology types |
//!
//! ## Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `memory` | yes | the embedded broker (`memory://`), RabbitMQ semantics in process, and [`testing`] |
//! | `amqp` | yes | RabbitMQ (`amqp://`) through lapin (no TLS stack) |
//! | `amqp-tls` | no | RabbitMQ over TLS (`amqps://`), rustls with the ring provider |
//! | `sqs` | no | Amazon SQS (`sqs://`) through the official aws-sdk-sqs: the same App, retries (in place, by visibility), dead letters and delays; see the `mqtransport-sqs` crate for how each maps |
//! | `opentelemetry` | no | W3C trace context across services: publishes carry `traceparent`/`tracestate` of the current span, a delivery's span is the producer's child (or a link, `AppBuilder::trace_parent`), through `tracing-opentelemetry` |
//! | `metrics` | no | metrics through the `metrics` facade, named after the OpenTelemetry messaging metrics (see `AppBuilder::metrics`) |
//! | `msgpack` | no | MessagePack bodies (`#[message(codec = "msgpack")]`) |

mod app;
mod asyncapi;
mod attach;
mod consumer;
mod consumer_status;
mod dead_letter;
mod declaration;
pub mod delay;
mod delivery;
mod extract;
mod handler;
mod message;
pub mod middleware;
mod observe;
mod outcome;
mod plain;
mod producer;
mod publish;
mod retry;
mod rpc;
mod running;
mod runtime;
mod settled;
#[cfg(feature = "memory")]
pub mod testing;

#[doc(inline)]
pub use app::{App, AppBuilder, DEFAULT_SHUTDOWN_TIMEOUT, shutdown_signal};
#[doc(inline)]
pub use asyncapi::{ASYNCAPI_ENV, MessageDoc};
#[doc(inline)]
pub use consumer::{
    Acknowledge, Consumer, DEFAULT_CONCURRENCY, DEFAULT_PREFETCH, DeadLetterPolicy, HandlerService, UnknownMessage,
};
#[doc(inline)]
pub use consumer_status::ConsumerStatus;
#[doc(inline)]
pub use dead_letter::{
    DEFAULT_MAX_REPLAYS, DeadLetter, DeadLetterFilter, DeadLetters, ReasonSummary, Replay, ReplayAction, ReplayEntry,
    ReplayReport, ReplayTarget,
};
#[doc(inline)]
pub use delivery::{DeliveryInfo, DeliveryParts, Extensions, Headers, Incoming};
#[doc(inline)]
pub use extract::{Extension, FromDelivery, FromRef, MissingExtension, State};
#[doc(inline)]
pub use handler::Handler;
#[doc(inline)]
pub use message::{Codec, DecodeError, Invalid, Message, decode, encode};
/// `#[derive(Message)]`: see [`Message`] for its attributes.
pub use mqtransport_macros::Message;
#[cfg(feature = "metrics")]
pub use observe::METRICS_SAMPLE_INTERVAL;
#[cfg(feature = "opentelemetry")]
pub use observe::TraceParent;
#[doc(inline)]
pub use observe::{BrokerHealth, ConsumerHealth, ConsumerState, HEALTH_PING_TIMEOUT, Health};
#[doc(inline)]
pub use outcome::{BoxError, HandlerError, IntoOutcome, Outcome, Reply};
#[doc(inline)]
pub use plain::{NotText, PlainProducer};
#[doc(inline)]
pub use producer::{BlockingProducer, Producer};
#[doc(inline)]
pub use publish::{PublishOptions, Publisher, Route};
#[doc(inline)]
pub use retry::{Backoff, RetryPolicy};
pub use running::Running;
/// `schemars`, for message types that derive `JsonSchema` (feature `asyncapi`).
#[cfg(feature = "asyncapi")]
pub use schemars;

pub use rpc::{DEFAULT_RPC_TIMEOUT, RawRequester, Requester, RpcError};
#[doc(inline)]
pub use settled::{Disposition, SettledDelivery};

#[doc(inline)]
pub use mqtransport_core::{
    Binding, BrokerUrl, Capabilities, Confirmation, ConnectionState, ConsumeOptions, Declared, DeleteQueue, Delivery,
    DeliveryMode, DynTransport, Envelope, Error, ErrorKind, Exchange, ExchangeKind, FieldTable, FieldValue, Overflow,
    Properties, Publish, Queue, QueueInfo, QueueType, Result, Scheme, Topology, Transport, headers,
};

/// The transport layer underneath the app, for code that talks to the broker directly:
/// [`Transport`], its delivery stream [`Subscription`](transport::Subscription)
/// and the rest of the core contracts.
pub mod transport {
    pub use mqtransport_core::{
        AckHandle, Acker, Capabilities, Confirmation, ConsumeOptions, Declared, DeleteQueue, Delivery, DynTransport,
        Publish, QueueInfo, Settle, Subscription, Transport,
    };
}

/// The core crate, for transport authors (router, acker internals).
pub use mqtransport_core as core;

/// The RabbitMQ transport.
#[cfg(feature = "amqp")]
#[doc(inline)]
pub use mqtransport_amqp::{
    AmqpOptions, AmqpTransport, ConnectionAddresses, ConnectionStates, LinkState, TlsOptions, Unconfirmed,
};

/// The Amazon SQS transport.
#[cfg(feature = "sqs")]
#[doc(inline)]
pub use mqtransport_sqs::{SqsOptions, SqsTransport};

/// The embedded broker.
#[cfg(feature = "memory")]
#[doc(inline)]
pub use mqtransport_memory::{MemoryBroker, MemoryTransport, QueueStats};

/// The names most programs need, in one import.
pub mod prelude {
    pub use crate::{
        App, Binding, Consumer, DeliveryInfo, Envelope, Exchange, HandlerError, Headers, Message, Outcome, Producer,
        Publisher, Queue, Requester, RetryPolicy, Route, RpcError, State, Topology,
    };
    pub use mqtransport_core::{Confirmation, ConsumeOptions, Delivery, Publish, Transport};
}

#[doc(hidden)]
pub mod __private {
    pub use serde_json;

    /// Asks whether `T` has a JSON Schema (see `Message::schema`).
    pub struct SchemaProbe<T>(std::marker::PhantomData<T>);

    impl<T> SchemaProbe<T> {
        /// The probe.
        pub const NEW: Self = SchemaProbe(std::marker::PhantomData);
    }

    /// The schema of a type that has one.
    pub trait SchemaOf {
        /// `Some` schema.
        fn schema(&self) -> Option<serde_json::Value>;
    }

    #[cfg(feature = "asyncapi")]
    impl<T: schemars::JsonSchema> SchemaOf for &SchemaProbe<T> {
        fn schema(&self) -> Option<serde_json::Value> {
            Some(schemars::schema_for!(T).to_value())
        }
    }

    /// No schema, for a type without one.
    pub trait SchemaFallback {
        /// `None`.
        fn schema(&self) -> Option<serde_json::Value>;
    }

    impl<T> SchemaFallback for SchemaProbe<T> {
        fn schema(&self) -> Option<serde_json::Value> {
            None
        }
    }

    /// What `#[derive(Message)]` calls for a type with validation rules.
    pub fn garde_validate<T>(value: &T) -> Result<(), crate::Invalid>
    where
        T: garde::Validate + ?Sized,
        T::Context: Default,
    {
        value.validate().map_err(crate::Invalid::from)
    }
}

/// Connects to the broker a URL names and checks that it answers.
///
/// | URL | transport |
/// |---|---|
/// | `memory://` or `memory://name` | the embedded broker; the same name is the same broker in this process |
/// | `amqp://` | RabbitMQ (the default `amqp` feature) |
/// | `amqps://` | RabbitMQ over TLS, with the `amqp-tls` feature ([`ErrorKind::Unsupported`] without it) |
/// | `sqs://` | Amazon SQS, with the `sqs` feature ([`ErrorKind::Unsupported`] naming the feature without it); the URL is described by `SqsOptions` |
/// | `redis://`, `nats://` | reserved for planned transports ([`ErrorKind::Unsupported`]) |
///
/// A malformed URL fails with [`ErrorKind::InvalidInput`]; messages never show the password.
// Built without any transport, every scheme is refused (and the ping below is unreachable):
// an app then brings its own through `DynTransport::new`.
#[cfg_attr(
    not(any(feature = "memory", feature = "amqp", feature = "sqs")),
    allow(unreachable_code, unused_variables)
)]
pub async fn connect(url: &str) -> Result<DynTransport> {
    let url = BrokerUrl::parse(url)?;
    let transport: DynTransport = match url.scheme() {
        #[cfg(feature = "memory")]
        Scheme::Memory => DynTransport::new(MemoryBroker::from_url(&url)?.connect()),
        #[cfg(feature = "amqp")]
        Scheme::Amqp | Scheme::Amqps => DynTransport::new(AmqpTransport::connect(&url).await?),
        #[cfg(feature = "sqs")]
        Scheme::Sqs => DynTransport::new(SqsTransport::connect_with(SqsOptions::from_broker_url(&url)?).await?),
        #[cfg(not(feature = "sqs"))]
        Scheme::Sqs => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("no transport for '{url}': build mqtransport with the `sqs` feature for Amazon SQS"),
            ));
        }
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "no transport for '{url}': the {} transport is not part of this build",
                    other.as_str()
                ),
            ));
        }
    };
    transport.ping().await?;
    Ok(transport)
}

/// The broker URL from the `MQT_URL` environment variable, else `memory://`.
pub fn url_from_env() -> String {
    std::env::var("MQT_URL").unwrap_or_else(|_| "memory://".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_by_url_shares_named_brokers() -> Result<()> {
        let a = connect("memory://facade-test").await?;
        let b = connect("memory://facade-test").await?;
        a.declare(&Topology::new().queue(Queue::durable("shared"))).await?;
        a.publish(Publish::to_queue("shared", Envelope::new("x"))).await?;
        assert_eq!(b.queue_info("shared").await?.message_count, 1);
        let other = connect("memory://facade-test-other").await?;
        assert_eq!(
            other.queue_info("shared").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        Ok(())
    }

    #[tokio::test]
    async fn bad_urls_name_the_problem() {
        let e = connect("kafka://broker").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("kafka"), "{e}");
        let e = connect("nats://app:secret@localhost").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.message().contains("nats://app:***@localhost"), "{e}");
        assert!(!e.message().contains("secret"), "{e}");
    }

    #[cfg(not(feature = "sqs"))]
    #[tokio::test]
    async fn sqs_without_its_feature_names_the_feature() {
        let e = connect("sqs://KEY:secret@us-east-1/").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.message().contains("`sqs` feature"), "{e}");
        assert!(!e.message().contains("secret"), "{e}");
    }
}

/// The README's code blocks, compiled and run as doctests: if the README says it, it works.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
