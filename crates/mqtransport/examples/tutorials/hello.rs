//! "Hello World!": a producer sends text to queue `hello`, a consumer prints it.

use mqtransport::prelude::*;

use crate::{Printer, count, remove, seen};

async fn receive(text: String, State(printer): State<Printer>) {
    printer.print(format!(" [x] Received {text}"));
}

/// The consumer: the tutorial declares `hello` transient, and sends plain text with no type,
/// so every message goes to the one handler, which takes the body as a string.
async fn receiver(printer: Printer) -> mqtransport::Result<mqtransport::Running> {
    App::with_state(printer)
        .consumer(Consumer::for_queue(Queue::transient("hello")).fallback(receive))
        .build()
        .await?
        .start()
        .await
}

async fn send(text: &str) -> mqtransport::Result<()> {
    let app = App::builder()
        .topology(Topology::new().queue(Queue::transient("hello")))
        .build()
        .await?;
    app.plain_producer(Route::queue("hello")).send_text(text).await?;
    println!(" [x] Sent '{text}'");
    app.transport().close().await
}

pub(crate) async fn run(args: &[String]) -> anyhow::Result<()> {
    let (printer, mut printed) = Printer::new();
    match args.split_first() {
        None => {
            let running = receiver(printer).await?;
            send("Hello World!").await?;
            seen(&mut printed, 1).await?;
            running.shutdown().await?;
        }
        Some((mode, rest)) if mode == "send" => {
            return Ok(send(rest.first().map_or("Hello World!", String::as_str)).await?);
        }
        Some((mode, rest)) if mode == "receive" => {
            let running = receiver(printer).await?;
            seen(&mut printed, count(rest)?).await?;
            running.shutdown().await?;
        }
        Some((mode, _)) => anyhow::bail!("hello: no mode '{mode}' (send, receive)"),
    }
    remove(&["hello", "hello.dlq"], &[]).await
}
