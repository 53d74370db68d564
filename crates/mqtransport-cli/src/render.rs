//! Messages as people read them (pretty JSON bodies, headers, properties) and as JSON values.

use base64::Engine as _;
use mqtransport::{Envelope, FieldValue};
use serde_json::{Map, Value, json};

/// A header or argument value as JSON: numbers, strings (binary ones as `{"base64": ...}`),
/// arrays and tables as they are.
pub fn field_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Bool(b) => json!(b),
        FieldValue::I8(n) => json!(n),
        FieldValue::U8(n) => json!(n),
        FieldValue::I16(n) => json!(n),
        FieldValue::U16(n) => json!(n),
        FieldValue::I32(n) => json!(n),
        FieldValue::U32(n) => json!(n),
        FieldValue::I64(n) => json!(n),
        FieldValue::U64(n) => json!(n),
        FieldValue::F32(n) => json!(n),
        FieldValue::F64(n) => json!(n),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::LongString(_) | FieldValue::Decimal(_) => match value.as_str() {
            Some(s) => json!(s),
            None => json!(value.display_value()),
        },
        FieldValue::Bytes(b) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        FieldValue::Array(items) => Value::Array(items.iter().map(field_json).collect()),
        FieldValue::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.to_owned(), field_json(v))).collect()),
        FieldValue::Void => Value::Null,
    }
}

/// A body as JSON: the parsed document when it is JSON, else its text, else
/// `{"base64": ...}`.
pub fn body_json(body: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return v;
    }
    match std::str::from_utf8(body) {
        Ok(text) => json!(text),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(body) }),
    }
}

/// A body for people: pretty JSON, or its text, or base64 of bytes that are not text.
pub fn body_text(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
    }
    match std::str::from_utf8(body) {
        Ok(text) => text.to_owned(),
        Err(_) => format!(
            "(binary, {} bytes, base64) {}",
            body.len(),
            base64::engine::general_purpose::STANDARD.encode(body)
        ),
    }
}

/// The properties that are set, by their AMQP names.
pub fn properties(envelope: &Envelope) -> Vec<(&'static str, String)> {
    let p = envelope.properties();
    let mut set = Vec::new();
    let mut add = |name: &'static str, value: Option<String>| {
        if let Some(v) = value {
            set.push((name, v));
        }
    };
    add("type", p.kind.clone());
    add("message_id", p.message_id.clone());
    add("correlation_id", p.correlation_id.clone());
    add("reply_to", p.reply_to.clone());
    add("content_type", p.content_type.clone());
    add("content_encoding", p.content_encoding.clone());
    add("delivery_mode", p.delivery_mode.map(|m| m.as_u8().to_string()));
    add("priority", p.priority.map(|n| n.to_string()));
    add("expiration", p.expiration.clone());
    add("timestamp", p.timestamp.map(|t| t.to_string()));
    add("app_id", p.app_id.clone());
    add("user_id", p.user_id.clone());
    add("cluster_id", p.cluster_id.clone());
    set
}

/// The whole message as JSON: `properties`, `headers`, `body`.
pub fn envelope_json(envelope: &Envelope) -> Value {
    let props: Map<String, Value> = properties(envelope)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let headers: Map<String, Value> = envelope
        .properties()
        .headers
        .iter()
        .flat_map(|t| t.iter())
        .map(|(k, v)| (k.to_owned(), field_json(v)))
        .collect();
    json!({ "properties": props, "headers": headers, "body": body_json(&envelope.body) })
}

/// The whole message for people: properties and headers one per line, then the body.
pub fn envelope_text(envelope: &Envelope) -> String {
    let mut text = String::new();
    for (k, v) in properties(envelope) {
        text.push_str(&format!("  {k}: {v}\n"));
    }
    for (k, v) in envelope.properties().headers.iter().flat_map(|t| t.iter()) {
        text.push_str(&format!("  header {k}: {}\n", field_json(v)));
    }
    for line in body_text(&envelope.body).lines() {
        text.push_str(&format!("  | {line}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_as_json_then_text_then_base64() {
        assert_eq!(body_json(br#"{"id":1}"#), json!({"id": 1}));
        assert_eq!(body_json(b"hello"), json!("hello"));
        assert_eq!(body_json(&[0xff, 0x00]), json!({"base64": "/wA="}));
        assert_eq!(body_text(br#"{"id":1}"#), "{\n  \"id\": 1\n}");
    }

    #[test]
    fn a_message_shows_its_properties_and_headers() {
        let env = Envelope::new(r#"{"id":1}"#)
            .with_kind("shop.order")
            .with_header("x-tenant", "acme")
            .with_header("x-n", 3i64);
        let v = envelope_json(&env);
        assert_eq!(v["properties"]["type"], "shop.order");
        assert_eq!(v["headers"]["x-tenant"], "acme");
        assert_eq!(v["headers"]["x-n"], 3);
        assert_eq!(v["body"]["id"], 1);
        assert!(envelope_text(&env).contains("header x-tenant: \"acme\""));
    }
}
