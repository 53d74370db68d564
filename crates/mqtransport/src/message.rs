//! Typed messages: the [`Message`] trait, its [`Codec`]s and validation.

use std::fmt;

use mqtransport_core::{Envelope, Error, ErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A typed message: a serde type with a stable name, a codec and validation rules.
///
/// Derive it with `#[derive(Message)]`; the name travels as the AMQP `type` property and is
/// the key that dispatches a delivery to its handler, so several message types can share one
/// queue.
///
/// ```
/// use mqtransport::Message;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "orders.created")]
/// struct OrderCreated {
///     id: u64,
/// }
///
/// #[derive(Serialize, Deserialize, Message)]
/// struct OrderShipped {
///     id: u64,
/// }
///
/// assert_eq!(OrderCreated::NAME, "orders.created");
/// // Without a name, the type's name in snake_case:
/// assert_eq!(OrderShipped::NAME, "order_shipped");
/// ```
///
/// ## Derive attributes (`#[message(...)]`)
///
/// | attribute | meaning | default |
/// |---|---|---|
/// | `name = "orders.created"` | the message name | the type's name in snake_case |
/// | `codec = "json"` / `"msgpack"` / `"text"` / `"bytes"` | how the body is encoded (`msgpack` needs the `msgpack` feature; `text` and `bytes` are for messages that are a string or a byte string: see [`Codec`]) | `json` |
/// | `validate` / `validate = false` | check the value with [`garde`](https://docs.rs/garde) | on when the type or a field has a `#[garde(...)]` attribute |
/// | `crate = "path"` | where the `mqtransport` crate is | `::mqtransport` |
///
/// Validation always runs on consume (an invalid message is dead-lettered with the report);
/// on publish it runs in debug builds by default (see [`Producer::validate`](crate::Producer::validate)).
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The message name (AMQP `type`).
    const NAME: &'static str;
    /// How the body is encoded when this message is published.
    const CODEC: Codec = Codec::Json;

    /// Checks the value's rules; the derive calls `garde::Validate` when asked to.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }

    /// The JSON Schema of the message, for the app's AsyncAPI document
    /// ([`App::asyncapi`](crate::App::asyncapi)). The derive gives the schema of a type that
    /// also derives `schemars::JsonSchema`, with the `asyncapi` feature; `None` otherwise.
    fn schema() -> Option<serde_json::Value> {
        None
    }
}

/// How a message body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// JSON (`application/json`), the default.
    Json,
    /// MessagePack (`application/msgpack`), with field names (a map per struct), so that other
    /// languages' clients read it; needs the `msgpack` feature.
    MsgPack,
    /// Plain text (`text/plain; charset=utf-8`), for a message that is a string (e.g. a newtype
    /// `struct Greeting(String)`): the body is the text itself, without JSON's quotes. A
    /// message whose own codec is text reads any `text/*` content type whose body is UTF-8.
    Text,
    /// Raw bytes (`application/octet-stream`), for a message that is a byte string (e.g.
    /// `struct Blob(#[serde(with = "serde_bytes")] Vec<u8>)`, or a `Vec<u8>` field): the body is
    /// the bytes themselves.
    Bytes,
}

impl Codec {
    /// The content type this codec writes.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::MsgPack => "application/msgpack",
            Codec::Text => "text/plain; charset=utf-8",
            Codec::Bytes => "application/octet-stream",
        }
    }

    /// The codec a content type names (parameters such as `; charset=utf-8` are ignored, case
    /// is not significant); `None` for a type no codec reads.
    pub fn from_content_type(content_type: &str) -> Option<Codec> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case("text/json") {
            Some(Codec::Json)
        } else if [
            "application/msgpack",
            "application/x-msgpack",
            "application/vnd.msgpack",
        ]
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
        {
            Some(Codec::MsgPack)
        } else if essence.eq_ignore_ascii_case("text/plain") {
            Some(Codec::Text)
        } else if essence.eq_ignore_ascii_case("application/octet-stream") {
            Some(Codec::Bytes)
        } else {
            None
        }
    }

    /// Encodes `value`.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, Error> {
        match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| codec_error(format!("cannot encode as JSON: {e}"))),
            Codec::MsgPack => msgpack::encode(value),
            Codec::Text => match serde_json::to_value(value) {
                Ok(serde_json::Value::String(text)) => Ok(text.into_bytes()),
                Ok(other) => Err(codec_error(format!(
                    "the text codec encodes strings only, not {}",
                    json_kind(&other)
                ))),
                Err(e) => Err(codec_error(format!("cannot encode as text: {e}"))),
            },
            Codec::Bytes => match serde_json::to_value(value) {
                Ok(serde_json::Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| codec_error("the bytes codec encodes byte strings only".to_owned())),
                Ok(other) => Err(codec_error(format!(
                    "the bytes codec encodes byte strings only, not {}",
                    json_kind(&other)
                ))),
                Err(e) => Err(codec_error(format!("cannot encode as bytes: {e}"))),
            },
        }
    }

    /// Decodes a `T` from `bytes`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| {
                codec_error(match e.classify() {
                    // Well-formed JSON of another shape: say so, not "invalid JSON".
                    serde_json::error::Category::Data => {
                        format!("the JSON does not match `{}`: {e}", short_type_name::<T>())
                    }
                    _ => format!("invalid JSON: {e}"),
                })
            }),
            Codec::MsgPack => msgpack::decode(bytes),
            Codec::Text => {
                let text =
                    std::str::from_utf8(bytes).map_err(|e| codec_error(format!("the text is not UTF-8: {e}")))?;
                T::deserialize(serde_json::Value::String(text.to_owned()))
                    .map_err(|e| codec_error(format!("text does not match `{}`: {e}", short_type_name::<T>())))
            }
            Codec::Bytes => {
                let items = bytes.iter().map(|b| serde_json::Value::from(*b)).collect();
                T::deserialize(serde_json::Value::Array(items))
                    .map_err(|e| codec_error(format!("bytes do not match `{}`: {e}", short_type_name::<T>())))
            }
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.content_type())
    }
}

/// What a JSON value is, for an error message.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a sequence",
        serde_json::Value::Object(_) => "a map or struct",
    }
}

/// `T`'s name without its module path (`OrderCreated`, `Vec<u8>`).
fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let generics = full.find('<').unwrap_or(full.len());
    let start = full[..generics].rfind("::").map_or(0, |i| i + 2);
    &full[start..]
}

fn codec_error(message: String) -> Error {
    Error::new(ErrorKind::Codec, message)
}

#[cfg(feature = "msgpack")]
mod msgpack {
    use super::*;

    pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
        rmp_serde::to_vec_named(value).map_err(|e| codec_error(format!("cannot encode as MessagePack: {e}")))
    }

    pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
        rmp_serde::from_slice(bytes).map_err(|e| codec_error(format!("invalid MessagePack: {e}")))
    }
}

#[cfg(not(feature = "msgpack"))]
mod msgpack {
    use super::*;

    fn missing() -> Error {
        Error::new(
            ErrorKind::Unsupported,
            "MessagePack needs the `msgpack` feature of mqtransport",
        )
    }

    pub(super) fn encode<T: Serialize + ?Sized>(_: &T) -> Result<Vec<u8>, Error> {
        Err(missing())
    }

    pub(super) fn decode<T: DeserializeOwned>(_: &[u8]) -> Result<T, Error> {
        Err(missing())
    }
}

/// A message that broke its validation rules: each problem with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    problems: Vec<(String, String)>,
}

impl Invalid {
    /// One problem with `field` (empty for the whole value).
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Invalid {
            problems: vec![(field.into(), problem.into())],
        }
    }

    /// Adds a problem.
    pub fn and(mut self, field: impl Into<String>, problem: impl Into<String>) -> Self {
        self.problems.push((field.into(), problem.into()));
        self
    }

    /// `(field, problem)` pairs, in the order they were found.
    pub fn problems(&self) -> impl Iterator<Item = (&str, &str)> {
        self.problems.iter().map(|(f, p)| (f.as_str(), p.as_str()))
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, problem)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if field.is_empty() {
                f.write_str(problem)?;
            } else {
                write!(f, "{field}: {problem}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

impl From<garde::Report> for Invalid {
    fn from(report: garde::Report) -> Self {
        Invalid {
            problems: report
                .iter()
                .map(|(path, error)| (path.to_string(), error.to_string()))
                .collect(),
        }
    }
}

/// Why a body could not become a message: each case names the message and what is wrong. None
/// of them is fixed by delivering the message again, so they all dead-letter.
#[derive(Debug)]
#[non_exhaustive]
pub enum DecodeError {
    /// The content type is one no codec reads.
    UnsupportedContentType {
        /// The message name.
        message: &'static str,
        /// The content type it came with.
        content_type: String,
    },
    /// The body is compressed or otherwise encoded in a way we do not undo.
    UnsupportedContentEncoding {
        /// The message name.
        message: &'static str,
        /// The content encoding it came with.
        content_encoding: String,
    },
    /// The body is compressed by the sender (Kombu's `compression` header), which we do not
    /// undo.
    Compressed {
        /// The message name.
        message: &'static str,
        /// The compression it names (e.g. `application/x-gzip` for Kombu's zlib).
        compression: String,
    },
    /// The body does not parse as the message.
    Malformed {
        /// The message name.
        message: &'static str,
        /// The codec used.
        codec: Codec,
        /// What the codec said.
        error: Error,
    },
    /// The value broke its validation rules.
    Invalid {
        /// The message name.
        message: &'static str,
        /// The problems.
        invalid: Invalid,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnsupportedContentType { message, content_type } => {
                write!(
                    f,
                    "message '{message}' has content type '{content_type}', which no codec reads"
                )
            }
            DecodeError::UnsupportedContentEncoding {
                message,
                content_encoding,
            } => write!(
                f,
                "message '{message}' has content encoding '{content_encoding}', which is not supported"
            ),
            DecodeError::Compressed { message, compression } => write!(
                f,
                "message '{message}' is compressed ('{compression}' in its compression header, as Kombu sends it), which is not supported: publish it uncompressed"
            ),
            DecodeError::Malformed { message, codec, error } => {
                write!(f, "message '{message}' is malformed ({codec}): {}", error.message())
            }
            DecodeError::Invalid { message, invalid } => write!(f, "message '{message}' is invalid: {invalid}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The header in which Kombu names the compression of a body it compressed.
const KOMBU_COMPRESSION: &str = "compression";

/// Decodes and validates an `M` from an envelope, honouring its content type (a message without
/// one is read with `M`'s own codec) and content encoding (none, `identity` or `utf-8`). A body
/// Kombu compressed (its `compression` header) is refused, naming the compression.
pub fn decode<M: Message>(envelope: &Envelope) -> Result<M, DecodeError> {
    let props = envelope.properties();
    if let Some(enc) = props.content_encoding.as_deref()
        && !(enc.is_empty()
            || enc.eq_ignore_ascii_case("identity")
            || enc.eq_ignore_ascii_case("utf-8")
            || enc.eq_ignore_ascii_case("utf8")
            || enc.eq_ignore_ascii_case("binary"))
    {
        return Err(DecodeError::UnsupportedContentEncoding {
            message: M::NAME,
            content_encoding: enc.to_owned(),
        });
    }
    if let Some(compression) = envelope.header(KOMBU_COMPRESSION).and_then(|v| v.as_str()) {
        return Err(DecodeError::Compressed {
            message: M::NAME,
            compression: compression.to_owned(),
        });
    }
    let codec = match props.content_type.as_deref() {
        None | Some("") => M::CODEC,
        Some(ct) if M::CODEC == Codec::Text && ct.get(..5).is_some_and(|t| t.eq_ignore_ascii_case("text/")) => {
            Codec::Text
        }
        Some(ct) => Codec::from_content_type(ct).ok_or_else(|| DecodeError::UnsupportedContentType {
            message: M::NAME,
            content_type: ct.to_owned(),
        })?,
    };
    let value: M = codec.decode(&envelope.body).map_err(|error| DecodeError::Malformed {
        message: M::NAME,
        codec,
        error,
    })?;
    value.validate().map_err(|invalid| DecodeError::Invalid {
        message: M::NAME,
        invalid,
    })?;
    Ok(value)
}

/// Encodes `message` into a body with its codec's content type and its name as `type`.
pub fn encode<M: Message>(message: &M) -> Result<Envelope, Error> {
    let body = M::CODEC
        .encode(message)
        .map_err(|e| e.context(format_args!("message '{}'", M::NAME)))?;
    let mut envelope = Envelope::new(body);
    let props = envelope.properties_mut();
    props.content_type = Some(M::CODEC.content_type().to_owned());
    props.kind = Some(M::NAME.to_owned());
    Ok(envelope)
}
