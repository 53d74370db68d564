//! Retry policy and backoff as values ([`RetryPolicy`], [`Backoff`]).
//!
//! A retry is durable: the runtime publishes a copy of the message with `x-mqt-attempt + 1`,
//! delayed by the backoff to arrive back at its queue (through the [`delay`](crate::delay)
//! levels, as [`Producer::send_delayed`](crate::Producer::send_delayed) does), waits for the
//! broker's confirm, and only then acks the original. Nothing is held in memory, so a restart
//! loses no retry, and it works on RabbitMQ without the delayed-message plugin.

use std::time::Duration;

/// How long to wait before attempt `n + 1` after attempt `n` failed.
///
/// Delays are whole milliseconds (the precision of the broker's TTLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay every time.
    Fixed(Duration),
    /// `initial`, then `initial × factor`, … up to `max`.
    Exponential {
        /// The first delay.
        initial: Duration,
        /// Growth per attempt (at least 1).
        factor: u32,
        /// The cap.
        max: Duration,
    },
}

impl Backoff {
    /// A fixed delay.
    pub fn fixed(delay: Duration) -> Self {
        Backoff::Fixed(delay)
    }

    /// Doubling from `initial` up to `max`.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff::Exponential {
            initial,
            factor: 2,
            max,
        }
    }

    /// The delay after failed attempt `attempt` (1 for the first delivery).
    pub fn delay(&self, attempt: u32) -> Duration {
        let delay = match *self {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { initial, factor, max } => {
                let exp = attempt.saturating_sub(1).min(63);
                let mult = u64::from(factor.max(1)).checked_pow(exp).unwrap_or(u64::MAX);
                let ms = u64::try_from(initial.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(mult);
                Duration::from_millis(ms).min(max)
            }
        };
        // Whole milliseconds: the wait queue's TTL.
        Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
    }
}

/// How often a failing message is tried, and how long apart. When its attempts are used up it
/// goes to the dead-letter queue with the last error.
///
/// Counts are named for what they count: [`max_attempts(n)`](Self::max_attempts) is `n`
/// deliveries in all, the first one included; [`max_retries(n)`](Self::max_retries) is `n`
/// retries after the first delivery (Kombu's `max_retries`, Celery's too), so `n + 1`
/// deliveries.
///
/// ```
/// use std::time::Duration;
/// use mqtransport::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::max_attempts(5)
///     .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)));
/// assert_eq!(policy.delay(1), Some(Duration::from_secs(1)));
/// assert_eq!(policy.delay(4), Some(Duration::from_secs(8)));
/// assert_eq!(policy.delay(5), None); // the fifth attempt was the last
/// assert_eq!(RetryPolicy::max_retries(4), RetryPolicy::max_attempts(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 3 attempts, 1 s then 2 s apart (exponential up to 60 s).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

impl RetryPolicy {
    /// At most `attempts` deliveries in all, the first one included, with the default backoff.
    /// `1` (or `0`) means no retry: a failure dead-letters at once.
    pub fn max_attempts(attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: attempts.max(1),
            ..RetryPolicy::default()
        }
    }

    /// At most `retries` retries after the first delivery (`retries + 1` deliveries in all),
    /// with the default backoff. `0` means no retry.
    pub fn max_retries(retries: u32) -> Self {
        RetryPolicy::max_attempts(retries.saturating_add(1))
    }

    /// No retries: every failure dead-letters.
    pub fn none() -> Self {
        RetryPolicy::max_attempts(1)
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The deliveries allowed in all, the first one included.
    pub fn attempts_allowed(&self) -> u32 {
        self.max_attempts
    }

    /// The retries allowed after the first delivery.
    pub fn retries_allowed(&self) -> u32 {
        self.max_attempts - 1
    }

    /// The delay before the attempt after failed attempt `attempt`, or `None` if that was the
    /// last one.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        (attempt < self.max_attempts).then(|| self.backoff.delay(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<u128> = (1..=6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        // Huge attempt numbers saturate instead of overflowing.
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn delays_are_whole_milliseconds() {
        assert_eq!(
            Backoff::fixed(Duration::from_micros(1500)).delay(1),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn the_cap_counts_every_attempt() {
        let p = RetryPolicy::max_attempts(2);
        assert!(p.delay(1).is_some());
        assert_eq!(p.delay(2), None);
        assert_eq!(RetryPolicy::none().delay(1), None);
        assert_eq!(RetryPolicy::max_attempts(0).attempts_allowed(), 1);
    }

    #[test]
    fn retries_count_after_the_first_delivery() {
        let p = RetryPolicy::max_retries(3);
        assert_eq!((p.attempts_allowed(), p.retries_allowed()), (4, 3));
        assert!(p.delay(3).is_some(), "the third retry is allowed");
        assert_eq!(p.delay(4), None);
        assert_eq!(RetryPolicy::max_retries(u32::MAX).attempts_allowed(), u32::MAX);
    }
}
