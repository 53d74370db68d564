//! `mqt docs`: an app's AsyncAPI document (from `App::asyncapi`) as a page, written and
//! served; the served page checked in headless Chromium (`/usr/bin/chromium`, or
//! `MQT_CHROMIUM`; skipped when absent unless `MQT_REQUIRE_BROKERS=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Dir, announced_url, mqt, spawn_mqt};

use mqtransport::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An order placed in the shop.
#[derive(Debug, Serialize, Deserialize, JsonSchema, Message)]
#[message(name = "shop.order")]
struct Order {
    /// The order's number.
    id: u64,
    /// What was bought.
    lines: Vec<Line>,
}

/// One line of an order.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Line {
    /// The product.
    sku: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, Message)]
#[message(name = "shop.shipped")]
struct Shipped {
    order: u64,
}

async fn take(_: Order) {}

/// The AsyncAPI document of a small shop app, written to a file in `dir`.
async fn shop_document(dir: &Path) -> PathBuf {
    let app = App::builder()
        .url(format!("memory://docs-{}", std::process::id()))
        .name("shop")
        .consumer(Consumer::for_queue(Queue::durable("orders")).handle(take))
        .build()
        .await
        .unwrap();
    let _shipped = app.producer::<Shipped>(Route::queue("shipments"));
    let path = dir.join("asyncapi.json");
    std::fs::write(&path, serde_json::to_string_pretty(&app.asyncapi()).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn the_page_lists_the_messages_and_their_fields() {
    let dir = Dir::new("docs-html");
    let doc = shop_document(&dir.0).await;
    let page = dir.0.join("page.html");
    let out = mqt(&[
        "docs",
        "html",
        doc.to_str().unwrap(),
        "--output",
        page.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<h3>shop.order</h3>"), "{html}");
    assert!(
        html.contains("<td><code>id</code></td><td>integer</td><td>yes</td><td>The order's number.</td>"),
        "{html}"
    );
    assert!(html.contains("<td>array of Line</td>"), "{html}");
    assert!(
        html.contains("<h4>Line</h4>") && html.contains("<code>sku</code>"),
        "{html}"
    );
    assert!(html.contains("<h3>shop.shipped</h3>"), "{html}");
    assert!(
        html.contains("receive_queue_orders") && html.contains("send_queue_shipments_shop_shipped"),
        "{html}"
    );

    // Not AsyncAPI 3, not JSON, not there: refused by name, exit code 2.
    let v2 = dir.0.join("v2.json");
    std::fs::write(&v2, r#"{"asyncapi": "2.6.0"}"#).unwrap();
    let out = mqt(&["docs", "html", v2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqt reads AsyncAPI 3"));
    let garbage = dir.0.join("garbage.json");
    std::fs::write(&garbage, "{").unwrap();
    let out = mqt(&["docs", "serve", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not JSON"));
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("MQT_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("MQT_REQUIRE_BROKERS").as_deref() != Ok("1"),
        "headless Chromium not found at {} and MQT_REQUIRE_BROKERS=1",
        path.display()
    );
    println!("SKIPPED: headless Chromium not found at {}", path.display());
    None
}

#[tokio::test]
async fn the_served_page_loads_in_headless_chromium() {
    let Some(chromium) = chromium() else { return };
    let dir = Dir::new("docs-serve");
    let doc = shop_document(&dir.0).await;
    let mut server = spawn_mqt(&["docs", "serve", doc.to_str().unwrap(), "--addr", "127.0.0.1:0"]);
    let url = announced_url(&mut server).await;
    let profile = dir.0.join("chromium-profile");
    let dom = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--user-data-dir={}", profile.display()),
                "--dump-dom",
                &url,
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium answers within 2 minutes")
    .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<title>shop</title>"), "{dom}");
    assert!(dom.contains("<h3>shop.order</h3>"), "{dom}");
    for field in [
        "<code>id</code>",
        "<code>lines</code>",
        "<code>sku</code>",
        "<code>quantity</code>",
    ] {
        assert!(dom.contains(field), "{field} in {dom}");
    }
    assert!(dom.contains("<h3>shop.shipped</h3>"), "{dom}");
    let _ = server.kill().await;
}
