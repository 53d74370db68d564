//! Work queues: tasks on the durable `task_queue`, each dot a unit of work, shared fairly by
//! workers that take one at a time (prefetch 1) and acknowledge after the work.

use std::time::Duration;

use mqtransport::prelude::*;

use crate::{Printer, count, remove, seen};

/// One unit of work per dot: a second in the tutorial's Python worker, 100 ms here.
const UNIT: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct Worker {
    name: String,
    printer: Printer,
}

async fn work(task: String, State(w): State<Worker>) {
    let dots = task.matches('.').count();
    tokio::time::sleep(UNIT * u32::try_from(dots).unwrap_or(u32::MAX)).await;
    w.printer.print(format!(" [x] {} done: {task}", w.name));
}

async fn worker(name: &str, printer: Printer) -> mqtransport::Result<mqtransport::Running> {
    App::with_state(Worker {
        name: name.to_owned(),
        printer,
    })
    .consumer(
        Consumer::for_queue(Queue::durable("task_queue"))
            .fallback(work)
            .prefetch(1)
            .concurrency(1),
    )
    .build()
    .await?
    .start()
    .await
}

async fn new_tasks(tasks: &[&str]) -> mqtransport::Result<()> {
    let app = App::builder()
        .topology(Topology::new().queue(Queue::durable("task_queue")))
        .build()
        .await?;
    // Persistent, like the tutorial's delivery_mode=2: a plain producer's default.
    let tasks_out = app.plain_producer(Route::queue("task_queue"));
    for task in tasks {
        tasks_out.send_text(*task).await?;
        println!(" [x] Sent {task}");
    }
    app.transport().close().await
}

pub(crate) async fn run(args: &[String]) -> anyhow::Result<()> {
    let (printer, mut printed) = Printer::new();
    match args.split_first() {
        None => {
            let workers = [
                worker("worker 1", printer.clone()).await?,
                worker("worker 2", printer).await?,
            ];
            let tasks = [
                "First message.",
                "Second message..",
                "Third message...",
                "Fourth....",
                "Fifth.....",
            ];
            new_tasks(&tasks).await?;
            seen(&mut printed, tasks.len()).await?;
            for w in workers {
                w.shutdown().await?;
            }
        }
        Some((mode, rest)) if mode == "send" => {
            let tasks: Vec<&str> = rest.iter().map(String::as_str).collect();
            return Ok(new_tasks(&tasks).await?);
        }
        Some((mode, rest)) if mode == "work" => {
            let running = worker("worker", printer).await?;
            seen(&mut printed, count(rest)?).await?;
            running.shutdown().await?;
        }
        Some((mode, _)) => anyhow::bail!("work-queues: no mode '{mode}' (send, work)"),
    }
    remove(&["task_queue", "task_queue.dlq"], &[]).await
}
