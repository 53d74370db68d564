//! The SQS client with what every part of the transport needs: queue URLs by name (cached),
//! tags, and one mapping of SDK errors onto our [`ErrorKind`]s.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use base64::Engine;
use mqtransport_core::{Error, ErrorKind, Result};

use crate::options::SqsOptions;

/// The tag saying what an SQS queue stands for (`queue` or `exchange`).
pub(crate) const ROLE_TAG: &str = "mqt-role";
/// The tag holding the name the queue was made for (base64url).
pub(crate) const NAME_TAG: &str = "mqt-name";
/// The tag holding the declaration (base64url of its binary encoding).
pub(crate) const DECLARATION_TAG: &str = "mqt-decl";
/// SQS's limit of tags per queue.
pub(crate) const MAX_TAGS: usize = 50;
/// SQS's limit of a tag value's length.
pub(crate) const MAX_TAG_VALUE: usize = 256;

/// The SDK client and the transport's settings.
pub(crate) struct Sqs {
    pub(crate) client: aws_sdk_sqs::Client,
    pub(crate) options: SqsOptions,
    /// Queue URLs by SQS queue name.
    urls: Mutex<HashMap<String, String>>,
}

impl Sqs {
    pub(crate) fn new(client: aws_sdk_sqs::Client, options: SqsOptions) -> Self {
        Sqs {
            client,
            options,
            urls: Mutex::new(HashMap::new()),
        }
    }

    fn urls(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.urls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The URL of the SQS queue `sqs_name`, or `NotFound` naming `what` (our name).
    pub(crate) async fn url(&self, sqs_name: &str, what: &str) -> Result<String> {
        if let Some(url) = self.urls().get(sqs_name) {
            return Ok(url.clone());
        }
        let out = self
            .client
            .get_queue_url()
            .queue_name(sqs_name)
            .send()
            .await
            .map_err(|e| sdk_error(&e, format_args!("{what} (SQS queue '{sqs_name}')")))?;
        let url = out.queue_url().unwrap_or_default().to_owned();
        self.remember(sqs_name, &url);
        Ok(url)
    }

    pub(crate) fn remember(&self, sqs_name: &str, url: &str) {
        self.urls().insert(sqs_name.to_owned(), url.to_owned());
    }

    /// Forgets a URL (the queue was deleted).
    pub(crate) fn forget(&self, sqs_name: &str) {
        self.urls().remove(sqs_name);
    }

    /// A queue's tags.
    pub(crate) async fn tags(&self, url: &str, what: &str) -> Result<HashMap<String, String>> {
        let out = self
            .client
            .list_queue_tags()
            .queue_url(url)
            .send()
            .await
            .map_err(|e| sdk_error(&e, format_args!("reading the tags of {what}")))?;
        Ok(out.tags().cloned().unwrap_or_default())
    }
}

/// Writes bytes as a tag value (base64url: characters every AWS tag accepts).
pub(crate) fn tag_value(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a tag value written by [`tag_value`].
pub(crate) fn tag_bytes(value: &str, what: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|e| {
            Error::new(
                ErrorKind::Codec,
                format!("the SQS tag holding {what} cannot be read: {e}"),
            )
        })
}

/// An error and its causes, each once, joined by `: `.
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// Whether an SDK error says the queue does not exist.
pub(crate) fn is_missing_queue(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist"))
}

/// Maps an SDK error onto an [`Error`] whose message starts with `what` and names the SQS
/// error code and text.
pub(crate) fn sdk_error<E, R>(e: &SdkError<E, R>, what: impl fmt::Display) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let kind = match e {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            match code {
                _ if is_missing_queue(code) => ErrorKind::NotFound,
                Some("QueueAlreadyExists" | "QueueNameExists" | "AWS.SimpleQueueService.QueueDeletedRecently") => {
                    ErrorKind::Precondition
                }
                Some(
                    "InvalidClientTokenId"
                    | "SignatureDoesNotMatch"
                    | "UnrecognizedClientException"
                    | "InvalidSecurity"
                    | "MissingAuthenticationToken"
                    | "IncompleteSignature",
                ) => ErrorKind::Auth,
                Some("AccessDenied" | "AccessDeniedException") => ErrorKind::AccessRefused,
                Some(c)
                    if c.contains("Throttl") || c.contains("RequestThrottled") || c.contains("ServiceUnavailable") =>
                {
                    ErrorKind::Connection
                }
                Some(c) if c.contains("InternalError") || c.contains("InternalFailure") => ErrorKind::Connection,
                _ => ErrorKind::InvalidInput,
            }
        }
        _ => ErrorKind::Connection,
    };
    let detail = match e {
        SdkError::ServiceError(service) => format!(
            "{}: {}",
            service.err().code().unwrap_or("error"),
            service.err().message().unwrap_or("(no message)")
        ),
        other => causes(other),
    };
    // The SDK reports credentials it could not find as a failure to send.
    let kind = if kind == ErrorKind::Connection && detail.contains("loading credentials") {
        ErrorKind::Auth
    } else {
        kind
    };
    let message = match kind {
        ErrorKind::NotFound => format!("{what}: no such queue ({detail})"),
        ErrorKind::Auth if detail.contains("loading credentials") => format!(
            "{what}: no AWS credentials: give them in the URL (sqs://KEY:SECRET@REGION/), or set \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile ({detail})"
        ),
        _ => format!("{what}: SQS said {detail}"),
    };
    Error::new(kind, message)
}
