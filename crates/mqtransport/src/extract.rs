//! Extractors: what a handler's arguments can be.
//!
//! Every argument of a handler implements [`FromDelivery`]. Unlike an HTTP body, a message body
//! is already in memory (a shared `Bytes`), so no extractor consumes the delivery and arguments
//! may come in any order.
//!
//! | argument | what it is | when it cannot be extracted |
//! |---|---|---|
//! | `M` where `M: Message` | the decoded, validated message; it also names the message type the handler serves | dead-letter with the reason ([`DecodeError`]) |
//! | [`State<T>`] | shared state, `T: FromRef<S>` | — |
//! | [`Headers`] | the headers | — |
//! | [`DeliveryInfo`] | message id, queue, original exchange and routing key, redelivered, attempt, timestamp | — |
//! | [`Publisher`] | publishes, and replies to the delivery's `reply_to` | — |
//! | [`Envelope`] | the raw message | — |
//! | `Bytes` | the raw body | — |
//! | [`Extension<T>`] | a value middleware stored in [`Incoming::extensions_mut`] | dead-letter: a middleware is missing |
//! | `Option<E>` | `E`, or `None` when `E` cannot be extracted | — |
//! | `Result<E, E::Rejection>` | `E`, or why not, for the handler to decide | — |

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use mqtransport_core::Envelope;

use crate::delivery::{DeliveryInfo, Headers, Incoming};
use crate::message::{DecodeError, Message, decode};
use crate::outcome::{IntoOutcome, Outcome};
use crate::publish::Publisher;

/// Builds a handler argument from a delivery and the app's state.
///
/// Implement it for your own extractors; its rejection decides the outcome when extraction
/// fails.
///
/// ```
/// use mqtransport::{FromDelivery, Incoming, Outcome};
///
/// /// The tenant a message belongs to, from its `x-tenant` header.
/// struct Tenant(String);
///
/// impl<S: Sync> FromDelivery<S> for Tenant {
///     type Rejection = Outcome;
///
///     async fn from_delivery(req: &Incoming, _state: &S) -> Result<Self, Outcome> {
///         match req.envelope().header("x-tenant").and_then(|v| v.as_str()) {
///             Some(t) => Ok(Tenant(t.to_owned())),
///             None => Err(Outcome::dead_letter("no x-tenant header")),
///         }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "not an extractor",
    note = "handler arguments are extractors: a `#[derive(Message)]` type, `State<T>`, `Headers`, `DeliveryInfo`, `Publisher`, `Envelope`, `Bytes`, `Extension<T>`, or an `Option`/`Result` of one"
)]
pub trait FromDelivery<S>: Sized {
    /// What a failed extraction means for the delivery.
    type Rejection: IntoOutcome;

    /// The message name this argument decodes, if it is a message: a handler's arguments name
    /// at most one, which is the message type the handler serves.
    const MESSAGE: Option<&'static str> = None;

    /// What the app's AsyncAPI document says of that message.
    const MESSAGE_DOC: Option<crate::MessageDoc> = None;

    /// Extracts the value.
    fn from_delivery(req: &Incoming, state: &S) -> impl Future<Output = Result<Self, Self::Rejection>> + Send;
}

impl<S: Sync, M: Message> FromDelivery<S> for M {
    type Rejection = DecodeError;
    const MESSAGE: Option<&'static str> = Some(M::NAME);
    const MESSAGE_DOC: Option<crate::MessageDoc> = Some(crate::MessageDoc::of::<M>());

    async fn from_delivery(req: &Incoming, _state: &S) -> Result<Self, DecodeError> {
        decode(req.envelope())
    }
}

impl IntoOutcome for DecodeError {
    fn into_outcome(self) -> Outcome {
        Outcome::dead_letter(self)
    }
}

impl IntoOutcome for Infallible {
    fn into_outcome(self) -> Outcome {
        match self {}
    }
}

impl<S: Sync> FromDelivery<S> for Envelope {
    type Rejection = Infallible;

    async fn from_delivery(req: &Incoming, _state: &S) -> Result<Self, Infallible> {
        Ok(req.envelope().clone())
    }
}

impl<S: Sync> FromDelivery<S> for Bytes {
    type Rejection = Infallible;

    async fn from_delivery(req: &Incoming, _state: &S) -> Result<Self, Infallible> {
        Ok(req.envelope().body.clone())
    }
}

impl<S: Sync> FromDelivery<S> for Headers {
    type Rejection = Infallible;

    async fn from_delivery(req: &Incoming, _state: &S) -> Result<Self, Infallible> {
        Ok(Headers(Arc::clone(&req.parts)))
    }
}

impl<S: Sync> FromDelivery<S> for DeliveryInfo {
    type Rejection = Infallible;

    async fn from_delivery(req: &Incoming, _state: &S) -> Result<Self, Infallible> {
        Ok(DeliveryInfo(Arc::clone(&req.parts)))
    }
}

impl<S: Sync> FromDelivery<S> for Publisher {
    type Rejection = Infallible;

    async fn from_delivery(req: &Incoming, _state: &S) -> Result<Self, Infallible> {
        Ok(req.ctx.publisher.replying_to(req.envelope()))
    }
}

impl<S: Sync, T: FromDelivery<S>> FromDelivery<S> for Option<T> {
    type Rejection = Infallible;
    const MESSAGE: Option<&'static str> = T::MESSAGE;
    const MESSAGE_DOC: Option<crate::MessageDoc> = T::MESSAGE_DOC;

    async fn from_delivery(req: &Incoming, state: &S) -> Result<Self, Infallible> {
        Ok(T::from_delivery(req, state).await.ok())
    }
}

impl<S: Sync, T: FromDelivery<S>> FromDelivery<S> for Result<T, T::Rejection> {
    type Rejection = Infallible;
    const MESSAGE: Option<&'static str> = T::MESSAGE;
    const MESSAGE_DOC: Option<crate::MessageDoc> = T::MESSAGE_DOC;

    async fn from_delivery(req: &Incoming, state: &S) -> Result<Self, Infallible> {
        Ok(T::from_delivery(req, state).await)
    }
}

/// Makes a `T` from a reference to the app state `S`: how [`State<T>`] takes one part of a
/// larger state. Every `S: Clone` is `FromRef<S>`.
///
/// ```
/// use mqtransport::{FromRef, State};
///
/// #[derive(Clone)]
/// struct AppState {
///     db: Db,
/// }
///
/// #[derive(Clone)]
/// struct Db;
///
/// impl FromRef<AppState> for Db {
///     fn from_ref(state: &AppState) -> Db {
///         state.db.clone()
///     }
/// }
///
/// // A handler of an `App<AppState>` may now take `State<Db>` as well as `State<AppState>`.
/// async fn handler(State(_db): State<Db>) {}
/// # let _ = handler;
/// ```
pub trait FromRef<S> {
    /// Makes the value.
    fn from_ref(state: &S) -> Self;
}

impl<S: Clone> FromRef<S> for S {
    fn from_ref(state: &S) -> Self {
        state.clone()
    }
}

/// The app's shared state, or a part of it ([`FromRef`]): an extractor. The state is given
/// once, to [`App::with_state`](crate::App::with_state), and checked at compile time.
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<S: Sync, T: FromRef<S> + Send> FromDelivery<S> for State<T> {
    type Rejection = Infallible;

    async fn from_delivery(_req: &Incoming, state: &S) -> Result<Self, Infallible> {
        Ok(State(T::from_ref(state)))
    }
}

impl<T> std::ops::Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A value a middleware stored in the delivery's [`Extensions`](crate::Extensions): an
/// extractor. Missing, the delivery is dead-lettered with [`MissingExtension`] (a middleware
/// the handler relies on is not installed; no redelivery fixes that).
#[derive(Debug, Clone, Copy, Default)]
pub struct Extension<T>(pub T);

impl<S: Sync, T: Clone + Send + Sync + 'static> FromDelivery<S> for Extension<T> {
    type Rejection = MissingExtension;

    async fn from_delivery(req: &Incoming, _state: &S) -> Result<Self, MissingExtension> {
        req.extensions()
            .get::<T>()
            .cloned()
            .map(Extension)
            .ok_or(MissingExtension(std::any::type_name::<T>()))
    }
}

/// The rejection of [`Extension<T>`]: no value of that type was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingExtension(&'static str);

impl fmt::Display for MissingExtension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no extension of type `{}`: the middleware that provides it is not installed on this consumer",
            self.0
        )
    }
}

impl std::error::Error for MissingExtension {}

impl IntoOutcome for MissingExtension {
    fn into_outcome(self) -> Outcome {
        Outcome::dead_letter(self)
    }
}
