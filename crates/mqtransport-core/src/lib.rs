//! # mqtransport-core
//!
//! The vocabulary and contracts of mqtransport: what every transport and the facade agree on.
//! Applications import the `mqtransport` facade instead; this crate is for transport authors.
//!
//! - [`Envelope`] with [`Properties`] and a typed, binary-safe [`FieldTable`] of headers;
//! - the topology model: [`Exchange`], [`Queue`], [`Binding`], [`Topology`];
//! - the exchange [`Router`] (direct, fanout, topic trie, headers, exchange-to-exchange);
//! - the [`Transport`] trait, its erased twin [`DynTransport`], and the values crossing it;
//! - [`BrokerUrl`] and the one [`Error`] type.

mod capabilities;
pub mod connection_state;
mod dyn_transport;
pub mod envelope;
pub mod error;
pub mod field;
pub mod frame_limit;
pub mod hash;
pub mod publish_rules;
pub mod router;
pub mod shortstr;
pub mod topology;
pub mod transport;
pub mod url;

#[doc(inline)]
pub use connection_state::ConnectionState;
#[doc(inline)]
pub use envelope::{DeliveryMode, Envelope, Properties, headers};
#[doc(inline)]
pub use error::{Error, ErrorKind, Result, Scope};
#[doc(inline)]
pub use field::{Decimal, FieldTable, FieldValue};
#[doc(inline)]
pub use frame_limit::{DEFAULT_FRAME_MAX, MAX_HEADER_DEPTH};
#[doc(inline)]
pub use router::Router;
#[doc(inline)]
pub use shortstr::ShortStr;
#[doc(inline)]
pub use topology::{Binding, Destination, Exchange, ExchangeKind, Overflow, Queue, QueueType, Topology};
#[doc(inline)]
pub use transport::{
    AckHandle, Acker, BoxFuture, Capabilities, Confirmation, ConsumeOptions, DEFAULT_MAX_MESSAGE_SIZE, DIRECT_REPLY_TO,
    Declared, DeleteQueue, Delivery, DynTransport, Publish, QueueInfo, RABBITMQ_CONSUMER_TIMEOUT, Settle, Subscription,
    Transport,
};
#[doc(inline)]
pub use url::{BrokerUrl, Scheme};
