//! Helpers shared by the embedded broker's own tests.

#![allow(dead_code, unreachable_pub)]

use futures_util::StreamExt;
use mqtransport_core::{Envelope, Publish, Queue, Topology, Transport};
use mqtransport_memory::{MemoryBroker, MemoryTransport};

pub type R = mqtransport_core::Result<()>;

pub async fn setup(queues: Vec<Queue>) -> mqtransport_core::Result<(MemoryBroker, MemoryTransport)> {
    let broker = MemoryBroker::new();
    let conn = broker.connect();
    let mut t = Topology::new();
    for q in queues {
        t = t.queue(q);
    }
    conn.declare(&t).await?;
    Ok((broker, conn))
}

pub async fn count(c: &MemoryTransport, q: &str) -> u32 {
    c.queue_info(q).await.map(|i| i.message_count).unwrap_or(u32::MAX)
}

pub async fn send(c: &MemoryTransport, q: &str, body: &str) -> R {
    c.publish(Publish::to_queue(q, Envelope::new(body.to_owned()))).await?;
    Ok(())
}

pub fn text(d: &mqtransport_core::Delivery) -> String {
    String::from_utf8_lossy(&d.envelope.body).into_owned()
}

pub async fn next(
    consumer: &mut mqtransport_core::Subscription,
) -> mqtransport_core::Result<mqtransport_core::Delivery> {
    consumer
        .next()
        .await
        .unwrap_or_else(|| Err(mqtransport_core::Error::closed("the consumer ended")))
}
