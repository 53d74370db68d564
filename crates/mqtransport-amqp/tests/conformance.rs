//! The shared conformance suite against a real RabbitMQ (`MQT_TEST_AMQP_URL`, default the local
//! broker). Unreachable: each test prints `SKIPPED: …`, or fails under `MQT_REQUIRE_BROKERS=1`.

use mqtransport_amqp::AmqpTransport;
use mqtransport_core::{BoxFuture, BrokerUrl, DynTransport, Result};
use mqtransport_testkit::Connector;

struct Rabbit(String);

impl Rabbit {
    fn from_env() -> Self {
        Rabbit(std::env::var("MQT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()))
    }
}

impl Connector for Rabbit {
    fn describe(&self) -> String {
        match BrokerUrl::parse(&self.0) {
            Ok(u) => format!("RabbitMQ at {u}"),
            Err(_) => "RabbitMQ (MQT_TEST_AMQP_URL does not parse)".into(),
        }
    }

    fn connect(&self) -> BoxFuture<'_, Result<DynTransport>> {
        Box::pin(async move {
            let url = BrokerUrl::parse(&self.0)?;
            Ok(DynTransport::new(AmqpTransport::connect(&url).await?))
        })
    }
}

mqtransport_testkit::conformance_tests!(
    connector = Rabbit::from_env(),
    attr = tokio::test(flavor = "multi_thread", worker_threads = 2)
);
