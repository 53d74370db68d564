//! Scenarios: exclusive and auto-delete queues.

use super::prelude::*;

/// An exclusive queue refuses other connections (405) except for publishing, and is deleted
/// when its connection closes.
pub async fn exclusive_queue_belongs_to_its_connection(c: Ctx) -> TestResult {
    let q = c.queue("excl");
    let owner = c.connect().await?;
    owner
        .declare(&Topology::new().queue(Queue::transient(&q).exclusive()))
        .await?;
    let other = c.conn();
    expect_err(
        other
            .declare(&Topology::new().queue(Queue::transient(&q).exclusive()))
            .await,
        405,
        "declare",
    )?;
    expect_err(other.queue_info(&q).await, 405, "passive")?;
    expect_err(other.get(&q, false).await, 405, "get")?;
    expect_err(other.purge(&q).await, 405, "purge")?;
    expect_err(other.consume(&q, ConsumeOptions::default()).await, 405, "consume")?;
    expect_err(other.delete_queue(&q, DeleteQueue::default()).await, 405, "delete")?;
    check_eq!(
        other.publish(Publish::to_queue(&q, env("allowed"))).await?,
        Confirmation::Confirmed
    );
    check_eq!(owner.queue_info(&q).await?.message_count, 1);
    owner.close().await?;
    c.eventually("the exclusive queue is deleted", || async {
        Ok(matches!(c.conn().queue_info(&q).await, Err(e) if e.reply_code() == Some(404)))
    })
    .await
}

/// An auto-delete queue lives until its last consumer goes.
pub async fn auto_delete_queue_goes_with_last_consumer(c: Ctx) -> TestResult {
    let q = c.queue("ad");
    c.declare(Topology::new().queue(Queue::transient(&q).auto_delete()))
        .await?;
    c.conn().queue_info(&q).await?;
    let first = c.conn().consume(&q, ConsumeOptions::default()).await?;
    let second = c.conn().consume(&q, ConsumeOptions::default()).await?;
    first.cancel();
    c.eventually("one consumer left", || async {
        Ok(c.conn().queue_info(&q).await?.consumer_count == 1)
    })
    .await?;
    second.cancel();
    c.eventually("the auto-delete queue is deleted", || async {
        Ok(matches!(c.conn().queue_info(&q).await, Err(e) if e.reply_code() == Some(404)))
    })
    .await
}

/// Deleting a queue ends its consumers' streams with `NotFound`, then nothing more: also a
/// consumer on a connection that declared the queue itself (no transport declares it again
/// behind the application's back).
pub async fn deleting_a_queue_cancels_its_consumers(c: Ctx) -> TestResult {
    let q = c.queue("q");
    let other = c.connect().await?;
    other.declare(&Topology::new().queue(Queue::durable(&q))).await?;
    let mut consumer = other.consume(&q, ConsumeOptions::default()).await?;
    c.conn().delete_queue(&q, DeleteQueue::default()).await?;
    let ended = tokio::time::timeout(crate::DEADLINE, async {
        use futures_util::StreamExt;
        loop {
            match consumer.next().await {
                None => return Err("ended without an error".to_owned()),
                Some(Err(e)) if e.kind() == ErrorKind::NotFound => return Ok(consumer.next().await.is_none()),
                Some(Err(e)) => return Err(format!("ended with {e}")),
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    match ended {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Err(Failure("the stream went on after its NotFound".into())),
        Ok(Err(e)) => return Err(Failure(format!("the consumer of a deleted queue {e}"))),
        Err(_) => return Err(Failure("the consumer did not end after its queue was deleted".into())),
    }
    // The queue stays deleted.
    let probe = c.publish("", &q, env("probe")).await?;
    check!(matches!(probe, Confirmation::Returned { .. }), "{probe:?}");
    Ok(())
}
