//! The runtime lapin runs on: tokio's, except that a connection's stream is a
//! [`ScreenedStream`], so the client reads the broker through the screen in its own read call,
//! with no task or socket pair between them.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use async_rs::traits::{Executor, Reactor, RuntimeKit};
use async_rs::util::Task;
use async_rs::{Runtime, Tokio};
use futures_core::Stream;

use crate::wire::screen::Screen;
use crate::wire::screened_stream::{Diagnosis, ScreenedStream};

/// tokio's runtime kit, with [`ScreenedStream`] as its TCP stream.
#[derive(Clone, Debug)]
pub(crate) struct ScreenedTokio(Tokio);

/// The runtime of the current tokio runtime, for a lapin connection.
pub(crate) fn current() -> Runtime<ScreenedTokio> {
    Runtime::new(ScreenedTokio(Tokio::current()))
}

impl RuntimeKit for ScreenedTokio {}

impl Executor for ScreenedTokio {
    type Task<T: Send + 'static> = <Tokio as Executor>::Task<T>;

    fn block_on<T, F: Future<Output = T>>(&self, f: F) -> T {
        self.0.block_on(f)
    }

    fn spawn<T: Send + 'static, F: Future<Output = T> + Send + 'static>(&self, f: F) -> Task<Self::Task<T>> {
        self.0.spawn(f)
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(&self, f: F) -> Task<Self::Task<T>> {
        self.0.spawn_blocking(f)
    }
}

impl Reactor for ScreenedTokio {
    type TcpStream = ScreenedStream;
    type Sleep = <Tokio as Reactor>::Sleep;

    fn register<H: Read + Write + AsFd + AsRawFd + Send + 'static>(
        &self,
        socket: H,
    ) -> io::Result<impl futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static> {
        self.0.register(socket)
    }

    fn sleep(&self, dur: Duration) -> Self::Sleep {
        self.0.sleep(dur)
    }

    fn interval(&self, dur: Duration) -> impl Stream<Item = Instant> + Send + 'static {
        self.0.interval(dur)
    }

    /// A plain TCP connection, screened. Our connections are dialled by the connector, which
    /// hands lapin its stream; this serves a connection lapin would open by itself.
    fn tcp_connect_addr(&self, addr: SocketAddr) -> impl Future<Output = io::Result<ScreenedStream>> + Send + 'static {
        let connecting = self.0.tcp_connect_addr(addr);
        async move {
            let tcp = connecting.await?.into_inner();
            tcp.set_nodelay(true)?;
            Ok(ScreenedStream::new(
                Box::new(tcp),
                Screen::new(None),
                Diagnosis::default(),
            ))
        }
    }
}
