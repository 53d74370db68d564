//! The transport's configuration: [`AmqpOptions`], [`TlsOptions`] and the [`Unconfirmed`] policy.

use std::time::Duration;

use mqtransport_core::{Error, Result};

/// What happens to a publish that was sent but not confirmed when the connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unconfirmed {
    /// Send it again on the new connection (at-least-once: it may arrive twice).
    #[default]
    Resend,
    /// Fail the publish with a [`ErrorKind::Connection`] error; the caller decides.
    Fail,
}

/// Options of the RabbitMQ transport.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// How long a publish may take, waiting for the connection and for the broker's confirm,
    /// before it fails with a timeout.
    pub confirm_timeout: Duration,
    /// How long other operations wait for a lost connection to come back.
    pub reconnect_wait: Duration,
    /// What happens to publishes unconfirmed at a connection loss.
    pub unconfirmed: Unconfirmed,
    /// At most this many publishes wait for their confirm at once; further publishes wait for
    /// a place (back-pressure) within their own confirm timeout.
    pub max_unconfirmed: usize,
    /// Prefix of the connection names shown by `rabbitmqctl list_connections`.
    pub connection_name: String,
    /// TLS settings for `amqps://` (with the `tls` feature).
    pub tls: TlsOptions,
}

/// TLS settings for `amqps://` URLs. The server certificate is checked against the bundled
/// web PKI roots plus `ca_file`; `client_cert_file` + `client_key_file` authenticate the client.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra trusted CA certificates (PEM), e.g. a private CA that signed the broker's certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM) for certificate authentication.
    pub client_cert_file: Option<std::path::PathBuf>,
    /// The client's PKCS#8 private key (PEM).
    pub client_key_file: Option<std::path::PathBuf>,
}

impl TlsOptions {
    fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::invalid(format!("cannot read the TLS {what} '{}': {e}", path.display())))
    }

    /// The lapin TLS configuration: files are read (and problems reported naming them) here.
    pub(crate) fn lapin_config(&self) -> Result<lapin::tcp::OwnedTLSConfig> {
        let cert_chain = match &self.ca_file {
            Some(p) => Some(
                String::from_utf8(Self::read(p, "CA file")?)
                    .map_err(|_| Error::invalid(format!("the TLS CA file '{}' is not PEM text", p.display())))?,
            ),
            None => None,
        };
        let identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: Self::read(c, "client certificate")?,
                key: Self::read(k, "client key")?,
            }),
            (None, None) => None,
            _ => {
                return Err(Error::invalid(
                    "TLS client authentication needs both client_cert_file and client_key_file",
                ));
            }
        };
        Ok(lapin::tcp::OwnedTLSConfig { identity, cert_chain })
    }
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            confirm_timeout: Duration::from_secs(30),
            reconnect_wait: Duration::from_secs(30),
            unconfirmed: Unconfirmed::Resend,
            max_unconfirmed: 1024,
            connection_name: "mqtransport".into(),
            tls: TlsOptions::default(),
        }
    }
}
