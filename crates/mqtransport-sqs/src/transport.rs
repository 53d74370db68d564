//! [`SqsTransport`]: the [`Transport`] contract on Amazon SQS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_credential_types::Credentials;
use futures_util::StreamExt;
use mqtransport_core::{
    Binding, Capabilities, Confirmation, ConsumeOptions, Declared, DeleteQueue, Delivery, Destination, Error,
    ErrorKind, FieldValue, Publish, QueueInfo, Result, Scope, Subscription, Topology, Transport,
};
use tokio::sync::{mpsc, watch};

use crate::client::Sqs;
use crate::consume::{self, DELIVER_AT, Poll, now_millis};
use crate::exchanges::Exchanges;
use crate::holder::{Holder, whole_seconds};
use crate::names::{Role, is_fifo, sqs_name};
use crate::options::{MAX_DELAY_SECONDS, MAX_VISIBILITY, SqsOptions};
use crate::queues::{self, VHOST};
use crate::send::{Senders, Sent};
use crate::wire::{self, Outgoing};

/// The longest delay a delayed publish takes: SQS's 15 minutes a hop, as many hops as needed
/// (each a new message, so SQS's retention period does not limit it).
pub const MAX_DELAY: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// What of SQS's message size [`Capabilities::frame_max`] leaves for the attribute names, the
/// route (two names of at most 255 bytes) and the `type` and `content_type` copies.
const FRAME_RESERVE: usize = 2048;

/// The message group of a FIFO message that names none.
const DEFAULT_GROUP: &str = "default";

/// A connection to Amazon SQS (or an SQS-compatible server). Cheap to clone: clones share it.
#[derive(Clone)]
pub struct SqsTransport {
    inner: Arc<Inner>,
}

struct Inner {
    sqs: Arc<Sqs>,
    exchanges: Exchanges,
    senders: Senders,
    /// Holds the messages taken by `get`.
    gets: Mutex<Option<Arc<Holder>>>,
    /// Every consumer's holder, to return their messages at close.
    holders: Mutex<Vec<Weak<Holder>>>,
    /// This connection's consumers by queue (SQS does not count consumers).
    consumers: Arc<Mutex<HashMap<String, usize>>>,
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for SqsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsTransport")
            .field("options", &self.inner.sqs.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn no_queue(queue: &str) -> Error {
    Error::broker(
        404,
        format!("NOT_FOUND - no queue '{queue}' in vhost '{VHOST}'"),
        Scope::Channel,
    )
}

impl SqsTransport {
    /// Connects with the settings of an `sqs://` URL (see [`SqsOptions`]) and checks that SQS
    /// answers.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(SqsOptions::from_url(url)?).await
    }

    /// Connects with `options` and checks that SQS answers.
    pub async fn connect_with(options: SqsOptions) -> Result<Self> {
        options.validate()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some((key, secret)) = &options.credentials {
            loader = loader.credentials_provider(Credentials::new(
                key,
                secret,
                options.session_token.clone(),
                None,
                "mqtransport-sqs-url",
            ));
        }
        if let Some(endpoint) = &options.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(Error::invalid(
                "no AWS region: give one in the URL (sqs://KEY:SECRET@REGION/) or set AWS_REGION",
            ));
        }
        let transport = SqsTransport {
            inner: Arc::new(Inner {
                sqs: Arc::new(Sqs::new(aws_sdk_sqs::Client::new(&config), options)),
                exchanges: Exchanges::default(),
                senders: Senders::default(),
                gets: Mutex::new(None),
                holders: Mutex::new(Vec::new()),
                consumers: Arc::default(),
                closed: watch::channel(false).0,
            }),
        };
        transport.ping().await?;
        Ok(transport)
    }

    /// The options in use.
    pub fn options(&self) -> &SqsOptions {
        &self.inner.sqs.options
    }

    fn check_open(&self) -> Result<()> {
        if *self.inner.closed.borrow() {
            return Err(Error::closed("the SQS transport is closed"));
        }
        Ok(())
    }

    fn sqs_queue(&self, queue: &str) -> Result<String> {
        sqs_name(&self.inner.sqs.options.prefix, Role::Queue, queue)
    }

    /// The URL of our queue `queue`, or RabbitMQ's `NOT_FOUND`.
    async fn url(&self, queue: &str) -> Result<String> {
        let name = self.sqs_queue(queue)?;
        match self.inner.sqs.url(&name, &format!("queue '{queue}'")).await {
            Err(e) if e.kind() == ErrorKind::NotFound => Err(no_queue(queue)),
            other => other,
        }
    }

    fn holder(&self) -> Arc<Holder> {
        let holder = Holder::new(Arc::clone(&self.inner.sqs));
        let mut holders = lock(&self.inner.holders);
        holders.retain(|h| h.strong_count() > 0);
        holders.push(Arc::downgrade(&holder));
        holder
    }

    fn gets(&self) -> Arc<Holder> {
        let mut gets = lock(&self.inner.gets);
        match &*gets {
            Some(h) => Arc::clone(h),
            None => {
                let h = self.holder();
                *gets = Some(Arc::clone(&h));
                h
            }
        }
    }

    /// The largest properties (as AMQP would encode them, which is how many bytes they take
    /// here too): SQS's message size less room for the attribute names, the route and the
    /// `type` and `content_type` copies.
    fn frame_max(&self) -> u32 {
        let max = self.inner.sqs.options.max_message_size.saturating_sub(FRAME_RESERVE);
        u32::try_from(max).unwrap_or(u32::MAX)
    }

    /// Encodes a publish, refusing before anything is sent properties that do not fit
    /// [`frame_max`](Self::frame_max) and a message over SQS's size limit.
    fn encode(&self, p: &Publish) -> Result<Outgoing> {
        let max = self.inner.sqs.options.max_message_size;
        p.check_size(max, self.frame_max())?;
        let message = wire::encode(&p.exchange, &p.routing_key, &p.envelope)?;
        if message.size > max {
            return Err(Error::oversized(&p.exchange, &p.routing_key, message.size, max)
                .context("SQS counts the body and the message attributes (the properties and headers) together"));
        }
        Ok(message)
    }

    /// Sends `message` to every queue in `targets`; the confirmation says whether any took it.
    async fn send_to(
        &self,
        targets: Vec<String>,
        message: Outgoing,
        delay_seconds: Option<i32>,
        mandatory: bool,
    ) -> Result<Confirmation> {
        let sends = targets.into_iter().map(|queue| {
            let mut message = message.clone();
            async move {
                let sqs_queue = self.sqs_queue(&queue)?;
                let url = match self.inner.sqs.url(&sqs_queue, &format!("queue '{queue}'")).await {
                    Ok(url) => url,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e),
                };
                let fifo = is_fifo(&queue);
                if fifo {
                    if delay_seconds.is_some() {
                        return Err(Error::new(
                            ErrorKind::Unsupported,
                            format!("queue '{queue}' is a FIFO queue, and SQS cannot delay single messages on one"),
                        ));
                    }
                    message.group.get_or_insert_with(|| DEFAULT_GROUP.to_owned());
                    message.deduplication.get_or_insert_with(queues::generated_name);
                } else {
                    message.group = None;
                    message.deduplication = None;
                }
                let sent = self
                    .inner
                    .senders
                    .send(&self.inner.sqs, &url, fifo, message, delay_seconds)
                    .await?;
                if sent == Sent::NoQueue {
                    self.inner.sqs.forget(&sqs_queue);
                }
                Ok(sent == Sent::Stored)
            }
        });
        let mut stored = 0;
        for sent in futures_util::future::join_all(sends).await {
            if sent? {
                stored += 1;
            }
        }
        Ok(match (stored, mandatory) {
            (0, true) => Confirmation::Returned {
                reply_code: 312,
                reply_text: "NO_ROUTE".to_owned(),
            },
            _ => Confirmation::Confirmed,
        })
    }

    /// The queues a publish goes to, by its routing key and its `CC` and `BCC` headers (the
    /// `BCC` header is removed from the message, as RabbitMQ does).
    async fn targets(&self, p: &mut Publish) -> Result<Vec<String>> {
        mqtransport_core::publish_rules::check(p.envelope.properties())?;
        let mut extra = Vec::new();
        for header in ["CC", "BCC"] {
            if let Some(FieldValue::Array(keys)) = p.envelope.header(header) {
                extra.extend(keys.iter().filter_map(FieldValue::as_str).map(str::to_owned));
            }
        }
        if p.envelope.header("BCC").is_some() {
            p.envelope.headers_mut().remove("BCC");
        }
        let mut keys: Vec<&str> = vec![&p.routing_key];
        keys.extend(extra.iter().map(String::as_str));
        if p.exchange.is_empty() {
            let mut queues: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
            queues.sort_unstable();
            queues.dedup();
            return Ok(queues);
        }
        self.inner
            .exchanges
            .route(
                &self.inner.sqs,
                &p.exchange,
                &keys,
                p.envelope.properties().headers.as_ref(),
            )
            .await
    }

    /// This connection's consumers of `queue`.
    fn consumers_of(&self, queue: &str) -> u32 {
        lock(&self.inner.consumers)
            .get(queue)
            .map_or(0, |n| u32::try_from(*n).unwrap_or(u32::MAX))
    }

    async fn declare_binding(&self, b: &Binding) -> Result<()> {
        if let Destination::Queue(q) = &b.destination {
            self.url(q).await?;
        }
        self.inner.exchanges.bind(&self.inner.sqs, b).await
    }
}

impl Transport for SqsTransport {
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::rabbitmq();
        c.system = "aws_sqs";
        c.native_exchanges = false;
        c.dead_letter_exchanges = false;
        c.message_ttl = false;
        c.native_delay = Some(MAX_DELAY);
        c.redelivery_delay = Some(MAX_VISIBILITY - Duration::from_secs(60 * 60));
        c.exclusive_queues = false;
        c.length_limits = false;
        c.consumer_arguments = false;
        c.ordered_queues = false;
        c.priorities = false;
        c.direct_reply_to = false;
        c.quorum_queues = false;
        c.max_message_size = self.inner.sqs.options.max_message_size;
        c.frame_max = self.frame_max();
        c.delivery_timeout = None;
        c
    }

    async fn declare(&self, topology: &Topology) -> Result<Declared> {
        self.check_open()?;
        topology.validate()?;
        for x in &topology.exchanges {
            self.inner.exchanges.declare(&self.inner.sqs, x).await?;
        }
        let mut declared = Declared::default();
        let mut last_generated = None;
        for q in &topology.queues {
            let mut q = q.clone();
            if q.name.is_empty() {
                queues::check_supported(&q)?;
                q.name = queues::generated_name();
                last_generated = Some(q.name.clone());
            }
            let mut info = queues::declare(&self.inner.sqs, &q).await?;
            info.consumer_count = self.consumers_of(&q.name);
            declared.queues.push(info);
        }
        for b in &topology.bindings {
            let mut b = b.clone();
            if let (Destination::Queue(q), Some(generated)) = (&mut b.destination, &last_generated)
                && q.is_empty()
            {
                q.clone_from(generated);
            }
            self.declare_binding(&b).await?;
        }
        Ok(declared)
    }

    async fn queue_info(&self, queue: &str) -> Result<QueueInfo> {
        self.check_open()?;
        let url = self.url(queue).await?;
        let mut info = queues::info(&self.inner.sqs, queue, &url).await?;
        info.consumer_count = self.consumers_of(queue);
        Ok(info)
    }

    async fn exchange_exists(&self, exchange: &str) -> Result<()> {
        self.check_open()?;
        match self.inner.exchanges.get(&self.inner.sqs, exchange, true).await? {
            Some(_) => Ok(()),
            None => Err(Error::broker(
                404,
                format!("NOT_FOUND - no exchange '{exchange}' in vhost '{VHOST}'"),
                Scope::Channel,
            )),
        }
    }

    async fn delete_queue(&self, queue: &str, options: DeleteQueue) -> Result<u32> {
        self.check_open()?;
        let url = match self.url(queue).await {
            Ok(url) => url,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let count = queues::info(&self.inner.sqs, queue, &url).await?.message_count;
        if options.if_unused && self.consumers_of(queue) > 0 {
            return Err(Error::broker(
                406,
                format!("PRECONDITION_FAILED - queue '{queue}' in vhost '{VHOST}' in use"),
                Scope::Channel,
            ));
        }
        if options.if_empty && count > 0 {
            return Err(Error::broker(
                406,
                format!("PRECONDITION_FAILED - queue '{queue}' in vhost '{VHOST}' not empty"),
                Scope::Channel,
            ));
        }
        if let Err(e) = self.inner.sqs.client.delete_queue().queue_url(&url).send().await {
            let e = crate::client::sdk_error(&e, format_args!("deleting queue '{queue}'"));
            if e.kind() != ErrorKind::NotFound {
                return Err(e);
            }
        }
        self.inner.sqs.forget(&self.sqs_queue(queue)?);
        self.inner.exchanges.remove_queue(&self.inner.sqs, queue).await;
        Ok(count)
    }

    async fn delete_exchange(&self, exchange: &str, if_unused: bool) -> Result<()> {
        self.check_open()?;
        self.inner.exchanges.delete(&self.inner.sqs, exchange, if_unused).await
    }

    async fn unbind(&self, binding: &Binding) -> Result<()> {
        self.check_open()?;
        self.inner.exchanges.unbind(&self.inner.sqs, binding).await
    }

    /// Removes the ready (visible) messages by receiving and deleting them; messages held by
    /// consumers stay, as on RabbitMQ. (SQS's own `PurgeQueue` would take held ones too, and
    /// allows one call a minute.)
    async fn purge(&self, queue: &str) -> Result<u32> {
        self.check_open()?;
        let url: Arc<str> = Arc::from(self.url(queue).await?);
        let sqs = &self.inner.sqs;
        let mut purged = 0u32;
        loop {
            let messages = consume::receive_ready(sqs, queue, &url, 10).await?;
            if messages.is_empty() {
                return Ok(purged);
            }
            let receipts: Vec<String> = messages
                .iter()
                .filter_map(|m| m.receipt_handle().map(str::to_owned))
                .collect();
            let deleted = crate::holder::delete_messages(sqs, &url, &receipts)
                .await
                .map_err(|e| e.context(format_args!("purging queue '{queue}'")))?;
            purged += u32::try_from(deleted).unwrap_or(0);
        }
    }

    async fn publish(&self, mut publish: Publish) -> Result<Confirmation> {
        self.check_open()?;
        let targets = self.targets(&mut publish).await?;
        let message = self.encode(&publish)?;
        self.send_to(targets, message, None, publish.mandatory).await
    }

    async fn publish_delayed(&self, mut publish: Publish, delay: Duration) -> Result<Confirmation> {
        self.check_open()?;
        if delay > MAX_DELAY {
            return Err(Error::invalid(format!(
                "a delay of {delay:?} is longer than the SQS transport's longest, {MAX_DELAY:?}"
            )));
        }
        if delay > MAX_DELAY_SECONDS {
            let due = now_millis().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            publish.envelope.headers_mut().insert(DELIVER_AT, FieldValue::I64(due));
        }
        let targets = self.targets(&mut publish).await?;
        let message = self.encode(&publish)?;
        let seconds = whole_seconds(delay.min(MAX_DELAY_SECONDS));
        self.send_to(targets, message, Some(seconds), publish.mandatory).await
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Subscription> {
        self.check_open()?;
        if options.exclusive {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("queue '{queue}': SQS has no exclusive consumers"),
            ));
        }
        if let Some((arg, _)) = options.arguments.iter().next() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("queue '{queue}': SQS takes no consumer arguments ('{arg}')"),
            ));
        }
        let url: Arc<str> = Arc::from(self.url(queue).await?);
        let tag = options.consumer_tag.clone().unwrap_or_else(queues::generated_name);
        let (tx, rx) = mpsc::channel(usize::from(options.prefetch).clamp(10, 1000));
        let poll = Poll {
            sqs: Arc::clone(&self.inner.sqs),
            holder: self.holder(),
            queue: queue.to_owned(),
            url,
            prefetch: options.prefetch,
            no_ack: options.no_ack,
            closed: self.inner.closed.subscribe(),
            _counted: consume::Counted::new(Arc::clone(&self.inner.consumers), queue),
        };
        tokio::spawn(consume::run(poll, tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|d| (d, rx)) });
        Ok(Subscription::new(tag, stream.boxed()))
    }

    async fn get(&self, queue: &str, no_ack: bool) -> Result<Option<Delivery>> {
        self.check_open()?;
        let url: Arc<str> = Arc::from(self.url(queue).await?);
        let sqs = &self.inner.sqs;
        let holder = self.gets();
        loop {
            let received = consume::receive_ready(sqs, queue, &url, 1).await?;
            let Some(m) = received.into_iter().next() else {
                return Ok(None);
            };
            let mut incoming = wire::decode(queue, &m);
            if consume::hop_if_early(sqs, &holder, &url, &m, &mut incoming).await {
                continue;
            }
            let left = queues::info(sqs, queue, &url).await?.message_count;
            let delivery = consume::delivery(&holder, &url, &m, incoming, no_ack);
            if no_ack {
                holder.flush().await;
            }
            return Ok(Some(delivery.with_message_count(left)));
        }
    }

    async fn ping(&self) -> Result<()> {
        self.check_open()?;
        self.inner
            .sqs
            .client
            .list_queues()
            .max_results(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| crate::client::sdk_error(&e, "pinging SQS"))
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.send_replace(true) {
            return Ok(());
        }
        let holders: Vec<Arc<Holder>> = lock(&self.inner.holders)
            .drain(..)
            .filter_map(|h| h.upgrade())
            .collect();
        for h in holders {
            h.release_all(&self.inner.sqs).await;
        }
        Ok(())
    }
}
