//! Queue declarations on SQS: what SQS cannot do is refused, the name is mapped (and a
//! colliding mapping refused), and the declaration is kept in the queue's tags so that a
//! re-declare that differs fails as it does on RabbitMQ.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::{BufMut, BytesMut};
use mqtransport_core::{Error, ErrorKind, Queue, QueueInfo, Result};

use crate::client::{DECLARATION_TAG, NAME_TAG, ROLE_TAG, Sqs, sdk_error, tag_bytes, tag_value};
use crate::fields::{Reader, put_table};
use crate::names::{Role, is_fifo, sqs_name};

/// The vhost named in RabbitMQ-style messages.
pub(crate) const VHOST: &str = "/";

/// Refuses what SQS cannot do with a queue, naming it.
pub(crate) fn check_supported(q: &Queue) -> Result<()> {
    let refuse = |what: &str| {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("queue '{}': SQS has no {what}", q.name),
        ))
    };
    if q.exclusive {
        return refuse("exclusive queues (a queue owned by one connection)");
    }
    if q.auto_delete {
        return refuse("auto-delete queues (deleted with their last consumer)");
    }
    for (arg, value) in q.arguments.iter() {
        match arg {
            "x-queue-type" if matches!(value.as_str(), Some("classic" | "quorum")) => {}
            "x-queue-type" => return refuse(&format!("queues of type {}", value.display_value())),
            "x-dead-letter-exchange" | "x-dead-letter-routing-key" => {
                return refuse(
                    "dead-letter exchanges: leave dead letters to the App's dead-letter queue (the default), \
                     which works on SQS",
                );
            }
            "x-message-ttl" | "x-expires" => return refuse(&format!("'{arg}' (message or queue expiry)")),
            "x-max-length" | "x-max-length-bytes" | "x-overflow" => {
                return refuse(&format!("'{arg}' (length limits)"));
            }
            "x-max-priority" => return refuse("priorities ('x-max-priority')"),
            other => return refuse(&format!("queue argument '{other}'")),
        }
    }
    Ok(())
}

/// A generated queue name, for a queue declared without one.
pub(crate) fn generated_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "mqt-gen-{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn encode_declaration(q: &Queue) -> Result<Vec<u8>> {
    let mut out = BytesMut::new();
    out.put_u8(u8::from(q.durable) | (u8::from(q.auto_delete) << 1));
    put_table(&mut out, &q.arguments)?;
    Ok(out.to_vec())
}

fn decode_declaration(name: &str, bytes: &[u8]) -> Result<Queue> {
    let mut r = Reader::new(bytes, "queue declaration tag");
    let flags = r.u8()?;
    let mut q = Queue::durable(name);
    q.durable = flags & 1 != 0;
    q.auto_delete = flags & 2 != 0;
    q.arguments = r.table()?;
    Ok(q)
}

/// Declares `q` (named already) and returns its counts.
pub(crate) async fn declare(sqs: &Sqs, q: &Queue) -> Result<QueueInfo> {
    check_supported(q)?;
    let sqs_queue = sqs_name(&sqs.options.prefix, Role::Queue, &q.name)?;
    let declaration = tag_value(&encode_declaration(q)?);
    if declaration.len() > crate::client::MAX_TAG_VALUE {
        return Err(Error::invalid(format!(
            "queue '{}': its arguments do not fit in an SQS tag (256 characters)",
            q.name
        )));
    }
    let mut attributes = HashMap::new();
    if is_fifo(&q.name) {
        attributes.insert(QueueAttributeName::FifoQueue, "true".to_owned());
    }
    // An existing queue is looked at first: creating it again may overwrite its tags.
    let url = match sqs.url(&sqs_queue, &format!("queue '{}'", q.name)).await {
        Ok(url) => url,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let created = sqs
                .client
                .create_queue()
                .queue_name(&sqs_queue)
                .set_attributes(Some(attributes))
                .tags(ROLE_TAG, Role::Queue.as_str())
                .tags(NAME_TAG, tag_value(q.name.as_bytes()))
                .tags(DECLARATION_TAG, declaration.clone())
                .send()
                .await
                .map_err(|e| sdk_error(&e, format_args!("declaring queue '{}'", q.name)))?;
            created.queue_url().unwrap_or_default().to_owned()
        }
        Err(e) => return Err(e),
    };
    sqs.remember(&sqs_queue, &url);
    let tags = sqs.tags(&url, &format!("queue '{}'", q.name)).await?;
    match (tags.get(ROLE_TAG), tags.get(NAME_TAG)) {
        (Some(role), _) if role != Role::Queue.as_str() => {
            return Err(collision(q, &sqs_queue, &format!("the binding table of an {role}")));
        }
        (_, Some(name)) => {
            let holds = String::from_utf8_lossy(&tag_bytes(name, "a queue name")?).into_owned();
            if holds != q.name {
                return Err(collision(q, &sqs_queue, &format!("queue '{holds}'")));
            }
            if let Some(existing) = tags.get(DECLARATION_TAG) {
                let existing = decode_declaration(&q.name, &tag_bytes(existing, "a queue declaration")?)?;
                q.check_equivalent(&existing, VHOST)?;
            }
        }
        // A queue another SQS client made: adopt it.
        (_, None) => {
            sqs.client
                .tag_queue()
                .queue_url(&url)
                .tags(ROLE_TAG, Role::Queue.as_str())
                .tags(NAME_TAG, tag_value(q.name.as_bytes()))
                .tags(DECLARATION_TAG, declaration)
                .send()
                .await
                .map_err(|e| sdk_error(&e, format_args!("tagging queue '{}'", q.name)))?;
        }
    }
    info(sqs, &q.name, &url).await
}

fn collision(q: &Queue, sqs_queue: &str, holder: &str) -> Error {
    Error::new(
        ErrorKind::Precondition,
        format!(
            "queue '{}' maps to the SQS queue '{sqs_queue}', which already holds {holder}: SQS names allow only \
             letters, digits, '-' and '_' ('.' becomes '-', anything else '_'), so choose names that differ after \
             that mapping",
            q.name
        ),
    )
}

/// The counts of queue `name` at `url`.
pub(crate) async fn info(sqs: &Sqs, name: &str, url: &str) -> Result<QueueInfo> {
    let out = sqs
        .client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|e| sdk_error(&e, format_args!("queue '{name}'")))?;
    let count = out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(QueueInfo {
        name: name.to_owned(),
        message_count: count,
        consumer_count: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_sqs_cannot_do_is_refused_by_name() {
        for (q, needle) in [
            (Queue::server_named(), "exclusive"),
            (Queue::durable("q").auto_delete(), "auto-delete"),
            (Queue::durable("q").max_priority(5), "priorities"),
            (Queue::durable("q").max_length(5), "x-max-length"),
            (
                Queue::durable("q").message_ttl(std::time::Duration::from_secs(1)),
                "x-message-ttl",
            ),
            (Queue::durable("q").dead_letter_exchange("dlx"), "dead-letter exchanges"),
            (Queue::durable("q").argument("x-queue-type", "stream"), "type stream"),
        ] {
            let e = check_supported(&q).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.message().contains(needle), "{e}");
        }
        check_supported(&Queue::quorum("q")).unwrap();
        check_supported(&Queue::durable("q")).unwrap();
    }

    #[test]
    fn a_declaration_round_trips_through_its_tag() {
        let q = Queue::quorum("orders");
        let back = decode_declaration("orders", &encode_declaration(&q).unwrap()).unwrap();
        assert_eq!(back, q);
    }
}
