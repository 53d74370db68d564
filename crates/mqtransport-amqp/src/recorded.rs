//! What this transport declared, to declare again on a new connection: the recorded topology
//! and its re-declaration.
//!
//! Server-named queues cannot be declared by name: on a new connection each gets a new name,
//! and its bindings and consumers move with it. A server-named queue is therefore known by the
//! name it was first given, which [`Recording::resolve`] maps to its current one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use lapin::Connection;
use mqtransport_core::{Binding, Declared, Destination, Exchange, Queue, Result, Topology};

use crate::convert::{map_err, queue_unavailable};
use crate::declare::{bind, declare_exchange, declare_queue};

/// The recorded topology, shared by the transport (which records and forgets) and the
/// recovery of connections and consumers (which declares it again).
#[derive(Default)]
pub(crate) struct Recording(Mutex<Recorded>);

#[derive(Default)]
struct Recorded {
    exchanges: Vec<Exchange>,
    queues: Vec<Queue>,
    bindings: Vec<Binding>,
    /// Current names of server-named queues.
    server_named: Vec<String>,
    /// A server-named queue's first name → its current name.
    renames: HashMap<String, String>,
}

impl Recorded {
    fn resolve(&self, name: &str) -> String {
        self.renamed(name).cloned().unwrap_or_else(|| name.to_owned())
    }

    /// The current name of a server-named queue first named `name`, if it has changed.
    fn renamed(&self, name: &str) -> Option<&String> {
        self.renames.get(name).filter(|current| *current != name)
    }

    fn has_queue(&self, name: &str) -> bool {
        self.queues.iter().any(|q| q.name == name)
    }

    fn rename(&mut self, old: &str, new: &str) {
        for q in &mut self.queues {
            if q.name == old {
                q.name = new.to_owned();
            }
        }
        for b in &mut self.bindings {
            if let Destination::Queue(d) = &mut b.destination
                && d == old
            {
                *d = new.to_owned();
            }
        }
        for n in &mut self.server_named {
            if n == old {
                *n = new.to_owned();
            }
        }
        for v in self.renames.values_mut() {
            if v == old {
                *v = new.to_owned();
            }
        }
        self.renames.entry(old.to_owned()).or_insert_with(|| new.to_owned());
    }

    fn forget_queue(&mut self, queue: &str) {
        self.queues.retain(|q| q.name != queue);
        self.bindings
            .retain(|b| !matches!(&b.destination, Destination::Queue(d) if *d == queue));
    }
}

impl Recording {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current name of `name` (a server-named queue's first name maps to its latest).
    pub(crate) fn resolve(&self, name: &str) -> String {
        self.lock().resolve(name)
    }

    /// The current name of `name` if it is a server-named queue's first name and the queue has
    /// been renamed since; `None` for every other name (the publish path's common case, which
    /// then copies nothing).
    pub(crate) fn renamed(&self, name: &str) -> Option<String> {
        self.lock().renamed(name).cloned()
    }

    /// Records what `topology` declared (`declared` holds the names the broker gave).
    pub(crate) fn record(&self, topology: &Topology, declared: &Declared) {
        let mut r = self.lock();
        for x in &topology.exchanges {
            if !r.exchanges.iter().any(|e| e.name == x.name) {
                r.exchanges.push(x.clone());
            }
        }
        for (q, info) in topology.queues.iter().zip(&declared.queues) {
            if r.has_queue(&info.name) {
                continue;
            }
            let mut q = q.clone();
            if q.name.is_empty() {
                r.server_named.push(info.name.clone());
            }
            q.name.clone_from(&info.name);
            r.queues.push(q);
        }
        let last_server_named = declared.last_server_named(topology).map(str::to_owned);
        for b in &topology.bindings {
            let mut b = b.clone();
            if let (Destination::Queue(d), Some(n)) = (&mut b.destination, &last_server_named)
                && d.is_empty()
            {
                d.clone_from(n);
            }
            if !r.bindings.contains(&b) {
                r.bindings.push(b);
            }
        }
    }

    /// Forgets a deleted queue and its bindings.
    pub(crate) fn forget_queue(&self, queue: &str) {
        self.lock().forget_queue(queue);
    }

    /// Forgets a deleted exchange and the bindings from and to it.
    pub(crate) fn forget_exchange(&self, exchange: &str) {
        let mut r = self.lock();
        r.exchanges.retain(|x| x.name != exchange);
        r.bindings
            .retain(|b| b.source != exchange && !matches!(&b.destination, Destination::Exchange(d) if d == exchange));
    }

    /// Forgets a removed binding.
    pub(crate) fn forget_binding(&self, binding: &Binding) {
        self.lock().bindings.retain(|x| x != binding);
    }

    /// Forgets `queue` if it is auto-delete: the broker deletes it with its last consumer, and
    /// a later reconnect must not bring it back (as RabbitMQ's own clients do).
    pub(crate) fn forget_if_auto_delete(&self, queue: &str) {
        let mut r = self.lock();
        let name = r.resolve(queue);
        if r.queues.iter().any(|q| q.name == name && q.auto_delete) {
            r.forget_queue(&name);
        }
    }

    /// Declares everything recorded again on `conn` (a new connection), giving server-named
    /// queues new names. `still_wanted` is asked between queues: an `Err` stops the restore.
    ///
    /// A durable queue whose cluster node is down (see [`queue_unavailable`]) is skipped with
    /// its bindings, which the cluster keeps: it is there again when its node is, and its
    /// consumers wait for it. Everything else must succeed.
    pub(crate) async fn redeclare(&self, conn: &Connection, still_wanted: impl Fn() -> Result<()>) -> Result<()> {
        let open = async || {
            conn.create_channel()
                .await
                .map_err(|e| map_err(&e, "opening a channel to restore the topology"))
        };
        still_wanted()?;
        let mut ch = open().await?;
        let (exchanges, queues, server_named) = {
            let r = self.lock();
            (r.exchanges.clone(), r.queues.clone(), r.server_named.clone())
        };
        for x in &exchanges {
            declare_exchange(&ch, x).await?;
        }
        let mut unavailable = Vec::new();
        for q in &queues {
            still_wanted()?;
            if server_named.contains(&q.name) {
                let mut fresh = q.clone();
                fresh.name.clear();
                let info = declare_queue(&ch, &fresh).await?;
                self.lock().rename(&q.name, &info.name);
            } else {
                match declare_queue(&ch, q).await {
                    Ok(_) => {}
                    Err(e) if queue_unavailable(&e) => {
                        tracing::warn!(queue = %q.name, "not declared again on the new connection: {e}");
                        unavailable.push(q.name.clone());
                        // The refusal closed the channel.
                        ch = open().await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // Bindings are read after the renames above.
        let bindings = self.lock().bindings.clone();
        for b in &bindings {
            if matches!(&b.destination, Destination::Queue(q) if unavailable.contains(q)) {
                continue;
            }
            bind(&ch, b).await?;
        }
        let _ = ch.close(200, "OK".into()).await;
        Ok(())
    }
}
