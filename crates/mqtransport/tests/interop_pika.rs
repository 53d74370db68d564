//! Request/reply with services written with pika, the way the RabbitMQ tutorials write them
//! (`tests/interop/rpc_server.py`, `tests/interop/rpc_client.py`), both ways, on RabbitMQ:
//! - our typed requester calls the tutorial's `rpc_server.py` (a plain-text body, no type, no
//!   content type);
//! - the tutorial's `rpc_client.py` (a server-named callback queue as `reply_to`, no type)
//!   calls our responder, a handler returning its reply.
//!
//! The Python interpreter is `MQT_TEST_PYTHON` (CI makes a virtualenv with pika), else
//! `python3`; without pika the tests print `SKIPPED`, unless `MQT_REQUIRE_BROKERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mqtransport::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// A request: a bare number on the wire (`30`), as the tutorials send it.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "tutorial.fib")]
struct Fib(u64);

/// A reply: a bare number.
#[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "tutorial.fibbed")]
struct Fibbed(u64);

async fn fib(Fib(n): Fib) -> Fibbed {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    Fibbed(a)
}

fn rabbit_url() -> String {
    std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// The Python with pika, and a reachable RabbitMQ; `None` (SKIPPED) otherwise, unless required.
async fn prerequisites() -> Option<String> {
    let python = std::env::var("MQT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_pika = Command::new(&python)
        .args(["-c", "import pika"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    let required = mqtransport_testkit::brokers_required();
    if !has_pika {
        assert!(
            !required,
            "{python} has no pika (set MQT_TEST_PYTHON), and MQT_REQUIRE_BROKERS=1"
        );
        println!("SKIPPED: pika not importable by {python} (set MQT_TEST_PYTHON)");
        return None;
    }
    mqtransport_testkit::reachable_or_skip("RabbitMQ", &rabbit_url(), mqtransport::connect(&rabbit_url()).await)?;
    Some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_requester_calls_the_tutorial_rpc_server() {
    let Some(python) = prerequisites().await else { return };
    let queue = format!("mqt-pika-rpc-server-{}", std::process::id());
    let mut server = Command::new(&python)
        .arg(script("rpc_server.py"))
        .args([rabbit_url().as_str(), queue.as_str(), "1"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the pika server starts");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the pika server is ready in time")
        .expect("reads");
    assert_eq!(ready.as_deref(), Some("ready"));

    let caller = App::builder().url(rabbit_url()).build().await.expect("app");
    let fib = caller.requester::<Fib, Fibbed>(Route::queue(queue.as_str()));
    assert_eq!(
        fib.request(&Fib(30)).await.expect("the pika server answers"),
        Fibbed(832_040)
    );
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("the pika server exits after one request")
        .expect("waits");
    assert!(status.success(), "{status}");
    caller.transport().close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_rpc_client_calls_our_responder() {
    let Some(python) = prerequisites().await else { return };
    let queue = format!("mqt-pika-rpc-client-{}", std::process::id());
    let app = App::builder()
        .url(rabbit_url())
        .consumer(
            Consumer::for_queue(Queue::durable(&queue).expires(Duration::from_secs(600)))
                // pika sends no type: the queue says what its messages are.
                .default_message::<Fib>()
                .handle(fib),
        )
        .build()
        .await
        .expect("app");
    let running = app.start().await.expect("start");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(&python)
            .arg(script("rpc_client.py"))
            .args([rabbit_url().as_str(), queue.as_str(), "30"])
            .output(),
    )
    .await
    .expect("the pika client finishes")
    .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "832040");
    running.shutdown().await.expect("shutdown");
    let conn = mqtransport::connect(&rabbit_url()).await.expect("connect");
    for q in [queue.clone(), format!("{queue}.dlq")] {
        let _ = conn.delete_queue(&q, Default::default()).await;
    }
    conn.close().await.expect("close");
}
