//! Pub/sub subscriptions (`Consumer::subscribe`), each scenario on the embedded broker (paused
//! clock) and on RabbitMQ: every instance gets each matching message on a server-named queue of
//! its own, dead letters go to the exchange's shared dead-letter queue, nothing is left behind
//! when the app stops, and (RabbitMQ) the queue is declared and bound again after a reconnect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mqtransport::prelude::*;
use mqtransport::{DeliveryInfo, Disposition, ErrorKind, PublishOptions, Running, Transport};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "log.line")]
struct LogLine {
    text: String,
}

type Seen = mpsc::UnboundedSender<(String, String)>;

async fn line(info: DeliveryInfo, l: LogLine, State(tx): State<Seen>) -> Result<(), HandlerError> {
    if l.text == "poison" {
        return Err(HandlerError::permanent("cannot print poison"));
    }
    let _ = tx.send((info.delivered_routing_key().to_owned(), l.text));
    Ok(())
}

/// A started app subscribed to `exchange` with `keys`, and what it receives.
async fn subscriber(
    fx: &Fx,
    exchange: &str,
    keys: &[&str],
) -> Result<(Running, mpsc::UnboundedReceiver<(String, String)>), BoxError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .topology(Topology::new().exchange(Exchange::topic(exchange)))
        .consumer(
            Consumer::subscribe(exchange, keys.iter().copied())
                .handle(line)
                .retry(RetryPolicy::none()),
        )
        .build()
        .await?;
    Ok((app.start().await?, rx))
}

async fn every_subscriber_gets_each_matching_message_and_leaves_nothing_behind(fx: Arc<Fx>) -> TestResult {
    let x = fx.exchange("logs");
    fx.adopt_queue(&format!("{x}.dlq"));
    let (a, mut a_rx) = subscriber(&fx, &x, &["orders.*"]).await?;
    let (b, mut b_rx) = subscriber(&fx, &x, &["orders.created", "#.eu"]).await?;
    let queues = [a.consumers()[0].queue.clone(), b.consumers()[0].queue.clone()];
    assert_ne!(queues[0], queues[1]);

    let conn = fx.conn().await?;
    let publisher = fx.app(App::builder()).build().await?.publisher();
    let send = |key: &'static str, text: &'static str| {
        let publisher = publisher.clone();
        let route = Route::new(x.as_str(), key);
        async move {
            publisher
                .publish_with(
                    &route,
                    &LogLine { text: text.into() },
                    PublishOptions::default().not_mandatory(),
                )
                .await
        }
    };
    send("orders.created", "to both").await?;
    send("payments.eu", "to b").await?;
    send("orders.shipped", "to a").await?;
    send("stock.us", "to nobody").await?;
    let mut at_a = vec![
        recv(&mut a_rx, "a's first").await?,
        recv(&mut a_rx, "a's second").await?,
    ];
    let mut at_b = vec![
        recv(&mut b_rx, "b's first").await?,
        recv(&mut b_rx, "b's second").await?,
    ];
    at_a.sort();
    at_b.sort();
    let pair = |k: &str, t: &str| (k.to_owned(), t.to_owned());
    assert_eq!(
        at_a,
        [pair("orders.created", "to both"), pair("orders.shipped", "to a")]
    );
    assert_eq!(at_b, [pair("orders.created", "to both"), pair("payments.eu", "to b")]);

    a.shutdown().await?;
    b.shutdown().await?;
    publisher.transport().close().await?;
    for q in &queues {
        let gone = conn.queue_info(q).await.unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::NotFound, "{q}: {gone}");
    }
    conn.close().await?;
    Ok(())
}

async fn a_subscription_dead_letters_to_the_exchange_dead_letter_queue(fx: Arc<Fx>) -> TestResult {
    let x = fx.exchange("events");
    let dlq = format!("{x}.dlq");
    fx.adopt_queue(&dlq);
    let (hook, mut settled) = settlements();
    let (tx, _rx) = mpsc::unbounded_channel();
    let app = fx
        .app(App::with_state(tx))
        .on_settle(hook)
        .topology(Topology::new().exchange(Exchange::fanout(&x)))
        .consumer(Consumer::subscribe(&x, [""; 0]).handle(line).retry(RetryPolicy::none()))
        .build()
        .await?;
    let publisher = app.publisher();
    let running = app.start().await?;
    publisher
        .send(&Route::exchange(x.as_str()), &LogLine { text: "poison".into() })
        .await?;
    match settled.next().await?.disposition {
        Disposition::DeadLettered { queue, reason } => {
            assert_eq!(queue.as_deref(), Some(dlq.as_str()));
            assert_eq!(reason, "cannot print poison");
        }
        other => panic!("{other:?}"),
    }
    running.shutdown().await?;
    let conn = fx.conn().await?;
    assert_eq!(conn.queue_info(&dlq).await?.message_count, 1);
    conn.close().await?;
    Ok(())
}

async fn a_server_named_queue_is_refused_outside_a_subscription(fx: Arc<Fx>) -> TestResult {
    let err = fx
        .app(App::with_state(mpsc::unbounded_channel().0))
        .consumer(Consumer::for_queue(Queue::server_named()).handle(line))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("use Consumer::subscribe"), "{err}");
    Ok(())
}

/// On RabbitMQ: the subscription's queue goes with the connection, and comes back (with a new
/// name and its bindings) when the connection does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_declared_and_bound_again_after_a_reconnect() {
    use mqtransport_testkit::proxy::Cut;
    let Some((direct, proxy, through)) = rabbit_through_proxy().await else {
        return;
    };
    let x = format!("mqt-sub-reconnect-{}", std::process::id());
    direct
        .declare(&Topology::new().exchange(Exchange::fanout(&x)))
        .await
        .expect("exchange");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = App::with_state(tx)
        .url(through)
        .consumer(Consumer::subscribe(&x, [""; 0]).handle(line))
        .build()
        .await
        .expect("app");
    let running = app.start().await.expect("start");
    let first_name = running.consumers()[0].queue.clone();
    let publisher = App::builder()
        .url(rabbit_url())
        .build()
        .await
        .expect("publisher")
        .publisher();
    let route = Route::exchange(x.as_str());
    let events = publisher.producer::<LogLine>(route).events();
    events.send(&LogLine { text: "before".into() }).await.expect("send");
    assert_eq!(recv(&mut rx, "before the cut").await.expect("before").1, "before");

    proxy.cut(Cut::Reset);
    // The old queue went with its connection.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while direct.queue_info(&first_name).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exclusive queue outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Until the subscription is back, events published to nobody are dropped: send until one
    // arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        events.send(&LogLine { text: "after".into() }).await.expect("send");
        if let Ok(Some((_, text))) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            assert_eq!(text, "after");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after the reconnect"
        );
    }
    running.shutdown().await.expect("shutdown");
    let _ = publisher.transport().close().await;
    let _ = direct.delete_exchange(&x, false).await;
    let _ = direct.delete_queue(&format!("{x}.dlq"), Default::default()).await;
    let _ = direct.close().await;
}

app_suite!(
    every_subscriber_gets_each_matching_message_and_leaves_nothing_behind,
    a_subscription_dead_letters_to_the_exchange_dead_letter_queue,
    a_server_named_queue_is_refused_outside_a_subscription,
);
