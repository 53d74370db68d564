//! What only the SQS transport has to show: exchanges emulated across processes (a binding made
//! by one connection reaches another's publishes within the refresh window), the size limit
//! checked before sending, and a consumer dropped while long-polling giving its messages back at
//! once. Against `MQT_TEST_SQS_URL` (default moto on 127.0.0.1:4566).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use mqtransport_core::{
    Binding, Confirmation, ConsumeOptions, DeleteQueue, Envelope, ErrorKind, Exchange, Publish, Queue, Topology,
    Transport,
};
use mqtransport_sqs::SqsTransport;

const DEADLINE: Duration = Duration::from_secs(30);

fn sqs_url(options: &str) -> String {
    let url = std::env::var("MQT_TEST_SQS_URL")
        .unwrap_or_else(|_| "sqs://test:test@us-east-1/?endpoint=http://127.0.0.1:4566".into());
    format!("{url}{}{options}", if url.contains('?') { "&" } else { "?" })
}

async fn connect(options: &str) -> Option<SqsTransport> {
    let url = sqs_url(options);
    mqtransport_testkit::reachable_or_skip("SQS", &url, SqsTransport::connect(&url).await)
}

fn unique(base: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("mqt-sqs-t-{base}-{:x}{nanos:x}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_made_elsewhere_reaches_a_publisher_within_the_refresh_window() {
    let Some(a) = connect("binding_refresh=500ms&wait=1s").await else {
        return;
    };
    let Some(b) = connect("binding_refresh=500ms&wait=1s").await else {
        return;
    };
    let x = unique("events");
    let (q1, q2) = (unique("q1"), unique("q2"));
    a.declare(
        &Topology::new()
            .exchange(Exchange::topic(&x))
            .queue(Queue::durable(&q1))
            .queue(Queue::durable(&q2))
            .bind(Binding::queue(&q1, &x, "a.*")),
    )
    .await
    .unwrap();
    // B has read nothing yet: it reads the exchange's bindings on its first publish.
    let sent = b
        .publish(Publish::new(x.as_str(), "a.b", Envelope::new("first")))
        .await
        .unwrap();
    assert_eq!(sent, Confirmation::Confirmed);
    assert!(matches!(
        b.publish(Publish::new(x.as_str(), "c.d", Envelope::new("lost")))
            .await
            .unwrap(),
        Confirmation::Returned { reply_code: 312, .. }
    ));
    // A binds q2; B sees it once its copy is older than the refresh window.
    a.declare(&Topology::new().bind(Binding::queue(&q2, &x, "c.*")))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    loop {
        let c = b
            .publish(Publish::new(x.as_str(), "c.d", Envelope::new("second")))
            .await
            .unwrap();
        if c == Confirmation::Confirmed {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the new binding was never seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "seen after {:?}",
        start.elapsed()
    );
    let got = a
        .get(&q2, true)
        .await
        .unwrap()
        .expect("the message routed by the new binding");
    assert_eq!(got.envelope.body.as_ref(), b"second");
    assert_eq!((got.exchange.as_str(), got.routing_key.as_str()), (x.as_str(), "c.d"));
    let got = a
        .get(&q1, true)
        .await
        .unwrap()
        .expect("the message routed by the first binding");
    assert_eq!(got.envelope.body.as_ref(), b"first");
    // An unbind made elsewhere is seen the same way.
    a.unbind(&Binding::queue(&q2, &x, "c.*")).await.unwrap();
    let start = tokio::time::Instant::now();
    while b
        .publish(Publish::new(x.as_str(), "c.d", Envelope::new("late")))
        .await
        .unwrap()
        == Confirmation::Confirmed
    {
        assert!(start.elapsed() < DEADLINE, "the unbind was never seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for q in [&q1, &q2] {
        a.delete_queue(q, DeleteQueue::default()).await.unwrap();
    }
    a.delete_exchange(&x, false).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_before_sending_naming_the_limit() {
    let Some(t) = connect("").await else { return };
    let q = unique("big");
    t.declare(&Topology::new().queue(Queue::durable(&q))).await.unwrap();
    let e = t
        .publish(Publish::to_queue(q.as_str(), Envelope::new(vec![b'x'; 256 * 1024])))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("262144"), "{e}");
    assert!(e.message().contains(&q), "names where it was going: {e}");
    // Binary bodies go as base64, which SQS counts: 200 KiB of binary is too much, 200 KiB of
    // text is not.
    let binary = t
        .publish(Publish::to_queue(q.as_str(), Envelope::new(vec![0u8; 200 * 1024])))
        .await
        .unwrap_err();
    assert_eq!(binary.kind(), ErrorKind::InvalidInput);
    t.publish(Publish::to_queue(q.as_str(), Envelope::new(vec![b'y'; 200 * 1024])))
        .await
        .unwrap();
    assert_eq!(
        t.queue_info(&q).await.unwrap().message_count,
        1,
        "only the one that fits was sent"
    );
    assert_eq!(t.purge(&q).await.unwrap(), 1);
    t.delete_queue(&q, DeleteQueue::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_dropped_mid_poll_gives_its_messages_back_at_once() {
    // A long poll of 5 s: the consumer is dropped while its receive waits; the message that
    // arrives during that receive must not stay invisible for the 30 s visibility timeout.
    let Some(t) = connect("wait=5s").await else { return };
    let q = unique("mid-poll");
    t.declare(&Topology::new().queue(Queue::durable(&q))).await.unwrap();
    let mut consumer = t.consume(&q, ConsumeOptions::default().prefetch(10)).await.unwrap();
    let poll = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(poll.is_err(), "nothing to deliver yet");
    drop(consumer);
    t.publish(Publish::to_queue(q.as_str(), Envelope::new("during the poll")))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let got = loop {
        if let Some(d) = t.get(&q, true).await.unwrap() {
            break d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the message stayed invisible"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.envelope.body.as_ref(), b"during the poll");
    t.delete_queue(&q, DeleteQueue::default()).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_connection_error_without_the_secret() {
    let e = SqsTransport::connect("sqs://AKID:hunter2@us-east-1/?endpoint=http://127.0.0.1:1")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.message().contains("Connection refused"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

/// A delay longer than SQS's 15 minutes travels in hops: the message carries when it is due
/// (`x-mqt-deliver-at`), and one received early is sent again with the rest of its delay. Shown
/// here with a message due in 2 s that SQS hands out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_received_before_it_is_due_is_sent_on_until_it_is() {
    let Some(t) = connect("wait=1s").await else { return };
    let q = unique("hops");
    t.declare(&Topology::new().queue(Queue::durable(&q))).await.unwrap();
    let due = std::time::SystemTime::now() + Duration::from_secs(2);
    let due_ms = due.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let early = Envelope::new("not yet").with_header("x-mqt-deliver-at", due_ms);
    t.publish(Publish::to_queue(q.as_str(), early)).await.unwrap();
    let mut consumer = t.consume(&q, ConsumeOptions::default().prefetch(10)).await.unwrap();
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("delivered once due")
        .unwrap()
        .unwrap();
    assert!(std::time::SystemTime::now() >= due, "delivered before it was due");
    assert_eq!(d.envelope.body.as_ref(), b"not yet");
    assert!(
        d.envelope.header("x-mqt-deliver-at").is_none(),
        "the due time is the transport's own"
    );
    assert!(!d.redelivered, "the hop is a new message, not a redelivery");
    d.ack().await.unwrap();
    drop(consumer);
    t.delete_queue(&q, DeleteQueue::default()).await.unwrap();
}
