//! A running app end to end, on the embedded broker (paused clock) and on RabbitMQ: handlers
//! in flight and their limit, graceful shutdown, and producers.

// Scenarios are test code run through a macro, not `#[test]` functions: a failed expectation
// panics, as in any test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::orders::*;
use common::*;
use mqtransport::prelude::*;
use mqtransport::{Disposition, ErrorKind};
use tokio::sync::{Semaphore, mpsc};

app_suite!(
    concurrency_limits_handlers_in_flight,
    shutdown_drains_in_flight_handlers,
    shutdown_deadline_requeues_unfinished_work,
    producers_confirm_return_and_pipeline,
    blocking_producer_publishes_from_a_thread,
);

#[derive(Clone)]
struct Gate {
    permits: Arc<Semaphore>,
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    started: Tx<u64>,
}

async fn concurrency_limits_handlers_in_flight(fx: Arc<Fx>) -> TestResult {
    async fn created(order: OrderCreated, State(g): State<Gate>) {
        let now = g.now.fetch_add(1, Ordering::SeqCst) + 1;
        g.max.fetch_max(now, Ordering::SeqCst);
        let _ = g.started.send(order.id);
        if let Ok(p) = g.permits.acquire().await {
            p.forget();
        }
        g.now.fetch_sub(1, Ordering::SeqCst);
    }
    let q = fx.queue("limited");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gate = Gate {
        permits: Arc::new(Semaphore::new(0)),
        now: Arc::default(),
        max: Arc::default(),
        started: tx,
    };
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::with_state(gate.clone()))
        .on_settle(hook)
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created).concurrency(2))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    for id in 1..=6 {
        orders.send(&order(id)).await?;
    }
    // Two run at once...
    recv(&mut rx, "the first handler").await?;
    recv(&mut rx, "the second handler").await?;
    // ...and no third starts while they are blocked.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "a third handler started past the limit");
    gate.permits.add_permits(6);
    settled.take(6).await?;
    assert_eq!(gate.max.load(Ordering::SeqCst), 2);
    running.shutdown().await?;
    Ok(())
}

async fn shutdown_drains_in_flight_handlers(fx: Arc<Fx>) -> TestResult {
    #[derive(Clone)]
    struct Hold {
        started: Tx<()>,
        release: Arc<Semaphore>,
    }
    async fn created(_o: OrderCreated, State(h): State<Hold>) {
        let _ = h.started.send(());
        if let Ok(p) = h.release.acquire().await {
            p.forget();
        }
    }
    let q = fx.queue("drain");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::with_state(Hold {
            started: tx,
            release: Arc::clone(&release),
        }))
        .on_settle(hook)
        .shutdown_timeout(Duration::from_secs(60))
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(11)).await?;
    recv(&mut rx, "the handler to start").await?;
    let mut shutdown = tokio::spawn(running.shutdown());
    // Shutdown waits for the handler...
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut shutdown)
            .await
            .is_err(),
        "shutdown did not wait for the in-flight handler"
    );
    // ...which finishes, and its delivery is acked.
    release.add_permits(1);
    shutdown.await??;
    assert_eq!(settled.next().await?.disposition, Disposition::Acked);
    let conn = fx.conn().await?;
    assert_eq!(conn.queue_info(&q).await?.message_count, 0);
    conn.close().await?;
    Ok(())
}

async fn shutdown_deadline_requeues_unfinished_work(fx: Arc<Fx>) -> TestResult {
    async fn created(_o: OrderCreated, State(tx): State<Tx<()>>) {
        let _ = tx.send(());
        std::future::pending::<()>().await;
    }
    let q = fx.queue("deadline");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .shutdown_timeout(Duration::from_millis(200))
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(created))
        .build()
        .await?;
    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let running = app.start().await?;
    orders.send(&order(12)).await?;
    recv(&mut rx, "the handler to start").await?;
    let started = tokio::time::Instant::now();
    running.shutdown().await?;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    // The cancelled handler's message is back in the queue, not lost.
    let conn = fx.conn().await?;
    let back = get(&conn, &q).await?;
    assert_eq!(mqtransport::decode::<OrderCreated>(&back)?, order(12));
    conn.close().await?;
    Ok(())
}

async fn producers_confirm_return_and_pipeline(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("many");
    let nowhere = fx.exchange("nowhere");
    let app = fx
        .app(App::builder())
        .topology(
            Topology::new()
                .exchange(Exchange::direct(&nowhere))
                .queue(Queue::durable(&q)),
        )
        .build()
        .await?;
    let returned = app.producer::<OrderCreated>(Route::new(nowhere.as_str(), "no.binding"));
    assert!(matches!(
        returned.publish(&order(1)).await?,
        Confirmation::Returned { reply_code: 312, .. }
    ));
    let e = returned.send(&order(1)).await.expect_err("unroutable");
    assert_eq!(e.kind(), ErrorKind::Unroutable);
    assert!(
        e.message().contains("'orders.created'") && e.message().contains(&nowhere),
        "{e}"
    );

    let orders = app.producer::<OrderCreated>(Route::queue(q.as_str()));
    let mut batch: Vec<OrderCreated> = (1..=50).map(order).collect();
    batch[20].id = 0; // invalid: refused before publishing (debug builds validate)
    let results = orders.publish_many(&batch).await;
    assert_eq!(results.len(), 50);
    for (i, r) in results.iter().enumerate() {
        if i == 20 {
            let e = r.as_ref().expect_err("the invalid message is refused");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.message().contains("id: "), "{e}");
        } else {
            assert_eq!(r.as_ref().ok(), Some(&Confirmation::Confirmed), "message {i}: {r:?}");
        }
    }
    let conn = fx.conn().await?;
    assert_eq!(conn.queue_info(&q).await?.message_count, 49);
    // Turned off, validation lets it through (a consumer would dead-letter it).
    orders.clone().validate(false).send(&batch[20]).await?;
    assert_eq!(conn.queue_info(&q).await?.message_count, 50);
    conn.close().await?;
    app.transport().close().await?;
    Ok(())
}

async fn blocking_producer_publishes_from_a_thread(fx: Arc<Fx>) -> TestResult {
    // A real thread takes part: virtual time must not run ahead while it works.
    if fx.is_memory() {
        tokio::time::resume();
    }
    let q = fx.queue("blocking");
    let app = fx
        .app(App::builder())
        .topology(Topology::new().queue(Queue::durable(&q)))
        .build()
        .await?;
    let blocking = app.producer::<OrderCreated>(Route::queue(q.as_str())).blocking()?;
    let mut expected = 2;
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
        // Inside a current-thread runtime it is refused, not a deadlock.
        let e = blocking.send(&order(1)).expect_err("refused inside the runtime");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    } else {
        // On a multi-thread runtime: from a task (blocking in place) and from spawn_blocking.
        blocking.send(&order(1))?;
        let b = blocking.clone();
        tokio::task::spawn_blocking(move || b.send(&order(4))).await??;
        expected += 2;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send((blocking.send(&order(2)), blocking.publish(&order(3))));
    });
    let (sent, published) = rx.await?;
    sent?;
    assert_eq!(published?, Confirmation::Confirmed);
    let conn = fx.conn().await?;
    assert_eq!(conn.queue_info(&q).await?.message_count, expected);
    conn.close().await?;
    app.transport().close().await?;
    Ok(())
}
