//! The Amazon SQS transport of mqtransport (`sqs://`), on the official `aws-sdk-sqs`: the same
//! App, handlers, retries and dead-letter tools as on RabbitMQ, chosen by URL.
//!
//! ```no_run
//! # async fn run() -> mqtransport_core::Result<()> {
//! use mqtransport_core::Transport;
//! use mqtransport_sqs::SqsTransport;
//!
//! let sqs = SqsTransport::connect("sqs://AKID:SECRET@us-east-1/?endpoint=http://127.0.0.1:4566").await?;
//! sqs.ping().await?;
//! # Ok(()) }
//! ```
//!
//! # How our semantics map onto SQS
//!
//! | ours | on SQS |
//! |---|---|
//! | queue `orders.dlq` | SQS queue `orders-dlq` (see [names](#queue-names)); FIFO when the name ends in `.fifo` |
//! | exchanges and bindings | emulated with the core `Router`; each exchange's declaration and bindings are tags of an SQS queue `mqtx-<name>`, read by every process (a binding made elsewhere is seen within `binding_refresh`, 2 s by default) |
//! | publish | `SendMessage`, gathered into `SendMessageBatch` (≤ 10) when several wait; confirmed when SQS answers; a message over the size limit (256 KiB with its attributes by default) is refused before sending |
//! | mandatory publish to no queue | returned (`312 NO_ROUTE`), as on RabbitMQ |
//! | properties and headers | one binary message attribute (`mqt-properties`), plus `type` and `content_type` for plain SQS consumers; binary bodies go as base64 |
//! | consume | long polling (`wait`, 20 s by default), up to 10 a call; the prefetch bounds the messages held |
//! | ack | `DeleteMessageBatch` |
//! | nack / reject with requeue | visibility 0 |
//! | nack / reject without requeue | deleted (there are no dead-letter exchanges: the App's dead-letter queue takes failures) |
//! | retry after a delay | visibility = the delay, up to 11 h (the message keeps its place; a FIFO group waits for it); the attempt counts `ApproximateReceiveCount` |
//! | a handler running long | a lease: the visibility is extended every third of `visibility` until the message is settled (at most SQS's 12 h) |
//! | delayed publish | `DelaySeconds` up to 15 min; longer: sent on every 15 min until due (not on FIFO queues, which SQS cannot delay per message) |
//! | dead letters, inspect / replay / purge | the App's dead-letter queue and tools, through `get` and publish; no `StartMessageMoveTask` |
//! | FIFO group | the `x-mqt-group-id` header (`default` when absent); deduplication id: the message id (and the replay count of a replayed dead letter) |
//! | purge | receives and deletes the ready messages (not SQS's once-a-minute `PurgeQueue`) |
//! | request/reply (the App's `Requester`) | no direct reply-to: one reply queue per app, `mqt.reply.<id>` (SQS name `mqt-reply-<id>`), deleted at shutdown |
//! | subscriptions (`Consumer::subscribe`) | no exclusive queues: a generated queue per app instance, deleted at shutdown |
//! | `get` | a short-poll `ReceiveMessage` of one message (a one-second long poll when that finds nothing but SQS counts messages, since a short poll asks only some servers); its message count is `ApproximateNumberOfMessages` |
//! | close | stops consumers and makes every held message visible again |
//!
//! Refused with [`ErrorKind::Unsupported`](mqtransport_core::ErrorKind::Unsupported), at
//! declare (so at the App's `build()`): exclusive and auto-delete queues, exclusive consumers,
//! consumer arguments, priorities, message and queue TTLs, length limits, dead-letter exchanges,
//! stream queues. There is no direct reply-to. A queue this transport generated (a reply queue, a
//! subscription's) outlives an app that stops without its shutdown: SQS deletes nothing by itself. A message's `expiration` travels with it but SQS
//! does not apply it (the App skips requests whose `x-mqt-deadline` has passed). Queue counts
//! are SQS's approximations, and SQS does not report consumers (`consumer_count` is 0).
//!
//! # Queue names
//!
//! SQS queue names hold 1 to 80 letters, digits, `-` and `_` (and `.fifo` at the end). Every `.`
//! becomes `-`, any other character SQS refuses becomes `_`, the URL's `prefix` goes in front,
//! and a `.fifo` suffix is kept. Each queue is tagged with the name it was made for; declaring a
//! different name that maps to the same SQS queue (`orders.dlq` and `orders-dlq`) is refused
//! ([`ErrorKind::Precondition`](mqtransport_core::ErrorKind::Precondition)). Real SQS refuses to
//! make a queue again for 60 s after it was deleted.

mod client;
mod consume;
mod exchanges;
mod fields;
mod holder;
mod names;
mod options;
mod queues;
mod send;
mod transport;
mod wire;

pub use mqtransport_core::{Error, Result};
pub use options::{DEFAULT_MAX_MESSAGE_SIZE, MAX_DELAY_SECONDS, MAX_VISIBILITY, SqsOptions};
pub use transport::{MAX_DELAY, SqsTransport};
