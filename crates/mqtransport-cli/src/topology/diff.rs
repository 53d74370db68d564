//! What on the broker differs from a topology file, found without changing the broker.
//!
//! An exchange or queue is looked up (a passive declare): missing, or there. One that is there
//! is declared again as the file has it: a broker answers an identical declaration with no
//! change, and a different one with a refusal naming the difference (RabbitMQ's
//! `PRECONDITION_FAILED - inequivalent arg ...`), which changes nothing either. AMQP 0-9-1
//! cannot list bindings, so they are checked against a listing of the broker's (RabbitMQ's
//! management API) when there is one.

use mqtransport::{DynTransport, ErrorKind, Topology, Transport};

/// One way the broker differs from the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "difference", rename_all = "snake_case")]
pub enum Difference {
    /// The file has it; the broker does not.
    Missing {
        /// `exchange 'shop'`, `queue 'orders'`, `binding shop -> orders ('order.*')`.
        entity: String,
    },
    /// Both have it, declared differently.
    Different {
        /// As above.
        entity: String,
        /// The broker's words for the difference.
        detail: String,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Missing { entity } => write!(f, "missing: {entity}"),
            Difference::Different { entity, detail } => write!(f, "different: {entity}: {detail}"),
        }
    }
}

/// Whether a declaration's refusal says it differs from what exists (not a broken connection).
fn is_difference(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Precondition | ErrorKind::ResourceLocked | ErrorKind::AccessRefused
    )
}

/// The differences between the broker behind `transport` and `wanted`. `listing` is the
/// broker's own account of its entities (for the bindings); without one, the bindings are not
/// checked and the second value says so.
pub async fn diff(
    transport: &DynTransport,
    wanted: &Topology,
    listing: Option<&Topology>,
) -> anyhow::Result<(Vec<Difference>, Option<String>)> {
    let mut found = Vec::new();
    for x in &wanted.exchanges {
        let entity = format!("exchange '{}'", x.name);
        match transport.exchange_exists(&x.name).await {
            Err(e) if e.kind() == ErrorKind::NotFound => found.push(Difference::Missing { entity }),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot look up {entity}"))),
            Ok(()) => match transport.declare(&Topology::new().exchange(x.clone())).await {
                Ok(_) => {}
                Err(e) if is_difference(e.kind()) => found.push(Difference::Different {
                    entity,
                    detail: e.message().to_owned(),
                }),
                Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot compare {entity}"))),
            },
        }
    }
    for q in &wanted.queues {
        let entity = format!("queue '{}'", q.name);
        match transport.queue_info(&q.name).await {
            Err(e) if e.kind() == ErrorKind::NotFound => found.push(Difference::Missing { entity }),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot look up {entity}"))),
            Ok(_) => match transport.declare(&Topology::new().queue(q.clone())).await {
                Ok(_) => {}
                Err(e) if is_difference(e.kind()) => found.push(Difference::Different {
                    entity,
                    detail: e.message().to_owned(),
                }),
                Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot compare {entity}"))),
            },
        }
    }
    let note = match listing {
        Some(listing) => {
            for b in &wanted.bindings {
                let there = listing.bindings.iter().any(|l| {
                    l.source == b.source
                        && l.destination == b.destination
                        && l.routing_key == b.routing_key
                        && l.arguments.loose_eq(&b.arguments)
                });
                if !there {
                    found.push(Difference::Missing {
                        entity: format!("binding {} -> {} ('{}')", b.source, b.destination.name(), b.routing_key),
                    });
                }
            }
            None
        }
        None if wanted.bindings.is_empty() => None,
        None => Some(format!(
            "{} binding(s) not checked: AMQP 0-9-1 cannot list bindings (RabbitMQ lists them through its management API: --management URL)",
            wanted.bindings.len()
        )),
    };
    Ok((found, note))
}
