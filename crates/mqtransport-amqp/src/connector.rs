//! Opening a connection: TCP (and TLS) to the broker, with the [screen](crate::wire::screen)
//! between the broker and the AMQP client.
//!
//! The client (lapin) reads frames with a parser that cannot read everything RabbitMQ accepts
//! from other clients (short strings that are not UTF-8, headers nested thousands deep), and
//! fails the whole connection, or overflows its stack, on such a delivery. So the client never
//! holds the broker's socket: it gets a [`ScreenedStream`] over it (and over its TLS session),
//! which passes what the client writes to the broker as it is, and what the broker sends
//! through the screen.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Connection, ConnectionProperties};
use mqtransport_core::{BrokerUrl, Error, ErrorKind, Result};

use crate::client_runtime;
use crate::wire::screen::Screen;
use crate::wire::screened_stream::{Diagnosis, ScreenedStream};

/// The stream lapin gets for a connection.
type ClientStream = lapin::AsyncTcpStream<ScreenedStream>;

/// One address of the broker: a node of a cluster, with its TLS settings.
struct Address {
    host: String,
    port: u16,
    #[cfg(feature = "tls")]
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

/// How to reach a broker: its addresses (several for the nodes of a cluster), how (TLS), and
/// the settings for the AMQP client.
pub(crate) struct Dialer {
    /// The URL without the password, for messages.
    pub(crate) url: String,
    uri: AMQPUri,
    addresses: Vec<Address>,
    connect_timeout: Duration,
    /// The broker's `consumer_timeout` as the options and the URL say.
    pub(crate) consumer_timeout: Option<Duration>,
}

/// A query option of the URL as a number, refused with a clear message when it is not one.
fn number<T: std::str::FromStr>(url: &BrokerUrl, key: &str) -> Result<Option<T>> {
    match url.query(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid(format!("broker URL '{url}': {key}={v} is not a number in range"))),
    }
}

/// Why one connect attempt failed: how permanent, and what happened.
struct Failed {
    kind: ErrorKind,
    why: String,
}

impl Dialer {
    /// The dialer for `url`: `heartbeat` and `connect_timeout` apply unless the URL's
    /// `heartbeat` (seconds) or `connection_timeout` (milliseconds) query options say otherwise.
    pub(crate) fn new(url: &BrokerUrl, options: &crate::AmqpOptions) -> Result<Self> {
        for (key, _) in url.query_pairs() {
            if ![
                "heartbeat",
                "frame_max",
                "channel_max",
                "connection_timeout",
                "consumer_timeout",
            ]
            .contains(&key)
            {
                return Err(Error::invalid(format!(
                    "broker URL '{url}': unknown option '{key}'; the RabbitMQ transport knows heartbeat, frame_max, channel_max, connection_timeout and consumer_timeout"
                )));
            }
        }
        let heartbeat: Option<u16> = number(url, "heartbeat")?;
        let heartbeat = heartbeat.unwrap_or_else(|| u16::try_from(options.heartbeat.as_secs()).unwrap_or(u16::MAX));
        let connect_ms: Option<u64> = number(url, "connection_timeout")?;
        let connect_timeout = connect_ms.map_or(options.connect_timeout, Duration::from_millis);
        let consumer_ms: Option<u64> = number(url, "consumer_timeout")?;
        let consumer_timeout = match consumer_ms {
            None => options.consumer_timeout,
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        let frame_max: Option<u32> = number(url, "frame_max")?;
        if frame_max.is_some_and(|f| f != 0 && f < 4096) {
            return Err(Error::invalid(format!(
                "broker URL '{url}': frame_max must be 0 (no limit) or at least 4096"
            )));
        }
        let uri = AMQPUri {
            scheme: if url.scheme() == mqtransport_core::Scheme::Amqps {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: url.username().unwrap_or("guest").to_owned(),
                    password: url.password().unwrap_or("guest").to_owned(),
                },
                host: url.host().to_owned(),
                port: url.port().unwrap_or(5672),
            },
            vhost: url.vhost().to_owned(),
            query: AMQPQueryString {
                frame_max,
                channel_max: number(url, "channel_max")?,
                heartbeat: Some(heartbeat),
                connection_timeout: None,
                auth_mechanism: None,
            },
        };
        let addresses = url
            .addresses()
            .map(|(host, port)| {
                Ok(Address {
                    host: host.to_owned(),
                    port: port.unwrap_or(5672),
                    #[cfg(feature = "tls")]
                    tls: match url.scheme() {
                        mqtransport_core::Scheme::Amqps => Some(options.tls.connector(host)?),
                        _ => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Dialer {
            url: url.to_string(),
            uri,
            addresses,
            connect_timeout,
            consumer_timeout,
        })
    }

    /// The `frame_max` the client asks for (`None`: the server's).
    pub(crate) fn client_frame_max(&self) -> Option<u32> {
        self.uri.query.frame_max.filter(|&f| f > 0)
    }

    /// How many addresses the broker has.
    pub(crate) fn address_count(&self) -> usize {
        self.addresses.len()
    }

    /// `host:port` of address `index`.
    pub(crate) fn address(&self, index: usize) -> String {
        self.addresses.get(index).map_or_else(String::new, |a| {
            if a.host.contains(':') {
                format!("[{}]:{}", a.host, a.port)
            } else {
                format!("{}:{}", a.host, a.port)
            }
        })
    }

    /// Opens a connection, trying the addresses in turn from `first` (wrapping around), each
    /// within the connect timeout; returns it with the index of the address it reached. Errors
    /// name the broker and say what failed at each address (an unreachable port, a server that
    /// never answers, one that is not AMQP, a refused login, a missing virtual host).
    pub(crate) async fn connect(
        self: &Arc<Self>,
        props: ConnectionProperties,
        role: &str,
        first: usize,
    ) -> Result<(Connection, usize)> {
        let n = self.addresses.len();
        let mut failures = Vec::with_capacity(n);
        for i in (0..n).map(|k| (first + k) % n) {
            match self.connect_to(i, props.clone()).await {
                Ok(conn) => return Ok((conn, i)),
                Err(failed) => failures.push((i, failed)),
            }
        }
        // A refused login or a missing virtual host is the cluster's answer, not one node's:
        // it decides the kind. Otherwise the last failure does.
        let kind = failures
            .iter()
            .map(|(_, f)| f.kind)
            .find(|k| matches!(k, ErrorKind::Auth | ErrorKind::NotFound))
            .or_else(|| failures.last().map(|(_, f)| f.kind))
            .unwrap_or(ErrorKind::Connection);
        let message = match failures.as_slice() {
            [(_, only)] => format!(
                "cannot connect to RabbitMQ at {} ({role} connection): {}",
                self.url, only.why
            ),
            _ => format!(
                "cannot connect to RabbitMQ at any of the {n} addresses of {} ({role} connection): {}",
                self.url,
                failures
                    .iter()
                    .map(|(i, f)| format!("{}: {}", self.address(*i), f.why))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        Err(Error::new(kind, message))
    }

    /// One attempt at address `index`, within the connect timeout.
    async fn connect_to(
        self: &Arc<Self>,
        index: usize,
        props: ConnectionProperties,
    ) -> std::result::Result<Connection, Failed> {
        let diagnosis: Diagnosis = Arc::default();
        let runtime = client_runtime::current();
        let dialer = Arc::clone(self);
        let found = Arc::clone(&diagnosis);
        let mut uri = self.uri.clone();
        if let Some(a) = self.addresses.get(index) {
            uri.authority.host.clone_from(&a.host);
            uri.authority.port = a.port;
        }
        let connecting = Connection::connector(
            uri,
            runtime,
            async move |_uri, _runtime| dialer.dial(index, Arc::clone(&found)).await.map_err(lapin::Error::from),
            props,
        );
        let ended = tokio::time::timeout(self.connect_timeout, connecting).await;
        let diagnosed = diagnosis.lock().unwrap_or_else(PoisonError::into_inner).take();
        match (ended, diagnosed) {
            (Ok(Ok(conn)), _) => Ok(conn),
            (_, Some(why)) => Err(Failed {
                kind: ErrorKind::Connection,
                why,
            }),
            (Ok(Err(e)), None) => Err(self.refused(&e)),
            (Err(_), None) => Err(Failed {
                kind: ErrorKind::Timeout,
                why: format!(
                    "no AMQP handshake within {:?}: the server accepted the connection but did not complete the \
                     AMQP handshake (is it RabbitMQ, and is it overloaded?)",
                    self.connect_timeout
                ),
            }),
        }
    }

    /// A handshake the broker refused, by kind: a wrong user name or password (403) and a
    /// missing or forbidden virtual host (530) are permanent; everything else is a connection
    /// error.
    fn refused(&self, e: &lapin::Error) -> Failed {
        if let lapin::ErrorKind::ProtocolError(amqp) = e.kind() {
            match amqp.get_id() {
                403 => {
                    return Failed {
                        kind: ErrorKind::Auth,
                        why: format!("the broker refused the user name or password ({e})"),
                    };
                }
                530 => {
                    return Failed {
                        kind: ErrorKind::NotFound,
                        why: format!(
                            "the virtual host '{}' does not exist or the user may not use it ({e})",
                            self.uri.vhost
                        ),
                    };
                }
                _ => {}
            }
        }
        Failed {
            kind: ErrorKind::Connection,
            why: e.to_string(),
        }
    }

    /// TCP (and TLS) to the broker, screened.
    async fn dial(&self, index: usize, diagnosis: Diagnosis) -> std::io::Result<ClientStream> {
        let Some(address) = self.addresses.get(index) else {
            return Err(std::io::Error::other("no such broker address"));
        };
        let tcp = tokio::net::TcpStream::connect((address.host.as_str(), address.port)).await?;
        tcp.set_nodelay(true)?;
        let screen = Screen::new(self.client_frame_max());
        #[cfg(feature = "tls")]
        if let Some((connector, name)) = &address.tls {
            let tls = connector.connect(name.clone(), tcp).await?;
            return Ok(lapin::AsyncTcpStream::Plain(ScreenedStream::new(
                Box::new(tls),
                screen,
                diagnosis,
            )));
        }
        Ok(lapin::AsyncTcpStream::Plain(ScreenedStream::new(
            Box::new(tcp),
            screen,
            diagnosis,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialer(url: &str) -> Dialer {
        Dialer::new(&BrokerUrl::parse(url).unwrap(), &crate::AmqpOptions::default()).unwrap()
    }

    #[test]
    fn the_heartbeat_and_connect_timeout_default_to_ten_seconds_unless_the_url_says() {
        let d = dialer("amqp://u:p@rabbit/");
        assert_eq!(d.uri.query.heartbeat, Some(10));
        assert_eq!(d.connect_timeout, Duration::from_secs(10));
        let d = dialer("amqp://u:p@rabbit/?heartbeat=3&connection_timeout=2500&frame_max=8192");
        assert_eq!(d.uri.query.heartbeat, Some(3));
        assert_eq!(d.connect_timeout, Duration::from_millis(2500));
        assert_eq!(d.client_frame_max(), Some(8192));
    }

    #[test]
    fn the_consumer_timeout_is_rabbitmqs_default_unless_the_url_says() {
        assert_eq!(dialer("amqp://h/").consumer_timeout, Some(Duration::from_secs(1800)));
        assert_eq!(
            dialer("amqp://h/?consumer_timeout=60000").consumer_timeout,
            Some(Duration::from_secs(60))
        );
        assert_eq!(dialer("amqp://h/?consumer_timeout=0").consumer_timeout, None);
    }

    #[test]
    fn credentials_and_vhost_come_from_the_parsed_url_verbatim() {
        let d = dialer("amqp://app:a%2Fb%3Fc%40d@rabbit:5673/prod%2Forders");
        assert_eq!(d.uri.authority.userinfo.password, "a/b?c@d");
        assert_eq!((d.uri.authority.host.as_str(), d.uri.authority.port), ("rabbit", 5673));
        assert_eq!(d.uri.vhost, "prod/orders");
        assert!(!d.url.contains("a/b?c@d") && !d.url.contains("a%2Fb"));
    }
}
