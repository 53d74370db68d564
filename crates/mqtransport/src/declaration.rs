//! What an app declares when it is built, and what it checks: its topology, the queues of its
//! subscriptions, its consumers' dead-letter queues, and the entities it uses without
//! declaring them.

use mqtransport_core::{Binding, DynTransport, Error, ErrorKind, Queue, QueueType, Result, Topology, Transport};

use crate::consumer::{Consumer, DeadLetterPolicy};

/// The declaration of a consumer's dead-letter queue: the topology's own if it has one, else a
/// durable queue of the consumed queue's type.
pub(crate) fn dead_letter_queue<S>(name: &str, c: &Consumer<S>, topology: &Topology) -> Queue {
    if let Some(q) = topology.queues.iter().find(|q| q.name == name) {
        return q.clone();
    }
    let origin = c
        .declare
        .as_ref()
        .or_else(|| topology.queues.iter().find(|q| q.name == c.queue));
    match origin.map(Queue::queue_type) {
        Some(QueueType::Quorum) => Queue::quorum(name),
        _ => Queue::durable(name),
    }
}

/// Exchanges and queues an app uses but does not declare.
#[derive(Debug, Default)]
pub(crate) struct Existing {
    pub(crate) exchanges: Vec<String>,
    pub(crate) queues: Vec<String>,
}

impl Existing {
    /// Checks that each exists, naming the first that does not.
    pub(crate) async fn check(&self, transport: &DynTransport, redacted_url: &str) -> Result<()> {
        let missing = |what: &str, name: &str, e: Error| {
            if e.kind() == ErrorKind::NotFound {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "{what} '{name}' does not exist on {redacted_url}: the app uses it without declaring it (another service owns it)"
                    ),
                )
                .with_source(e)
            } else {
                e.context(format_args!("checking {what} '{name}' on {redacted_url}"))
            }
        };
        for x in &self.exchanges {
            transport
                .exchange_exists(x)
                .await
                .map_err(|e| missing("exchange", x, e))?;
        }
        for q in &self.queues {
            transport.queue_info(q).await.map_err(|e| missing("queue", q, e))?;
        }
        Ok(())
    }
}

/// Declares a subscription's server-named queue and binds it to `exchange` with each key;
/// returns the queue's name. The queue is exclusive where the broker has exclusive queues;
/// elsewhere (SQS) it is an ordinary one that the app deletes at shutdown.
async fn subscribe(transport: &DynTransport, exchange: &str, keys: &[String]) -> Result<String> {
    let queue = if transport.capabilities().exclusive_queues {
        Queue::server_named()
    } else {
        Queue::transient("")
    };
    let declared = transport.declare(&Topology::new().queue(queue)).await?;
    let Some(queue) = declared.queues.into_iter().next().map(|q| q.name) else {
        return Err(Error::new(
            ErrorKind::NotFound,
            "the broker named no queue for the subscription",
        ));
    };
    let mut bindings = Topology::new();
    for key in keys {
        bindings = bindings.bind(Binding::queue(queue.as_str(), exchange, key.as_str()));
    }
    transport.declare(&bindings).await?;
    Ok(queue)
}

/// Declares the app's topology, then each subscription's queue (naming its consumer's queue),
/// then each dead-letter queue, then checks the consumed queues.
pub(crate) async fn declare<S: Clone + Send + Sync + 'static>(
    transport: &DynTransport,
    redacted_url: &str,
    topology: &Topology,
    consumers: &mut [Consumer<S>],
) -> Result<()> {
    let mut all = topology.clone();
    for c in consumers.iter() {
        if let Some(q) = &c.declare
            && !all.queues.iter().any(|known| known.name == q.name)
        {
            all.queues.push(q.clone());
        }
    }
    all.validate().map_err(|e| e.context("the app's topology is invalid"))?;
    transport.declare(&all).await.map_err(|e| {
        let hint = if e.kind() == ErrorKind::Precondition {
            " (an entity exists with other settings: declare it as it is, or use it without declaring it, with \
                 AppBuilder::existing_exchange / existing_queue, or Consumer::new for a consumed queue)"
        } else {
            ""
        };
        e.context(format_args!("declaring the app's topology on {redacted_url}{hint}"))
    })?;
    for c in consumers.iter_mut() {
        if let Some((exchange, keys)) = &c.subscription {
            c.queue = subscribe(transport, exchange, keys)
                .await
                .map_err(|e| e.context(format_args!("subscribing to exchange '{exchange}' on {redacted_url}")))?;
        }
    }
    for c in consumers.iter() {
        if let DeadLetterPolicy::Queue(name) = &c.dead_letter
            && !all.queues.iter().any(|q| q.name == *name)
        {
            let q = dead_letter_queue(name, c, topology);
            if let Err(e) = transport.declare(&Topology::new().queue(q)).await {
                // An existing queue declared with other options serves as well.
                if !(e.kind() == ErrorKind::Precondition && transport.queue_info(name).await.is_ok()) {
                    return Err(e.context(format_args!(
                        "declaring the dead-letter queue '{name}' of queue '{}' on {redacted_url}",
                        c.queue
                    )));
                }
            }
        }
        if !all.queues.iter().any(|q| q.name == c.queue)
            && let Err(e) = transport.queue_info(&c.queue).await
        {
            return Err(if e.kind() == ErrorKind::NotFound {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "queue '{}' is consumed by the app but does not exist on {redacted_url}: declare it in the app's topology, or use Consumer::for_queue",
                        c.queue
                    ),
                )
                .with_source(e)
            } else {
                e.context(format_args!("checking queue '{}' on {redacted_url}", c.queue))
            });
        }
    }
    Ok(())
}
