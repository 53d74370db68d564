//! The binary's commands: arguments (`args`) and one runner per command, each printing what
//! the library returns.

pub(crate) mod args;
pub(crate) mod bench;
pub(crate) mod dlq;
pub(crate) mod docs;
pub(crate) mod messages;
pub(crate) mod topology;

/// Says on standard error that `memory://` lives only in this process.
pub(crate) fn note_embedded(url: &str) {
    if mqtransport_cli::broker::is_embedded(url) {
        eprintln!(
            "note: memory:// is an embedded broker inside this mqt process: its messages are gone when mqt exits"
        );
    }
}
