//! RabbitMQ's management HTTP API, read for what AMQP 0-9-1 cannot tell: the broker's
//! exchanges, queues and bindings (`mqt topology export`, and the bindings `diff` checks).

use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use mqtransport::{Binding, BrokerUrl, Exchange, ExchangeKind, FieldTable, Queue, Scheme, Topology};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The management API's URL for a RabbitMQ AMQP URL: the same host and credentials on port
/// 15672 (the plugin's default). `None` for other brokers.
pub fn management_url(amqp_url: &str) -> Option<String> {
    let url = BrokerUrl::parse(amqp_url).ok()?;
    if !matches!(url.scheme(), Scheme::Amqp | Scheme::Amqps) {
        return None;
    }
    let user = url.username().unwrap_or("guest");
    let password = url.password().unwrap_or("guest");
    Some(format!("http://{user}:{password}@{}:15672", url.host()))
}

/// A RabbitMQ management API and the virtual host to read.
#[derive(Clone)]
pub struct Management {
    base: String,
    authorization: String,
    user: String,
    vhost: String,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("base", &self.base)
            .field("user", &self.user)
            .field("vhost", &self.vhost)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ExchangeInfo {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    durable: bool,
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    arguments: Map<String, Value>,
}

#[derive(Deserialize)]
struct QueueInfo {
    name: String,
    durable: bool,
    auto_delete: bool,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    arguments: Map<String, Value>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct BindingInfo {
    source: String,
    destination: String,
    destination_type: String,
    routing_key: String,
    #[serde(default)]
    arguments: Map<String, Value>,
}

fn table(map: &Map<String, Value>) -> FieldTable {
    super::file::field_table(map.iter())
}

/// Percent-encodes a path segment (the vhost `/` is `%2F`).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Management {
    /// The API at `url` (`http://user:password@host:port`) for virtual host `vhost`.
    pub fn new(url: &str, vhost: &str) -> anyhow::Result<Management> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("management URL '{}' must start with http://", redact(url));
        };
        let (userinfo, host) = match rest.rsplit_once('@') {
            Some((u, h)) => (u, h),
            None => ("guest:guest", rest),
        };
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let host = host.trim_end_matches('/');
        if host.is_empty() {
            bail!("management URL '{}' names no host", redact(url));
        }
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Ok(Management {
            base: format!("http://{host}"),
            authorization: format!("Basic {token}"),
            user: user.to_owned(),
            vhost: vhost.to_owned(),
        })
    }

    /// GETs `/api/<what>/<vhost>` as JSON.
    async fn get<T: serde::de::DeserializeOwned + Send + 'static>(&self, what: &str) -> anyhow::Result<T> {
        let url = format!("{}/api/{what}/{}", self.base, segment(&self.vhost));
        let authorization = self.authorization.clone();
        let (base, user) = (self.base.clone(), self.user.clone());
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(15)))
                .http_status_as_error(false)
                .build()
                .into();
            let mut response = agent
                .get(&url)
                .header("authorization", &authorization)
                .call()
                .with_context(|| {
                    format!(
                        "cannot reach RabbitMQ's management API at {base} (is the rabbitmq_management plugin enabled?)"
                    )
                })?;
            match response.status().as_u16() {
                200 => response
                    .body_mut()
                    .read_json::<T>()
                    .with_context(|| format!("cannot read the management API's answer from {url}")),
                401 => bail!("the management API at {base} refused user '{user}' (401)"),
                404 => bail!("the management API at {base} has no {url} (no such virtual host?)"),
                code => bail!("the management API at {base} answered {code} for {url}"),
            }
        })
        .await
        .context("the management API request was cancelled")?
    }

    /// The virtual host's exchanges (but the default and `amq.*` ones), queues and bindings
    /// (but the default exchange's), those whose names start with `prefix` when one is given
    /// (a binding when its source or destination does).
    pub async fn definitions(&self, prefix: Option<&str>) -> anyhow::Result<Topology> {
        let wanted = |name: &str| prefix.is_none_or(|p| name.starts_with(p));
        let exchanges: Vec<ExchangeInfo> = self.get("exchanges").await?;
        let queues: Vec<QueueInfo> = self.get("queues").await?;
        let bindings: Vec<BindingInfo> = self.get("bindings").await?;
        let mut topology = Topology::new();
        for e in exchanges {
            if e.name.is_empty() || e.name.starts_with("amq.") || !wanted(&e.name) {
                continue;
            }
            let mut x = Exchange::new(e.name.clone(), ExchangeKind::parse(&e.kind)?);
            x.durable = e.durable;
            x.auto_delete = e.auto_delete;
            x.internal = e.internal;
            x.arguments = table(&e.arguments);
            topology = topology.exchange(x);
        }
        for q in queues {
            if !wanted(&q.name) {
                continue;
            }
            let mut queue = Queue::durable(q.name.clone());
            queue.durable = q.durable;
            queue.auto_delete = q.auto_delete;
            queue.exclusive = q.exclusive;
            queue.arguments = table(&q.arguments);
            if let Some(kind) = q.kind.filter(|k| k != "classic")
                && queue.arguments.get("x-queue-type").is_none()
            {
                queue.arguments.insert("x-queue-type", kind);
            }
            topology = topology.queue(queue);
        }
        for b in bindings {
            if b.source.is_empty() || !(wanted(&b.source) || wanted(&b.destination)) {
                continue;
            }
            let binding = if b.destination_type == "exchange" {
                Binding::exchange(b.destination, b.source, b.routing_key)
            } else {
                Binding::queue(b.destination, b.source, b.routing_key)
            };
            topology = topology.bind(binding.arguments(table(&b.arguments)));
        }
        Ok(topology)
    }
}

/// `url` with its password hidden.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_found_next_to_the_amqp_listener() {
        assert_eq!(
            management_url("amqp://app:pw@rabbit.internal:5672/%2f").as_deref(),
            Some("http://app:pw@rabbit.internal:15672")
        );
        assert_eq!(management_url("memory://"), None);
        let m = Management::new("http://app:pw@127.0.0.1:15672/", "/").unwrap();
        assert_eq!(m.base, "http://127.0.0.1:15672");
        assert!(!format!("{m:?}").contains("pw"));
        assert_eq!(segment("/"), "%2F");
        assert!(Management::new("https://x", "/").is_err());
        assert_eq!(redact("http://u:secret@h:1"), "http://u:***@h:1");
    }
}
