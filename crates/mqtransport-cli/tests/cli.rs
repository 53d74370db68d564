//! The `mqt` binary run as a user runs it: against the embedded broker and RabbitMQ
//! (`MQT_TEST_AMQP_URL`; skipped when unreachable unless `MQT_REQUIRE_BROKERS=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{amqp_url, announced_url, mqt, spawn_mqt, text};

use mqtransport::prelude::*;
use mqtransport::{DeleteQueue, DynTransport, Transport};
use serde_json::Value;

/// Succeeded, or panics with what it printed.
fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "mqt failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Failed with a message containing `expected` on standard error.
fn fails_with(out: &Output, expected: &str) {
    assert!(!out.status.success(), "mqt should have failed: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(expected),
        "stderr does not say '{expected}':\n{}",
        text(&out.stderr)
    );
}

/// A RabbitMQ connection for setup and cleanup, or `None` (skipped).
async fn rabbit() -> Option<DynTransport> {
    let url = amqp_url();
    let connected = mqtransport::connect(&url).await;
    mqtransport_testkit::reachable_or_skip("RabbitMQ", &url, connected)
}

fn unique(base: &str) -> String {
    format!("mqt-cli-{base}-{}-{}", std::process::id(), fastrand_suffix())
}

fn fastrand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos % 1_000_000
}

/// A bench's JSON report with the fields a script would read, and sane values.
fn check_report(report: &Value, count: u64) {
    for field in ["published", "confirmed", "consumed"] {
        assert_eq!(report[field], count, "{field} in {report:#}");
    }
    assert_eq!(report["returned"], 0);
    assert!(report["publish_rate"].as_f64().unwrap() > 0.0);
    assert!(report["consume_rate"].as_f64().unwrap() > 0.0);
    for latency in ["latency", "confirm_latency"] {
        let l = &report[latency];
        let (p50, p99, max) = (
            l["p50_us"].as_u64().unwrap(),
            l["p99_us"].as_u64().unwrap(),
            l["max_us"].as_u64().unwrap(),
        );
        assert!(p50 <= p99 && p99 <= max, "{latency}: {l}");
        assert_eq!(l["count"], count, "{latency}: {l}");
    }
}

#[test]
fn bench_on_the_embedded_broker_reports_valid_json() {
    let out = ok(mqt(&["bench", "--count", "2000", "--producers", "2", "--json"]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_report(&report, 2000);
    assert_eq!(report["broker"], "memory://");
    assert_eq!(report["queue_type"], "classic");
}

#[test]
fn bench_prints_a_table_for_people() {
    let out = ok(mqt(&["bench", "--count", "500"]));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("publish (to confirm)"), "{stdout}");
    assert!(stdout.contains("consume (end to end)"), "{stdout}");
    assert!(stdout.contains("p99"), "{stdout}");
}

#[tokio::test]
async fn bench_on_rabbitmq_with_two_queues_deletes_them() {
    let Some(conn) = rabbit().await else { return };
    let url = amqp_url();
    let out = ok(mqt(&[
        "--url",
        &url,
        "bench",
        "--count",
        "3000",
        "--queues",
        "2",
        "--consumers",
        "2",
        "--json",
    ]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_report(&report, 3000);
    assert!(
        !text(&out.stdout).contains("guest:guest"),
        "the password is never printed"
    );
    for q in report["queues"].as_array().unwrap() {
        let q = q.as_str().unwrap();
        let info = conn.queue_info(q).await;
        assert!(info.is_err(), "queue {q} was left behind");
    }
}

#[tokio::test]
async fn bench_serves_prometheus_metrics_while_it_runs() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut child = spawn_mqt(&[
        "bench",
        "--duration",
        "3",
        "--rate",
        "200",
        "--prometheus",
        "127.0.0.1:0",
        "--json",
    ]);
    let url = announced_url(&mut child).await;
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{url}"))
        .to_owned();
    // Scrape until the publishes show (the first second may have none yet).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        if body.contains("messaging_client_sent_messages") && body.contains("mqtransport_consumer_in_flight") {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "no metrics: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("outcome=\"confirmed\""), "{body}");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn publish_then_consume_round_trip_on_rabbitmq() {
    let Some(conn) = rabbit().await else { return };
    let url = amqp_url();
    let q = unique("roundtrip");
    conn.declare(&Topology::new().queue(Queue::durable(&q))).await.unwrap();

    let out = ok(mqt(&[
        "--url",
        &url,
        "publish",
        "--queue",
        &q,
        "--type",
        "shop.order",
        "-H",
        "tenant=acme",
        "-H",
        "n=3",
        "--count",
        "2",
        r#"{"id": 7}"#,
    ]));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("2 of 2 message(s) to queue"), "{stdout}");
    assert_eq!(stdout.matches(": confirmed").count(), 2, "{stdout}");

    // Look without taking, then take.
    ok(mqt(&["--url", &url, "consume", &q, "--count", "2", "--requeue"]));
    let out = ok(mqt(&["--url", &url, "consume", &q, "--count", "2", "--json"]));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let m = &lines[0];
    assert_eq!(m["body"]["id"], 7);
    assert_eq!(m["properties"]["type"], "shop.order");
    assert_eq!(m["properties"]["content_type"], "application/json");
    assert_eq!(m["headers"]["tenant"], "acme");
    assert_eq!(m["headers"]["n"], 3);
    assert_eq!(m["redelivered"], true, "the requeued messages come back redelivered");
    assert_eq!(conn.queue_info(&q).await.unwrap().message_count, 0);

    // Lines from standard input, one message each.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqt"))
        .args(["--url", &url, "publish", "--queue", &q, "--lines", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"one\ntwo\n\nthree\n").unwrap();
    let out = ok(child.wait_with_output().unwrap());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["messages"].as_array().unwrap().len(), 3);
    let out = ok(mqt(&["--url", &url, "consume", &q, "--idle", "2", "--json"]));
    let bodies: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(bodies, ["one", "two", "three"]);
    conn.delete_queue(&q, DeleteQueue::default()).await.unwrap();
}

#[derive(Debug, serde::Serialize, serde::Deserialize, Message)]
#[message(name = "shop.refund")]
struct Refund {
    id: u64,
}

async fn refuse(_: Refund) -> Result<(), HandlerError> {
    Err(HandlerError::permanent("account closed"))
}

#[tokio::test]
async fn dlq_list_show_replay_and_purge_on_rabbitmq() {
    let Some(conn) = rabbit().await else { return };
    let url = amqp_url();
    let q = unique("refunds");
    let dlq = format!("{q}.dlq");
    // An app whose handler refuses every refund: two dead letters with the reason.
    let app = App::builder()
        .url(url.clone())
        .consumer(Consumer::for_queue(Queue::durable(&q)).handle(refuse))
        .build()
        .await
        .unwrap();
    let refunds = app.producer::<Refund>(Route::queue(q.as_str()));
    let running = app.start().await.unwrap();
    refunds.send(&Refund { id: 1 }).await.unwrap();
    refunds.send(&Refund { id: 2 }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while conn.queue_info(&dlq).await.unwrap().message_count < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no dead letters");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await.unwrap();

    let out = ok(mqt(&["--url", &url, "dlq", "list", &dlq, "--json"]));
    let letters: Value = serde_json::from_slice(&out.stdout).unwrap();
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["name"], "shop.refund");
    assert!(letters[0]["reason"].as_str().unwrap().contains("account closed"));
    let first_id = letters[0]["message_id"].as_str().unwrap().to_owned();

    let out = ok(mqt(&["--url", &url, "dlq", "show", &dlq, &first_id]));
    assert!(text(&out.stdout).contains("account closed"));
    let out = ok(mqt(&["--url", &url, "dlq", "summary", &dlq]));
    assert!(text(&out.stdout).contains("shop.refund"));

    // A dry run changes nothing; a replay of one id moves it back to its queue.
    let out = ok(mqt(&["--url", &url, "dlq", "replay", &dlq, "--dry-run"]));
    assert!(
        text(&out.stdout).contains("would replay 2 of 2 examined"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(conn.queue_info(&dlq).await.unwrap().message_count, 2);
    let out = ok(mqt(&[
        "--url", &url, "dlq", "replay", &dlq, "--id", &first_id, "--json",
    ]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["replayed"], 1);
    assert_eq!(report["entries"][0]["action"], "replayed");
    let out = ok(mqt(&["--url", &url, "consume", &q, "--count", "1", "--json"]));
    let replayed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(replayed["properties"]["message_id"], first_id.as_str());
    assert_eq!(replayed["headers"]["x-mqt-replayed"], 1);

    let out = ok(mqt(&["--url", &url, "dlq", "purge", &dlq]));
    assert!(
        text(&out.stdout).contains("purged 1 dead letter(s)"),
        "{}",
        text(&out.stdout)
    );
    conn.delete_queue(&q, DeleteQueue::default()).await.unwrap();
    conn.delete_queue(&dlq, DeleteQueue::default()).await.unwrap();
}

#[test]
fn bad_input_gets_a_clear_message_and_a_failing_exit() {
    fails_with(&mqt(&["--url", "kafka://localhost", "bench"]), "kafka");
    fails_with(
        &mqt(&["consume", "no-such-queue", "--count", "1"]),
        "queue 'no-such-queue' does not exist",
    );
    fails_with(
        &mqt(&["publish", "--queue", "no-such-queue", "x"]),
        "queue 'no-such-queue' does not exist",
    );
    fails_with(
        &mqt(&["publish", "--queue", "q", "--file", "/no/such/file.json"]),
        "cannot read '/no/such/file.json'",
    );
    fails_with(
        &mqt(&["publish", "--queue", "q", "-H", "novalue", "x"]),
        "not KEY=VALUE",
    );
    fails_with(&mqt(&["bench", "--size", "4"]), "--size must be at least 8");
    fails_with(&mqt(&["dlq", "list", "missing.dlq"]), "missing.dlq");
    fails_with(
        &mqt(&["dlq", "replay", "x.dlq", "--to-route", "nocolon"]),
        "EXCHANGE:ROUTING_KEY",
    );
    // An unreachable broker: the cause is printed, the password never.
    let out = mqt(&[
        "--url",
        "amqp://guest:s3cr3t-pw@127.0.0.1:1/%2f",
        "consume",
        "q",
        "--count",
        "1",
    ]);
    fails_with(&out, "cannot connect to amqp://guest:***@127.0.0.1:1");
    assert!(!text(&out.stderr).contains("s3cr3t-pw"));
    // amqps:// is built in: the failure is the unreachable port, not a missing feature.
    let out = mqt(&[
        "--url",
        "amqps://guest:s3cr3t-pw@127.0.0.1:1/%2f",
        "consume",
        "q",
        "--count",
        "1",
    ]);
    fails_with(&out, "cannot connect to amqps://guest:***@127.0.0.1:1");
    assert!(!text(&out.stderr).contains("feature"), "{}", text(&out.stderr));
    // Every command explains itself with an example.
    let commands: &[&[&str]] = &[
        &["bench"],
        &["publish"],
        &["consume"],
        &["dlq"],
        &["dlq", "list"],
        &["dlq", "summary"],
        &["dlq", "show"],
        &["dlq", "replay"],
        &["dlq", "purge"],
        &["topology"],
        &["topology", "apply"],
        &["topology", "diff"],
        &["topology", "lint"],
        &["topology", "export"],
        &["docs"],
        &["docs", "serve"],
        &["docs", "html"],
    ];
    for command in commands {
        let out = ok(mqt(&[*command, &["--help"]].concat()));
        assert!(text(&out.stdout).contains("Example"), "{command:?}");
    }
}

#[tokio::test]
async fn publish_to_an_exchange_without_a_route_fails_and_says_so() {
    let Some(conn) = rabbit().await else { return };
    let url = amqp_url();
    let exchange = unique("shop");
    conn.declare(&Topology::new().exchange(mqtransport::Exchange::topic(&exchange)))
        .await
        .unwrap();
    let out = mqt(&[
        "--url",
        &url,
        "publish",
        "--exchange",
        &exchange,
        "--routing-key",
        "nobody.listens",
        "x",
    ]);
    fails_with(&out, "returned");
    assert!(text(&out.stdout).contains("0 of 1"), "{}", text(&out.stdout));
    conn.delete_exchange(&exchange, false).await.unwrap();
}
