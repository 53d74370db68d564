//! Publishing on the embedded broker: routing by the exchange and RabbitMQ's rules for
//! confirms, returns and properties, and the per-thread route cache that serves the common
//! publish (to a queue by name through the default exchange) without the topology lock.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use mqtransport_core::{
    Confirmation, DEFAULT_FRAME_MAX, DIRECT_REPLY_TO, Envelope, Error, FieldValue, Publish, Result, Scope, ShortStr,
    publish_rules,
};

use crate::broker::BrokerInner;
use crate::queue::{Effects, Enqueued, MsgData, QueueCell, Route};
use crate::sync::lock;

/// A publish's confirmation, and the queue whose consumers its publisher is ahead of.
pub(crate) type Published = (Confirmation, Option<Arc<QueueCell>>);

/// Whether a routing key names a direct reply-to pseudo-queue (`amq.rabbitmq.reply-to.…`).
fn is_reply_key(key: &str) -> bool {
    key.strip_prefix(DIRECT_REPLY_TO)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The queues this thread published to through the default exchange lately, each valid while
/// its broker's epoch is unchanged. A thread's own cache needs no lock, and a publish touches
/// neither the broker's topology lock nor the queue's reference count.
struct RouteCache {
    /// Most recent last.
    entries: Vec<RouteEntry>,
}

/// `(broker id, epoch, routing key, queue, broker)`: the broker held weakly, so that entries of
/// a broker that is gone can be told and dropped.
type RouteEntry = (u64, u64, ShortStr, Arc<QueueCell>, Weak<BrokerInner>);

/// `a == b` for the short names the route cache compares on every publish: inline, in at most
/// two word compares (overlapping when the length is not a word's), where a call to `memcmp`
/// costs more than the comparison itself.
/// Names longer than 16 bytes still go to `memcmp`.
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    fn ends<const N: usize>(s: &[u8]) -> Option<(&[u8; N], &[u8; N])> {
        Some((s.first_chunk::<N>()?, s.last_chunk::<N>()?))
    }
    match a.len() {
        0..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..8 => ends::<4>(a) == ends::<4>(b),
        8..=16 => ends::<8>(a) == ends::<8>(b),
        _ => a == b,
    }
}

thread_local! {
    static ROUTES: std::cell::RefCell<RouteCache> = const { std::cell::RefCell::new(RouteCache { entries: Vec::new() }) };
}

/// A thread remembers this many routes.
const ROUTE_CACHE_SIZE: usize = 16;

impl BrokerInner {
    /// Routes and enqueues a message; the confirmation follows RabbitMQ's rules. With it comes
    /// the queue whose consumers the publisher is ahead of (see [`crate::flow`]), if any: the
    /// publisher waits for them before it reports the confirmation.
    #[inline]
    pub(crate) fn publish(&self, publish: Publish, reply_to: Option<&str>) -> Result<Published> {
        publish.check_size(self.max_message_size, DEFAULT_FRAME_MAX)?;
        let Publish {
            exchange,
            routing_key,
            mandatory,
            envelope,
        } = publish;
        self.publish_routed(exchange, routing_key, mandatory, envelope, reply_to)
    }

    /// [`publish`](Self::publish) for the common case, in place: the default exchange, to a
    /// queue, with no property the broker acts on, goes straight to the queue found in this
    /// thread's route cache, and only its envelope is taken out of `publish`. `None`, with
    /// `publish` untouched, for every other publish.
    #[inline]
    pub(crate) fn publish_to_queue_in_place(&self, publish: &mut Publish) -> Option<Published> {
        let plain = publish.exchange.is_empty()
            && publish.envelope.body.len() <= self.max_message_size
            && is_plain(&publish.envelope)
            && publish.envelope.properties().check_frame(DEFAULT_FRAME_MAX).is_ok();
        if !plain {
            return None;
        }
        // A producer usually publishes to the queue it published to last: the most recent
        // route is checked first, without reordering the cache or leaving the thread-local.
        let epoch = self.epoch.load(Ordering::Acquire);
        let hit = ROUTES.with(|cache| {
            let cache = cache.try_borrow().ok()?;
            let last = cache.entries.last()?;
            if !self.cached_route_to(last, epoch, &publish.routing_key) {
                return None;
            }
            let q = &last.3;
            Some(self.offer_to(q, std::mem::take(&mut publish.envelope)))
        });
        if let Some(offered) = hit {
            return Some(published(offered));
        }
        // Checked only here: the route cache holds declared queues, and no declared queue can
        // have the reserved name of a direct reply-to pseudo-queue.
        if is_reply_key(&publish.routing_key) {
            return None;
        }
        let envelope = std::mem::take(&mut publish.envelope);
        Some(self.publish_to_queue(envelope, &publish.routing_key, publish.mandatory))
    }

    /// [`publish`](Self::publish) for every message that needs more than the route cache:
    /// properties the broker acts on, an exchange, CC/BCC keys, direct reply-to.
    fn publish_routed(
        &self,
        exchange: ShortStr,
        routing_key: ShortStr,
        mandatory: bool,
        mut envelope: Envelope,
        reply_to: Option<&str>,
    ) -> Result<Published> {
        if let Some(e) = &envelope.properties().expiration {
            publish_rules::check_expiration(e)?;
        }
        if envelope.properties().reply_to.as_deref() == Some(DIRECT_REPLY_TO) {
            match reply_to {
                Some(name) => envelope.properties_mut().reply_to = Some(name.to_owned()),
                None => {
                    return Err(Error::broker(
                        406,
                        "PRECONDITION_FAILED - fast reply consumer does not exist",
                        Scope::Channel,
                    ));
                }
            }
        }
        let (cc, bcc) = take_cc_bcc(&mut envelope)?;

        // Direct reply-to: delivered to the waiting client; RabbitMQ still returns it as unroutable.
        if exchange.is_empty() && is_reply_key(&routing_key) {
            let target = lock(&self.replies).get(routing_key.as_str()).cloned();
            if let Some(q) = target {
                // The default exchange, to the queue the routing key names.
                self.offer(
                    &q,
                    MsgData {
                        envelope,
                        route: Route::TO_QUEUE,
                    },
                );
            }
            // A reply is never held back: the requester reads replies as they come.
            return Ok((unroutable(mandatory), None));
        }

        // The default exchange without CC/BCC names exactly one queue: skip the router, and
        // find the queue in this thread's route cache.
        if exchange.is_empty() && cc.is_empty() && bcc.is_empty() {
            return Ok(self.publish_to_queue(envelope, &routing_key, mandatory));
        }
        let targets: Vec<Arc<QueueCell>> = {
            let topo = self.read();
            let mut keys: Vec<&str> = Vec::with_capacity(1 + cc.len() + bcc.len());
            keys.push(&routing_key);
            keys.extend(cc.iter().map(ShortStr::as_str));
            keys.extend(bcc.iter().map(ShortStr::as_str));
            let routed = topo
                .router
                .route(&exchange, &keys, envelope.properties().headers.as_ref())?;
            routed
                .queues()
                .iter()
                .filter_map(|q| topo.queues.get(*q).cloned())
                .collect()
        };
        if targets.is_empty() {
            return Ok((unroutable(mandatory), None));
        }
        // Copies share the body, the properties and the names: cloning allocates nothing.
        let data = MsgData {
            envelope,
            route: Route::routed(exchange, routing_key, cc.into_boxed_slice(), bcc.into_boxed_slice()),
        };
        let mut nacked = false;
        let mut ahead = None;
        for q in targets {
            match self.offer(&q, data.clone()) {
                Enqueued::Accepted => {}
                Enqueued::AcceptedAhead => ahead = Some(q),
                Enqueued::Rejected => nacked = true,
            }
        }
        let confirmation = if nacked {
            Confirmation::Nacked
        } else {
            Confirmation::Confirmed
        };
        Ok((confirmation, ahead))
    }

    /// Publishes through the default exchange, without CC/BCC, to the queue `name`, found in this
    /// thread's route cache instead of through the router.
    #[inline]
    fn publish_to_queue(&self, envelope: Envelope, name: &ShortStr, mandatory: bool) -> Published {
        self.with_cached_queue(name, |q| self.offer_to(q, envelope))
            .map_or_else(|| (unroutable(mandatory), None), published)
    }

    /// Whether a route cache entry is this broker's route to the queue `name` at `epoch`.
    #[inline]
    fn cached_route_to(&self, (broker, e, key, _, _): &RouteEntry, epoch: u64, name: &str) -> bool {
        *broker == self.id && *e == epoch && same_name(key.as_str(), name)
    }

    /// Runs `f` on the queue `name`, found in this thread's route cache while the topology is
    /// unchanged; `None` if there is no such queue.
    #[inline]
    fn with_cached_queue<T>(&self, name: &ShortStr, f: impl FnOnce(&Arc<QueueCell>) -> T) -> Option<T> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut f = Some(f);
        // A hit runs `f` on the cached queue in place, touching no reference count. The hit
        // moves to the end, where the search starts: a producer's next publish usually goes to
        // the same queue.
        let hit = ROUTES.with(|cache| {
            let mut cache = cache.try_borrow_mut().ok()?;
            let entries = &mut cache.entries;
            let last = entries.len().checked_sub(1)?;
            let i = entries
                .iter()
                .rposition(|entry| self.cached_route_to(entry, epoch, name))?;
            entries.swap(i, last);
            f.take().map(|f| f(&entries[last].3))
        });
        if hit.is_some() {
            return hit;
        }
        let q = self.read().queues.get(name.as_str()).cloned()?;
        let new_key = name.clone();
        ROUTES.with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut() {
                let id = self.id;
                // Stale routes of this broker go, and so do queues of brokers that are gone,
                // which the cache would otherwise keep alive.
                cache.entries.retain(|(broker, e, key, _, alive)| {
                    !(*broker == id && (*e != epoch || *key == new_key)) && alive.strong_count() > 0
                });
                if cache.entries.len() == ROUTE_CACHE_SIZE {
                    cache.entries.remove(0);
                }
                cache
                    .entries
                    .push((id, epoch, new_key, Arc::clone(&q), self.me.clone()));
            }
        });
        f.take().map(|f| f(&q))
    }

    /// Offers a message to queue `q`: through its intake when nothing about the queue's state
    /// can change the outcome, else under its lock.
    #[inline(always)]
    fn offer(&self, q: &QueueCell, data: MsgData) -> Enqueued {
        if q.takes_intake(&data) {
            return q.offer_to_intake(data);
        }
        let mut fx = Effects::default();
        let enqueued = q.enqueue(data, &mut fx);
        self.apply(q, fx);
        enqueued
    }

    /// Offers a message published to queue `q` by its name. What became of it leaves as two
    /// words (in registers, where the caller reads it): the outcome, and `q` if the publisher is
    /// ahead of its consumers; [`published`] makes the confirmation of it.
    #[inline]
    fn offer_to(&self, q: &Arc<QueueCell>, envelope: Envelope) -> (Enqueued, Option<Arc<QueueCell>>) {
        let data = MsgData {
            envelope,
            route: Route::TO_QUEUE,
        };
        match self.offer(q, data) {
            Enqueued::AcceptedAhead => (Enqueued::AcceptedAhead, Some(Arc::clone(q))),
            other => (other, None),
        }
    }
}

/// The confirmation of a publish [`BrokerInner::offer_to`] a queue, and the queue to wait for, if any.
#[inline]
fn published((enqueued, ahead): (Enqueued, Option<Arc<QueueCell>>)) -> Published {
    match enqueued {
        Enqueued::Rejected => (Confirmation::Nacked, None),
        Enqueued::Accepted | Enqueued::AcceptedAhead => (Confirmation::Confirmed, ahead),
    }
}

fn unroutable(mandatory: bool) -> Confirmation {
    if mandatory {
        Confirmation::Returned {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        }
    } else {
        Confirmation::Confirmed
    }
}

/// Whether the broker has nothing to do with the message's properties: no expiration, no
/// direct reply-to, no `CC`/`BCC` routing keys.
fn is_plain(envelope: &Envelope) -> bool {
    let p = envelope.properties();
    p.expiration.is_none() && p.reply_to.as_deref() != Some(DIRECT_REPLY_TO) && !has_cc_or_bcc(envelope)
}

/// Whether the message names extra routing keys in a `CC` or `BCC` header.
fn has_cc_or_bcc(envelope: &Envelope) -> bool {
    envelope
        .properties()
        .headers
        .as_ref()
        .is_some_and(|h| h.contains_key("CC") || h.contains_key("BCC"))
}

/// Takes the `CC` and `BCC` routing keys from the headers; `BCC` is removed from the message.
fn take_cc_bcc(envelope: &mut Envelope) -> Result<(Vec<ShortStr>, Vec<ShortStr>)> {
    // Only touch (and so copy-on-write) the properties when there is something to take.
    if !has_cc_or_bcc(envelope) {
        return Ok((Vec::new(), Vec::new()));
    }
    let Some(headers) = envelope.properties_mut().headers.as_mut() else {
        return Ok((Vec::new(), Vec::new()));
    };
    publish_rules::check_routing_headers(headers)?;
    let keys = |v: Option<&FieldValue>| -> Vec<ShortStr> {
        match v {
            Some(FieldValue::Array(a)) => a.iter().filter_map(|k| k.as_str().map(ShortStr::from)).collect(),
            _ => Vec::new(),
        }
    };
    let cc = keys(headers.get("CC"));
    let bcc = keys(headers.get("BCC"));
    if !bcc.is_empty() || headers.contains_key("BCC") {
        headers.remove("BCC");
    }
    Ok((cc, bcc))
}

#[cfg(test)]
mod tests {
    use super::same_name;

    /// Every length the word compares cover, and beyond: equal names match, and a name that
    /// differs in any one byte, or in length, does not.
    #[test]
    fn same_name_compares_every_byte() {
        for len in 0..=40usize {
            let a: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            assert!(same_name(&a, &a.clone()), "{len} bytes");
            assert!(!same_name(&a, &format!("{a}x")), "{len} bytes");
            for at in 0..len {
                let mut b = a.clone().into_bytes();
                b[at] = b'#';
                let b = String::from_utf8_lossy(&b).into_owned();
                assert!(!same_name(&a, &b), "{len} bytes, differing at {at}");
            }
        }
    }
}
