//! The topology file: [`TopologyFile`], read from and written to TOML, YAML or JSON, and
//! converted to and from the library's [`Topology`].

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use mqtransport::core::Destination;
use mqtransport::{Binding, Exchange, ExchangeKind, FieldTable, FieldValue, Queue, Topology};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.yaml`, `.yml`
    Yaml,
    /// `.json`
    Json,
}

impl Format {
    /// The format a path's extension names.
    pub fn of(path: &Path) -> anyhow::Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => Ok(Format::Toml),
            Some("yaml" | "yml") => Ok(Format::Yaml),
            Some("json") => Ok(Format::Json),
            _ => bail!(
                "'{}': a topology file ends in .toml, .yaml, .yml or .json",
                path.display()
            ),
        }
    }
}

/// A topology as a file holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    /// Exchanges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<ExchangeEntry>,
    /// Queues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueEntry>,
    /// Bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<BindingEntry>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeEntry {
    /// Its name.
    pub name: String,
    /// `direct`, `fanout`, `topic` or `headers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Survives a broker restart (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub durable: bool,
    /// Deleted when its last binding goes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_delete: bool,
    /// Only other exchanges publish to it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    /// `x-*` arguments (e.g. `alternate-exchange`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, Value>,
}

/// A queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueEntry {
    /// Its name.
    pub name: String,
    /// `classic` (default), `quorum` or `stream` (written as `x-queue-type`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Survives a broker restart (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub durable: bool,
    /// Owned by its connection.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_delete: bool,
    /// `x-*` arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, Value>,
}

/// A binding of a queue (or an exchange) to an exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingEntry {
    /// The source exchange.
    pub exchange: String,
    /// The queue bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Or the exchange bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_exchange: Option<String>,
    /// The routing key (binding key).
    #[serde(default)]
    pub routing_key: String,
    /// Arguments (a headers exchange's match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, Value>,
}

/// A JSON value as an AMQP field: integers as 64-bit integers, other numbers as doubles.
fn field(value: &Value) -> FieldValue {
    match value {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(FieldValue::I64)
            .unwrap_or_else(|| FieldValue::F64(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => FieldValue::string(s.as_str()),
        Value::Array(items) => FieldValue::Array(items.iter().map(field).collect()),
        Value::Object(map) => FieldValue::Table(field_table(map.iter())),
    }
}

/// JSON (or TOML, YAML) arguments as an AMQP field table.
pub(super) fn field_table<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in entries {
        t.insert(k.clone(), field(v));
    }
    t
}

fn arguments(t: &FieldTable) -> BTreeMap<String, Value> {
    t.iter()
        .map(|(k, v)| (k.to_owned(), crate::render::field_json(v)))
        .collect()
}

impl TopologyFile {
    /// Reads `path` (its format from its extension), naming the file and the place of an error.
    pub fn read(path: &Path) -> anyhow::Result<TopologyFile> {
        let format = Format::of(path)?;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read '{}'", path.display()))?;
        Self::parse(&text, format).with_context(|| format!("'{}' is not a valid topology file", path.display()))
    }

    /// Parses `text` as `format`.
    pub fn parse(text: &str, format: Format) -> anyhow::Result<TopologyFile> {
        Ok(match format {
            Format::Toml => toml::from_str(text)?,
            Format::Yaml => serde_yaml::from_str(text)?,
            Format::Json => serde_json::from_str(text)?,
        })
    }

    /// The file's text in `format`.
    pub fn render(&self, format: Format) -> anyhow::Result<String> {
        Ok(match format {
            Format::Toml => toml::to_string_pretty(self)?,
            Format::Yaml => serde_yaml::to_string(self)?,
            Format::Json => serde_json::to_string_pretty(self)? + "\n",
        })
    }

    /// The library's topology, checked as the broker would check it (names, types, arguments).
    pub fn topology(&self) -> anyhow::Result<Topology> {
        let mut topology = Topology::new();
        for e in &self.exchanges {
            let kind = ExchangeKind::parse(&e.kind).with_context(|| format!("exchange '{}'", e.name))?;
            let mut x = Exchange::new(e.name.clone(), kind);
            x.durable = e.durable;
            x.auto_delete = e.auto_delete;
            x.internal = e.internal;
            x.arguments = field_table(e.arguments.iter());
            topology = topology.exchange(x);
        }
        for q in &self.queues {
            let mut queue = Queue::durable(q.name.clone());
            queue.durable = q.durable;
            queue.exclusive = q.exclusive;
            queue.auto_delete = q.auto_delete;
            queue.arguments = field_table(q.arguments.iter());
            match q.kind.as_deref() {
                None | Some("classic") => {}
                Some(kind @ ("quorum" | "stream")) => {
                    queue.arguments.insert("x-queue-type", kind);
                }
                Some(other) => bail!("queue '{}': type '{other}' is not classic, quorum or stream", q.name),
            }
            topology = topology.queue(queue);
        }
        for b in &self.bindings {
            let binding = match (&b.queue, &b.to_exchange) {
                (Some(q), None) => Binding::queue(q.clone(), b.exchange.clone(), b.routing_key.clone()),
                (None, Some(x)) => Binding::exchange(x.clone(), b.exchange.clone(), b.routing_key.clone()),
                _ => bail!(
                    "binding from exchange '{}' with key '{}': name either `queue` or `to_exchange`",
                    b.exchange,
                    b.routing_key
                ),
            };
            topology = topology.bind(binding.arguments(field_table(b.arguments.iter())));
        }
        topology.validate()?;
        Ok(topology)
    }

    /// The file of a library topology (a queue's `x-queue-type` becomes its `type`).
    pub fn of(topology: &Topology) -> TopologyFile {
        TopologyFile {
            exchanges: topology
                .exchanges
                .iter()
                .map(|e| ExchangeEntry {
                    name: e.name.clone(),
                    kind: e.kind.as_str().to_owned(),
                    durable: e.durable,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: arguments(&e.arguments),
                })
                .collect(),
            queues: topology
                .queues
                .iter()
                .map(|q| {
                    let mut args = arguments(&q.arguments);
                    let kind = match args.remove("x-queue-type") {
                        Some(Value::String(k)) if k != "classic" => Some(k),
                        _ => None,
                    };
                    QueueEntry {
                        name: q.name.clone(),
                        kind,
                        durable: q.durable,
                        exclusive: q.exclusive,
                        auto_delete: q.auto_delete,
                        arguments: args,
                    }
                })
                .collect(),
            bindings: topology
                .bindings
                .iter()
                .map(|b| {
                    let (queue, to_exchange) = match &b.destination {
                        Destination::Queue(q) => (Some(q.clone()), None),
                        Destination::Exchange(x) => (None, Some(x.clone())),
                    };
                    BindingEntry {
                        exchange: b.source.clone(),
                        queue,
                        to_exchange,
                        routing_key: b.routing_key.clone(),
                        arguments: arguments(&b.arguments),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[exchanges]]
name = "shop"
type = "topic"

[[queues]]
name = "orders"
type = "quorum"
arguments = { "x-delivery-limit" = 5 }

[[bindings]]
exchange = "shop"
queue = "orders"
routing_key = "order.*"
"#;

    #[test]
    fn toml_yaml_and_json_read_the_same_topology() {
        let from_toml = TopologyFile::parse(TOML, Format::Toml).unwrap();
        let yaml = from_toml.render(Format::Yaml).unwrap();
        let json = from_toml.render(Format::Json).unwrap();
        assert_eq!(TopologyFile::parse(&yaml, Format::Yaml).unwrap(), from_toml);
        assert_eq!(TopologyFile::parse(&json, Format::Json).unwrap(), from_toml);
        let t = from_toml.topology().unwrap();
        assert_eq!(
            t.queues[0].arguments.get("x-queue-type").and_then(FieldValue::as_str),
            Some("quorum")
        );
        assert_eq!(
            t.queues[0]
                .arguments
                .get("x-delivery-limit")
                .and_then(FieldValue::as_i64),
            Some(5)
        );
        assert!(t.exchanges[0].durable);
        // And back: the file of the topology is the file.
        assert_eq!(TopologyFile::of(&t), from_toml);
    }

    #[test]
    fn mistakes_are_named() {
        let unknown = TopologyFile::parse("[[queues]]\nname = \"q\"\ndurabel = true\n", Format::Toml);
        assert!(unknown.unwrap_err().to_string().contains("durabel"));
        let bad_type = TopologyFile::parse("[[exchanges]]\nname = \"x\"\ntype = \"fan\"\n", Format::Toml).unwrap();
        assert!(format!("{:#}", bad_type.topology().unwrap_err()).contains("fan"));
        let both = TopologyFile::parse(
            "[[bindings]]\nexchange = \"x\"\nqueue = \"q\"\nto_exchange = \"y\"\n",
            Format::Toml,
        )
        .unwrap();
        assert!(both.topology().unwrap_err().to_string().contains("either"));
        assert!(Format::of(Path::new("t.txt")).is_err());
    }
}
