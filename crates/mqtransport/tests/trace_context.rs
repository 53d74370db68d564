//! Trace context across a publish and a consume (feature `opentelemetry`), with an in-memory
//! OpenTelemetry exporter: a message published inside a span carries its `traceparent`, and the
//! consumer's span (named `<queue> process`, as OpenTelemetry's conventions name it) is that
//! span's child (one trace), or, asked for, starts its own trace with a
//! link to it. A message from another client carrying a `traceparent` is related the same way.

#![cfg(feature = "opentelemetry")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mqtransport::prelude::*;
use mqtransport::{DynTransport, MemoryBroker, TraceParent};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "shop.checkout")]
struct Checkout {
    id: u64,
}

async fn checkout(c: Checkout, headers: Headers, State(seen): State<mpsc::UnboundedSender<(u64, Option<String>)>>) {
    let _ = seen.send((c.id, headers.get_str("traceparent").map(str::to_owned)));
}

/// The spans exported so far, once `name` has `n` of them.
async fn finished(exporter: &InMemorySpanExporter, name: &str, n: usize) -> Vec<SpanData> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans = exporter.get_finished_spans().unwrap();
        if spans.iter().filter(|s| s.name == name).count() >= n {
            return spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {n} '{name}' spans: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An app on `broker` consuming queue `q`, whose deliveries relate to their producer as `how`.
async fn consuming(
    broker: &MemoryBroker,
    q: &str,
    how: TraceParent,
) -> (
    mqtransport::Running,
    mpsc::UnboundedReceiver<(u64, Option<String>)>,
    Producer<Checkout>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = App::with_state(tx)
        .transport(DynTransport::new(broker.connect()))
        .trace_parent(how)
        .consumer(Consumer::for_queue(Queue::durable(q)).handle(checkout))
        .build()
        .await
        .unwrap();
    let producer = app.producer::<Checkout>(Route::queue(q));
    (app.start().await.unwrap(), rx, producer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_span_is_the_child_or_a_link_of_the_producer_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("mqtransport-test");
    let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let broker = MemoryBroker::new();

    // A child: one trace from the producer's span to the consumer's.
    let (running, mut seen, producer) = consuming(&broker, "child", TraceParent::Child).await;
    producer
        .send(&Checkout { id: 1 })
        .instrument(tracing::info_span!("place order"))
        .await
        .unwrap();
    let (id, traceparent) = seen.recv().await.unwrap();
    assert_eq!(id, 1);
    let traceparent = traceparent.expect("the message carries the producer's traceparent");
    let spans = finished(&exporter, "child process", 1).await;
    let producer_span = spans.iter().find(|s| s.name == "place order").unwrap();
    let process = spans.iter().find(|s| s.name == "child process").unwrap();
    let (trace, parent) = (
        producer_span.span_context.trace_id(),
        producer_span.span_context.span_id(),
    );
    assert_eq!(traceparent, format!("00-{trace}-{parent}-01"));
    assert_eq!(process.span_context.trace_id(), trace, "one trace across the broker");
    assert_eq!(
        process.parent_span_id, parent,
        "the consumer's span is the producer's child"
    );
    running.shutdown().await.unwrap();
    exporter.reset();

    // A link: the consumer's span starts its own trace and points at the producer's span.
    let (running, mut seen, producer) = consuming(&broker, "link", TraceParent::Link).await;
    producer
        .send(&Checkout { id: 2 })
        .instrument(tracing::info_span!("place order"))
        .await
        .unwrap();
    seen.recv().await.unwrap();
    let spans = finished(&exporter, "link process", 1).await;
    let producer_span = spans.iter().find(|s| s.name == "place order").unwrap();
    let process = spans.iter().find(|s| s.name == "link process").unwrap();
    assert_ne!(process.span_context.trace_id(), producer_span.span_context.trace_id());
    assert_eq!(process.parent_span_id, SpanId::INVALID);
    let linked: Vec<_> = process.links.iter().map(|l| l.span_context.span_id()).collect();
    assert_eq!(linked, vec![producer_span.span_context.span_id()]);
    running.shutdown().await.unwrap();
    exporter.reset();

    // Another client's message with a traceparent: the consumer's span joins its trace.
    let (running, mut seen, _) = consuming(&broker, "foreign", TraceParent::Child).await;
    let foreign = mqtransport::encode(&Checkout { id: 3 })
        .unwrap()
        .with_header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    broker
        .connect()
        .publish(Publish::to_queue("foreign", foreign))
        .await
        .unwrap();
    seen.recv().await.unwrap();
    let spans = finished(&exporter, "foreign process", 1).await;
    let process = spans.iter().find(|s| s.name == "foreign process").unwrap();
    assert_eq!(
        process.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(process.parent_span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
    running.shutdown().await.unwrap();

    // Outside any span nothing is invented.
    let (running, mut seen, producer) = consuming(&broker, "untraced", TraceParent::Child).await;
    producer.send(&Checkout { id: 4 }).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), (4, None));
    running.shutdown().await.unwrap();
}
