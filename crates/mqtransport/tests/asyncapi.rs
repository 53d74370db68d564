//! The app's AsyncAPI document (feature `asyncapi`): channels, operations and messages from
//! the app's definition, with JSON Schemas of the message types that derive `JsonSchema`, and
//! written to `MQT_ASYNCAPI` as the app starts.

#![cfg(feature = "asyncapi")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mqtransport::Exchange;
use mqtransport::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An order placed in the shop.
#[derive(Debug, Serialize, Deserialize, JsonSchema, Message)]
#[message(name = "shop.order")]
struct Order {
    /// The order's number.
    id: u64,
    /// What was bought.
    items: Vec<String>,
    note: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, Message)]
#[message(name = "math.square")]
struct Square {
    n: i64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, Message)]
#[message(name = "math.squared")]
struct Squared {
    n: i64,
}

/// No `JsonSchema`: listed, without a schema.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "audit.entry")]
struct AuditEntry {
    text: String,
}

async fn take(_: Order) {}
async fn square(r: Square) -> Squared {
    Squared { n: r.n * r.n }
}
async fn audit(_: AuditEntry) {}

#[tokio::test(flavor = "current_thread")]
async fn the_document_lists_channels_operations_and_message_schemas() {
    let dir = std::env::temp_dir().join(format!("mqt-asyncapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("asyncapi.json");
    let app = App::builder()
        .url(format!("memory://asyncapi-{}", std::process::id()))
        .name("shop-service")
        .topology(
            Topology::new()
                .exchange(Exchange::topic("shop"))
                .exchange(Exchange::topic("audit.events"))
                .queue(Queue::durable("orders"))
                .bind(Binding::queue("orders", "shop", "shop.#")),
        )
        .consumer(Consumer::for_queue(Queue::durable("orders")).handle(take))
        .consumer(Consumer::for_queue(Queue::durable("math")).handle(square))
        .consumer(Consumer::subscribe("audit.events", ["audit.#"]).handle(audit))
        .build()
        .await
        .unwrap();
    let _orders = app.producer::<Order>(Route::exchange("shop"));
    let _math = app.requester::<Square, Squared>(Route::queue("math"));
    let doc = app.asyncapi();

    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "shop-service");
    assert_eq!(doc["servers"]["broker"]["protocol"], "memory");
    // Channels: the queues, the exchanges, the reply address.
    let channels = doc["channels"].as_object().unwrap();
    for key in [
        "queue_orders",
        "queue_math",
        "exchange_shop",
        "exchange_audit_events",
        "reply_to",
    ] {
        assert!(channels.contains_key(key), "{key} in {:#?}", channels.keys());
    }
    assert_eq!(doc["channels"]["queue_orders"]["address"], "orders");
    assert_eq!(
        doc["channels"]["exchange_shop"]["bindings"]["amqp"]["exchange"]["type"],
        "topic"
    );
    assert!(
        doc["channels"]["queue_orders"]["description"]
            .as_str()
            .unwrap()
            .contains("Bound to exchange 'shop' with 'shop.#'")
    );
    // Operations: receive per consumer, send per producer, a request with its reply.
    let ops = &doc["operations"];
    assert_eq!(ops["receive_queue_orders"]["action"], "receive");
    assert_eq!(
        ops["receive_queue_orders"]["messages"][0]["$ref"],
        "#/channels/queue_orders/messages/shop.order"
    );
    assert_eq!(
        ops["receive_exchange_audit_events"]["channel"]["$ref"],
        "#/channels/exchange_audit_events"
    );
    assert_eq!(ops["send_exchange_shop_shop_order"]["action"], "send");
    assert_eq!(
        ops["send_exchange_shop_shop_order"]["bindings"]["amqp"]["cc"][0],
        "shop.order"
    );
    let request = &ops["send_queue_math_math_square"];
    assert_eq!(
        request["reply"]["messages"][0]["$ref"],
        "#/channels/reply_to/messages/math.squared"
    );
    assert_eq!(request["reply"]["address"]["location"], "$message.header#/reply_to");
    // Messages: content types and schemas with the fields (and their doc comments).
    let order = &doc["components"]["messages"]["shop.order"];
    assert_eq!(order["contentType"], "application/json");
    let props = &order["payload"]["properties"];
    assert_eq!(props["id"]["type"], "integer");
    assert_eq!(props["id"]["description"], "The order's number.");
    assert_eq!(props["items"]["type"], "array");
    let required: Vec<&str> = order["payload"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(required.contains(&"id") && !required.contains(&"note"), "{required:?}");
    assert_eq!(
        doc["components"]["messages"]["audit.entry"]["payload"],
        serde_json::json!({})
    );
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1).map(|r| &r[..r.find('"').unwrap()]) {
        let pointer = reference.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "{reference} does not resolve");
    }

    // MQT_ASYNCAPI: an app writes the document as it starts (in a child process, which is
    // where an application's environment is set).
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writes_the_document_when_asked", "--nocapture"])
        .env(mqtransport::ASYNCAPI_ENV, &path)
        .env("MQT_ASYNCAPI_CHILD", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["operations"]["receive_queue_orders"]["action"], "receive");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Run by the test above in a child process with `MQT_ASYNCAPI` set; does nothing otherwise.
#[tokio::test(flavor = "current_thread")]
async fn writes_the_document_when_asked() {
    if std::env::var_os("MQT_ASYNCAPI_CHILD").is_none() {
        return;
    }
    let app = App::builder()
        .url(format!("memory://asyncapi-child-{}", std::process::id()))
        .consumer(Consumer::for_queue(Queue::durable("orders")).handle(take))
        .build()
        .await
        .unwrap();
    let running = app.start().await.unwrap();
    running.shutdown().await.unwrap();
}
