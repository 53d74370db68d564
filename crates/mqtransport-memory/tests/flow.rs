//! The embedded broker's pacing: a publisher ahead of its consumers waits for them (flow
//! control), one without consumers never does, and publishing or consuming loops leave the
//! other tasks on their thread a turn (tokio's cooperative budget).

mod common;

use std::time::Duration;

use mqtransport_core::{ConsumeOptions, Envelope, Publish, Queue, Transport};
use mqtransport_memory::MemoryTransport;

use common::*;

/// A publish outside tokio's cooperative budget (which makes every 128th publish yield), so
/// that a pending poll means flow control holds it back.
fn unconstrained_publish(
    c: &MemoryTransport,
    q: &str,
    body: String,
) -> impl Future<Output = mqtransport_core::Result<mqtransport_core::Confirmation>> {
    tokio::task::unconstrained(c.publish(Publish::to_queue(q, Envelope::new(body))))
}

/// Publishes each of `bodies` to `q` with one poll, asserting that none waits for the queue's
/// consumers (`when` says in what situation, for the failure message).
async fn publish_without_waiting(c: &MemoryTransport, q: &str, bodies: impl IntoIterator<Item = String>, when: &str) {
    for body in bodies {
        let mut publish = std::pin::pin!(unconstrained_publish(c, q, body.clone()));
        let polled = futures_util::poll!(publish.as_mut());
        assert!(
            matches!(polled, std::task::Poll::Ready(Ok(_))),
            "publish '{body}' waited {when}: {polled:?}"
        );
    }
}

#[tokio::test]
async fn a_publisher_ahead_of_the_consumer_waits_for_it() -> R {
    use mqtransport_memory::FLOW_LIMIT;
    let (_b, c) = setup(vec![Queue::transient("flow")]).await?;
    let mut consumer = c.consume("flow", ConsumeOptions::default().prefetch(10)).await?;
    let behind = (0..FLOW_LIMIT - 1).map(|i| i.to_string());
    publish_without_waiting(
        &c,
        "flow",
        behind,
        "with the consumer fewer than FLOW_LIMIT messages behind",
    )
    .await;
    let mut last = std::pin::pin!(unconstrained_publish(&c, "flow", "last".into()));
    assert!(
        futures_util::poll!(last.as_mut()).is_pending(),
        "a publisher {FLOW_LIMIT} messages ahead of the consumer went on"
    );
    // The consumer takes a batch: the publisher goes on, its message in the queue all along.
    let first = next(&mut consumer).await?;
    assert_eq!(text(&first), "0");
    let confirmed = futures_util::poll!(last.as_mut());
    assert!(
        matches!(
            confirmed,
            std::task::Poll::Ready(Ok(mqtransport_core::Confirmation::Confirmed))
        ),
        "{confirmed:?}"
    );
    first.ack().await?;
    let mut seen = 1;
    while seen < FLOW_LIMIT - 1 {
        let d = next(&mut consumer).await?;
        assert_eq!(text(&d), seen.to_string());
        d.ack().await?;
        seen += 1;
    }
    let d = next(&mut consumer).await?;
    assert_eq!(text(&d), "last");
    Ok(())
}

#[tokio::test]
async fn without_consumers_no_publisher_waits() -> R {
    use mqtransport_memory::FLOW_LIMIT;
    let (_b, c) = setup(vec![Queue::transient("flow")]).await?;
    let bodies = (0..2 * FLOW_LIMIT).map(|i| i.to_string());
    publish_without_waiting(&c, "flow", bodies, "with no consumer").await;
    assert_eq!(count(&c, "flow").await as usize, 2 * FLOW_LIMIT);
    // A consumer that goes away leaves no publisher waiting for it.
    let consumer = c.consume("flow", ConsumeOptions::default().prefetch(1)).await?;
    let more = (0..FLOW_LIMIT - 1).map(|i| format!("more {i}"));
    publish_without_waiting(&c, "flow", more, "with the intake below FLOW_LIMIT").await;
    let mut held = std::pin::pin!(unconstrained_publish(&c, "flow", "held".into()));
    assert!(futures_util::poll!(held.as_mut()).is_pending(), "not held back");
    drop(consumer);
    assert!(
        futures_util::poll!(held.as_mut()).is_ready(),
        "the consumer left, the publisher still waits"
    );
    let after = (0..2 * FLOW_LIMIT).map(|i| format!("after {i}"));
    publish_without_waiting(&c, "flow", after, "after the consumer left").await;
    Ok(())
}

/// A handler that publishes to its own queue before it acks: its consumer has no credit and its
/// stream is not polled, so nobody drains the queue. The publisher waits at most the grace, and
/// nothing is lost or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_is_not_held_by_a_consumer_that_cannot_take() -> R {
    use mqtransport_memory::FLOW_LIMIT;
    let (_b, c) = setup(vec![Queue::transient("own")]).await?;
    send(&c, "own", "start").await?;
    let mut consumer = c.consume("own", ConsumeOptions::default().prefetch(1)).await?;
    let start = next(&mut consumer).await?;
    let n = 3 * FLOW_LIMIT;
    tokio::time::timeout(Duration::from_secs(60), async {
        for i in 0..n {
            send(&c, "own", &i.to_string()).await?;
        }
        Ok::<_, mqtransport_core::Error>(())
    })
    .await
    .expect("publishing to a queue whose consumer cannot take stalled for 60 s")?;
    start.ack().await?;
    for i in 0..n {
        let d = next(&mut consumer).await?;
        assert_eq!(text(&d), i.to_string());
        d.ack().await?;
    }
    assert_eq!(count(&c, "own").await, 0);
    Ok(())
}

/// Messages that leave the consumers' backlog another way (here `queue_info` moves them to the
/// ready list) stop counting against publishers at once.
#[tokio::test]
async fn a_backlog_moved_to_the_ready_list_holds_no_publisher_back() -> R {
    use mqtransport_memory::FLOW_LIMIT;
    let (_b, c) = setup(vec![Queue::transient("flow")]).await?;
    let mut consumer = c.consume("flow", ConsumeOptions::default().prefetch(1)).await?;
    let bodies = (0..FLOW_LIMIT - 1).map(|i| i.to_string());
    publish_without_waiting(&c, "flow", bodies, "with the intake below FLOW_LIMIT").await;
    // The consumer takes the backlog and is handed one message; the rest wait for it.
    let first = next(&mut consumer).await?;
    assert_eq!(text(&first), "0");
    assert_eq!(count(&c, "flow").await as usize, FLOW_LIMIT - 2);
    let more = (0..2).map(|i| format!("more {i}"));
    publish_without_waiting(&c, "flow", more, "for a backlog that is in the ready list").await;
    Ok(())
}

/// A flag that a task spawned on the test's single thread sets once it gets to run.
fn spawn_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = std::sync::Arc::clone(&flag);
    tokio::spawn(async move { set.store(true, std::sync::atomic::Ordering::SeqCst) });
    flag
}

/// An in-process publish never waits on I/O, so only tokio's cooperative budget makes a
/// publishing loop give the other tasks on its thread a turn (here the queue has no consumer,
/// so flow control holds nothing back). Each publish takes a unit of the budget, so the loop
/// yields after tokio's 128 units; the bound here leaves room for the broker to take units
/// more sparingly, but not for a loop that runs to its end.
#[tokio::test(flavor = "current_thread")]
async fn a_publishing_loop_lets_the_other_tasks_run() -> R {
    let (_b, c) = setup(vec![Queue::transient("busy")]).await?;
    let flag = spawn_flag();
    let mut published = 0;
    while !flag.load(std::sync::atomic::Ordering::SeqCst) && published < 100_000 {
        send(&c, "busy", "x").await?;
        published += 1;
    }
    assert!(
        flag.load(std::sync::atomic::Ordering::SeqCst) && published <= 10_000,
        "the other task ran only after {published} publishes"
    );
    Ok(())
}

/// Likewise for a consumer with a backlog: its deliveries are ready at once, and the budget
/// makes the loop yield.
#[tokio::test(flavor = "current_thread")]
async fn a_consuming_loop_lets_the_other_tasks_run() -> R {
    let (_b, c) = setup(vec![Queue::transient("backlog")]).await?;
    for _ in 0..30_000 {
        tokio::task::unconstrained(send(&c, "backlog", "x")).await?;
    }
    let mut consumer = c.consume("backlog", ConsumeOptions::default().prefetch(0)).await?;
    let flag = spawn_flag();
    let mut consumed = 0;
    while !flag.load(std::sync::atomic::Ordering::SeqCst) && consumed < 30_000 {
        next(&mut consumer).await?.ack().await?;
        consumed += 1;
    }
    assert!(
        flag.load(std::sync::atomic::Ordering::SeqCst) && consumed <= 10_000,
        "the other task ran only after {consumed} deliveries"
    );
    Ok(())
}
