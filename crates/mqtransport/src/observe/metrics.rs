//! Metrics of publishes and deliveries through the [`metrics`] facade, named after the
//! OpenTelemetry messaging metrics. Nothing is recorded until the application installs a
//! recorder (e.g. `metrics-exporter-prometheus`).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `messaging.client.sent.messages` | counter | `messaging.system`, `messaging.destination.name` (the exchange, or the queue for the default exchange), `message`, `outcome` (`confirmed`, `returned`, `nacked`, `failed`) |
//! | `messaging.client.operation.duration` | histogram, seconds | as above, with `messaging.operation.name` = `send` |
//! | `messaging.client.consumed.messages` | counter | `messaging.system`, `messaging.destination.name` (the queue), `message`, `outcome` (`acked`, `requeued`, `retried`, `dead_lettered`, `dropped`, `returned`, `expired`) |
//! | `messaging.process.duration` | histogram, seconds | as the consumed counter: from the delivery reaching the consumer to its settling |
//!
//! The handles of each label set are registered once and kept. Labels never carry message ids. `message` is the message name (`type`), empty when a
//! message has none. Replies over direct reply-to count under `amq.rabbitmq.reply-to`, whatever
//! the channel's own address.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Histogram, Label, counter, histogram};
use mqtransport_core::hash::FxHasher;
use mqtransport_core::{Confirmation, Envelope, Publish, Result};

use crate::publish::PublishObserver;
use crate::settled::{Disposition, SettleObserver};

/// Which pair of metrics.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Sent,
    Consumed,
}

/// The registered counter and histogram of one label set, kept so that a delivery neither
/// builds labels nor asks the recorder again (the recorder is fixed once the app records).
struct Handles {
    side: Side,
    destination: String,
    message: String,
    outcome: &'static str,
    counter: Counter,
    histogram: Histogram,
}

/// Records every publish and every settled delivery of an app.
pub(crate) struct Metrics {
    system: &'static str,
    /// By a hash of the labels; a bucket holds the rare collisions.
    handles: Mutex<HashMap<u64, Vec<Handles>>>,
}

impl Metrics {
    pub(crate) fn new(system: &'static str) -> Self {
        Metrics {
            system,
            handles: Mutex::default(),
        }
    }

    /// Counts one and records `elapsed`, for the label set of `side`, `destination`, the
    /// message's name and `outcome`.
    fn record(&self, side: Side, destination: &str, envelope: &Envelope, outcome: &'static str, elapsed: Duration) {
        let message = envelope.properties().kind.as_deref().unwrap_or("");
        let mut h = FxHasher::default();
        (side, destination, message, outcome).hash(&mut h);
        let key = h.finish();
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = handles.entry(key).or_default();
        let found = bucket.iter().position(|e| {
            e.side == side && e.outcome == outcome && e.destination == destination && e.message == message
        });
        let entry = match found {
            Some(i) => &bucket[i],
            None => {
                bucket.push(self.register(side, destination, message, outcome));
                &bucket[bucket.len() - 1]
            }
        };
        entry.counter.increment(1);
        entry.histogram.record(elapsed.as_secs_f64());
    }

    fn register(&self, side: Side, destination: &str, message: &str, outcome: &'static str) -> Handles {
        let labels = [
            Label::from_static_parts("messaging.system", self.system),
            Label::new("messaging.destination.name", destination.to_owned()),
            Label::new("message", message.to_owned()),
            Label::from_static_parts("outcome", outcome),
        ];
        let (counter, histogram) = match side {
            Side::Consumed => (
                counter!("messaging.client.consumed.messages", labels.iter()),
                histogram!("messaging.process.duration", labels.iter()),
            ),
            Side::Sent => {
                let mut with_operation = labels.to_vec();
                with_operation.push(Label::from_static_parts("messaging.operation.name", "send"));
                (
                    counter!("messaging.client.sent.messages", labels.iter()),
                    histogram!("messaging.client.operation.duration", with_operation.iter()),
                )
            }
        };
        Handles {
            side,
            destination: destination.to_owned(),
            message: message.to_owned(),
            outcome,
            counter,
            histogram,
        }
    }
}

/// The outcome label of a settled delivery.
fn settled_outcome(disposition: &Disposition) -> &'static str {
    match disposition {
        Disposition::Acked => "acked",
        Disposition::Requeued => "requeued",
        Disposition::Retried { .. } => "retried",
        Disposition::DeadLettered { .. } => "dead_lettered",
        Disposition::Dropped { .. } => "dropped",
        Disposition::Returned { .. } => "returned",
        Disposition::Expired => "expired",
    }
}

impl SettleObserver for Metrics {
    fn settled(&self, queue: &str, envelope: &Envelope, disposition: &Disposition, elapsed: Duration) {
        self.record(Side::Consumed, queue, envelope, settled_outcome(disposition), elapsed);
    }
}

impl PublishObserver for Metrics {
    fn published(&self, publish: &Publish, result: &Result<Confirmation>, elapsed: Duration) {
        let outcome = match result {
            Ok(Confirmation::Confirmed) => "confirmed",
            Ok(Confirmation::Returned { .. }) => "returned",
            Ok(_) => "nacked",
            Err(_) => "failed",
        };
        let destination: &str = if publish.exchange.is_empty() {
            // A reply's direct reply-to address differs per channel: one label value for all.
            if publish.routing_key.starts_with(mqtransport_core::DIRECT_REPLY_TO) {
                mqtransport_core::DIRECT_REPLY_TO
            } else {
                &publish.routing_key
            }
        } else {
            &publish.exchange
        };
        self.record(Side::Sent, destination, &publish.envelope, outcome, elapsed);
    }
}
