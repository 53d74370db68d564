//! The declaring methods on one channel: exchanges, queues, bindings, and their removal. Each
//! error names the entity it was about.

use lapin::Channel;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions,
};
use mqtransport_core::{Binding, Destination, Exchange, ExchangeKind, Queue, QueueInfo, Result};

use crate::convert::{map_err, to_table};

fn lapin_kind(kind: ExchangeKind) -> lapin::ExchangeKind {
    match kind {
        ExchangeKind::Direct => lapin::ExchangeKind::Direct,
        ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
        ExchangeKind::Topic => lapin::ExchangeKind::Topic,
        ExchangeKind::Headers => lapin::ExchangeKind::Headers,
    }
}

pub(crate) async fn declare_exchange(ch: &Channel, x: &Exchange) -> Result<()> {
    let opts = ExchangeDeclareOptions {
        passive: false,
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        nowait: false,
    };
    ch.exchange_declare(
        x.name.as_str().into(),
        lapin_kind(x.kind),
        opts,
        to_table(&x.arguments)?,
    )
    .await
    .map_err(|e| map_err(&e, &format!("declaring exchange '{}'", x.name)))
}

/// Checks that `exchange` exists (a passive declare).
pub(crate) async fn check_exchange(ch: &Channel, exchange: &str) -> Result<()> {
    let opts = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(exchange.into(), lapin::ExchangeKind::Direct, opts, Default::default())
        .await
        .map_err(|e| map_err(&e, &format!("checking exchange '{exchange}'")))
}

pub(crate) async fn declare_queue(ch: &Channel, q: &Queue) -> Result<QueueInfo> {
    let opts = QueueDeclareOptions {
        passive: false,
        durable: q.durable,
        exclusive: q.exclusive,
        auto_delete: q.auto_delete,
        nowait: false,
    };
    let ok = ch
        .queue_declare(q.name.as_str().into(), opts, to_table(&q.arguments)?)
        .await
        .map_err(|e| map_err(&e, &format!("declaring queue '{}'", q.name)))?;
    Ok(queue_info(&ok))
}

/// The state of `queue` (a passive declare).
pub(crate) async fn check_queue(ch: &Channel, queue: &str) -> Result<QueueInfo> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let ok = ch
        .queue_declare(queue.into(), opts, Default::default())
        .await
        .map_err(|e| map_err(&e, &format!("checking queue '{queue}'")))?;
    Ok(queue_info(&ok))
}

fn queue_info(ok: &lapin::Queue) -> QueueInfo {
    QueueInfo {
        name: ok.name().as_str().to_owned(),
        message_count: ok.message_count(),
        consumer_count: ok.consumer_count(),
    }
}

pub(crate) async fn bind(ch: &Channel, b: &Binding) -> Result<()> {
    let args = to_table(&b.arguments)?;
    let what = format!("binding '{}' to '{}'", b.destination.name(), b.source);
    match &b.destination {
        Destination::Queue(q) => ch
            .queue_bind(
                q.as_str().into(),
                b.source.as_str().into(),
                b.routing_key.as_str().into(),
                QueueBindOptions::default(),
                args,
            )
            .await
            .map_err(|e| map_err(&e, &what)),
        Destination::Exchange(x) => ch
            .exchange_bind(
                x.as_str().into(),
                b.source.as_str().into(),
                b.routing_key.as_str().into(),
                ExchangeBindOptions::default(),
                args,
            )
            .await
            .map_err(|e| map_err(&e, &what)),
    }
}

pub(crate) async fn unbind(ch: &Channel, b: &Binding) -> Result<()> {
    let args = to_table(&b.arguments)?;
    let what = format!("unbinding '{}' from '{}'", b.destination.name(), b.source);
    match &b.destination {
        Destination::Queue(q) => ch
            .queue_unbind(
                q.as_str().into(),
                b.source.as_str().into(),
                b.routing_key.as_str().into(),
                args,
            )
            .await
            .map_err(|e| map_err(&e, &what)),
        Destination::Exchange(x) => ch
            .exchange_unbind(
                x.as_str().into(),
                b.source.as_str().into(),
                b.routing_key.as_str().into(),
                ExchangeUnbindOptions::default(),
                args,
            )
            .await
            .map_err(|e| map_err(&e, &what)),
    }
}
