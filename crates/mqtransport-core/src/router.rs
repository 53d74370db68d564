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

/// How a headers binding matches (`x-match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XMatch {
    All { with_x: bool },
    Any { with_x: bool },
}

impl XMatch {
    fn parse(args: &FieldTable) -> Result<Self> {
        let Some(v) = args.get("x-match") else {
            return Ok(XMatch::All { with_x: false });
        };
        let FieldValue::LongString(s) = v else {
            return Err(Error::broker(
                406,
                format!(
                    "PRECONDITION_FAILED - Invalid x-match field type {} (value {}); expected longstr",
                    v.type_name(),
                    v.display_value()
                ),
                Scope::Channel,
            ));
        };
        Ok(match &s[..] {
            b"all" => XMatch::All { with_x: false },
            b"any" => XMatch::Any { with_x: false },
            b"all-with-x" => XMatch::All { with_x: true },
            b"any-with-x" => XMatch::Any { with_x: true },
            other => {
                return Err(Error::broker(
                    406,
                    format!(
                        "PRECONDITION_FAILED - Invalid x-match field value <<\"{}\">>; expected all, any, all-with-x, or any-with-x",
                        String::from_utf8_lossy(other)
                    ),
                    Scope::Channel,
                ));
            }
        })
    }
}

#[derive(Debug)]
struct HeadersBinding {
    mode: XMatch,
    /// The keys that count, with `None` for a void value (a presence test).
    keys: Vec<(String, Option<FieldValue>)>,
    destination: Destination,
}

impl HeadersBinding {
    fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let test = |(k, v): &(String, Option<FieldValue>)| {
            let Some(actual) = headers.and_then(|h| h.get(k)) else {
                return false;
            };
            match v {
                None => true,
                Some(v) => v.loose_eq(actual),
            }
        };
        match self.mode {
            XMatch::All { .. } => self.keys.iter().all(test),
            XMatch::Any { .. } => self.keys.iter().any(test),
        }
    }
}

/// A topic trie: one node per binding word; `*` and `#` in their own slots.
#[derive(Debug, Default)]
struct TrieNode {
    children: HashMap<Box<str>, TrieNode>,
    star: Option<Box<TrieNode>>,
    hash: Option<Box<TrieNode>>,
    destinations: Vec<Destination>,
}

/// Splits a key or pattern: the empty string is zero words; otherwise split on `.`, keeping empty
/// words.
fn words(s: &str) -> impl Iterator<Item = &str> {
    let empty = s.is_empty();
    s.split('.').filter(move |_| !empty)
}

impl TrieNode {
    fn insert(&mut self, pattern: &str, destination: Destination) {
        let mut node = self;
        for w in words(pattern) {
            node = match w {
                "*" => node.star.get_or_insert_with(Default::default),
                "#" => node.hash.get_or_insert_with(Default::default),
                w => node.children.entry(w.into()).or_default(),
            };
        }
        node.destinations.push(destination);
    }

    /// Removes one `destination` under `pattern`; prunes empty nodes. Returns whether found.
    fn remove(&mut self, pattern: &[&str], destination: &Destination) -> bool {
        let Some((first, rest)) = pattern.split_first() else {
            return match self.destinations.iter().position(|d| d == destination) {
                Some(i) => {
                    self.destinations.swap_remove(i);
                    true
                }
                None => false,
            };
        };
        match *first {
            "*" | "#" => {
                let slot = if *first == "*" { &mut self.star } else { &mut self.hash };
                let removed = slot.as_mut().is_some_and(|n| n.remove(rest, destination));
                if slot.as_ref().is_some_and(|n| n.is_empty()) {
                    *slot = None;
                }
                removed
            }
            w => {
                let removed = self.children.get_mut(w).is_some_and(|n| n.remove(rest, destination));
                if self.children.get(w).is_some_and(TrieNode::is_empty) {
                    self.children.remove(w);
                }
                removed
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.destinations.is_empty() && self.children.is_empty() && self.star.is_none() && self.hash.is_none()
    }

    fn collect<'a>(&'a self, key: &[&str], out: &mut Vec<&'a Destination>) {
        match key.split_first() {
            None => out.extend(self.destinations.iter()),
            Some((first, rest)) => {
                if let Some(child) = self.children.get(*first) {
                    child.collect(rest, out);
                }
                if let Some(star) = &self.star {
                    star.collect(rest, out);
                }
            }
        }
        if let Some(hash) = &self.hash {
            // `#` consumes zero or more words.
            for skip in 0..=key.len() {
                hash.collect(&key[skip..], out);
            }
        }
    }
}

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
mod tests {
    use super::*;

    const KEYS: [&str; 13] = [
        "", "a", "a.b", "a.b.c", "b.a", "a..b", ".a", "a.", "..", "a.b.b", "b.a.c", "a.x.y.b", "A",
    ];

    /// The topic matching table RabbitMQ 3.10 was observed to follow, row by row (the
    /// conformance scenario `topic_patterns_match_words` checks the same on every transport).
    const TABLE: [(&str, &str); 19] = [
        ("#", "XXXXXXXXXXXXX"),
        ("*", ".X..........X"),
        ("a.*", "..X....X....."),
        ("a.#", ".XXX.X.X.X.X."),
        ("#.a", ".X..X.X......"),
        ("*.a.*", "..........X.."),
        ("a.#.b", "..X..X...X.X."),
        ("#.#", "XXXXXXXXXXXXX"),
        ("a.*.#", "..XX.X.X.X.X."),
        ("", "X............"),
        ("a..b", ".....X......."),
        (".a", "......X......"),
        ("a.", ".......X....."),
        ("*.*", "..X.X.XX....."),
        ("#.*", ".XXXXXXXXXXXX"),
        ("*.#", ".XXXXXXXXXXXX"),
        ("#.a.#", ".XXXXXXX.XXX."),
        ("a.b", "..X.........."),
        ("A", "............X"),
    ];

    #[test]
    fn topic_matching_follows_the_reference_table() -> Result<()> {
        for (pattern, row) in TABLE {
            let mut r = Router::new();
            r.declare_exchange(&Exchange::topic("t"))?;
            r.bind(&Binding::queue("q", "t", pattern))?;
            for (key, expect) in KEYS.iter().zip(row.chars()) {
                let routed = r.route("t", &[key], None)?;
                assert_eq!(!routed.is_empty(), expect == 'X', "pattern {pattern:?} key {key:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn one_copy_per_queue_and_unbind_prunes() -> Result<()> {
        let mut r = Router::new();
        r.declare_exchange(&Exchange::topic("t"))?;
        r.bind(&Binding::queue("q", "t", "a.*"))?;
        r.bind(&Binding::queue("q", "t", "#"))?;
        r.bind(&Binding::queue("q", "t", "#"))?;
        assert_eq!(r.binding_count("t"), 2);
        assert_eq!(r.route("t", &["a.b"], None)?.queues(), ["q"]);
        r.unbind(&Binding::queue("q", "t", "#"))?;
        assert!(r.route("t", &["x"], None)?.is_empty());
        assert_eq!(r.route("t", &["a.b"], None)?.queues(), ["q"]);
        Ok(())
    }

    #[test]
    fn headers_matching() -> Result<()> {
        let cases: Vec<(FieldTable, Vec<FieldTable>, Vec<FieldTable>)> = vec![
            (
                FieldTable::new().with("x-match", "any").with("a", 1i32).with("b", 2i32),
                vec![
                    FieldTable::new().with("a", 1i8),
                    FieldTable::new().with("b", 2.0f64),
                    FieldTable::new().with("a", 1i64).with("x-foo", "bar"),
                ],
                vec![FieldTable::new().with("a", "1"), FieldTable::new()],
            ),
            (
                FieldTable::new().with("a", 1i32).with("x-foo", "bar"),
                vec![FieldTable::new().with("a", 1i32)],
                vec![FieldTable::new().with("x-foo", "bar")],
            ),
            (
                FieldTable::new()
                    .with("x-match", "all-with-x")
                    .with("a", 1i32)
                    .with("x-foo", "bar"),
                vec![FieldTable::new().with("a", 1i32).with("x-foo", "bar")],
                vec![FieldTable::new().with("a", 1i32)],
            ),
            (
                FieldTable::new().with("a", FieldValue::Void),
                vec![
                    FieldTable::new().with("a", FieldValue::Void),
                    FieldTable::new().with("a", "z"),
                ],
                vec![FieldTable::new().with("b", 1i32)],
            ),
            (
                FieldTable::new().with("t", true),
                vec![FieldTable::new().with("t", true)],
                vec![FieldTable::new().with("t", 1i32)],
            ),
        ];
        for (args, yes, no) in cases {
            let mut r = Router::new();
            r.declare_exchange(&Exchange::headers("h"))?;
            r.bind(&Binding::queue("q", "h", "").arguments(args.clone()))?;
            for h in yes {
                assert!(
                    !r.route("h", &[""], Some(&h))?.is_empty(),
                    "{args:?} should match {h:?}"
                );
            }
            for h in no {
                assert!(
                    r.route("h", &[""], Some(&h))?.is_empty(),
                    "{args:?} should not match {h:?}"
                );
            }
        }
        let mut r = Router::new();
        r.declare_exchange(&Exchange::headers("h"))?;
        r.bind(&Binding::queue("all", "h", "").arguments(FieldTable::new().with("x-match", "all")))?;
        r.bind(&Binding::queue("any", "h", "").arguments(FieldTable::new().with("x-match", "any")))?;
        assert_eq!(r.route("h", &[""], None)?.queues(), ["all"]);
        let e = r
            .bind(&Binding::queue("q", "h", "").arguments(FieldTable::new().with("x-match", "bogus")))
            .unwrap_err();
        assert_eq!(
            e.message(),
            "PRECONDITION_FAILED - Invalid x-match field value <<\"bogus\">>; expected all, any, all-with-x, or any-with-x"
        );
        let e = r
            .bind(&Binding::queue("q", "h", "").arguments(FieldTable::new().with("x-match", 1i32)))
            .unwrap_err();
        assert_eq!(
            e.message(),
            "PRECONDITION_FAILED - Invalid x-match field type signedint (value 1); expected longstr"
        );
        Ok(())
    }

    #[test]
    fn exchange_to_exchange_without_loops_and_alternate() -> Result<()> {
        let mut r = Router::new();
        r.declare_exchange(&Exchange::topic("x1"))?;
        r.declare_exchange(&Exchange::direct("x2"))?;
        r.declare_exchange(&Exchange::fanout("x3"))?;
        r.bind(&Binding::exchange("x2", "x1", "a.*"))?;
        r.bind(&Binding::exchange("x3", "x1", "#"))?;
        r.bind(&Binding::queue("q", "x2", "a.b"))?;
        r.bind(&Binding::queue("q", "x3", ""))?;
        assert_eq!(r.route("x1", &["a.b"], None)?.queues(), ["q"]);
        // a <-> b loop
        r.declare_exchange(&Exchange::fanout("a"))?;
        r.declare_exchange(&Exchange::fanout("b"))?;
        r.bind(&Binding::exchange("b", "a", ""))?;
        r.bind(&Binding::exchange("a", "b", ""))?;
        r.bind(&Binding::queue("qa", "a", ""))?;
        assert_eq!(r.route("b", &["k"], None)?.queues(), ["qa"]);
        // alternate exchange
        r.declare_exchange(&Exchange::fanout("ae"))?;
        r.bind(&Binding::queue("unrouted", "ae", ""))?;
        r.declare_exchange(&Exchange::direct("main").alternate_exchange("ae"))?;
        r.bind(&Binding::queue("k", "main", "k"))?;
        assert_eq!(r.route("main", &["k"], None)?.queues(), ["k"]);
        assert_eq!(r.route("main", &["z"], None)?.queues(), ["unrouted"]);
        // An exchange whose binding matched an exchange without queues does not use its
        // alternate; the exchange that matched nothing uses its own.
        r.declare_exchange(&Exchange::fanout("empty"))?;
        r.bind(&Binding::exchange("empty", "main", "to-empty"))?;
        assert!(r.route("main", &["to-empty"], None)?.is_empty());
        r.declare_exchange(&Exchange::fanout("ae2"))?;
        r.bind(&Binding::queue("unrouted2", "ae2", ""))?;
        r.declare_exchange(&Exchange::direct("inner").alternate_exchange("ae2"))?;
        r.bind(&Binding::exchange("inner", "main", "to-inner"))?;
        assert_eq!(r.route("main", &["to-inner"], None)?.queues(), ["unrouted2"]);
        // Dead letters may go to an internal exchange.
        r.declare_exchange(&Exchange::fanout("hidden").internal())?;
        r.bind(&Binding::queue("dlq", "hidden", ""))?;
        assert_eq!(r.route("hidden", &["k"], None).unwrap_err().reply_code(), Some(403));
        assert_eq!(r.route_dead_letter("hidden", &["k"], None)?.queues(), ["dlq"]);
        Ok(())
    }

    #[test]
    fn errors_and_auto_delete() -> Result<()> {
        let mut r = Router::with_builtin_exchanges();
        assert_eq!(
            r.route("nope", &["k"], None).unwrap_err().message(),
            "NOT_FOUND - no exchange 'nope' in vhost '/'"
        );
        r.declare_exchange(&Exchange::direct("i").internal())?;
        assert_eq!(r.route("i", &["k"], None).unwrap_err().reply_code(), Some(403));
        assert_eq!(
            r.delete_exchange("amq.direct", false).unwrap_err().reply_code(),
            Some(403)
        );
        r.declare_exchange(&Exchange::direct("ad").auto_delete())?;
        r.bind(&Binding::queue("q1", "ad", "k"))?;
        r.bind(&Binding::queue("q2", "ad", "k"))?;
        assert!(r.unbind(&Binding::queue("q1", "ad", "k"))?.is_empty());
        assert!(r.exchange("ad").is_ok());
        assert_eq!(r.remove_destination(&Destination::Queue("q2".into())), ["ad"]);
        assert!(r.exchange("ad").is_err());
        r.declare_exchange(&Exchange::direct("used"))?;
        r.bind(&Binding::queue("q", "used", "k"))?;
        assert_eq!(r.delete_exchange("used", true).unwrap_err().reply_code(), Some(406));
        assert!(r.delete_exchange("missing", false)?.is_empty());
        Ok(())
    }
}
