//! `mqt consume`: messages from a queue, shown as they come, then acknowledged, requeued, or
//! taken without acknowledgement.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use mqtransport::transport::{ConsumeOptions, Delivery};
use mqtransport::{DynTransport, ErrorKind, Transport};

/// What becomes of each message taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Acknowledged once shown: it leaves the queue.
    Ack,
    /// Held until the command ends, then put back (a look at the queue that changes nothing
    /// but the redelivered flag): at most the prefetch is seen.
    Requeue,
    /// The broker's no-ack mode: it leaves the queue as it is sent.
    NoAck,
}

/// How many to take and how long to wait.
#[derive(Debug, Clone)]
pub struct ConsumeRequest {
    /// The queue.
    pub queue: String,
    /// Stop after this many (`None`: until interrupted, or `idle`).
    pub count: Option<usize>,
    /// What becomes of each.
    pub settle: Settle,
    /// The broker's prefetch (for `Requeue`: how many can be held and seen).
    pub prefetch: u16,
    /// Stop when no message came for this long.
    pub idle: Option<Duration>,
}

/// Takes messages from the queue, calling `show` for each, until the count, the idle time or
/// `stop`; returns how many were taken. A missing queue is an error naming it.
pub async fn consume(
    transport: &DynTransport,
    request: &ConsumeRequest,
    mut show: impl FnMut(&Delivery),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<usize> {
    let queue = &request.queue;
    if let Err(e) = transport.queue_info(queue).await {
        if e.kind() == ErrorKind::NotFound {
            bail!("queue '{queue}' does not exist");
        }
        return Err(e).with_context(|| format!("cannot check queue '{queue}'"));
    }
    let prefetch = match (request.settle, request.count) {
        // Every message held must fit in the prefetch, or the consumer would stall.
        (Settle::Requeue, Some(n)) => u16::try_from(n).unwrap_or(u16::MAX).max(1),
        _ => request.prefetch.max(1),
    };
    let options = ConsumeOptions::default()
        .prefetch(prefetch)
        .no_ack(request.settle == Settle::NoAck);
    let mut stream = transport
        .consume(queue, options)
        .await
        .with_context(|| format!("cannot consume queue '{queue}'"))?;
    let mut held = Vec::new();
    let mut taken = 0;
    tokio::pin!(stop);
    while request.count.is_none_or(|n| taken < n) {
        let next = async {
            match request.idle {
                Some(idle) => tokio::time::timeout(idle, stream.next()).await.ok(),
                None => Some(stream.next().await),
            }
        };
        let delivery = tokio::select! {
            () = &mut stop => break,
            next = next => match next {
                None => break,
                Some(None) => bail!("the consumer of queue '{queue}' was cancelled by the broker"),
                Some(Some(d)) => d.with_context(|| format!("consuming queue '{queue}' failed"))?,
            },
        };
        taken += 1;
        show(&delivery);
        match request.settle {
            Settle::Ack => delivery.ack().await.context("cannot acknowledge")?,
            Settle::Requeue => held.push(delivery),
            Settle::NoAck => {}
        }
    }
    for d in held {
        d.nack(true).await.context("cannot requeue")?;
    }
    Ok(taken)
}
