//! [`Incoming`]: a delivery as middleware and extractors see it.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use mqtransport_core::hash::FxHashMap;
use mqtransport_core::{Envelope, FieldValue, ShortStr, headers};

use crate::publish::Publisher;

/// What every delivery of one consumer shares.
pub(crate) struct ConsumerCtx {
    pub(crate) queue: ShortStr,
    /// The OpenTelemetry `messaging.system`: `rabbitmq`, or `memory` for the embedded broker.
    pub(crate) system: &'static str,
    pub(crate) publisher: Publisher,
}

/// A delivery on its way through the middleware stack to its handler: the message, where it
/// came from, and [`Extensions`] that middleware may use to pass values to extractors.
///
/// This is the request type of every tower [`Service`](tower::Service) in a consumer's stack.
pub struct Incoming {
    pub(crate) envelope: Envelope,
    pub(crate) exchange: ShortStr,
    pub(crate) routing_key: ShortStr,
    pub(crate) redelivered: bool,
    pub(crate) delivery_tag: u64,
    pub(crate) ctx: Arc<ConsumerCtx>,
    extensions: Extensions,
}

impl Incoming {
    pub(crate) fn new(
        envelope: Envelope,
        exchange: ShortStr,
        routing_key: ShortStr,
        redelivered: bool,
        delivery_tag: u64,
        ctx: Arc<ConsumerCtx>,
    ) -> Self {
        Incoming {
            envelope,
            exchange,
            routing_key,
            redelivered,
            delivery_tag,
            ctx,
            extensions: Extensions::default(),
        }
    }

    /// The message: properties, headers, body.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The message, for middleware that rewrites it before the handler sees it.
    pub fn envelope_mut(&mut self) -> &mut Envelope {
        &mut self.envelope
    }

    /// The message name (AMQP `type`), if the publisher set one.
    pub fn name(&self) -> Option<&str> {
        self.envelope.properties().kind.as_deref()
    }

    /// The queue it was consumed from.
    pub fn queue(&self) -> &str {
        &self.ctx.queue
    }

    /// The exchange it was delivered through (`""` for the default exchange, which is also
    /// how a retried message comes back; see [`DeliveryInfo::exchange`] for the original).
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The routing key it was delivered with.
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    /// The broker delivered it before (a requeue, or a redelivery after a lost connection).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The delivery tag.
    pub fn delivery_tag(&self) -> u64 {
        self.delivery_tag
    }

    /// Which attempt this is: 1 for the first delivery, counted by the framework's retries
    /// (`x-mqt-attempt`).
    pub fn attempt(&self) -> u32 {
        attempt_of(&self.envelope)
    }

    /// The OpenTelemetry `messaging.system` of the broker (`rabbitmq`, `memory`).
    pub fn messaging_system(&self) -> &'static str {
        self.ctx.system
    }

    /// Values middleware attached for extractors ([`Extension`](crate::Extension)).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Values middleware attached, for changing.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("queue", &self.queue())
            .field("name", &self.name())
            .field("exchange", &self.exchange())
            .field("routing_key", &self.routing_key())
            .field("redelivered", &self.redelivered)
            .field("delivery_tag", &self.delivery_tag)
            .finish_non_exhaustive()
    }
}

/// The attempt number an envelope carries (`x-mqt-attempt`, 1 when absent or nonsense).
pub(crate) fn attempt_of(envelope: &Envelope) -> u32 {
    envelope
        .header(headers::ATTEMPT)
        .and_then(FieldValue::as_i64)
        .and_then(|a| u32::try_from(a).ok())
        .filter(|a| *a >= 1)
        .unwrap_or(1)
}

/// A map from type to value, for middleware to hand values to extractors. Empty, it allocates
/// nothing.
#[derive(Default)]
pub struct Extensions {
    map: Option<FxHashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Extensions {
    /// Stores `value`, returning the previous value of that type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.map
            .get_or_insert_with(Default::default)
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    /// The value of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map.as_ref()?.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The value of type `T`, for changing.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.map.as_mut()?.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        self.map
            .as_mut()?
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.as_ref().is_none_or(|m| m.is_empty())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.as_ref().map_or(0, |m| m.len()))
            .finish()
    }
}

/// Where a delivery came from and how often it was tried: an extractor.
///
/// ```
/// use mqtransport::DeliveryInfo;
///
/// async fn handler(info: DeliveryInfo) {
///     if info.attempt() > 1 {
///         println!("retry of {:?} from queue {}", info.message_id(), info.queue());
///     }
/// }
/// # let _ = handler;
/// ```
#[derive(Clone)]
pub struct DeliveryInfo {
    pub(crate) envelope: Envelope,
    pub(crate) queue: ShortStr,
    pub(crate) exchange: ShortStr,
    pub(crate) routing_key: ShortStr,
    pub(crate) redelivered: bool,
    pub(crate) delivery_tag: u64,
}

impl DeliveryInfo {
    pub(crate) fn of(req: &Incoming) -> Self {
        DeliveryInfo {
            envelope: req.envelope.clone(),
            queue: req.ctx.queue.clone(),
            exchange: req.exchange.clone(),
            routing_key: req.routing_key.clone(),
            redelivered: req.redelivered,
            delivery_tag: req.delivery_tag,
        }
    }

    /// The message id (`message_id` property; mqtransport sends a UUIDv7).
    pub fn message_id(&self) -> Option<&str> {
        self.envelope.properties().message_id.as_deref()
    }

    /// The correlation id.
    pub fn correlation_id(&self) -> Option<&str> {
        self.envelope.properties().correlation_id.as_deref()
    }

    /// Where a reply should go.
    pub fn reply_to(&self) -> Option<&str> {
        self.envelope.properties().reply_to.as_deref()
    }

    /// The message name (`type`).
    pub fn name(&self) -> Option<&str> {
        self.envelope.properties().kind.as_deref()
    }

    /// When it was published, in seconds since the Unix epoch (`timestamp` property).
    pub fn timestamp(&self) -> Option<u64> {
        self.envelope.properties().timestamp
    }

    /// The queue it was consumed from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The exchange it was first published to: for a retried message the original one (from
    /// `x-mqt-original-exchange`), not the default exchange it came back through.
    pub fn exchange(&self) -> &str {
        self.original(headers::ORIGINAL_EXCHANGE).unwrap_or(&self.exchange)
    }

    /// The routing key it was first published with (for a retried message, from
    /// `x-mqt-original-routing-key`).
    pub fn routing_key(&self) -> &str {
        self.original(headers::ORIGINAL_ROUTING_KEY)
            .unwrap_or(&self.routing_key)
    }

    fn original(&self, header: &str) -> Option<&str> {
        self.envelope.header(header).and_then(FieldValue::as_str)
    }

    /// The broker delivered it before.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The delivery tag.
    pub fn delivery_tag(&self) -> u64 {
        self.delivery_tag
    }

    /// Which attempt this is, 1 for the first.
    pub fn attempt(&self) -> u32 {
        attempt_of(&self.envelope)
    }
}

impl fmt::Debug for DeliveryInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryInfo")
            .field("message_id", &self.message_id())
            .field("name", &self.name())
            .field("queue", &self.queue())
            .field("exchange", &self.exchange())
            .field("routing_key", &self.routing_key())
            .field("redelivered", &self.redelivered)
            .field("attempt", &self.attempt())
            .finish()
    }
}

/// The message's headers: an extractor. Cloning it shares the message, it copies nothing.
#[derive(Clone)]
pub struct Headers {
    pub(crate) envelope: Envelope,
}

impl Headers {
    /// The header `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.envelope.header(key)
    }

    /// The header `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(FieldValue::as_str)
    }

    /// Every header, in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.envelope
            .properties()
            .headers
            .as_ref()
            .into_iter()
            .flat_map(|t| t.iter())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.envelope.properties().headers.as_ref().is_none_or(|t| t.is_empty())
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_store_one_value_per_type() {
        let mut ext = Extensions::default();
        assert!(ext.is_empty());
        assert_eq!(ext.insert(5u32), None);
        assert_eq!(ext.insert(7u32), Some(5));
        ext.insert("tenant-a");
        assert_eq!(ext.get::<u32>(), Some(&7));
        *ext.get_mut::<u32>().unwrap() += 1;
        assert_eq!(ext.remove::<u32>(), Some(8));
        assert_eq!(ext.get::<&str>(), Some(&"tenant-a"));
        assert_eq!(ext.get::<u64>(), None);
    }

    #[test]
    fn attempts_come_from_the_header() {
        assert_eq!(attempt_of(&Envelope::new("x")), 1);
        assert_eq!(attempt_of(&Envelope::new("x").with_header(headers::ATTEMPT, 3i64)), 3);
        assert_eq!(attempt_of(&Envelope::new("x").with_header(headers::ATTEMPT, 2i32)), 2);
        assert_eq!(attempt_of(&Envelope::new("x").with_header(headers::ATTEMPT, -4i32)), 1);
        assert_eq!(attempt_of(&Envelope::new("x").with_header(headers::ATTEMPT, "7")), 1);
    }
}
