#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Recovery against a real RabbitMQ, with faults injected by the testkit's TCP proxy (or, for a
//! server-side close, by `rabbitmqctl` on this test's own connection). Every test uses unique
//! names and deletes what it created; the shared broker itself is never touched.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mqtransport_amqp::{AmqpOptions, AmqpTransport, LinkState};
use mqtransport_core::{
    Binding, BrokerUrl, Confirmation, ConsumeOptions, DeleteQueue, Envelope, ErrorKind, Exchange, Publish, Queue,
    Topology, Transport,
};
use mqtransport_testkit::proxy::{Cut, Direction, FaultProxy};

const DEADLINE: Duration = Duration::from_secs(60);

fn broker_url() -> String {
    std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A direct connection for setup and cleanup, or `None` (SKIPPED) when RabbitMQ is unreachable
/// and not required.
async fn direct() -> Option<AmqpTransport> {
    let url = BrokerUrl::parse(&broker_url()).expect("MQT_TEST_AMQP_URL parses");
    mqtransport_testkit::reachable_or_skip("RabbitMQ", &url.to_string(), AmqpTransport::connect(&url).await)
}

/// The broker URL rewritten to go through `proxy`, with a short heartbeat.
fn via(proxy: &FaultProxy) -> BrokerUrl {
    let url = BrokerUrl::parse(&broker_url()).expect("MQT_TEST_AMQP_URL parses");
    let user = url.username().unwrap_or("guest");
    let pass = url.password().unwrap_or("guest");
    let vhost = if url.vhost() == "/" {
        "%2f".to_owned()
    } else {
        url.vhost().to_owned()
    };
    BrokerUrl::parse(&format!("amqp://{user}:{pass}@{}/{vhost}?heartbeat=2", proxy.addr())).expect("proxy URL parses")
}

fn upstream() -> String {
    let url = BrokerUrl::parse(&broker_url()).expect("MQT_TEST_AMQP_URL parses");
    format!("{}:{}", url.host(), url.port().unwrap_or(5672))
}

fn unique(base: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("mqt-rec-{base}-{}-{nanos:x}", std::process::id())
}

/// A durable test queue that the broker removes by itself 10 minutes after its last use, should
/// the test die before its cleanup.
fn guarded(name: &str) -> Queue {
    Queue::durable(name).expires(Duration::from_secs(600))
}

fn options() -> AmqpOptions {
    AmqpOptions {
        confirm_timeout: Duration::from_secs(45),
        reconnect_wait: Duration::from_secs(45),
        ..AmqpOptions::default()
    }
}

async fn wait_until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a fault test starts from: the direct connection (for checks and cleanup), the fault
/// proxy, a transport through it with `opts`, and a guarded queue named after `base`, declared.
/// `None` (SKIPPED) when RabbitMQ is unreachable and not required.
async fn through_proxy(base: &str, opts: AmqpOptions) -> Option<(AmqpTransport, FaultProxy, AmqpTransport, String)> {
    let admin = direct().await?;
    let proxy = FaultProxy::start(&upstream()).await.expect("proxy starts");
    let t = AmqpTransport::connect_with(&via(&proxy), opts)
        .await
        .expect("connects through the proxy");
    let q = unique(base);
    t.declare(&Topology::new().queue(guarded(&q))).await.expect("declare");
    Some((admin, proxy, t, q))
}

/// Closes `t`, deletes the queue `q` through `admin`, and closes `admin`.
async fn clean_up(admin: AmqpTransport, t: AmqpTransport, q: &str) {
    t.close().await.expect("close");
    admin.delete_queue(q, DeleteQueue::default()).await.expect("cleanup");
    admin.close().await.expect("close");
}

/// Publishes `body` to queue `q` on a task of its own, so that the test can act meanwhile.
fn spawn_publish(
    t: &AmqpTransport,
    q: &str,
    body: String,
) -> tokio::task::JoinHandle<mqtransport_core::Result<Confirmation>> {
    let (t, q) = (t.clone(), q.to_owned());
    tokio::spawn(async move { t.publish(Publish::to_queue(&q, Envelope::new(body))).await })
}

/// Publishes `n` numbered messages while a consumer acks them; cuts every connection after a
/// third of the confirms. Every confirmed message must be consumed, with few duplicates.
async fn publish_and_consume_across(cut: Cut) {
    let Some((admin, proxy, t, q)) = through_proxy("cut", options()).await else {
        return;
    };

    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut consumer = t
        .consume(&q, ConsumeOptions::default().prefetch(20))
        .await
        .expect("consume");
    let seen2 = Arc::clone(&seen);
    let consuming = tokio::spawn(async move {
        while let Some(d) = consumer.next().await {
            let Ok(d) = d else { continue };
            let body = String::from_utf8_lossy(&d.envelope.body).into_owned();
            *seen2.lock().expect("seen").entry(body).or_default() += 1;
            // An ack on a channel lost meanwhile fails typed; the message comes back redelivered.
            if let Err(e) = d.ack().await {
                assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
            }
        }
    });

    const N: usize = 300;
    let mut confirmed = HashSet::new();
    for i in 0..N {
        if i == N / 3 {
            proxy.cut(cut);
        }
        let body = format!("m{i}");
        match t.publish(Publish::to_queue(&q, Envelope::new(body.clone()))).await {
            Ok(Confirmation::Confirmed) => {
                confirmed.insert(body);
            }
            other => panic!("publish {i} during recovery: {other:?}"),
        }
    }
    assert!(proxy.accepted() >= 4, "the transport reconnected both connections");
    wait_until("every confirmed message is consumed", || {
        let seen = seen.lock().expect("seen");
        confirmed.iter().all(|b| seen.contains_key(b))
    })
    .await;
    let duplicates: usize = seen.lock().expect("seen").values().map(|n| n - 1).sum();
    assert!(
        duplicates <= 40,
        "{duplicates} duplicates: more than the in-flight window"
    );
    assert!(
        matches!(t.state(), LinkState::Up(g) if g >= 2),
        "state after recovery: {:?}",
        t.state()
    );
    assert!(
        matches!(t.connection_states().publish, LinkState::Up(g) if g >= 2),
        "the publishing connection's own count: {:?}",
        t.connection_states()
    );
    consuming.abort();
    clean_up(admin, t, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_publish_and_consume_loses_nothing() {
    publish_and_consume_across(Cut::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fin_mid_publish_and_consume_loses_nothing() {
    publish_and_consume_across(Cut::Fin).await;
}

/// After a reconnect the consumer is back with its prefetch: holding deliveries unacked, it
/// gets exactly `prefetch` of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_qos_are_restored() {
    let Some((admin, proxy, t, q)) = through_proxy("qos", options()).await else {
        return;
    };
    let mut consumer = t
        .consume(&q, ConsumeOptions::default().prefetch(5))
        .await
        .expect("consume");
    proxy.cut(Cut::Reset);
    for i in 0..20 {
        let c = t
            .publish(Publish::to_queue(&q, Envelope::new(format!("m{i}"))))
            .await
            .expect("publish");
        assert_eq!(c, Confirmation::Confirmed);
    }
    let mut held = Vec::new();
    for _ in 0..5 {
        let d = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .expect("a delivery")
            .expect("stream open");
        held.push(d.expect("delivery"));
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let ready = admin.queue_info(&q).await.expect("info").message_count;
        if ready == 15 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready stayed {ready}, expected 15 (prefetch 5 of 20)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    drop(consumer);
    clean_up(admin, t, &q).await;
}

/// A stall longer than the heartbeat: the connection is declared dead and replaced; a publish
/// made during the stall is confirmed once traffic flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_longer_than_heartbeat_recovers() {
    let Some((admin, proxy, t, q)) = through_proxy("stall", options()).await else {
        return;
    };
    proxy.stall(Direction::ToServer, true);
    proxy.stall(Direction::ToClient, true);
    let publishing = spawn_publish(&t, &q, "during-stall".into());
    // Two heartbeat intervals of 2 s pass before either side gives up on the connection.
    tokio::time::sleep(Duration::from_secs(7)).await;
    proxy.stall(Direction::ToServer, false);
    proxy.stall(Direction::ToClient, false);
    let outcome = tokio::time::timeout(DEADLINE, publishing)
        .await
        .expect("publish finishes")
        .expect("task");
    assert_eq!(outcome.expect("publish after the stall"), Confirmation::Confirmed);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while admin.queue_info(&q).await.expect("info").message_count < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message published during the stall never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    clean_up(admin, t, &q).await;
}

/// The publisher channel is being opened when its connection dies: the open fails with the
/// connection, and the channel is opened on the next one. The publish does not wait out its
/// timeout (45 s here) on the dead connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_opening_when_its_connection_dies_opens_on_the_next() {
    let Some((admin, proxy, t, q)) = through_proxy("opening", options()).await else {
        return;
    };
    // The broker's answers are held back: the first publish opens the publisher channel, and
    // its open gets no answer.
    proxy.stall(Direction::ToClient, true);
    let before = proxy.forwarded(Direction::ToServer);
    let publishing = spawn_publish(&t, &q, "opening".into());
    wait_until("the channel's open reached the broker", || {
        proxy.forwarded(Direction::ToServer) > before
    })
    .await;
    proxy.cut(Cut::Reset);
    proxy.stall(Direction::ToClient, false);
    let outcome = tokio::time::timeout(Duration::from_secs(30), publishing)
        .await
        .expect("the publish waited on the dead connection")
        .expect("task");
    assert_eq!(outcome.expect("publish"), Confirmation::Confirmed);
    clean_up(admin, t, &q).await;
}

/// While the broker cannot be reached, a publish fails typed after the confirm timeout; the
/// transport works again once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_during_an_outage_times_out_typed() {
    let opts = AmqpOptions {
        confirm_timeout: Duration::from_secs(2),
        ..options()
    };
    let Some((admin, proxy, t, q)) = through_proxy("outage", opts).await else {
        return;
    };
    proxy.refuse(true);
    proxy.cut(Cut::Reset);
    let e = t
        .publish(Publish::to_queue(&q, Envelope::new("lost?")))
        .await
        .expect_err("no broker");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.message().contains(&q), "the error names the destination: {e}");
    assert!(!e.message().contains("guest:guest"), "no password in errors: {e}");
    proxy.refuse(false);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match t.publish(Publish::to_queue(&q, Envelope::new("after"))).await {
            Ok(c) => {
                assert_eq!(c, Confirmation::Confirmed);
                break;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
                assert!(tokio::time::Instant::now() < deadline, "never recovered");
            }
        }
    }
    clean_up(admin, t, &q).await;
}

/// The broker closes this test's own connection (`rabbitmqctl close_connection`, found by its
/// name): the server-named exclusive queue is re-created under a new name, its binding and
/// consumer move with it, and messages keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_recreates_server_named_queue_and_consumer() {
    let Some(admin) = direct().await else { return };
    if std::process::Command::new("rabbitmqctl")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            !mqtransport_testkit::brokers_required(),
            "rabbitmqctl is needed for this test"
        );
        println!("SKIPPED: rabbitmqctl not available");
        return;
    }
    let t = AmqpTransport::connect_with(&BrokerUrl::parse(&broker_url()).expect("url"), options())
        .await
        .expect("connects");
    let x = unique("events");
    let declared = t
        .declare(
            &Topology::new()
                .exchange(Exchange::fanout(&x).transient().auto_delete())
                .queue(Queue::server_named())
                .bind(Binding::queue("", &x, "")),
        )
        .await
        .expect("declare");
    let first_name = declared.queues[0].name.clone();
    let mut consumer = t
        .consume(&first_name, ConsumeOptions::default().prefetch(10))
        .await
        .expect("consume");
    t.publish(Publish::new(&x, "", Envelope::new("before")))
        .await
        .expect("publish");
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("delivery")
        .expect("open")
        .expect("ok");
    d.ack().await.expect("ack");

    let [consume_name, _] = t.connection_names();
    let listing = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&listing.stdout);
    let pid = text
        .lines()
        .find(|l| l.contains(consume_name))
        .and_then(|l| l.split_whitespace().next())
        .expect("our connection is listed by name")
        .to_owned();
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", &pid, "mqtransport recovery test"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        closed.status.success(),
        "close_connection: {}",
        String::from_utf8_lossy(&closed.stderr)
    );

    // The queue goes with the connection, and the auto-delete exchange with its last binding.
    // Recovery declares both again and moves the binding to the new queue, so publishing soon
    // reaches the same consumer stream; until then the exchange may be missing (404).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match t.publish(Publish::new(&x, "", Envelope::new("after"))).await {
            Ok(Confirmation::Confirmed) => break,
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the topology was never restored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("delivery")
        .expect("open")
        .expect("ok");
    assert_eq!(&d.envelope.body[..], b"after");
    d.ack().await.expect("ack");
    // The old name still works for the application: it resolves to the new queue.
    let info = t
        .queue_info(&first_name)
        .await
        .expect("the renamed queue is found by its first name");
    assert_ne!(info.name, first_name);
    // So does publishing to it through the default exchange: a mandatory publish to the first
    // name reaches the new queue instead of being returned.
    let direct = t
        .publish(Publish::to_queue(first_name.as_str(), Envelope::new("direct")).mandatory(true))
        .await
        .expect("publish to the first name");
    assert_eq!(direct, Confirmation::Confirmed);
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("delivery")
        .expect("open")
        .expect("ok");
    assert_eq!(&d.envelope.body[..], b"direct");
    d.ack().await.expect("ack");
    assert!(matches!(t.state(), LinkState::Up(g) if g >= 2));
    drop(consumer);
    t.close().await.expect("close");
    admin.delete_exchange(&x, false).await.expect("cleanup");
    admin.close().await.expect("close");
}

/// With `Unconfirmed::Fail`, a publish sent but unconfirmed when the connection drops fails
/// typed instead of being sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_publish_fails_when_the_policy_says_so() {
    let opts = AmqpOptions {
        unconfirmed: mqtransport_amqp::Unconfirmed::Fail,
        ..options()
    };
    let Some((admin, proxy, t, q)) = through_proxy("fail-policy", opts).await else {
        return;
    };
    // Warm the publishing channel, then hold back everything the broker sends (the confirm).
    t.publish(Publish::to_queue(&q, Envelope::new("warm")))
        .await
        .expect("publish");
    proxy.stall(Direction::ToClient, true);
    let before = proxy.forwarded(Direction::ToServer);
    let publishing = spawn_publish(&t, &q, "in flight".into());
    wait_until("the publish reached the broker", || {
        proxy.forwarded(Direction::ToServer) > before
    })
    .await;
    proxy.cut(Cut::Reset);
    proxy.stall(Direction::ToClient, false);
    let outcome = tokio::time::timeout(DEADLINE, publishing)
        .await
        .expect("publish finishes")
        .expect("task");
    let e = outcome.expect_err("unconfirmed at the loss: failed, not re-sent");
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.is_outcome_unknown(), "{e}");
    clean_up(admin, t, &q).await;
}

/// `connection.blocked` / `unblocked` from the broker show in the transport's state. The frames
/// are injected by the proxy: raising a real resource alarm would block the shared broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_blocked_is_visible() {
    let Some(admin) = direct().await else { return };
    let proxy = FaultProxy::start(&upstream()).await.expect("proxy starts");
    let t = AmqpTransport::connect_with(&via(&proxy), options())
        .await
        .expect("connects");
    assert!(matches!(t.state(), LinkState::Up(1)), "{:?}", t.state());
    proxy.inject_to_client(&mqtransport_testkit::proxy::connection_blocked("low on memory"));
    wait_until("the state shows Blocked", || matches!(t.state(), LinkState::Blocked(_))).await;
    proxy.inject_to_client(&mqtransport_testkit::proxy::connection_unblocked());
    wait_until("the state shows Up again", || matches!(t.state(), LinkState::Up(1))).await;
    t.close().await.expect("close");
    admin.close().await.expect("close");
}

/// At most `max_unconfirmed` publishes wait for their confirm; the next one waits for a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_publishes_are_bounded_by_the_window() {
    let opts = AmqpOptions {
        max_unconfirmed: 2,
        ..options()
    };
    let Some((admin, proxy, t, q)) = through_proxy("window", opts).await else {
        return;
    };
    t.publish(Publish::to_queue(&q, Envelope::new("warm")))
        .await
        .expect("publish");
    assert_eq!(t.unconfirmed(), 0);
    // Hold back the confirms: two publishes fill the window, the third waits for a place.
    proxy.stall(Direction::ToClient, true);
    let mut publishing = Vec::new();
    for i in 0..3 {
        publishing.push(spawn_publish(&t, &q, format!("m{i}")));
    }
    wait_until("the window is full", || t.unconfirmed() == 2).await;
    let before = proxy.forwarded(Direction::ToServer);
    assert!(
        publishing.iter().all(|p| !p.is_finished()),
        "nothing can be confirmed while stalled"
    );
    proxy.stall(Direction::ToClient, false);
    for p in publishing {
        let c = tokio::time::timeout(DEADLINE, p)
            .await
            .expect("finishes")
            .expect("task")
            .expect("publish");
        assert_eq!(c, Confirmation::Confirmed);
    }
    assert!(
        proxy.forwarded(Direction::ToServer) > before,
        "the third publish was sent once a place freed"
    );
    assert_eq!(t.unconfirmed(), 0);
    clean_up(admin, t, &q).await;
}

/// An auto-delete queue the application stopped consuming from (and the broker so deleted) is
/// not brought back by a later reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_does_not_resurrect_an_auto_deleted_queue() {
    let Some(admin) = direct().await else { return };
    let proxy = FaultProxy::start(&upstream()).await.expect("proxy starts");
    let t = AmqpTransport::connect_with(&via(&proxy), options())
        .await
        .expect("connects");
    let (q, kept) = (unique("autodel"), unique("kept"));
    t.declare(
        &Topology::new()
            .queue(Queue::transient(&q).auto_delete().expires(Duration::from_secs(600)))
            .queue(guarded(&kept)),
    )
    .await
    .expect("declare");
    let consumer = t.consume(&q, ConsumeOptions::default()).await.expect("consume");
    drop(consumer);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while admin.queue_info(&q).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the auto-delete queue was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut(Cut::Reset);
    wait_until("reconnected", || matches!(t.state(), LinkState::Up(g) if g >= 2)).await;
    // The restore ran before the link came up: the kept queue is back, the other is not.
    admin
        .queue_info(&kept)
        .await
        .expect("the recorded durable queue is declared again");
    let e = admin.queue_info(&q).await.expect_err("not resurrected");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    t.close().await.expect("close");
    admin
        .delete_queue(&kept, DeleteQueue::default())
        .await
        .expect("cleanup");
    admin.close().await.expect("close");
}

/// The direct reply-to stream says that replies in flight were lost when its channel went with
/// the connection, even when it was not polled while the transport reconnected and subscribed
/// it again (a requester's listener may be busy then): a request sent afterwards goes out on the
/// new channel, and the stream's first item is the loss, before anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_stream_tells_of_the_loss_even_when_resubscribed_unseen() {
    let Some((admin, proxy, t, q)) = through_proxy("reply-loss", options()).await else {
        return;
    };
    let mut replies = t
        .consume(
            mqtransport_core::DIRECT_REPLY_TO,
            ConsumeOptions::default().no_ack(true),
        )
        .await
        .expect("reply consumer");
    let request = || {
        Publish::to_queue(
            &q,
            Envelope::new("req").with_reply_to(mqtransport_core::DIRECT_REPLY_TO),
        )
    };
    assert_eq!(t.publish(request()).await.expect("request"), Confirmation::Confirmed);
    proxy.cut(Cut::Reset);
    // Not polling `replies`: the request below waits for the reply consumer's new channel,
    // so once it is confirmed, the transport has replaced the subscription under the stream.
    let resent = tokio::time::timeout(DEADLINE, t.publish(request()))
        .await
        .expect("a request after the reconnect finishes");
    assert_eq!(resent.expect("request"), Confirmation::Confirmed);
    let first = tokio::time::timeout(DEADLINE, replies.next())
        .await
        .expect("the stream says something")
        .expect("the stream goes on");
    let e = first.expect_err("the loss comes first");
    assert!(e.to_string().contains("direct reply-to channel was lost"), "{e}");
    clean_up(admin, t, &q).await;
}
