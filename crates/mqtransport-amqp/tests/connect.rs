#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Bad configuration fails fast and clearly: a server that never answers, one that is not
//! AMQP, wrong credentials, a missing virtual host, malformed URL options. Servers that
//! misbehave are played by local listeners of the test's own; credentials and virtual hosts
//! are tried against the local RabbitMQ (SKIPPED when it is unreachable, unless required).

use std::time::{Duration, Instant};

use mqtransport_amqp::{AmqpTransport, ConnectionStates, LinkState};
use mqtransport_core::{BrokerUrl, ErrorKind, Transport};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn broker_url() -> BrokerUrl {
    let url = std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    BrokerUrl::parse(&url).expect("MQT_TEST_AMQP_URL parses")
}

/// A listener that accepts connections and hands each to `serve`.
async fn listener<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_times_out_saying_what_it_waited_for() {
    let addr = listener(|s| async move {
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(s);
    })
    .await;
    let url = BrokerUrl::parse(&format!("amqp://app:s3cr3t-pw@{addr}/?connection_timeout=300")).unwrap();
    let started = Instant::now();
    let e = AmqpTransport::connect(&url).await.expect_err("no handshake");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.message().contains("no AMQP handshake within 300ms"), "{e}");
    assert!(
        e.message().contains(&addr.to_string()) && !e.message().contains("s3cr3t-pw"),
        "{e}"
    );
}

#[tokio::test]
async fn a_server_that_is_not_amqp_is_named_as_such() {
    let addr = listener(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let url = BrokerUrl::parse(&format!("amqp://{addr}/?connection_timeout=5000")).unwrap();
    let e = AmqpTransport::connect(&url).await.expect_err("not AMQP");
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.message().contains("this is not an AMQP 0-9-1 server"), "{e}");
    assert!(e.message().contains("HTTP/1.1 400"), "{e}");
}

#[tokio::test]
async fn malformed_options_and_urls_are_invalid_input() {
    for (url, says) in [
        ("amqp://127.0.0.1/?heartbeat=abc", "heartbeat=abc is not a number"),
        (
            "amqp://127.0.0.1/?heartbeat=70000",
            "heartbeat=70000 is not a number in range",
        ),
        (
            "amqp://127.0.0.1/?frame_max=100",
            "frame_max must be 0 (no limit) or at least 4096",
        ),
        ("amqp://127.0.0.1/?hearbeat=10", "unknown option 'hearbeat'"),
    ] {
        let e = AmqpTransport::connect(&BrokerUrl::parse(url).unwrap())
            .await
            .expect_err(url);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url}: {e}");
        assert!(e.message().contains(says), "{url}: {e}");
    }
    // A password with an unencoded '/': refused, redacted, with the fix.
    let e = BrokerUrl::parse("amqp://guest:12/S3cr3tPw@rabbit/orders").expect_err("ambiguous");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!e.to_string().contains("S3cr3tPw"), "{e}");
    assert!(e.to_string().contains("amqp://guest:***@rabbit/orders"), "{e}");
    assert!(e.to_string().contains("percent-encode"), "{e}");
}

/// `None` (SKIPPED) when RabbitMQ is unreachable and not required.
async fn rabbit() -> Option<BrokerUrl> {
    let url = broker_url();
    match AmqpTransport::connect(&url).await {
        Ok(t) => {
            t.close().await.unwrap();
            Some(url)
        }
        Err(e) if !mqtransport_testkit::brokers_required() => {
            println!("SKIPPED: RabbitMQ not reachable at {url} ({e})");
            None
        }
        Err(e) => panic!("RabbitMQ not reachable at {url}: {e}"),
    }
}

fn with(url: &BrokerUrl, user: &str, pass: &str, vhost: &str) -> BrokerUrl {
    BrokerUrl::parse(&format!(
        "amqp://{user}:{pass}@{}:{}/{vhost}",
        url.host(),
        url.port().unwrap_or(5672)
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_a_missing_vhost_are_permanent_errors() {
    let Some(url) = rabbit().await else { return };
    let user = url.username().unwrap_or("guest");
    let e = AmqpTransport::connect(&with(&url, user, "not-the-password-xyz", "%2f"))
        .await
        .expect_err("wrong password");
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.is_transient(), "{e}");
    assert!(!e.to_string().contains("not-the-password-xyz"), "{e}");
    let e = AmqpTransport::connect(&with(
        &url,
        user,
        url.password().unwrap_or("guest"),
        "no-such-vhost-mqt",
    ))
    .await
    .expect_err("missing vhost");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!e.is_transient(), "{e}");
    assert!(e.message().contains("virtual host 'no-such-vhost-mqt'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_connections_report_their_state() {
    let Some(url) = rabbit().await else { return };
    let t = AmqpTransport::connect(&url).await.unwrap();
    assert_eq!(
        t.connection_states(),
        ConnectionStates {
            consume: LinkState::Up(1),
            publish: LinkState::Up(1)
        }
    );
    t.close().await.unwrap();
    assert_eq!(t.connection_states().publish, LinkState::Closed);
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// With several addresses, connecting skips one that is down and says which node it reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_with_several_hosts_connects_to_the_first_that_answers() {
    let Some(url) = rabbit().await else { return };
    let down = closed_port();
    let live = format!("{}:{}", url.host(), url.port().unwrap_or(5672));
    let several = BrokerUrl::parse(&format!(
        "amqp://{}:{}@127.0.0.1:{down},{live}/%2f",
        url.username().unwrap_or("guest"),
        url.password().unwrap_or("guest"),
    ))
    .unwrap();
    let t = AmqpTransport::connect(&several)
        .await
        .expect("the second address answers");
    let at = t.connection_addresses();
    assert_eq!(at.consume.as_deref(), Some(live.as_str()));
    assert_eq!(at.publish.as_deref(), Some(live.as_str()));
    t.close().await.unwrap();
    assert_eq!(t.connection_addresses().consume, None, "closed: connected nowhere");
}

/// When no address answers, the error lists what happened at each, without the password.
#[tokio::test]
async fn when_no_address_answers_the_error_names_each() {
    let silent = listener(|s| async move {
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(s);
    })
    .await;
    let down = closed_port();
    let url = BrokerUrl::parse(&format!(
        "amqp://u:secret-pw@127.0.0.1:{down},{silent}/%2f?connection_timeout=300"
    ))
    .unwrap();
    let e = AmqpTransport::connect(&url).await.expect_err("nothing answers");
    let text = e.to_string();
    assert!(text.contains("any of the 2 addresses"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{down}: ")), "{text}");
    assert!(
        text.contains(&format!("{silent}: no AMQP handshake within 300ms")),
        "{text}"
    );
    assert!(!text.contains("secret-pw"), "{text}");
    assert_eq!(e.kind(), ErrorKind::Timeout, "the last address decides: {e}");
}
