//! Broker URLs: the broker is chosen by URL (`memory://`, `amqp://`, `amqps://`, ...).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The transport a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `memory://[name]`: the embedded in-process broker.
    Memory,
    /// `amqp://`: RabbitMQ over plain TCP.
    Amqp,
    /// `amqps://`: RabbitMQ over TLS.
    Amqps,
    /// `sqs://` (reserved).
    Sqs,
    /// `redis://` (reserved).
    Redis,
    /// `nats://` (reserved).
    Nats,
}

impl Scheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Memory => "memory",
            Scheme::Amqp => "amqp",
            Scheme::Amqps => "amqps",
            Scheme::Sqs => "sqs",
            Scheme::Redis => "redis",
            Scheme::Nats => "nats",
        }
    }

    /// The default port (`None` for the embedded broker).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Memory | Scheme::Sqs => None,
            Scheme::Amqp => Some(5672),
            Scheme::Amqps => Some(5671),
            Scheme::Redis => Some(6379),
            Scheme::Nats => Some(4222),
        }
    }
}

/// A parsed broker URL. `Display` and `Debug` never show the password.
///
/// ```
/// use mqtransport_core::url::{BrokerUrl, Scheme};
///
/// let url: BrokerUrl = "amqp://app:s3cret@rabbit:5673/prod%2Forders?heartbeat=10".parse()?;
/// assert_eq!(url.scheme(), Scheme::Amqp);
/// assert_eq!(url.port(), Some(5673));
/// assert_eq!(url.vhost(), "prod/orders");
/// assert_eq!(url.password(), Some("s3cret"));
/// assert_eq!(url.query("heartbeat"), Some("10"));
/// assert_eq!(url.to_string(), "amqp://app:***@rabbit:5673/prod%2Forders?heartbeat=10");
///
/// let mem: BrokerUrl = "memory://tests".parse()?;
/// assert_eq!(mem.host(), "tests");
/// # Ok::<(), mqtransport_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    scheme: Scheme,
    username: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    /// Further `host[:port]`s after the first, for failover across the nodes of a cluster.
    more_hosts: Vec<(String, Option<u16>)>,
    vhost: String,
    query: Vec<(String, String)>,
}

impl BrokerUrl {
    /// Parses a URL.
    pub fn parse(s: &str) -> Result<Self> {
        s.parse()
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The user name, percent-decoded.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, percent-decoded. Never redacted by `Display` or `Debug`.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The host; for `memory://name`, the broker name (empty for the default broker).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The explicit port, else the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.port.or(self.scheme.default_port())
    }

    /// Every address of the URL in order, each host with its port (explicit, else the scheme's
    /// default). A URL may list several comma-separated, the nodes of one cluster sharing the
    /// user, password, virtual host and options:
    /// `amqp://app:secret@rabbit-1:5672,rabbit-2:5672,rabbit-3:5672/prod`.
    ///
    /// ```
    /// use mqtransport_core::url::BrokerUrl;
    ///
    /// let url: BrokerUrl = "amqp://app:s3cret@rabbit-1,rabbit-2:5673,[::1]/prod".parse()?;
    /// let hosts: Vec<_> = url.addresses().collect();
    /// assert_eq!(hosts, [("rabbit-1", Some(5672)), ("rabbit-2", Some(5673)), ("::1", Some(5672))]);
    /// assert_eq!(url.to_string(), "amqp://app:***@rabbit-1,rabbit-2:5673,[::1]/prod");
    /// # Ok::<(), mqtransport_core::Error>(())
    /// ```
    pub fn addresses(&self) -> impl Iterator<Item = (&str, Option<u16>)> {
        let default = self.scheme.default_port();
        std::iter::once((self.host.as_str(), self.port))
            .chain(self.more_hosts.iter().map(|(h, p)| (h.as_str(), *p)))
            .map(move |(h, p)| (h, p.or(default)))
    }

    /// The virtual host, percent-decoded: `/` when the URL has no path.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The first value of query option `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The URL *with* its password, percent-encoded, for handing to a client library. Never log
    /// it; `Display` is the redacted form.
    pub fn expose_secret_uri(&self) -> String {
        let redacted = self.to_string();
        match (&self.password, redacted.find(":***@")) {
            (Some(p), Some(i)) => {
                format!("{}:{}{}", &redacted[..i], percent_encode(p), &redacted[i + 4..])
            }
            _ => redacted,
        }
    }

    /// All query options in order.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn percent_decode(s: &str, what: &str, url: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(Error::invalid(format!(
                    "broker URL '{url}': bad percent-encoding in the {what}"
                )));
            };
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::invalid(format!("broker URL '{url}': the {what} is not UTF-8")))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One `host[:port]` of the authority (an IPv6 host in brackets), the host percent-decoded.
fn parse_host_port(hostport: &str, redacted: &str) -> Result<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(Error::invalid(format!(
                "broker URL '{redacted}': unclosed '[' in the host"
            )));
        };
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| {
            Error::invalid(format!(
                "broker URL '{redacted}': port '{p}' is not a number from 0 to 65535"
            ))
        })?),
    };
    Ok((percent_decode(host, "host", redacted)?, port))
}

/// The URL with any password replaced, for error messages about a URL that did not parse.
fn redact(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            let userinfo = &s[start + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &s[..start + 3], &userinfo[..colon], &s[at..]),
                None => s.to_owned(),
            }
        }
        _ => s.to_owned(),
    }
}

impl FromStr for BrokerUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let redacted = redact(s);
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(Error::invalid(format!(
                "broker URL '{redacted}' has no scheme; expected e.g. memory://, amqp://host or amqps://host"
            )));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "memory" => Scheme::Memory,
            "amqp" => Scheme::Amqp,
            "amqps" => Scheme::Amqps,
            "sqs" => Scheme::Sqs,
            "redis" => Scheme::Redis,
            "nats" => Scheme::Nats,
            other => {
                return Err(Error::invalid(format!(
                    "broker URL '{redacted}' has unknown scheme '{other}'; expected memory, amqp, amqps, sqs, redis or nats"
                )));
            }
        };
        // The authority ends at the first '/' or '?'. An '@' after it means a user name or
        // password holds one of those unencoded: parsing on would take part of the password
        // for the host and port, so the URL is refused.
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if rest.rfind('@').is_some_and(|at| at > authority_end) {
            return Err(Error::invalid(format!(
                "broker URL '{redacted}': an '@' follows the first '/' or '?', so the user name or password \
                 seems to hold an unencoded '/', '?' or '#'; percent-encode them ('/' as %2F, '?' as %3F, \
                 '#' as %23, '@' as %40)"
            )));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    Some(percent_decode(user, "user name", &redacted)?),
                    Some(percent_decode(pass, "password", &redacted)?),
                ),
                None => (Some(percent_decode(u, "user name", &redacted)?), None),
            },
        };
        let mut hosts = Vec::new();
        for one in hostport.split(',') {
            hosts.push(parse_host_port(one, &redacted)?);
        }
        if hosts.len() > 1 && hosts.iter().any(|(h, _)| h.is_empty()) {
            return Err(Error::invalid(format!(
                "broker URL '{redacted}': an empty host in the comma-separated host list"
            )));
        }
        if hosts.len() > 1 && !matches!(scheme, Scheme::Amqp | Scheme::Amqps) {
            return Err(Error::invalid(format!(
                "broker URL '{redacted}': only amqp:// and amqps:// URLs take several comma-separated hosts"
            )));
        }
        let (host, port) = hosts.remove(0);
        if host.is_empty() && scheme != Scheme::Memory && scheme != Scheme::Sqs {
            return Err(Error::invalid(format!("broker URL '{redacted}' has no host")));
        }
        let vhost = match path {
            None | Some("") => "/".to_owned(),
            Some(p) => percent_decode(p, "virtual host", &redacted)?,
        };
        let mut pairs = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((
                percent_decode(k, "query", &redacted)?,
                percent_decode(v, "query", &redacted)?,
            ));
        }
        Ok(BrokerUrl {
            scheme,
            username,
            password,
            host,
            port,
            more_hosts: hosts,
            vhost,
            query: pairs,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some(user) = &self.username {
            f.write_str(&percent_encode(user))?;
            if self.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        let hosts = std::iter::once((&self.host, self.port)).chain(self.more_hosts.iter().map(|(h, p)| (h, *p)));
        for (i, (host, port)) in hosts.enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if host.contains(':') {
                write!(f, "[{host}]")?;
            } else {
                f.write_str(host)?;
            }
            if let Some(p) = port {
                write!(f, ":{p}")?;
            }
        }
        if self.vhost != "/" {
            write!(f, "/{}", percent_encode(&self.vhost))?;
        }
        for (i, (k, v)) in self.query.iter().enumerate() {
            write!(
                f,
                "{}{}={}",
                if i == 0 { '?' } else { '&' },
                percent_encode(k),
                percent_encode(v)
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn parses_amqp_forms() -> Result<()> {
        let u = BrokerUrl::parse("amqp://guest:guest@127.0.0.1:5672/%2f")?;
        assert_eq!((u.host(), u.port(), u.vhost()), ("127.0.0.1", Some(5672), "/"));
        let u = BrokerUrl::parse("amqps://rabbit")?;
        assert_eq!((u.port(), u.vhost(), u.username()), (Some(5671), "/", None));
        let u = BrokerUrl::parse("amqp://u%40x:p%3Aw@[::1]:1234/v?a=1&b=")?;
        assert_eq!(u.username(), Some("u@x"));
        assert_eq!(u.password(), Some("p:w"));
        assert_eq!(u.host(), "::1");
        assert_eq!(u.query("b"), Some(""));
        assert_eq!(format!("{u:?}"), "BrokerUrl(amqp://u%40x:***@[::1]:1234/v?a=1&b=)");
        let m = BrokerUrl::parse("memory://")?;
        assert_eq!((m.scheme(), m.host()), (Scheme::Memory, ""));
        Ok(())
    }

    #[test]
    fn errors_name_the_url_without_the_password() {
        let e = BrokerUrl::parse("kafka://u:secret@h").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("'kafka'"), "{e}");
        assert!(!e.message().contains("secret"), "{e}");
        let e = BrokerUrl::parse("amqp://u:secret@h:99999").unwrap_err();
        assert!(
            e.message().contains("'99999'") && !e.message().contains("secret"),
            "{e}"
        );
        assert!(
            BrokerUrl::parse("localhost:5672")
                .unwrap_err()
                .message()
                .contains("no scheme")
        );
        assert!(BrokerUrl::parse("amqp://").unwrap_err().message().contains("no host"));
        assert!(
            BrokerUrl::parse("amqp://h/%zz")
                .unwrap_err()
                .message()
                .contains("percent")
        );
    }

    #[test]
    fn several_hosts_are_for_amqp_only_and_none_may_be_empty() -> Result<()> {
        let u = BrokerUrl::parse("amqps://u:p@a:1,b,[::1]:3/v?heartbeat=5")?;
        let hosts: Vec<_> = u.addresses().collect();
        assert_eq!(hosts, [("a", Some(1)), ("b", Some(5671)), ("::1", Some(3))]);
        assert_eq!((u.host(), u.port()), ("a", Some(1)));
        assert_eq!(u.to_string(), "amqps://u:***@a:1,b,[::1]:3/v?heartbeat=5");
        assert_eq!(u.expose_secret_uri(), "amqps://u:p@a:1,b,[::1]:3/v?heartbeat=5");
        let one = BrokerUrl::parse("amqp://h")?;
        assert_eq!(one.addresses().collect::<Vec<_>>(), [("h", Some(5672))]);
        for bad in ["amqp://a,,b/", "amqp://a,/", "amqp://,a/"] {
            let e = BrokerUrl::parse(bad).unwrap_err();
            assert!(e.message().contains("empty host"), "{bad}: {e}");
        }
        let e = BrokerUrl::parse("memory://a,b").unwrap_err();
        assert!(e.message().contains("only amqp:// and amqps://"), "{e}");
        let e = BrokerUrl::parse("amqp://a,b:x/").unwrap_err();
        assert!(e.message().contains("port 'x'"), "{e}");
        Ok(())
    }
}
