//! The messages most app scenarios send, shared by their test files.

use std::time::Duration;

use garde::Validate;
use mqtransport::Backoff;
use mqtransport::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message, Validate)]
#[message(name = "orders.created")]
pub struct OrderCreated {
    #[garde(range(min = 1))]
    pub id: u64,
    #[garde(length(min = 1))]
    pub customer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "orders.cancelled")]
pub struct OrderCancelled {
    pub id: u64,
}

/// No name given: called `ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Ping {
    pub n: u32,
}

pub type Tx<T> = mpsc::UnboundedSender<T>;

pub fn order(id: u64) -> OrderCreated {
    OrderCreated {
        id,
        customer: "ada".into(),
    }
}

pub fn fixed(ms: u64) -> RetryPolicy {
    RetryPolicy::max_attempts(3).backoff(Backoff::fixed(Duration::from_millis(ms)))
}
