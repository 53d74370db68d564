//! Plain bodies, both ways: a handler may take the body as a [`String`] (or as
//! [`Bytes`](bytes::Bytes)), and a [`PlainProducer`] publishes text or bytes with the
//! properties every typed publish carries. For services that exchange text or binary blobs
//! rather than named JSON messages (the RabbitMQ tutorials' `Hello World!`, a pika or Kombu
//! producer of plain strings).

use std::fmt;

use bytes::Bytes;
use mqtransport_core::{Confirmation, Envelope, Result};

use crate::Incoming;
use crate::extract::FromDelivery;
use crate::message::Codec;
use crate::outcome::{IntoOutcome, Outcome};
use crate::publish::{PublishOptions, Publisher, Route, addressed, confirmed};

/// A body that is not UTF-8 text, taken by a handler as a `String`: dead-lettered with the
/// reason.
#[derive(Debug)]
pub struct NotText {
    name: Option<String>,
    error: std::str::Utf8Error,
}

impl fmt::Display for NotText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "the body of message '{name}' is not UTF-8 text: {}", self.error),
            None => write!(f, "the body is not UTF-8 text: {}", self.error),
        }
    }
}

impl std::error::Error for NotText {}

impl IntoOutcome for NotText {
    fn into_outcome(self) -> Outcome {
        Outcome::dead_letter(self)
    }
}

/// The body as text. A body with a JSON content type that holds a JSON string is unquoted (so
/// a string published as JSON reads as itself); any other body is taken as it is, and must be
/// UTF-8.
///
/// A `String` names no message type, so a handler taking one is registered with
/// [`Consumer::fallback`](crate::Consumer::fallback) (every message of the queue) or
/// [`Consumer::handle_name`](crate::Consumer::handle_name).
impl<S: Sync> FromDelivery<S> for String {
    type Rejection = NotText;

    async fn from_delivery(req: &Incoming, _state: &S) -> std::result::Result<Self, NotText> {
        let envelope = req.envelope();
        let text = std::str::from_utf8(&envelope.body).map_err(|error| NotText {
            name: req.name().map(str::to_owned),
            error,
        })?;
        let json = envelope
            .properties()
            .content_type
            .as_deref()
            .and_then(Codec::from_content_type)
            == Some(Codec::Json);
        if json && let Ok(unquoted) = serde_json::from_str::<String>(text) {
            return Ok(unquoted);
        }
        Ok(text.to_owned())
    }
}

/// Publishes plain text or bytes to one route, stamped like a typed publish (persistent, a
/// message id, the time, the app's name, confirmed), with `text/plain; charset=utf-8` or
/// `application/octet-stream` as the content type, and a message name only if given one.
///
/// ```
/// # use mqtransport::prelude::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mqtransport::Result<()> {
/// let app = App::builder()
///     .url("memory://docs-plain")
///     .topology(Topology::new().queue(Queue::durable("hello")))
///     .build()
///     .await?;
/// let hello = app.plain_producer(Route::queue("hello"));
/// hello.send_text("Hello World!").await?; // the body is the 12 bytes, no JSON quotes
/// hello.send_bytes(vec![0xca, 0xfe]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PlainProducer {
    publisher: Publisher,
    route: Route,
    name: Option<String>,
    events: bool,
}

impl PlainProducer {
    pub(crate) fn new(publisher: Publisher, route: Route) -> Self {
        PlainProducer {
            publisher,
            route,
            name: None,
            events: false,
        }
    }

    /// Sends the message name `name` as the `type` (for consumers that dispatch by name).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Publishes events: unroutable messages are dropped (see
    /// [`Producer::events`](crate::Producer::events)).
    pub fn events(mut self) -> Self {
        self.events = true;
        self
    }

    /// Publishes `text` and requires the broker's confirm.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<()> {
        self.send(Bytes::from(text.into()), Codec::Text).await
    }

    /// Publishes `body` and requires the broker's confirm.
    pub async fn send_bytes(&self, body: impl Into<Bytes>) -> Result<()> {
        self.send(body.into(), Codec::Bytes).await
    }

    /// Publishes `text` with `options` and returns the confirmation.
    pub async fn publish_text_with(&self, text: impl Into<String>, options: PublishOptions) -> Result<Confirmation> {
        self.publish(Bytes::from(text.into()), Codec::Text, &options).await
    }

    /// Publishes `body` with `options` and returns the confirmation.
    pub async fn publish_bytes_with(&self, body: impl Into<Bytes>, options: PublishOptions) -> Result<Confirmation> {
        self.publish(body.into(), Codec::Bytes, &options).await
    }

    async fn send(&self, body: Bytes, codec: Codec) -> Result<()> {
        let confirmation = self.publish(body, codec, &PublishOptions::default()).await?;
        let name = self.name.as_deref().unwrap_or(codec.content_type());
        let key = self.route.routing_key_for(self.name.as_deref().unwrap_or(""));
        confirmed(confirmation, name, self.route.exchange_name(), &key)
    }

    async fn publish(&self, body: Bytes, codec: Codec, options: &PublishOptions) -> Result<Confirmation> {
        let mut envelope = Envelope::new(body);
        let props = envelope.properties_mut();
        props.content_type = Some(codec.content_type().to_owned());
        props.kind.clone_from(&self.name);
        let envelope = self.publisher.stamped(envelope, options);
        let publish = addressed(&self.route, self.name.as_deref().unwrap_or(""), envelope, options);
        let publish = if self.events { publish.mandatory(false) } else { publish };
        self.publisher.publish_stamped(publish).await
    }
}
