//! A transport that forwards every operation to another, except what its [`Intercept`]
//! changes: for tests that script one part of a broker's behaviour.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use mqtransport::transport::Subscription;
use mqtransport::{
    Binding, Capabilities, Confirmation, ConnectionState, ConsumeOptions, Declared, DeleteQueue, Delivery,
    DynTransport, Publish, QueueInfo, Result, Topology, Transport,
};

/// What an [`Intercepted`] transport does instead of forwarding; every default forwards to
/// `inner`.
pub trait Intercept: Send + Sync + 'static {
    fn capabilities(&self, inner: &DynTransport) -> Capabilities {
        inner.capabilities()
    }

    fn publish(&self, inner: &DynTransport, publish: Publish) -> impl Future<Output = Result<Confirmation>> + Send {
        inner.publish(publish)
    }

    fn publish_delayed(
        &self,
        inner: &DynTransport,
        publish: Publish,
        delay: Duration,
    ) -> impl Future<Output = Result<Confirmation>> + Send {
        inner.publish_delayed(publish, delay)
    }

    fn connection_state(&self, inner: &DynTransport) -> ConnectionState {
        inner.connection_state()
    }
}

/// `inner`, with `intercept` in front of it.
pub struct Intercepted<I> {
    pub inner: DynTransport,
    pub intercept: I,
}

impl<I: Intercept> Intercepted<I> {
    /// The transport as an app takes it.
    pub fn transport(inner: DynTransport, intercept: I) -> DynTransport {
        DynTransport::new(Intercepted { inner, intercept })
    }
}

impl<I: Intercept> Transport for Intercepted<I> {
    fn capabilities(&self) -> Capabilities {
        self.intercept.capabilities(&self.inner)
    }
    async fn declare(&self, topology: &Topology) -> Result<Declared> {
        self.inner.declare(topology).await
    }
    async fn queue_info(&self, queue: &str) -> Result<QueueInfo> {
        self.inner.queue_info(queue).await
    }
    async fn exchange_exists(&self, exchange: &str) -> Result<()> {
        self.inner.exchange_exists(exchange).await
    }
    async fn delete_queue(&self, queue: &str, options: DeleteQueue) -> Result<u32> {
        self.inner.delete_queue(queue, options).await
    }
    async fn delete_exchange(&self, exchange: &str, if_unused: bool) -> Result<()> {
        self.inner.delete_exchange(exchange, if_unused).await
    }
    async fn unbind(&self, binding: &Binding) -> Result<()> {
        self.inner.unbind(binding).await
    }
    async fn purge(&self, queue: &str) -> Result<u32> {
        self.inner.purge(queue).await
    }
    async fn publish(&self, publish: Publish) -> Result<Confirmation> {
        self.intercept.publish(&self.inner, publish).await
    }
    async fn publish_delayed(&self, publish: Publish, delay: Duration) -> Result<Confirmation> {
        self.intercept.publish_delayed(&self.inner, publish, delay).await
    }
    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Subscription> {
        self.inner.consume(queue, options).await
    }
    async fn get(&self, queue: &str, no_ack: bool) -> Result<Option<Delivery>> {
        self.inner.get(queue, no_ack).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    fn connection_state(&self) -> ConnectionState {
        self.intercept.connection_state(&self.inner)
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
