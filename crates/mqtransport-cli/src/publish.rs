//! `mqt publish`: messages to a queue (through the default exchange) or to an exchange with a
//! routing key, each confirmed by the broker.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use mqtransport::{Confirmation, DynTransport, Envelope, ErrorKind, FieldValue, Publish, Transport};

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A queue, through the default exchange (checked to exist first).
    Queue(String),
    /// An exchange, with a routing key.
    Exchange {
        /// The exchange.
        name: String,
        /// The routing key.
        routing_key: String,
    },
}

/// What each message carries besides its body.
#[derive(Debug, Clone, Default)]
pub struct MessageOptions {
    /// Headers, in order.
    pub headers: Vec<(String, FieldValue)>,
    /// The `type` property (the message name mqtransport dispatches by).
    pub kind: Option<String>,
    /// `content_type`; `application/json` when the body is JSON and this is unset.
    pub content_type: Option<String>,
    /// A fixed message id; otherwise each message gets a new UUIDv7.
    pub message_id: Option<String>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// `reply_to`.
    pub reply_to: Option<String>,
    /// `expiration`.
    pub expiration: Option<Duration>,
    /// `priority`.
    pub priority: Option<u8>,
    /// Transient (delivery mode 1) instead of persistent.
    pub transient: bool,
}

/// What the broker said of one message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// Its position, from 1.
    pub index: usize,
    /// Its message id.
    pub message_id: String,
    /// `confirmed`, `returned`, `nacked`.
    pub outcome: String,
    /// The broker's reason for a returned message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Parses `KEY=VALUE` into a header: `true`/`false` become booleans, integers become 64-bit
/// integers, anything else is a string (quote-free).
pub fn parse_header(text: &str) -> anyhow::Result<(String, FieldValue)> {
    let Some((key, value)) = text.split_once('=') else {
        bail!("header '{text}' is not KEY=VALUE");
    };
    if key.is_empty() {
        bail!("header '{text}' has an empty name");
    }
    let value = match value {
        "true" => FieldValue::Bool(true),
        "false" => FieldValue::Bool(false),
        v => v.parse::<i64>().map_or_else(|_| FieldValue::string(v), FieldValue::I64),
    };
    Ok((key.to_owned(), value))
}

/// The bodies in `input`: the whole of it, or one per non-empty line when `lines`.
pub fn bodies(input: &[u8], lines: bool) -> Vec<Bytes> {
    if !lines {
        return vec![Bytes::copy_from_slice(input)];
    }
    input
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(Bytes::copy_from_slice)
        .collect()
}

/// The envelope of `body` with `options`.
pub fn envelope(body: Bytes, options: &MessageOptions) -> Envelope {
    let is_json = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
    let mut env = Envelope::new(body);
    let p = env.properties_mut();
    p.kind.clone_from(&options.kind);
    p.content_type = options
        .content_type
        .clone()
        .or_else(|| is_json.then(|| "application/json".to_owned()));
    p.message_id = Some(
        options
            .message_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
    );
    p.correlation_id.clone_from(&options.correlation_id);
    p.reply_to.clone_from(&options.reply_to);
    p.expiration = options.expiration.map(|d| d.as_millis().to_string());
    p.priority = options.priority;
    p.timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs());
    p.app_id = Some("mqt".to_owned());
    let mut env = if options.transient { env } else { env.persistent() };
    for (k, v) in &options.headers {
        env.headers_mut().insert(k.clone(), v.clone());
    }
    env
}

/// Publishes each of `bodies` `count` times to `to`, mandatory, and waits for every confirm.
/// Fails before sending anything if the queue does not exist; fails after sending if any
/// message was returned or nacked, naming them (the others were sent).
pub async fn publish(
    transport: &DynTransport,
    to: &Target,
    bodies: &[Bytes],
    count: usize,
    options: &MessageOptions,
) -> anyhow::Result<Vec<Published>> {
    if bodies.is_empty() {
        bail!("nothing to publish: the input holds no message");
    }
    let (exchange, routing_key) = match to {
        Target::Queue(q) => {
            match transport.queue_info(q).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => bail!("queue '{q}' does not exist"),
                Err(e) => return Err(e).with_context(|| format!("cannot check queue '{q}'")),
            }
            (String::new(), q.clone())
        }
        Target::Exchange { name, routing_key } => (name.clone(), routing_key.clone()),
    };
    let sends = bodies
        .iter()
        .flat_map(|b| std::iter::repeat_n(b, count))
        .enumerate()
        .map(|(i, body)| {
            let env = envelope(body.clone(), options);
            let id = env.properties().message_id.clone().unwrap_or_default();
            let publish = Publish::new(exchange.as_str(), routing_key.as_str(), env).mandatory(true);
            async move { (i + 1, id, transport.publish(publish).await) }
        });
    // Pipelined: at most 256 unconfirmed at once.
    let results: Vec<_> = futures_util::StreamExt::collect(futures_util::StreamExt::buffered(
        futures_util::stream::iter(sends),
        256,
    ))
    .await;
    let mut published = Vec::with_capacity(results.len());
    for (index, message_id, result) in results {
        let result = result.with_context(|| format!("message {index} was not published"))?;
        let (outcome, reason) = match result {
            Confirmation::Confirmed => ("confirmed", None),
            Confirmation::Returned { reply_code, reply_text } => {
                ("returned", Some(format!("{reply_code} {reply_text}")))
            }
            _ => ("nacked", None),
        };
        published.push(Published {
            index,
            message_id,
            outcome: outcome.to_owned(),
            reason,
        });
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_typed_by_their_text() {
        assert_eq!(parse_header("n=3").unwrap(), ("n".to_owned(), FieldValue::I64(3)));
        assert_eq!(parse_header("ok=true").unwrap().1, FieldValue::Bool(true));
        assert_eq!(parse_header("t=a=b").unwrap().1, FieldValue::string("a=b"));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("=x").is_err());
    }

    #[test]
    fn lines_are_messages_when_asked() {
        assert_eq!(bodies(b"a\r\n\nb\n", true), vec![Bytes::from("a"), Bytes::from("b")]);
        assert_eq!(bodies(b"a\nb", false), vec![Bytes::from("a\nb")]);
    }

    #[test]
    fn a_json_body_is_labelled_and_persistent() {
        let env = envelope(Bytes::from(r#"{"a":1}"#), &MessageOptions::default());
        assert_eq!(env.properties().content_type.as_deref(), Some("application/json"));
        assert_eq!(
            env.properties().delivery_mode,
            Some(mqtransport::DeliveryMode::Persistent)
        );
        assert!(env.properties().message_id.is_some());
    }
}
