#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Broker restarts, cluster failover and consumer timeouts, on private RabbitMQ nodes that each
//! test starts and kills itself (own node names, ports, data directories and cookies; see
//! `mqtransport_testkit::rabbit_node`). The shared service is never touched.
//!
//! The tests run one at a time (a cluster is three Erlang nodes on a two-core machine).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mqtransport_amqp::{AmqpOptions, AmqpTransport, ConnectionStates, LinkState};
use mqtransport_core::{BrokerUrl, Confirmation, ConsumeOptions, Envelope, Publish, Queue, Topology, Transport};
use mqtransport_testkit::rabbit_node::{RabbitCluster, RabbitNode, rabbitmq_bin_or_skip};

/// One private-node test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DEADLINE: Duration = Duration::from_secs(90);

fn options() -> AmqpOptions {
    AmqpOptions {
        confirm_timeout: DEADLINE,
        reconnect_wait: DEADLINE,
        heartbeat: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(5),
        ..AmqpOptions::default()
    }
}

async fn connect(url: &str) -> AmqpTransport {
    AmqpTransport::connect_with(&BrokerUrl::parse(url).expect("URL parses"), options())
        .await
        .expect("connects to the private node")
}

/// What a consumer has seen: body → times delivered.
type Seen = Arc<Mutex<HashMap<String, usize>>>;

/// Consumes `queue` with `prefetch` on a task, acking everything, counting bodies in `seen`.
async fn count_deliveries(t: &AmqpTransport, queue: &str, prefetch: u16, seen: &Seen) -> tokio::task::JoinHandle<()> {
    let mut consumer = t
        .consume(queue, ConsumeOptions::default().prefetch(prefetch))
        .await
        .expect("consume");
    let seen = Arc::clone(seen);
    tokio::spawn(async move {
        while let Some(d) = consumer.next().await {
            let d = d.expect("the consumer's stream carries deliveries, not errors");
            let body = String::from_utf8_lossy(&d.envelope.body).into_owned();
            *seen.lock().unwrap().entry(body).or_default() += 1;
            // An ack on a channel lost meanwhile fails; the message comes back redelivered.
            let _ = d.ack().await;
        }
    })
}

/// Publishes at least `n` persistent messages to `queue`, at most `window` unconfirmed at once,
/// starting `at_third` once a third of them are confirmed and going on publishing until it has
/// finished, so that the stream spans the whole fault. Returns the number published and the
/// bodies confirmed.
async fn publish_through<F, Fut>(
    t: &AmqpTransport,
    queue: &str,
    n: usize,
    window: usize,
    at_third: F,
) -> (usize, HashSet<String>)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut at_third = Some(at_third);
    let mut fault: Option<tokio::task::JoinHandle<()>> = None;
    let mut confirmed = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut next = 0;
    let fault_on = |fault: &Option<tokio::task::JoinHandle<()>>| fault.as_ref().is_some_and(|f| !f.is_finished());
    while next < n || !in_flight.is_empty() || fault_on(&fault) {
        while (next < n || fault_on(&fault)) && in_flight.len() < window {
            let body = format!("m{next}");
            let t = t.clone();
            let q = queue.to_owned();
            in_flight.push(async move {
                let r = t
                    .publish(Publish::to_queue(&q, Envelope::new(body.clone()).persistent()))
                    .await;
                (body, r)
            });
            next += 1;
        }
        let Some((body, r)) = in_flight.next().await else { break };
        match r {
            Ok(Confirmation::Confirmed) => {
                confirmed.insert(body);
            }
            // A publish whose outcome is unknown may or may not be there: not counted either way.
            Err(e) if e.is_outcome_unknown() => {}
            other => panic!("publish of {body}: {other:?}"),
        }
        if confirmed.len() >= n / 3
            && let Some(f) = at_third.take()
        {
            fault = Some(tokio::spawn(f()));
        }
    }
    if let Some(f) = fault {
        f.await.expect("the fault ran");
    }
    (next, confirmed)
}

/// Waits until every confirmed body was seen; returns the duplicates. When some never are,
/// fails with what the node holds of `queue` and this transport's connection states, which
/// tell a message lost from a consumer that stopped taking them.
async fn all_seen(
    confirmed: &HashSet<String>,
    seen: &Seen,
    node: &RabbitNode,
    queue: &str,
    t: &AmqpTransport,
) -> usize {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            confirmed.iter().filter(|b| !seen.contains_key(*b)).count()
        };
        if missing == 0 {
            break;
        }
        if Instant::now() >= deadline {
            let on_node = node
                .ctl(&[
                    "list_queues",
                    "name",
                    "messages_ready",
                    "messages_unacknowledged",
                    "consumers",
                ])
                .await
                .unwrap_or_else(|e| format!("(list_queues failed: {e})"));
            let held = on_node
                .lines()
                .find(|l| l.starts_with(queue))
                .unwrap_or("(the queue is not listed)");
            panic!(
                "{missing} confirmed messages were never consumed; on the node (name, ready, unacked, consumers): {held}; connections: {:?}",
                t.connection_states()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.lock().unwrap().values().map(|n| n - 1).sum()
}

/// The prefetch of each consumer of `queue`, as the node reports it.
async fn prefetch_on_node(node: &RabbitNode, queue: &str) -> Vec<String> {
    let out = node
        .ctl(&["list_consumers", "queue_name", "prefetch_count"])
        .await
        .expect("list_consumers");
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(q, _)| *q == queue)
        .map(|(_, p)| p.trim().to_owned())
        .collect()
}

/// How a node goes down before it is started again.
#[derive(Debug, Clone, Copy)]
enum Down {
    /// SIGKILL: connections vanish, as in a crash.
    Killed,
    /// `rabbitmqctl stop`: the broker closes every connection (`320 CONNECTION_FORCED`) first.
    Stopped,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_stream_loses_no_confirmed_message() {
    restart_mid_stream(Down::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_and_restarted_mid_stream_loses_no_confirmed_message() {
    restart_mid_stream(Down::Stopped).await;
}

/// A private node goes down mid-stream and is started again on the same data: every confirmed
/// persistent message on the durable queue is consumed, duplicates stay within what was in
/// flight, and the consumer comes back with its prefetch.
async fn restart_mid_stream(down: Down) {
    let Some(bin) = rabbitmq_bin_or_skip() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let mut node = RabbitNode::start(&bin, "restart", "").await.expect("node starts");
    let t = connect(&node.url()).await;
    let q = "mqt-restart-orders";
    t.declare(&Topology::new().queue(Queue::durable(q)))
        .await
        .expect("declare");
    let seen = Seen::default();
    let consuming = count_deliveries(&t, q, 20, &seen).await;

    const N: usize = 3000;
    const WINDOW: usize = 50;
    let started = Instant::now();
    // The node is moved into the fault and handed back through the channel.
    let (back, mut returned) = tokio::sync::oneshot::channel();
    let (published, confirmed) = publish_through(&t, q, N, WINDOW, move || async move {
        match down {
            Down::Killed => node.kill().await.expect("the node dies"),
            Down::Stopped => node.stop().await.expect("the node stops"),
        }
        node.restart().await.expect("the node starts again");
        let _ = back.send(node);
    })
    .await;
    // The fault has run its course (publishing waited for it): the node is back.
    let node = returned.try_recv().expect("the node is back");
    let duplicates = all_seen(&confirmed, &seen, &node, q, &t).await;
    println!(
        "restart ({down:?}): {} of {published} confirmed, 0 lost, {duplicates} duplicates, done in {:?}",
        confirmed.len(),
        started.elapsed()
    );
    assert!(
        confirmed.len() >= published - WINDOW,
        "only {} of {published} confirmed",
        confirmed.len()
    );
    assert!(
        duplicates <= WINDOW + 20,
        "{duplicates} duplicates: more than the publish window and the prefetch"
    );
    wait_until("both connections are up again", || {
        matches!(t.connection_states(), ConnectionStates { consume: LinkState::Up(c), publish: LinkState::Up(p) } if c >= 2 && p >= 2)
    })
    .await;
    assert_eq!(
        prefetch_on_node(&node, q).await,
        ["20"],
        "the consumer is back with its prefetch"
    );
    consuming.abort();
    t.close().await.expect("close");
}

/// RabbitMQ closes the channel of a consumer that holds a delivery past `consumer_timeout`; the
/// consumer is subscribed again (not ended as if its queue were deleted) and the delivery
/// comes back, redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_timed_out_by_the_broker_is_subscribed_again() {
    let Some(bin) = rabbitmq_bin_or_skip() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let node = RabbitNode::start(&bin, "timeout", "consumer_timeout = 1000")
        .await
        .expect("node starts");
    let t = connect(&node.url()).await;
    let q = "mqt-timeout-jobs";
    t.declare(&Topology::new().queue(Queue::durable(q)))
        .await
        .expect("declare");
    t.publish(Publish::to_queue(q, Envelope::new("slow job")))
        .await
        .expect("publish");
    let mut consumer = t
        .consume(q, ConsumeOptions::default().prefetch(1))
        .await
        .expect("consume");
    let next = async |c: &mut mqtransport_core::Subscription| {
        tokio::time::timeout(DEADLINE, c.next())
            .await
            .expect("a delivery in time")
            .expect("the stream goes on")
            .expect("a delivery, not an error")
    };
    let held = next(&mut consumer).await;
    assert!(!held.redelivered);
    let started = Instant::now();
    let again = next(&mut consumer).await;
    println!("consumer timeout: redelivered after {:?}", started.elapsed());
    assert_eq!(&again.envelope.body[..], b"slow job");
    assert!(again.redelivered, "the broker took the delivery back");
    again.ack().await.expect("the new subscription acks");
    assert!(held.ack().await.is_err(), "the old channel is closed");
    drop(consumer);
    t.close().await.expect("close");
}

/// Waits until `cond` holds, failing after the deadline with `what`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A classic queue lives on one node. When that node dies, RabbitMQ cancels its consumers and
/// refuses the queue with `404 … is down or inaccessible`: the transport reconnects to the
/// other node without failing its restore over that queue, and the consumer waits for the
/// queue instead of ending as if it had been deleted, then resumes when the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_waits_for_a_queue_whose_node_is_down() {
    let Some(bin) = rabbitmq_bin_or_skip() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = RabbitCluster::start(&bin, 2, "").await.expect("a two-node cluster");
    let url = format!("amqp://guest:guest@{}/%2f", cluster.addresses());
    let t = connect(&url).await;
    assert_eq!(
        t.connection_addresses().consume,
        Some(cluster.nodes[0].address()),
        "connected to the first node, where the queue will live"
    );
    let q = "mqt-classic-on-one-node";
    t.declare(&Topology::new().queue(Queue::durable(q)))
        .await
        .expect("declare");
    let mut consumer = t
        .consume(q, ConsumeOptions::default().prefetch(5))
        .await
        .expect("consume");

    cluster.nodes[0].kill().await.expect("the queue's node dies");
    let survivor = cluster.nodes[1].address();
    wait_until("both connections are up on the surviving node", || {
        let at = t.connection_addresses();
        at.consume.as_ref() == Some(&survivor) && at.publish.as_ref() == Some(&survivor)
    })
    .await;
    assert!(
        matches!(t.state(), LinkState::Up(g) if g >= 2),
        "{:?}",
        t.connection_states()
    );

    cluster.nodes[0].restart().await.expect("the node comes back");
    t.publish(Publish::to_queue(q, Envelope::new("after the node came back")))
        .await
        .expect("publish");
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("the consumer's stream did not end")
        .expect("a delivery, not an error");
    assert_eq!(&d.envelope.body[..], b"after the node came back");
    d.ack().await.expect("ack");
    drop(consumer);
    t.close().await.expect("close");
}
