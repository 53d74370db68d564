//! Exchanges on SQS, which has none: each exchange is an SQS queue that is never consumed
//! (`mqtx-<name>`) whose tags hold the exchange's declaration and its bindings, one tag per
//! binding. Any process reads them, so a publisher in one service reaches queues another service
//! bound; routing itself is the core [`Router`], as on the embedded broker.
//!
//! A publisher keeps what it read of an exchange for
//! [`binding_refresh`](crate::SqsOptions::binding_refresh) (2 s by default): a binding made or
//! removed by another process is seen within that window (plus SQS's own propagation of tags);
//! one made by this transport is seen at once. SQS allows 50 tags per queue, so an exchange has at
//! most 47 bindings, and a binding must fit in a tag value (256 characters of base64).

use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use mqtransport_core::hash::FxHasher;
use mqtransport_core::{
    Binding, Destination, Error, ErrorKind, Exchange, ExchangeKind, FieldTable, Result, Router, Scope,
};

use crate::client::{
    DECLARATION_TAG, MAX_TAG_VALUE, MAX_TAGS, NAME_TAG, ROLE_TAG, Sqs, sdk_error, tag_bytes, tag_value,
};
use crate::fields::{Reader, put_str, put_table};
use crate::names::{Role, sqs_name};
use crate::queues::VHOST;

/// Tags that are not bindings: role, name, declaration.
const RESERVED_TAGS: usize = 3;
/// The prefix of a binding's tag key.
const BINDING_TAG: &str = "mqt-b-";

/// The exchanges every AMQP broker has; on SQS they exist as soon as they are used.
const BUILTIN: [(&str, ExchangeKind); 5] = [
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// One exchange as read from its SQS queue.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) exchange: Exchange,
    pub(crate) url: String,
    /// Bindings with this exchange as their source, by tag key.
    pub(crate) bindings: HashMap<String, Binding>,
}

impl Record {
    /// The same exchange with other bindings.
    fn with_bindings(&self, bindings: HashMap<String, Binding>) -> Arc<Record> {
        Arc::new(Record {
            exchange: self.exchange.clone(),
            url: self.url.clone(),
            bindings,
        })
    }
}

struct Cached {
    record: Option<Arc<Record>>,
    read_at: Instant,
}

/// The exchanges this transport has read, each trusted for the refresh window.
#[derive(Default)]
pub(crate) struct Exchanges {
    cache: Mutex<HashMap<String, Cached>>,
}

fn builtin(name: &str) -> Option<Exchange> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, kind)| Exchange::new(*n, *kind))
}

fn not_found(name: &str) -> Error {
    Error::broker(
        404,
        format!("NOT_FOUND - no exchange '{name}' in vhost '{VHOST}'"),
        Scope::Channel,
    )
}

fn encode_exchange(x: &Exchange) -> Result<Vec<u8>> {
    let mut out = BytesMut::new();
    out.put_u8(match x.kind {
        ExchangeKind::Direct => b'd',
        ExchangeKind::Fanout => b'f',
        ExchangeKind::Topic => b't',
        ExchangeKind::Headers => b'h',
    });
    out.put_u8(u8::from(x.durable) | (u8::from(x.auto_delete) << 1) | (u8::from(x.internal) << 2));
    put_table(&mut out, &x.arguments)?;
    Ok(out.to_vec())
}

fn decode_exchange(name: &str, bytes: &[u8]) -> Result<Exchange> {
    let mut r = Reader::new(bytes, "exchange declaration tag");
    let kind = match r.u8()? {
        b'd' => ExchangeKind::Direct,
        b'f' => ExchangeKind::Fanout,
        b't' => ExchangeKind::Topic,
        _ => ExchangeKind::Headers,
    };
    let flags = r.u8()?;
    let mut x = Exchange::new(name, kind);
    x.durable = flags & 1 != 0;
    x.auto_delete = flags & 2 != 0;
    x.internal = flags & 4 != 0;
    x.arguments = r.table()?;
    Ok(x)
}

fn encode_binding(b: &Binding) -> Result<Vec<u8>> {
    let mut out = BytesMut::new();
    match &b.destination {
        Destination::Queue(q) => {
            out.put_u8(b'q');
            put_str(&mut out, q.as_bytes());
        }
        Destination::Exchange(x) => {
            out.put_u8(b'e');
            put_str(&mut out, x.as_bytes());
        }
    }
    put_str(&mut out, b.routing_key.as_bytes());
    put_table(&mut out, &b.arguments)?;
    Ok(out.to_vec())
}

fn decode_binding(source: &str, bytes: &[u8]) -> Result<Binding> {
    let mut r = Reader::new(bytes, "binding tag");
    let kind = r.u8()?;
    let destination = r.string()?;
    let routing_key = r.string()?;
    let arguments: FieldTable = r.table()?;
    let binding = match kind {
        b'e' => Binding::exchange(destination, source, routing_key),
        _ => Binding::queue(destination, source, routing_key),
    };
    Ok(binding.arguments(arguments))
}

/// The tag key of a binding: the same in every process.
fn binding_key(encoded: &[u8]) -> String {
    let mut h = FxHasher::default();
    h.write(encoded);
    format!("{BINDING_TAG}{:016x}", h.finish())
}

impl Exchanges {
    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn store(&self, name: &str, record: Option<Arc<Record>>) {
        self.cache().insert(
            name.to_owned(),
            Cached {
                record,
                read_at: Instant::now(),
            },
        );
    }

    /// The exchange `name` as its SQS queue holds it, read again when older than the refresh
    /// window (or when `fresh`); `None` if it does not exist.
    pub(crate) async fn get(&self, sqs: &Sqs, name: &str, fresh: bool) -> Result<Option<Arc<Record>>> {
        if !fresh
            && let Some(c) = self.cache().get(name)
            && c.read_at.elapsed() < sqs.options.binding_refresh
        {
            return Ok(c.record.clone());
        }
        let record = self.read(sqs, name).await?;
        self.store(name, record.clone());
        Ok(record)
    }

    async fn read(&self, sqs: &Sqs, name: &str) -> Result<Option<Arc<Record>>> {
        let queue = sqs_name(&sqs.options.prefix, Role::Exchange, name)?;
        let url = match sqs.url(&queue, &format!("exchange '{name}'")).await {
            Ok(url) => url,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(builtin(name).map(|exchange| {
                    Arc::new(Record {
                        exchange,
                        url: String::new(),
                        bindings: HashMap::new(),
                    })
                }));
            }
            Err(e) => return Err(e),
        };
        let tags = match sqs.tags(&url, &format!("exchange '{name}'")).await {
            Ok(tags) => tags,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                sqs.forget(&queue);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if tags.get(ROLE_TAG).map(String::as_str) != Some(Role::Exchange.as_str()) {
            return Err(Error::new(
                ErrorKind::Precondition,
                format!("exchange '{name}' maps to the SQS queue '{queue}', which is not an exchange's binding table"),
            ));
        }
        let exchange = match tags.get(DECLARATION_TAG) {
            Some(d) => decode_exchange(name, &tag_bytes(d, "an exchange declaration")?)?,
            None => builtin(name).unwrap_or_else(|| Exchange::direct(name)),
        };
        let mut bindings = HashMap::new();
        for (key, value) in &tags {
            if key.starts_with(BINDING_TAG) {
                let binding = decode_binding(name, &tag_bytes(value, "a binding")?)?;
                bindings.insert(key.clone(), binding);
            }
        }
        Ok(Some(Arc::new(Record {
            exchange,
            url,
            bindings,
        })))
    }

    /// Declares an exchange: creates its SQS queue, or checks that the existing one is the same.
    pub(crate) async fn declare(&self, sqs: &Sqs, x: &Exchange) -> Result<()> {
        x.validate()?;
        if let Some(b) = builtin(&x.name) {
            return x.check_equivalent(&b, VHOST);
        }
        if let Some(existing) = self.get(sqs, &x.name, true).await? {
            return x.check_equivalent(&existing.exchange, VHOST);
        }
        self.create(sqs, x).await
    }

    async fn create(&self, sqs: &Sqs, x: &Exchange) -> Result<()> {
        let queue = sqs_name(&sqs.options.prefix, Role::Exchange, &x.name)?;
        let declaration = tag_value(&encode_exchange(x)?);
        if declaration.len() > MAX_TAG_VALUE {
            return Err(Error::invalid(format!(
                "exchange '{}': its arguments do not fit in an SQS tag (256 characters)",
                x.name
            )));
        }
        let out = sqs
            .client
            .create_queue()
            .queue_name(&queue)
            .tags(ROLE_TAG, Role::Exchange.as_str())
            .tags(NAME_TAG, tag_value(x.name.as_bytes()))
            .tags(DECLARATION_TAG, declaration)
            .send()
            .await
            .map_err(|e| sdk_error(&e, format_args!("declaring exchange '{}'", x.name)))?;
        sqs.remember(&queue, out.queue_url().unwrap_or_default());
        // Another process may have made it at the same moment: what is there now decides.
        match self.get(sqs, &x.name, true).await? {
            Some(existing) => x.check_equivalent(&existing.exchange, VHOST),
            None => Err(not_found(&x.name)),
        }
    }

    /// Adds a binding to its source exchange's tags.
    pub(crate) async fn bind(&self, sqs: &Sqs, b: &Binding) -> Result<()> {
        b.validate()?;
        let mut source = self
            .get(sqs, &b.source, true)
            .await?
            .ok_or_else(|| not_found(&b.source))?;
        if source.url.is_empty() {
            // A built-in exchange used for the first time.
            self.create(sqs, &source.exchange).await?;
            source = self
                .get(sqs, &b.source, true)
                .await?
                .ok_or_else(|| not_found(&b.source))?;
        }
        // Let the router check the arguments (x-match) as RabbitMQ would.
        let mut check = Router::new();
        check.declare_exchange(&source.exchange)?;
        if let Destination::Exchange(d) = &b.destination {
            let dest = self.get(sqs, d, false).await?.ok_or_else(|| not_found(d))?;
            check.declare_exchange(&dest.exchange)?;
        }
        check.bind(b)?;
        let encoded = encode_binding(b)?;
        let key = binding_key(&encoded);
        if source.bindings.contains_key(&key) {
            return Ok(());
        }
        let value = tag_value(&encoded);
        if value.len() > MAX_TAG_VALUE {
            return Err(Error::invalid(format!(
                "the binding of '{}' to exchange '{}' with key '{}' does not fit in an SQS tag (256 characters of \
                 base64): shorten the names, the key or the arguments",
                b.destination.name(),
                b.source,
                b.routing_key
            )));
        }
        if source.bindings.len() + RESERVED_TAGS >= MAX_TAGS {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "exchange '{}' has {} bindings, the most an SQS exchange can hold ({} tags per queue)",
                    b.source,
                    source.bindings.len(),
                    MAX_TAGS
                ),
            ));
        }
        sqs.client
            .tag_queue()
            .queue_url(&source.url)
            .tags(&key, value)
            .send()
            .await
            .map_err(|e| sdk_error(&e, format_args!("binding to exchange '{}'", b.source)))?;
        let mut bindings = source.bindings.clone();
        bindings.insert(key, b.clone());
        self.store(&b.source, Some(source.with_bindings(bindings)));
        Ok(())
    }

    /// Removes a binding from its source exchange's tags; a missing one is not an error.
    pub(crate) async fn unbind(&self, sqs: &Sqs, b: &Binding) -> Result<()> {
        b.validate()?;
        let Some(source) = self.get(sqs, &b.source, true).await? else {
            return Ok(());
        };
        let key = binding_key(&encode_binding(b)?);
        if !source.bindings.contains_key(&key) {
            return Ok(());
        }
        sqs.client
            .untag_queue()
            .queue_url(&source.url)
            .tag_keys(&key)
            .send()
            .await
            .map_err(|e| sdk_error(&e, format_args!("unbinding from exchange '{}'", b.source)))?;
        let mut bindings = source.bindings.clone();
        bindings.remove(&key);
        if bindings.is_empty() && source.exchange.auto_delete {
            return self.delete(sqs, &b.source, false).await;
        }
        self.store(&b.source, Some(source.with_bindings(bindings)));
        Ok(())
    }

    /// Deletes an exchange's SQS queue; a missing exchange is not an error.
    pub(crate) async fn delete(&self, sqs: &Sqs, name: &str, if_unused: bool) -> Result<()> {
        if builtin(name).is_some() {
            return Err(Error::broker(
                403,
                format!("ACCESS_REFUSED - deletion of system exchange '{name}' in vhost '{VHOST}' not allowed"),
                Scope::Channel,
            ));
        }
        let Some(record) = self.get(sqs, name, true).await? else {
            return Ok(());
        };
        if if_unused && !record.bindings.is_empty() {
            return Err(Error::broker(
                406,
                format!("PRECONDITION_FAILED - exchange '{name}' in vhost '{VHOST}' in use"),
                Scope::Channel,
            ));
        }
        match sqs.client.delete_queue().queue_url(&record.url).send().await {
            Ok(_) => {}
            Err(e) => {
                let e = sdk_error(&e, format_args!("deleting exchange '{name}'"));
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        sqs.forget(&sqs_name(&sqs.options.prefix, Role::Exchange, name)?);
        self.store(name, None);
        Ok(())
    }

    /// The queues a message published to `exchange` with routing `keys` (the routing key, then
    /// any `CC` and `BCC` keys) and `headers` goes to,
    /// following exchange-to-exchange bindings and alternate exchanges.
    pub(crate) async fn route(
        &self,
        sqs: &Sqs,
        exchange: &str,
        keys: &[&str],
        headers: Option<&FieldTable>,
    ) -> Result<Vec<String>> {
        let mut router = Router::new();
        let mut seen = HashSet::new();
        let mut pending = vec![exchange.to_owned()];
        let mut bindings = Vec::new();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(record) = self.get(sqs, &name, false).await? else {
                if name == exchange {
                    return Err(not_found(exchange));
                }
                continue;
            };
            router.declare_exchange(&record.exchange)?;
            if let Some(alternate) = record.exchange.alternate() {
                pending.push(alternate.to_owned());
            }
            for b in record.bindings.values() {
                if let Destination::Exchange(d) = &b.destination {
                    pending.push(d.clone());
                }
                bindings.push(b.clone());
            }
        }
        for b in &bindings {
            // A binding to an exchange deleted since is skipped, as the broker would have removed it.
            let _ = router.bind(b);
        }
        let routed = router.route(exchange, keys, headers)?;
        Ok(routed.queues().iter().map(|q| (*q).to_owned()).collect())
    }

    /// Forgets bindings to a deleted queue in what this transport has read (other processes see
    /// the queue gone when they send to it).
    pub(crate) async fn remove_queue(&self, sqs: &Sqs, queue: &str) {
        let records: Vec<(String, Arc<Record>)> = self
            .cache()
            .iter()
            .filter_map(|(name, c)| c.record.clone().map(|r| (name.clone(), r)))
            .collect();
        for (_, record) in records {
            for b in record.bindings.values() {
                if b.destination == Destination::Queue(queue.to_owned()) {
                    let _ = self.unbind(sqs, b).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_and_bindings_round_trip_through_tags() {
        let x = Exchange::topic("events").alternate_exchange("lost").internal();
        assert_eq!(decode_exchange("events", &encode_exchange(&x).unwrap()).unwrap(), x);
        let b = Binding::queue("orders", "events", "order.*")
            .arguments(FieldTable::new().with("x-match", "any").with("k", 1i32));
        let encoded = encode_binding(&b).unwrap();
        assert_eq!(decode_binding("events", &encoded).unwrap(), b);
        let e = Binding::exchange("downstream", "events", "#");
        assert_eq!(decode_binding("events", &encode_binding(&e).unwrap()).unwrap(), e);
        assert_eq!(binding_key(&encoded), binding_key(&encode_binding(&b.clone()).unwrap()));
        assert_ne!(binding_key(&encoded), binding_key(&encode_binding(&e).unwrap()));
        assert!(binding_key(&encoded).len() <= 128);
    }
}
