//! RPC: a server on `rpc_queue` answers n with fib(n); a client calls it and waits.
//!
//! The tutorial's messages are bare numbers (`30`, `832040`) with no type: read as JSON they
//! are the numbers themselves, so the typed request and reply below are plain newtypes, and
//! the server takes untyped requests as `Fib`.

use mqtransport::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Printer, count, remove, seen};

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "tutorial.fib")]
struct Fib(u64);

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "tutorial.fibbed")]
struct Fibbed(u64);

async fn fib(Fib(n): Fib, State(printer): State<Printer>) -> Fibbed {
    printer.print(format!(" [.] fib({n})"));
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.saturating_add(b));
    }
    Fibbed(a)
}

async fn server(printer: Printer) -> mqtransport::Result<mqtransport::Running> {
    App::with_state(printer)
        .consumer(
            Consumer::for_queue(Queue::transient("rpc_queue"))
                .default_message::<Fib>()
                .handle(fib)
                .prefetch(1),
        )
        .build()
        .await?
        .start()
        .await
}

async fn call(n: u64) -> anyhow::Result<()> {
    let app = App::builder().build().await?;
    println!(" [x] Requesting fib({n})");
    let Fibbed(answer) = app
        .requester::<Fib, Fibbed>(Route::queue("rpc_queue"))
        .request(&Fib(n))
        .await?;
    println!(" [.] Got {answer}");
    app.transport().close().await?;
    Ok(())
}

pub(crate) async fn run(args: &[String]) -> anyhow::Result<()> {
    let (printer, mut printed) = Printer::new();
    match args.split_first() {
        None => {
            let running = server(printer).await?;
            call(30).await?;
            seen(&mut printed, 1).await?;
            running.shutdown().await?;
        }
        Some((mode, rest)) if mode == "call" => {
            let n = rest.first().map_or(Ok(30), |n| n.parse())?;
            return call(n).await;
        }
        Some((mode, rest)) if mode == "serve" => {
            let running = server(printer).await?;
            println!("ready");
            seen(&mut printed, count(rest)?).await?;
            running.shutdown().await?;
        }
        Some((mode, _)) => anyhow::bail!("rpc: no mode '{mode}' (serve, call)"),
    }
    remove(&["rpc_queue", "rpc_queue.dlq"], &[]).await
}
