//! The broker shared by every connection: the exchanges (a core `Router`) and the queue map
//! behind one read-mostly lock, each queue behind its own lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use mqtransport_core::{
    Binding, DIRECT_REPLY_TO, Declared, Destination, Error, Queue, QueueInfo, Result, Router, Scope, ShortStr, Topology,
};

use mqtransport_core::hash::FxHashMap as HashMap;

use crate::queue::{DeadLetter, Effects, MsgData, QueueCell, Route, is_cycle, replies};
use crate::sync::lock;

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
    pub(crate) epoch: AtomicU64,
    /// This broker in the per-thread route caches.
    pub(crate) id: u64,
    pub(crate) max_message_size: usize,
    /// This broker, for the timer tasks of its queues (which must not keep it alive).
    pub(crate) me: Weak<BrokerInner>,
}

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
        replies::no_queue(name, &self.vhost)
    }

    pub(crate) fn locked(&self, name: &str) -> Error {
        replies::locked(name, &self.vhost)
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
        // Counting a queue's messages hands consumers what they can take first; the effects of
        // that are applied once the topology lock is released.
        let mut observed = Vec::new();
        let declared = self.declare_locked(conn, topology, &mut observed);
        for (q, fx) in observed {
            self.apply(&q, fx);
        }
        declared
    }

    fn declare_locked(
        self: &Arc<Self>,
        conn: u64,
        topology: &Topology,
        observed: &mut Vec<(Arc<QueueCell>, Effects)>,
    ) -> Result<Declared> {
        let mut topo = self.write();
        for x in &topology.exchanges {
            topo.router.declare_exchange(x)?;
        }
        let mut declared = Declared::default();
        for q in &topology.queues {
            declared.queues.push(self.declare_queue(&mut topo, conn, q, observed)?);
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

    fn declare_queue(
        self: &Arc<Self>,
        topo: &mut Topo,
        conn: u64,
        q: &Queue,
        observed: &mut Vec<(Arc<QueueCell>, Effects)>,
    ) -> Result<QueueInfo> {
        if q.name == DIRECT_REPLY_TO {
            return Ok(reply_info());
        }
        q.validate(&self.vhost)?;
        if let Some(existing) = topo.queues.get(&q.name) {
            if existing.owner.is_some_and(|o| o != conn) || q.exclusive != existing.owner.is_some() {
                return Err(self.locked(&q.name));
            }
            q.check_equivalent(&existing.decl, &self.vhost)?;
            let mut fx = Effects::default();
            let info = existing.info(&mut fx);
            observed.push((Arc::clone(existing), fx));
            return Ok(info);
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
        let q = self.queue_for(conn, name)?;
        let mut fx = Effects::default();
        let info = q.info(&mut fx);
        self.apply(&q, fx);
        Ok(info)
    }

    /// Deletes a queue: its consumers are cancelled, its messages discarded.
    pub(crate) fn delete_queue(&self, conn: u64, name: &str, if_unused: bool, if_empty: bool) -> Result<u32> {
        let Some(q) = self.queue_cell(name) else {
            return Ok(0);
        };
        if q.owner.is_some_and(|o| o != conn) {
            return Err(self.locked(name));
        }
        let mut fx = Effects::default();
        let deletable = q.check_deletable(if_unused, if_empty, &mut fx);
        self.apply(&q, fx);
        deletable?;
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
                    .route_dead_letter(&dl.exchange, &keys, dl.envelope.properties().headers.as_ref())
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
                route: Route::routed(
                    dl.exchange,
                    keys.next().unwrap_or_default(),
                    keys.collect(),
                    Box::default(),
                ),
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
}

fn reply_info() -> QueueInfo {
    QueueInfo {
        name: DIRECT_REPLY_TO.into(),
        message_count: 0,
        consumer_count: 1,
    }
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
