//! [`DynTransport`]: a [`Transport`] chosen at run time, erased in exactly one place.

use std::fmt;
use std::sync::Arc;

use crate::Capabilities;
use crate::error::Result;
use crate::topology::{Binding, Topology};
use crate::transport::{
    BoxFuture, Confirmation, ConsumeOptions, Declared, DeleteQueue, Delivery, Publish, QueueInfo, Subscription,
    Transport,
};

/// The object-safe twin of [`Transport`], erased in exactly one place.
trait ErasedTransport: Send + Sync + 'static {
    fn capabilities(&self) -> Capabilities;
    fn declare<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<Declared>>;
    fn queue_info<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<QueueInfo>>;
    fn exchange_exists<'a>(&'a self, exchange: &'a str) -> BoxFuture<'a, Result<()>>;
    fn delete_queue<'a>(&'a self, queue: &'a str, options: DeleteQueue) -> BoxFuture<'a, Result<u32>>;
    fn delete_exchange<'a>(&'a self, exchange: &'a str, if_unused: bool) -> BoxFuture<'a, Result<()>>;
    fn unbind<'a>(&'a self, binding: &'a Binding) -> BoxFuture<'a, Result<()>>;
    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u32>>;
    fn publish(&self, publish: Publish) -> BoxFuture<'_, Result<Confirmation>>;
    fn publish_delayed(&self, publish: Publish, delay: std::time::Duration) -> BoxFuture<'_, Result<Confirmation>>;
    fn consume<'a>(&'a self, queue: &'a str, options: ConsumeOptions) -> BoxFuture<'a, Result<Subscription>>;
    fn get<'a>(&'a self, queue: &'a str, no_ack: bool) -> BoxFuture<'a, Result<Option<Delivery>>>;
    fn ping(&self) -> BoxFuture<'_, Result<()>>;
    fn connection_state(&self) -> crate::ConnectionState;
    fn close(&self) -> BoxFuture<'_, Result<()>>;
}

impl<T: Transport> ErasedTransport for T {
    fn capabilities(&self) -> Capabilities {
        Transport::capabilities(self)
    }
    fn declare<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<Declared>> {
        Box::pin(Transport::declare(self, topology))
    }
    fn queue_info<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<QueueInfo>> {
        Box::pin(Transport::queue_info(self, queue))
    }
    fn exchange_exists<'a>(&'a self, exchange: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Transport::exchange_exists(self, exchange))
    }
    fn delete_queue<'a>(&'a self, queue: &'a str, options: DeleteQueue) -> BoxFuture<'a, Result<u32>> {
        Box::pin(Transport::delete_queue(self, queue, options))
    }
    fn delete_exchange<'a>(&'a self, exchange: &'a str, if_unused: bool) -> BoxFuture<'a, Result<()>> {
        Box::pin(Transport::delete_exchange(self, exchange, if_unused))
    }
    fn unbind<'a>(&'a self, binding: &'a Binding) -> BoxFuture<'a, Result<()>> {
        Box::pin(Transport::unbind(self, binding))
    }
    fn purge<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u32>> {
        Box::pin(Transport::purge(self, queue))
    }
    fn publish(&self, publish: Publish) -> BoxFuture<'_, Result<Confirmation>> {
        Box::pin(Transport::publish(self, publish))
    }
    fn publish_delayed(&self, publish: Publish, delay: std::time::Duration) -> BoxFuture<'_, Result<Confirmation>> {
        Box::pin(Transport::publish_delayed(self, publish, delay))
    }
    fn consume<'a>(&'a self, queue: &'a str, options: ConsumeOptions) -> BoxFuture<'a, Result<Subscription>> {
        Box::pin(Transport::consume(self, queue, options))
    }
    fn get<'a>(&'a self, queue: &'a str, no_ack: bool) -> BoxFuture<'a, Result<Option<Delivery>>> {
        Box::pin(Transport::get(self, queue, no_ack))
    }
    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Transport::ping(self))
    }
    fn connection_state(&self) -> crate::ConnectionState {
        Transport::connection_state(self)
    }
    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Transport::close(self))
    }
}

/// A transport chosen at run time (by URL). Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct DynTransport {
    inner: Arc<dyn ErasedTransport>,
}

impl DynTransport {
    /// Erases `transport`.
    pub fn new(transport: impl Transport) -> Self {
        DynTransport {
            inner: Arc::new(transport),
        }
    }
}

impl fmt::Debug for DynTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynTransport").finish_non_exhaustive()
    }
}

impl Transport for DynTransport {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
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
        self.inner.publish(publish).await
    }
    async fn publish_delayed(&self, publish: Publish, delay: std::time::Duration) -> Result<Confirmation> {
        self.inner.publish_delayed(publish, delay).await
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
    fn connection_state(&self) -> crate::ConnectionState {
        self.inner.connection_state()
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
