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
//! Labels never carry message ids. `message` is the message name (`type`), empty when a
//! message has none. Replies over direct reply-to count under `amq.rabbitmq.reply-to`, whatever
//! the channel's own address.

use std::time::Duration;

use metrics::{Label, counter, histogram};
use mqtransport_core::{Confirmation, Envelope, Publish, Result};

use crate::publish::PublishObserver;
use crate::runtime::{Disposition, SettleObserver};

/// Records every publish and every settled delivery of an app.
pub(crate) struct Metrics {
    system: &'static str,
}

impl Metrics {
    pub(crate) fn new(system: &'static str) -> Self {
        Metrics { system }
    }

    fn labels(&self, destination: &str, envelope: &Envelope, outcome: &'static str) -> [Label; 4] {
        let name = envelope.properties().kind.clone().unwrap_or_default();
        [
            Label::from_static_parts("messaging.system", self.system),
            Label::new("messaging.destination.name", destination.to_owned()),
            Label::new("message", name),
            Label::from_static_parts("outcome", outcome),
        ]
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
        let labels = self.labels(queue, envelope, settled_outcome(disposition));
        counter!("messaging.client.consumed.messages", labels.iter()).increment(1);
        histogram!("messaging.process.duration", labels.iter()).record(elapsed.as_secs_f64());
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
        let labels = self.labels(destination, &publish.envelope, outcome);
        counter!("messaging.client.sent.messages", labels.iter()).increment(1);
        let mut with_operation = labels.to_vec();
        with_operation.push(Label::from_static_parts("messaging.operation.name", "send"));
        histogram!("messaging.client.operation.duration", with_operation.iter()).record(elapsed.as_secs_f64());
    }
}
