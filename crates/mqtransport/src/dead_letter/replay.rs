//! What a replay is asked to do ([`Replay`], [`ReplayTarget`]) and what it did
//! ([`ReplayReport`]).

use std::fmt;
use std::time::Duration;

use mqtransport_core::{Envelope, FieldValue, Publish, ShortStr, headers};

use super::record::{DeadLetter, DeadLetterFilter};
use crate::Route;

/// How many times a message may be replayed before a replay needs [`Replay::force`].
pub const DEFAULT_MAX_REPLAYS: u32 = 3;

/// Where replayed dead letters are published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplayTarget {
    /// Straight to the queue whose consumer gave up on it (through the default exchange): only
    /// that consumer sees it again. The default.
    #[default]
    OriginalQueue,
    /// To the exchange and routing key it was first published with: every queue bound to
    /// that route gets a copy, as the first time.
    OriginalRoute,
    /// To this route (its routing key, or the message name for an exchange-only route).
    Route(Route),
}

/// A replay of dead letters: which ones, where to, how fast, and whether for real.
///
/// ```
/// use mqtransport::{DeadLetterFilter, Replay};
///
/// let replay = Replay::new()
///     .filter(DeadLetterFilter::new().name("orders.created"))
///     .rate_limit(100) // messages per second
///     .dry_run(true);
/// # let _ = replay;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub(crate) filter: DeadLetterFilter,
    pub(crate) target: ReplayTarget,
    pub(crate) per_second: Option<u32>,
    pub(crate) dry_run: bool,
    pub(crate) max_replays: u32,
    pub(crate) force: bool,
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            filter: DeadLetterFilter::default(),
            target: ReplayTarget::default(),
            per_second: None,
            dry_run: false,
            max_replays: DEFAULT_MAX_REPLAYS,
            force: false,
        }
    }
}

impl Replay {
    /// Every dead letter, to its original queue, as fast as the broker confirms, for real,
    /// with the loop guard at [`DEFAULT_MAX_REPLAYS`].
    pub fn new() -> Self {
        Replay::default()
    }

    /// Only the dead letters `filter` matches.
    pub fn filter(mut self, filter: DeadLetterFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Where they go.
    pub fn to(mut self, target: ReplayTarget) -> Self {
        self.target = target;
        self
    }

    /// At most `per_second` replays a second.
    pub fn rate_limit(mut self, per_second: u32) -> Self {
        self.per_second = Some(per_second.max(1));
        self
    }

    /// Publish nothing and remove nothing; the report says what would be done.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The loop guard: a message already replayed `max` times is not replayed again (default
    /// [`DEFAULT_MAX_REPLAYS`]).
    pub fn max_replays(mut self, max: u32) -> Self {
        self.max_replays = max;
        self
    }

    /// Replays messages past the loop guard too.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// The pause between two replays.
    pub(crate) fn interval(&self) -> Option<Duration> {
        self.per_second.map(|n| Duration::from_secs(1) / n)
    }

    /// Where `letter` goes, or why it cannot go anywhere.
    pub(crate) fn destination(&self, letter: &DeadLetter) -> Result<(ShortStr, ShortStr), String> {
        match &self.target {
            ReplayTarget::OriginalQueue => letter
                .queue
                .as_deref()
                .map(|q| (ShortStr::EMPTY, ShortStr::from(q)))
                .ok_or_else(|| "it records no original queue".to_owned()),
            ReplayTarget::OriginalRoute => match (&letter.original_exchange, &letter.original_routing_key) {
                (Some(x), Some(k)) => Ok((ShortStr::from(x.as_str()), ShortStr::from(k.as_str()))),
                _ => Err("it records no original route".to_owned()),
            },
            ReplayTarget::Route(route) => Ok((
                ShortStr::from(route.exchange_name()),
                route.routing_key_for(letter.name.as_deref().unwrap_or("")),
            )),
        }
    }
}

/// The message a replay publishes: the dead letter as it was first sent, with its attempts
/// reset and its replay count raised. Its id stays, so idempotent consumers see a duplicate
/// for what it is.
pub(crate) fn replay_publish(letter: &DeadLetter, exchange: ShortStr, routing_key: ShortStr) -> Publish {
    let mut envelope: Envelope = letter.envelope.clone();
    envelope.properties_mut().expiration = None;
    let headers = envelope.headers_mut();
    for key in [
        headers::ATTEMPT,
        headers::ERROR,
        headers::FAILED_AT,
        headers::ORIGINAL_QUEUE,
        headers::DELAY_QUEUE,
        headers::DELAY_EXCHANGE,
    ] {
        headers.remove(key);
    }
    let levels: Vec<String> = headers
        .iter()
        .filter(|(k, _)| k.starts_with(headers::DELAY_LEVEL_PREFIX))
        .map(|(k, _)| k.to_owned())
        .collect();
    for key in levels {
        headers.remove(&key);
    }
    headers.insert(headers::REPLAYED, FieldValue::from(i64::from(letter.replays) + 1));
    Publish::new(exchange, routing_key, envelope)
}

/// What a replay did with one matching dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayAction {
    /// Published, confirmed, then removed from the dead-letter queue.
    Replayed,
    /// A dry run: it would have been replayed.
    WouldReplay,
    /// Left in place: it was replayed `replays` times already (see [`Replay::force`]).
    LoopGuard {
        /// Its replays so far.
        replays: u32,
    },
    /// Left in place: it could not be replayed.
    Failed {
        /// Why.
        error: String,
    },
}

/// One matching dead letter and what became of it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplayEntry {
    /// Its message id.
    pub message_id: Option<String>,
    /// Its message name.
    pub name: Option<String>,
    /// Where it went or would go: `queue 'orders'`, `exchange 'shop' with routing key 'k'`.
    pub destination: String,
    /// What was done.
    pub action: ReplayAction,
}

impl fmt::Display for ReplayEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.message_id.as_deref().unwrap_or("(no id)");
        let name = self.name.as_deref().unwrap_or("no name");
        match &self.action {
            ReplayAction::Replayed => write!(f, "replayed {id} ({name}) to {}", self.destination),
            ReplayAction::WouldReplay => write!(f, "would replay {id} ({name}) to {}", self.destination),
            ReplayAction::LoopGuard { replays } => write!(
                f,
                "kept {id} ({name}): replayed {replays} time(s) already; force to replay it again"
            ),
            ReplayAction::Failed { error } => write!(f, "kept {id} ({name}): {error}"),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Dead letters looked at (matching or not).
    pub examined: usize,
    /// One entry per matching dead letter, in queue order.
    pub entries: Vec<ReplayEntry>,
}

impl ReplayReport {
    /// How many were replayed (or, in a dry run, would be).
    pub fn replayed(&self) -> usize {
        self.count(|a| matches!(a, ReplayAction::Replayed | ReplayAction::WouldReplay))
    }

    /// How many the loop guard kept.
    pub fn loop_guarded(&self) -> usize {
        self.count(|a| matches!(a, ReplayAction::LoopGuard { .. }))
    }

    /// How many could not be replayed.
    pub fn failed(&self) -> usize {
        self.count(|a| matches!(a, ReplayAction::Failed { .. }))
    }

    fn count(&self, f: impl Fn(&ReplayAction) -> bool) -> usize {
        self.entries.iter().filter(|e| f(&e.action)).count()
    }
}

/// `queue 'q'` or `exchange 'x' with routing key 'k'`.
pub(crate) fn describe(exchange: &str, routing_key: &str) -> String {
    if exchange.is_empty() {
        format!("queue '{routing_key}'")
    } else {
        format!("exchange '{exchange}' with routing key '{routing_key}'")
    }
}
