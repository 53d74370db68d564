//! Request/reply through `App::requester`, each scenario on the embedded broker (paused clock)
//! and on RabbitMQ: answers, failures sent back by the responder, no route, deadlines (and a
//! responder skipping a request whose caller gave up), many calls at once, and cancelled calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use mqtransport::prelude::*;
use mqtransport::{Disposition, Running};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "math.square")]
struct Square {
    n: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "math.squared")]
struct Squared {
    n: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "math.root")]
struct Root {
    r: f64,
}

/// The number the responder takes an hour over.
const SLOW: i64 = 1_000_000;

/// Squares (the reply is what it returns); refuses negative numbers for good; takes an hour
/// over [`SLOW`].
async fn square(req: Square) -> Result<Squared, HandlerError> {
    if req.n < 0 {
        return Err(HandlerError::permanent(format!("cannot square {} here", req.n)));
    }
    if req.n == SLOW {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    Ok(Squared { n: req.n * req.n })
}

/// Fails its first attempt (for a retry), then squares.
async fn square_second_time(req: Square, info: DeliveryInfo) -> Result<Squared, HandlerError> {
    if info.attempt() == 1 {
        return Err(HandlerError::transient(format!("busy with {}", req.n)));
    }
    Ok(Squared { n: req.n * req.n })
}

/// The same answer, sent with `Publisher::reply` (for a handler that replies and goes on).
async fn square_by_hand(req: Square, publisher: Publisher) -> Result<(), HandlerError> {
    publisher
        .reply(&Squared { n: req.n * req.n })
        .await
        .map_err(HandlerError::transient)
}

/// A caller's app that declares `q` (nobody consumes it), and a requester to it with `timeout`.
async fn caller_of_idle_queue(
    fx: &Fx,
    q: &str,
    timeout: Duration,
) -> Result<(App, Requester<Square, Squared>), BoxError> {
    let caller = fx
        .app(App::builder())
        .topology(Topology::new().queue(Queue::durable(q)))
        .build()
        .await?;
    let requester = caller
        .requester::<Square, Squared>(Route::queue(q))
        .with_timeout(timeout);
    Ok((caller, requester))
}

async fn responder(fx: &Fx, q: &str) -> Result<(App, Running), BoxError> {
    let app = fx
        .app(App::builder())
        // The hour-long call is cut short at shutdown.
        .shutdown_timeout(Duration::from_millis(500))
        .consumer(
            Consumer::for_queue(Queue::durable(q))
                .handle(square)
                .retry(RetryPolicy::none())
                .concurrency(64),
        )
        .build()
        .await?;
    let caller = fx.app(App::builder()).build().await?;
    let running = app.start().await?;
    Ok((caller, running))
}

app_suite!(
    a_request_gets_its_typed_reply,
    a_handler_may_reply_by_hand,
    many_calls_at_once_each_get_their_own_reply,
    a_failing_responder_answers_with_its_reason_at_once,
    a_request_to_no_queue_fails_at_once,
    a_call_without_a_responder_times_out_and_leaves_nothing_behind,
    a_dropped_call_leaves_nothing_behind,
    a_reply_of_the_wrong_type_is_a_decode_error,
    a_responder_skips_a_request_whose_caller_gave_up,
    a_retry_the_caller_would_not_wait_for_fails_the_call_at_once,
    raw_requests_talk_to_services_without_types,
);

async fn a_request_gets_its_typed_reply(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("square");
    let (caller, running) = responder(&fx, &q).await?;
    let math = caller.requester::<Square, Squared>(Route::queue(q.as_str()));
    assert_eq!(math.request(&Square { n: 12 }).await?, Squared { n: 144 });
    assert_eq!(math.request(&Square { n: -0 }).await?, Squared { n: 0 });
    assert_eq!(math.waiting(), 0);
    running.shutdown().await?;
    Ok(())
}

async fn a_handler_may_reply_by_hand(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("by-hand");
    let app = fx
        .app(App::builder())
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(square_by_hand))
        .build()
        .await?;
    let math = app.requester::<Square, Squared>(Route::queue(q.as_str()));
    let running = app.start().await?;
    assert_eq!(math.request(&Square { n: 11 }).await?, Squared { n: 121 });
    running.shutdown().await?;
    Ok(())
}

async fn many_calls_at_once_each_get_their_own_reply(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("square");
    let (caller, running) = responder(&fx, &q).await?;
    let math = caller.requester::<Square, Squared>(Route::queue(q.as_str()));
    // moto, the SQS server of the tests, answers a few hundred calls a second.
    let many = if fx.is_sqs() { 100 } else { 1000 };
    let calls = (0..many).map(|n| {
        let math = math.clone();
        async move { (n, math.request(&Square { n }).await) }
    });
    for (n, reply) in futures_util::future::join_all(calls).await {
        assert_eq!(reply?, Squared { n: n * n }, "the reply to call {n}");
    }
    assert_eq!(math.waiting(), 0);
    running.shutdown().await?;
    Ok(())
}

async fn a_failing_responder_answers_with_its_reason_at_once(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("square");
    let (caller, running) = responder(&fx, &q).await?;
    let math = caller.requester::<Square, Squared>(Route::queue(q.as_str()));
    let started = tokio::time::Instant::now();
    match math.request(&Square { n: -4 }).await {
        Err(RpcError::Failed { reason }) => assert!(reason.contains("cannot square -4 here"), "{reason}"),
        other => panic!("expected the responder's failure, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "told at once, not at the deadline"
    );
    // A request no handler serves is refused, and said to be.
    let garbled = caller.requester::<Root, Squared>(Route::queue(q.as_str()));
    match garbled.request(&Root { r: 2.0 }).await {
        Err(RpcError::Rejected { reason }) => assert!(reason.contains("math.root"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // So is one that cannot be read.
    let malformed = caller.raw_requester(Route::queue(q.as_str()));
    match malformed
        .request(Envelope::new("{not json").with_kind("math.square"))
        .await
    {
        Err(RpcError::Rejected { reason }) => assert!(reason.contains("malformed"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    running.shutdown().await?;
    Ok(())
}

async fn a_request_to_no_queue_fails_at_once(fx: Arc<Fx>) -> TestResult {
    let caller = fx.app(App::builder()).build().await?;
    let nowhere = caller.requester::<Square, Squared>(Route::queue("mqt-no-such-queue-for-rpc"));
    match nowhere.request(&Square { n: 1 }).await {
        Err(RpcError::NoRoute { reason }) => assert!(reason.contains("312"), "{reason}"),
        other => panic!("expected no route, got {other:?}"),
    }
    assert_eq!(nowhere.waiting(), 0);
    Ok(())
}

async fn a_call_without_a_responder_times_out_and_leaves_nothing_behind(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("idle");
    let (_caller, math) = caller_of_idle_queue(&fx, &q, Duration::from_millis(300)).await?;
    match math.request(&Square { n: 2 }).await {
        Err(RpcError::Timeout(after)) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(math.waiting(), 0);
    Ok(())
}

async fn a_dropped_call_leaves_nothing_behind(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("square");
    let (caller, running) = responder(&fx, &q).await?;
    let math = caller.requester::<Square, Squared>(Route::queue(q.as_str()));
    {
        // The responder takes an hour: the call is abandoned while it waits.
        let call = math.request(&Square { n: SLOW });
        tokio::pin!(call);
        let waited = tokio::time::timeout(Duration::from_millis(500), &mut call).await;
        assert!(waited.is_err(), "the call was still waiting");
        assert_eq!(math.waiting(), 1);
    }
    assert_eq!(math.waiting(), 0, "dropping the call forgot it");
    // The requester still works.
    assert_eq!(math.request(&Square { n: 3 }).await?, Squared { n: 9 });
    running.shutdown().await?;
    Ok(())
}

async fn a_reply_of_the_wrong_type_is_a_decode_error(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("square");
    let (caller, running) = responder(&fx, &q).await?;
    let confused = caller.requester::<Square, Root>(Route::queue(q.as_str()));
    match confused.request(&Square { n: 5 }).await {
        Err(RpcError::Decode(e)) => assert!(e.to_string().contains("math.root"), "{e}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    running.shutdown().await?;
    Ok(())
}

async fn a_responder_skips_a_request_whose_caller_gave_up(fx: Arc<Fx>) -> TestResult {
    let q = fx.queue("late");
    // The caller's request waits in the queue past its deadline; the responder starts later.
    let (_caller, math) = caller_of_idle_queue(&fx, &q, Duration::from_millis(200)).await?;
    assert!(matches!(
        math.request(&Square { n: 7 }).await,
        Err(RpcError::Timeout(_))
    ));
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::builder())
        .on_settle(hook)
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(square))
        .build()
        .await?;
    let running = app.start().await?;
    // On RabbitMQ the request expired in the queue (its expiration is the deadline) and never
    // arrives; on the embedded broker too. A request that does arrive late is skipped: pushed
    // here by hand, with a deadline in the past and no expiration.
    let late = mqtransport::encode(&Square { n: 8 })?
        .with_header(mqtransport::headers::DEADLINE, 1i64)
        .with_reply_to("nobody")
        .with_correlation_id("late-1");
    fx.conn().await?.publish(Publish::to_queue(q.as_str(), late)).await?;
    let seen = settled.next().await?;
    assert_eq!(seen.disposition, Disposition::Expired, "{seen:?}");
    if fx.is_sqs() {
        // SQS does not apply a message's expiration: the first request waited in the queue
        // too, and is skipped the same way.
        let seen = settled.next().await?;
        assert_eq!(seen.disposition, Disposition::Expired, "{seen:?}");
    }
    running.shutdown().await?;
    let info = fx.conn().await?.queue_info(&q).await?;
    assert_eq!(info.message_count, 0, "nothing left in the queue");
    Ok(())
}

async fn a_retry_the_caller_would_not_wait_for_fails_the_call_at_once(fx: Arc<Fx>) -> TestResult {
    let (slow_q, quick_q) = (fx.queue("busy-slow"), fx.queue("busy-quick"));
    let retrying_after = |delay: Duration| RetryPolicy::max_attempts(3).backoff(mqtransport::Backoff::fixed(delay));
    let (hook, mut settled) = settlements();
    let app = fx
        .app(App::builder())
        .on_settle(hook)
        .consumer(
            Consumer::for_queue(Queue::durable(&slow_q))
                .handle(square_second_time)
                .retry(retrying_after(Duration::from_secs(60))),
        )
        .consumer(
            Consumer::for_queue(Queue::durable(&quick_q))
                .handle(square_second_time)
                .retry(retrying_after(Duration::from_millis(200))),
        )
        .build()
        .await?;
    let running = app.start().await?;
    let caller = fx.app(App::builder()).build().await?;
    let timeout = Duration::from_secs(20);
    // The next attempt would come a minute later, after the caller has given up: the caller
    // is told now, with the handler's reason, and the request is kept as a dead letter.
    let slow = caller
        .requester::<Square, Squared>(Route::queue(slow_q.as_str()))
        .with_timeout(timeout);
    let started = tokio::time::Instant::now();
    match slow.request(&Square { n: 3 }).await {
        Err(RpcError::Failed { reason }) => {
            assert!(reason.contains("busy with 3"), "{reason}");
            assert!(reason.contains("after the caller's deadline"), "{reason}");
        }
        other => panic!("expected the responder's failure, got {other:?}"),
    }
    assert!(started.elapsed() < timeout, "told at once, not at the deadline");
    let seen = settled.next().await?;
    assert!(matches!(seen.disposition, Disposition::DeadLettered { .. }), "{seen:?}");
    // A retry that comes in time is waited for.
    let quick = caller
        .requester::<Square, Squared>(Route::queue(quick_q.as_str()))
        .with_timeout(timeout);
    assert_eq!(quick.request(&Square { n: 4 }).await?, Squared { n: 16 });
    running.shutdown().await?;
    Ok(())
}

/// On RabbitMQ, a reply can only come over the channel its request went out on: when the
/// connection drops, a waiting call fails at once with `ConnectionLost`, not at its deadline,
/// and the requester works again once reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_fails_waiting_calls_at_once() {
    use mqtransport_testkit::proxy::Cut;
    let Some((direct, proxy, through)) = rabbit_through_proxy().await else {
        return;
    };
    let q = format!("mqt-rpc-lost-{}", std::process::id());
    let responder_app = App::builder()
        .url(rabbit_url())
        .shutdown_timeout(Duration::from_millis(200))
        .consumer(Consumer::for_queue(Queue::durable(&q).expires(Duration::from_secs(600))).handle(square))
        .build()
        .await
        .expect("responder");
    let responding = responder_app.start().await.expect("start");
    let caller = App::builder().url(through).build().await.expect("caller");
    let math = caller
        .requester::<Square, Squared>(Route::queue(q.as_str()))
        .with_timeout(Duration::from_secs(60));
    assert_eq!(
        math.request(&Square { n: 2 }).await.expect("a first call"),
        Squared { n: 4 }
    );
    let waiting = {
        let math = math.clone();
        tokio::spawn(async move { math.request(&Square { n: SLOW }).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while math.waiting() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the call never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cut_at = tokio::time::Instant::now();
    proxy.cut(Cut::Reset);
    match waiting.await.expect("the call ended") {
        Err(RpcError::ConnectionLost(why)) => assert!(why.contains("direct reply-to"), "{why}"),
        other => panic!("expected the loss, got {other:?}"),
    }
    assert!(
        cut_at.elapsed() < Duration::from_secs(15),
        "told within {:?}, not at the 60 s deadline",
        cut_at.elapsed()
    );
    assert_eq!(
        math.request(&Square { n: 3 })
            .await
            .expect("a call after the reconnect"),
        Squared { n: 9 }
    );
    responding.shutdown().await.expect("shutdown");
    let _ = direct.delete_queue(&q, Default::default()).await;
    let _ = direct.delete_queue(&format!("{q}.dlq"), Default::default()).await;
}

/// A raw requester and a responder that knows nothing of types, both ways: a bare body to a
/// service that answers bare bodies (as a pika `rpc_server.py` does), and a request built by
/// hand (as another client would) to our typed responder.
async fn raw_requests_talk_to_services_without_types(fx: Arc<Fx>) -> TestResult {
    let foreign = fx.queue("foreign");
    let conn = fx.conn().await?;
    conn.declare(&Topology::new().queue(Queue::durable(&foreign))).await?;
    let mut requests = conn.consume(&foreign, ConsumeOptions::default()).await?;
    let server = conn.clone();
    let serving = tokio::spawn(async move {
        while let Some(Ok(req)) = requests.next().await {
            let text: String = String::from_utf8_lossy(&req.envelope.body).chars().rev().collect();
            let props = req.envelope.properties();
            let reply = Envelope::new(text).with_correlation_id(props.correlation_id.clone().unwrap_or_default());
            let to = props.reply_to.clone().unwrap_or_default();
            let _ = server
                .publish(Publish::to_queue(to.as_str(), reply).mandatory(false))
                .await;
            let _ = req.ack().await;
        }
    });
    let q = fx.queue("square");
    let (caller, running) = responder(&fx, &q).await?;
    let reverse = caller.raw_requester(Route::queue(foreign.as_str()));
    let reply = reverse.request(Envelope::new("ping")).await?;
    assert_eq!(&reply.body[..], b"gnip");

    let by_hand = Envelope::new(r#"{"n":6}"#).with_kind("math.square");
    let reply = caller.raw_requester(Route::queue(q.as_str())).request(by_hand).await?;
    assert_eq!(reply.properties().kind.as_deref(), Some("math.squared"));
    assert_eq!(mqtransport::decode::<Squared>(&reply)?, Squared { n: 36 });
    running.shutdown().await?;
    serving.abort();
    Ok(())
}
