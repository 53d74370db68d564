//! The app's AsyncAPI 3.0 document ([`App::asyncapi`](crate::App::asyncapi)), made from its
//! definition: a channel per queue the app consumes or sends to and per exchange it declares or
//! sends to; a `receive` operation per consumer and a `send` operation per producer and
//! requester (with its reply); each message with its content type and, where the type derives
//! `schemars::JsonSchema` (feature `asyncapi`), its JSON Schema.
//!
//! An app writes it when `MQT_ASYNCAPI` names a file (JSON) as it starts; `mqt docs serve FILE`
//! shows it as a page.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use mqtransport_core::{BrokerUrl, ExchangeKind, Topology};
use serde_json::{Map, Value, json};

use crate::message::{Codec, Message};
use crate::publish::Route;

/// The environment variable naming the file an app writes its AsyncAPI document to when it
/// starts.
pub const ASYNCAPI_ENV: &str = "MQT_ASYNCAPI";

/// What the AsyncAPI document says of one message type: its name, content type and schema.
#[derive(Debug, Clone, Copy)]
pub struct MessageDoc {
    /// The message name (`type`).
    pub name: &'static str,
    /// How its body is encoded.
    pub codec: Codec,
    schema: fn() -> Option<Value>,
}

impl MessageDoc {
    /// The document of `M`.
    pub const fn of<M: Message>() -> Self {
        MessageDoc {
            name: M::NAME,
            codec: M::CODEC,
            schema: M::schema,
        }
    }

    /// Its JSON Schema, if the type has one.
    pub fn schema(&self) -> Option<Value> {
        (self.schema)()
    }
}

/// What a consumer receives.
#[derive(Debug, Clone)]
pub(crate) struct ReceiveDoc {
    pub(crate) queue: String,
    /// A subscription's exchange and binding keys (its queue is the instance's own).
    pub(crate) subscription: Option<(String, Vec<String>)>,
    pub(crate) messages: Vec<MessageDoc>,
    /// It has a fallback handler: any other message is taken too.
    pub(crate) any: bool,
}

/// What a producer or requester sends.
#[derive(Debug, Clone)]
pub(crate) struct SendDoc {
    pub(crate) route: Route,
    pub(crate) message: Option<MessageDoc>,
    /// A requester's reply.
    pub(crate) reply: Option<MessageDoc>,
}

/// The producers and requesters made so far, as the document lists them.
#[derive(Debug, Default)]
pub(crate) struct SendDocs(Mutex<Vec<SendDoc>>);

impl SendDocs {
    /// Records `doc`, once per route, message and reply.
    pub(crate) fn add(&self, doc: SendDoc) {
        let mut docs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let same = |d: &SendDoc| {
            d.route == doc.route
                && d.message.map(|m| m.name) == doc.message.map(|m| m.name)
                && d.reply.map(|m| m.name) == doc.reply.map(|m| m.name)
        };
        if !docs.iter().any(same) {
            docs.push(doc);
        }
    }

    pub(crate) fn all(&self) -> Vec<SendDoc> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// What the document is made from.
pub(crate) struct AppDoc<'a> {
    pub(crate) title: &'a str,
    /// The broker URL, password hidden (`None` for a transport given as a value).
    pub(crate) url: Option<&'a str>,
    pub(crate) system: &'a str,
    pub(crate) topology: &'a Topology,
    pub(crate) receives: &'a [ReceiveDoc],
    pub(crate) sends: &'a [SendDoc],
}

/// A name as AsyncAPI ids allow (`[A-Za-z0-9_.-]`, and no `.` in channel and operation ids).
fn id(text: &str, dots: bool) -> String {
    let id: String = text
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => c,
            '.' if dots => c,
            _ => '_',
        })
        .collect();
    if id.is_empty() { "default".to_owned() } else { id }
}

/// One channel being assembled.
#[derive(Default)]
struct Channel {
    address: Option<String>,
    description: Vec<String>,
    messages: BTreeMap<String, MessageDoc>,
    bindings: Option<Value>,
}

struct Builder<'a> {
    topology: &'a Topology,
    channels: BTreeMap<String, Channel>,
    operations: Map<String, Value>,
    messages: BTreeMap<String, MessageDoc>,
}

impl Builder<'_> {
    /// The channel of queue `name`, with its declaration when the app knows it.
    fn queue(&mut self, name: &str) -> String {
        let key = format!("queue_{}", id(name, false));
        let queue = self.topology.queues.iter().find(|q| q.name == name);
        let channel = self.channels.entry(key.clone()).or_default();
        channel.address = Some(name.to_owned());
        let mut q = json!({ "name": name });
        if let Some(decl) = queue {
            q["durable"] = json!(decl.durable);
            q["exclusive"] = json!(decl.exclusive);
            q["autoDelete"] = json!(decl.auto_delete);
        }
        channel.bindings = Some(json!({ "amqp": { "is": "queue", "queue": q, "bindingVersion": "0.3.0" } }));
        for b in self.topology.bindings.iter().filter(|b| b.destination.name() == name) {
            let line = format!("Bound to exchange '{}' with '{}'.", b.source, b.routing_key);
            if !channel.description.contains(&line) {
                channel.description.push(line);
            }
        }
        key
    }

    /// The channel of exchange `name`.
    fn exchange(&mut self, name: &str) -> String {
        let key = format!("exchange_{}", id(name, false));
        let declared = self.topology.exchanges.iter().find(|x| x.name == name);
        let channel = self.channels.entry(key.clone()).or_default();
        channel.address = Some(name.to_owned());
        let mut x = json!({ "name": name });
        if let Some(decl) = declared {
            let kind = match decl.kind {
                ExchangeKind::Direct => "direct",
                ExchangeKind::Fanout => "fanout",
                ExchangeKind::Topic => "topic",
                ExchangeKind::Headers => "headers",
            };
            x["type"] = json!(kind);
            x["durable"] = json!(decl.durable);
            x["autoDelete"] = json!(decl.auto_delete);
        }
        channel.bindings = Some(json!({ "amqp": { "is": "routingKey", "exchange": x, "bindingVersion": "0.3.0" } }));
        key
    }

    /// `message` listed on `channel`; its reference from an operation.
    fn message_on(&mut self, channel: &str, message: MessageDoc) -> Value {
        let key = id(message.name, true);
        self.messages.entry(key.clone()).or_insert(message);
        if let Some(c) = self.channels.get_mut(channel) {
            c.messages.insert(key.clone(), message);
        }
        json!({ "$ref": format!("#/channels/{channel}/messages/{key}") })
    }

    /// Adds `op` as `key`, or `key_2`, `key_3`, ... when taken.
    fn operation(&mut self, key: &str, op: Value) {
        let mut unique = key.to_owned();
        let mut n = 2;
        while self.operations.contains_key(&unique) {
            unique = format!("{key}_{n}");
            n += 1;
        }
        self.operations.insert(unique, op);
    }
}

/// The AsyncAPI 3.0 document of an app.
pub(crate) fn document(app: &AppDoc<'_>) -> Value {
    let mut b = Builder {
        topology: app.topology,
        channels: BTreeMap::new(),
        operations: Map::new(),
        messages: BTreeMap::new(),
    };
    for x in &app.topology.exchanges {
        b.exchange(&x.name);
    }
    for r in app.receives {
        let (channel, description) = match &r.subscription {
            Some((exchange, keys)) => (
                b.exchange(exchange),
                format!(
                    "Each instance of the app subscribes with a queue of its own, bound with {}.",
                    keys.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
                ),
            ),
            None => (b.queue(&r.queue), format!("Consumes queue '{}'.", r.queue)),
        };
        let messages: Vec<Value> = r.messages.iter().map(|m| b.message_on(&channel, *m)).collect();
        let mut op = json!({
            "action": "receive",
            "channel": { "$ref": format!("#/channels/{channel}") },
            "messages": messages,
            "description": description,
        });
        if r.any {
            op["description"] = json!(format!("{description} Any other message goes to its fallback handler."));
        }
        b.operation(&format!("receive_{channel}"), op);
    }
    for s in app.sends {
        let channel = if s.route.exchange_name().is_empty() {
            b.queue(&s.route.routing_key_for(""))
        } else {
            b.exchange(s.route.exchange_name())
        };
        let messages: Vec<Value> = s.message.iter().map(|m| b.message_on(&channel, *m)).collect();
        let routing_key = s.message.map(|m| s.route.routing_key_for(m.name).to_string());
        let mut op = json!({
            "action": "send",
            "channel": { "$ref": format!("#/channels/{channel}") },
            "messages": messages,
        });
        if let Some(k) = routing_key.filter(|_| !s.route.exchange_name().is_empty()) {
            op["bindings"] = json!({ "amqp": { "cc": [k], "bindingVersion": "0.3.0" } });
        }
        if let Some(reply) = s.reply {
            b.channels.entry("reply_to".to_owned()).or_default().description =
                vec!["The caller's reply address (its `reply_to`).".to_owned()];
            let reply_ref = b.message_on("reply_to", reply);
            op["reply"] = json!({
                "address": { "location": "$message.header#/reply_to" },
                "channel": { "$ref": "#/channels/reply_to" },
                "messages": [reply_ref],
            });
        }
        let name = s.message.map_or("raw", |m| m.name);
        b.operation(&format!("send_{}_{}", channel, id(name, false)), op);
    }
    let channels: Map<String, Value> = b
        .channels
        .iter()
        .map(|(key, c)| {
            let mut v = json!({
                "address": c.address,
                "messages": c.messages.keys().map(|m| (m.clone(), json!({ "$ref": format!("#/components/messages/{m}") }))).collect::<Map<_, _>>(),
            });
            if !c.description.is_empty() {
                v["description"] = json!(c.description.join(" "));
            }
            if let Some(bindings) = &c.bindings {
                v["bindings"] = bindings.clone();
            }
            (key.clone(), v)
        })
        .collect();
    let messages: Map<String, Value> = b
        .messages
        .iter()
        .map(|(key, m)| {
            let mut v = json!({ "name": m.name, "contentType": m.codec.content_type() });
            v["payload"] = m.schema().unwrap_or_else(|| json!({}));
            (key.clone(), v)
        })
        .collect();
    let mut doc = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": app.title,
            "version": "1.0.0",
            "description": "Made by mqtransport from the app's consumers, producers and topology.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": b.operations,
        "components": { "messages": messages },
    });
    if let Some(url) = app.url.and_then(|u| BrokerUrl::parse(u).ok()) {
        let host = match url.addresses().next() {
            Some(("", _)) | None => "in-process".to_owned(),
            Some((h, Some(port))) => format!("{h}:{port}"),
            Some((h, None)) => h.to_owned(),
        };
        doc["servers"] = json!({
            "broker": {
                "host": host,
                "protocol": url.scheme().as_str(),
                "description": format!("The {} broker.", app.system),
            }
        });
    }
    doc
}
