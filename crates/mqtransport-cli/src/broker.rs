//! The broker a command talks to, from `--url` or `MQT_URL` (default `memory://`).

use anyhow::Context as _;
use mqtransport::{BrokerUrl, DynTransport, Scheme};

/// The URL with its password hidden, for output and errors; `<unreadable URL>` when it does
/// not parse (the parse error says why, without the password).
pub fn redacted(url: &str) -> String {
    BrokerUrl::parse(url).map_or_else(|_| "<unreadable URL>".to_owned(), |u| u.to_string())
}

/// Whether `url` names the embedded broker, which lives only as long as this process.
pub fn is_embedded(url: &str) -> bool {
    BrokerUrl::parse(url).is_ok_and(|u| u.scheme() == Scheme::Memory)
}

/// Connects to the broker `url` names and checks that it answers.
pub async fn connect(url: &str) -> anyhow::Result<DynTransport> {
    mqtransport::connect(url)
        .await
        .with_context(|| format!("cannot connect to {}", redacted(url)))
}
