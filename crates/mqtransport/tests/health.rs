//! `Running::health`: ready and live on a healthy app; a consumer whose queue was deleted is
//! stopped with the reason (not live); on RabbitMQ, a broker cut off through the test proxy makes
//! the app not ready, its consumer recovering, and ready again once the broker is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unused_macros)] // app_suite!: these scenarios differ per broker
mod common;

use std::time::Duration;

use common::*;
use mqtransport::prelude::*;
use mqtransport::{ConsumerState, DynTransport, Health, MemoryBroker};

async fn until(running: &mqtransport::Running, what: &str, ok: impl Fn(&Health) -> bool) -> Health {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let health = running.health().await;
        if ok(&health) {
            return health;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {health:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_whose_queue_is_deleted_is_stopped_with_the_reason() {
    let broker = MemoryBroker::new();
    let running = App::builder()
        .transport(DynTransport::new(broker.connect()))
        .consumer(Consumer::for_queue(Queue::durable("jobs")).fallback(|_: String| async {}))
        .consumer(Consumer::for_queue(Queue::durable("other")).fallback(|_: String| async {}))
        .build()
        .await
        .unwrap()
        .start()
        .await
        .unwrap();
    let health = running.health().await;
    assert!(health.is_live() && health.is_ready(), "{health:#?}");
    assert_eq!(health.unconfirmed, 0);
    assert!(health.broker.reachable && health.broker.error.is_none());

    broker.connect().delete_queue("jobs", Default::default()).await.unwrap();
    let health = until(&running, "stopped", |h| !h.is_live()).await;
    assert!(!health.is_ready());
    match &health.consumers[0].state {
        ConsumerState::Stopped { reason } => assert!(reason.contains("jobs"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(health.consumers[1].state, ConsumerState::Running);
    let _ = running.shutdown().await;
}

/// On RabbitMQ, through the fault proxy: refused and cut, the broker is unreachable and the
/// consumer recovering; let through again, the app is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_broker_makes_the_app_not_ready_until_it_is_back() {
    use mqtransport_testkit::proxy::Cut;
    let Some((direct, proxy, through)) = rabbit_through_proxy().await else {
        return;
    };
    let q = format!("mqt-health-{}", std::process::id());
    let running = App::builder()
        .url(through)
        .consumer(Consumer::for_queue(Queue::durable(&q)).fallback(|_: String| async {}))
        .build()
        .await
        .unwrap()
        .start()
        .await
        .unwrap();
    until(&running, "ready", Health::is_ready).await;

    proxy.refuse(true);
    proxy.cut(Cut::Reset);
    let down = until(&running, "unreachable", |h| {
        !h.broker.reachable && !h.broker.connection.connected
    })
    .await;
    assert!(down.broker.error.is_some());
    assert_eq!(down.consumers[0].state, ConsumerState::Recovering);
    assert!(down.is_live() && !down.is_ready(), "{down:#?}");

    proxy.refuse(false);
    let back = until(&running, "ready again", Health::is_ready).await;
    assert!(back.broker.connection.connected, "{back:#?}");
    assert!(back.broker.connection.reconnects >= 1, "{back:#?}");
    running.shutdown().await.unwrap();
    direct.delete_queue(&q, Default::default()).await.unwrap();
    direct
        .delete_queue(&format!("{q}.dlq"), Default::default())
        .await
        .unwrap();
}
