//! `mqt bench --prometheus ADDR`: the app's metrics served for a Prometheus scrape while the
//! bench runs.

use std::net::SocketAddr;

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Installs a Prometheus recorder for this process and serves its text at
/// `http://ADDR/metrics` until the process ends; returns the address bound (`ADDR` may ask
/// for port 0).
pub async fn serve_prometheus(addr: &str) -> anyhow::Result<SocketAddr> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for Prometheus"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, handle.clone()));
        }
    });
    Ok(bound)
}

/// Answers one request: the metrics for `GET /metrics`, 404 for anything else.
async fn answer(mut stream: TcpStream, handle: PrometheusHandle) {
    let mut request = [0u8; 1024];
    let Ok(n) = stream.read(&mut request).await else {
        return;
    };
    let head = String::from_utf8_lossy(&request[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/metrics" {
        ("200 OK", handle.render())
    } else {
        ("404 Not Found", "only /metrics is served here\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}
