//! The App on Amazon SQS (an SQS-compatible server at `MQT_TEST_SQS_URL`, default moto on
//! 127.0.0.1:4566): retries redelivered in place (visibility), dead letters and their replay,
//! delayed publishes, the lease that keeps a long handler's message invisible, FIFO group order
//! under failure, request/reply over a reply queue, colliding names, and what SQS cannot do
//! refused at build. (The app suite of every other test file runs on SQS too, with `--features
//! sqs`; see `common::not_on_sqs` for what it skips.)

#![cfg(feature = "sqs")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use mqtransport::prelude::*;
use mqtransport::{DeadLetters, DynTransport, ErrorKind, PublishOptions, Replay, SqsTransport};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);

fn sqs_url() -> String {
    std::env::var("MQT_TEST_SQS_URL")
        .unwrap_or_else(|_| "sqs://test:test@us-east-1/?endpoint=http://127.0.0.1:4566".into())
}

/// The test URL with more query options.
fn url_with(options: &str) -> String {
    let url = sqs_url();
    format!("{url}{}{options}", if url.contains('?') { "&" } else { "?" })
}

fn unique(base: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "mqt-sqs-{base}-{:x}{nanos:x}{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connection, or `None` (printing SKIPPED) when SQS is unreachable and not required.
async fn connect(url: &str) -> Option<DynTransport> {
    match SqsTransport::connect(url).await {
        Ok(t) => Some(DynTransport::new(t)),
        Err(e) if e.kind() == ErrorKind::Connection && !mqtransport_testkit::brokers_required() => {
            println!(
                "SKIPPED: SQS not reachable at {} ({e})",
                mqtransport::BrokerUrl::parse(url).unwrap()
            );
            None
        }
        Err(e) => panic!("SQS at {url}: {e}"),
    }
}

async fn delete_queues(conn: &DynTransport, queues: &[&str]) {
    for q in queues {
        let _ = conn.delete_queue(q, Default::default()).await;
    }
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
        .unwrap_or_else(|| panic!("the channel closed before {what}"))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "jobs.run")]
struct Job {
    id: u64,
    group: String,
}

/// What a handler saw: the job, its attempt, and when.
type Seen = (Job, u32, Instant);

#[derive(Clone)]
struct Worker {
    seen: mpsc::UnboundedSender<Seen>,
    /// Jobs with this id fail while `failures` lasts.
    failing: u64,
    failures: Arc<AtomicU32>,
    work: Duration,
}

async fn run_job(info: DeliveryInfo, job: Job, State(w): State<Worker>) -> Result<(), HandlerError> {
    let _ = w.seen.send((job.clone(), info.attempt(), Instant::now()));
    tokio::time::sleep(w.work).await;
    if job.id == w.failing && w.failures.load(Ordering::Acquire) > 0 {
        w.failures.fetch_sub(1, Ordering::AcqRel);
        return Err(HandlerError::transient(format!("job {} failed", job.id)));
    }
    Ok(())
}

fn worker(failing: u64, failures: u32, work: Duration) -> (Worker, mpsc::UnboundedReceiver<Seen>) {
    let (seen, rx) = mpsc::unbounded_channel();
    let w = Worker {
        seen,
        failing,
        failures: Arc::new(AtomicU32::new(failures)),
        work,
    };
    (w, rx)
}

/// Starts an app on SQS (with `options` added to the URL) whose one consumer is `consumer`
/// handling jobs with `w`; returns it running, and a producer of jobs to its queue.
async fn start_jobs(w: Worker, options: &str, consumer: Consumer<Worker>) -> (mqtransport::Running, Producer<Job>) {
    let queue = consumer.queue().to_owned();
    let app = App::with_state(w)
        .url(url_with(options))
        .consumer(consumer.handle(run_job))
        .build()
        .await
        .unwrap();
    let producer = app.producer::<Job>(Route::queue(&queue));
    (app.start().await.unwrap(), producer)
}

fn job(id: u64, group: &str) -> Job {
    Job {
        id,
        group: group.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_redelivered_in_place_then_dead_lettered_and_replayed() {
    let Some(conn) = connect(&sqs_url()).await else { return };
    let q = unique("retry");
    let dlq = format!("{q}.dlq");
    let (w, mut seen) = worker(7, 2, Duration::ZERO);
    let healthy = Arc::clone(&w.failures);
    let (running, producer) = start_jobs(
        w,
        "wait=1s",
        Consumer::for_queue(Queue::durable(&q))
            .retry(RetryPolicy::max_attempts(2).backoff(mqtransport::Backoff::fixed(Duration::from_secs(2)))),
    )
    .await;
    producer.send(&job(7, "a")).await.unwrap();

    let (_, first, at1) = recv(&mut seen, "the first attempt").await;
    let (again, second, at2) = recv(&mut seen, "the retry").await;
    assert_eq!(
        (first, second, again.id),
        (1, 2, 7),
        "the retry is the same message, counted by SQS"
    );
    assert!(at2 - at1 >= Duration::from_secs(2), "retried after {:?}", at2 - at1);

    // Attempts exhausted: the dead letter is in `<queue>.dlq` with its reason.
    let dead = DeadLetters::new(conn.clone(), &dlq);
    let start = Instant::now();
    while dead.count().await.unwrap() == 0 {
        assert!(start.elapsed() < DEADLINE, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let letters = dead.list(&Default::default(), 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("job 7 failed"), "{}", letters[0].reason);
    assert_eq!(letters[0].attempts, Some(2));

    // Replayed once the handler is healthy: handled again from attempt 1.
    healthy.store(0, Ordering::Release);
    let report = dead.replay(&Replay::new()).await.unwrap();
    assert_eq!(report.replayed(), 1);
    let (replayed, attempt, _) = recv(&mut seen, "the replayed job").await;
    assert_eq!((replayed.id, attempt), (7, 1));
    running.shutdown().await.unwrap();
    assert_eq!(dead.count().await.unwrap(), 0);
    delete_queues(&conn, &[&q, &dlq]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_handler_keeps_its_message_through_the_lease() {
    let Some(conn) = connect(&sqs_url()).await else { return };
    let q = unique("lease");
    // Visibility 2 s, work 5 s: without the lease SQS would hand the message out again.
    let (w, mut seen) = worker(0, 0, Duration::from_secs(5));
    let (running, producer) = start_jobs(
        w,
        "wait=1s&visibility=2s",
        Consumer::for_queue(Queue::durable(&q)).concurrency(2),
    )
    .await;
    producer.send(&job(1, "a")).await.unwrap();
    let (first, attempt, _) = recv(&mut seen, "the job").await;
    assert_eq!((first.id, attempt), (1, 1));
    // Well past the work and two visibility timeouts: no second delivery.
    let again = tokio::time::timeout(Duration::from_secs(8), seen.recv()).await;
    assert!(again.is_err(), "delivered again while its handler ran: {again:?}");
    running.shutdown().await.unwrap();
    assert_eq!(conn.queue_info(&q).await.unwrap().message_count, 0, "acked and deleted");
    delete_queues(&conn, &[&q, &format!("{q}.dlq")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_publish_arrives_no_earlier_than_asked() {
    let Some(conn) = connect(&sqs_url()).await else { return };
    let q = unique("delay");
    let (w, mut seen) = worker(0, 0, Duration::ZERO);
    let (running, producer) = start_jobs(w, "wait=1s", Consumer::for_queue(Queue::durable(&q))).await;
    let sent = Instant::now();
    producer
        .send_delayed(&job(3, "a"), Duration::from_secs(2))
        .await
        .unwrap();
    let (got, _, at) = recv(&mut seen, "the delayed job").await;
    assert_eq!(got.id, 3);
    assert!(at - sent >= Duration::from_secs(2), "arrived after {:?}", at - sent);
    running.shutdown().await.unwrap();
    delete_queues(&conn, &[&q, &format!("{q}.dlq")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fifo_message_holds_back_its_group_only() {
    let Some(conn) = connect(&sqs_url()).await else { return };
    let q = format!("{}.fifo", unique("fifo"));
    let (w, mut seen) = worker(1, 1, Duration::ZERO);
    let (running, producer) = start_jobs(
        w,
        "wait=1s",
        Consumer::for_queue(Queue::durable(&q))
            .concurrency(4)
            .retry(RetryPolicy::max_attempts(3).backoff(mqtransport::Backoff::fixed(Duration::from_secs(2))))
            .dead_letter_queue(format!("{}-dlq", q.trim_end_matches(".fifo"))),
    )
    .await;
    for (id, group) in [(1, "g1"), (2, "g1"), (3, "g2")] {
        let options = PublishOptions::default().header(mqtransport::headers::GROUP_ID, group);
        let confirmed = producer.publish_with(&job(id, group), options).await.unwrap();
        assert!(confirmed.is_confirmed());
    }
    let mut order = Vec::new();
    while order.len() < 4 {
        let (j, attempt, _) = recv(&mut seen, "a job").await;
        order.push((j.id, attempt));
    }
    let g1: Vec<_> = order.iter().filter(|(id, _)| *id != 3).copied().collect();
    assert_eq!(
        g1,
        vec![(1, 1), (1, 2), (2, 1)],
        "group g1 kept its order through the retry: {order:?}"
    );
    let g2_at = order.iter().position(|(id, _)| *id == 3).unwrap();
    let retry_at = order.iter().position(|o| *o == (1, 2)).unwrap();
    assert!(g2_at < retry_at, "group g2 did not wait for g1's retry: {order:?}");
    running.shutdown().await.unwrap();
    delete_queues(&conn, &[&q, &format!("{}-dlq", q.trim_end_matches(".fifo"))]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_map_to_the_same_sqs_queue_are_refused() {
    let Some(conn) = connect(&sqs_url()).await else { return };
    let base = unique("names");
    let dotted = format!("{base}.dlq");
    let dashed = format!("{base}-dlq");
    conn.declare(&Topology::new().queue(Queue::durable(&dotted)))
        .await
        .unwrap();
    let e = conn
        .declare(&Topology::new().queue(Queue::durable(&dashed)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Precondition);
    assert!(e.message().contains(&format!("queue '{dotted}'")), "{e}");
    delete_queues(&conn, &[&dotted]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_sqs_cannot_do_is_refused_at_build() {
    let Some(_conn) = connect(&sqs_url()).await else { return };
    let e = App::builder()
        .url(sqs_url())
        .consumer(Consumer::for_queue(Queue::durable(unique("prio")).max_priority(5)).handle(|_: Job| async {}))
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("priorities"), "{e}");
    let e = App::builder()
        .url(sqs_url())
        .consumer(
            Consumer::for_queue(Queue::durable(unique("excl")).exclusive())
                .dead_letter_queue(unique("excl-dlq"))
                .handle(|_: Job| async {}),
        )
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("exclusive"), "{e}");
}

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

async fn square(
    req: Square,
    envelope: mqtransport::Envelope,
    State(reply_to): State<mpsc::UnboundedSender<String>>,
) -> Result<Squared, HandlerError> {
    let _ = reply_to.send(envelope.properties().reply_to.clone().unwrap_or_default());
    if req.n < 0 {
        return Err(HandlerError::permanent(format!("cannot square {} here", req.n)));
    }
    Ok(Squared { n: req.n * req.n })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_goes_over_a_reply_queue_that_shutdown_deletes() {
    let Some(conn) = connect(&sqs_url()).await else { return };
    let q = unique("rpc");
    let dlq = format!("{q}.dlq");
    let (reply_to, mut addresses) = mpsc::unbounded_channel();
    let responder = App::with_state(reply_to)
        .url(url_with("wait=1s"))
        .consumer(Consumer::for_queue(Queue::durable(&q)).concurrency(8).handle(square))
        .build()
        .await
        .unwrap()
        .start()
        .await
        .unwrap();
    let caller = App::builder().url(url_with("wait=1s")).build().await.unwrap();
    let requester = caller
        .requester::<Square, Squared>(Route::queue(&q))
        .with_timeout(DEADLINE);
    let calls = (1..=20).map(|n| {
        let requester = requester.clone();
        async move { requester.request(&Square { n }).await }
    });
    for (n, answer) in (1..=20).zip(futures_util::future::join_all(calls).await) {
        assert_eq!(answer.unwrap(), Squared { n: n * n });
    }
    let address = recv(&mut addresses, "a request's reply_to").await;
    assert!(address.starts_with("mqt.reply."), "{address}");
    // A failing responder answers with a typed error at once, not at the deadline.
    let started = Instant::now();
    let failed = requester.request(&Square { n: -2 }).await.unwrap_err();
    assert!(
        matches!(&failed, RpcError::Failed { reason } if reason.contains("cannot square -2")),
        "{failed:?}"
    );
    assert!(
        started.elapsed() < DEADLINE / 2,
        "the failure took {:?}",
        started.elapsed()
    );
    assert!(
        conn.queue_info(&address).await.is_ok(),
        "the reply queue exists while the app runs"
    );
    caller.start().await.unwrap().shutdown().await.unwrap();
    let gone = conn.queue_info(&address).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "shutdown deletes the reply queue");
    responder.shutdown().await.unwrap();
    delete_queues(&conn, &[&q, &dlq]).await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Ping")]
struct Ping {
    n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "Pong")]
struct Pong {
    n: u64,
}

async fn ping(headers: Headers, p: Ping, State(seen): State<mpsc::UnboundedSender<(u64, Option<i64>)>>) {
    let priority = headers.get("priority").and_then(mqtransport::FieldValue::as_i64);
    let _ = seen.send((p.n, priority));
}

/// A plain boto3 service sends JSON (named by a `type` attribute, or not named at all) that the
/// app consumes, and receives what the app's producer sends, with its `type`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boto3_service_and_the_app_talk_both_ways() {
    let python = std::env::var("MQT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_boto3 = tokio::process::Command::new(&python)
        .args(["-c", "import boto3"])
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !has_boto3 {
        assert!(
            !mqtransport_testkit::brokers_required(),
            "{python} cannot import boto3 (set MQT_TEST_PYTHON), and MQT_REQUIRE_BROKERS=1"
        );
        println!("SKIPPED: boto3 not importable by {python} (set MQT_TEST_PYTHON)");
        return;
    }
    let Some(conn) = connect(&sqs_url()).await else { return };
    // Names without '.', so that the SQS names are the same for the boto3 side.
    let inbox = unique("boto-in");
    let outbox = unique("boto-out");
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let app = App::with_state(seen_tx)
        .url(url_with("wait=1s"))
        .topology(Topology::new().queue(Queue::durable(&outbox)))
        .consumer(
            Consumer::for_queue(Queue::durable(&inbox))
                .default_message::<Ping>()
                .handle(ping),
        )
        .build()
        .await
        .unwrap();
    let pongs = app.producer::<Pong>(Route::queue(&outbox));
    let running = app.start().await.unwrap();
    pongs.send(&Pong { n: 42 }).await.unwrap();

    let url = mqtransport::BrokerUrl::parse(&sqs_url()).unwrap();
    let endpoint = url.query("endpoint").unwrap_or("http://127.0.0.1:4566").to_owned();
    let region = if url.host().is_empty() { "us-east-1" } else { url.host() }.to_owned();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sqs_peer.py");
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(&python)
            .arg(script)
            .args([endpoint.as_str(), region.as_str(), inbox.as_str(), outbox.as_str()])
            .output(),
    )
    .await
    .expect("the boto3 peer finishes")
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    let got: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(got["body"], serde_json::json!({"n": 42}), "{line}");
    assert_eq!(got["type"], "Pong", "{line}");
    assert_eq!(got["content_type"], "application/json", "{line}");

    let mut pings = Vec::new();
    for _ in 0..3 {
        pings.push(recv(&mut seen, "a ping from boto3").await);
    }
    pings.sort_unstable();
    assert_eq!(pings, vec![(1, None), (2, None), (3, Some(7))]);
    running.shutdown().await.unwrap();
    delete_queues(&conn, &[&inbox, &outbox, &format!("{inbox}.dlq")]).await;
}
