//! `amqps://` end to end: a TLS-terminating proxy (rustls, certificates made here with rcgen)
//! in front of the local RabbitMQ, so no broker configuration is touched.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use mqtransport_amqp::{AmqpOptions, AmqpTransport, TlsOptions};
use mqtransport_core::{BrokerUrl, DeleteQueue, Envelope, ErrorKind, Publish, Queue, Topology, Transport};
use tokio::net::{TcpListener, TcpStream};

struct Pki {
    ca_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let client_params = rcgen::CertificateParams::new(vec!["mqtransport-client".to_owned()]).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_chain: vec![cert.der().clone()],
        server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// Terminates TLS on a free port and forwards the plain stream to `upstream`; with
/// `client_auth`, only clients with a certificate signed by the test CA get through.
async fn terminator(pki: &Pki, upstream: String, client_auth: bool) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn broker() -> BrokerUrl {
    let raw = std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    BrokerUrl::parse(&raw).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca_works_and_an_unknown_issuer_is_refused() {
    let plain = broker();
    let upstream = format!("{}:{}", plain.host(), plain.port().unwrap_or(5672));
    if TcpStream::connect(&upstream).await.is_err() {
        assert!(
            !mqtransport_testkit::brokers_required(),
            "RabbitMQ not reachable at {plain}"
        );
        println!("SKIPPED: RabbitMQ not reachable at {plain}");
        return;
    }
    let pki = pki();
    let addr = terminator(&pki, upstream.clone(), false).await;
    let dir = std::env::temp_dir().join(format!("mqt-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let user = plain.username().unwrap_or("guest");
    let pass = plain.password().unwrap_or("guest");
    let url = BrokerUrl::parse(&format!("amqps://{user}:{pass}@localhost:{}/%2f", addr.port())).unwrap();

    // Trusting the private CA: a working connection.
    let options = AmqpOptions {
        tls: TlsOptions {
            ca_file: Some(ca_file.clone()),
            ..TlsOptions::default()
        },
        ..AmqpOptions::default()
    };
    let t = AmqpTransport::connect_with(&url, options)
        .await
        .expect("amqps connects");
    let q = format!("mqt-tls-{}", std::process::id());
    t.declare(&Topology::new().queue(Queue::transient(&q).expires(std::time::Duration::from_secs(300))))
        .await
        .unwrap();
    t.publish(Publish::to_queue(&q, Envelope::new("over tls")))
        .await
        .unwrap()
        .into_result("", &q)
        .unwrap();
    let d = t.get(&q, false).await.unwrap().expect("the message");
    assert_eq!(&d.envelope.body[..], b"over tls");
    d.ack().await.unwrap();
    t.delete_queue(&q, DeleteQueue::default()).await.unwrap();
    t.close().await.unwrap();

    // Not trusting it: refused, typed, naming the broker without the password.
    let e = AmqpTransport::connect(&url).await.expect_err("unknown issuer");
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.message().contains(&format!("localhost:{}", addr.port())), "{e}");
    assert!(!e.message().contains(pass) || pass == user, "{e}");

    // A missing CA file is reported by name.
    let missing = AmqpOptions {
        tls: TlsOptions {
            ca_file: Some(dir.join("nope.pem")),
            ..TlsOptions::default()
        },
        ..AmqpOptions::default()
    };
    let e = AmqpTransport::connect_with(&url, missing)
        .await
        .expect_err("missing CA file");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.message().contains("nope.pem"), "{e}");

    // A broker that requires client certificates: with ours, in; without, refused.
    let mutual = terminator(&pki, upstream, true).await;
    let url = BrokerUrl::parse(&format!("amqps://{user}:{pass}@localhost:{}/%2f", mutual.port())).unwrap();
    let (cert_file, key_file) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&cert_file, &pki.client_cert_pem).unwrap();
    std::fs::write(&key_file, &pki.client_key_pem).unwrap();
    let with_cert = AmqpOptions {
        tls: TlsOptions {
            ca_file: Some(ca_file.clone()),
            client_cert_file: Some(cert_file),
            client_key_file: Some(key_file),
        },
        ..AmqpOptions::default()
    };
    let t = AmqpTransport::connect_with(&url, with_cert)
        .await
        .expect("client certificate accepted");
    t.ping().await.unwrap();
    t.close().await.unwrap();
    let without = AmqpOptions {
        tls: TlsOptions {
            ca_file: Some(ca_file.clone()),
            ..TlsOptions::default()
        },
        ..AmqpOptions::default()
    };
    let e = AmqpTransport::connect_with(&url, without)
        .await
        .expect_err("no client certificate");
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
