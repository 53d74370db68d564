//! Embedded-broker behaviour beyond the shared conformance suite: timing edge cases on the
//! paused clock, ack batching, flow of requeued messages, limits, and a concurrent stress test.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use mqtransport_core::{ConsumeOptions, Envelope, ErrorKind, FieldValue, Publish, Queue, Topology, Transport};
use mqtransport_memory::MemoryBroker;

use common::*;

#[tokio::test(start_paused = true)]
async fn oversized_message_is_refused_naming_sizes() -> R {
    let broker = MemoryBroker::with_max_message_size(16);
    let c = broker.connect();
    c.declare(&Topology::new().queue(Queue::durable("q"))).await?;
    let e = c
        .publish(Publish::to_queue("q", Envelope::new(vec![0u8; 17])))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.message().contains("17 bytes") && e.message().contains("16 bytes"),
        "{e}"
    );
    assert!(e.message().contains("routing key 'q'"), "{e}");
    send(&c, "q", "fits").await?;
    assert_eq!(count(&c, "q").await, 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn expiry_only_cycle_is_dropped() -> R {
    let (_b, c) = setup(vec![
        Queue::durable("a")
            .message_ttl(Duration::from_millis(50))
            .dead_letter_exchange("")
            .dead_letter_routing_key("b"),
        Queue::durable("b")
            .message_ttl(Duration::from_millis(50))
            .dead_letter_exchange("")
            .dead_letter_routing_key("a"),
    ])
    .await?;
    send(&c, "a", "loop").await?;
    tokio::time::sleep(Duration::from_millis(75)).await;
    assert_eq!((count(&c, "a").await, count(&c, "b").await), (0, 1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Going back to `a` would close a cycle made only of expiries: dropped.
    assert_eq!((count(&c, "a").await, count(&c, "b").await), (0, 0));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn self_dead_lettering_by_rejection_is_allowed() -> R {
    let (_b, c) = setup(vec![
        Queue::durable("self")
            .dead_letter_exchange("")
            .dead_letter_routing_key("self"),
    ])
    .await?;
    send(&c, "self", "again").await?;
    for expected in 1..=3i64 {
        let d = c.get("self", false).await?.expect("the message is back");
        d.reject(false).await?;
        let d = c.get("self", false).await?.expect("dead-lettered to itself");
        let deaths = d
            .envelope
            .header("x-death")
            .and_then(FieldValue::as_array)
            .expect("x-death");
        let count = deaths[0]
            .as_table()
            .and_then(|t| t.get("count"))
            .and_then(FieldValue::as_i64);
        assert_eq!(count, Some(expected));
        d.nack(true).await?;
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn zero_ttl_is_delivered_only_to_a_ready_consumer() -> R {
    let (_b, c) = setup(vec![Queue::durable("z")]).await?;
    let zero = || Envelope::new("now-or-never").with_expiration(Duration::ZERO);
    // No consumer: dropped at once.
    c.publish(Publish::to_queue("z", zero())).await?;
    assert_eq!(count(&c, "z").await, 0);
    // A consumer with credit: delivered.
    let mut consumer = c.consume("z", ConsumeOptions::default().prefetch(1)).await?;
    c.publish(Publish::to_queue("z", zero())).await?;
    let held = consumer.next().await.expect("delivered")?;
    // The consumer is at its prefetch limit: dropped, and not delivered after the ack.
    c.publish(Publish::to_queue("z", zero())).await?;
    assert_eq!(count(&c, "z").await, 0);
    held.ack().await?;
    send(&c, "z", "next").await?;
    assert_eq!(text(&consumer.next().await.expect("next")?), "next");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn unused_queue_expires() -> R {
    let (_b, c) = setup(vec![Queue::durable("idle").expires(Duration::from_millis(300))]).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(c.queue_info("idle").await.is_ok());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(c.queue_info("idle").await.unwrap_err().reply_code(), Some(404));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn requeue_over_max_length_drops_the_head() -> R {
    let (b, c) = setup(vec![Queue::durable("m").max_length(2)]).await?;
    send(&c, "m", "u0").await?;
    let other = b.connect();
    let held = other.get("m", false).await?.expect("u0");
    for m in ["u1", "u2", "u3"] {
        send(&c, "m", m).await?;
    }
    assert_eq!(count(&c, "m").await, 2);
    other.close().await?;
    drop(held);
    let mut left = Vec::new();
    while let Some(d) = c.get("m", true).await? {
        left.push(text(&d));
    }
    assert_eq!(left, ["u2", "u3"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn quorum_returns_on_close_go_to_the_front_in_order() -> R {
    let (b, c) = setup(vec![Queue::quorum("qq")]).await?;
    for i in 0..5 {
        send(&c, "qq", &format!("d{i}")).await?;
    }
    let other = b.connect();
    let d0 = other.get("qq", false).await?.expect("d0");
    let d1 = other.get("qq", false).await?.expect("d1");
    let d2 = other.get("qq", false).await?.expect("d2");
    d1.ack().await?;
    other.close().await?;
    drop((d0, d2));
    let mut order = Vec::new();
    while let Some(d) = c.get("qq", true).await? {
        order.push(format!("{}{}", text(&d), if d.redelivered { "(r)" } else { "" }));
    }
    assert_eq!(order, ["d0(r)", "d2(r)", "d3", "d4"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn exclusive_consumer_locks_out_others_but_not_get() -> R {
    let (_b, c) = setup(vec![Queue::durable("x")]).await?;
    let only = c.consume("x", ConsumeOptions::default().exclusive()).await?;
    let e = c.consume("x", ConsumeOptions::default()).await.unwrap_err();
    assert_eq!(e.reply_code(), Some(403));
    assert_eq!(e.message(), "ACCESS_REFUSED - queue 'x' in vhost '/' in exclusive use");
    assert!(c.get("x", true).await?.is_none());
    drop(only);
    let _again = c.consume("x", ConsumeOptions::default()).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn requeued_message_goes_to_the_consumer_with_capacity() -> R {
    let (b, c) = setup(vec![Queue::durable("rr")]).await?;
    let (ca, cb) = (b.connect(), b.connect());
    let mut a = ca.consume("rr", ConsumeOptions::default().prefetch(1)).await?;
    let mut bb = cb.consume("rr", ConsumeOptions::default().prefetch(1)).await?;
    send(&c, "rr", "x0").await?;
    send(&c, "rr", "x1").await?;
    let x0 = a.next().await.expect("x0")?;
    let x1 = bb.next().await.expect("x1")?;
    assert_eq!((text(&x0), text(&x1)), ("x0".into(), "x1".into()));
    x0.reject(true).await?;
    let again = a.next().await.expect("x0 again")?;
    assert_eq!((text(&again), again.redelivered), ("x0".into(), true));
    again.ack().await?;
    x1.ack().await?;
    Ok(())
}

/// Acks settled from other tasks release the consumer's credit even while its stream waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_from_other_tasks_release_credit() -> R {
    let (_b, c) = setup(vec![Queue::durable("credit")]).await?;
    for i in 0..200 {
        send(&c, "credit", &format!("m{i}")).await?;
    }
    let mut consumer = c.consume("credit", ConsumeOptions::default().prefetch(2)).await?;
    let mut handlers = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..200 {
            let d = consumer.next().await.expect("delivery")?;
            handlers.push(tokio::spawn(async move {
                tokio::task::yield_now().await;
                d.ack().await
            }));
        }
        Ok::<(), mqtransport_core::Error>(())
    })
    .await;
    assert!(
        all.is_ok(),
        "the consumer stalled: acks from handler tasks did not release credit"
    );
    for h in handlers {
        h.await.expect("handler")?;
    }
    Ok(())
}

/// Acks still waiting in the batch when the connection closes are applied, not redelivered.
#[tokio::test(start_paused = true)]
async fn pending_acks_survive_close() -> R {
    let (b, c) = setup(vec![Queue::durable("acked")]).await?;
    for i in 0..3 {
        send(&c, "acked", &format!("m{i}")).await?;
    }
    let other = b.connect();
    let mut consumer = other.consume("acked", ConsumeOptions::default().prefetch(10)).await?;
    for _ in 0..3 {
        consumer.next().await.expect("delivery")?.ack().await?;
    }
    other.close().await?;
    assert_eq!(count(&c, "acked").await, 0);
    // And when the consumer (not the connection) goes away.
    send(&c, "acked", "m3").await?;
    let again = b.connect();
    let mut consumer = again.consume("acked", ConsumeOptions::default()).await?;
    consumer.next().await.expect("m3")?.ack().await?;
    drop(consumer);
    assert_eq!(count(&c, "acked").await, 0);
    assert!(c.get("acked", true).await?.is_none());
    Ok(())
}

/// Deliveries handed to a consumer but never taken from its stream go back when it is dropped.
#[tokio::test(start_paused = true)]
async fn dropping_a_consumer_returns_what_it_never_yielded() -> R {
    let (_b, c) = setup(vec![Queue::durable("inbox")]).await?;
    for i in 0..5 {
        send(&c, "inbox", &format!("m{i}")).await?;
    }
    let mut consumer = c.consume("inbox", ConsumeOptions::default().prefetch(10)).await?;
    let first = consumer.next().await.expect("m0")?;
    drop(consumer);
    assert_eq!(count(&c, "inbox").await, 4);
    first.ack().await?;
    let mut left = Vec::new();
    while let Some(d) = c.get("inbox", true).await? {
        left.push((text(&d), d.redelivered));
    }
    let want: Vec<(String, bool)> = (1..5).map(|i| (format!("m{i}"), true)).collect();
    assert_eq!(left, want);
    Ok(())
}

/// Four publishers and three consumers that ack, requeue and drop at random: every message is
/// acked, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_consumers_lose_nothing() -> R {
    const PER: usize = 2_000;
    let (b, c) = setup(vec![Queue::durable("stress")]).await?;
    let mut tasks = Vec::new();
    for p in 0..4 {
        let conn = b.connect();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER {
                conn.publish(Publish::to_queue("stress", Envelope::new(format!("{p}-{i}"))))
                    .await?;
            }
            Ok::<(), mqtransport_core::Error>(())
        }));
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut consumers = Vec::new();
    for k in 0..3u64 {
        let conn = b.connect();
        let seen = std::sync::Arc::clone(&seen);
        consumers.push(tokio::spawn(async move {
            let mut s = conn.consume("stress", ConsumeOptions::default().prefetch(50)).await?;
            let mut n = k;
            while let Some(d) = s.next().await {
                let d = d?;
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                match n >> 62 {
                    0 => d.nack(true).await?,
                    1 => drop(d),
                    _ => {
                        let body = text(&d);
                        d.ack().await?;
                        let mut seen = seen.lock().expect("seen");
                        assert!(seen.insert(body), "a message was acked twice");
                        if seen.len() == 4 * PER {
                            break;
                        }
                    }
                }
                if seen.lock().expect("seen").len() == 4 * PER {
                    break;
                }
            }
            Ok::<(), mqtransport_core::Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("publisher")?;
    }
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if seen.lock().expect("seen").len() == 4 * PER {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "only {} of {} messages were acked",
        seen.lock().expect("seen").len(),
        4 * PER
    );
    for k in consumers {
        k.abort();
    }
    assert_eq!(count(&c, "stress").await, 0);
    Ok(())
}

fn death_keys(d: &mqtransport_core::Delivery) -> Vec<Vec<String>> {
    d.envelope
        .header("x-death")
        .and_then(FieldValue::as_array)
        .map(|a| {
            a.iter()
                .filter_map(FieldValue::as_table)
                .map(|t| t.iter().map(|(k, _)| k.to_owned()).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// The embedded broker writes `x-death` entries in RabbitMQ's order: a first entry as
/// `count, reason, queue, time, exchange, routing-keys[, original-expiration]`, entries added or
/// updated later sorted by key, as RabbitMQ 3.10 writes them.
#[tokio::test(start_paused = true)]
async fn x_death_entries_are_written_in_rabbitmq_order() -> R {
    let (_b, c) = setup(vec![
        Queue::durable("work")
            .dead_letter_exchange("")
            .dead_letter_routing_key("retry"),
        Queue::durable("retry")
            .message_ttl(Duration::from_millis(50))
            .dead_letter_exchange("")
            .dead_letter_routing_key("work"),
    ])
    .await?;
    c.publish(Publish::to_queue(
        "work",
        Envelope::new("job").with_expiration(Duration::from_secs(60)),
    ))
    .await?;
    c.get("work", false).await?.expect("job").reject(false).await?;
    let first = c.get("retry", true).await?.expect("in retry");
    assert_eq!(
        death_keys(&first),
        [[
            "count",
            "reason",
            "queue",
            "time",
            "exchange",
            "routing-keys",
            "original-expiration"
        ]]
    );
    c.publish(Publish::to_queue("work", Envelope::new("job2"))).await?;
    c.get("work", false).await?.expect("job2").reject(false).await?;
    tokio::time::sleep(Duration::from_millis(75)).await;
    let back = c.get("work", false).await?.expect("back from retry");
    assert_eq!(
        death_keys(&back),
        [
            vec!["count", "exchange", "queue", "reason", "routing-keys", "time"],
            vec!["count", "reason", "queue", "time", "exchange", "routing-keys"],
        ]
    );
    back.ack().await?;
    Ok(())
}

/// An exclusive consumer that goes with its connection frees the queue for other consumers.
#[tokio::test(start_paused = true)]
async fn exclusive_consumer_is_released_when_its_connection_closes() -> R {
    let (b, c) = setup(vec![Queue::durable("xc")]).await?;
    let other = b.connect();
    let held = other.consume("xc", ConsumeOptions::default().exclusive()).await?;
    assert_eq!(
        c.consume("xc", ConsumeOptions::default())
            .await
            .unwrap_err()
            .reply_code(),
        Some(403)
    );
    other.close().await?;
    let _mine = c.consume("xc", ConsumeOptions::default()).await?;
    drop(held);
    Ok(())
}

/// Messages without an expiration take the queue's intake (no queue lock); a message with one
/// takes the locked path. Mixed on one queue, they keep their publish order for `get` and for
/// consumers alike.
#[tokio::test(start_paused = true)]
async fn intake_and_locked_publishes_keep_one_order() -> R {
    let (_b, c) = setup(vec![Queue::durable("mixed")]).await?;
    for i in 0..6 {
        let mut env = Envelope::new(format!("m{i}"));
        if i % 2 == 1 {
            env = env.with_expiration(Duration::from_secs(60));
        }
        c.publish(Publish::to_queue("mixed", env)).await?;
    }
    assert_eq!(count(&c, "mixed").await, 6);
    let first = c.get("mixed", true).await?.expect("a message");
    assert_eq!(text(&first), "m0");
    let mut consumer = c.consume("mixed", ConsumeOptions::default().prefetch(10)).await?;
    let mut got = Vec::new();
    for _ in 1..6 {
        let d = consumer.next().await.expect("a delivery")?;
        got.push(text(&d));
        d.ack().await?;
    }
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5"]);
    Ok(())
}

/// A consumer parked on an empty queue is woken by a publish that only touches the intake.
#[tokio::test(start_paused = true)]
async fn a_parked_consumer_is_woken_by_the_intake() -> R {
    let (b, c) = setup(vec![Queue::durable("wake")]).await?;
    let mut consumer = c.consume("wake", ConsumeOptions::default().prefetch(1)).await?;
    let producer = b.connect();
    let publish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        send(&producer, "wake", "late").await
    });
    let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("woken")
        .expect("a delivery")?;
    assert_eq!(text(&d), "late");
    d.ack().await?;
    publish.await.expect("the publisher runs")?;
    Ok(())
}

/// The per-thread route cache never delivers into a deleted queue: after a delete the publish
/// is returned, and after a re-declare it reaches the new queue.
#[tokio::test(start_paused = true)]
async fn the_route_cache_follows_deletes_and_redeclares() -> R {
    let (b, c) = setup(vec![Queue::durable("cached")]).await?;
    send(&c, "cached", "one").await?;
    let other = b.connect();
    assert_eq!(other.delete_queue("cached", Default::default()).await?, 1);
    let c2 = c.publish(Publish::to_queue("cached", Envelope::new("lost?"))).await?;
    assert!(
        matches!(c2, mqtransport_core::Confirmation::Returned { reply_code: 312, .. }),
        "{c2:?}"
    );
    other.declare(&Topology::new().queue(Queue::durable("cached"))).await?;
    send(&c, "cached", "two").await?;
    assert_eq!(count(&other, "cached").await, 1);
    let d = other.get("cached", true).await?.expect("a message");
    assert_eq!(text(&d), "two");
    // Another broker's queue of the same name is another queue.
    let (_b2, elsewhere) = setup(vec![Queue::durable("cached")]).await?;
    send(&elsewhere, "cached", "three").await?;
    assert_eq!(count(&other, "cached").await, 0);
    assert_eq!(count(&elsewhere, "cached").await, 1);
    Ok(())
}

/// Publishes that jump between more queues than the route cache holds, with runs to one queue
/// and returns to earlier ones, each land in the queue they name, in order.
#[tokio::test(start_paused = true)]
async fn the_route_cache_keeps_interleaved_queues_apart() -> R {
    let names: Vec<String> = (0..20).map(|i| format!("rc-{i:02}")).collect();
    let (_b, c) = setup(names.iter().map(Queue::durable).collect()).await?;
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    // Runs of 1..=3 to each queue, visiting them in an order that revisits recent ones.
    for step in 0..200usize {
        let q = (step * 7 + step / 3) % names.len();
        for run in 0..(step % 3 + 1) {
            let body = format!("{step}.{run}");
            send(&c, &names[q], &body).await?;
            sent[q].push(body);
        }
    }
    for (name, bodies) in names.iter().zip(&sent) {
        let mut got = Vec::new();
        while let Some(d) = c.get(name, true).await? {
            got.push(text(&d));
        }
        assert_eq!(&got, bodies, "queue {name}");
    }
    Ok(())
}

/// Messages a consumer has not yet had credit for wait unnumbered behind the ready list: a
/// requeued message still goes back before them, and `get`, counts and purge see them.
#[tokio::test(start_paused = true)]
async fn waiting_messages_stay_behind_requeued_ones_and_are_counted() -> R {
    let (b, c) = setup(vec![Queue::durable("fresh")]).await?;
    let cc = b.connect();
    let mut consumer = cc.consume("fresh", ConsumeOptions::default().prefetch(1)).await?;
    for i in 0..4 {
        send(&c, "fresh", &format!("m{i}")).await?;
    }
    let m0 = consumer.next().await.expect("m0")?;
    assert_eq!(text(&m0), "m0");
    // m1..m3 wait for credit; the counts include them.
    assert_eq!(count(&c, "fresh").await, 3);
    m0.nack(true).await?;
    let again = consumer.next().await.expect("m0 again")?;
    assert_eq!((text(&again), again.redelivered), ("m0".into(), true));
    // `basic.get` takes the next waiting one, in order.
    let got = c.get("fresh", true).await?.expect("m1 by get");
    assert_eq!((text(&got), got.message_count), ("m1".into(), Some(2)));
    again.ack().await?;
    let m2 = consumer.next().await.expect("m2")?;
    assert_eq!(text(&m2), "m2");
    assert_eq!(c.purge("fresh").await?, 1);
    let stats = b.queue_stats("fresh").expect("queue");
    assert_eq!((stats.ready, stats.unacked), (0, 1));
    m2.ack().await?;
    Ok(())
}

/// A priority queue orders what waits by priority, not by arrival, even when its consumer had
/// no credit while the messages arrived.
#[tokio::test(start_paused = true)]
async fn priority_queue_orders_messages_that_waited_for_credit() -> R {
    let (b, c) = setup(vec![Queue::durable("prio").max_priority(9)]).await?;
    let cc = b.connect();
    let mut consumer = cc.consume("prio", ConsumeOptions::default().prefetch(1)).await?;
    send(&c, "prio", "first").await?;
    let first = consumer.next().await.expect("first")?;
    for (body, p) in [("low", 1u8), ("high", 9), ("mid", 5)] {
        let mut e = Envelope::new(body.to_owned());
        e.properties_mut().priority = Some(p);
        c.publish(Publish::to_queue("prio", e)).await?;
    }
    first.ack().await?;
    let mut order = Vec::new();
    for _ in 0..3 {
        let d = consumer.next().await.expect("delivery")?;
        order.push(text(&d));
        d.ack().await?;
    }
    assert_eq!(order, ["high", "mid", "low"]);
    Ok(())
}

/// `queue_stats` counts an acknowledged delivery as settled at once, before the consumer's
/// stream is polled again (which is when the broker applies its acks): in order and out of order.
#[tokio::test(start_paused = true)]
async fn queue_stats_count_acks_the_stream_has_not_applied_yet() -> R {
    let (b, c) = setup(vec![Queue::durable("stats")]).await?;
    let cc = b.connect();
    let mut consumer = cc.consume("stats", ConsumeOptions::default().prefetch(10)).await?;
    for i in 0..4 {
        send(&c, "stats", &format!("m{i}")).await?;
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(consumer.next().await.expect("delivery")?);
    }
    let unacked = |b: &MemoryBroker| b.queue_stats("stats").map(|s| (s.ready, s.unacked));
    assert_eq!(unacked(&b), Some((0, 4)));
    let m3 = got.pop().expect("m3");
    let m2 = got.pop().expect("m2");
    let m1 = got.pop().expect("m1");
    let m0 = got.pop().expect("m0");
    m0.ack().await?;
    assert_eq!(unacked(&b), Some((0, 3)), "an in-order ack");
    m2.ack().await?;
    assert_eq!(unacked(&b), Some((0, 2)), "an ack out of order");
    m1.ack().await?;
    m3.nack(true).await?;
    // m3 went back and straight to the consumer again, which has credit.
    assert_eq!(unacked(&b), Some((0, 1)), "m3 handed out again");
    let again = consumer.next().await.expect("m3 again")?;
    assert_eq!((text(&again), again.redelivered), ("m3".into(), true));
    again.ack().await?;
    assert_eq!(unacked(&b), Some((0, 0)), "everything settled");
    Ok(())
}

/// Routed messages keep their own exchange and routing key, whether a publish repeats the
/// previous one's (and shares its route) or not; messages to a queue by name carry its name.
#[tokio::test(start_paused = true)]
async fn every_delivery_reports_the_route_it_was_published_with() -> R {
    let (_b, c) = setup(vec![Queue::transient("routes")]).await?;
    c.declare(&Topology::new().bind(mqtransport_core::Binding::queue("routes", "amq.topic", "a.*")))
        .await?;
    let sent = [
        ("amq.topic", "a.b"),
        ("amq.topic", "a.b"),
        ("amq.topic", "a.c"),
        ("", "routes"),
        ("amq.topic", "a.b"),
        ("amq.topic", "a.c"),
    ];
    for (i, (exchange, key)) in sent.iter().enumerate() {
        c.publish(Publish::new(*exchange, *key, Envelope::new(i.to_string())))
            .await?;
    }
    let mut consumer = c.consume("routes", ConsumeOptions::default().no_ack(true)).await?;
    for (i, (exchange, key)) in sent.iter().enumerate() {
        let d = consumer.next().await.expect("a delivery")?;
        assert_eq!(
            (text(&d), d.exchange.as_str(), d.routing_key.as_str()),
            (i.to_string(), *exchange, *key)
        );
    }
    Ok(())
}

/// Two connections each `basic.get` with their own delivery tag 1 from one queue: each settles
/// its own delivery, not the other's.
#[tokio::test(start_paused = true)]
async fn gets_on_two_connections_settle_their_own_tag() -> R {
    let (b, a) = setup(vec![Queue::durable("gets")]).await?;
    send(&a, "gets", "for a").await?;
    send(&a, "gets", "for b").await?;
    let other = b.connect();
    let got_a = a.get("gets", false).await?.expect("a's message");
    let got_b = other.get("gets", false).await?.expect("b's message");
    assert_eq!((got_a.delivery_tag(), got_b.delivery_tag()), (1, 1));
    assert_eq!((text(&got_a), text(&got_b)), ("for a".into(), "for b".into()));
    got_a.reject(true).await?;
    let stats = b.queue_stats("gets").expect("queue");
    assert_eq!((stats.ready, stats.unacked), (1, 1));
    got_b.ack().await?;
    let back = a.get("gets", true).await?.expect("a's message is back");
    assert_eq!(
        (text(&back), back.redelivered, back.delivery_tag()),
        ("for a".into(), true, 2)
    );
    assert!(a.get("gets", true).await?.is_none(), "b's acked message is gone");
    Ok(())
}
