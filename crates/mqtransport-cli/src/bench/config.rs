//! What a bench run does: [`BenchConfig`].

use std::time::Duration;

use anyhow::bail;

/// The type of the bench's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// RabbitMQ's classic queue (durable).
    Classic,
    /// A quorum queue (RabbitMQ; replicated).
    Quorum,
}

/// When the producers stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAfter {
    /// After publishing this many messages in all (split over the producers).
    Count(u64),
    /// After this long.
    Duration(Duration),
}

/// The smallest body: it carries its send time (8 bytes).
pub const MIN_SIZE: usize = 8;

/// A bench run's settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Publishing tasks.
    pub producers: usize,
    /// Consumers, spread round robin over the queues.
    pub consumers: usize,
    /// Queues, made for the run and deleted after it.
    pub queues: usize,
    /// Body size in bytes (at least [`MIN_SIZE`]).
    pub size: usize,
    /// Messages per second per producer (`None`: as fast as confirms allow).
    pub rate: Option<f64>,
    /// Unconfirmed publishes each producer keeps in flight.
    pub confirm_window: usize,
    /// Each consumer's prefetch.
    pub prefetch: u16,
    /// The queues' type.
    pub queue_kind: QueueKind,
    /// When publishing stops.
    pub stop: StopAfter,
    /// The broker's no-ack mode instead of an ack per message.
    pub auto_ack: bool,
    /// How long consumers may go without a message, once publishing ended, before the run
    /// ends with what it has.
    pub drain_timeout: Duration,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            producers: 1,
            consumers: 1,
            queues: 1,
            size: 64,
            rate: None,
            confirm_window: 1000,
            prefetch: 500,
            queue_kind: QueueKind::Classic,
            stop: StopAfter::Count(100_000),
            auto_ack: false,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl BenchConfig {
    /// Refuses settings that cannot run, naming the option.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.producers == 0 && self.consumers == 0 {
            bail!("--producers and --consumers are both 0: nothing to measure");
        }
        if self.queues == 0 {
            bail!("--queues must be at least 1");
        }
        if self.size < MIN_SIZE {
            bail!("--size must be at least {MIN_SIZE} bytes: each body carries its send time");
        }
        if self.confirm_window == 0 {
            bail!("--confirm-window must be at least 1");
        }
        if self.prefetch == 0 {
            bail!("--prefetch must be at least 1");
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            bail!("--rate must be a positive number of messages per second");
        }
        match self.stop {
            StopAfter::Count(0) => bail!("--count must be at least 1"),
            StopAfter::Duration(d) if d.is_zero() => bail!("--duration must be longer than 0"),
            _ => {}
        }
        Ok(())
    }

    /// How many messages producer `i` publishes under a count (the first take the remainder).
    pub(crate) fn share(&self, i: usize) -> Option<u64> {
        match self.stop {
            StopAfter::Count(n) => {
                let producers = self.producers.max(1) as u64;
                let extra = u64::from((i as u64) < n % producers);
                Some(n / producers + extra)
            }
            StopAfter::Duration(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_shared_by_the_producers() {
        let c = BenchConfig {
            producers: 3,
            stop: StopAfter::Count(10),
            ..BenchConfig::default()
        };
        assert_eq!((0..3).map(|i| c.share(i).unwrap()).sum::<u64>(), 10);
        assert_eq!(c.share(0), Some(4));
        assert_eq!(c.share(2), Some(3));
    }

    #[test]
    fn settings_that_cannot_run_are_refused_by_name() {
        let small = BenchConfig {
            size: 4,
            ..BenchConfig::default()
        };
        assert!(small.check().unwrap_err().to_string().contains("--size"));
        let none = BenchConfig {
            producers: 0,
            consumers: 0,
            ..BenchConfig::default()
        };
        assert!(none.check().is_err());
        assert!(BenchConfig::default().check().is_ok());
    }
}
