//! What a handler's result means for its delivery: [`Outcome`], [`IntoOutcome`] and
//! [`HandlerError`].

use std::fmt;
use std::time::Duration;

/// A boxed error, as middleware and handlers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How the runtime settles a delivery. A handler never touches the acker: it returns something
/// that converts into an `Outcome` ([`IntoOutcome`]), and the runtime settles the delivery
/// exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Done: acknowledge it.
    Ack,
    /// Put it back in the queue now (`basic.nack` with requeue); it is redelivered with
    /// `redelivered = true`. Use it for "not now, someone else may take it", not for failures:
    /// a message that always fails would loop.
    Requeue,
    /// It failed in a way that may pass later: try again after a delay, as a new attempt. Past
    /// the consumer's [`RetryPolicy`](crate::RetryPolicy) cap it is dead-lettered instead.
    Retry {
        /// The delay; `None` takes it from the consumer's backoff.
        after: Option<Duration>,
        /// Why, recorded in the `x-mqt-error` header.
        reason: String,
    },
    /// It can never succeed: move it to the dead-letter queue with the reason in `x-mqt-error`.
    DeadLetter {
        /// Why.
        reason: String,
    },
    /// Done, with an answer: publish the reply to the request's `reply_to` (with its
    /// correlation id), then acknowledge it. What a handler returning a
    /// [`Message`](crate::Message) means; a message that asked for no reply is just
    /// acknowledged.
    Reply(Box<Reply>),
}

/// A handler's answer to a request, encoded: see [`Outcome::Reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub(crate) name: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) body: bytes::Bytes,
}

/// A message a handler returns is its reply to the request it handled: the runtime publishes
/// it to the request's `reply_to` and acknowledges the request. One that cannot be encoded
/// dead-letters the request (its caller is told why).
impl<M: crate::Message> IntoOutcome for M {
    fn into_outcome(self) -> Outcome {
        Outcome::reply(&self)
    }
}

impl Outcome {
    /// Retry after the consumer's backoff.
    pub fn retry(reason: impl fmt::Display) -> Self {
        Outcome::Retry {
            after: None,
            reason: reason.to_string(),
        }
    }

    /// Retry after `delay`.
    pub fn retry_after(delay: Duration, reason: impl fmt::Display) -> Self {
        Outcome::Retry {
            after: Some(delay),
            reason: reason.to_string(),
        }
    }

    /// Reply with `message`, then acknowledge (see [`Outcome::Reply`]); dead-letter if it
    /// cannot be encoded.
    pub fn reply<M: crate::Message>(message: &M) -> Self {
        match M::CODEC.encode(message) {
            Ok(body) => Outcome::Reply(Box::new(Reply {
                name: M::NAME,
                content_type: M::CODEC.content_type(),
                body: bytes::Bytes::from(body),
            })),
            Err(e) => Outcome::dead_letter(format!("the reply '{}' could not be encoded: {e}", M::NAME)),
        }
    }

    /// Dead-letter with `reason`.
    pub fn dead_letter(reason: impl fmt::Display) -> Self {
        Outcome::DeadLetter {
            reason: reason.to_string(),
        }
    }

    /// The outcome an error stands for: a [`HandlerError`] says it itself; an
    /// [`mqtransport::Error`](crate::Error) retries when [transient](crate::Error::is_transient)
    /// and dead-letters otherwise; a tower timeout retries; any other error retries (up to the
    /// consumer's cap, then dead-letters).
    pub fn from_error(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Self {
        if let Some(e) = error.downcast_ref::<HandlerError>() {
            return e.outcome();
        }
        if let Some(e) = error.downcast_ref::<crate::Error>() {
            return if e.is_transient() {
                Outcome::retry(e)
            } else {
                Outcome::dead_letter(e)
            };
        }
        if error.is::<tower::timeout::error::Elapsed>() {
            return Outcome::retry("the handler timed out");
        }
        Outcome::retry(chain(error))
    }

    /// A short name for logs and metrics: `ack`, `reply`, `requeue`, `retry`, `dead_letter`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Reply(_) => "reply",
            Outcome::Requeue => "requeue",
            Outcome::Retry { .. } => "retry",
            Outcome::DeadLetter { .. } => "dead_letter",
        }
    }
}

/// An error with its causes, `outer: inner: innermost`.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Converts a handler's return value into an [`Outcome`], as axum's `IntoResponse` does for
/// responses.
///
/// | returned | outcome |
/// |---|---|
/// | `()` | [`Outcome::Ack`] |
/// | `Outcome` | itself |
/// | `Ok(v)` | `v`'s outcome |
/// | `Err(e)` | [`Outcome::from_error`]: retry if transient or unknown, dead-letter if permanent |
#[diagnostic::on_unimplemented(
    message = "a handler cannot return `{Self}`",
    label = "this does not convert into an `Outcome`",
    note = "return `()`, an `Outcome`, a `#[derive(Message)]` reply, or a `Result<_, E>` of one where `E` converts into `Box<dyn Error + Send + Sync>`"
)]
pub trait IntoOutcome {
    /// The outcome.
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Outcome {
        Outcome::Ack
    }
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Outcome {
        self
    }
}

impl<T, E> IntoOutcome for Result<T, E>
where
    T: IntoOutcome,
    E: Into<BoxError>,
{
    fn into_outcome(self) -> Outcome {
        match self {
            Ok(v) => v.into_outcome(),
            Err(e) => Outcome::from_error(&*e.into()),
        }
    }
}

/// What a failure means for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Transient(Option<Duration>),
    Permanent,
}

/// An error that says whether trying again can help: return it (or `?` it) from a handler.
///
/// ```
/// use mqtransport::{HandlerError, Outcome};
///
/// fn charge(card: &str) -> Result<(), HandlerError> {
///     if card.is_empty() {
///         // No retry fixes a missing card number.
///         return Err(HandlerError::permanent("no card number"));
///     }
///     Err(HandlerError::transient("payment gateway unavailable"))
/// }
///
/// assert!(matches!(mqtransport::IntoOutcome::into_outcome(charge("")), Outcome::DeadLetter { .. }));
/// assert!(matches!(mqtransport::IntoOutcome::into_outcome(charge("4242")), Outcome::Retry { .. }));
/// ```
pub struct HandlerError {
    source: BoxError,
    disposition: Disposition,
}

impl HandlerError {
    /// May pass later: retry after the consumer's backoff.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        HandlerError {
            source: error.into(),
            disposition: Disposition::Transient(None),
        }
    }

    /// May pass after `delay` (e.g. a rate limit's reset time).
    pub fn retry_after(delay: Duration, error: impl Into<BoxError>) -> Self {
        HandlerError {
            source: error.into(),
            disposition: Disposition::Transient(Some(delay)),
        }
    }

    /// Will never pass: dead-letter the message.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        HandlerError {
            source: error.into(),
            disposition: Disposition::Permanent,
        }
    }

    /// Whether a retry may help.
    pub fn is_transient(&self) -> bool {
        matches!(self.disposition, Disposition::Transient(_))
    }

    /// The outcome this error stands for.
    pub fn outcome(&self) -> Outcome {
        let reason = chain(&*self.source);
        match self.disposition {
            Disposition::Transient(after) => Outcome::Retry { after, reason },
            Disposition::Permanent => Outcome::DeadLetter { reason },
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("source", &self.source)
            .field("transient", &self.is_transient())
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("saving the order")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn errors_classify_by_what_they_say() {
        let transient = crate::Error::new(crate::ErrorKind::Timeout, "confirm");
        assert!(matches!(Err::<(), _>(transient).into_outcome(), Outcome::Retry { .. }));
        let permanent = crate::Error::invalid("bad field");
        assert_eq!(
            Err::<(), _>(permanent).into_outcome(),
            Outcome::dead_letter("invalid input: bad field")
        );
        let unknown = Outer(std::io::Error::other("disk full"));
        assert_eq!(
            Err::<(), _>(unknown).into_outcome(),
            Outcome::retry("saving the order: disk full")
        );
        assert_eq!(
            Err::<(), _>(HandlerError::retry_after(Duration::from_secs(3), "rate limited")).into_outcome(),
            Outcome::retry_after(Duration::from_secs(3), "rate limited")
        );
        assert_eq!(Ok::<(), BoxError>(()).into_outcome(), Outcome::Ack);
        assert_eq!(Ok::<_, BoxError>(Outcome::Requeue).into_outcome(), Outcome::Requeue);
    }

    #[test]
    fn a_tower_timeout_retries() {
        let e: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(Outcome::from_error(&*e), Outcome::retry("the handler timed out"));
    }
}
