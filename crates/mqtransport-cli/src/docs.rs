//! `mqt docs`: an app's AsyncAPI 3 document (as [`App::asyncapi`](mqtransport::App::asyncapi)
//! writes it) rendered as one HTML page, and served.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Reads an AsyncAPI 3 document (JSON), refusing anything else by name.
pub fn read(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    let doc: Value = serde_json::from_str(&text).with_context(|| format!("'{}' is not JSON", path.display()))?;
    match doc.get("asyncapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.") => Ok(doc),
        Some(v) => bail!("'{}' is AsyncAPI {v}; mqt reads AsyncAPI 3", path.display()),
        None => bail!("'{}' is not an AsyncAPI document (no `asyncapi` field)", path.display()),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The last segment of a `$ref`.
fn ref_name(value: &Value) -> Option<&str> {
    value.get("$ref")?.as_str()?.rsplit('/').next()
}

/// A schema's type for people: `integer`, `array of string`, `Item`, `string or null`.
fn type_text(schema: &Value) -> String {
    if let Some(name) = ref_name(schema) {
        return name.to_owned();
    }
    match schema.get("type") {
        Some(Value::String(t)) if t == "array" => match schema.get("items") {
            Some(items) => format!("array of {}", type_text(items)),
            None => "array".to_owned(),
        },
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        _ => ["anyOf", "oneOf"]
            .iter()
            .find_map(|k| schema.get(*k).and_then(Value::as_array))
            .map_or_else(
                || "any".to_owned(),
                |options| options.iter().map(type_text).collect::<Vec<_>>().join(" or "),
            ),
    }
}

/// A table of an object schema's fields (name, type, required, description).
fn fields_table(html: &mut String, schema: &Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        let _ = write!(
            html,
            "<p class=\"payload\">Payload: <code>{}</code></p>",
            escape(&type_text(schema))
        );
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    html.push_str("<table class=\"fields\"><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>");
    for (name, field) in props {
        let _ = write!(
            html,
            "<tr class=\"field\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(&type_text(field)),
            if required.contains(&name.as_str()) { "yes" } else { "no" },
            escape(field.get("description").and_then(Value::as_str).unwrap_or(""))
        );
    }
    html.push_str("</table>");
}

/// The document as one self-contained HTML page: servers, operations, channels, and each
/// message with its fields (and the types its fields refer to).
pub fn html(doc: &Value) -> String {
    let text = |v: &Value| v.as_str().map(escape).unwrap_or_default();
    let info = &doc["info"];
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}\
table{{border-collapse:collapse;margin:.5rem 0 1rem}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}}\
code{{background:#f4f4f4;padding:0 .2rem}}section.message{{border-left:4px solid #4a7;padding-left:1rem;margin:1rem 0}}\
</style></head><body><h1>{title} <small>{version}</small></h1><p>{description}</p><p><small>AsyncAPI {asyncapi}</small></p>",
        title = text(&info["title"]),
        version = text(&info["version"]),
        description = text(&info["description"]),
        asyncapi = text(&doc["asyncapi"]),
    );
    if let Some(servers) = doc["servers"].as_object() {
        html.push_str("<h2>Servers</h2><table><tr><th>server</th><th>host</th><th>protocol</th></tr>");
        for (name, s) in servers {
            let _ = write!(
                html,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                escape(name),
                text(&s["host"]),
                text(&s["protocol"])
            );
        }
        html.push_str("</table>");
    }
    let channels = doc["channels"].as_object();
    let address = |r: &Value| {
        ref_name(r).and_then(|c| channels?.get(c)).map_or_else(
            || "(unknown)".to_owned(),
            |c| c["address"].as_str().unwrap_or("(dynamic)").to_owned(),
        )
    };
    if let Some(ops) = doc["operations"].as_object() {
        html.push_str(
            "<h2>Operations</h2><table><tr><th>operation</th><th>action</th><th>channel</th><th>messages</th><th>reply</th></tr>",
        );
        for (name, op) in ops {
            let messages = |v: &Value| {
                v.as_array()
                    .map(|ms| {
                        ms.iter()
                            .filter_map(ref_name)
                            .map(escape)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let _ = write!(
                html,
                "<tr class=\"operation\"><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(name),
                text(&op["action"]),
                escape(&address(&op["channel"])),
                messages(&op["messages"]),
                messages(&op["reply"]["messages"]),
            );
        }
        html.push_str("</table>");
    }
    if let Some(channels) = channels {
        html.push_str("<h2>Channels</h2><table><tr><th>channel</th><th>address</th><th>kind</th><th>messages</th><th>description</th></tr>");
        for (name, c) in channels {
            let kind = c["bindings"]["amqp"]["is"].as_str().map_or("", |k| match k {
                "queue" => "queue",
                "routingKey" => "exchange",
                other => other,
            });
            let messages = c["messages"]
                .as_object()
                .map(|m| m.keys().map(|k| escape(k)).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let _ = write!(
                html,
                "<tr class=\"channel\"><td><code>{}</code></td><td><code>{}</code></td><td>{kind}</td><td>{messages}</td><td>{}</td></tr>",
                escape(name),
                c["address"].as_str().map_or_else(|| "(dynamic)".to_owned(), escape),
                text(&c["description"]),
            );
        }
        html.push_str("</table>");
    }
    if let Some(messages) = doc["components"]["messages"].as_object() {
        html.push_str("<h2>Messages</h2>");
        for (key, m) in messages {
            let _ = write!(
                html,
                "<section class=\"message\" id=\"message-{id}\"><h3>{name}</h3><p>Content type: <code>{ct}</code></p>",
                id = escape(key),
                name = escape(m["name"].as_str().unwrap_or(key)),
                ct = text(&m["contentType"]),
            );
            let payload = &m["payload"];
            if payload.as_object().is_some_and(serde_json::Map::is_empty) {
                html.push_str("<p class=\"payload\">No schema: any body.</p>");
            } else {
                if let Some(d) = payload["description"].as_str() {
                    let _ = write!(html, "<p>{}</p>", escape(d));
                }
                fields_table(&mut html, payload);
                if let Some(defs) = payload["$defs"].as_object() {
                    for (name, def) in defs {
                        let _ = write!(html, "<h4>{}</h4>", escape(name));
                        fields_table(&mut html, def);
                    }
                }
            }
            html.push_str("</section>");
        }
    }
    html.push_str("</body></html>\n");
    html
}

/// Serves the page of the document at `path` (read again for every request, so that a
/// rewritten file shows on reload) at `http://ADDR/`, and the document at `/asyncapi.json`;
/// calls `bound` with the address once listening, then serves until the process ends.
pub async fn serve(path: &Path, addr: &str, bound: impl FnOnce(std::net::SocketAddr)) -> anyhow::Result<()> {
    read(path)?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    bound(listener.local_addr()?);
    loop {
        let (mut stream, _) = listener.accept().await.context("cannot accept a connection")?;
        let path = path.to_owned();
        tokio::spawn(async move {
            let mut request = [0u8; 2048];
            let Ok(n) = stream.read(&mut request).await else {
                return;
            };
            let head = String::from_utf8_lossy(&request[..n]);
            let target = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match (target, read(&path)) {
                (_, Err(e)) => ("500 Internal Server Error", "text/plain", format!("{e:#}\n")),
                ("/" | "/index.html", Ok(doc)) => ("200 OK", "text/html; charset=utf-8", html(&doc)),
                ("/asyncapi.json", Ok(doc)) => (
                    "200 OK",
                    "application/json",
                    serde_json::to_string_pretty(&doc).unwrap_or_default(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_page_lists_operations_and_message_fields() {
        let doc = json!({
            "asyncapi": "3.0.0",
            "info": { "title": "shop <svc>", "version": "1.0.0" },
            "channels": { "queue_orders": { "address": "orders", "messages": { "shop.order": {} } } },
            "operations": { "receive_queue_orders": {
                "action": "receive",
                "channel": { "$ref": "#/channels/queue_orders" },
                "messages": [{ "$ref": "#/channels/queue_orders/messages/shop.order" }] } },
            "components": { "messages": { "shop.order": {
                "name": "shop.order", "contentType": "application/json",
                "payload": { "type": "object", "required": ["id"], "properties": {
                    "id": { "type": "integer", "description": "The number." },
                    "lines": { "type": "array", "items": { "$ref": "#/$defs/Line" } } },
                    "$defs": { "Line": { "type": "object", "properties": { "sku": { "type": "string" } } } } } } } }
        });
        let page = html(&doc);
        assert!(page.contains("shop &lt;svc&gt;"), "escaped");
        assert!(page.contains("<h3>shop.order</h3>"));
        assert!(page.contains("<td><code>id</code></td><td>integer</td><td>yes</td><td>The number.</td>"));
        assert!(page.contains("<td>array of Line</td>"));
        assert!(page.contains("<h4>Line</h4>") && page.contains("<code>sku</code>"));
        assert!(page.contains("<td><code>orders</code></td>"));
    }
}
