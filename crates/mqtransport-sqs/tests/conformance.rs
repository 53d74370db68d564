//! The shared conformance suite against an SQS-compatible server (`MQT_TEST_SQS_URL`, default
//! moto on 127.0.0.1:4566). Scenarios that need what SQS lacks are skipped by capability, and
//! each skip is printed. Unreachable: each test prints `SKIPPED: …`, or fails under
//! `MQT_REQUIRE_BROKERS=1`.

use mqtransport_core::{BoxFuture, DynTransport, Result};
use mqtransport_sqs::SqsTransport;
use mqtransport_testkit::Connector;

struct Sqs(String);

impl Sqs {
    fn from_env() -> Self {
        Sqs(std::env::var("MQT_TEST_SQS_URL")
            .unwrap_or_else(|_| "sqs://test:test@us-east-1/?endpoint=http://127.0.0.1:4566".into()))
    }
}

impl Connector for Sqs {
    fn describe(&self) -> String {
        match mqtransport_core::BrokerUrl::parse(&self.0) {
            Ok(u) => format!("SQS at {u}"),
            Err(_) => "SQS (MQT_TEST_SQS_URL does not parse)".into(),
        }
    }

    fn connect(&self) -> BoxFuture<'_, Result<DynTransport>> {
        // Short long-polls, so that consumers notice a close quickly.
        let url = format!("{}{}wait=1s", self.0, if self.0.contains('?') { "&" } else { "?" });
        Box::pin(async move { Ok(DynTransport::new(SqsTransport::connect(&url).await?)) })
    }
}

mqtransport_testkit::conformance_tests!(
    connector = Sqs::from_env(),
    attr = tokio::test(flavor = "multi_thread", worker_threads = 2)
);
