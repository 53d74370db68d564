//! A message as a queue holds it: what was published ([`MsgData`]: the envelope and its
//! [`Route`]) and the queue's own bookkeeping around it ([`Msg`]).

use std::sync::Arc;

use mqtransport_core::envelope::headers::X_DELIVERY_COUNT;
use mqtransport_core::{Acker, Delivery, Envelope, QueueType, ShortStr};
use tokio::time::Instant;

/// What a published message carries: the envelope and how it was routed. Every part clones
/// without allocating, so fan-out copies and deliveries share it. The common case, a publish
/// through the default exchange to the queue the routing key names, stores no route at all:
/// the message is then 48 bytes in every list it passes through.
///
/// The route comes first, in a fixed layout: a consumer reads it on its own (to name the
/// delivery's exchange and key) and copies the envelope whole into the delivery, so the two
/// never share the stores and loads of one copy. With the envelope first, its leading word
/// was stored alone and then loaded within a wider copy, which the processor cannot forward
/// from the store buffer.
#[derive(Debug, Clone)]
#[repr(C)]
pub(crate) struct MsgData {
    pub(crate) route: Route,
    pub(crate) envelope: Envelope,
}

/// How a message was routed to the queue that holds it. `None` is the default exchange with the
/// holding queue's name as the routing key and no `CC` keys; the rest share one allocation
/// between the copies of a routed message.
#[derive(Debug, Clone, Default)]
pub(crate) struct Route(Option<Arc<Routed>>);

#[derive(Debug)]
pub(crate) struct Routed {
    exchange: ShortStr,
    routing_key: ShortStr,
    /// `CC` keys: recorded in `x-death`, and dead letters are routed by them.
    cc: Box<[ShortStr]>,
    /// `BCC` keys (gone from the headers): dead letters are routed by them too.
    bcc: Box<[ShortStr]>,
}

impl Route {
    /// The default exchange, to the queue the routing key names.
    pub(crate) const TO_QUEUE: Route = Route(None);

    /// A message published to `exchange` with `routing_key` (and `cc` and `bcc` keys). A thread that
    /// publishes again with the exchange and key of its last routed publish shares that route
    /// instead of allocating one: a producer usually repeats them.
    pub(crate) fn routed(
        exchange: ShortStr,
        routing_key: ShortStr,
        cc: Box<[ShortStr]>,
        bcc: Box<[ShortStr]>,
    ) -> Route {
        thread_local! {
            /// This thread's last route without `CC` or `BCC` keys.
            static LAST: std::cell::RefCell<Option<Arc<Routed>>> = const { std::cell::RefCell::new(None) };
        }
        if cc.is_empty() && bcc.is_empty() {
            let shared = LAST.with(|last| {
                let mut last = last.try_borrow_mut().ok()?;
                if !last
                    .as_ref()
                    .is_some_and(|r| r.exchange == exchange && r.routing_key == routing_key)
                {
                    *last = Some(Arc::new(Routed {
                        exchange: exchange.clone(),
                        routing_key: routing_key.clone(),
                        cc: Box::default(),
                        bcc: Box::default(),
                    }));
                }
                last.clone()
            });
            if shared.is_some() {
                return Route(shared);
            }
        }
        Route(Some(Arc::new(Routed {
            exchange,
            routing_key,
            cc,
            bcc,
        })))
    }

    /// The delivery of `envelope`, held by the queue `queue`, with the exchange and routing key
    /// it was published with, built in one piece.
    #[inline]
    pub(crate) fn deliver(&self, queue: &ShortStr, envelope: Envelope, redelivered: bool, acker: Acker) -> Delivery {
        match &self.0 {
            None => Delivery::new(envelope, ShortStr::EMPTY, queue.clone(), redelivered, acker),
            Some(r) => Delivery::new(envelope, r.exchange.clone(), r.routing_key.clone(), redelivered, acker),
        }
    }

    /// The exchange, routing key, `CC` keys and `BCC` keys of a message held by the queue
    /// `queue`.
    #[inline]
    pub(crate) fn parts<'a>(&'a self, queue: &'a ShortStr) -> RouteParts<'a> {
        static EMPTY: ShortStr = ShortStr::EMPTY;
        match &self.0 {
            None => (&EMPTY, queue, &[], &[]),
            Some(r) => (&r.exchange, &r.routing_key, &r.cc, &r.bcc),
        }
    }
}

/// The exchange, routing key, `CC` keys and `BCC` keys of a route.
pub(crate) type RouteParts<'a> = (&'a ShortStr, &'a ShortStr, &'a [ShortStr], &'a [ShortStr]);

/// A message in one queue.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    /// Publish order within this queue: requeued classic messages go back to their place by it.
    pub(crate) seq: u64,
    pub(crate) data: MsgData,
    pub(crate) redelivered: bool,
    /// Times returned to the queue (quorum `x-delivery-count`).
    pub(crate) returns: u32,
    pub(crate) expires_at: Option<Instant>,
}

impl Msg {
    /// A message straight from the intake: never delivered, no expiry.
    #[inline]
    pub(crate) fn fresh(seq: u64, data: MsgData) -> Msg {
        Msg {
            seq,
            data,
            redelivered: false,
            returns: 0,
            expires_at: None,
        }
    }

    /// The envelope a consumer or `basic.get` receives from a queue of `kind`: quorum queues add
    /// `x-delivery-count` once it was returned (and to a first `basic.get`, `first_count`).
    pub(crate) fn delivered_envelope(&self, kind: QueueType, first_count: bool) -> Envelope {
        if kind == QueueType::Quorum && (self.returns > 0 || first_count) {
            let mut envelope = self.data.envelope.clone();
            envelope.headers_mut().insert(X_DELIVERY_COUNT, i64::from(self.returns));
            return envelope;
        }
        self.data.envelope.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{Msg, MsgData};
    use mqtransport_core::Envelope;

    /// Every message passes through the intake, the consumer's inbox and its held list: a
    /// message published to a queue by name is its envelope and one pointer-sized route.
    #[test]
    fn a_queued_message_is_its_envelope_and_one_pointer() {
        let pointer = std::mem::size_of::<usize>();
        assert_eq!(
            std::mem::size_of::<MsgData>(),
            std::mem::size_of::<Envelope>() + pointer
        );
        assert_eq!(std::mem::size_of::<Option<Msg>>(), std::mem::size_of::<Msg>());
    }
}
