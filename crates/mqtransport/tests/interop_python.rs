//! Our apps beside services written in Python, both ways, on RabbitMQ, with the real clients
//! (`tests/interop/*.py`):
//! - pika, the way the RabbitMQ tutorials write it: our typed requester calls the tutorial's
//!   `rpc_server.py` (a plain-text body, no type, no content type), and the tutorial's
//!   `rpc_client.py` (a server-named callback queue as `reply_to`) calls our responder;
//! - Kombu: its JSON messages (no type) reach our consumer, a compressed one is dead-lettered
//!   naming its compression, and ours reach a Kombu consumer;
//! - FastStream: its messages reach our consumer, and ours reach a typed (pydantic)
//!   FastStream subscriber.
//!
//! The Python interpreter is `MQT_TEST_PYTHON` (CI makes a virtualenv with pika, Kombu and
//! FastStream), else `python3`; without a client the tests print `SKIPPED`, unless
//! `MQT_REQUIRE_BROKERS=1`.

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

/// The Python that imports `module`, and a reachable RabbitMQ; `None` (SKIPPED) otherwise,
/// unless required.
async fn prerequisites(module: &str) -> Option<String> {
    let python = std::env::var("MQT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let importable = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    let required = mqtransport_testkit::brokers_required();
    if !importable {
        assert!(
            !required,
            "{python} cannot import {module} (set MQT_TEST_PYTHON), and MQT_REQUIRE_BROKERS=1"
        );
        println!("SKIPPED: {module} not importable by {python} (set MQT_TEST_PYTHON)");
        return None;
    }
    mqtransport_testkit::reachable_or_skip("RabbitMQ", &rabbit_url(), mqtransport::connect(&rabbit_url()).await)?;
    Some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_requester_calls_the_tutorial_rpc_server() {
    let Some(python) = prerequisites("pika").await else {
        return;
    };
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
    let Some(python) = prerequisites("pika").await else {
        return;
    };
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

/// What Kombu and FastStream services exchange with ours: plain JSON objects, no type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "orders.created")]
struct OrderCreated {
    id: u64,
    customer: String,
}

/// Runs `peer` (a script in `tests/interop`) with `args` after the URL and queue; for a
/// consumer, waits until it says it is ready. The child is killed when dropped.
async fn start_peer(python: &str, peer: &str, queue: &str, args: &[&str]) -> tokio::process::Child {
    let mut command = Command::new(python);
    command
        .arg(script(peer))
        .args([rabbit_url().as_str(), queue])
        .args(args);
    spawn(command, args.first() == Some(&"consume")).await
}

/// Spawns `command` with its output piped; with `wait_ready`, waits until it prints `ready`.
async fn spawn(mut command: Command, wait_ready: bool) -> tokio::process::Child {
    let mut child = command
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the program starts");
    if wait_ready {
        // Read up to "ready" one byte at a time, so that nothing after it is taken.
        let stdout = child.stdout.as_mut().expect("stdout");
        let ready = async {
            let mut line = Vec::new();
            loop {
                let mut byte = [0u8; 1];
                if tokio::io::AsyncReadExt::read(stdout, &mut byte).await.expect("reads") == 0 {
                    panic!("the program ended before it was ready");
                }
                if byte[0] == b'\n' {
                    if line == b"ready" {
                        return;
                    }
                    line.clear();
                } else {
                    line.push(byte[0]);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .expect("the program is ready in time");
    }
    child
}

/// Waits for a program to exit successfully; returns what it printed.
async fn finish(child: tokio::process::Child) -> String {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the program finishes")
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits for the peer to exit successfully; returns the JSON lines it printed.
async fn finish_peer(child: tokio::process::Child) -> Vec<serde_json::Value> {
    finish(child)
        .await
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// An app consuming `queue` (durable, as the peers declare it): untyped messages are orders.
async fn order_consumer(
    queue: &str,
) -> (
    mqtransport::Running,
    tokio::sync::mpsc::UnboundedReceiver<OrderCreated>,
    tokio::sync::mpsc::UnboundedReceiver<mqtransport::Disposition>,
) {
    async fn created(o: OrderCreated, State(tx): State<tokio::sync::mpsc::UnboundedSender<OrderCreated>>) {
        let _ = tx.send(o);
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (settled_tx, settled) = tokio::sync::mpsc::unbounded_channel();
    let app = App::with_state(tx)
        .url(rabbit_url())
        .on_settle(move |e| {
            let _ = settled_tx.send(e.disposition.clone());
        })
        .consumer(
            Consumer::for_queue(Queue::durable(queue))
                .default_message::<OrderCreated>()
                .handle(created),
        )
        .build()
        .await
        .expect("app");
    (app.start().await.expect("start"), rx, settled)
}

/// An app that declares the durable `queue` (as the peers declare it) and publishes to it.
async fn declaring(queue: &str) -> App {
    App::builder()
        .url(rabbit_url())
        .topology(Topology::new().queue(Queue::durable(queue)))
        .build()
        .await
        .expect("app")
}

async fn delete_queues(queue: &str) {
    let conn = mqtransport::connect(&rabbit_url()).await.expect("connect");
    for q in [queue.to_owned(), format!("{queue}.dlq")] {
        let _ = conn.delete_queue(&q, Default::default()).await;
    }
    conn.close().await.expect("close");
}

async fn next<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} in time"))
        .unwrap_or_else(|| panic!("{what}: the app stopped"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kombu_messages_reach_our_consumer() {
    let Some(python) = prerequisites("kombu").await else {
        return;
    };
    let queue = format!("mqt-kombu-in-{}", std::process::id());
    let (running, mut orders, mut settled) = order_consumer(&queue).await;
    let publish = start_peer(
        &python,
        "kombu_peer.py",
        &queue,
        &["publish", r#"{"id": 7, "customer": "ada"}"#],
    )
    .await;
    finish_peer(publish).await;
    assert_eq!(
        next(&mut orders, "the Kombu order").await,
        OrderCreated {
            id: 7,
            customer: "ada".into()
        }
    );
    assert!(matches!(
        next(&mut settled, "its ack").await,
        mqtransport::Disposition::Acked
    ));

    // Compressed by Kombu: refused, naming the compression, and kept in the dead-letter queue.
    let zipped = start_peer(
        &python,
        "kombu_peer.py",
        &queue,
        &["publish", r#"{"id": 8, "customer": "bob"}"#, "zlib"],
    )
    .await;
    finish_peer(zipped).await;
    match next(&mut settled, "the compressed message's fate").await {
        mqtransport::Disposition::DeadLettered { reason, .. } => {
            assert!(reason.contains("compression header"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    running.shutdown().await.expect("shutdown");
    delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_messages_reach_a_kombu_consumer() {
    let Some(python) = prerequisites("kombu").await else {
        return;
    };
    let queue = format!("mqt-kombu-out-{}", std::process::id());
    let app = declaring(&queue).await;
    let consumer = start_peer(&python, "kombu_peer.py", &queue, &["consume", "2"]).await;
    let orders = app.producer::<OrderCreated>(Route::queue(queue.as_str()));
    for (id, customer) in [(1, "ada"), (2, "bob")] {
        orders
            .send(&OrderCreated {
                id,
                customer: customer.into(),
            })
            .await
            .expect("send");
    }
    let seen = finish_peer(consumer).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (got, id) in seen.iter().zip([1, 2]) {
        assert_eq!(got["payload"]["id"], id, "{got}");
        assert_eq!(got["content_type"], "application/json", "{got}");
        assert_eq!(got["type"], "orders.created", "{got}");
        assert_eq!(got["delivery_mode"], 2, "{got}");
        assert!(got["message_id"].as_str().is_some_and(|m| !m.is_empty()), "{got}");
    }
    app.transport().close().await.expect("close");
    delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faststream_messages_reach_our_consumer() {
    let Some(python) = prerequisites("faststream").await else {
        return;
    };
    let queue = format!("mqt-faststream-in-{}", std::process::id());
    let (running, mut orders, _settled) = order_consumer(&queue).await;
    let publish = start_peer(
        &python,
        "faststream_peer.py",
        &queue,
        &["publish", r#"{"id": 9, "customer": "cy"}"#],
    )
    .await;
    finish_peer(publish).await;
    assert_eq!(
        next(&mut orders, "the FastStream order").await,
        OrderCreated {
            id: 9,
            customer: "cy".into()
        }
    );
    running.shutdown().await.expect("shutdown");
    delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_messages_reach_a_typed_faststream_subscriber() {
    let Some(python) = prerequisites("faststream").await else {
        return;
    };
    let queue = format!("mqt-faststream-out-{}", std::process::id());
    let app = declaring(&queue).await;
    let subscriber = start_peer(&python, "faststream_peer.py", &queue, &["consume", "1"]).await;
    app.producer::<OrderCreated>(Route::queue(queue.as_str()))
        .send(&OrderCreated {
            id: 3,
            customer: "dee".into(),
        })
        .await
        .expect("send");
    let seen = finish_peer(subscriber).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["id"], 3);
    assert_eq!(seen[0]["customer"], "dee");
    assert_eq!(seen[0]["content_type"], "application/json");
    assert!(seen[0]["message_id"].as_str().is_some_and(|m| !m.is_empty()));
    app.transport().close().await.expect("close");
    delete_queues(&queue).await;
}

/// The `tutorials` example and the tutorials' pika programs (`tests/interop/tutorial_peer.py`),
/// each tutorial both ways. One test: the tutorials' names are fixed, so they run in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorials_interoperate_with_their_pika_programs() {
    let Some(python) = prerequisites("pika").await else {
        return;
    };
    let built = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "mqtransport", "--example", "tutorials"])
        .status()
        .await
        .expect("cargo runs");
    assert!(built.success(), "the tutorials example builds");
    // target/<profile>/deps/<this test> → target/<profile>/examples/tutorials
    let exe = std::env::current_exe().expect("the test's path");
    let tutorials = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the target directory")
        .join("examples")
        .join("tutorials");
    let ours = |args: &[&str], ready: bool| {
        let mut command = Command::new(&tutorials);
        command.args(args).env("MQT_URL", rabbit_url());
        spawn(command, ready)
    };
    let pika = |args: &[&str], ready: bool| {
        let mut command = Command::new(&python);
        command.arg(script("tutorial_peer.py")).arg(rabbit_url()).args(args);
        spawn(command, ready)
    };

    // 1. Hello World.
    finish(pika(&["hello", "send", "Hello from pika"], false).await).await;
    let got = finish(ours(&["hello", "receive", "1"], false).await).await;
    assert!(got.contains(" [x] Received Hello from pika"), "{got}");
    let receiver = pika(&["hello", "receive", "1"], true).await;
    finish(ours(&["hello", "send", "Hello from Rust"], false).await).await;
    let got = finish(receiver).await;
    assert!(got.contains(" [x] Received Hello from Rust"), "{got}");

    // 2. Work queues.
    finish(pika(&["work", "send", "pika task.", "pika task.."], false).await).await;
    let got = finish(ours(&["work-queues", "work", "2"], false).await).await;
    assert!(
        got.contains("done: pika task.") && got.contains("done: pika task.."),
        "{got}"
    );
    let worker = pika(&["work", "work", "2"], true).await;
    finish(ours(&["work-queues", "send", "rust task.", "rust task.."], false).await).await;
    let got = finish(worker).await;
    assert!(
        got.contains(" [x] Done rust task.") && got.contains(" [x] Done rust task.."),
        "{got}"
    );

    // 3 to 5. Publish/subscribe, routing, topics: each side subscribes, the other emits.
    for (tutorial, exchange, kind, key, pattern) in [
        ("publish-subscribe", "logs", "fanout", "", ""),
        ("routing", "direct_logs", "direct", "error", "error"),
        ("topics", "topic_logs", "topic", "kern.critical", "kern.*"),
    ] {
        let receiver = pika(&["logs", "receive", exchange, kind, "1", pattern], true).await;
        let emit: Vec<&str> = if key.is_empty() {
            vec![tutorial, "emit", "from Rust"]
        } else {
            vec![tutorial, "emit", key, "from Rust"]
        };
        finish(ours(&emit, false).await).await;
        let got = finish(receiver).await;
        assert!(got.contains(&format!(" [x] {key}:from Rust")), "{tutorial}: {got}");

        let subscriber = ours(&[tutorial, "receive", "1", pattern], true).await;
        finish(pika(&["logs", "emit", exchange, kind, key, "from pika"], false).await).await;
        let got = finish(subscriber).await;
        let line = if key.is_empty() {
            " [x] from pika".to_owned()
        } else {
            format!(" [x] {key}:from pika")
        };
        assert!(got.contains(&line), "{tutorial}: {got}");
    }

    // 6. RPC: the tutorial's client calls our server, our client calls the tutorial's server.
    let server = ours(&["rpc", "serve", "1"], true).await;
    let mut client = Command::new(&python);
    client
        .arg(script("rpc_client.py"))
        .args([rabbit_url().as_str(), "rpc_queue", "30"]);
    let got = finish(spawn(client, false).await).await;
    assert_eq!(got.trim(), "832040");
    finish(server).await;
    let mut pika_server = Command::new(&python);
    pika_server
        .arg(script("rpc_server.py"))
        .args([rabbit_url().as_str(), "rpc_queue", "1"]);
    let pika_server = spawn(pika_server, true).await;
    let got = finish(ours(&["rpc", "call", "30"], false).await).await;
    assert!(got.contains(" [.] Got 832040"), "{got}");
    finish(pika_server).await;

    let conn = mqtransport::connect(&rabbit_url()).await.expect("connect");
    for q in [
        "hello",
        "hello.dlq",
        "task_queue",
        "task_queue.dlq",
        "rpc_queue",
        "rpc_queue.dlq",
    ] {
        let _ = conn.delete_queue(q, Default::default()).await;
    }
    for x in ["logs", "direct_logs", "topic_logs"] {
        let _ = conn.delete_exchange(x, false).await;
    }
    conn.close().await.expect("close");
}
