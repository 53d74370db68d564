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
//! | `mqtransport.consumer.in_flight` | gauge | `messaging.system`, `messaging.destination.name` (the queue): deliveries being handled |
//! | `mqtransport.publisher.unconfirmed` | gauge | `messaging.system`: publishes sent and not yet answered by the broker |
//! | `mqtransport.connection.up` | gauge, 1 or 0 | `messaging.system`: every connection to the broker is up |
//! | `mqtransport.connection.blocked` | gauge, 1 or 0 | `messaging.system`: the broker blocks publishing (a resource alarm) |
//! | `mqtransport.connection.reconnects` | counter | `messaging.system`: connections made again after one was lost |
//!
//! The in-flight gauge moves with each delivery; the publisher and connection gauges are read
//! every [`METRICS_SAMPLE_INTERVAL`](crate::METRICS_SAMPLE_INTERVAL) while the app runs.
//!
//! The handles of each label set are registered once and kept. Labels never carry message ids. `message` is the message name (`type`), empty when a
//! message has none. Replies over direct reply-to count under `amq.rabbitmq.reply-to`, whatever
//! the channel's own address.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label, counter, gauge, histogram};
use mqtransport_core::hash::FxHasher;
use mqtransport_core::{Confirmation, DynTransport, Envelope, Publish, Result, Transport};

use crate::publish::{PublishObserver, Publisher};
use crate::runtime::Stop;
use crate::settled::{Disposition, SettleObserver};

/// How often a running app reads the gauges of its publisher and connection.
pub const METRICS_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

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

    /// The gauge of deliveries being handled by the consumer of `queue`.
    pub(crate) fn in_flight(&self, queue: &str) -> Gauge {
        gauge!(
            "mqtransport.consumer.in_flight",
            "messaging.system" => self.system,
            "messaging.destination.name" => queue.to_owned()
        )
    }

    /// Reads the unconfirmed publishes and the connection's state every
    /// [`METRICS_SAMPLE_INTERVAL`] until `stop` is asked (or its sender is gone).
    pub(crate) fn sample(&self, publisher: Publisher, transport: DynTransport, mut stop: Stop) {
        let system = self.system;
        let unconfirmed = gauge!("mqtransport.publisher.unconfirmed", "messaging.system" => system);
        let up = gauge!("mqtransport.connection.up", "messaging.system" => system);
        let blocked = gauge!("mqtransport.connection.blocked", "messaging.system" => system);
        let reconnects = counter!("mqtransport.connection.reconnects", "messaging.system" => system);
        let read = move || {
            unconfirmed.set(publisher.unconfirmed() as f64);
            let state = transport.connection_state();
            up.set(if state.connected { 1.0 } else { 0.0 });
            blocked.set(if state.blocked { 1.0 } else { 0.0 });
            reconnects.absolute(state.reconnects);
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => read(),
                    changed = stop.changed() => {
                        read();
                        if changed.is_err() || stop.borrow().is_some() {
                            return;
                        }
                    }
                }
            }
        });
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

/// Counts one delivery in a consumer's in-flight gauge while it lives (also when its handler
/// is cancelled).
pub(crate) struct Handling<'a>(Option<&'a Gauge>);

impl<'a> Handling<'a> {
    pub(crate) fn new(gauge: Option<&'a Gauge>) -> Self {
        if let Some(g) = gauge {
            g.increment(1.0);
        }
        Handling(gauge)
    }
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.decrement(1.0);
        }
    }
}

impl SettleObserver for Metrics {
    fn settled(&self, queue: &str, envelope: &Envelope, disposition: &Disposition, elapsed: Duration) {
        self.record(Side::Consumed, queue, envelope, disposition.as_str(), elapsed);
    }
}

impl PublishObserver for Metrics {
    fn published(&self, publish: &Publish, result: &Result<Confirmation>, elapsed: Duration) {
        let outcome = super::spans::publish_outcome(result);
        let destination = super::spans::destination(publish);
        self.record(Side::Sent, destination, &publish.envelope, outcome, elapsed);
    }
}
