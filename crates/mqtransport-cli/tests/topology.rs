//! `mqt topology`: apply, diff (equal, then different), lint and export, run as a user runs
//! the binary: against the shared RabbitMQ (unique names, deleted after) and, for what needs
//! the management API, a private RabbitMQ node running the plugin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Dir, amqp_url, mqt, show, text};

use mqtransport::{Binding, DeleteQueue, DynTransport, Transport};
use serde_json::Value;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A topology of `prefix`'s own: an exchange, a queue of `max_length`, a binding.
fn topology_toml(prefix: &str, max_length: u32) -> String {
    format!(
        r#"
[[exchanges]]
name = "{prefix}shop"
type = "topic"

[[queues]]
name = "{prefix}orders"
arguments = {{ "x-max-length" = {max_length}, "x-overflow" = "reject-publish" }}

[[bindings]]
exchange = "{prefix}shop"
queue = "{prefix}orders"
routing_key = "order.*"
"#
    )
}

async fn cleanup(conn: &DynTransport, prefix: &str) {
    conn.delete_queue(&format!("{prefix}orders"), DeleteQueue::default())
        .await
        .unwrap();
    conn.delete_exchange(&format!("{prefix}shop"), false).await.unwrap();
}

#[tokio::test]
async fn diff_finds_missing_entities_then_nothing_then_a_different_argument() {
    let url = amqp_url();
    let connected = mqtransport::connect(&url).await;
    let Some(conn) = mqtransport_testkit::reachable_or_skip("RabbitMQ", &url, connected) else {
        return;
    };
    let dir = Dir::new("diff");
    let prefix = format!("mqt-topo-{}-", std::process::id());
    let file = dir.write("topology.toml", &topology_toml(&prefix, 100));

    // Nothing declared yet: both entities are missing, and the exit code says they differ.
    let out = mqt(&["--url", &url, "topology", "diff", path(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("missing: exchange '{prefix}shop'")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("missing: queue '{prefix}orders'")), "{stdout}");
    assert!(
        conn.queue_info(&format!("{prefix}orders")).await.is_err(),
        "diff changed nothing"
    );

    let out = mqt(&["--url", &url, "topology", "apply", path(&file)]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&out.stdout).contains("declared 1 exchange(s), 1 queue(s) and 1 binding(s)"));

    // Equal: exit 0. The shared broker has no management API: the binding is not checked, and
    // the output says so.
    let yaml = dir.write(
        "topology.yaml",
        &mqtransport_cli::topology::TopologyFile::parse(
            &topology_toml(&prefix, 100),
            mqtransport_cli::topology::Format::Toml,
        )
        .unwrap()
        .render(mqtransport_cli::topology::Format::Yaml)
        .unwrap(),
    );
    let out = mqt(&["--url", &url, "topology", "diff", path(&yaml)]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&out.stdout).contains("matches"), "{}", show(&out));
    assert!(text(&out.stderr).contains("1 binding(s) not checked"), "{}", show(&out));

    // A different argument: exit 1 naming it, and the queue keeps its own.
    let changed = dir.write("changed.toml", &topology_toml(&prefix, 500));
    let out = mqt(&["--url", &url, "topology", "diff", path(&changed), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["same"], false);
    let d = &report["differences"][0];
    assert_eq!(d["difference"], "different");
    assert_eq!(d["entity"], format!("queue '{prefix}orders'"));
    assert!(d["detail"].as_str().unwrap().contains("x-max-length"), "{d}");
    let out = mqt(&["--url", &url, "topology", "diff", path(&file)]);
    assert!(out.status.success(), "the broker is as it was: {}", show(&out));
    cleanup(&conn, &prefix).await;
}

#[test]
fn lint_finds_pitfalls_and_bad_files_are_refused_clearly() {
    let dir = Dir::new("lint");
    let risky = dir.write(
        "risky.toml",
        r#"
[[exchanges]]
name = "shop"
type = "topic"

[[queues]]
name = "mirrored"
arguments = { "x-ha-policy" = "all", "x-message-ttl" = 60000 }
"#,
    );
    let out = mqt(&["topology", "lint", path(&risky)]);
    assert!(out.status.success(), "warnings alone do not fail: {}", show(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("x-ha-policy"), "{stdout}");
    assert!(stdout.contains("without x-dead-letter-exchange"), "{stdout}");
    assert!(stdout.contains("nothing in this file binds it"), "{stdout}");
    let out = mqt(&["topology", "lint", path(&risky), "--strict"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    let typo = dir.write("typo.toml", "[[queues]]\nname = \"q\"\ndurabel = false\n");
    let out = mqt(&["topology", "lint", path(&typo)]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("durabel"), "{}", show(&out));
    let out = mqt(&["topology", "apply", "/no/such/topology.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read '/no/such/topology.toml'"),
        "{}",
        show(&out)
    );
    let out = mqt(&["topology", "lint", path(&dir.write("t.txt", ""))]);
    assert!(
        text(&out.stderr).contains(".toml, .yaml, .yml or .json"),
        "{}",
        show(&out)
    );
    let out = mqt(&["topology", "export"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not RabbitMQ"), "{}", show(&out));
}

/// With RabbitMQ's management API (a private node running the plugin): diff checks bindings,
/// and export writes back the file that was applied.
#[tokio::test]
async fn with_the_management_api_diff_checks_bindings_and_export_round_trips() {
    let Some(bin) = mqtransport_testkit::rabbit_node::rabbitmq_bin_or_skip() else {
        return;
    };
    let node = mqtransport_testkit::rabbit_node::RabbitNode::start_with_management(&bin, "mgmt")
        .await
        .expect("a node with the management plugin starts");
    let url = node.url();
    let management = node.management_url().unwrap();
    let dir = Dir::new("mgmt");
    let prefix = "app.";
    let file = dir.write("topology.toml", &topology_toml(prefix, 100));
    let out = mqt(&["--url", &url, "topology", "apply", path(&file)]);
    assert!(out.status.success(), "{}", show(&out));

    // The plugin's HTTP listener may come up just after the node says it started.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = mqt(&[
            "--url",
            &url,
            "topology",
            "diff",
            path(&file),
            "--management",
            &management,
        ]);
        if out.status.success() {
            assert!(!text(&out.stderr).contains("not checked"), "{}", show(&out));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", show(&out));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Export (by prefix) gives back the file.
    let exported = dir.0.join("exported.toml");
    let out = mqt(&[
        "--url",
        &url,
        "topology",
        "export",
        "--management",
        &management,
        "--prefix",
        prefix,
        "--output",
        path(&exported),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let read = |p: &Path| mqtransport_cli::topology::TopologyFile::read(p).unwrap();
    assert_eq!(
        read(&exported),
        read(&file),
        "{}",
        std::fs::read_to_string(&exported).unwrap()
    );

    // A binding removed behind the file's back is reported missing.
    let conn = mqtransport::connect(&url).await.unwrap();
    conn.unbind(&Binding::queue(
        format!("{prefix}orders"),
        format!("{prefix}shop"),
        "order.*",
    ))
    .await
    .unwrap();
    let out = mqt(&[
        "--url",
        &url,
        "topology",
        "diff",
        path(&file),
        "--management",
        &management,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stdout).contains(&format!("missing: binding {prefix}shop -> {prefix}orders ('order.*')")),
        "{}",
        show(&out)
    );
    // A wrong password is refused with the reason, the password not shown.
    let wrong = management.replace("guest:guest", "guest:wrong-pw");
    let out = mqt(&["--url", &url, "topology", "export", "--management", &wrong]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("refused user 'guest'"), "{}", show(&out));
    assert!(!text(&out.stderr).contains("wrong-pw"));
    drop(node);
}
