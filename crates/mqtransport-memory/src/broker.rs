//! The broker shared by every connection: the exchanges (a core `Router`) and the queue map
//! behind one read-mostly lock, each queue behind its own lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use mqtransport_core::{
    Binding, Confirmation, DIRECT_REPLY_TO, Declared, Destination, Envelope, Error, FieldValue, Publish, Queue,
    QueueInfo, Result, Router, Scope, ShortStr, Topology,
};

use mqtransport_core::hash::FxHashMap as HashMap;

use crate::queue::{DeadLetter, Effects, Enqueued, MsgData, QueueCell, Route, is_cycle};
use crate::sync::lock;

/// A publish's confirmation, and the queue whose consumers its publisher is ahead of.
pub(crate) type Published = (Confirmation, Option<Arc<QueueCell>>);

/// Whether a routing key names a direct reply-to pseudo-queue (`amq.rabbitmq.reply-to.…`).
fn is_reply_key(key: &str) -> bool {
    key.strip_prefix(DIRECT_REPLY_TO)
        .is_some_and(|rest| rest.starts_with('.'))
}

pub(crate) struct Topo {
    pub(crate) router: Router,
    pub(crate) queues: HashMap<String, Arc<QueueCell>>,
}

pub(crate) struct BrokerInner {
    pub(crate) name: String,
    pub(crate) vhost: String,
    topo: RwLock<Topo>,
    /// Direct reply-to pseudo-queues by their full `amq.rabbitmq.reply-to.…` name.
    pub(crate) replies: Mutex<HashMap<String, Arc<QueueCell>>>,
    next_id: AtomicU64,
    /// Bumped whenever a queue is added or removed: threads cache the queue a default-exchange
    /// routing key names, and a changed epoch tells them the cache is stale.
    epoch: AtomicU64,
    /// This broker in the per-thread route caches.
    id: u64,
    pub(crate) max_message_size: usize,
    /// This broker, for the timer tasks of its queues (which must not keep it alive).
    me: Weak<BrokerInner>,
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
/// costs more than the comparison (it took 2.6-3.4% of the CPU in the throughput benches).
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

/// Distinguishes brokers in the per-thread route caches.
static BROKER_IDS: AtomicU64 = AtomicU64::new(1);

impl BrokerInner {
    pub(crate) fn new(name: String, max_message_size: usize) -> Arc<Self> {
        Arc::new_cyclic(|me| BrokerInner {
            name,
            vhost: "/".into(),
            topo: RwLock::new(Topo {
                router: Router::with_builtin_exchanges(),
                queues: HashMap::default(),
            }),
            replies: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            id: BROKER_IDS.fetch_add(1, Ordering::Relaxed),
            max_message_size,
            me: me.clone(),
        })
    }

    /// Applies what an operation on queue `q` asked for once its lock was released: wakes
    /// consumers, routes dead letters, deletes the queue if it lost its last consumer and is
    /// auto-delete, starts its timer.
    #[inline]
    pub(crate) fn apply(&self, q: &QueueCell, fx: Effects) {
        if fx.is_empty() {
            return;
        }
        self.apply_some(q, fx);
    }

    fn apply_some(&self, q: &QueueCell, fx: Effects) {
        let Effects {
            dead,
            wake,
            auto_delete,
            start_timer,
        } = fx;
        wake.wake_all();
        if start_timer {
            self.start_timer(q);
        }
        if !dead.is_empty() {
            self.route_dead_letters(dead);
        }
        if auto_delete {
            self.auto_delete_queue(&q.name);
        }
    }

    /// Starts the timer task of `q`, which expires its messages at their deadlines and the
    /// queue itself after `x-expires`. Without a tokio runtime there is none: `q` asks again
    /// with its next message that can expire.
    fn start_timer(&self, q: &QueueCell) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            q.timer_not_started();
            return;
        };
        runtime.spawn(timer_loop(self.me.clone(), q.downgrade(), q.timer_notify()));
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Topo> {
        self.topo.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Topo> {
        self.topo.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn queue_cell(&self, name: &str) -> Option<Arc<QueueCell>> {
        self.read().queues.get(name).cloned()
    }

    pub(crate) fn no_queue(&self, name: &str) -> Error {
        Error::broker(
            404,
            format!("NOT_FOUND - no queue '{name}' in vhost '{}'", self.vhost),
            Scope::Channel,
        )
    }

    pub(crate) fn locked(&self, name: &str) -> Error {
        Error::broker(
            405,
            format!(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                self.vhost
            ),
            Scope::Channel,
        )
    }

    /// The queue `name` as connection `conn` may use it: 404 if missing, 405 if another
    /// connection owns it exclusively.
    pub(crate) fn queue_for(&self, conn: u64, name: &str) -> Result<Arc<QueueCell>> {
        let q = self.queue_cell(name).ok_or_else(|| self.no_queue(name))?;
        match q.owner {
            Some(owner) if owner != conn => Err(self.locked(name)),
            _ => Ok(q),
        }
    }

    fn generate_name(&self) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut state = nanos ^ self.next_id().rotate_left(32) ^ (self as *const Self as u64);
        let mut name = String::from("amq.gen-");
        for _ in 0..22 {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            name.push(char::from(ALPHABET[(z % 64) as usize]));
        }
        name
    }

    pub(crate) fn declare(self: &Arc<Self>, conn: u64, topology: &Topology) -> Result<Declared> {
        let mut topo = self.write();
        for x in &topology.exchanges {
            topo.router.declare_exchange(x)?;
        }
        let mut declared = Declared::default();
        for q in &topology.queues {
            declared.queues.push(self.declare_queue(&mut topo, conn, q)?);
        }
        let last_server_named = declared.last_server_named(topology).map(str::to_owned);
        for b in &topology.bindings {
            let mut b = b.clone();
            if let Destination::Queue(name) = &mut b.destination
                && name.is_empty()
            {
                match &last_server_named {
                    Some(n) => name.clone_from(n),
                    None => {
                        return Err(Error::broker(
                            404,
                            "NOT_FOUND - no previously declared queue",
                            Scope::Channel,
                        ));
                    }
                }
            }
            self.bind(&mut topo, conn, &b)?;
        }
        Ok(declared)
    }

    fn declare_queue(self: &Arc<Self>, topo: &mut Topo, conn: u64, q: &Queue) -> Result<QueueInfo> {
        if q.name == DIRECT_REPLY_TO {
            return Ok(reply_info());
        }
        q.validate(&self.vhost)?;
        if let Some(existing) = topo.queues.get(&q.name) {
            if existing.owner.is_some_and(|o| o != conn) || q.exclusive != existing.owner.is_some() {
                return Err(self.locked(&q.name));
            }
            q.check_equivalent(&existing.decl, &self.vhost)?;
            return Ok(existing.info());
        }
        let name = if q.name.is_empty() {
            self.generate_name()
        } else {
            q.name.clone()
        };
        let cell = QueueCell::new(name.clone(), q.clone(), q.exclusive.then_some(conn), &self.vhost);
        if cell.claim_timer() {
            self.start_timer(&cell);
        }
        topo.queues.insert(name.clone(), Arc::clone(&cell));
        self.epoch.fetch_add(1, Ordering::Release);
        Ok(QueueInfo {
            name,
            message_count: 0,
            consumer_count: 0,
        })
    }

    fn bind(&self, topo: &mut Topo, conn: u64, b: &Binding) -> Result<()> {
        b.validate()?;
        topo.router.exchange(&b.source)?;
        if let Destination::Queue(q) = &b.destination {
            match topo.queues.get(q) {
                None => return Err(self.no_queue(q)),
                Some(cell) if cell.owner.is_some_and(|o| o != conn) => return Err(self.locked(q)),
                Some(_) => {}
            }
        }
        topo.router.bind(b)
    }

    pub(crate) fn unbind(&self, b: &Binding) -> Result<()> {
        self.write().router.unbind(b).map(drop)
    }

    pub(crate) fn exchange_exists(&self, name: &str) -> Result<()> {
        self.read().router.exchange(name).map(drop)
    }

    pub(crate) fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        self.write().router.delete_exchange(name, if_unused).map(drop)
    }

    pub(crate) fn queue_info(&self, conn: u64, name: &str) -> Result<QueueInfo> {
        if name == DIRECT_REPLY_TO {
            return Ok(reply_info());
        }
        Ok(self.queue_for(conn, name)?.info())
    }

    /// Deletes a queue: its consumers are cancelled, its messages discarded.
    pub(crate) fn delete_queue(&self, conn: u64, name: &str, if_unused: bool, if_empty: bool) -> Result<u32> {
        let Some(q) = self.queue_cell(name) else {
            return Ok(0);
        };
        if q.owner.is_some_and(|o| o != conn) {
            return Err(self.locked(name));
        }
        q.check_deletable(if_unused, if_empty)?;
        Ok(self.remove_queue(&q))
    }

    /// Removes `q` from the broker if it is still the queue under its name.
    fn remove_queue(&self, q: &Arc<QueueCell>) -> u32 {
        {
            let mut topo = self.write();
            match topo.queues.get(&q.name) {
                Some(current) if Arc::ptr_eq(current, q) => {}
                _ => return 0,
            }
            topo.queues.remove(&q.name);
            self.epoch.fetch_add(1, Ordering::Release);
            topo.router.remove_destination(&Destination::Queue(q.name.clone()));
        }
        let mut fx = Effects::default();
        let count = q.mark_deleted(&mut fx);
        self.apply(q, fx);
        count
    }

    /// Deletes an auto-delete queue that has just lost its last consumer.
    pub(crate) fn auto_delete_queue(&self, name: &str) {
        let Some(q) = self.queue_cell(name) else {
            return;
        };
        if q.is_unused_auto_delete() {
            self.remove_queue(&q);
        }
    }

    /// Deletes a queue whose `x-expires` idle time passed.
    pub(crate) fn expire_queue(&self, name: &str) {
        if let Some(q) = self.queue_cell(name) {
            self.remove_queue(&q);
        }
    }

    /// Deletes every exclusive queue `conn` owns (at connection close).
    pub(crate) fn drop_exclusive(&self, conn: u64) {
        let owned: Vec<Arc<QueueCell>> = self
            .read()
            .queues
            .values()
            .filter(|q| q.owner == Some(conn))
            .cloned()
            .collect();
        for q in owned {
            self.remove_queue(&q);
        }
    }

    /// Every queue (for connection close).
    pub(crate) fn all_queues(&self) -> Vec<Arc<QueueCell>> {
        let mut all: Vec<_> = self.read().queues.values().cloned().collect();
        all.extend(lock(&self.replies).values().cloned());
        all
    }

    /// Routes and enqueues a message; the confirmation follows RabbitMQ's rules. With it comes
    /// the queue whose consumers the publisher is ahead of (see [`crate::flow`]), if any: the
    /// publisher waits for them before it reports the confirmation.
    #[inline]
    pub(crate) fn publish(&self, publish: Publish, reply_to: Option<&str>) -> Result<Published> {
        let Publish {
            exchange,
            routing_key,
            mandatory,
            envelope,
        } = publish;
        if envelope.body.len() > self.max_message_size {
            return Err(Error::oversized(
                &exchange,
                &routing_key,
                envelope.body.len(),
                self.max_message_size,
            ));
        }
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
            && is_plain(&publish.envelope);
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
            check_expiration(e)?;
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
            route: Route::routed(exchange, routing_key, cc.into_boxed_slice()),
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

    /// Republishes dead letters to their exchanges, following RabbitMQ's cycle rule; further
    /// dead letters they cause are handled in the same loop.
    pub(crate) fn route_dead_letters(&self, dead: Vec<DeadLetter>) {
        // First in, first out: dead letters keep the order they died in.
        let mut work: std::collections::VecDeque<DeadLetter> = dead.into();
        // A hard bound against pathological configurations; RabbitMQ's cycle rule ends every
        // expiry-only cycle long before this.
        let mut budget = 100_000usize;
        while let Some(dl) = work.pop_front() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return;
            }
            let targets: Vec<Arc<QueueCell>> = {
                let topo = self.read();
                let keys: Vec<&str> = dl.routing_keys.iter().map(ShortStr::as_str).collect();
                match topo
                    .router
                    .route(&dl.exchange, &keys, dl.envelope.properties().headers.as_ref())
                {
                    Ok(routed) => routed
                        .queues()
                        .iter()
                        .filter_map(|q| topo.queues.get(*q).cloned())
                        .collect(),
                    // A missing dead-letter exchange drops the message silently.
                    Err(_) => continue,
                }
            };
            let mut keys = dl.routing_keys.into_iter();
            let data = MsgData {
                route: Route::routed(dl.exchange, keys.next().unwrap_or_default(), keys.collect()),
                envelope: dl.envelope,
            };
            for q in targets {
                if is_cycle(&q.name, &data.envelope) {
                    continue;
                }
                let mut fx = Effects::default();
                q.enqueue(data.clone(), &mut fx);
                work.extend(fx.dead.drain(..));
                self.apply(&q, fx);
            }
        }
    }

    /// Requeues what connection `conn` holds in `q` and removes its consumers (connection close).
    pub(crate) fn release_connection(&self, q: &QueueCell, conn: u64) {
        let mut fx = Effects::default();
        q.release_connection(conn, &mut fx);
        self.apply(q, fx);
    }

    /// Offers a message to queue `q`: through its intake when nothing about the queue's state
    /// can change the outcome, else under its lock.
    #[inline]
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

fn reply_info() -> QueueInfo {
    QueueInfo {
        name: DIRECT_REPLY_TO.into(),
        message_count: 0,
        consumer_count: 1,
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

/// Validates an `expiration` property as RabbitMQ does.
fn check_expiration(e: &str) -> Result<()> {
    let invalid = |why: String| {
        Error::broker(
            406,
            format!("PRECONDITION_FAILED - invalid expiration '{e}': {why}"),
            Scope::Channel,
        )
    };
    let digits_end = e
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(e.len(), |(i, _)| i);
    let (num, rest) = e.split_at(digits_end);
    let Ok(n) = num.parse::<i64>() else {
        return Err(invalid("no_integer".into()));
    };
    if !rest.is_empty() {
        return Err(invalid(format!("{{leftover_string,\"{rest}\"}}")));
    }
    if n < 0 {
        return Err(invalid(format!("{{value_negative,{n}}}")));
    }
    Ok(())
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
    let keys = |name: &str, v: Option<&FieldValue>| -> Result<Vec<ShortStr>> {
        match v {
            None => Ok(Vec::new()),
            Some(FieldValue::Array(a)) => Ok(a.iter().filter_map(|k| k.as_str().map(ShortStr::from)).collect()),
            Some(other) => Err(Error::broker(
                406,
                format!(
                    "PRECONDITION_FAILED - invalid message: {{unacceptable_type_in_header,\"{name}\",{}}}",
                    other.type_name()
                ),
                Scope::Channel,
            )),
        }
    };
    let cc = keys("CC", headers.get("CC"))?;
    let bcc = keys("BCC", headers.get("BCC"))?;
    if !bcc.is_empty() || headers.contains_key("BCC") {
        headers.remove("BCC");
    }
    Ok((cc, bcc))
}

/// The timer task of a queue: expires messages at the head as their deadlines come, and the
/// queue itself after `x-expires` unused. It holds neither the broker nor the queue, and ends
/// with either, or when the queue has nothing left that can expire.
async fn timer_loop(broker: Weak<BrokerInner>, queue: Weak<QueueCell>, notify: Arc<tokio::sync::Notify>) {
    loop {
        let next = {
            let (Some(b), Some(q)) = (broker.upgrade(), queue.upgrade()) else {
                return;
            };
            let tick = q.timer_tick(tokio::time::Instant::now());
            b.apply(&q, tick.fx);
            if tick.queue_expired {
                b.expire_queue(&q.name);
                return;
            }
            match tick.next {
                Some(n) => n,
                None => return,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = notify.notified() => {}
        }
    }
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
