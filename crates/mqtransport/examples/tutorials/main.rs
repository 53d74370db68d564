//! The six RabbitMQ tutorials (<https://www.rabbitmq.com/tutorials>) written with the App, each
//! interoperating with the tutorials' own Python programs (the interop suite runs pika peers
//! against each). On the embedded broker by default, on RabbitMQ with `MQT_URL`:
//!
//! ```sh
//! cargo run -p mqtransport --example tutorials                      # every tutorial, both sides in one process
//! cargo run -p mqtransport --example tutorials -- hello             # one tutorial
//! cargo run -p mqtransport --example tutorials -- hello receive 1   # one side, for a pika peer
//! MQT_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p mqtransport --example tutorials
//! ```
//!
//! | tutorial | demo | one side |
//! |---|---|---|
//! | `hello` | send and receive `Hello World!` on queue `hello` | `send [TEXT]`, `receive N` |
//! | `work-queues` | two workers share `task_queue` fairly (prefetch 1) | `send TEXT`, `work N` |
//! | `publish-subscribe` | two subscribers of fanout `logs` | `emit TEXT`, `receive N` |
//! | `routing` | subscribers of direct `direct_logs` by severity | `emit SEVERITY TEXT`, `receive N SEVERITY…` |
//! | `topics` | subscribers of topic `topic_logs` by pattern | `emit KEY TEXT`, `receive N PATTERN…` |
//! | `rpc` | a fib server on `rpc_queue` and a client | `serve N`, `call NUMBER` |
//!
//! The names, and the declarations (a transient `hello`, a durable `task_queue`, transient
//! exchanges), are the tutorials' own, so that their programs and ours share them. Each side
//! removes what it declared when it is done (a `receive` or `work` after its N messages).

mod hello;
mod logs;
mod rpc;
mod work_queues;

use anyhow::{Context, bail};
use tokio::sync::mpsc;

/// What handlers print, and how a side knows it has seen its N messages.
#[derive(Clone)]
struct Printer(mpsc::UnboundedSender<String>);

impl Printer {
    fn new() -> (Printer, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Printer(tx), rx)
    }

    fn print(&self, line: String) {
        println!("{line}");
        let _ = self.0.send(line);
    }
}

/// Waits for `n` printed lines.
async fn seen(printed: &mut mpsc::UnboundedReceiver<String>, n: usize) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::with_capacity(n);
    while lines.len() < n {
        lines.push(printed.recv().await.context("the app stopped")?);
    }
    Ok(lines)
}

/// The count argument of a one-sided run.
fn count(args: &[String]) -> anyhow::Result<usize> {
    args.first().context("how many messages?")?.parse().context("a count")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (tutorial, rest) = match args.split_first() {
        Some((t, rest)) => (t.as_str(), rest),
        None => ("all", &[][..]),
    };
    match tutorial {
        "all" => {
            hello::run(&[]).await?;
            work_queues::run(&[]).await?;
            logs::PUBLISH_SUBSCRIBE.run(&[]).await?;
            logs::ROUTING.run(&[]).await?;
            logs::TOPICS.run(&[]).await?;
            rpc::run(&[]).await?;
        }
        "hello" => hello::run(rest).await?,
        "work-queues" => work_queues::run(rest).await?,
        "publish-subscribe" => logs::PUBLISH_SUBSCRIBE.run(rest).await?,
        "routing" => logs::ROUTING.run(rest).await?,
        "topics" => logs::TOPICS.run(rest).await?,
        "rpc" => rpc::run(rest).await?,
        other => bail!("no tutorial '{other}': hello, work-queues, publish-subscribe, routing, topics, rpc"),
    }
    Ok(())
}

/// Deletes queues and exchanges the demo declared, so that it can run against a shared broker.
async fn remove(queues: &[&str], exchanges: &[&str]) -> anyhow::Result<()> {
    use mqtransport::Transport;
    let conn = mqtransport::connect(&mqtransport::url_from_env()).await?;
    for q in queues {
        conn.delete_queue(q, Default::default()).await?;
    }
    for x in exchanges {
        conn.delete_exchange(x, false).await?;
    }
    conn.close().await?;
    Ok(())
}
