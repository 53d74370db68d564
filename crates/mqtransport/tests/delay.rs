//! Delayed publishing, each scenario on the embedded broker (paused clock) and on RabbitMQ 3.10
//! (no plugin): a delayed message arrives no earlier than asked, a short delay overtakes a long
//! one, delays reach exchange routes with their routing keys, and impossible delays are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::intercept::{Intercept, Intercepted};
use common::*;
use mqtransport::prelude::*;
use mqtransport::{
    Capabilities, Confirmation, DeliveryInfo, DynTransport, Envelope, ErrorKind, MemoryBroker, Publish, PublishOptions,
    Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "reminders.due")]
struct ReminderDue {
    id: u64,
}

/// What a handler saw: the reminder, when, and its routing key.
type Arrival = (u64, Instant, String);

async fn due(info: DeliveryInfo, r: ReminderDue, State(tx): State<mpsc::UnboundedSender<Arrival>>) {
    let _ = tx.send((r.id, Instant::now(), info.delivered_routing_key().to_owned()));
}

/// An app consuming queue `q` into a channel of arrivals, started.
async fn reminders(
    fx: &Fx,
    q: &str,
) -> Result<
    (
        mqtransport::Running,
        mpsc::UnboundedReceiver<Arrival>,
        Producer<ReminderDue>,
    ),
    BoxError,
> {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .consumer(Consumer::for_queue(Queue::durable(q)).handle(due))
        .build()
        .await?;
    let producer = app.producer::<ReminderDue>(Route::queue(q));
    Ok((app.start().await?, rx, producer))
}

async fn a_delayed_message_arrives_no_earlier_than_asked(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("delayed");
    let (running, mut rx, producer) = reminders(&fx, &q).await?;
    let sent = Instant::now();
    producer
        .send_delayed(&ReminderDue { id: 1 }, Duration::from_millis(300))
        .await?;
    let (id, at, _) = recv(&mut rx, "the delayed reminder").await?;
    assert_eq!(id, 1);
    let waited = at - sent;
    assert!(waited >= Duration::from_millis(300), "arrived after {waited:?}");
    assert!(waited < Duration::from_secs(10), "arrived after {waited:?}");
    running.shutdown().await?;
    Ok(())
}

async fn a_short_delay_overtakes_a_long_one(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("overtake");
    let (running, mut rx, producer) = reminders(&fx, &q).await?;
    producer
        .send_delayed(&ReminderDue { id: 10_000 }, Duration::from_secs(10))
        .await?;
    producer
        .send_delayed(&ReminderDue { id: 10 }, Duration::from_millis(10))
        .await?;
    let (first, _, _) = recv(&mut rx, "the first arrival").await?;
    assert_eq!(first, 10, "the 10 ms delay came after the 10 s one");
    if fx.is_memory() {
        // On the paused clock the long one is quick to wait for too.
        let (second, _, _) = recv(&mut rx, "the second arrival").await?;
        assert_eq!(second, 10_000);
    }
    running.shutdown().await?;
    Ok(())
}

async fn delays_of_many_sizes_arrive_in_order_of_their_due_time(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("many");
    let (running, mut rx, producer) = reminders(&fx, &q).await?;
    // Published longest first: each arrives in order of its delay, never behind a longer one.
    let delays = [900u64, 700, 450, 300, 129, 64, 5, 1];
    for ms in delays {
        producer
            .send_delayed(&ReminderDue { id: ms }, Duration::from_millis(ms))
            .await?;
    }
    let mut order = Vec::new();
    for _ in delays {
        order.push(recv(&mut rx, "an arrival").await?.0);
    }
    if !fx.is_memory() {
        // Hops take a millisecond or so each: only delays far enough apart are ordered surely.
        let pos = |id| order.iter().position(|&x| x == id).unwrap();
        assert!(
            pos(1) < pos(129) && pos(129) < pos(450) && pos(450) < pos(900),
            "{order:?}"
        );
    } else {
        assert_eq!(order, [1, 5, 64, 129, 300, 450, 700, 900]);
    }
    running.shutdown().await?;
    Ok(())
}

async fn a_delay_reaches_an_exchange_route_with_its_routing_key(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("by-topic");
    let x = fx.exchange("reminders");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .topology(
            Topology::new()
                .exchange(Exchange::topic(&x))
                .queue(Queue::durable(&q))
                .bind(Binding::queue(&q, &x, "reminders.*")),
        )
        .consumer(Consumer::new(&q).handle(due))
        .build()
        .await?;
    let producer = app.producer::<ReminderDue>(Route::exchange(x.as_str()));
    let running = app.start().await?;
    let sent = Instant::now();
    producer
        .send_delayed(&ReminderDue { id: 3 }, Duration::from_millis(50))
        .await?;
    let (id, at, key) = recv(&mut rx, "the delayed reminder").await?;
    assert_eq!((id, key.as_str()), (3, "reminders.due"));
    assert!(at - sent >= Duration::from_millis(50));
    running.shutdown().await?;
    Ok(())
}

async fn delays_run_from_a_millisecond_to_a_week(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("range");
    let (running, mut rx, producer) = reminders(&fx, &q).await?;
    // A week is taken (confirmed into its wait queue); `a_week_long_delay_arrives_after_a_week`
    // waits it out on the paused clock.
    producer
        .send_delayed(&ReminderDue { id: 7 }, Duration::from_secs(7 * 24 * 3600))
        .await?;
    producer
        .send_delayed(&ReminderDue { id: 1 }, Duration::from_millis(1))
        .await?;
    let (first, _, _) = recv(&mut rx, "the 1 ms reminder").await?;
    assert_eq!(first, 1);
    running.shutdown().await?;
    Ok(())
}

/// Outside the suite, whose scenarios must finish within two (paused) minutes.
#[tokio::test(start_paused = true)]
async fn a_week_long_delay_arrives_after_a_week() -> TestResult {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = App::with_state(tx)
        .url("memory://delay-a-week")
        .consumer(Consumer::for_queue(Queue::durable("weekly")).handle(due))
        .build()
        .await?;
    let producer = app.producer::<ReminderDue>(Route::queue("weekly"));
    let running = app.start().await?;
    let week = Duration::from_secs(7 * 24 * 3600);
    let sent = Instant::now();
    producer.send_delayed(&ReminderDue { id: 7 }, week).await?;
    let (id, at, _) = tokio::time::timeout(week * 2, rx.recv())
        .await?
        .ok_or("the app stopped")?;
    assert_eq!(id, 7);
    assert!(at - sent >= week, "arrived after {:?}", at - sent);
    assert!(
        at - sent < week + Duration::from_secs(1),
        "arrived after {:?}",
        at - sent
    );
    running.shutdown().await?;
    Ok(())
}

async fn impossible_delays_are_refused(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("refused");
    let (running, _rx, producer) = reminders(&fx, &q).await?;
    let too_long = mqtransport::delay::MAX_DELAY + Duration::from_millis(1);
    let err = producer
        .send_delayed(&ReminderDue { id: 1 }, too_long)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("longest supported"), "{err}");
    let err = producer
        .publish_delayed_with(
            &ReminderDue { id: 2 },
            Duration::from_secs(1),
            PublishOptions::default().expiration(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("expiration"), "{err}");
    running.shutdown().await?;
    Ok(())
}

async fn publish_at_waits_until_the_time(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("at");
    let (running, mut rx, producer) = reminders(&fx, &q).await?;
    let sent = Instant::now();
    producer
        .send_at(&ReminderDue { id: 1 }, SystemTime::now() + Duration::from_millis(400))
        .await?;
    producer
        .send_at(&ReminderDue { id: 2 }, SystemTime::now() - Duration::from_secs(60))
        .await?;
    let (first, _, _) = recv(&mut rx, "the past-due reminder").await?;
    assert_eq!(first, 2, "a time already passed is delivered at once");
    let (second, at, _) = recv(&mut rx, "the reminder at its time").await?;
    assert_eq!(second, 1);
    // Less the time spent before the first publish read the wall clock.
    assert!(at - sent >= Duration::from_millis(350), "{:?}", at - sent);
    running.shutdown().await?;
    Ok(())
}

/// The embedded broker pretending to delay up to 15 minutes by itself (as SQS does): it
/// records each delay it is asked for and delivers at once.
struct NativeDelay {
    asked: Arc<Mutex<Vec<Duration>>>,
}

impl Intercept for NativeDelay {
    fn capabilities(&self, inner: &DynTransport) -> Capabilities {
        let mut caps = inner.capabilities();
        caps.native_delay = Some(Duration::from_secs(15 * 60));
        caps
    }
    async fn publish_delayed(
        &self,
        inner: &DynTransport,
        publish: Publish,
        delay: Duration,
    ) -> mqtransport::Result<Confirmation> {
        self.asked.lock().unwrap().push(delay);
        inner.publish(publish).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_transport_that_delays_by_itself_gets_the_delays_it_can_take() -> TestResult {
    let broker = MemoryBroker::new();
    let refused = DynTransport::new(broker.connect())
        .publish_delayed(Publish::to_queue("any", Envelope::new("x")), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");

    let asked = Arc::new(Mutex::new(Vec::new()));
    let native = Intercepted::transport(
        DynTransport::new(broker.connect()),
        NativeDelay {
            asked: Arc::clone(&asked),
        },
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = App::with_state(tx)
        .transport(native)
        .consumer(Consumer::for_queue(Queue::durable("native")).handle(due))
        .build()
        .await?;
    let producer = app.producer::<ReminderDue>(Route::queue("native"));
    let running = app.start().await?;
    // Within the broker's 15 minutes: its own mechanism.
    producer
        .send_delayed(&ReminderDue { id: 1 }, Duration::from_secs(5))
        .await?;
    assert_eq!(recv(&mut rx, "the natively delayed reminder").await?.0, 1);
    // Beyond them: the TTL levels.
    let sent = Instant::now();
    producer
        .send_delayed(&ReminderDue { id: 2 }, Duration::from_secs(3600))
        .await?;
    let (id, at, _) = tokio::time::timeout(Duration::from_secs(7200), rx.recv())
        .await?
        .ok_or("the app stopped")?;
    assert_eq!(id, 2);
    assert!(at - sent >= Duration::from_secs(3600));
    assert_eq!(*asked.lock().unwrap(), [Duration::from_secs(5)]);
    running.shutdown().await?;
    Ok(())
}

app_suite!(
    a_delayed_message_arrives_no_earlier_than_asked,
    a_short_delay_overtakes_a_long_one,
    delays_of_many_sizes_arrive_in_order_of_their_due_time,
    a_delay_reaches_an_exchange_route_with_its_routing_key,
    delays_run_from_a_millisecond_to_a_week,
    impossible_delays_are_refused,
    publish_at_waits_until_the_time,
);
