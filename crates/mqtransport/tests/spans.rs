//! The spans of a delivery (`process`, `settle`) and of a typed publish (`send`), with their
//! OpenTelemetry messaging attributes, seen by a subscriber set for this test's thread. It is
//! the only test of its binary: tracing caches each callsite's interest process-wide, and a
//! test on another thread registering a callsite while this one sets its subscriber could leave
//! a span disabled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use mqtransport::headers;
use mqtransport::prelude::*;
use mqtransport::testing::TestApp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "invoices.paid")]
struct InvoicePaid {
    id: u64,
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
    // A request whose caller's deadline has passed is skipped, and its settle span says so.
    app.publish_envelope(
        "",
        "traced",
        Envelope::new(r#"{"id":6}"#)
            .with_kind("invoices.paid")
            .with_message_id("m-expired")
            .with_header(headers::DEADLINE, 1_i64),
    )
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
    let expired = spans
        .iter()
        .filter(|(name, _)| name == "settle")
        .find(|(_, fields)| {
            fields
                .iter()
                .any(|(k, v)| k == "messaging.message.id" && v == "m-expired")
        })
        .expect("the skipped request's settle span");
    assert!(
        expired.1.iter().any(|(k, v)| k == "mqt.outcome" && v == "expired"),
        "{expired:?}"
    );
    assert_eq!(field("send", "otel.name").as_deref(), Some("send traced"));
    assert_eq!(field("send", "otel.kind").as_deref(), Some("producer"));
    assert_eq!(field("send", "messaging.operation.type").as_deref(), Some("send"));
    assert_eq!(field("send", "mqt.message.name").as_deref(), Some("invoices.paid"));
    assert_eq!(field("send", "mqt.outcome").as_deref(), Some("confirmed"));
}
