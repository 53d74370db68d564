//! Trace context across a publish and a consume (feature `opentelemetry`), with an in-memory
//! OpenTelemetry exporter. A publish is a `send <destination>` span whose context the message
//! carries as `traceparent`; the consumer's `process <queue>` span is that span's child (one
//! trace), or, asked for, starts its own trace with a link to it; the settling is a
//! `settle <queue>` child of the `process` span. A message from another client carrying a
//! `traceparent` is related the same way. The trace crosses a request and its reply, a retry
//! and a dead letter.

#![cfg(feature = "opentelemetry")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
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

/// The exporter of every span of this test binary (one global subscriber): tests tell their
/// spans apart by their queues' names.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("mqtransport-test");
        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        exporter
    })
}

/// The one finished span called `name` (waiting for it).
async fn one(name: &str) -> SpanData {
    let spans = finished(exporter(), name, 1).await;
    let mut named: Vec<_> = spans.into_iter().filter(|s| s.name == name).collect();
    assert_eq!(named.len(), 1, "{named:#?}");
    named.remove(0)
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_span_is_the_child_or_a_link_of_the_producer_span() {
    let exporter = exporter();
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
    let process = one("process child").await;
    let settle = one("settle child").await;
    let send = one("send child").await;
    let spans = finished(exporter, "place order", 1).await;
    let producer_span = spans.iter().find(|s| s.name == "place order").unwrap();
    let trace = producer_span.span_context.trace_id();
    assert_eq!(send.parent_span_id, producer_span.span_context.span_id());
    let sent = send.span_context.span_id();
    assert_eq!(
        traceparent,
        format!("00-{trace}-{sent}-01"),
        "the message carries its send span"
    );
    assert_eq!(process.span_context.trace_id(), trace, "one trace across the broker");
    assert_eq!(
        process.parent_span_id, sent,
        "the consumer's span is the send span's child"
    );
    assert_eq!(settle.parent_span_id, process.span_context.span_id());
    assert_eq!(attribute(&send, "messaging.operation.type").as_deref(), Some("send"));
    assert_eq!(attribute(&send, "messaging.destination.name").as_deref(), Some("child"));
    assert_eq!(attribute(&send, "mqt.outcome").as_deref(), Some("confirmed"));
    assert_eq!(
        attribute(&process, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attribute(&settle, "messaging.operation.type").as_deref(),
        Some("settle")
    );
    assert_eq!(attribute(&settle, "mqt.outcome").as_deref(), Some("acked"));
    running.shutdown().await.unwrap();

    // A link: the consumer's span starts its own trace and points at the producer's span.
    let (running, mut seen, producer) = consuming(&broker, "link", TraceParent::Link).await;
    producer
        .send(&Checkout { id: 2 })
        .instrument(tracing::info_span!("place order"))
        .await
        .unwrap();
    seen.recv().await.unwrap();
    let process = one("process link").await;
    let send = one("send link").await;
    assert_ne!(process.span_context.trace_id(), send.span_context.trace_id());
    assert_eq!(process.parent_span_id, SpanId::INVALID);
    let linked: Vec<_> = process.links.iter().map(|l| l.span_context.span_id()).collect();
    assert_eq!(linked, vec![send.span_context.span_id()]);
    running.shutdown().await.unwrap();

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
    let process = one("process foreign").await;
    assert_eq!(
        process.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(process.parent_span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
    running.shutdown().await.unwrap();

    // Outside any span, the send span starts the trace.
    let (running, mut seen, producer) = consuming(&broker, "untraced", TraceParent::Child).await;
    producer.send(&Checkout { id: 4 }).await.unwrap();
    let (_, traceparent) = seen.recv().await.unwrap();
    let send = one("send untraced").await;
    assert_eq!(send.parent_span_id, SpanId::INVALID);
    assert_eq!(
        traceparent.unwrap(),
        format!("00-{}-{}-01", send.span_context.trace_id(), send.span_context.span_id())
    );
    running.shutdown().await.unwrap();
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "math.square")]
struct Square {
    n: i64,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "math.squared")]
struct Squared {
    n: i64,
}

async fn square(req: Square) -> Squared {
    Squared { n: req.n * req.n }
}

/// A request and its reply: the responder's spans join the caller's trace, and the caller's
/// wait for the reply (`receive`) links to the responder's span that sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_and_its_reply_are_one_trace() {
    exporter();
    let broker = MemoryBroker::new();
    let app = App::builder()
        .transport(DynTransport::new(broker.connect()))
        .consumer(Consumer::for_queue(Queue::durable("trace.math")).handle(square))
        .build()
        .await
        .unwrap();
    let math = app.requester::<Square, Squared>(Route::queue("trace.math"));
    let running = app.start().await.unwrap();
    let squared = math
        .request(&Square { n: 7 })
        .instrument(tracing::info_span!("ask trace.math"))
        .await
        .unwrap();
    assert_eq!(squared.n, 49);

    let ask = one("ask trace.math").await;
    let request = one("send trace.math").await;
    let process = one("process trace.math").await;
    let settle = one("settle trace.math").await;
    let receive = one("receive amq.rabbitmq.reply-to").await;
    let trace = ask.span_context.trace_id();
    assert_eq!(request.parent_span_id, ask.span_context.span_id());
    assert_eq!(process.parent_span_id, request.span_context.span_id());
    assert_eq!(process.span_context.trace_id(), trace);
    assert_eq!(settle.parent_span_id, process.span_context.span_id());
    // The reply is sent in the settling: its send span is the settle span's child.
    let spans = exporter().get_finished_spans().unwrap();
    let reply = spans
        .iter()
        .find(|s| s.name == "send amq.rabbitmq.reply-to" && s.parent_span_id == settle.span_context.span_id())
        .expect("the reply's send span, a child of the settling");
    assert_eq!(reply.span_context.trace_id(), trace);
    assert_eq!(receive.parent_span_id, ask.span_context.span_id());
    let linked: Vec<_> = receive.links.iter().map(|l| l.span_context.span_id()).collect();
    assert_eq!(
        linked,
        vec![reply.span_context.span_id()],
        "the wait links to the reply"
    );
    assert_eq!(attribute(&receive, "mqt.outcome").as_deref(), Some("replied"));
    running.shutdown().await.unwrap();
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "shop.refund")]
struct Refund {
    id: u64,
}

/// Fails the first attempt of every refund, and dead-letters refund 2 at its second.
async fn refund(r: Refund, info: DeliveryInfo) -> Result<(), HandlerError> {
    match (r.id, info.attempt()) {
        (_, 1) => Err(HandlerError::transient("bank busy")),
        (2, _) => Err(HandlerError::permanent("account closed")),
        _ => Ok(()),
    }
}

/// A retry is processed in the trace of the first attempt, and a dead letter keeps the
/// context of the message it was: a replay or an inspection finds the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_dead_letters_stay_in_the_trace() {
    exporter();
    let broker = MemoryBroker::new();
    let app = App::builder()
        .transport(DynTransport::new(broker.connect()))
        .consumer(
            Consumer::for_queue(Queue::durable("trace.refunds"))
                .retry(RetryPolicy::max_attempts(2).backoff(mqtransport::Backoff::fixed(Duration::from_millis(10))))
                .handle(refund),
        )
        .build()
        .await
        .unwrap();
    let refunds = app.producer::<Refund>(Route::queue("trace.refunds"));
    let running = app.start().await.unwrap();
    refunds
        .send(&Refund { id: 1 })
        .instrument(tracing::info_span!("refund 1"))
        .await
        .unwrap();
    let spans = finished(exporter(), "process trace.refunds", 2).await;
    let first = spans
        .iter()
        .find(|s| s.name == "refund 1")
        .unwrap()
        .span_context
        .trace_id();
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "process trace.refunds")
        .map(|s| (s.span_context.trace_id(), attribute(s, "mqt.attempt")))
        .collect();
    assert_eq!(
        attempts,
        vec![(first, Some("1".to_owned())), (first, Some("2".to_owned()))],
        "both attempts in the producer's trace"
    );
    let outcomes: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "settle trace.refunds")
        .map(|s| attribute(s, "mqt.outcome"))
        .collect();
    assert_eq!(outcomes, vec![Some("retried".to_owned()), Some("acked".to_owned())]);

    refunds
        .send(&Refund { id: 2 })
        .instrument(tracing::info_span!("refund 2"))
        .await
        .unwrap();
    let spans = finished(exporter(), "refund 2", 1).await;
    let trace = spans
        .iter()
        .find(|s| s.name == "refund 2")
        .unwrap()
        .span_context
        .trace_id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        if let Some(d) = broker.connect().get("trace.refunds.dlq", true).await.unwrap() {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let traceparent = dead
        .envelope
        .header("traceparent")
        .and_then(|v| v.as_str())
        .unwrap()
        .to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{trace}-")),
        "{traceparent} is in trace {trace}"
    );
    running.shutdown().await.unwrap();
}
