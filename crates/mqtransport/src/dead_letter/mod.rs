//! Working with dead letters afterwards: [`DeadLetters`] lists, summarises, replays and purges
//! the messages in a dead-letter queue, on every transport, with or without the app running
//! (it needs no consumer on the queue).
//!
//! Each operation looks at the messages that were in the queue when it started, taking them
//! one by one with `basic.get` and holding them unacknowledged, so that it sees each once;
//! those it leaves go back to the queue at the end, in their places, marked redelivered (on
//! RabbitMQ, as after any requeue). A replay publishes its copy and waits for the broker's
//! confirm before it removes the dead letter: a crash in between leaves both, never neither,
//! so the worst case is a duplicate (with the same message id).

mod record;
mod replay;

use std::collections::BTreeMap;
use std::time::SystemTime;

use mqtransport_core::{Confirmation, Delivery, DynTransport, Result, Transport};

pub use record::{DeadLetter, DeadLetterFilter};
pub use replay::{DEFAULT_MAX_REPLAYS, Replay, ReplayAction, ReplayEntry, ReplayReport, ReplayTarget};

/// The dead letters in one queue.
///
/// ```
/// # use mqtransport::prelude::*;
/// use mqtransport::{DeadLetters, DeadLetterFilter, Replay};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mqtransport::Result<()> {
/// let conn = mqtransport::connect("memory://docs-dead-letters").await?;
/// let dead = DeadLetters::new(conn, "orders.dlq");
/// # dead.transport().declare(&Topology::new().queue(Queue::durable("orders.dlq"))).await?;
/// for letter in dead.list(&DeadLetterFilter::new(), 20).await? {
///     println!("{letter}\n{}", letter.body_text());
/// }
/// let report = dead.replay(&Replay::new().dry_run(true)).await?;
/// for entry in &report.entries {
///     println!("{entry}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DeadLetters {
    transport: DynTransport,
    queue: String,
}

/// The dead letters that failed for one reason.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReasonSummary {
    /// The reason.
    pub reason: String,
    /// How many.
    pub count: usize,
    /// The message names among them, sorted.
    pub names: Vec<String>,
    /// The earliest recorded failure.
    pub first_failed: Option<SystemTime>,
    /// The latest recorded failure.
    pub last_failed: Option<SystemTime>,
}

impl DeadLetters {
    /// The dead letters in `queue`, through `transport`.
    pub fn new(transport: DynTransport, queue: impl Into<String>) -> Self {
        DeadLetters {
            transport,
            queue: queue.into(),
        }
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The transport.
    pub fn transport(&self) -> &DynTransport {
        &self.transport
    }

    /// How many dead letters are waiting (ready) in the queue.
    pub async fn count(&self) -> Result<u32> {
        let mut cursor = self.open().await?;
        let count = match cursor.next().await? {
            Some(first) => {
                cursor.keep(first);
                cursor.left.unwrap_or(0).saturating_add(1)
            }
            None => 0,
        };
        cursor.release().await;
        Ok(count)
    }

    /// Up to `limit` dead letters that `filter` matches, in queue order; all stay in the queue.
    pub async fn list(&self, filter: &DeadLetterFilter, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut cursor = self.open().await?;
        let mut found = Vec::new();
        while found.len() < limit
            && let Some(d) = cursor.next().await?
        {
            let letter = DeadLetter::from_envelope(d.envelope.clone());
            cursor.keep(d);
            if filter.matches(&letter) {
                found.push(letter);
            }
        }
        cursor.release().await;
        Ok(found)
    }

    /// The dead letters grouped by reason, the most frequent first; all stay in the queue.
    pub async fn summary(&self) -> Result<Vec<ReasonSummary>> {
        let mut cursor = self.open().await?;
        let mut by_reason: BTreeMap<String, ReasonSummary> = BTreeMap::new();
        while let Some(d) = cursor.next().await? {
            let letter = DeadLetter::from_envelope(d.envelope.clone());
            cursor.keep(d);
            let entry = by_reason.entry(letter.reason.clone()).or_insert_with(|| ReasonSummary {
                reason: letter.reason.clone(),
                count: 0,
                names: Vec::new(),
                first_failed: None,
                last_failed: None,
            });
            entry.count += 1;
            if let Some(name) = letter.name
                && !entry.names.contains(&name)
            {
                entry.names.push(name);
            }
            if let Some(at) = letter.failed_at {
                entry.first_failed = Some(entry.first_failed.map_or(at, |t| t.min(at)));
                entry.last_failed = Some(entry.last_failed.map_or(at, |t| t.max(at)));
            }
        }
        cursor.release().await;
        let mut summary: Vec<ReasonSummary> = by_reason.into_values().collect();
        for s in &mut summary {
            s.names.sort();
        }
        summary.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        Ok(summary)
    }

    /// Replays the dead letters `replay` selects: each is published to its destination with
    /// its attempts reset and `x-mqt-replayed` raised, and removed from this queue once the
    /// broker confirmed the copy. Those it cannot replay, those the loop guard keeps and
    /// those it does not match stay where they were.
    ///
    /// An error (the connection lost) stops the replay: what was confirmed before is
    /// replayed, the rest stays.
    pub async fn replay(&self, replay: &Replay) -> Result<ReplayReport> {
        let mut cursor = self.open().await?;
        let mut report = ReplayReport::default();
        let mut pace = replay.interval().map(|period| {
            let mut t = tokio::time::interval(period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        while let Some(d) = cursor.next().await? {
            report.examined += 1;
            let letter = DeadLetter::from_envelope(d.envelope.clone());
            if !replay.filter.matches(&letter) {
                cursor.keep(d);
                continue;
            }
            let mut entry = ReplayEntry {
                message_id: letter.message_id.clone(),
                name: letter.name.clone(),
                destination: String::new(),
                action: ReplayAction::WouldReplay,
            };
            let (exchange, routing_key) = match replay.destination(&letter) {
                Ok(to) => to,
                Err(why) => {
                    entry.action = ReplayAction::Failed {
                        error: format!("cannot replay it: {why}"),
                    };
                    report.entries.push(entry);
                    cursor.keep(d);
                    continue;
                }
            };
            entry.destination = replay::describe(&exchange, &routing_key);
            if letter.replays >= replay.max_replays && !replay.force {
                entry.action = ReplayAction::LoopGuard {
                    replays: letter.replays,
                };
            } else if !replay.dry_run {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                entry.action = match self
                    .transport
                    .publish(replay::replay_publish(&letter, exchange, routing_key))
                    .await
                {
                    Ok(Confirmation::Confirmed) => match d.ack().await {
                        Ok(()) => ReplayAction::Replayed,
                        Err(e) => ReplayAction::Failed {
                            error: format!(
                                "replayed, but the dead letter could not be removed ({e}): it stays, and a later replay sends it again"
                            ),
                        },
                    },
                    Ok(other) => {
                        cursor.keep(d);
                        ReplayAction::Failed {
                            error: format!("the broker did not take the copy: {other:?}"),
                        }
                    }
                    Err(e) => {
                        cursor.keep(d);
                        ReplayAction::Failed {
                            error: format!("the copy could not be published: {e}"),
                        }
                    }
                };
                report.entries.push(entry);
                continue;
            }
            report.entries.push(entry);
            cursor.keep(d);
        }
        cursor.release().await;
        Ok(report)
    }

    /// Removes the dead letters `filter` matches and returns how many. With
    /// [`DeadLetterFilter::new()`] (everything) the queue is purged at once.
    pub async fn purge(&self, filter: &DeadLetterFilter) -> Result<u32> {
        let mut removed = 0;
        if filter.is_everything() {
            removed = self
                .transport
                .purge(&self.queue)
                .await
                .map_err(|e| e.context(format_args!("purging the dead-letter queue '{}'", self.queue)))?;
        }
        // After a purge, this takes what the purge (on another channel) did not yet see
        // back in the queue, e.g. messages an earlier operation had just put back.
        let mut cursor = self.open().await?;
        while let Some(d) = cursor.next().await? {
            if filter.matches(&DeadLetter::from_envelope(d.envelope.clone())) {
                d.ack().await?;
                removed += 1;
            } else {
                cursor.keep(d);
            }
        }
        cursor.release().await;
        Ok(removed)
    }

    async fn open(&self) -> Result<Cursor<'_>> {
        // A clear error for a queue that does not exist.
        self.transport
            .queue_info(&self.queue)
            .await
            .map_err(|e| e.context(format_args!("the dead-letter queue '{}'", self.queue)))?;
        Ok(Cursor {
            letters: self,
            left: None,
            held: Vec::new(),
        })
    }
}

/// Walks the messages that were ready when it first took one, holding those it keeps: a held
/// message cannot be taken twice, and messages that arrive meanwhile (e.g. replayed into the
/// same queue) are not reached. Dropped early (an error), the held deliveries go back to the
/// queue as dropped deliveries do.
///
/// Everything goes through `get`, on one channel: the broker applies a requeue before a later
/// `get` on the same channel, so one operation sees the messages the previous one put back
/// (a queue's message count, read on another channel, may not yet).
struct Cursor<'a> {
    letters: &'a DeadLetters,
    /// Messages left to take; `None` until the first `get` says how many there are.
    left: Option<u32>,
    held: Vec<Delivery>,
}

impl Cursor<'_> {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        if self.left == Some(0) {
            return Ok(None);
        }
        let queue = &self.letters.queue;
        let got = self
            .letters
            .transport
            .get(queue, false)
            .await
            .map_err(|e| e.context(format_args!("reading the dead-letter queue '{queue}'")))?;
        self.left = match (&got, self.left) {
            // Someone else took the rest.
            (None, _) => Some(0),
            (Some(d), None) => Some(d.message_count.unwrap_or(0)),
            (Some(_), Some(n)) => Some(n - 1),
        };
        Ok(got)
    }

    fn keep(&mut self, delivery: Delivery) {
        self.held.push(delivery);
    }

    /// Puts every kept message back in its place.
    async fn release(self) {
        for d in self.held {
            if let Err(e) = d.nack(true).await {
                tracing::debug!(
                    queue = self.letters.queue,
                    "a dead letter goes back to its queue with its channel: {e}"
                );
            }
        }
    }
}
