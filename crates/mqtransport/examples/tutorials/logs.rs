//! Tutorials 3 to 5, one program over three exchanges: log lines emitted to an exchange and
//! printed by every subscriber whose binding keys match.
//!
//! - publish/subscribe: fanout `logs`, every subscriber gets every line;
//! - routing: direct `direct_logs`, the routing key is the severity;
//! - topics: topic `topic_logs`, keys such as `kern.critical`, patterns such as `*.critical`.
//!
//! A subscriber is `Consumer::subscribe`: a server-named, exclusive queue of its own, gone when
//! it stops, as the tutorials' `queue_declare(queue='', exclusive=True)`. A line published
//! while nobody listens is dropped, so the producer publishes events (not mandatory).

use mqtransport::prelude::*;
use mqtransport::{DeadLetterPolicy, ExchangeKind};

use crate::{Printer, count, remove, seen};

/// One of the three tutorials.
pub(crate) struct Logs {
    exchange: &'static str,
    kind: ExchangeKind,
    /// The demo: each subscriber's binding keys, the (routing key, line) pairs emitted, and
    /// how many lines the subscribers print between them.
    subscribers: &'static [&'static [&'static str]],
    lines: &'static [(&'static str, &'static str)],
    printed: usize,
}

pub(crate) const PUBLISH_SUBSCRIBE: Logs = Logs {
    exchange: "logs",
    kind: ExchangeKind::Fanout,
    subscribers: &[&[], &[]],
    lines: &[("", "info: Hello World!"), ("", "warning: disk 91% full")],
    printed: 4, // each line by both
};

pub(crate) const ROUTING: Logs = Logs {
    exchange: "direct_logs",
    kind: ExchangeKind::Direct,
    subscribers: &[&["error"], &["info", "warning", "error"]],
    lines: &[("info", "Run. Run. Or it will explode."), ("error", "It exploded.")],
    printed: 3, // info by the second, error by both
};

pub(crate) const TOPICS: Logs = Logs {
    exchange: "topic_logs",
    kind: ExchangeKind::Topic,
    subscribers: &[&["kern.*"], &["*.critical"], &["#"]],
    lines: &[("kern.critical", "A critical kernel error"), ("cron.info", "cron ran")],
    printed: 4, // kern.critical by all three, cron.info by `#`
};

async fn print(line: String, info: DeliveryInfo, State(printer): State<Printer>) {
    let key = info.delivered_routing_key();
    printer.print(if key.is_empty() {
        format!(" [x] {line}")
    } else {
        format!(" [x] {key}:{line}")
    });
}

impl Logs {
    /// The tutorials declare their exchanges transient (not durable).
    fn topology(&self) -> Topology {
        Topology::new().exchange(Exchange::new(self.exchange, self.kind).transient())
    }

    async fn subscriber(&self, keys: &[&str], printer: Printer) -> mqtransport::Result<mqtransport::Running> {
        App::with_state(printer)
            .topology(self.topology())
            .consumer(
                Consumer::subscribe(self.exchange, keys.iter().copied())
                    .fallback(print)
                    // A line that cannot be printed is not worth keeping.
                    .dead_letter(DeadLetterPolicy::Broker),
            )
            .build()
            .await?
            .start()
            .await
    }

    async fn emit(&self, lines: &[(&str, &str)]) -> mqtransport::Result<()> {
        let app = App::builder().topology(self.topology()).build().await?;
        for (key, line) in lines {
            app.plain_producer(Route::new(self.exchange, *key))
                .events()
                .send_text(*line)
                .await?;
            println!(" [x] Sent {key}:{line}");
        }
        app.transport().close().await
    }

    pub(crate) async fn run(&self, args: &[String]) -> anyhow::Result<()> {
        let (printer, mut printed) = Printer::new();
        match args.split_first() {
            None => {
                let mut running = Vec::new();
                for keys in self.subscribers {
                    running.push(self.subscriber(keys, printer.clone()).await?);
                }
                self.emit(self.lines).await?;
                seen(&mut printed, self.printed).await?;
                for r in running {
                    r.shutdown().await?;
                }
            }
            Some((mode, rest)) if mode == "emit" => {
                let (key, line) = match (self.kind, rest) {
                    (ExchangeKind::Fanout, [line, ..]) => ("", line.as_str()),
                    (_, [key, line, ..]) => (key.as_str(), line.as_str()),
                    _ => anyhow::bail!("emit: what line (and, but for fanout, which key)?"),
                };
                return Ok(self.emit(&[(key, line)]).await?);
            }
            Some((mode, rest)) if mode == "receive" => {
                let n = count(rest)?;
                let keys: Vec<&str> = rest[1..].iter().map(String::as_str).collect();
                let running = self.subscriber(&keys, printer).await?;
                println!("ready");
                seen(&mut printed, n).await?;
                running.shutdown().await?;
            }
            Some((mode, _)) => anyhow::bail!("{}: no mode '{mode}' (emit, receive)", self.exchange),
        }
        remove(&[], &[self.exchange]).await
    }
}
