//! The transport's configuration: [`AmqpOptions`], [`TlsOptions`] and the [`Unconfirmed`] policy.

#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "tls")]
use mqtransport_core::{Error, Result};

/// What happens to a publish that was sent but not confirmed when the connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unconfirmed {
    /// Send it again on the new connection (at-least-once: it may arrive twice).
    #[default]
    Resend,
    /// Fail the publish with an [`ErrorKind::Connection`](mqtransport_core::ErrorKind::Connection) error marked
    /// [`is_outcome_unknown`](mqtransport_core::Error::is_outcome_unknown) (it may have been
    /// enqueued before the loss); the caller decides.
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
    /// The heartbeat asked of the broker, unless the URL's `?heartbeat=` (seconds) says
    /// otherwise: a peer silent for two heartbeats is taken for dead and the connection
    /// replaced. Default 10 s, so that a dead broker or a stalled network is noticed within
    /// about 20 s rather than RabbitMQ's default 60 s (two minutes).
    pub heartbeat: Duration,
    /// How long connecting (TCP, TLS and the AMQP handshake) may take before it fails with a
    /// timeout, unless the URL's `?connection_timeout=` (milliseconds) says otherwise.
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// The broker's `consumer_timeout`, unless the URL's `?consumer_timeout=` (milliseconds, 0
    /// for none) says otherwise: RabbitMQ closes the channel of a consumer that holds a delivery
    /// unacknowledged longer (the transport then subscribes it again and the delivery comes
    /// back redelivered). The App warns at build when a consumer could hold one longer. Not
    /// sent to the broker: set it to what the broker is configured with. Default: RabbitMQ's
    /// default, 30 minutes.
    pub consumer_timeout: Option<Duration>,
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
    #[cfg(feature = "tls")]
    fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::invalid(format!("cannot read the TLS {what} '{}': {e}", path.display())))
    }

    /// The TLS connector for `host`: files are read (and problems reported naming them) here.
    #[cfg(feature = "tls")]
    pub(crate) fn connector(
        &self,
        host: &str,
    ) -> Result<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
        if let Some(p) = &self.ca_file {
            let pem = Self::read(p, "CA file")?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| Error::invalid(format!("the TLS CA file '{}' is not PEM: {e}", p.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::invalid(format!("the TLS CA file '{}': {e}", p.display())))?;
                added += 1;
            }
            if added == 0 {
                return Err(Error::invalid(format!(
                    "the TLS CA file '{}' holds no PEM certificate",
                    p.display()
                )));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => {
                let chain = CertificateDer::pem_slice_iter(&Self::read(c, "client certificate")?)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::invalid(format!("the TLS client certificate '{}': {e}", c.display())))?;
                let key = PrivateKeyDer::from_pem_slice(&Self::read(k, "client key")?)
                    .map_err(|e| Error::invalid(format!("the TLS client key '{}': {e}", k.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::invalid(format!("the TLS client certificate and key: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::invalid(
                    "TLS client authentication needs both client_cert_file and client_key_file",
                ));
            }
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::invalid(format!("TLS: '{host}' is not a valid server name: {e}")))?;
        Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
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
            heartbeat: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            consumer_timeout: Some(mqtransport_core::RABBITMQ_CONSUMER_TIMEOUT),
        }
    }
}
