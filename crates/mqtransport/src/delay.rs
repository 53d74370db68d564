//! Delayed delivery without a broker plugin: [`Producer::send_delayed`](crate::Producer::send_delayed),
//! [`Producer::send_at`](crate::Producer::send_at) and the runtime's retry backoff all go through
//! the mechanism described here.
//!
//! # How a delay maps onto the broker
//!
//! A delay is whole milliseconds (rounded up, so a message never arrives early), written in
//! binary. Level `n` (0 ≤ n < [`LEVELS`]) is one durable queue `<prefix>.wait.<2ⁿ>ms` whose
//! `x-message-ttl` is 2ⁿ ms, and one headers exchange `<prefix>.level.<n>`:
//!
//! - a message enters at the level of its delay's highest set bit;
//! - the level-`n` exchange routes a message whose delay has bit `n` set (header
//!   `x-mqt-delay-level-<n>`) into the level-`n` queue; any other message goes on to its
//!   alternate exchange, level `n − 1`;
//! - when the message's TTL runs out, the queue dead-letters it to the level-`n − 1` exchange;
//! - below level 0 is `<prefix>.deliver`, a headers exchange bound to each target: a queue (by
//!   header `x-mqt-delay-queue`) or an exchange (by `x-mqt-delay-exchange`), which then routes
//!   the message by its own routing key, unchanged on the way.
//!
//! So the wait is the sum of the TTLs of the set bits, exactly the delay: a message arrives no
//! earlier than asked, and late by the broker's expiry and dead-letter hops (one per set bit,
//! at most 30; about a millisecond each on RabbitMQ). Every message in one wait queue has the
//! same TTL, so the queue expires in publish order: a short delay never waits behind a longer
//! one. The whole mechanism is [`LEVELS`] queues and [`LEVELS`] + 1 exchanges, shared by every
//! app on the virtual host, declared on first use; delays run from 1 ms to [`MAX_DELAY`]
//! (2³⁰ − 1 ms, 12 days 10 hours).
//!
//! What a delayed message carries on arrival: its own properties and headers, the
//! `x-mqt-delay-*` routing headers, and an `x-death` entry per wait queue it passed (the
//! broker's record of each hop). It loses its `expiration` (the broker removes it when it
//! dead-letters), so a delayed publish with an expiration is refused; `x-death` history it
//! carried before is dropped, since RabbitMQ discards a dead letter that revisits a queue in
//! its history. The wait queues are classic queues: a node that crashes can lose a message in
//! the moment it moves between two of them.
//!
//! A broker that delays by itself (SQS `DelaySeconds`, JetStream's nak with delay) says how far
//! in [`Capabilities::native_delay`](mqtransport_core::Capabilities::native_delay): delays up
//! to that go through its [`Transport::publish_delayed`], longer ones through the levels. A
//! transport that can neither delay by itself nor dead-letter expired messages refuses a
//! delayed publish.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use mqtransport_core::{
    Binding, Confirmation, DynTransport, Error, ErrorKind, Exchange, FieldTable, FieldValue, Publish, Queue, Result,
    ShortStr, Topology, Transport, headers,
};

/// The number of levels: delays up to 2^LEVELS − 1 milliseconds.
pub const LEVELS: u32 = 30;
/// The longest delay: 2³⁰ − 1 ms (12 days, 10 hours and a bit).
pub const MAX_DELAY: Duration = Duration::from_millis((1 << LEVELS) - 1);
/// The default prefix of the delay's queues and exchanges.
pub const DEFAULT_PREFIX: &str = "mqt.delay";

/// Where a delayed message goes when its delay is over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// Through the default exchange to this queue.
    Queue(ShortStr),
    /// To this exchange, with the message's routing key.
    Exchange(ShortStr),
}

/// The delay mechanism of one app: the names under its prefix and what it declared so far.
#[derive(Debug)]
pub(crate) struct Delays {
    prefix: String,
    levels_declared: AtomicBool,
    targets: Mutex<HashSet<Target>>,
}

impl Delays {
    pub(crate) fn new(prefix: impl Into<String>) -> Self {
        Delays {
            prefix: prefix.into(),
            levels_declared: AtomicBool::new(false),
            targets: Mutex::new(HashSet::new()),
        }
    }

    /// Publishes `publish` to arrive after `delay` (`publish` as it would be sent at once).
    pub(crate) async fn publish(
        &self,
        transport: &DynTransport,
        publish: Publish,
        delay: Duration,
    ) -> Result<Confirmation> {
        let ms = whole_millis(delay);
        if ms == 0 {
            return transport.publish(publish).await;
        }
        if delay > MAX_DELAY {
            return Err(Error::invalid(format!(
                "a delay of {delay:?} is longer than the longest supported, {MAX_DELAY:?} (2^30 - 1 ms)"
            )));
        }
        if publish.envelope.properties().expiration.is_some() {
            return Err(Error::invalid(
                "a delayed message cannot carry an expiration: the broker removes it when the delay hands the message on",
            ));
        }
        let caps = transport.capabilities();
        if caps.native_delay.is_some_and(|longest| delay <= longest) {
            return transport.publish_delayed(publish, delay).await;
        }
        if !(caps.dead_letter_exchanges && caps.message_ttl) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the {} transport can neither delay messages nor dead-letter expired ones, so it cannot delay a message",
                    caps.system
                ),
            ));
        }
        let target = if publish.exchange.is_empty() {
            Target::Queue(publish.routing_key.clone())
        } else {
            Target::Exchange(publish.exchange.clone())
        };
        let waiting = self.waiting(publish, &target, ms);
        self.ensure(transport, &target).await?;
        match transport.publish(waiting.clone()).await? {
            // The wait queues or the target's binding were deleted since they were declared.
            Confirmation::Returned { .. } => {
                self.forget(&target);
                self.ensure(transport, &target).await?;
                transport.publish(waiting).await
            }
            other => Ok(other),
        }
    }

    /// `publish` rewritten to enter the levels: to the exchange of its highest set bit, with
    /// one header per set bit and the target.
    fn waiting(&self, publish: Publish, target: &Target, ms: u64) -> Publish {
        let Publish {
            exchange,
            routing_key,
            mandatory,
            mut envelope,
        } = publish;
        let headers = envelope.headers_mut();
        for key in [
            headers::X_DEATH,
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason",
        ] {
            headers.remove(key);
        }
        // A dead letter replayed later should go back where this message was first sent.
        if !headers.contains_key(headers::ORIGINAL_EXCHANGE) {
            headers.insert(headers::ORIGINAL_EXCHANGE, FieldValue::from(exchange.to_string()));
            headers.insert(headers::ORIGINAL_ROUTING_KEY, FieldValue::from(routing_key.to_string()));
        }
        headers.remove(headers::DELAY_QUEUE);
        headers.remove(headers::DELAY_EXCHANGE);
        let (key, name) = match target {
            Target::Queue(q) => (headers::DELAY_QUEUE, q),
            Target::Exchange(x) => (headers::DELAY_EXCHANGE, x),
        };
        headers.insert(key, FieldValue::from(name.to_string()));
        for level in 0..LEVELS {
            let key = level_header(level);
            if ms & (1 << level) != 0 {
                headers.insert(key, FieldValue::from(true));
            } else {
                headers.remove(&key);
            }
        }
        let top = u64::BITS - 1 - ms.leading_zeros();
        Publish::new(self.level_exchange(top), routing_key, envelope).mandatory(mandatory)
    }

    /// Declares the levels (once) and `target`'s binding (once per target).
    async fn ensure(&self, transport: &DynTransport, target: &Target) -> Result<()> {
        // Two first publishes at once may both declare: declaring is idempotent.
        if !self.levels_declared.load(Ordering::Acquire) {
            transport
                .declare(&self.topology())
                .await
                .map_err(|e| e.context(format_args!("declaring the delay queues '{}.*'", self.prefix)))?;
            self.levels_declared.store(true, Ordering::Release);
        }
        if self
            .targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(target)
        {
            return Ok(());
        }
        let binding = match target {
            Target::Queue(q) => Binding::queue(q.to_string(), self.deliver_exchange(), "")
                .arguments(target_match(headers::DELAY_QUEUE, q)),
            Target::Exchange(x) => Binding::exchange(x.to_string(), self.deliver_exchange(), "")
                .arguments(target_match(headers::DELAY_EXCHANGE, x)),
        };
        transport
            .declare(&Topology::new().bind(binding))
            .await
            .map_err(|e| e.context("binding the target of a delayed message"))?;
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.clone());
        Ok(())
    }

    /// Forgets what was declared, so that the next `ensure` declares the levels and the target
    /// again (declaring is idempotent).
    fn forget(&self, target: &Target) {
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(target);
        self.levels_declared.store(false, Ordering::Release);
    }

    /// The levels' queues and exchanges.
    pub(crate) fn topology(&self) -> Topology {
        delay_topology(&self.prefix)
    }

    fn level_exchange(&self, level: u32) -> String {
        level_exchange(&self.prefix, level)
    }

    fn deliver_exchange(&self) -> String {
        format!("{}.deliver", self.prefix)
    }
}

/// The queues and exchanges of the delay levels under `prefix` (see the [module docs](self)):
/// what to delete to remove them, or to declare them ahead of time.
pub fn delay_topology(prefix: &str) -> Topology {
    let deliver = format!("{prefix}.deliver");
    let mut topology = Topology::new().exchange(Exchange::headers(deliver.clone()));
    for level in 0..LEVELS {
        let below = match level {
            0 => deliver.clone(),
            n => level_exchange(prefix, n - 1),
        };
        let ttl = 1u64 << level;
        let queue = format!("{prefix}.wait.{ttl}ms");
        topology = topology
            .exchange(Exchange::headers(level_exchange(prefix, level)).alternate_exchange(below.clone()))
            .queue(
                Queue::durable(queue.clone())
                    .message_ttl(Duration::from_millis(ttl))
                    .dead_letter_exchange(below),
            )
            .bind(
                Binding::queue(queue, level_exchange(prefix, level), "").arguments(
                    FieldTable::new()
                        .with("x-match", "all-with-x")
                        .with(level_header(level), true),
                ),
            );
    }
    topology
}

fn level_exchange(prefix: &str, level: u32) -> String {
    format!("{prefix}.level.{level}")
}

fn level_header(level: u32) -> String {
    format!("{}{level}", headers::DELAY_LEVEL_PREFIX)
}

fn target_match(header: &str, name: &str) -> FieldTable {
    FieldTable::new().with("x-match", "all-with-x").with(header, name)
}

/// `delay` in whole milliseconds, rounded up.
fn whole_millis(delay: Duration) -> u64 {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    if delay > Duration::from_millis(ms) {
        ms.saturating_add(1)
    } else {
        ms
    }
}

/// How long from now until `at` (zero if it has passed).
pub(crate) fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtransport_core::Envelope;

    #[test]
    fn delays_round_up_to_whole_milliseconds() {
        assert_eq!(whole_millis(Duration::from_micros(1500)), 2);
        assert_eq!(whole_millis(Duration::from_millis(7)), 7);
        assert_eq!(whole_millis(Duration::from_nanos(1)), 1);
        assert_eq!(whole_millis(Duration::ZERO), 0);
    }

    #[test]
    fn a_delay_enters_at_its_highest_bit_with_one_header_per_set_bit() {
        let delays = Delays::new("d");
        let publish = Publish::to_queue("orders", Envelope::new("x").with_header(headers::X_DEATH, 1i32));
        let target = Target::Queue(ShortStr::from("orders"));
        let w = delays.waiting(publish, &target, 10); // 0b1010
        assert_eq!(&*w.exchange, "d.level.3");
        assert_eq!(&*w.routing_key, "orders");
        let set: Vec<u32> = (0..LEVELS)
            .filter(|l| w.envelope.header(&level_header(*l)).is_some())
            .collect();
        assert_eq!(set, [1, 3]);
        assert_eq!(
            w.envelope.header(headers::DELAY_QUEUE).and_then(FieldValue::as_str),
            Some("orders")
        );
        assert!(w.envelope.header(headers::X_DEATH).is_none());
    }

    #[test]
    fn the_topology_has_one_queue_and_exchange_per_level() {
        let t = delay_topology("d");
        assert_eq!(t.queues.len(), LEVELS as usize);
        assert_eq!(t.exchanges.len(), LEVELS as usize + 1);
        assert_eq!(t.queues[0].name, "d.wait.1ms");
        assert_eq!(t.queues[29].name, "d.wait.536870912ms");
        t.validate().unwrap();
    }
}
