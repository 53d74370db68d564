//! What a bench run measured: [`BenchReport`], as a table for people or JSON.

use hdrhistogram::Histogram;

use super::config::QueueKind;
use crate::output::{Output, table};

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Latency {
    /// The percentiles of `h`; `None` when it is empty.
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        })
    }
}

/// A bench run's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The broker (password hidden).
    pub broker: String,
    /// The queues used (deleted since).
    pub queues: Vec<String>,
    /// Their type.
    pub queue_type: QueueKind,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// Body size, bytes.
    pub size: usize,
    /// Each producer's window of unconfirmed publishes.
    pub confirm_window: usize,
    /// Each consumer's prefetch.
    pub prefetch: u16,
    /// The broker's no-ack mode.
    pub auto_ack: bool,
    /// Publishes sent.
    pub published: u64,
    /// Confirmed by the broker.
    pub confirmed: u64,
    /// Returned as unroutable.
    pub returned: u64,
    /// Refused by the broker.
    pub nacked: u64,
    /// Failed (the connection lost, a timeout).
    pub failed: u64,
    /// Handled by the consumers.
    pub consumed: u64,
    /// From the first publish to the last confirm.
    pub publish_seconds: f64,
    /// From the first publish to the last message consumed.
    pub consume_seconds: f64,
    /// Confirmed publishes per second.
    pub publish_rate: f64,
    /// Messages consumed per second.
    pub consume_rate: f64,
    /// From publish to handling.
    pub latency: Option<Latency>,
    /// From publish to the broker's confirm.
    pub confirm_latency: Option<Latency>,
}

/// Microseconds for people: `840 µs`, `12.4 ms`, `1.20 s`.
fn duration_text(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// A whole number with thousands separators.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            text.push(',');
        }
        text.push(c);
    }
    text
}

impl BenchReport {
    /// The report for people: the settings, then publish and consume rates with latency
    /// percentiles, then anything that went wrong.
    pub fn table(&self, out: &Output) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let kind = match self.queue_type {
            QueueKind::Classic => "classic queue",
            QueueKind::Quorum => "quorum queue",
        };
        let mut settings = vec![
            plural(self.producers, "producer"),
            plural(self.consumers, "consumer"),
            plural(self.queues.len(), kind),
            format!("{} B bodies", self.size),
            format!("confirm window {}", self.confirm_window),
            format!("prefetch {}", self.prefetch),
        ];
        if self.auto_ack {
            settings.push("auto-ack".to_owned());
        }
        let mut text = format!("{} {}: {}\n\n", out.bold("mqt bench"), self.broker, settings.join(", "));
        let cells = |what: &str, n: u64, secs: f64, rate: f64, l: Option<Latency>| {
            let mut row = vec![
                what.to_owned(),
                grouped(n),
                format!("{secs:.2}"),
                grouped(rate.round() as u64),
            ];
            match l {
                Some(l) => row.extend([l.p50_us, l.p95_us, l.p99_us, l.max_us].map(duration_text)),
                None => row.extend(std::iter::repeat_n("-".to_owned(), 4)),
            }
            row
        };
        let rows = vec![
            ["", "messages", "seconds", "msg/s", "p50", "p95", "p99", "max"]
                .map(str::to_owned)
                .to_vec(),
            cells(
                "publish (to confirm)",
                self.confirmed,
                self.publish_seconds,
                self.publish_rate,
                self.confirm_latency,
            ),
            cells(
                "consume (end to end)",
                self.consumed,
                self.consume_seconds,
                self.consume_rate,
                self.latency,
            ),
        ];
        text.push_str(&table(out, &rows));
        for (n, what) in [
            (self.returned, "returned as unroutable"),
            (self.nacked, "refused (nacked) by the broker"),
            (self.failed, "failed to publish"),
        ] {
            if n > 0 {
                text.push_str(&out.bad(&format!("{} message(s) {what}\n", grouped(n))));
            }
        }
        if self.consumers > 0 && self.consumed < self.confirmed {
            text.push_str(&out.bad(&format!(
                "{} confirmed message(s) were not consumed before the drain timeout\n",
                grouped(self.confirmed - self.consumed)
            )));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(12), "12");
        assert_eq!(duration_text(840), "840 µs");
        assert_eq!(duration_text(12_400), "12.4 ms");
        assert_eq!(duration_text(1_200_000), "1.20 s");
    }
}
