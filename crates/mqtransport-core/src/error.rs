//! The one error type of the core and of every transport boundary.

use std::fmt;

/// What kind of failure an [`Error`] is.
///
/// New kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection to the broker failed or was lost.
    Connection,
    /// A declare or delete conflicted with what the broker holds (AMQP 406 `PRECONDITION_FAILED`).
    Precondition,
    /// An exclusive queue or consumer is owned by someone else (AMQP 405 `RESOURCE_LOCKED`).
    ResourceLocked,
    /// The operation is not permitted (AMQP 403 `ACCESS_REFUSED`), e.g. a reserved `amq.` name.
    AccessRefused,
    /// A queue or exchange does not exist (AMQP 404 `NOT_FOUND`).
    NotFound,
    /// A mandatory message could not be routed to any queue.
    Unroutable,
    /// The broker refused a published message (negative confirm).
    Nacked,
    /// A body could not be encoded or decoded.
    Codec,
    /// The connection, channel or consumer is already closed.
    Closed,
    /// An operation did not complete in time.
    Timeout,
    /// The transport does not support the operation.
    Unsupported,
    /// The caller passed something invalid (a name, a URL, an option, an oversized message).
    InvalidInput,
    /// The broker refused the credentials (a wrong user name or password). Not transient:
    /// retrying with the same credentials fails the same way.
    Auth,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection error",
            ErrorKind::Precondition => "precondition failed",
            ErrorKind::ResourceLocked => "resource locked",
            ErrorKind::AccessRefused => "access refused",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unroutable => "unroutable",
            ErrorKind::Nacked => "nacked by the broker",
            ErrorKind::Codec => "codec error",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid input",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a broker-reported error closed only the channel or the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Only the channel the operation ran on was closed (AMQP `channel.close`).
    Channel,
    /// The whole connection was closed (AMQP `connection.close`).
    Connection,
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from mqtransport: a [`kind`](Error::kind), a message naming the thing that is wrong,
/// and, for errors the broker reported, the AMQP reply code and scope.
///
/// One pointer wide, so that the `Result`s of the paths that succeed stay small: a
/// `Result<(), Error>` is returned in a register, and a `Result<Confirmation>` or a
/// `Result<Delivery>` is no larger than its value. Building an error (an allocation) is the
/// rare case.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    reply_code: Option<u16>,
    scope: Option<Scope>,
    source: Option<Source>,
    outcome_unknown: bool,
}

impl Error {
    /// A new error of `kind` with a message that names the thing that is wrong.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            reply_code: None,
            scope: None,
            source: None,
            outcome_unknown: false,
        }))
    }

    /// An error the broker reported with an AMQP reply code, e.g. `404` and
    /// `"NOT_FOUND - no queue 'q' in vhost '/'"`. The kind is derived from the code. A reply
    /// text is an AMQP short string: one longer than 255 bytes is cut to 252 and `...`, as
    /// RabbitMQ sends it.
    pub fn broker(reply_code: u16, text: impl Into<String>, scope: Scope) -> Self {
        let mut text = text.into();
        if text.len() > 255 {
            text = format!("{}...", crate::frame_limit::char_prefix(&text, 252));
        }
        let kind = match reply_code {
            403 => ErrorKind::AccessRefused,
            404 => ErrorKind::NotFound,
            405 => ErrorKind::ResourceLocked,
            406 => ErrorKind::Precondition,
            312 | 313 => ErrorKind::Unroutable,
            // 320 (connection forced), 5xx frame and command errors, and anything unknown.
            _ => ErrorKind::Connection,
        };
        let mut e = Error::new(kind, text);
        e.0.reply_code = Some(reply_code);
        e.0.scope = Some(scope);
        e
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source = Some(Box::new(source));
        self
    }

    /// The same error with `what` said before its message (`"{what}: {message}"`): the kind,
    /// reply code, scope and source are kept, so a caller that re-wraps an error to name what
    /// it was doing loses nothing a caller above it may match on.
    ///
    /// ```
    /// use mqtransport_core::{Error, ErrorKind, Scope};
    ///
    /// let e = Error::broker(404, "NOT_FOUND - no queue 'q' in vhost '/'", Scope::Channel)
    ///     .context("cannot consume queue 'q'");
    /// assert_eq!(e.kind(), ErrorKind::NotFound);
    /// assert_eq!(e.reply_code(), Some(404));
    /// assert_eq!(e.message(), "cannot consume queue 'q': NOT_FOUND - no queue 'q' in vhost '/'");
    /// ```
    #[must_use]
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.0.message = format!("{what}: {}", self.0.message);
        self
    }

    /// The error a transport gives for a body larger than `max` bytes, naming where the message
    /// was going and the limit, before anything is sent.
    pub fn oversized(exchange: &str, routing_key: &str, size: usize, max: usize) -> Self {
        Error::invalid(format!(
            "message to exchange '{exchange}' with routing key '{routing_key}' is {size} bytes, larger than the broker's maximum of {max} bytes"
        ))
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for an [`ErrorKind::Closed`] error.
    pub fn closed(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Closed, message)
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The message, naming the thing that is wrong (for broker errors, the broker's reply text).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The AMQP reply code, when the broker (or the embedded broker) reported the error.
    pub fn reply_code(&self) -> Option<u16> {
        self.0.reply_code
    }

    /// Whether the broker closed only a channel or the whole connection, for broker errors.
    pub fn scope(&self) -> Option<Scope> {
        self.0.scope
    }

    /// The same error, marked as a publish whose outcome is unknown: it was sent, and may
    /// have reached the broker (and its queues) even though no confirm came back in time, e.g.
    /// after a confirm was lost with its connection or held up by `connection.blocked`.
    pub fn outcome_unknown(mut self) -> Self {
        self.0.outcome_unknown = true;
        self
    }

    /// Whether this failed publish may nevertheless have been delivered (see
    /// [`outcome_unknown`](Self::outcome_unknown)). Publishing it again may deliver it twice:
    /// retry only where consumers tolerate duplicates (e.g. by message id). `false` means the
    /// message was certainly not enqueued (refused before sending, or rejected by the broker).
    ///
    /// ```
    /// use mqtransport_core::{Error, ErrorKind};
    /// let e = Error::new(ErrorKind::Timeout, "no confirm within 30s").outcome_unknown();
    /// assert!(e.is_outcome_unknown() && e.is_transient());
    /// assert!(!Error::invalid("too large").is_outcome_unknown());
    /// ```
    pub fn is_outcome_unknown(&self) -> bool {
        self.0.outcome_unknown
    }

    /// Whether trying the same operation again later may succeed: connection loss, timeouts,
    /// negative confirms and closed channels are transient; a precondition failure, a missing
    /// queue or invalid input will fail the same way again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.0.kind,
            ErrorKind::Connection
                | ErrorKind::Timeout
                | ErrorKind::Nacked
                | ErrorKind::Closed
                | ErrorKind::ResourceLocked
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind).field("message", &self.0.message);
        if let Some(code) = self.0.reply_code {
            d.field("reply_code", &code);
        }
        if let Some(scope) = self.0.scope {
            d.field("scope", &scope);
        }
        if let Some(source) = &self.0.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.reply_code {
            Some(code) => write!(f, "{} ({code}): {}", self.0.kind, self.0.message)?,
            None => write!(f, "{}: {}", self.0.kind, self.0.message)?,
        }
        if self.0.outcome_unknown {
            f.write_str(" (outcome unknown: the message may have been delivered)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `Result` with the mqtransport [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_codes_map_to_kinds() {
        let e = Error::broker(404, "NOT_FOUND - no queue 'q' in vhost '/'", Scope::Channel);
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.reply_code(), Some(404));
        assert!(!e.is_transient());
        assert_eq!(e.to_string(), "not found (404): NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!(Error::broker(406, "x", Scope::Channel).kind(), ErrorKind::Precondition);
        assert_eq!(
            Error::broker(405, "x", Scope::Channel).kind(),
            ErrorKind::ResourceLocked
        );
        assert_eq!(Error::broker(403, "x", Scope::Channel).kind(), ErrorKind::AccessRefused);
        assert!(Error::new(ErrorKind::Timeout, "confirm").is_transient());
    }

    #[test]
    fn a_reply_text_is_cut_like_a_short_string() {
        let exact = "x".repeat(255);
        assert_eq!(Error::broker(404, exact.clone(), Scope::Channel).message(), exact);
        let long = format!("{}é{}", "x".repeat(251), "y".repeat(10));
        let cut = Error::broker(404, long, Scope::Channel);
        assert_eq!(cut.message(), format!("{}...", "x".repeat(251)));
        assert!(cut.message().len() <= 255);
    }

    /// The hot paths return `Result`s that succeed: an error must not make them larger than
    /// their value (an ack's `Result<()>` fits a register).
    #[test]
    fn an_error_is_one_pointer_wide() {
        use std::mem::size_of;
        assert_eq!(size_of::<Error>(), size_of::<usize>());
        assert_eq!(size_of::<Result<()>>(), size_of::<usize>());
        assert_eq!(
            size_of::<Result<crate::Confirmation>>(),
            size_of::<crate::Confirmation>()
        );
        let e =
            Error::broker(404, "NOT_FOUND - no queue 'q'", Scope::Channel).with_source(std::io::Error::other("cause"));
        assert_eq!(
            (e.kind(), e.reply_code(), e.scope()),
            (ErrorKind::NotFound, Some(404), Some(Scope::Channel))
        );
        assert_eq!(e.message(), "NOT_FOUND - no queue 'q'");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn context_keeps_kind_code_scope_and_source() {
        let e = Error::broker(406, "PRECONDITION_FAILED - x", Scope::Connection)
            .with_source(std::io::Error::other("cause"))
            .context("declaring queue 'q'");
        assert_eq!(
            (e.kind(), e.reply_code(), e.scope()),
            (ErrorKind::Precondition, Some(406), Some(Scope::Connection))
        );
        assert_eq!(e.message(), "declaring queue 'q': PRECONDITION_FAILED - x");
        assert!(std::error::Error::source(&e).is_some());
        assert!(!e.is_transient());
    }
}
