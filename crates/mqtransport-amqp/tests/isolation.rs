#![allow(clippy::expect_used, clippy::unwrap_used)]
//! One broker error fails only the operation that caused it: a publish the broker refuses does
//! not fail (or duplicate) the publishes sharing its channel, and a `get` on a missing queue
//! does not return earlier `get` deliveries to their queue. Against a real RabbitMQ
//! (`MQT_TEST_AMQP_URL`); unreachable: SKIPPED, unless `MQT_REQUIRE_BROKERS=1`.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use mqtransport_amqp::AmqpTransport;
use mqtransport_core::{
    BrokerUrl, Confirmation, DeleteQueue, Envelope, Error, ErrorKind, Exchange, Publish, Queue, Topology, Transport,
};

fn broker_url() -> String {
    std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn connect() -> Option<AmqpTransport> {
    let url = BrokerUrl::parse(&broker_url()).expect("MQT_TEST_AMQP_URL parses");
    mqtransport_testkit::reachable_or_skip("RabbitMQ", &url.to_string(), AmqpTransport::connect(&url).await)
}

fn unique(base: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("mqt-iso-{base}-{}-{nanos:x}", std::process::id())
}

/// A queue the broker removes by itself 10 minutes after its last use, should the test die
/// before its cleanup.
fn guarded(name: &str) -> Queue {
    Queue::durable(name).expires(Duration::from_secs(600))
}

/// Publishes 40 messages at once to `queue`, and `bad` among them (as the 17th); returns the
/// outcome of `bad` and checks that every other one was confirmed and is in the queue.
async fn forty_with_one_bad(t: &AmqpTransport, queue: &str, bad: Publish) -> Result<Confirmation, Error> {
    let mut publishes: Vec<Publish> = (0..39)
        .map(|i| Publish::to_queue(queue, Envelope::new(format!("good-{i}"))))
        .collect();
    publishes.insert(17, bad);
    let mut outcomes = join_all(publishes.into_iter().map(|p| t.publish(p))).await;
    let bad = outcomes.remove(17);
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            Ok(Confirmation::Confirmed) => {}
            other => panic!("good-{i} was not confirmed: {other:?}"),
        }
    }
    let mut seen = HashSet::new();
    while let Some(d) = t.get(queue, true).await.expect("get") {
        seen.insert(String::from_utf8_lossy(&d.envelope.body).into_owned());
    }
    let want: HashSet<String> = (0..39).map(|i| format!("good-{i}")).collect();
    assert_eq!(seen, want, "every good message is in the queue");
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_a_missing_exchange_fails_alone() {
    let Some(t) = connect().await else { return };
    let q = unique("q");
    t.declare(&Topology::new().queue(guarded(&q))).await.expect("declare");
    let missing = unique("missing");
    for round in 0..3 {
        let bad = Publish::new(missing.as_str(), "k", Envelope::new("bad"));
        let e = forty_with_one_bad(&t, &q, bad)
            .await
            .expect_err("the bad publish fails");
        assert_eq!(e.kind(), ErrorKind::NotFound, "round {round}: {e}");
        assert_eq!(e.message(), format!("NOT_FOUND - no exchange '{missing}' in vhost '/'"));
    }
    t.delete_queue(&q, DeleteQueue::default()).await.expect("cleanup");
    t.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_with_a_malformed_expiration_fails_alone() {
    let Some(t) = connect().await else { return };
    let q = unique("q");
    t.declare(&Topology::new().queue(guarded(&q))).await.expect("declare");
    let mut envelope = Envelope::new("bad");
    envelope.properties_mut().expiration = Some("abc".into());
    let bad = Publish::to_queue(q.as_str(), envelope);
    let e = forty_with_one_bad(&t, &q, bad)
        .await
        .expect_err("the bad publish fails");
    assert_eq!(e.reply_code(), Some(406), "{e}");
    assert_eq!(
        e.message(),
        "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"
    );
    t.delete_queue(&q, DeleteQueue::default()).await.expect("cleanup");
    t.close().await.expect("close");
}

/// An exchange that existed when it was first published to is deleted by another connection:
/// the next publish to it closes the publishing channel at the broker, and only that publish
/// fails; its neighbours are sent again on a new channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_an_exchange_deleted_meanwhile_fails_alone() {
    let Some(t) = connect().await else { return };
    let Some(admin) = connect().await else { return };
    let (q, x) = (unique("q"), unique("x"));
    t.declare(&Topology::new().queue(guarded(&q))).await.expect("declare");
    admin
        .declare(&Topology::new().exchange(Exchange::fanout(&x)))
        .await
        .expect("declare");
    let first = t
        .publish(Publish::new(x.as_str(), "k", Envelope::new("routed nowhere")))
        .await
        .expect("the exchange exists");
    assert!(matches!(first, Confirmation::Returned { .. }), "{first:?}");
    admin.delete_exchange(&x, false).await.expect("delete");
    let bad = Publish::new(x.as_str(), "k", Envelope::new("bad"));
    let e = forty_with_one_bad(&t, &q, bad)
        .await
        .expect_err("the bad publish fails");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    t.delete_queue(&q, DeleteQueue::default()).await.expect("cleanup");
    t.close().await.expect("close");
    admin.close().await.expect("close");
}

/// A `get` on a missing queue fails alone: a delivery taken earlier with `get` stays with the
/// application and can be acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_on_a_missing_queue_keeps_earlier_gets() {
    let Some(t) = connect().await else { return };
    let q = unique("q");
    t.declare(&Topology::new().queue(guarded(&q))).await.expect("declare");
    t.publish(Publish::to_queue(q.as_str(), Envelope::new("held")))
        .await
        .expect("publish");
    let held = t.get(&q, false).await.expect("get").expect("a message");
    let e = t.get(&unique("missing"), false).await.expect_err("no such queue");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    held.ack()
        .await
        .expect("the earlier delivery is still ours to acknowledge");
    assert_eq!(t.queue_info(&q).await.expect("info").message_count, 0);
    t.delete_queue(&q, DeleteQueue::default()).await.expect("cleanup");
    t.close().await.expect("close");
}
