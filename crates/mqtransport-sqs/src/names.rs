//! How our queue and exchange names become SQS queue names.
//!
//! SQS queue names hold 1 to 80 letters, digits, `-` and `_`, and a FIFO queue's ends in
//! `.fifo`. The mapping, in order: the `.fifo` suffix is kept aside; every `.` becomes `-`;
//! every other character SQS refuses becomes `_`; the transport's prefix goes in front and the
//! suffix back at the end. So `orders.dlq` is `orders-dlq` and `billing.eu.fifo` is
//! `billing-eu.fifo`. An exchange's binding table lives in a queue named `mqtx-` and the
//! exchange's mapped name.
//!
//! A name still longer than 80 characters keeps its head and ends in `-` and 16 hex digits of a
//! hash of the whole name.
//!
//! The mapping is not one-to-one (`orders.dlq` and `orders-dlq` both map to `orders-dlq`), so
//! each queue the transport creates is tagged with the name it was made for, and declaring
//! another name that maps onto it is refused ([`ErrorKind::Precondition`]).

use std::hash::Hasher;

use mqtransport_core::hash::FxHasher;
use mqtransport_core::{Error, ErrorKind, Result};

/// The suffix of a FIFO queue's name.
pub(crate) const FIFO_SUFFIX: &str = ".fifo";

/// The longest SQS queue name.
const MAX_LEN: usize = 80;

/// What an SQS queue stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Queue,
    Exchange,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Queue => "queue",
            Role::Exchange => "exchange",
        }
    }
}

/// The SQS queue name of our queue or exchange `name`.
pub(crate) fn sqs_name(prefix: &str, role: Role, name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid(format!("an SQS {} needs a name", role.as_str())));
    }
    let (base, suffix) = match name.strip_suffix(FIFO_SUFFIX) {
        Some(base) if role == Role::Queue && !base.is_empty() => (base, FIFO_SUFFIX),
        _ => (name, ""),
    };
    let marker = match role {
        Role::Queue => "",
        Role::Exchange => "mqtx-",
    };
    let mapped: String = base
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            '.' => '-',
            _ => '_',
        })
        .collect();
    let full = format!("{prefix}{marker}{mapped}{suffix}");
    if full.len() <= MAX_LEN {
        return Ok(full);
    }
    // Too long: the head of the name and a hash of all of it.
    let mut h = FxHasher::default();
    h.write(name.as_bytes());
    let hash = format!("-{:016x}", h.finish());
    let fixed = prefix.len() + marker.len() + hash.len() + suffix.len();
    if fixed >= MAX_LEN {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the SQS queue-name prefix '{prefix}' leaves no room for the {} '{name}'",
                role.as_str()
            ),
        ));
    }
    let head: String = mapped.chars().take(MAX_LEN - fixed).collect();
    Ok(format!("{prefix}{marker}{head}{hash}{suffix}"))
}

/// Whether a queue name is a FIFO queue's.
pub(crate) fn is_fifo(name: &str) -> bool {
    name.ends_with(FIFO_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_as_documented() {
        assert_eq!(sqs_name("", Role::Queue, "orders.dlq").unwrap(), "orders-dlq");
        assert_eq!(
            sqs_name("dev-", Role::Queue, "billing.eu.fifo").unwrap(),
            "dev-billing-eu.fifo"
        );
        assert_eq!(sqs_name("", Role::Queue, "a/b:c d").unwrap(), "a_b_c_d");
        assert_eq!(sqs_name("", Role::Exchange, "events.fifo").unwrap(), "mqtx-events-fifo");
        assert_eq!(sqs_name("", Role::Queue, ".fifo").unwrap(), "-fifo");
        assert!(is_fifo("x.fifo") && !is_fifo("x-fifo"));
    }

    #[test]
    fn long_names_are_cut_with_a_hash_and_empty_ones_refused() {
        let long = sqs_name("", Role::Queue, &format!("{}.fifo", "q".repeat(100))).unwrap();
        assert_eq!(long.len(), 80);
        assert!(long.ends_with(".fifo"), "{long}");
        let other = sqs_name("", Role::Queue, &format!("{}x.fifo", "q".repeat(100))).unwrap();
        assert_ne!(long, other);
        assert!(sqs_name("", Role::Queue, "").is_err());
        assert!(sqs_name(&"p".repeat(70), Role::Queue, &"q".repeat(20)).is_err());
    }
}
