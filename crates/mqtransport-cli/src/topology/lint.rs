//! RabbitMQ pitfalls in a topology: what the broker accepts but rarely means.

use mqtransport::core::Destination;
use mqtransport::{FieldValue, Topology};

/// One pitfall found: what the broker accepts but rarely means, or what works only if the
/// broker already has something the file does not declare.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The entity: `queue 'orders'`, `binding shop -> orders`.
    pub entity: String,
    /// What is wrong and what to do instead.
    pub message: String,
}

const MIRRORING_ARGUMENTS: [&str; 4] = ["x-ha-policy", "x-ha-nodes", "x-ha-params", "x-ha-sync-mode"];

fn is_predeclared(exchange: &str) -> bool {
    exchange.is_empty() || exchange.starts_with("amq.")
}

/// The pitfalls in `topology`, in the order of its queues, then its bindings.
pub fn lint(topology: &Topology) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut add = |entity: String, message: String| found.push(Finding { entity, message });
    let exchanges: Vec<&str> = topology.exchanges.iter().map(|e| e.name.as_str()).collect();
    let queues: Vec<&str> = topology.queues.iter().map(|q| q.name.as_str()).collect();
    for q in &topology.queues {
        let entity = format!("queue '{}'", q.name);
        let arg = |k: &str| q.arguments.get(k);
        let kind = arg("x-queue-type").and_then(FieldValue::as_str).unwrap_or("classic");
        for m in MIRRORING_ARGUMENTS {
            if arg(m).is_some() {
                add(
                    entity.clone(),
                    format!(
                        "'{m}' is a classic mirrored queue argument, which RabbitMQ ignores (mirroring is set by policy, and deprecated): use a quorum queue for replication"
                    ),
                );
            }
        }
        let dead_letter_route = arg("x-dead-letter-exchange").is_some();
        if arg("x-message-ttl").is_some() && !dead_letter_route {
            add(
                entity.clone(),
                "a message TTL without x-dead-letter-exchange: expired messages are dropped silently".to_owned(),
            );
        }
        let overflow = arg("x-overflow").and_then(FieldValue::as_str).unwrap_or("drop-head");
        if (arg("x-max-length").is_some() || arg("x-max-length-bytes").is_some())
            && overflow == "drop-head"
            && !dead_letter_route
        {
            add(
                entity.clone(),
                "a length limit that drops the oldest messages (drop-head) without x-dead-letter-exchange: they are lost silently; set x-overflow = reject-publish or a dead-letter exchange".to_owned(),
            );
        }
        if let Some(dlx) = arg("x-dead-letter-exchange").and_then(FieldValue::as_str)
            && !is_predeclared(dlx)
            && !exchanges.contains(&dlx)
        {
            add(
                entity.clone(),
                format!(
                    "its dead-letter exchange '{dlx}' is not in this file: dead letters are dropped until it exists"
                ),
            );
        }
        if kind == "quorum" {
            if arg("x-max-priority").is_some() {
                add(
                    entity.clone(),
                    "quorum queues ignore x-max-priority before RabbitMQ 4.0".to_owned(),
                );
            }
            if arg("x-queue-mode").is_some() {
                add(
                    entity.clone(),
                    "x-queue-mode (lazy) applies to classic queues only".to_owned(),
                );
            }
            if arg("x-delivery-limit").is_none() {
                add(
                    entity.clone(),
                    "a quorum queue without x-delivery-limit redelivers a message that keeps failing forever (RabbitMQ 3.10 has no default limit)".to_owned(),
                );
            }
        }
        if !topology
            .bindings
            .iter()
            .any(|b| matches!(&b.destination, Destination::Queue(d) if *d == q.name))
            && !topology.exchanges.is_empty()
        {
            add(
                entity.clone(),
                "nothing in this file binds it: only publishes to the default exchange with its name reach it"
                    .to_owned(),
            );
        }
    }
    for b in &topology.bindings {
        let to = b.destination.name();
        let entity = format!("binding {} -> {to} ('{}')", b.source, b.routing_key);
        if !is_predeclared(&b.source) && !exchanges.contains(&b.source.as_str()) {
            add(
                entity.clone(),
                format!(
                    "exchange '{}' is not in this file: it must exist on the broker already",
                    b.source
                ),
            );
        }
        let declared = match &b.destination {
            Destination::Queue(q) => queues.contains(&q.as_str()),
            Destination::Exchange(x) => is_predeclared(x) || exchanges.contains(&x.as_str()),
        };
        if !declared {
            add(
                entity.clone(),
                format!("'{to}' is not in this file: it must exist on the broker already"),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtransport::{Binding, Exchange, Queue};

    fn messages(t: &Topology) -> Vec<String> {
        lint(t)
            .into_iter()
            .map(|f| format!("{}: {}", f.entity, f.message))
            .collect()
    }

    #[test]
    fn each_pitfall_is_found_and_a_sound_topology_passes() {
        let sound = Topology::new()
            .exchange(Exchange::topic("shop"))
            .queue(Queue::quorum("orders").delivery_limit(5))
            .bind(Binding::queue("orders", "shop", "order.*"));
        assert_eq!(messages(&sound), Vec::<String>::new());

        let t = Topology::new()
            .exchange(Exchange::topic("shop"))
            .queue(Queue::durable("mirrored").argument("x-ha-policy", "all"))
            .queue(Queue::durable("expiring").message_ttl(std::time::Duration::from_secs(60)))
            .queue(Queue::durable("capped").max_length(10))
            .queue(Queue::quorum("endless"))
            .bind(Binding::queue("mirrored", "shop", "a"))
            .bind(Binding::queue("expiring", "shop", "b"))
            .bind(Binding::queue("capped", "shop", "c"))
            .bind(Binding::queue("endless", "shop", "d"))
            .bind(Binding::queue("ghost", "nowhere", "e"));
        let found = messages(&t);
        let has = |text: &str| found.iter().any(|m| m.contains(text));
        assert!(has("'x-ha-policy' is a classic mirrored queue argument"), "{found:#?}");
        assert!(
            has("queue 'expiring': a message TTL without x-dead-letter-exchange"),
            "{found:#?}"
        );
        assert!(
            has("queue 'capped': a length limit that drops the oldest"),
            "{found:#?}"
        );
        assert!(
            has("queue 'endless': a quorum queue without x-delivery-limit"),
            "{found:#?}"
        );
        assert!(has("exchange 'nowhere' is not in this file"), "{found:#?}");
        assert!(has("'ghost' is not in this file"), "{found:#?}");

        let unbound = Topology::new()
            .exchange(Exchange::topic("shop"))
            .queue(Queue::durable("lonely"));
        assert!(messages(&unbound)[0].contains("nothing in this file binds it"));
    }
}
