//! Competing workers: a producer hands out tasks to three worker services that share one queue
//! and collects their results over request/reply. Each worker takes one task at a time
//! (prefetch 1), so a busy worker is passed over and the work spreads fairly. On the embedded
//! broker by default, on RabbitMQ with `MQT_URL`:
//!
//! ```sh
//! cargo run -p mqtransport --example workers
//! MQT_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p mqtransport --example workers
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use mqtransport::Running;
use mqtransport::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "thumbnails.resize")]
struct Resize {
    image: u32,
}

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "thumbnails.resized")]
struct Resized {
    image: u32,
    worker: String,
}

/// A worker's name, its app's state.
#[derive(Clone)]
struct Worker(String);

async fn resize(task: Resize, State(Worker(name)): State<Worker>) -> Resized {
    // The work: a few milliseconds each.
    tokio::time::sleep(Duration::from_millis(5)).await;
    Resized {
        image: task.image,
        worker: name,
    }
}

/// One worker service: one task at a time.
async fn worker(name: &str) -> anyhow::Result<Running> {
    let app = App::with_state(Worker(name.to_owned()))
        .name(name)
        .consumer(
            Consumer::for_queue(Queue::durable("thumbnails"))
                .handle(resize)
                .prefetch(1)
                .concurrency(1),
        )
        .build()
        .await?;
    Ok(app.start().await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Every app connects to the same broker: $MQT_URL, else the embedded broker (one per
    // process, shared by every memory:// URL).
    let workers = [
        worker("worker-a").await?,
        worker("worker-b").await?,
        worker("worker-c").await?,
    ];
    let producer = App::builder().name("producer").build().await?;
    let resize = producer.requester::<Resize, Resized>(Route::queue("thumbnails"));

    let calls = (1..=30).map(|image| {
        let resize = resize.clone();
        async move { resize.request(&Resize { image }).await }
    });
    let mut done_by: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for result in join_all(calls).await {
        let resized = result?;
        done_by.entry(resized.worker).or_default().push(resized.image);
    }
    for (worker, images) in &done_by {
        println!("{worker}: {} images {images:?}", images.len());
    }
    producer.transport().close().await?;
    for running in workers {
        running.shutdown().await?;
    }

    // The demo removes what it declared, so that it can run against a shared broker.
    let conn = mqtransport::connect(&mqtransport::url_from_env()).await?;
    for queue in ["thumbnails", "thumbnails.dlq"] {
        conn.delete_queue(queue, Default::default()).await?;
    }
    conn.close().await?;
    Ok(())
}
