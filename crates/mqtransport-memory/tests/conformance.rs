//! The shared conformance suite against the embedded broker, on tokio's paused clock: every
//! TTL wait advances virtual time, so the suite is deterministic and fast.

use mqtransport_core::{BoxFuture, DynTransport, Result};
use mqtransport_memory::MemoryBroker;
use mqtransport_testkit::Connector;

/// A fresh private broker per test.
struct Memory(MemoryBroker);

impl Connector for Memory {
    fn describe(&self) -> String {
        "the embedded broker (memory://)".into()
    }

    fn connect(&self) -> BoxFuture<'_, Result<DynTransport>> {
        Box::pin(async move { Ok(DynTransport::new(self.0.connect())) })
    }
}

mqtransport_testkit::conformance_tests!(
    connector = Memory(MemoryBroker::new()),
    attr = tokio::test(start_paused = true)
);
