//! App behaviour that only the embedded broker shows deterministically: the testing support,
//! a consumer failing under a running app, `run_until`, and the spans of the trace layer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
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

/// A span's name and the `(field, value)` pairs recorded on it (with its id as `span.id`).
type Recorded = (String, Vec<(String, String)>);

/// Every span seen, in order.
#[derive(Default, Clone)]
struct Spans(Arc<Mutex<Vec<Recorded>>>);

struct Visitor<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = vec![("span.id".to_owned(), id.into_u64().to_string())];
        attrs.record(&mut Visitor(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_owned(), fields));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut spans = self.0.lock().unwrap();
        let key = id.into_u64().to_string();
        if let Some((_, fields)) = spans
            .iter_mut()
            .find(|(_, f)| f.iter().any(|(k, v)| k == "span.id" && *v == key))
        {
            values.record(&mut Visitor(fields));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_delivery_gets_a_span_with_messaging_attributes() {
    use tracing_subscriber::layer::SubscriberExt;
    async fn paid(_i: InvoicePaid) {}
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    let app = TestApp::start(App::builder().consumer(Consumer::for_queue(Queue::durable("traced")).handle(paid)))
        .await
        .unwrap();
    app.publish_envelope(
        "",
        "traced",
        Envelope::new(r#"{"id":4}"#)
            .with_kind("invoices.paid")
            .with_message_id("m-4")
            .with_correlation_id("c-4")
            .with_header(
                headers::TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
    )
    .await
    .unwrap();
    app.publish(&Route::queue("traced"), &InvoicePaid { id: 5 })
        .await
        .unwrap();
    app.wait_idle().await.unwrap();
    app.shutdown().await.unwrap();

    let spans = spans.0.lock().unwrap().clone();
    let (_, fields) = spans
        .iter()
        .find(|(name, _)| name == "process")
        .expect("a process span");
    let get = |k: &str| fields.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("otel.name"), Some("process traced"));
    assert_eq!(get("otel.kind"), Some("consumer"));
    assert_eq!(get("messaging.system"), Some("memory"));
    assert_eq!(get("messaging.operation.type"), Some("process"));
    assert_eq!(get("messaging.destination.name"), Some("traced"));
    assert_eq!(get("messaging.message.id"), Some("m-4"));
    assert_eq!(get("messaging.message.conversation_id"), Some("c-4"));
    assert_eq!(get("messaging.message.body.size"), Some("8"));
    assert_eq!(get("mqt.message.name"), Some("invoices.paid"));
    assert_eq!(get("mqt.attempt"), Some("1"));
    assert_eq!(
        get("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(get("mqt.outcome"), Some("ack"));

    // The settling, and a typed publish, have spans of their own.
    let field = |span: &str, k: &str| {
        spans
            .iter()
            .filter(|(name, _)| name == span)
            .flat_map(|(_, fields)| fields.iter().rev())
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("settle", "otel.name").as_deref(), Some("settle traced"));
    assert_eq!(field("settle", "messaging.operation.type").as_deref(), Some("settle"));
    assert_eq!(field("settle", "mqt.outcome").as_deref(), Some("acked"));
    assert_eq!(field("send", "otel.name").as_deref(), Some("send traced"));
    assert_eq!(field("send", "otel.kind").as_deref(), Some("producer"));
    assert_eq!(field("send", "messaging.operation.type").as_deref(), Some("send"));
    assert_eq!(field("send", "mqt.message.name").as_deref(), Some("invoices.paid"));
    assert_eq!(field("send", "mqt.outcome").as_deref(), Some("confirmed"));
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
