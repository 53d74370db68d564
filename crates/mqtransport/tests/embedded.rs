//! App behaviour that only the embedded broker shows deterministically: the testing support,
//! a consumer failing under a running app, `run_until`. (The spans are in `tests/spans.rs`,
//! alone in their binary: a subscriber set for one thread races with other tests' threads.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mqtransport::prelude::*;
use mqtransport::testing::{Disposition, TestApp};
use mqtransport::{Backoff, DynTransport, ErrorKind, MemoryBroker, headers};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message, garde::Validate)]
#[message(name = "invoices.issued")]
struct InvoiceIssued {
    #[garde(range(min = 1))]
    id: u64,
    #[garde(range(min = 1))]
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "invoices.paid")]
struct InvoicePaid {
    id: u64,
}

async fn issued(invoice: InvoiceIssued, publisher: Publisher) -> Result<(), HandlerError> {
    if invoice.cents > 1_000_000 {
        return Err(HandlerError::permanent("amount needs a manual review"));
    }
    if invoice.cents == 13 {
        return Err(HandlerError::transient("ledger unavailable"));
    }
    publisher
        .send(&Route::queue("ledger"), &InvoicePaid { id: invoice.id })
        .await
        .map_err(HandlerError::transient)
}

fn app() -> mqtransport::AppBuilder {
    App::builder()
        .topology(Topology::new().queue(Queue::durable("ledger")))
        .consumer(
            Consumer::for_queue(Queue::durable("invoices"))
                .handle(issued)
                .retry(RetryPolicy::max_attempts(2).backoff(Backoff::fixed(Duration::from_secs(30)))),
        )
}

#[tokio::test(start_paused = true)]
async fn test_app_records_acks_publishes_retries_and_dead_letters() {
    let app = TestApp::start(app()).await.unwrap();
    let to = Route::queue("invoices");
    app.publish(&to, &InvoiceIssued { id: 1, cents: 500 }).await.unwrap();
    app.publish(
        &to,
        &InvoiceIssued {
            id: 2,
            cents: 2_000_000,
        },
    )
    .await
    .unwrap();
    app.publish(&to, &InvoiceIssued { id: 3, cents: 13 }).await.unwrap();
    // Invalid: the test's input is not validated, the consumer does validate.
    app.publish(&to, &InvoiceIssued { id: 0, cents: 5 }).await.unwrap();
    app.publish_envelope("", "invoices", Envelope::new("{oops").with_kind("invoices.issued"))
        .await
        .unwrap();
    // The 30 s retry delay passes on the paused clock while waiting.
    app.wait_idle().await.unwrap();

    let acked = app.acked();
    assert_eq!(acked.len(), 1);
    assert_eq!(acked[0].decode::<InvoiceIssued>().unwrap().id, 1);

    let published = app.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].routing_key, "ledger");
    assert_eq!(published[0].name(), Some("invoices.paid"));
    assert_eq!(published[0].decode::<InvoicePaid>().unwrap(), InvoicePaid { id: 1 });
    assert_eq!(published[0].confirmation, Some(Confirmation::Confirmed));

    let retried = app.retried();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].reason(), Some("ledger unavailable"));

    let mut reasons: Vec<String> = app
        .dead_lettered()
        .iter()
        .map(|s| s.reason().unwrap().to_owned())
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert_eq!(reasons[0], "amount needs a manual review");
    assert_eq!(reasons[1], "gave up after 2 attempt(s): ledger unavailable");
    assert!(
        reasons[2].starts_with("message 'invoices.issued' is invalid: id: lower than 1"),
        "{}",
        reasons[2]
    );
    assert!(
        reasons[3].starts_with("message 'invoices.issued' is malformed"),
        "{}",
        reasons[3]
    );

    let dead = app.drain("invoices.dlq").await.unwrap();
    assert_eq!(dead.len(), 4);
    assert!(dead.iter().all(|e| e.header(headers::ERROR).is_some()));
    assert_eq!(app.drain("ledger").await.unwrap().len(), 1);
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn wait_idle_reports_a_stuck_app() {
    async fn stuck(_i: InvoicePaid) {
        std::future::pending::<()>().await;
    }
    let app = TestApp::start(App::builder().consumer(Consumer::for_queue(Queue::durable("paid")).handle(stuck)))
        .await
        .unwrap();
    app.publish(&Route::queue("paid"), &InvoicePaid { id: 1 })
        .await
        .unwrap();
    let e = app.wait_idle().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.message().contains("1 handler(s) running"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_consumer_stops_the_app_with_its_error() {
    async fn paid(_i: InvoicePaid) {}
    let broker = MemoryBroker::new();
    let app = App::builder()
        .transport(DynTransport::new(broker.connect()))
        .consumer(Consumer::for_queue(Queue::durable("doomed")).handle(paid))
        .build()
        .await
        .unwrap();
    let run = tokio::spawn(app.run_until(std::future::pending()));
    // Wait until it consumes, then pull the queue out from under it.
    while broker.queue_stats("doomed").unwrap().consumers == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    broker
        .connect()
        .delete_queue("doomed", Default::default())
        .await
        .unwrap();
    let e = run.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("queue 'doomed'"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn run_until_shuts_down_when_the_signal_fires() {
    async fn paid(_i: InvoicePaid) {}
    let broker = MemoryBroker::new();
    let conn = broker.connect();
    let app = App::builder()
        .transport(DynTransport::new(broker.connect()))
        .consumer(Consumer::for_queue(Queue::durable("paid")).handle(paid))
        .build()
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    while broker.queue_stats("paid").unwrap().consumers == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    // The consumer is gone and the app's connection closed.
    assert_eq!(broker.queue_stats("paid").unwrap().consumers, 0);
    assert_eq!(conn.queue_info("paid").await.unwrap().consumer_count, 0);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_of_a_locked_queue_fails_the_start() {
    async fn paid(_i: InvoicePaid) {}
    let broker = MemoryBroker::new();
    let other = broker.connect();
    other
        .declare(&Topology::new().queue(Queue::durable("locked")))
        .await
        .unwrap();
    let _exclusive = other
        .consume("locked", ConsumeOptions::default().exclusive())
        .await
        .unwrap();
    let app = App::builder()
        .transport(DynTransport::new(broker.connect()))
        .consumer(Consumer::new("locked").handle(paid))
        .build()
        .await
        .unwrap();
    let e = app.start().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AccessRefused);
    assert!(e.message().contains("cannot consume queue 'locked'"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn settlements_record_the_dead_letter_queue() {
    async fn paid(_i: InvoicePaid) -> Outcome {
        Outcome::dead_letter("not today")
    }
    let app = TestApp::start(
        App::builder().consumer(
            Consumer::for_queue(Queue::durable("custom"))
                .handle(paid)
                .dead_letter_queue("custom.parking"),
        ),
    )
    .await
    .unwrap();
    app.publish(&Route::queue("custom"), &InvoicePaid { id: 9 })
        .await
        .unwrap();
    app.wait_idle().await.unwrap();
    assert_eq!(
        app.dead_lettered()[0].disposition,
        Disposition::DeadLettered {
            queue: Some("custom.parking".into()),
            reason: "not today".into()
        }
    );
    assert_eq!(app.drain("custom.parking").await.unwrap().len(), 1);
    assert!(app.broker().queue_stats("custom.dlq").is_none());
    app.shutdown().await.unwrap();
}
