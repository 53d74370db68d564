//! The errors RabbitMQ 3.10 replies for operations on a queue, with its codes and texts,
//! as the conformance scenarios check them (e.g. `exclusive_queue_belongs_to_its_connection`,
//! `delete_queue_conditions`).

use mqtransport_core::{Error, Scope};

/// 404: the queue does not exist.
pub(crate) fn no_queue(name: &str, vhost: &str) -> Error {
    Error::broker(
        404,
        format!("NOT_FOUND - no queue '{name}' in vhost '{vhost}'"),
        Scope::Channel,
    )
}

/// 405: another connection owns the exclusive queue, or the exclusive flag does not match.
pub(crate) fn locked(name: &str, vhost: &str) -> Error {
    Error::broker(
        405,
        format!(
            "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
        ),
        Scope::Channel,
    )
}

/// 403: an exclusive consumer holds the queue, or an exclusive consumer asked while others
/// consume.
pub(crate) fn in_exclusive_use(name: &str, vhost: &str) -> Error {
    Error::broker(
        403,
        format!("ACCESS_REFUSED - queue '{name}' in vhost '{vhost}' in exclusive use"),
        Scope::Channel,
    )
}

/// 406: a delete with `if_unused` of a queue that has consumers.
pub(crate) fn in_use(name: &str, vhost: &str) -> Error {
    Error::broker(
        406,
        format!("PRECONDITION_FAILED - queue '{name}' in vhost '{vhost}' in use"),
        Scope::Channel,
    )
}

/// 406: a delete with `if_empty` of a queue that holds messages.
pub(crate) fn not_empty(name: &str, vhost: &str) -> Error {
    Error::broker(
        406,
        format!("PRECONDITION_FAILED - queue '{name}' in vhost '{vhost}' not empty"),
        Scope::Channel,
    )
}

/// 406: a settle of a delivery tag the channel does not hold.
pub(crate) fn unknown_delivery_tag(tag: u64) -> Error {
    Error::broker(
        406,
        format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
        Scope::Channel,
    )
}
