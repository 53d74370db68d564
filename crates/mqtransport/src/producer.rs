//! Typed producers bound to one route: [`Producer<M>`] and, for code outside async,
//! [`BlockingProducer<M>`].

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use mqtransport_core::{Confirmation, Error, Publish, Result};

use crate::message::Message;
use crate::publish::{PublishOptions, Publisher, Route, confirmed};

/// How many publishes of one [`Producer::publish_many`] wait for their confirms at once.
const PIPELINE: usize = 256;

/// A typed producer of `M`, bound to one route. `Clone + Send + Sync`: clone it into every task
/// or thread that publishes.
///
/// ```
/// # use mqtransport::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "orders.created")]
/// struct OrderCreated {
///     id: u64,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mqtransport::Result<()> {
/// let app = App::builder()
///     .url("memory://docs-producer")
///     .topology(Topology::new().queue(Queue::durable("orders")))
///     .build()
///     .await?;
/// let orders = app.producer::<OrderCreated>(Route::queue("orders"));
/// let confirmation = orders.publish(&OrderCreated { id: 1 }).await?;
/// assert!(confirmation.is_confirmed());
/// orders.send(&OrderCreated { id: 2 }).await?; // an error unless confirmed
/// # Ok(())
/// # }
/// ```
pub struct Producer<M> {
    publisher: Publisher,
    route: Route,
    validate: bool,
    /// Unroutable messages are dropped by the broker instead of returned.
    events: bool,
    _message: PhantomData<fn(&M)>,
}

impl<M> Clone for Producer<M> {
    fn clone(&self) -> Self {
        Producer {
            publisher: self.publisher.clone(),
            route: self.route.clone(),
            validate: self.validate,
            events: self.events,
            _message: PhantomData,
        }
    }
}

impl<M> fmt::Debug for Producer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("message", &std::any::type_name::<M>())
            .field("route", &self.route)
            .field("validate", &self.validate)
            .field("events", &self.events)
            .finish()
    }
}

impl<M: Message> Producer<M> {
    pub(crate) fn new(publisher: Publisher, route: Route, validate: bool) -> Self {
        Producer {
            publisher,
            route,
            validate,
            events: false,
            _message: PhantomData,
        }
    }

    /// Whether messages are validated before they are published. The default comes from the
    /// app: on in debug builds, off in release builds.
    pub fn validate(mut self, validate: bool) -> Self {
        self.validate = validate;
        self
    }

    /// The route it publishes to.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Publishes events rather than commands: a message that no queue is bound to receive is
    /// dropped by the broker and still confirmed, as an event nobody subscribes to should be.
    ///
    /// By default a producer publishes commands, which must reach a queue: an unroutable one
    /// comes back as [`Confirmation::Returned`], and [`send`](Self::send) fails with
    /// [`ErrorKind::Unroutable`](crate::ErrorKind::Unroutable). (Per publish: [`PublishOptions::not_mandatory`].)
    ///
    /// ```
    /// # use mqtransport::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(name = "logs.line")]
    /// struct LogLine { text: String }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mqtransport::Result<()> {
    /// let app = App::builder()
    ///     .url("memory://docs-events")
    ///     .topology(Topology::new().exchange(Exchange::fanout("logs")))
    ///     .build()
    ///     .await?;
    /// let logs = app.producer::<LogLine>(Route::exchange("logs")).events();
    /// logs.send(&LogLine { text: "no one listens yet".into() }).await?; // fine: dropped
    /// let command = app.producer::<LogLine>(Route::exchange("logs"));
    /// assert!(command.send(&LogLine { text: "must arrive".into() }).await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn events(mut self) -> Self {
        self.events = true;
        self
    }

    fn to_publish(&self, message: &M, options: &PublishOptions) -> Result<Publish> {
        let publish = self.publisher.build(&self.route, message, options, self.validate)?;
        Ok(if self.events { publish.mandatory(false) } else { publish })
    }

    /// Publishes `message` and returns the broker's confirmation as a value: a returned
    /// (unroutable) or nacked message is `Ok` with [`Confirmation::Returned`] or
    /// [`Confirmation::Nacked`]. [`send`](Self::send) turns those into errors instead.
    pub async fn publish(&self, message: &M) -> Result<Confirmation> {
        self.publish_with(message, PublishOptions::default()).await
    }

    /// Publishes `message` with `options`.
    pub async fn publish_with(&self, message: &M, options: PublishOptions) -> Result<Confirmation> {
        let publish = self.to_publish(message, &options)?;
        self.publisher.publish_stamped(publish).await
    }

    /// Publishes `message` and succeeds only if the broker confirmed it: a returned or nacked
    /// message is an error ([`ErrorKind::Unroutable`](crate::ErrorKind::Unroutable), [`ErrorKind::Nacked`](crate::ErrorKind::Nacked)) naming the message
    /// and the route. [`publish`](Self::publish) returns the confirmation instead.
    ///
    /// A failure whose [`Error::is_outcome_unknown`] is true (a confirm lost with its
    /// connection, or not back within the confirm timeout, e.g. while the broker blocks
    /// publishers) may still have delivered the message: sending it again may deliver it
    /// twice. Retry such a failure only where consumers tolerate duplicates (e.g. by message
    /// id); every other failure means the message was not enqueued.
    pub async fn send(&self, message: &M) -> Result<()> {
        let publish = self.to_publish(message, &PublishOptions::default())?;
        self.publisher.publish_confirmed(publish, M::NAME).await
    }

    /// Publishes `message` to arrive at the route after `delay` (1 ms to
    /// [`MAX_DELAY`](crate::delay::MAX_DELAY), rounded up to whole milliseconds), and succeeds
    /// once the broker confirmed it into the first wait queue. It arrives no earlier than
    /// asked, and a shorter delay published later overtakes a longer one; see
    /// [`delay`](crate::delay) for how. A delay of zero publishes at once.
    ///
    /// ```
    /// # use mqtransport::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// # use std::time::Duration;
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(name = "reminders.due")]
    /// struct ReminderDue {
    ///     id: u64,
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> mqtransport::Result<()> {
    /// let app = App::builder()
    ///     .url("memory://docs-delayed")
    ///     .topology(Topology::new().queue(Queue::durable("reminders")))
    ///     .build()
    ///     .await?;
    /// let reminders = app.producer::<ReminderDue>(Route::queue("reminders"));
    /// reminders.send_delayed(&ReminderDue { id: 7 }, Duration::from_secs(90)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_delayed(&self, message: &M, delay: Duration) -> Result<()> {
        let confirmation = self.publish_delayed(message, delay).await?;
        confirmed(
            confirmation,
            M::NAME,
            self.route.exchange_name(),
            &self.route.routing_key_for(M::NAME),
        )
    }

    /// Like [`send_delayed`](Self::send_delayed), returning the confirmation as a value.
    pub async fn publish_delayed(&self, message: &M, delay: Duration) -> Result<Confirmation> {
        self.publish_delayed_with(message, delay, PublishOptions::default())
            .await
    }

    /// Like [`publish_delayed`](Self::publish_delayed), with `options` (an `expiration` is
    /// refused: the broker drops it when the delay hands the message on).
    pub async fn publish_delayed_with(
        &self,
        message: &M,
        delay: Duration,
        options: PublishOptions,
    ) -> Result<Confirmation> {
        let publish = self.to_publish(message, &options)?;
        self.publisher.publish_raw_delayed(publish, delay).await
    }

    /// Publishes `message` to arrive at `at` (at once if `at` has passed), as
    /// [`send_delayed`](Self::send_delayed) does for the time left until then.
    pub async fn send_at(&self, message: &M, at: SystemTime) -> Result<()> {
        self.send_delayed(message, crate::delay::until(at)).await
    }

    /// Like [`send_at`](Self::send_at), returning the confirmation as a value.
    pub async fn publish_at(&self, message: &M, at: SystemTime) -> Result<Confirmation> {
        self.publish_delayed(message, crate::delay::until(at)).await
    }

    /// Publishes every message, pipelined (up to 256 waiting for their confirms at once), and
    /// returns one result per message, in order. A message that fails to encode or validate
    /// is not sent; the others are.
    pub async fn publish_many<'a, I>(&self, messages: I) -> Vec<Result<Confirmation>>
    where
        I: IntoIterator<Item = &'a M>,
    {
        let options = PublishOptions::default();
        let publishes: Vec<Result<Publish>> = messages.into_iter().map(|m| self.to_publish(m, &options)).collect();
        futures_util::stream::iter(publishes)
            .map(|p| async move {
                match p {
                    Ok(p) => self.publisher.publish_stamped(p).await,
                    Err(e) => Err(e),
                }
            })
            .buffered(PIPELINE)
            .collect()
            .await
    }

    /// A handle that publishes from code outside async (a thread of its own, a synchronous
    /// callback), on the runtime the app was built in.
    pub fn blocking(&self) -> Result<BlockingProducer<M>> {
        let runtime = match &self.publisher.inner.runtime {
            Some(h) => h.clone(),
            None => tokio::runtime::Handle::try_current().map_err(|_| {
                Error::invalid("a blocking producer needs the tokio runtime the app runs on; none is known")
            })?,
        };
        Ok(BlockingProducer {
            producer: self.clone(),
            runtime,
        })
    }
}

/// Publishes from synchronous code: each call hands the publish to the app's runtime and
/// blocks the calling thread until the broker confirms. It works on a thread of its own, in a
/// `spawn_blocking` closure, and in synchronous code called from a task of a multi-thread
/// runtime (through `tokio::task::block_in_place`). Inside a current-thread runtime it is
/// refused ([`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)), since blocking its only thread would stall the
/// publish: there, use [`Producer`] with `.await`.
///
/// ```
/// # use mqtransport::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Message)]
/// # struct Tick { n: u32 }
/// # #[tokio::main]
/// # async fn main() -> mqtransport::Result<()> {
/// # let app = App::builder().url("memory://docs-blocking")
/// #     .topology(Topology::new().queue(Queue::durable("ticks"))).build().await?;
/// let ticks = app.producer::<Tick>(Route::queue("ticks")).blocking()?;
/// std::thread::spawn(move || ticks.send(&Tick { n: 1 }))
///     .join()
///     .expect("the thread runs")?;
/// # Ok(())
/// # }
/// ```
pub struct BlockingProducer<M> {
    producer: Producer<M>,
    runtime: tokio::runtime::Handle,
}

impl<M> Clone for BlockingProducer<M> {
    fn clone(&self) -> Self {
        BlockingProducer {
            producer: self.producer.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

impl<M> fmt::Debug for BlockingProducer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingProducer")
            .field("producer", &self.producer)
            .finish_non_exhaustive()
    }
}

impl<M: Message> BlockingProducer<M> {
    fn run<T: Send + 'static>(&self, work: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        // Inside a runtime: whether it is a multi-thread one.
        let inside = tokio::runtime::Handle::try_current()
            .ok()
            .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if inside == Some(false) {
            return Err(Error::invalid(format!(
                "BlockingProducer<{}> was called inside a current-thread tokio runtime, where blocking would stall the publish it waits for; use Producer::publish(..).await",
                M::NAME
            )));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(work.await);
        });
        let wait = move || {
            rx.blocking_recv().map_err(|_| {
                Error::closed(format!(
                    "the runtime stopped before the publish of '{}' finished",
                    M::NAME
                ))
            })
        };
        // Inside a multi-thread runtime (a `spawn_blocking` closure, or synchronous code called
        // from a task) the wait hands the worker's other tasks to another thread first.
        if inside.is_some() {
            tokio::task::block_in_place(wait)?
        } else {
            wait()?
        }
    }

    /// Publishes `message` and returns the broker's confirmation as a value (see
    /// [`Producer::publish`]); [`send`](Self::send) turns a return or nack into an error.
    pub fn publish(&self, message: &M) -> Result<Confirmation> {
        let publish = self.producer.to_publish(message, &PublishOptions::default())?;
        let publisher = self.producer.publisher.clone();
        self.run(async move { publisher.publish_stamped(publish).await })
    }

    /// Publishes `message` and succeeds only if the broker confirmed it (see
    /// [`Producer::send`]); [`publish`](Self::publish) returns the confirmation instead.
    pub fn send(&self, message: &M) -> Result<()> {
        let publish = self.producer.to_publish(message, &PublishOptions::default())?;
        let publisher = self.producer.publisher.clone();
        self.run(async move { publisher.publish_confirmed(publish, M::NAME).await })
    }
}
