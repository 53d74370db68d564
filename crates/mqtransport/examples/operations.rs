//! What an operator sees of a service: liveness, readiness and Prometheus metrics over HTTP,
//! from `Running::health` and the `metrics` feature (here with `metrics-exporter-prometheus`).
//!
//! ```sh
//! cargo run -p mqtransport --features metrics --example operations            # serves, checks itself, stops
//! cargo run -p mqtransport --features metrics --example operations -- --serve # until ctrl-c, on 127.0.0.1:9464
//! curl -i 127.0.0.1:9464/readyz; curl 127.0.0.1:9464/metrics
//! ```
//!
//! `/livez` answers 503 once a consumer has stopped for good (restart the container);
//! `/readyz` answers 503 while the broker does not answer or a consumer waits for it (take the
//! instance out of the load balancer); `/metrics` is the Prometheus text format.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use mqtransport::prelude::*;
use mqtransport::{Health, Running};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

async fn placed(order: OrderPlaced) -> Result<(), HandlerError> {
    if order.id % 5 == 0 {
        return Err(HandlerError::permanent(format!("order {} has no lines", order.id)));
    }
    Ok(())
}

/// Answers one HTTP request: `/livez`, `/readyz` or `/metrics`.
async fn answer(mut stream: TcpStream, running: Arc<Running>, prometheus: PrometheusHandle) -> anyhow::Result<()> {
    let mut request = [0u8; 1024];
    let n = stream.read(&mut request).await?;
    let line = String::from_utf8_lossy(&request[..n]);
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/livez" | "/readyz" => {
            let health: Health = running.health().await;
            let ok = if path == "/livez" {
                health.is_live()
            } else {
                health.is_ready()
            };
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            (status, format!("{health:#?}\n"))
        }
        "/metrics" => ("200 OK", prometheus.render()),
        _ => ("404 Not Found", "try /livez, /readyz or /metrics\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(())
}

/// Fetches `path` from the example's own server: its status line and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(String, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("an HTTP response")?;
    Ok((head.lines().next().unwrap_or("").to_owned(), body.to_owned()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve = std::env::args().any(|a| a == "--serve");
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    let app = App::builder() // the broker: $MQT_URL, else memory://
        .name("operations")
        .consumer(Consumer::for_queue(Queue::durable("orders.placed")).handle(placed))
        .build()
        .await?;
    let orders = app.producer::<OrderPlaced>(Route::queue("orders.placed"));
    let running = Arc::new(app.start().await?);

    let listener = TcpListener::bind(if serve { "127.0.0.1:9464" } else { "127.0.0.1:0" }).await?;
    let addr = listener.local_addr()?;
    let server = {
        let running = Arc::clone(&running);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, Arc::clone(&running), prometheus.clone()));
            }
        })
    };
    println!("serving /livez, /readyz and /metrics on http://{addr}");

    for id in 1..=10 {
        orders.send(&OrderPlaced { id }).await?;
    }
    if serve {
        tokio::signal::ctrl_c().await?;
    } else {
        // Checks itself: ready, and the ten orders counted by outcome (two dead-lettered).
        let (status, _) = get(addr, "/readyz").await?;
        println!("/readyz: {status}");
        anyhow::ensure!(status.ends_with("200 OK"), "not ready: {status}");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, metrics) = get(addr, "/metrics").await?;
            let consumed: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("messaging_client_consumed_messages"))
                .collect();
            let settled: f64 = consumed
                .iter()
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if settled >= 10.0 {
                println!("/metrics (consumed):");
                for line in consumed {
                    println!("  {line}");
                }
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the orders were not all counted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    server.abort();
    let _ = server.await; // the server's hold on the app goes with it
    let running = Arc::into_inner(running).context("the server still holds the app")?;
    running.shutdown().await?;
    Ok(())
}
