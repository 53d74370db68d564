//! # mqtransport-memory
//!
//! The embedded broker of mqtransport (`memory://`): RabbitMQ 3.x semantics inside the process,
//! so every example and most tests run with no server, and code tested on it behaves the same on
//! RabbitMQ. The shared conformance suite in `mqtransport-testkit` runs against both.
//!
//! ```
//! use mqtransport_core::{ConsumeOptions, Envelope, Publish, Queue, Topology, Transport};
//! use mqtransport_memory::MemoryBroker;
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mqtransport_core::Result<()> {
//! let broker = MemoryBroker::new();
//! let conn = broker.connect();
//! conn.declare(&Topology::new().queue(Queue::durable("greetings"))).await?;
//! conn.publish(Publish::to_queue("greetings", Envelope::new("hello"))).await?;
//!
//! let mut consumer = conn.consume("greetings", ConsumeOptions::default().prefetch(10)).await?;
//! if let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     assert_eq!(&delivery.envelope.body[..], b"hello");
//!     delivery.ack().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## What it implements
//!
//! | feature | notes |
//! |---|---|
//! | exchanges | default, `amq.*`, direct, fanout, topic, headers, exchange-to-exchange, alternate exchange (used by an exchange none of whose bindings matched, as RabbitMQ does), internal, auto-delete |
//! | queues | classic and quorum; durable, exclusive (owned by the connection), auto-delete, server-named (`amq.gen-…`), `x-expires` (idle: no consumer, no `basic.get`, no declare; publishing is not use) |
//! | declare | idempotent; inequivalent re-declare → 406, exclusive conflicts → 405, reserved names → 403, as RabbitMQ 3.10 |
//! | consumers | round-robin, per-consumer prefetch, no-ack, exclusive consumers, consumer priorities (`x-priority`), single active consumer (`x-single-active-consumer`) |
//! | settling | ack, nack / reject with requeue (classic: original position; quorum: back, or front on close), drop = requeue |
//! | TTL | `x-message-ttl`, per-message `expiration`, head-of-line expiry on tokio's clock |
//! | limits | `x-max-length`, `x-max-length-bytes`; drop-head, reject-publish, reject-publish-dlx (a requeued message goes back above a reject-publish limit; drop-head drops the head for it) |
//! | dead letters | `x-dead-letter-exchange` (internal ones too)/`-routing-key` (which removes `CC`), routed by the routing key and `CC` and `BCC` keys, `x-death` history as RabbitMQ writes it, cycle detection, quorum `x-delivery-limit` |
//! | publishing | confirms, mandatory returns, nacks from full queues, `CC`/`BCC`, priorities (`x-max-priority`) |
//! | push | a consumer holds up to its prefetch whether or not its stream is read: counts, `basic.get`, purge, delete and connection close see those messages as RabbitMQ does (unacked, not ready; redelivered when returned). Messages are moved to a consumer when it or an observer looks, not when published, so a publisher is still paced by what consumers take |
//! | flow control | a publisher [`FLOW_LIMIT`] messages ahead of a queue's consumers waits for them to take some, like RabbitMQ's credit flow; never more than [`FLOW_GRACE`] while they take nothing |
//! | RPC | `amq.rabbitmq.reply-to` direct reply-to |
//! | other | purge, delete (`if_unused`/`if_empty`), `basic.get` with message count |
//!
//! Not implemented, and refused rather than ignored: stream queues (`x-queue-type: stream` is
//! refused at declare with RabbitMQ's `unsupported queue type` error). Global QoS and
//! transactions cannot be asked for through the `Transport` contract. Time comes from tokio's
//! clock, so tests can run with a paused clock.

mod broker;
mod conn;
mod flow;
mod publish;
mod queue;
mod stream;
mod sync;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use mqtransport_core::{BrokerUrl, Error, Result, Scheme};

pub use flow::{FLOW_GRACE, FLOW_LIMIT};
pub use transport::MemoryTransport;

/// Default largest body: RabbitMQ's default `max_message_size`, 128 MiB.
pub use mqtransport_core::DEFAULT_MAX_MESSAGE_SIZE;

/// An embedded broker. Cheap to clone; clones are the same broker. Connect to it with
/// [`connect`](Self::connect), or by URL: every `memory://name` URL with the same name reaches
/// the same process-wide broker.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<broker::BrokerInner>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").field("name", &self.inner.name).finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new()
    }
}

fn registry() -> &'static Mutex<HashMap<String, MemoryBroker>> {
    static BROKERS: OnceLock<Mutex<HashMap<String, MemoryBroker>>> = OnceLock::new();
    BROKERS.get_or_init(Default::default)
}

impl MemoryBroker {
    /// A new, private broker (not reachable by URL): hand it to whoever should share it.
    pub fn new() -> Self {
        MemoryBroker::with_max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// A new private broker that refuses bodies larger than `bytes`.
    pub fn with_max_message_size(bytes: usize) -> Self {
        MemoryBroker {
            inner: broker::BrokerInner::new(String::new(), bytes),
        }
    }

    /// The process-wide broker called `name` (`memory://name`), created on first use. It lives as
    /// long as the process, like a server would.
    pub fn named(name: &str) -> Self {
        let mut brokers = sync::lock(registry());
        brokers
            .entry(name.to_owned())
            .or_insert_with(|| MemoryBroker {
                inner: broker::BrokerInner::new(name.to_owned(), DEFAULT_MAX_MESSAGE_SIZE),
            })
            .clone()
    }

    /// The broker a `memory://[name]` URL names.
    pub fn from_url(url: &BrokerUrl) -> Result<Self> {
        if url.scheme() != Scheme::Memory {
            return Err(Error::invalid(format!(
                "the embedded broker takes memory:// URLs, not '{url}'"
            )));
        }
        Ok(MemoryBroker::named(url.host()))
    }

    /// Opens a new connection.
    pub fn connect(&self) -> MemoryTransport {
        MemoryTransport::open(Arc::clone(&self.inner))
    }

    /// What `queue` holds right now, including what AMQP's `queue.declare-ok` does not tell:
    /// deliveries handed to consumers and not yet settled. `None` if there is no such queue.
    pub fn queue_stats(&self, queue: &str) -> Option<QueueStats> {
        let q = self.inner.queue_cell(queue)?;
        let mut fx = queue::Effects::default();
        let (ready, unacked, consumers) = q.counts(&mut fx);
        self.inner.apply(&q, fx);
        Some(QueueStats {
            ready,
            unacked,
            consumers,
        })
    }
}

/// A queue's counts ([`MemoryBroker::queue_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Messages waiting to be delivered.
    pub ready: usize,
    /// Messages delivered (or handed to a consumer's buffer) and not yet settled.
    pub unacked: usize,
    /// Consumers.
    pub consumers: usize,
}
