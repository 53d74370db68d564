//! [`SqsOptions`]: where the SQS transport connects and how it polls, from a URL or in code.

use std::fmt;
use std::time::Duration;

use mqtransport_core::url::{BrokerUrl, Scheme};
use mqtransport_core::{Error, Result};

/// The largest message SQS accepts by default, body and attributes together: 256 KiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// The longest an SQS message can stay invisible after it was received: 12 hours.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// The longest `DelaySeconds`: 15 minutes.
pub const MAX_DELAY_SECONDS: Duration = Duration::from_secs(15 * 60);

/// How the SQS transport connects and polls. Built from a URL by [`SqsOptions::from_url`], or in
/// code; the secret key is never printed (`Debug` shows `***`).
///
/// URL: `sqs://ACCESS_KEY:SECRET@REGION/?endpoint=http://127.0.0.1:4566&prefix=dev-&wait=20s`.
/// The region is the host (empty: the standard AWS region chain); without credentials the
/// standard AWS credential chain applies; without `endpoint`, real AWS. Query options:
///
/// | option | meaning | default |
/// |---|---|---|
/// | `endpoint` | the SQS endpoint, e.g. a local server | AWS |
/// | `prefix` | prepended to every SQS queue name the transport makes | none |
/// | `wait` | long-polling wait of a consumer (`0s`–`20s`) | `20s` |
/// | `visibility` | how long a received message stays invisible before the lease extends it | `30s` |
/// | `binding_refresh` | how long a publisher trusts its copy of an exchange's bindings | `2s` |
/// | `max_message_size` | the largest message, body and attributes, in bytes | 262144 |
/// | `session_token` | a session token for temporary credentials | none |
///
/// ```
/// use mqtransport_sqs::SqsOptions;
///
/// let options = SqsOptions::from_url("sqs://AKID:wJalrXUtn@eu-west-1/?endpoint=http://127.0.0.1:4566&prefix=dev-")?;
/// assert_eq!(options.region.as_deref(), Some("eu-west-1"));
/// assert_eq!(options.prefix, "dev-");
/// assert!(!format!("{options:?}").contains("wJalrXUtn"));
///
/// // The same in code:
/// let in_code = SqsOptions::default()
///     .with_region("eu-west-1")
///     .with_credentials("AKID", "wJalrXUtn")
///     .with_endpoint("http://127.0.0.1:4566")
///     .with_prefix("dev-");
/// assert_eq!(format!("{in_code:?}"), format!("{options:?}"));
/// # Ok::<(), mqtransport_sqs::Error>(())
/// ```
///
/// An App takes a transport connected with options in code through
/// `AppBuilder::transport(DynTransport::new(SqsTransport::connect_with(options).await?))`.
#[derive(Clone)]
#[non_exhaustive]
pub struct SqsOptions {
    /// The AWS region; `None`: the standard region chain (`AWS_REGION`, profile, ...).
    pub region: Option<String>,
    /// The endpoint URL; `None`: AWS's own for the region.
    pub endpoint: Option<String>,
    /// Access key id and secret; `None`: the standard credential chain.
    pub credentials: Option<(String, String)>,
    /// A session token with the credentials.
    pub session_token: Option<String>,
    /// Prepended to every SQS queue name (and exchange registry name) this transport makes.
    pub prefix: String,
    /// Long-polling wait of a consumer's receive (at most 20 s).
    pub wait: Duration,
    /// Visibility timeout given to received messages; the lease extends it while a handler runs.
    pub visibility: Duration,
    /// How long a publisher trusts its copy of an exchange's bindings before reading them again:
    /// the window in which a binding made by another process may not be seen yet.
    pub binding_refresh: Duration,
    /// The largest message (body and attributes) sent; larger ones are refused before sending.
    pub max_message_size: usize,
}

impl Default for SqsOptions {
    fn default() -> Self {
        SqsOptions {
            region: None,
            endpoint: None,
            credentials: None,
            session_token: None,
            prefix: String::new(),
            wait: Duration::from_secs(20),
            visibility: Duration::from_secs(30),
            binding_refresh: Duration::from_secs(2),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl fmt::Debug for SqsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsOptions")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.credentials.as_ref().map(|(key, _)| key))
            .field("secret", &self.credentials.as_ref().map(|_| "***"))
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("prefix", &self.prefix)
            .field("wait", &self.wait)
            .field("visibility", &self.visibility)
            .field("binding_refresh", &self.binding_refresh)
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

impl SqsOptions {
    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the endpoint (e.g. a local SQS-compatible server).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets the access key id and secret (instead of the standard AWS credential chain).
    pub fn with_credentials(mut self, access_key: impl Into<String>, secret: impl Into<String>) -> Self {
        self.credentials = Some((access_key.into(), secret.into()));
        self
    }

    /// Sets the prefix of every SQS queue name.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the long-polling wait of consumers.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the visibility timeout of received messages.
    pub fn with_visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    /// Sets how long a publisher trusts its copy of an exchange's bindings.
    pub fn with_binding_refresh(mut self, refresh: Duration) -> Self {
        self.binding_refresh = refresh;
        self
    }

    /// Sets the largest message sent (SQS's default limit is 256 KiB; raise it where the queue
    /// allows more).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Reads the options of an `sqs://` URL (see the type's docs).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_broker_url(&BrokerUrl::parse(url)?)
    }

    /// Reads the options of a parsed `sqs://` URL.
    pub fn from_broker_url(url: &BrokerUrl) -> Result<Self> {
        if url.scheme() != Scheme::Sqs {
            return Err(Error::invalid(format!("'{url}' is not an sqs:// URL")));
        }
        let mut options = SqsOptions {
            region: Some(url.host().to_owned()).filter(|r| !r.is_empty()),
            ..SqsOptions::default()
        };
        options.credentials = match (url.username(), url.password()) {
            (Some(key), Some(secret)) if !key.is_empty() => Some((key.to_owned(), secret.to_owned())),
            (None, None) => None,
            _ => {
                return Err(Error::invalid(format!(
                    "SQS URL '{url}': give both the access key and the secret (sqs://KEY:SECRET@region/), or neither"
                )));
            }
        };
        for (key, value) in url.query_pairs() {
            match key {
                "endpoint" => options.endpoint = Some(value.to_owned()),
                "prefix" => options.prefix = value.to_owned(),
                "session_token" => options.session_token = Some(value.to_owned()),
                "wait" => options.wait = duration(url, key, value)?,
                "visibility" => options.visibility = duration(url, key, value)?,
                "binding_refresh" => options.binding_refresh = duration(url, key, value)?,
                "max_message_size" => {
                    options.max_message_size = value.parse().map_err(|_| {
                        Error::invalid(format!(
                            "SQS URL '{url}': max_message_size '{value}' is not a number of bytes"
                        ))
                    })?;
                }
                other => {
                    return Err(Error::invalid(format!(
                        "SQS URL '{url}': unknown option '{other}'; known: endpoint, prefix, wait, visibility, \
                         binding_refresh, max_message_size, session_token"
                    )));
                }
            }
        }
        options.validate()?;
        Ok(options)
    }

    /// Checks the options against SQS's limits.
    pub fn validate(&self) -> Result<()> {
        if self.wait > Duration::from_secs(20) {
            return Err(Error::invalid(format!(
                "SQS long polling waits at most 20 s; wait is {:?}",
                self.wait
            )));
        }
        if self.visibility < Duration::from_secs(1) || self.visibility > MAX_VISIBILITY {
            return Err(Error::invalid(format!(
                "SQS visibility must be between 1 s and 12 h; it is {:?}",
                self.visibility
            )));
        }
        if !self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::invalid(format!(
                "SQS queue-name prefix '{}' may hold only letters, digits, '-' and '_'",
                self.prefix
            )));
        }
        Ok(())
    }
}

/// A duration written `500ms`, `20s`, `5m` or a bare number of seconds.
fn duration(url: &BrokerUrl, key: &str, value: &str) -> Result<Duration> {
    let parsed = if let Some(ms) = value.strip_suffix("ms") {
        ms.parse().ok().map(Duration::from_millis)
    } else if let Some(s) = value.strip_suffix('s') {
        s.parse().ok().map(Duration::from_secs)
    } else if let Some(m) = value.strip_suffix('m') {
        m.parse::<u64>().ok().map(|m| Duration::from_secs(m * 60))
    } else {
        value.parse().ok().map(Duration::from_secs)
    };
    parsed.ok_or_else(|| {
        Error::invalid(format!(
            "SQS URL '{url}': {key} '{value}' is not a duration (e.g. 500ms, 20s, 5m)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_region_endpoint_credentials_and_options() {
        let o = SqsOptions::from_url(
            "sqs://AKID:s%2Fcret@us-east-1/?endpoint=http://127.0.0.1:4566&prefix=t-&wait=1s&visibility=45s&binding_refresh=500ms",
        )
        .unwrap();
        assert_eq!(o.region.as_deref(), Some("us-east-1"));
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(o.credentials, Some(("AKID".to_owned(), "s/cret".to_owned())));
        assert_eq!(o.prefix, "t-");
        assert_eq!(o.wait, Duration::from_secs(1));
        assert_eq!(o.visibility, Duration::from_secs(45));
        assert_eq!(o.binding_refresh, Duration::from_millis(500));
        let printed = format!("{o:?}");
        assert!(!printed.contains("s/cret") && printed.contains("AKID"), "{printed}");
    }

    #[test]
    fn no_host_and_no_credentials_use_the_aws_chains() {
        let o = SqsOptions::from_url("sqs://").unwrap();
        assert_eq!((o.region, o.credentials), (None, None));
    }

    #[test]
    fn bad_options_are_named() {
        for (url, needle) in [
            ("sqs://k:s@r/?colour=blue", "unknown option 'colour'"),
            ("sqs://k:s@r/?wait=30s", "at most 20 s"),
            ("sqs://k:s@r/?wait=soon", "not a duration"),
            ("sqs://k:s@r/?prefix=a.b", "prefix 'a.b'"),
            ("sqs://k@r/", "both the access key and the secret"),
            ("amqp://localhost", "not an sqs:// URL"),
        ] {
            let e = SqsOptions::from_url(url).unwrap_err();
            assert!(e.message().contains(needle), "{url}: {e}");
            assert!(!e.message().contains(":s@"), "{url}: the secret is printed: {e}");
        }
    }
}
