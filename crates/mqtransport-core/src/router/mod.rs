//! Exchange routing, shared by every transport that has no native exchanges (and by the embedded
//! broker): direct, fanout, topic (a trie), headers, exchange-to-exchange bindings without loops,
//! alternate exchanges, and auto-delete exchanges.
//!
//! ```
//! use mqtransport_core::router::Router;
//! use mqtransport_core::topology::{Binding, Exchange};
//!
//! let mut router = Router::with_builtin_exchanges();
//! router.declare_exchange(&Exchange::topic("events"))?;
//! router.bind(&Binding::queue("audit", "events", "orders.#"))?;
//! router.bind(&Binding::queue("eu", "events", "*.eu"))?;
//! let routed = router.route("events", &["orders.eu"], None)?;
//! assert_eq!(routed.queues(), ["audit", "eu"]);
//! # Ok::<(), mqtransport_core::Error>(())
//! ```

use crate::error::{Error, Result, Scope};
use crate::field::{FieldTable, FieldValue};
use crate::hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use crate::topology::{BUILTIN_EXCHANGES, Binding, Destination, Exchange, ExchangeKind};

/// The result of routing one message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routed<'a> {
    queues: Vec<&'a str>,
    /// `Some(name)` of the default exchange's target: the router does not know which queues exist,
    /// so the caller checks it.
    by_name: Option<&'a str>,
}

impl<'a> Routed<'a> {
    /// The queues that get a copy, each once, sorted. For the default exchange this is the queue
    /// named by the routing key (the caller checks that it exists).
    pub fn queues(&self) -> &[&'a str] {
        &self.queues
    }

    /// Whether the message was routed through the default exchange.
    pub fn is_default_exchange(&self) -> bool {
        self.by_name.is_some()
    }

    /// Whether no queue gets the message.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

mod headers;
mod topic;

use headers::{HeadersBinding, XMatch};
use topic::{TrieNode, words};

#[derive(Debug)]
enum Table {
    Direct(HashMap<String, Vec<Destination>>),
    Fanout(Vec<Destination>),
    Topic(Box<TrieNode>),
    Headers(Vec<HeadersBinding>),
}

#[derive(Debug)]
struct Entry {
    exchange: Exchange,
    table: Table,
    /// Every binding with this exchange as source, to deduplicate, unbind and count.
    bindings: HashSet<BindingId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BindingId {
    destination: Destination,
    routing_key: String,
    /// The arguments, rendered: bindings differing only in arguments are distinct.
    arguments: String,
}

impl BindingId {
    fn of(b: &Binding) -> Self {
        BindingId {
            destination: b.destination.clone(),
            routing_key: b.routing_key.clone(),
            arguments: if b.arguments.is_empty() {
                String::new()
            } else {
                format!("{:?}", b.arguments)
            },
        }
    }
}

/// The exchanges of one virtual host with their bindings.
#[derive(Debug, Default)]
pub struct Router {
    exchanges: HashMap<String, Entry>,
    vhost: String,
}

impl Router {
    /// A router with no exchanges (the default exchange is always there).
    pub fn new() -> Self {
        Router {
            exchanges: HashMap::default(),
            vhost: "/".into(),
        }
    }

    /// A router with the `amq.direct`, `amq.fanout`, `amq.topic`, `amq.headers` and `amq.match`
    /// exchanges every AMQP broker has.
    pub fn with_builtin_exchanges() -> Self {
        let mut r = Router::new();
        for (name, kind) in BUILTIN_EXCHANGES {
            r.insert(Exchange::new(name, kind));
        }
        r
    }

    fn insert(&mut self, exchange: Exchange) {
        let table = match exchange.kind {
            ExchangeKind::Direct => Table::Direct(HashMap::default()),
            ExchangeKind::Fanout => Table::Fanout(Vec::new()),
            ExchangeKind::Topic => Table::Topic(Box::default()),
            ExchangeKind::Headers => Table::Headers(Vec::new()),
        };
        self.exchanges.insert(
            exchange.name.clone(),
            Entry {
                exchange,
                table,
                bindings: HashSet::default(),
            },
        );
    }

    fn not_found(&self, name: &str) -> Error {
        Error::broker(
            404,
            format!("NOT_FOUND - no exchange '{name}' in vhost '{}'", self.vhost),
            Scope::Channel,
        )
    }

    /// Declares an exchange: creates it, or checks that it is equivalent to the existing one.
    /// Returns whether it was created.
    pub fn declare_exchange(&mut self, exchange: &Exchange) -> Result<bool> {
        if let Some(existing) = self.exchanges.get(&exchange.name) {
            exchange.check_equivalent(&existing.exchange, &self.vhost)?;
            return Ok(false);
        }
        exchange.validate()?;
        self.insert(exchange.clone());
        Ok(true)
    }

    /// The exchange called `name` (passive declare). The default exchange (`""`) is refused.
    pub fn exchange(&self, name: &str) -> Result<&Exchange> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        self.exchanges
            .get(name)
            .map(|e| &e.exchange)
            .ok_or_else(|| self.not_found(name))
    }

    /// Deletes an exchange and every binding from or to it. A missing exchange is not an error.
    /// Returns the names of auto-delete exchanges deleted as a consequence.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<Vec<String>> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if BUILTIN_EXCHANGES.iter().any(|(n, _)| *n == name) {
            return Err(Error::broker(
                403,
                format!(
                    "ACCESS_REFUSED - deletion of system exchange '{name}' in vhost '{}' not allowed",
                    self.vhost
                ),
                Scope::Channel,
            ));
        }
        let Some(entry) = self.exchanges.get(name) else {
            return Ok(Vec::new());
        };
        if if_unused && !entry.bindings.is_empty() {
            return Err(Error::broker(
                406,
                format!(
                    "PRECONDITION_FAILED - exchange '{name}' in vhost '{}' in use",
                    self.vhost
                ),
                Scope::Channel,
            ));
        }
        self.exchanges.remove(name);
        Ok(self.remove_destination(&Destination::Exchange(name.to_owned())))
    }

    /// Adds a binding. The source exchange, and a destination exchange, must exist (the caller
    /// checks a destination queue). Binding twice is a no-op.
    pub fn bind(&mut self, binding: &Binding) -> Result<()> {
        binding.validate()?;
        let Some(source) = self.exchanges.get(&binding.source) else {
            return Err(self.not_found(&binding.source));
        };
        let headers = match source.exchange.kind {
            ExchangeKind::Headers => Some(XMatch::parse(&binding.arguments)?),
            _ => None,
        };
        if let Destination::Exchange(d) = &binding.destination
            && !self.exchanges.contains_key(d)
        {
            return Err(self.not_found(d));
        }
        let Some(entry) = self.exchanges.get_mut(&binding.source) else {
            return Err(self.not_found(&binding.source));
        };
        if !entry.bindings.insert(BindingId::of(binding)) {
            return Ok(());
        }
        let destination = binding.destination.clone();
        match &mut entry.table {
            Table::Direct(map) => map.entry(binding.routing_key.clone()).or_default().push(destination),
            Table::Fanout(list) => list.push(destination),
            Table::Topic(trie) => trie.insert(&binding.routing_key, destination),
            Table::Headers(list) => {
                let mode = headers.unwrap_or(XMatch::All { with_x: false });
                let with_x = matches!(mode, XMatch::All { with_x: true } | XMatch::Any { with_x: true });
                let keys = binding
                    .arguments
                    .iter()
                    .filter(|(k, _)| *k != "x-match" && (with_x || !k.starts_with("x-")))
                    .map(|(k, v)| (k.to_owned(), (*v != FieldValue::Void).then(|| v.clone())))
                    .collect();
                list.push(HeadersBinding {
                    mode,
                    keys,
                    destination,
                });
            }
        }
        Ok(())
    }

    /// Removes a binding; removing one that does not exist is not an error. Returns the names of
    /// auto-delete exchanges deleted because they lost their last binding.
    pub fn unbind(&mut self, binding: &Binding) -> Result<Vec<String>> {
        binding.validate()?;
        let Some(entry) = self.exchanges.get_mut(&binding.source) else {
            return Ok(Vec::new());
        };
        let id = BindingId::of(binding);
        if !entry.bindings.remove(&id) {
            return Ok(Vec::new());
        }
        remove_from_table(&mut entry.table, &id);
        let mut deleted = Vec::new();
        if entry.bindings.is_empty() && entry.exchange.auto_delete {
            let name = binding.source.clone();
            self.exchanges.remove(&name);
            deleted.extend(self.remove_destination(&Destination::Exchange(name.clone())));
            deleted.push(name);
        }
        Ok(deleted)
    }

    /// Removes every binding to `destination` (a deleted queue or exchange), cascading to
    /// auto-delete exchanges. Returns the auto-deleted exchanges.
    pub fn remove_destination(&mut self, destination: &Destination) -> Vec<String> {
        let mut deleted = Vec::new();
        let mut pending = vec![destination.clone()];
        while let Some(dest) = pending.pop() {
            let mut emptied = Vec::new();
            for (name, entry) in &mut self.exchanges {
                let ids: Vec<BindingId> = entry
                    .bindings
                    .iter()
                    .filter(|id| id.destination == dest)
                    .cloned()
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                for id in &ids {
                    entry.bindings.remove(id);
                    remove_from_table(&mut entry.table, id);
                }
                if entry.bindings.is_empty() && entry.exchange.auto_delete {
                    emptied.push(name.clone());
                }
            }
            for name in emptied {
                self.exchanges.remove(&name);
                pending.push(Destination::Exchange(name.clone()));
                deleted.push(name);
            }
        }
        deleted
    }

    /// Number of bindings whose source is `exchange`.
    pub fn binding_count(&self, exchange: &str) -> usize {
        self.exchanges.get(exchange).map_or(0, |e| e.bindings.len())
    }

    /// Routes a message published to `exchange` with routing keys `keys` (the routing key, then
    /// any `CC`/`BCC` keys) and `headers`. Follows exchange-to-exchange bindings, each exchange
    /// once; an exchange none of whose bindings matched passes the message to its own alternate
    /// exchange, as RabbitMQ does (so an exchange that matched only a binding to an exchange
    /// without queues does not use its alternate). Publishing to a missing exchange is
    /// `NOT_FOUND`, to an internal one `ACCESS_REFUSED`.
    pub fn route<'a>(&'a self, exchange: &str, keys: &[&'a str], headers: Option<&FieldTable>) -> Result<Routed<'a>> {
        if let Some(entry) = self.exchanges.get(exchange)
            && entry.exchange.internal
        {
            return Err(Error::broker(
                403,
                format!(
                    "ACCESS_REFUSED - cannot publish to internal exchange '{exchange}' in vhost '{}'",
                    self.vhost
                ),
                Scope::Channel,
            ));
        }
        self.route_dead_letter(exchange, keys, headers)
    }

    /// [`route`](Self::route) for a dead letter: its exchange may be internal (only publishing
    /// to an internal exchange is refused).
    pub fn route_dead_letter<'a>(
        &'a self,
        exchange: &str,
        keys: &[&'a str],
        headers: Option<&FieldTable>,
    ) -> Result<Routed<'a>> {
        if exchange.is_empty() {
            let mut queues: Vec<&'a str> = keys.to_vec();
            queues.sort_unstable();
            queues.dedup();
            return Ok(Routed {
                by_name: keys.first().copied(),
                queues,
            });
        }
        let Some(entry) = self.exchanges.get(exchange) else {
            return Err(self.not_found(exchange));
        };
        let mut queues: Vec<&'a str> = Vec::new();
        let mut visited: Vec<&'a str> = vec![entry.exchange.name.as_str()];
        let mut work: Vec<&'a Entry> = vec![entry];
        let mut matched: Vec<&'a Destination> = Vec::new();
        while let Some(e) = work.pop() {
            matched.clear();
            e.matching(keys, headers, &mut matched);
            let alternate = if matched.is_empty() {
                e.exchange.alternate()
            } else {
                None
            };
            let next_exchanges = matched
                .iter()
                .filter_map(|d| match d {
                    Destination::Queue(q) => {
                        queues.push(q);
                        None
                    }
                    Destination::Exchange(x) => Some(x.as_str()),
                })
                .chain(alternate);
            for name in next_exchanges {
                if let Some(next) = self.exchanges.get(name)
                    && !visited.contains(&next.exchange.name.as_str())
                {
                    visited.push(&next.exchange.name);
                    work.push(next);
                }
            }
        }
        queues.sort_unstable();
        queues.dedup();
        Ok(Routed { queues, by_name: None })
    }
}

impl Entry {
    /// Appends to `out` the destinations of this exchange's bindings that match.
    fn matching<'a>(&'a self, keys: &[&str], headers: Option<&FieldTable>, out: &mut Vec<&'a Destination>) {
        match &self.table {
            Table::Direct(map) => {
                for k in keys {
                    if let Some(d) = map.get(*k) {
                        out.extend(d.iter());
                    }
                }
            }
            Table::Fanout(list) => out.extend(list.iter()),
            Table::Topic(trie) => {
                let mut split: Vec<&str> = Vec::new();
                for k in keys {
                    split.clear();
                    split.extend(words(k));
                    trie.collect(&split, out);
                }
            }
            Table::Headers(list) => {
                out.extend(list.iter().filter(|b| b.matches(headers)).map(|b| &b.destination));
            }
        }
    }
}

fn default_exchange_refused() -> Error {
    Error::broker(
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
        Scope::Channel,
    )
}

fn remove_from_table(table: &mut Table, id: &BindingId) {
    match table {
        Table::Direct(map) => {
            if let Some(list) = map.get_mut(&id.routing_key) {
                if let Some(i) = list.iter().position(|d| *d == id.destination) {
                    list.swap_remove(i);
                }
                if list.is_empty() {
                    map.remove(&id.routing_key);
                }
            }
        }
        Table::Fanout(list) => {
            if let Some(i) = list.iter().position(|d| *d == id.destination) {
                list.swap_remove(i);
            }
        }
        Table::Topic(trie) => {
            let pattern: Vec<&str> = words(&id.routing_key).collect();
            trie.remove(&pattern, &id.destination);
        }
        Table::Headers(list) => {
            // Headers bindings are few; the rendered arguments identify the one to remove.
            if let Some(i) = list.iter().position(|b| b.destination == id.destination) {
                list.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests;
