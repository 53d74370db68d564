//! Working with dead letters, each scenario on the embedded broker (paused clock) and on
//! RabbitMQ: inspect, summarise, replay (all, filtered, dry run, rate-limited, loop guard),
//! purge, dead letters the broker made, and a crash between a replay's confirm and the dead
//! letter's removal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use common::intercept::{Intercept, Intercepted};
use common::*;
use mqtransport::prelude::*;
use mqtransport::{
    AppBuilder, Confirmation, DeadLetterFilter, DeadLetterPolicy, DeadLetters, DeliveryInfo, Disposition, DynTransport,
    FieldValue, Overflow, Publish, Replay, ReplayAction, ReplayTarget, Transport, headers,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "orders.created")]
struct OrderCreated {
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "orders.cancelled")]
struct OrderCancelled {
    id: u64,
}

/// What a handler saw: the order id, the attempt, and `x-mqt-replayed`.
type HandlerSaw = (u64, u32, Option<i64>);

/// The handlers' state: whether the payment service works, and what they saw.
#[derive(Clone)]
struct Shop {
    healthy: Arc<AtomicBool>,
    seen: mpsc::UnboundedSender<HandlerSaw>,
}

async fn created(info: DeliveryInfo, o: OrderCreated, State(shop): State<Shop>) -> Result<(), HandlerError> {
    let replayed = info.header(headers::REPLAYED).and_then(FieldValue::as_i64);
    let _ = shop.seen.send((o.id, info.attempt(), replayed));
    if shop.healthy.load(Ordering::Acquire) {
        Ok(())
    } else if o.id % 10 == 3 {
        Err(HandlerError::permanent(format!("address invalid for order {}", o.id)))
    } else {
        Err(HandlerError::permanent("card declined"))
    }
}

async fn cancelled(_o: OrderCancelled) -> Result<(), HandlerError> {
    Err(HandlerError::permanent("too late to cancel"))
}

struct Setup {
    q: String,
    dlq: String,
    healthy: Arc<AtomicBool>,
    seen: mpsc::UnboundedReceiver<HandlerSaw>,
    settled: Settlements,
    running: mqtransport::Running,
    app_publisher: Publisher,
}

/// A running app whose `orders` consumer fails every message (no retries) until `healthy`.
async fn shop(fx: &Fx, base: &str) -> Result<Setup, BoxError> {
    let q = fx.queue(base);
    let (app, healthy, seen, settled) = shop_app(fx);
    let app = app
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .handle(created)
                .handle(cancelled)
                .retry(RetryPolicy::none()),
        )
        .build()
        .await?;
    let app_publisher = app.publisher();
    Ok(Setup {
        dlq: format!("{q}.dlq"),
        q,
        healthy,
        seen,
        settled,
        running: app.start().await?,
        app_publisher,
    })
}

/// An app on the broker under test whose payment service is down, reporting settlements; with
/// the switch that brings it back and what its handlers see.
fn shop_app(
    fx: &Fx,
) -> (
    AppBuilder<Shop>,
    Arc<AtomicBool>,
    mpsc::UnboundedReceiver<HandlerSaw>,
    Settlements,
) {
    let healthy = Arc::new(AtomicBool::new(false));
    let (tx, seen) = mpsc::unbounded_channel();
    let (hook, settled) = settlements();
    let app = fx
        .app(App::with_state(Shop {
            healthy: Arc::clone(&healthy),
            seen: tx,
        }))
        .on_settle(hook);
    (app, healthy, seen, settled)
}

impl Setup {
    /// Publishes the orders and waits until each is dead-lettered.
    async fn fail(&mut self, ids: &[u64]) -> TestResult {
        let route = Route::queue(self.q.as_str());
        for &id in ids {
            self.app_publisher.send(&route, &OrderCreated { id }).await?;
        }
        self.dead_lettered(ids.len()).await
    }

    async fn dead_lettered(&mut self, n: usize) -> TestResult {
        for _ in 0..n {
            let seen = self.settled.next().await?;
            assert!(
                matches!(seen.disposition, Disposition::DeadLettered { .. }),
                "{:?}",
                seen.disposition
            );
        }
        Ok(())
    }
}

async fn inspect_shows_what_failed_and_why(fx: Arc<Fx>) -> TestResult {
    let mut s = shop(&fx, "inspect").await?;
    let before = SystemTime::now() - Duration::from_secs(1);
    s.fail(&[1, 2, 3]).await?;
    s.app_publisher
        .send(&Route::queue(s.q.as_str()), &OrderCancelled { id: 9 })
        .await?;
    s.dead_lettered(1).await?;
    let dead = DeadLetters::new(fx.conn().await?, &s.dlq);
    assert_eq!(dead.count().await?, 4);

    let letters = dead.list(&DeadLetterFilter::new(), 10).await?;
    assert_eq!(letters.len(), 4);
    let first = &letters[0];
    assert_eq!(first.name.as_deref(), Some("orders.created"));
    assert_eq!(first.reason, "card declined");
    assert_eq!(first.attempts, Some(1));
    assert_eq!(first.queue.as_deref(), Some(s.q.as_str()));
    assert_eq!(first.original_exchange.as_deref(), Some(""));
    assert_eq!(first.original_routing_key.as_deref(), Some(s.q.as_str()));
    assert!(first.failed_at.is_some_and(|t| t >= before), "{:?}", first.failed_at);
    assert_eq!(first.replays, 0);
    assert_eq!(first.body_text(), "{\n  \"id\": 1\n}");
    assert_eq!(letters[2].reason, "address invalid for order 3");

    // A limit and a filter.
    let cancelled = dead.list(&DeadLetterFilter::new().name("orders.cancelled"), 10).await?;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].reason, "too late to cancel");
    assert_eq!(dead.list(&DeadLetterFilter::new(), 2).await?.len(), 2);

    let summary = dead.summary().await?;
    let rows: Vec<(&str, usize)> = summary.iter().map(|r| (r.reason.as_str(), r.count)).collect();
    assert_eq!(
        rows,
        [
            ("card declined", 2),
            ("address invalid for order 3", 1),
            ("too late to cancel", 1)
        ]
    );
    assert_eq!(summary[0].names, ["orders.created"]);
    // Looking changed nothing.
    assert_eq!(dead.count().await?, 4);
    s.running.shutdown().await?;
    Ok(())
}

async fn a_replayed_dead_letter_is_handled_again_and_leaves_the_queue(fx: Arc<Fx>) -> TestResult {
    let mut s = shop(&fx, "replay").await?;
    s.fail(&[1]).await?;
    assert_eq!(recv(&mut s.seen, "the failing attempt").await?, (1, 1, None));
    s.healthy.store(true, Ordering::Release);

    let dead = DeadLetters::new(fx.conn().await?, &s.dlq);
    let report = dead.replay(&Replay::new()).await?;
    assert_eq!((report.examined, report.replayed()), (1, 1));
    assert_eq!(report.entries[0].destination, format!("queue '{}'", s.q));
    // Handled again from attempt 1, marked as replayed once.
    assert_eq!(recv(&mut s.seen, "the replayed message").await?, (1, 1, Some(1)));
    assert!(matches!(s.settled.next().await?.disposition, Disposition::Acked));
    assert_eq!(dead.count().await?, 0);
    s.running.shutdown().await?;
    Ok(())
}

async fn a_filtered_replay_moves_only_the_matching_ones_while_the_app_is_stopped(fx: Arc<Fx>) -> TestResult {
    let mut s = shop(&fx, "filtered").await?;
    s.fail(&[1, 2, 3, 4]).await?;
    s.running.shutdown().await?;
    let conn = fx.conn().await?;
    let dead = DeadLetters::new(conn.clone(), &s.dlq);
    let ids: Vec<String> = dead
        .list(&DeadLetterFilter::new(), 10)
        .await?
        .into_iter()
        .filter_map(|l| l.message_id)
        .collect();

    // A dry run says what it would do and does nothing.
    let dry = dead.replay(&Replay::new().dry_run(true)).await?;
    assert_eq!(dry.replayed(), 4);
    assert!(dry.entries.iter().all(|e| e.action == ReplayAction::WouldReplay));
    assert!(
        dry.entries[0].to_string().starts_with("would replay"),
        "{}",
        dry.entries[0]
    );
    assert_eq!(dead.count().await?, 4);

    // By reason, then by id.
    let by_reason = dead
        .replay(&Replay::new().filter(DeadLetterFilter::new().reason_contains("address")))
        .await?;
    assert_eq!((by_reason.examined, by_reason.replayed()), (4, 1));
    let by_id = dead
        .replay(&Replay::new().filter(DeadLetterFilter::new().message_ids([ids[0].clone(), ids[3].clone()])))
        .await?;
    assert_eq!(by_id.replayed(), 2);
    assert_eq!(dead.count().await?, 1);
    assert_eq!(conn.queue_info(&s.q).await?.message_count, 3);
    let left = dead.list(&DeadLetterFilter::new(), 10).await?;
    assert_eq!(left[0].message_id.as_deref(), Some(ids[1].as_str()));

    // A time range that holds none of them.
    let none = dead
        .replay(&Replay::new().filter(DeadLetterFilter::new().failed_before(SystemTime::UNIX_EPOCH)))
        .await?;
    assert_eq!((none.examined, none.replayed()), (1, 0));
    Ok(())
}

async fn the_loop_guard_stops_the_fourth_replay(fx: Arc<Fx>) -> TestResult {
    let mut s = shop(&fx, "loop").await?;
    s.fail(&[1]).await?;
    let dead = DeadLetters::new(fx.conn().await?, &s.dlq);
    for round in 1..=3 {
        let report = dead.replay(&Replay::new()).await?;
        assert_eq!(report.replayed(), 1, "replay {round}");
        s.dead_lettered(1).await?; // it fails again
    }
    let letter = dead.list(&DeadLetterFilter::new(), 1).await?.remove(0);
    assert_eq!(letter.replays, 3);
    let fourth = dead.replay(&Replay::new()).await?;
    assert_eq!((fourth.replayed(), fourth.loop_guarded()), (0, 1));
    assert_eq!(fourth.entries[0].action, ReplayAction::LoopGuard { replays: 3 });
    assert_eq!(dead.count().await?, 1);
    // With consent it goes.
    s.healthy.store(true, Ordering::Release);
    let forced = dead.replay(&Replay::new().force(true)).await?;
    assert_eq!(forced.replayed(), 1);
    assert!(matches!(s.settled.next().await?.disposition, Disposition::Acked));
    s.running.shutdown().await?;
    Ok(())
}

async fn purge_removes_what_the_filter_matches_and_counts(fx: Arc<Fx>) -> TestResult {
    let mut s = shop(&fx, "purge").await?;
    s.fail(&[1, 2, 3]).await?;
    s.running.shutdown().await?;
    let dead = DeadLetters::new(fx.conn().await?, &s.dlq);
    assert_eq!(
        dead.purge(&DeadLetterFilter::new().reason_contains("address")).await?,
        1
    );
    assert_eq!(dead.count().await?, 2);
    assert_eq!(dead.purge(&DeadLetterFilter::new()).await?, 2);
    assert_eq!(dead.count().await?, 0);
    Ok(())
}

async fn replays_go_to_another_route_at_a_limited_rate(fx: Arc<Fx>) -> TestResult {
    let mut s = shop(&fx, "rate").await?;
    s.fail(&[1, 2, 3, 4, 5]).await?;
    s.running.shutdown().await?;
    let conn = fx.conn().await?;
    let parked = fx.queue("parked");
    conn.declare(&Topology::new().queue(Queue::durable(&parked))).await?;
    let dead = DeadLetters::new(conn.clone(), &s.dlq);
    let started = tokio::time::Instant::now();
    let report = dead
        .replay(
            &Replay::new()
                .to(ReplayTarget::Route(Route::queue(parked.as_str())))
                .rate_limit(10),
        )
        .await?;
    assert_eq!(report.replayed(), 5);
    // Five at ten a second: the first at once, the last 400 ms later.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(conn.queue_info(&parked).await?.message_count, 5);
    // A destination that does not exist keeps the dead letters.
    for _ in 0..5 {
        conn.publish(Publish::to_queue(s.dlq.as_str(), get(&conn, &parked).await?))
            .await?;
    }
    let nowhere = dead
        .replay(&Replay::new().to(ReplayTarget::Route(Route::queue("no-such-queue-anywhere"))))
        .await?;
    assert_eq!(nowhere.failed(), 5);
    assert_eq!(dead.count().await?, 5);
    Ok(())
}

async fn dead_letters_the_broker_made_are_read_from_x_death(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("broker");
    let dlq = format!("{q}.dlq");
    let (app, _healthy, _seen, mut settled) = shop_app(&fx);
    let app = app
        .topology(
            Topology::new().queue(Queue::durable(&dlq)).queue(
                Queue::durable(&q)
                    .dead_letter_exchange("")
                    .dead_letter_routing_key(&dlq),
            ),
        )
        .consumer(
            Consumer::new(&q)
                .handle(created)
                .retry(RetryPolicy::none())
                .dead_letter(DeadLetterPolicy::Broker),
        )
        .build()
        .await?;
    app.publisher()
        .send(&Route::queue(q.as_str()), &OrderCreated { id: 1 })
        .await?;
    let running = app.start().await?;
    assert!(matches!(
        settled.next().await?.disposition,
        Disposition::DeadLettered { .. }
    ));
    running.shutdown().await?;

    let dead = DeadLetters::new(fx.conn().await?, &dlq);
    let letter = dead.list(&DeadLetterFilter::new(), 1).await?.remove(0);
    assert_eq!(
        letter.reason,
        format!("rejected in queue '{q}' (dead-lettered by the broker)")
    );
    assert_eq!(letter.queue.as_deref(), Some(q.as_str()));
    assert!(letter.failed_at.is_some());
    assert_eq!(dead.replay(&Replay::new()).await?.replayed(), 1);
    assert_eq!(fx.conn().await?.queue_info(&q).await?.message_count, 1);
    Ok(())
}

async fn a_crash_between_the_replay_confirm_and_the_removal_loses_nothing(fx: Arc<Fx>) -> TestResult {
    let mut s = shop(&fx, "crash").await?;
    s.fail(&[1]).await?;
    s.running.shutdown().await?;
    // The replay's connection dies the moment the broker confirms the copy.
    let crashing = Intercepted::transport(fx.conn().await?, CrashAfterConfirm);
    let report = DeadLetters::new(crashing, &s.dlq).replay(&Replay::new()).await;
    if let Ok(report) = &report {
        assert_eq!(report.replayed(), 0, "{report:?}");
    }
    let conn = fx.conn().await?;
    let dead = DeadLetters::new(conn.clone(), &s.dlq);
    // Both copies: at worst a duplicate, with the same message id.
    assert_eq!(conn.queue_info(&s.q).await?.message_count, 1);
    let kept = dead.list(&DeadLetterFilter::new(), 1).await?;
    assert_eq!(kept.len(), 1);
    let copy = get(&conn, &s.q).await?;
    assert_eq!(copy.properties().message_id, kept[0].message_id);
    Ok(())
}

async fn a_full_dead_letter_queue_backs_the_consumer_off(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("full");
    let dlq = format!("{q}.dlq");
    let (app, _healthy, _seen, mut settled) = shop_app(&fx);
    let app = app
        .topology(Topology::new().queue(Queue::durable(&dlq).max_length(1).overflow(Overflow::RejectPublish)))
        .consumer(
            Consumer::for_queue(Queue::durable(&q))
                .handle(created)
                .retry(RetryPolicy::none()),
        )
        .build()
        .await?;
    let publisher = app.publisher();
    let running = app.start().await?;
    let route = Route::queue(q.as_str());
    publisher.send(&route, &OrderCreated { id: 1 }).await?;
    assert!(matches!(
        settled.next().await?.disposition,
        Disposition::DeadLettered { .. }
    ));
    // The dead-letter queue is full: the next dead letter is refused, again and again.
    publisher.send(&route, &OrderCreated { id: 2 }).await?;
    let mut refused_at = Vec::new();
    for _ in 0..3 {
        let seen = settled.next().await?;
        assert!(
            matches!(seen.disposition, Disposition::Returned { .. }),
            "{:?}",
            seen.disposition
        );
        refused_at.push(tokio::time::Instant::now());
    }
    // Requeued after 1 s, then 2 s, then 4 s: no spinning.
    let gaps = [refused_at[1] - refused_at[0], refused_at[2] - refused_at[1]];
    assert!(gaps[0] >= Duration::from_millis(1900), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(3900), "{gaps:?}");
    let status = running.consumers().remove(0);
    assert_eq!(status.queue, q);
    assert!(status.settle_failures >= 3, "{status:?}");
    assert!(status.backoff >= Some(Duration::from_secs(8)), "{status:?}");
    let error = status.last_settle_error.unwrap_or_default();
    assert!(error.contains(&format!("dead-lettering to '{dlq}' failed")), "{error}");
    assert!(status.failing_since.is_some());

    // Room again: the next attempt dead-letters, and the consumer is healthy.
    assert_eq!(
        DeadLetters::new(fx.conn().await?, &dlq)
            .purge(&DeadLetterFilter::new())
            .await?,
        1
    );
    loop {
        match settled.next().await?.disposition {
            Disposition::Returned { .. } => continue,
            Disposition::DeadLettered { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(running.consumers()[0].settle_failures, 0);
    running.shutdown().await?;
    Ok(())
}

/// Closes the connection right after a publish is confirmed.
struct CrashAfterConfirm;

impl Intercept for CrashAfterConfirm {
    async fn publish(&self, inner: &DynTransport, publish: Publish) -> mqtransport::Result<Confirmation> {
        let confirmation = inner.publish(publish).await?;
        if confirmation.is_confirmed() {
            inner.close().await?;
        }
        Ok(confirmation)
    }
}

app_suite!(
    inspect_shows_what_failed_and_why,
    a_replayed_dead_letter_is_handled_again_and_leaves_the_queue,
    a_filtered_replay_moves_only_the_matching_ones_while_the_app_is_stopped,
    the_loop_guard_stops_the_fourth_replay,
    purge_removes_what_the_filter_matches_and_counts,
    replays_go_to_another_route_at_a_limited_rate,
    dead_letters_the_broker_made_are_read_from_x_death,
    a_crash_between_the_replay_confirm_and_the_removal_loses_nothing,
    a_full_dead_letter_queue_backs_the_consumer_off,
);
