//! The conformance scenarios. Each is a plain `async fn(Ctx) -> TestResult` that asserts what
//! RabbitMQ 3.10 was observed to do, grouped by subject.

use std::time::Duration;

use bytes::Bytes;
use mqtransport_core::{
    Binding, Confirmation, ConsumeOptions, Decimal, DeleteQueue, DeliveryMode, DynTransport, Envelope, Error,
    ErrorKind, Exchange, FieldTable, FieldValue, Overflow, Publish, Queue, QueueInfo, Subscription, Topology,
    Transport,
};

use crate::{Ctx, Failure, TestResult, body, check, check_eq};

/// Calls `$cb!{ (args...), scenario_a scenario_b ... }` with every scenario name.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_scenario {
    ($cb:path, $($args:tt),*) => {
        $cb! { $($args),*,
            declare_is_idempotent
            redeclare_with_other_flags_fails
            redeclare_with_other_arguments_fails
            exclusive_flag_mismatch_is_locked
            passive_declare_of_missing_entities_is_not_found
            exchange_redeclare_must_match
            reserved_and_oversized_names_are_refused
            quorum_queue_rejects_invalid_properties
            server_named_queues_are_generated
            default_exchange_routes_by_queue_name
            direct_exchange_routes_by_key
            fanout_ignores_routing_key
            topic_patterns_match_words
            headers_exchange_matches_values
            exchange_to_exchange_bindings_give_one_copy
            alternate_exchange_takes_unroutable
            mandatory_unroutable_is_returned
            concurrent_mandatory_publishes_learn_their_own_fate
            publish_to_missing_exchange_fails
            publish_to_internal_exchange_is_refused
            unbind_stops_routing
            auto_delete_exchange_goes_with_last_binding
            exchange_delete_if_unused
            competing_consumers_are_served_round_robin
            prefetch_bounds_unacked_deliveries
            ack_removes_the_message
            out_of_order_acks_settle_every_delivery
            nack_with_requeue_redelivers
            requeue_restores_original_position
            dropped_delivery_is_requeued
            closing_connection_requeues_unacked
            declare_ok_counts_ready_only
            exclusive_queue_belongs_to_its_connection
            auto_delete_queue_goes_with_last_consumer
            deleting_a_queue_cancels_its_consumers
            reject_dead_letters_with_x_death
            reject_without_dead_letter_exchange_drops
            dead_letter_routing_key_override
            dead_letter_to_missing_exchange_drops
            retry_loop_counts_deaths
            queue_ttl_expires_messages
            lower_ttl_wins
            expiry_is_checked_at_the_head
            invalid_expiration_is_refused
            max_length_drops_head
            reject_publish_overflow_nacks
            max_length_bytes_counts_bodies
            quorum_delivery_limit_dead_letters
            quorum_requeue_goes_to_the_back
            priority_queue_orders_by_priority
            cc_and_bcc_headers_add_routes
            direct_reply_to_round_trip
            a_refused_request_keeps_the_reply_consumer
            purge_removes_ready_messages_only
            delete_queue_conditions
            basic_get_reports_message_count
            properties_and_headers_round_trip
        }
    };
}

fn expect_err<T>(r: Result<T, Error>, code: u16, what: &str) -> Result<Error, Failure> {
    match r {
        Ok(_) => Err(Failure(format!("{what}: expected reply code {code}, got success"))),
        Err(e) if e.reply_code() == Some(code) => Ok(e),
        Err(e) => Err(Failure(format!("{what}: expected reply code {code}, got {e}"))),
    }
}

fn env(body: &str) -> Envelope {
    Envelope::new(body.to_owned())
}

/// The `x-death` entries of a delivery, most recent first.
fn deaths(d: &mqtransport_core::Delivery) -> Vec<FieldTable> {
    d.envelope
        .header("x-death")
        .and_then(FieldValue::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
        .unwrap_or_default()
}

fn text<'a>(t: &'a FieldTable, key: &str) -> Option<&'a str> {
    t.get(key).and_then(FieldValue::as_str)
}

/// The keys of a table, sorted: the order RabbitMQ writes them in is not observable through
/// every client library (lapin decodes tables sorted), so the suite compares sets. The embedded
/// broker's own tests check the exact order.
fn keys(t: &FieldTable) -> Vec<&str> {
    let mut k: Vec<&str> = t.iter().map(|(k, _)| k).collect();
    k.sort_unstable();
    k
}

async fn get_one(c: &Ctx, q: &str) -> Result<mqtransport_core::Delivery, Failure> {
    match c.get(q).await? {
        Some(d) => Ok(d),
        None => Err(Failure(format!("queue '{q}' was empty"))),
    }
}

// Declare

/// Declaring the same topology twice succeeds and reports the same queue.
pub async fn declare_is_idempotent(c: Ctx) -> TestResult {
    let (q, x) = (c.queue("q"), c.exchange("x"));
    let t = Topology::new()
        .exchange(Exchange::topic(&x))
        .queue(Queue::durable(&q).message_ttl(Duration::from_secs(60)))
        .bind(Binding::queue(&q, &x, "a.#"));
    let first = c.declare(t.clone()).await?;
    let second = c.declare(t).await?;
    check_eq!(
        first.queues,
        vec![QueueInfo {
            name: q.clone(),
            message_count: 0,
            consumer_count: 0
        }]
    );
    check_eq!(second.queues, first.queues);
    Ok(())
}

/// Re-declaring with another durable or auto-delete flag is PRECONDITION_FAILED naming the queue.
pub async fn redeclare_with_other_flags_fails(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::transient(&q))).await?;
    let e = expect_err(
        c.conn().declare(&Topology::new().queue(Queue::durable(&q))).await,
        406,
        "durable",
    )?;
    check_eq!(e.kind(), ErrorKind::Precondition);
    check_eq!(
        e.message(),
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
        )
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::transient(&q).auto_delete()))
            .await,
        406,
        "auto_delete",
    )?;
    check!(e.message().contains("inequivalent arg 'auto_delete'"), "{e}");
    Ok(())
}

/// Known arguments are compared by value (numbers across widths); unknown ones are ignored.
pub async fn redeclare_with_other_arguments_fails(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).argument("x-message-ttl", 1000i32)))
        .await?;
    let e = expect_err(
        c.conn().declare(&Topology::new().queue(Queue::durable(&q))).await,
        406,
        "no ttl",
    )?;
    check!(
        e.message().contains("inequivalent arg 'x-message-ttl'") && e.message().contains(&q),
        "{e}"
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::durable(&q).argument("x-message-ttl", 2000i32)))
            .await,
        406,
        "other ttl",
    )?;
    check!(e.message().contains("received '2000' but current is '1000'"), "{e}");
    let same = Queue::durable(&q)
        .argument("x-message-ttl", 1000i64)
        .argument("x-mqt-unknown", "ignored")
        .argument("x-queue-type", "classic");
    c.declare(Topology::new().queue(same)).await?;
    Ok(())
}

/// Re-declaring a queue as exclusive is RESOURCE_LOCKED (405), not 406.
pub async fn exclusive_flag_mismatch_is_locked(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::durable(&q).exclusive()))
            .await,
        405,
        "exclusive",
    )?;
    check_eq!(e.kind(), ErrorKind::ResourceLocked);
    Ok(())
}

/// Passive declares of missing queues and exchanges are NOT_FOUND naming them.
pub async fn passive_declare_of_missing_entities_is_not_found(c: Ctx) -> TestResult {
    let (q, x) = (c.queue("missing"), c.exchange("missing"));
    let e = expect_err(c.conn().queue_info(&q).await, 404, "queue")?;
    check_eq!(e.kind(), ErrorKind::NotFound);
    check_eq!(e.message(), format!("NOT_FOUND - no queue '{q}' in vhost '/'"));
    let e = expect_err(c.conn().exchange_exists(&x).await, 404, "exchange")?;
    check_eq!(e.message(), format!("NOT_FOUND - no exchange '{x}' in vhost '/'"));
    Ok(())
}

/// An exchange re-declared with another type or durability is PRECONDITION_FAILED.
pub async fn exchange_redeclare_must_match(c: Ctx) -> TestResult {
    let x = c.exchange("x");
    c.declare(Topology::new().exchange(Exchange::direct(&x))).await?;
    c.declare(Topology::new().exchange(Exchange::direct(&x))).await?;
    let e = expect_err(
        c.conn().declare(&Topology::new().exchange(Exchange::fanout(&x))).await,
        406,
        "type",
    )?;
    check_eq!(
        e.message(),
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'fanout' but current is 'direct'"
        )
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().exchange(Exchange::direct(&x).transient()))
            .await,
        406,
        "durable",
    )?;
    check!(e.message().contains("inequivalent arg 'durable'"), "{e}");
    c.conn().exchange_exists(&x).await?;
    Ok(())
}

/// `amq.` names are reserved (403); built-in exchanges may be re-declared equivalently; names over
/// 255 bytes are refused before reaching the broker.
pub async fn reserved_and_oversized_names_are_refused(c: Ctx) -> TestResult {
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::durable("amq.mqt-probe")))
            .await,
        403,
        "queue",
    )?;
    check_eq!(
        e.message(),
        "ACCESS_REFUSED - queue name 'amq.mqt-probe' contains reserved prefix 'amq.*'"
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().exchange(Exchange::direct("amq.mqt-probe")))
            .await,
        403,
        "exchange",
    )?;
    check!(e.message().contains("reserved prefix 'amq.*'"), "{e}");
    c.declare(Topology::new().exchange(Exchange::direct("amq.direct")))
        .await?;
    expect_err(
        c.conn().delete_exchange("amq.direct", false).await,
        403,
        "delete amq.direct",
    )?;
    let long = format!("{}{}", c.queue("q"), "x".repeat(256));
    match c.conn().declare(&Topology::new().queue(Queue::durable(&long))).await {
        Err(e) if e.kind() == ErrorKind::InvalidInput => check!(e.message().contains("255"), "{e}"),
        other => {
            return Err(Failure(format!("256+ byte name: expected InvalidInput, got {other:?}")));
        }
    }
    Ok(())
}

/// Quorum queues must be durable, not exclusive, not auto-delete.
pub async fn quorum_queue_rejects_invalid_properties(c: Ctx) -> TestResult {
    let q = c.queue("qq");
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::transient(&q).argument("x-queue-type", "quorum")))
            .await,
        406,
        "non-durable",
    )?;
    check_eq!(
        e.message(),
        format!("PRECONDITION_FAILED - invalid property 'non-durable' for queue '{q}' in vhost '/'")
    );
    let e = expect_err(
        c.conn()
            .declare(&Topology::new().queue(Queue::quorum(&q).auto_delete()))
            .await,
        406,
        "auto-delete",
    )?;
    check!(e.message().contains("'auto-delete'"), "{e}");
    c.declare(Topology::new().queue(Queue::quorum(&q))).await?;
    let e = expect_err(
        c.conn().declare(&Topology::new().queue(Queue::durable(&q))).await,
        406,
        "as classic",
    )?;
    check!(e.message().contains("inequivalent arg 'x-queue-type'"), "{e}");
    Ok(())
}

/// An empty queue name gets a fresh `amq.gen-` name of 30 characters each time.
pub async fn server_named_queues_are_generated(c: Ctx) -> TestResult {
    let a = c.declare(Topology::new().queue(Queue::server_named())).await?;
    let b = c.declare(Topology::new().queue(Queue::server_named())).await?;
    let (a, b) = (&a.queues[0].name, &b.queues[0].name);
    c.adopt_queue(a);
    c.adopt_queue(b);
    check!(a.starts_with("amq.gen-") && a.len() == 30, "{a}");
    check!(a != b, "two declares gave the same name {a}");
    c.send(a, "to-generated").await?;
    check_eq!(c.drain(a).await?, vec!["to-generated".to_owned()]);
    Ok(())
}

// Routing

/// The default exchange delivers to the queue named by the routing key.
pub async fn default_exchange_routes_by_queue_name(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "hello").await?;
    let d = get_one(&c, &q).await?;
    check_eq!(
        (d.exchange.as_str(), d.routing_key.as_str(), body(&d)),
        ("", q.as_str(), "hello".to_owned())
    );
    check!(!d.redelivered);
    d.ack().await?;
    Ok(())
}

/// Direct exchanges copy to every queue bound with the key; duplicate binds are no-ops.
pub async fn direct_exchange_routes_by_key(c: Ctx) -> TestResult {
    let x = c.exchange("x");
    let qs: Vec<String> = (0..3).map(|i| c.queue(&format!("q{i}"))).collect();
    let mut t = Topology::new().exchange(Exchange::direct(&x));
    for q in &qs {
        t = t.queue(Queue::durable(q)).bind(Binding::queue(q, &x, "k"));
    }
    t = t
        .bind(Binding::queue(&qs[2], &x, "j"))
        .bind(Binding::queue(&qs[2], &x, "k"));
    c.declare(t).await?;
    check_eq!(c.publish(&x, "k", env("k-msg")).await?, Confirmation::Confirmed);
    check_eq!(c.publish(&x, "j", env("j-msg")).await?, Confirmation::Confirmed);
    check_eq!(c.drain(&qs[0]).await?, vec!["k-msg".to_owned()]);
    check_eq!(c.drain(&qs[1]).await?, vec!["k-msg".to_owned()]);
    check_eq!(c.drain(&qs[2]).await?, vec!["k-msg".to_owned(), "j-msg".to_owned()]);
    Ok(())
}

/// Fanout exchanges ignore the routing key.
pub async fn fanout_ignores_routing_key(c: Ctx) -> TestResult {
    let (x, q1, q2) = (c.exchange("f"), c.queue("q1"), c.queue("q2"));
    c.declare(
        Topology::new()
            .exchange(Exchange::fanout(&x))
            .queue(Queue::durable(&q1))
            .queue(Queue::durable(&q2))
            .bind(Binding::queue(&q1, &x, "k1"))
            .bind(Binding::queue(&q2, &x, "k2")),
    )
    .await?;
    check_eq!(c.publish(&x, "zzz", env("m")).await?, Confirmation::Confirmed);
    check_eq!((c.drain(&q1).await?.len(), c.drain(&q2).await?.len()), (1, 1));
    Ok(())
}

/// Topic patterns: `*` one word (maybe empty), `#` zero or more; one copy per queue.
pub async fn topic_patterns_match_words(c: Ctx) -> TestResult {
    let x = c.exchange("t");
    let cases = [
        ("star", "a.*", 2),
        ("hash", "a.#", 4),
        ("mid", "a.#.b", 2),
        ("empty", "", 1),
        ("tail", "#.a", 2),
    ];
    let keys = ["a", "a.b", "a.", "a.x.y.b", "", "b.a"];
    let multi = c.queue("multi");
    let mut t = Topology::new()
        .exchange(Exchange::topic(&x))
        .queue(Queue::durable(&multi))
        .bind(Binding::queue(&multi, &x, "a.*"))
        .bind(Binding::queue(&multi, &x, "#"));
    let mut names = Vec::new();
    for (name, pattern, _) in cases {
        let q = c.queue(name);
        t = t.queue(Queue::durable(&q)).bind(Binding::queue(&q, &x, pattern));
        names.push(q);
    }
    c.declare(t).await?;
    for k in keys {
        c.publish(&x, k, env(k)).await?;
    }
    for ((_, pattern, expected), q) in cases.iter().zip(&names) {
        let got = c.drain(q).await?;
        check!(got.len() == *expected, "pattern {pattern:?} matched {got:?}");
    }
    check_eq!(c.drain(&multi).await?.len(), keys.len());
    Ok(())
}

/// Headers exchanges: `all`/`any`, numbers by value, void as a presence test.
pub async fn headers_exchange_matches_values(c: Ctx) -> TestResult {
    let x = c.exchange("h");
    let (all, any, void) = (c.queue("all"), c.queue("any"), c.queue("void"));
    let args = |mode: &str| FieldTable::new().with("x-match", mode).with("a", 1i32).with("b", "x");
    c.declare(
        Topology::new()
            .exchange(Exchange::headers(&x))
            .queue(Queue::durable(&all))
            .queue(Queue::durable(&any))
            .queue(Queue::durable(&void))
            .bind(Binding::queue(&all, &x, "").arguments(args("all")))
            .bind(Binding::queue(&any, &x, "").arguments(args("any")))
            .bind(Binding::queue(&void, &x, "").arguments(FieldTable::new().with("a", FieldValue::Void))),
    )
    .await?;
    let msgs = [
        Envelope::new("both").with_header("a", 1i64).with_header("b", "x"),
        Envelope::new("a-double").with_header("a", 1.0f64),
        Envelope::new("b-bytes").with_header("b", FieldValue::Bytes(Bytes::from_static(b"x"))),
        Envelope::new("a-string").with_header("a", "1"),
        Envelope::new("none"),
    ];
    for m in msgs {
        c.publish(&x, "", m).await?;
    }
    check_eq!(c.drain(&all).await?, vec!["both".to_owned()]);
    check_eq!(
        c.drain(&any).await?,
        vec!["both".to_owned(), "a-double".to_owned(), "b-bytes".to_owned()]
    );
    check_eq!(
        c.drain(&void).await?,
        vec!["both".to_owned(), "a-double".to_owned(), "a-string".to_owned()]
    );
    Ok(())
}

/// Exchange-to-exchange: a diamond gives one copy, delivered with the exchange published to;
/// a binding loop does not loop.
pub async fn exchange_to_exchange_bindings_give_one_copy(c: Ctx) -> TestResult {
    let (x1, x2, x3, q) = (c.exchange("x1"), c.exchange("x2"), c.exchange("x3"), c.queue("q"));
    let (a, b, qa) = (c.exchange("a"), c.exchange("b"), c.queue("qa"));
    c.declare(
        Topology::new()
            .exchange(Exchange::topic(&x1))
            .exchange(Exchange::direct(&x2))
            .exchange(Exchange::fanout(&x3))
            .exchange(Exchange::fanout(&a))
            .exchange(Exchange::fanout(&b))
            .queue(Queue::durable(&q))
            .queue(Queue::durable(&qa))
            .bind(Binding::exchange(&x2, &x1, "a.*"))
            .bind(Binding::exchange(&x3, &x1, "#"))
            .bind(Binding::queue(&q, &x2, "a.b"))
            .bind(Binding::queue(&q, &x3, ""))
            .bind(Binding::exchange(&b, &a, ""))
            .bind(Binding::exchange(&a, &b, ""))
            .bind(Binding::queue(&qa, &a, "")),
    )
    .await?;
    c.publish(&x1, "a.b", env("diamond")).await?;
    let d = get_one(&c, &q).await?;
    check_eq!((d.exchange.as_str(), d.routing_key.as_str()), (x1.as_str(), "a.b"));
    d.ack().await?;
    check_eq!(c.count(&q).await?, 0);
    c.publish(&a, "k", env("via-a")).await?;
    c.publish(&b, "k", env("via-b")).await?;
    check_eq!(c.drain(&qa).await?, vec!["via-a".to_owned(), "via-b".to_owned()]);
    Ok(())
}

/// Unroutable messages go to the alternate exchange, with no return, keeping their exchange.
pub async fn alternate_exchange_takes_unroutable(c: Ctx) -> TestResult {
    let (ae, main, qae, qk) = (c.exchange("ae"), c.exchange("main"), c.queue("ae"), c.queue("k"));
    c.declare(
        Topology::new()
            .exchange(Exchange::fanout(&ae))
            .exchange(Exchange::direct(&main).alternate_exchange(&ae))
            .queue(Queue::durable(&qae))
            .queue(Queue::durable(&qk))
            .bind(Binding::queue(&qae, &ae, ""))
            .bind(Binding::queue(&qk, &main, "k")),
    )
    .await?;
    check_eq!(c.publish(&main, "nope", env("lost?")).await?, Confirmation::Confirmed);
    check_eq!(c.publish(&main, "k", env("routed")).await?, Confirmation::Confirmed);
    let d = get_one(&c, &qae).await?;
    check_eq!(
        (d.exchange.as_str(), d.routing_key.as_str(), body(&d)),
        (main.as_str(), "nope", "lost?".to_owned())
    );
    d.ack().await?;
    check_eq!(c.drain(&qk).await?, vec!["routed".to_owned()]);
    Ok(())
}

/// A mandatory unroutable message is returned (312 NO_ROUTE); a plain one is dropped.
pub async fn mandatory_unroutable_is_returned(c: Ctx) -> TestResult {
    let x = c.exchange("x");
    let missing = c.queue("no-such-queue");
    c.declare(Topology::new().exchange(Exchange::direct(&x))).await?;
    let returned = Confirmation::Returned {
        reply_code: 312,
        reply_text: "NO_ROUTE".into(),
    };
    check_eq!(c.publish(&x, "nope", env("m")).await?, returned);
    check_eq!(
        c.conn()
            .publish(Publish::new(&x, "nope", env("m")).mandatory(false))
            .await?,
        Confirmation::Confirmed
    );
    check_eq!(c.publish("", &missing, env("m")).await?, returned);
    match returned.into_result(&x, "nope") {
        Err(e) => check_eq!(e.kind(), ErrorKind::Unroutable),
        Ok(()) => return Err(Failure("a returned message converted to Ok".into())),
    }
    Ok(())
}

/// Many mandatory publishes in flight at once, routable (persistent, so their confirms wait for
/// the disk) and unroutable (returned at once) interleaved: each caller learns its own message's
/// fate. AMQP's `basic.return` carries no delivery tag, and RabbitMQ may confirm several
/// publishes with one multiple-ack or confirm a later publish first, so a client that pairs
/// a return with whichever confirm comes next reports a stored message as returned and a
/// returned one as confirmed.
pub async fn concurrent_mandatory_publishes_learn_their_own_fate(c: Ctx) -> TestResult {
    let (q, missing) = (c.queue("q"), c.queue("no-such-queue"));
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let conn = c.conn();
    let sends = (0..300).map(|i| {
        let (to, envelope) = if i % 3 == 2 {
            (missing.as_str(), env(&format!("lost-{i}")))
        } else {
            (q.as_str(), env(&format!("kept-{i}")).persistent())
        };
        async move { (i, conn.publish(Publish::to_queue(to, envelope)).await) }
    });
    let outcomes = futures_util::future::join_all(sends).await;
    let returned = Confirmation::Returned {
        reply_code: 312,
        reply_text: "NO_ROUTE".into(),
    };
    for (i, outcome) in outcomes {
        let expected = if i % 3 == 2 {
            returned.clone()
        } else {
            Confirmation::Confirmed
        };
        check_eq!((i, outcome?), (i, expected));
    }
    check_eq!(c.count(&q).await?, 200);
    Ok(())
}

/// Publishing to a missing exchange is NOT_FOUND naming it; the connection keeps working.
pub async fn publish_to_missing_exchange_fails(c: Ctx) -> TestResult {
    let (x, q) = (c.exchange("nox"), c.queue("q"));
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let e = expect_err(c.conn().publish(Publish::new(&x, "k", env("m"))).await, 404, "publish")?;
    check_eq!(e.message(), format!("NOT_FOUND - no exchange '{x}' in vhost '/'"));
    c.conn().ping().await?;
    c.send(&q, "after").await?;
    check_eq!(c.drain(&q).await?, vec!["after".to_owned()]);
    Ok(())
}

/// Internal exchanges refuse direct publishes (403) but route through e2e bindings.
pub async fn publish_to_internal_exchange_is_refused(c: Ctx) -> TestResult {
    let (front, internal, q) = (c.exchange("front"), c.exchange("internal"), c.queue("q"));
    c.declare(
        Topology::new()
            .exchange(Exchange::fanout(&front))
            .exchange(Exchange::fanout(&internal).internal())
            .queue(Queue::durable(&q))
            .bind(Binding::exchange(&internal, &front, ""))
            .bind(Binding::queue(&q, &internal, "")),
    )
    .await?;
    let e = expect_err(
        c.conn().publish(Publish::new(&internal, "", env("m"))).await,
        403,
        "internal",
    )?;
    check!(e.message().contains("cannot publish to internal exchange"), "{e}");
    c.publish(&front, "", env("through")).await?;
    check_eq!(c.drain(&q).await?, vec!["through".to_owned()]);
    Ok(())
}

/// Unbinding stops routing; unbinding what is not bound is not an error.
pub async fn unbind_stops_routing(c: Ctx) -> TestResult {
    let (x, q) = (c.exchange("x"), c.queue("q"));
    let b = Binding::queue(&q, &x, "k");
    c.declare(
        Topology::new()
            .exchange(Exchange::direct(&x))
            .queue(Queue::durable(&q))
            .bind(b.clone()),
    )
    .await?;
    check_eq!(c.publish(&x, "k", env("1")).await?, Confirmation::Confirmed);
    c.conn().unbind(&b).await?;
    check!(matches!(
        c.publish(&x, "k", env("2")).await?,
        Confirmation::Returned { .. }
    ));
    c.conn().unbind(&b).await?;
    c.conn().unbind(&Binding::queue(c.queue("never"), &x, "k")).await?;
    check_eq!(c.drain(&q).await?, vec!["1".to_owned()]);
    Ok(())
}

/// An auto-delete exchange goes when its last binding as a source goes.
pub async fn auto_delete_exchange_goes_with_last_binding(c: Ctx) -> TestResult {
    let (x, q1, q2) = (c.exchange("ad"), c.queue("q1"), c.queue("q2"));
    c.declare(
        Topology::new()
            .exchange(Exchange::direct(&x).auto_delete())
            .queue(Queue::durable(&q1))
            .queue(Queue::durable(&q2))
            .bind(Binding::queue(&q1, &x, "k"))
            .bind(Binding::queue(&q2, &x, "k")),
    )
    .await?;
    c.conn().unbind(&Binding::queue(&q1, &x, "k")).await?;
    c.conn().exchange_exists(&x).await?;
    c.conn().unbind(&Binding::queue(&q2, &x, "k")).await?;
    expect_err(c.conn().exchange_exists(&x).await, 404, "after last unbind")?;
    Ok(())
}

/// `exchange.delete if_unused` fails while bindings exist; deleting a missing exchange is fine.
pub async fn exchange_delete_if_unused(c: Ctx) -> TestResult {
    let (x, q) = (c.exchange("x"), c.queue("q"));
    c.declare(
        Topology::new()
            .exchange(Exchange::direct(&x))
            .queue(Queue::durable(&q))
            .bind(Binding::queue(&q, &x, "k")),
    )
    .await?;
    let e = expect_err(c.conn().delete_exchange(&x, true).await, 406, "if_unused")?;
    check_eq!(
        e.message(),
        format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use")
    );
    c.conn().delete_exchange(&x, false).await?;
    expect_err(c.conn().exchange_exists(&x).await, 404, "deleted")?;
    c.conn().delete_exchange(&x, false).await?;
    Ok(())
}

// Consumers, acks, requeue

/// Competing consumers are served strictly round-robin in subscription order.
pub async fn competing_consumers_are_served_round_robin(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let conn = c.connect().await?;
        consumers.push(conn.consume(&q, ConsumeOptions::default().no_ack(true)).await?);
    }
    for i in 0..9 {
        c.send(&q, &format!("m{i}")).await?;
    }
    for (k, consumer) in consumers.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(body(&c.next(consumer).await?));
        }
        let want: Vec<String> = (0..3).map(|j| format!("m{}", k + 3 * j)).collect();
        check_eq!(got, want);
    }
    Ok(())
}

/// Prefetch bounds unacknowledged deliveries per consumer; an ack releases the next.
pub async fn prefetch_bounds_unacked_deliveries(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..5 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(2)).await?;
    let d0 = c.next(&mut consumer).await?;
    let d1 = c.next(&mut consumer).await?;
    check_eq!((body(&d0), body(&d1)), ("m0".to_owned(), "m1".to_owned()));
    c.wait_count(&q, 3).await?;
    d0.ack().await?;
    let d2 = c.next(&mut consumer).await?;
    check_eq!(body(&d2), "m2");
    c.wait_count(&q, 2).await?;
    d1.ack().await?;
    d2.ack().await?;
    Ok(())
}

/// An acked message is gone: the next message published is the next one delivered.
pub async fn ack_removes_the_message(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "first").await?;
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    let d = c.next(&mut consumer).await?;
    d.ack().await?;
    drop(consumer);
    c.send(&q, "second").await?;
    c.wait_count(&q, 1).await?;
    check_eq!(c.drain(&q).await?, vec!["second".to_owned()]);
    Ok(())
}

/// Acks in another order than delivered (as concurrent handlers give them) each release their
/// delivery, and the channel stays open: an ack of a later delivery sent alone must not be
/// named again by a later `multiple` ack (RabbitMQ closes the channel on an unknown tag).
pub async fn out_of_order_acks_settle_every_delivery(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 1..=6 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(3)).await?;
    let d1 = c.next(&mut consumer).await?;
    let d2 = c.next(&mut consumer).await?;
    let d3 = c.next(&mut consumer).await?;
    // The last one first: its credit brings m4, so the broker has taken that ack.
    d3.ack().await?;
    let d4 = c.next(&mut consumer).await?;
    check_eq!(body(&d4), "m4");
    // Then the gap fills.
    d1.ack().await?;
    d2.ack().await?;
    let d5 = c.next(&mut consumer).await?;
    let d6 = c.next(&mut consumer).await?;
    check_eq!((body(&d5), body(&d6)), ("m5".to_owned(), "m6".to_owned()));
    d6.ack().await?;
    d4.ack().await?;
    d5.ack().await?;
    // Had the channel closed, its unacked messages would be back in the queue.
    c.send(&q, "after").await?;
    let after = c.next(&mut consumer).await?;
    check_eq!(body(&after), "after");
    after.ack().await?;
    drop(consumer);
    c.wait_count(&q, 0).await?;
    Ok(())
}

/// nack with requeue redelivers the message with `redelivered = true`.
pub async fn nack_with_requeue_redelivers(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "again").await?;
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    let d = c.next(&mut consumer).await?;
    check!(!d.redelivered);
    d.nack(true).await?;
    let d = c.next(&mut consumer).await?;
    check_eq!((body(&d), d.redelivered), ("again".to_owned(), true));
    d.reject(true).await?;
    let d = c.next(&mut consumer).await?;
    check!(d.redelivered);
    d.ack().await?;
    Ok(())
}

/// Classic queues put requeued messages back at their original position.
pub async fn requeue_restores_original_position(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..6 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let m0 = get_one(&c, &q).await?;
    let m1 = get_one(&c, &q).await?;
    let m2 = get_one(&c, &q).await?;
    m2.reject(true).await?;
    m0.reject(true).await?;
    let mut order = Vec::new();
    while let Some(d) = c.get(&q).await? {
        order.push(format!("{}{}", body(&d), if d.redelivered { "(r)" } else { "" }));
        d.ack().await?;
    }
    check_eq!(order, vec!["m0(r)", "m2(r)", "m3", "m4", "m5"]);
    m1.ack().await?;
    Ok(())
}

/// A delivery dropped without being settled goes back to the queue, redelivered.
pub async fn dropped_delivery_is_requeued(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "dropped").await?;
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    drop(c.next(&mut consumer).await?);
    let d = c.next(&mut consumer).await?;
    check_eq!((body(&d), d.redelivered), ("dropped".to_owned(), true));
    d.ack().await?;
    Ok(())
}

/// Closing a connection requeues its unacknowledged deliveries.
pub async fn closing_connection_requeues_unacked(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "m0").await?;
    c.send(&q, "m1").await?;
    let other = c.connect().await?;
    let mut consumer = other.consume(&q, ConsumeOptions::default().prefetch(10)).await?;
    let d0 = c.next(&mut consumer).await?;
    let d1 = c.next(&mut consumer).await?;
    c.wait_count(&q, 0).await?;
    other.close().await?;
    c.wait_count(&q, 2).await?;
    let r = get_one(&c, &q).await?;
    check_eq!((body(&r), r.redelivered), ("m0".to_owned(), true));
    r.ack().await?;
    // The closed connection's deliveries can no longer be settled.
    check!(d0.ack().await.is_err());
    drop(d1);
    Ok(())
}

/// `declare-ok` counts ready messages only, and consumers.
pub async fn declare_ok_counts_ready_only(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..3 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    let d = c.next(&mut consumer).await?;
    c.wait_count(&q, 2).await?;
    let info = c
        .declare(Topology::new().queue(Queue::durable(&q)))
        .await?
        .queues
        .remove(0);
    check_eq!((info.message_count, info.consumer_count), (2, 1));
    d.ack().await?;
    Ok(())
}

// Exclusive and auto-delete queues

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

/// Deleting a queue ends its consumers' streams.
pub async fn deleting_a_queue_cancels_its_consumers(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let other = c.connect().await?;
    let mut consumer = other.consume(&q, ConsumeOptions::default()).await?;
    c.conn().delete_queue(&q, DeleteQueue::default()).await?;
    let ended = tokio::time::timeout(crate::DEADLINE, async {
        use futures_util::StreamExt;
        loop {
            match consumer.next().await {
                None | Some(Err(_)) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    check!(ended.is_ok(), "the consumer did not end after its queue was deleted");
    Ok(())
}

// Dead letters

fn dlx_pair(c: &Ctx) -> (String, String) {
    (c.exchange("dlx"), c.queue("dlq"))
}

fn with_dlq(t: Topology, dlx: &str, dlq: &str) -> Topology {
    t.exchange(Exchange::fanout(dlx))
        .queue(Queue::durable(dlq))
        .bind(Binding::queue(dlq, dlx, ""))
}

/// A rejected message reaches the dead-letter exchange with `x-death` as RabbitMQ writes it.
pub async fn reject_dead_letters_with_x_death(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let (input, src) = (c.exchange("in"), c.queue("src"));
    let t = Topology::new()
        .exchange(Exchange::direct(&input))
        .queue(Queue::durable(&src).dead_letter_exchange(&dlx))
        .bind(Binding::queue(&src, &input, "in-key"));
    c.declare(with_dlq(t, &dlx, &dlq)).await?;
    let msg = Envelope::new("dead")
        .with_expiration(Duration::from_secs(60))
        .with_header("app", "kept")
        .with_correlation_id("c-1");
    c.publish(&input, "in-key", msg).await?;
    get_one(&c, &src).await?.reject(false).await?;
    c.wait_count(&dlq, 1).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!(
        (d.exchange.as_str(), d.routing_key.as_str(), d.redelivered),
        (dlx.as_str(), "in-key", false)
    );
    check_eq!(d.envelope.properties().expiration, None);
    check_eq!(d.envelope.properties().correlation_id.as_deref(), Some("c-1"));
    check_eq!(d.envelope.header("app").and_then(FieldValue::as_str), Some("kept"));
    let x = deaths(&d);
    check_eq!(x.len(), 1);
    check_eq!(
        keys(&x[0]),
        vec![
            "count",
            "exchange",
            "original-expiration",
            "queue",
            "reason",
            "routing-keys",
            "time"
        ]
    );
    check_eq!(x[0].get("count").and_then(FieldValue::as_i64), Some(1));
    check_eq!(
        (text(&x[0], "reason"), text(&x[0], "queue"), text(&x[0], "exchange")),
        (Some("rejected"), Some(src.as_str()), Some(input.as_str()))
    );
    check_eq!(
        x[0].get("routing-keys"),
        Some(&FieldValue::Array(vec!["in-key".into()]))
    );
    check_eq!(text(&x[0], "original-expiration"), Some("60000"));
    check!(matches!(x[0].get("time"), Some(FieldValue::Timestamp(_))));
    let first = |k: &str| d.envelope.header(k).and_then(FieldValue::as_str).map(str::to_owned);
    check_eq!(first("x-first-death-exchange"), Some(input.clone()));
    check_eq!(first("x-first-death-queue"), Some(src.clone()));
    check_eq!(first("x-first-death-reason").as_deref(), Some("rejected"));
    d.ack().await?;
    Ok(())
}

/// Without a dead-letter exchange a rejected message is dropped.
pub async fn reject_without_dead_letter_exchange_drops(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    c.send(&q, "gone").await?;
    get_one(&c, &q).await?.reject(false).await?;
    c.send(&q, "next").await?;
    check_eq!(c.drain(&q).await?, vec!["next".to_owned()]);
    Ok(())
}

/// `x-dead-letter-routing-key` replaces the key; `x-death` keeps the original.
pub async fn dead_letter_routing_key_override(c: Ctx) -> TestResult {
    let (src, dlq) = (c.queue("src"), c.queue("dlq"));
    c.declare(
        Topology::new().queue(Queue::durable(&dlq)).queue(
            Queue::durable(&src)
                .dead_letter_exchange("")
                .dead_letter_routing_key(&dlq),
        ),
    )
    .await?;
    c.send(&src, "redirected").await?;
    get_one(&c, &src).await?.nack(false).await?;
    c.wait_count(&dlq, 1).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!((d.exchange.as_str(), d.routing_key.as_str()), ("", dlq.as_str()));
    check_eq!(
        deaths(&d)[0].get("routing-keys"),
        Some(&FieldValue::Array(vec![src.as_str().into()]))
    );
    d.ack().await?;
    Ok(())
}

/// A dead-letter exchange that does not exist drops the message silently.
pub async fn dead_letter_to_missing_exchange_drops(c: Ctx) -> TestResult {
    let (q, missing) = (c.queue("q"), c.exchange("missing-dlx"));
    c.declare(Topology::new().queue(Queue::durable(&q).dead_letter_exchange(&missing)))
        .await?;
    c.send(&q, "m").await?;
    get_one(&c, &q).await?.reject(false).await?;
    c.conn().ping().await?;
    c.send(&q, "after").await?;
    check_eq!(c.drain(&q).await?, vec!["after".to_owned()]);
    Ok(())
}

/// A retry loop (reject → TTL wait queue → back) counts deaths per (queue, reason), most recent
/// first, with later entries written sorted by key.
pub async fn retry_loop_counts_deaths(c: Ctx) -> TestResult {
    let (work, retry) = (c.queue("work"), c.queue("retry"));
    c.declare(
        Topology::new()
            .queue(
                Queue::durable(&work)
                    .dead_letter_exchange("")
                    .dead_letter_routing_key(&retry),
            )
            .queue(
                Queue::durable(&retry)
                    .message_ttl(Duration::from_millis(50))
                    .dead_letter_exchange("")
                    .dead_letter_routing_key(&work),
            ),
    )
    .await?;
    c.send(&work, "job").await?;
    for _ in 0..2 {
        c.wait_count(&work, 1).await?;
        get_one(&c, &work).await?.reject(false).await?;
    }
    c.wait_count(&work, 1).await?;
    let d = get_one(&c, &work).await?;
    let x = deaths(&d);
    check_eq!(x.len(), 2);
    check_eq!(
        (text(&x[0], "queue"), text(&x[0], "reason")),
        (Some(retry.as_str()), Some("expired"))
    );
    check_eq!(
        (text(&x[1], "queue"), text(&x[1], "reason")),
        (Some(work.as_str()), Some("rejected"))
    );
    check_eq!(x[0].get("count").and_then(FieldValue::as_i64), Some(2));
    check_eq!(x[1].get("count").and_then(FieldValue::as_i64), Some(2));
    check_eq!(
        keys(&x[0]),
        vec!["count", "exchange", "queue", "reason", "routing-keys", "time"]
    );
    d.ack().await?;
    Ok(())
}

// TTL

/// `x-message-ttl` expires messages, dead-lettered with reason `expired`.
pub async fn queue_ttl_expires_messages(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let q = c.queue("q");
    let t = Topology::new().queue(
        Queue::durable(&q)
            .message_ttl(Duration::from_millis(200))
            .dead_letter_exchange(&dlx),
    );
    c.declare(with_dlq(t, &dlx, &dlq)).await?;
    c.send(&q, "a").await?;
    c.send(&q, "b").await?;
    c.wait_count(&dlq, 2).await?;
    check_eq!(c.count(&q).await?, 0);
    let d = get_one(&c, &dlq).await?;
    let x = deaths(&d);
    check_eq!(text(&x[0], "reason"), Some("expired"));
    check!(!x[0].contains_key("original-expiration"));
    d.ack().await?;
    Ok(())
}

/// The lower of the queue's and the message's TTL wins; a delivered message keeps its
/// `expiration` unchanged.
pub async fn lower_ttl_wins(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).message_ttl(Duration::from_secs(60))))
        .await?;
    c.publish("", &q, env("short").with_expiration(Duration::from_millis(100)))
        .await?;
    c.publish("", &q, env("keep").with_expiration(Duration::from_secs(120)))
        .await?;
    c.wait_count(&q, 1).await?;
    let d = get_one(&c, &q).await?;
    check_eq!(
        (body(&d), d.envelope.properties().expiration.as_deref()),
        ("keep".to_owned(), Some("120000"))
    );
    d.ack().await?;
    Ok(())
}

/// Expiry is checked at the head only: a short TTL behind a long one waits.
pub async fn expiry_is_checked_at_the_head(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let q = c.queue("q");
    c.declare(with_dlq(
        Topology::new().queue(Queue::durable(&q).dead_letter_exchange(&dlx)),
        &dlx,
        &dlq,
    ))
    .await?;
    c.publish("", &q, env("long").with_expiration(Duration::from_millis(3000)))
        .await?;
    c.publish("", &q, env("short").with_expiration(Duration::from_millis(200)))
        .await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    check_eq!((c.count(&q).await?, c.count(&dlq).await?), (2, 0));
    c.wait_count(&dlq, 2).await?;
    check_eq!(c.drain(&dlq).await?, vec!["long".to_owned(), "short".to_owned()]);
    Ok(())
}

/// A malformed `expiration` is PRECONDITION_FAILED with RabbitMQ's text.
pub async fn invalid_expiration_is_refused(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let mut bad = env("m");
    bad.properties_mut().expiration = Some("abc".into());
    let e = expect_err(c.conn().publish(Publish::to_queue(&q, bad)).await, 406, "abc")?;
    check_eq!(
        e.message(),
        "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"
    );
    let mut neg = env("m");
    neg.properties_mut().expiration = Some("-1".into());
    let e = expect_err(c.conn().publish(Publish::to_queue(&q, neg)).await, 406, "-1")?;
    check!(e.message().ends_with("{value_negative,-1}"), "{e}");
    Ok(())
}

// Max length

/// `x-max-length` with drop-head keeps the newest and dead-letters the oldest (`maxlen`).
pub async fn max_length_drops_head(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let q = c.queue("q");
    c.declare(with_dlq(
        Topology::new().queue(Queue::durable(&q).max_length(2).dead_letter_exchange(&dlx)),
        &dlx,
        &dlq,
    ))
    .await?;
    for i in 0..5 {
        c.send(&q, &format!("m{i}")).await?;
    }
    check_eq!(c.drain(&q).await?, vec!["m3".to_owned(), "m4".to_owned()]);
    c.wait_count(&dlq, 3).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!(
        (body(&d), text(&deaths(&d)[0], "reason")),
        ("m0".to_owned(), Some("maxlen"))
    );
    d.ack().await?;
    Ok(())
}

/// `reject-publish` nacks what does not fit; `reject-publish-dlx` also dead-letters it.
pub async fn reject_publish_overflow_nacks(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let (q, q2) = (c.queue("q"), c.queue("q2"));
    let t = Topology::new()
        .queue(Queue::durable(&q).max_length(2).overflow(Overflow::RejectPublish))
        .queue(
            Queue::durable(&q2)
                .max_length(1)
                .overflow(Overflow::RejectPublishDlx)
                .dead_letter_exchange(&dlx),
        );
    c.declare(with_dlq(t, &dlx, &dlq)).await?;
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(c.publish("", &q, env(&format!("m{i}"))).await?);
    }
    use Confirmation::{Confirmed, Nacked};
    check_eq!(got, vec![Confirmed, Confirmed, Nacked, Nacked]);
    check_eq!(c.drain(&q).await?, vec!["m0".to_owned(), "m1".to_owned()]);
    check_eq!(c.publish("", &q2, env("n0")).await?, Confirmed);
    check_eq!(c.publish("", &q2, env("n1")).await?, Nacked);
    c.wait_count(&dlq, 1).await?;
    let d = get_one(&c, &dlq).await?;
    check_eq!(
        (body(&d), text(&deaths(&d)[0], "reason")),
        ("n1".to_owned(), Some("maxlen"))
    );
    d.ack().await?;
    Ok(())
}

/// `x-max-length-bytes` counts body bytes only.
pub async fn max_length_bytes_counts_bodies(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q).max_length_bytes(10)))
        .await?;
    for b in ["b0xx", "b1xx", "b2xx", "b3xx"] {
        c.publish("", &q, env(b).with_header("padding", "p".repeat(100)))
            .await?;
    }
    c.send(&q, "").await?;
    check_eq!(
        c.drain(&q).await?,
        vec!["b2xx".to_owned(), "b3xx".to_owned(), String::new()]
    );
    Ok(())
}

// Quorum queues

/// Past `x-delivery-limit` returns a message is dead-lettered with reason `delivery_limit`;
/// `x-delivery-count` counts the returns.
pub async fn quorum_delivery_limit_dead_letters(c: Ctx) -> TestResult {
    let (dlx, dlq) = dlx_pair(&c);
    let q = c.queue("qq");
    c.declare(with_dlq(
        Topology::new().queue(Queue::quorum(&q).delivery_limit(1).dead_letter_exchange(&dlx)),
        &dlx,
        &dlq,
    ))
    .await?;
    c.send(&q, "poison").await?;
    for expected in 0..2u64 {
        c.wait_count(&q, 1).await?;
        let d = get_one(&c, &q).await?;
        check_eq!(d.delivery_count(), Some(expected));
        d.nack(true).await?;
    }
    c.wait_count(&dlq, 1).await?;
    check_eq!(c.count(&q).await?, 0);
    let d = get_one(&c, &dlq).await?;
    check_eq!(text(&deaths(&d)[0], "reason"), Some("delivery_limit"));
    check!(!d.redelivered);
    d.ack().await?;
    Ok(())
}

/// Quorum queues requeue rejected messages at the back.
pub async fn quorum_requeue_goes_to_the_back(c: Ctx) -> TestResult {
    let q = c.queue("qq");
    c.declare(Topology::new().queue(Queue::quorum(&q))).await?;
    for i in 0..4 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let m0 = get_one(&c, &q).await?;
    let m1 = get_one(&c, &q).await?;
    m1.reject(true).await?;
    m0.reject(true).await?;
    c.wait_count(&q, 4).await?;
    check_eq!(c.drain(&q).await?, vec!["m2", "m3", "m1", "m0"]);
    Ok(())
}

// Priorities

/// `x-max-priority` queues deliver by priority, capped at the maximum, FIFO within one.
pub async fn priority_queue_orders_by_priority(c: Ctx) -> TestResult {
    let q = c.queue("prio");
    c.declare(Topology::new().queue(Queue::durable(&q).max_priority(5)))
        .await?;
    let msgs: [(&str, Option<u8>); 8] = [
        ("p0", Some(0)),
        ("none", None),
        ("p5a", Some(5)),
        ("p3", Some(3)),
        ("p9", Some(9)),
        ("p255", Some(255)),
        ("p5b", Some(5)),
        ("p1", Some(1)),
    ];
    for (b, p) in msgs {
        let mut e = env(b);
        e.properties_mut().priority = p;
        c.publish("", &q, e).await?;
    }
    check_eq!(
        c.drain(&q).await?,
        vec!["p5a", "p9", "p255", "p5b", "p3", "p1", "p0", "none"]
    );
    Ok(())
}

// CC / BCC

/// `CC` and `BCC` headers add routing keys; `BCC` is removed from every copy.
pub async fn cc_and_bcc_headers_add_routes(c: Ctx) -> TestResult {
    let x = c.exchange("x");
    let (q1, q2, q3) = (c.queue("q1"), c.queue("q2"), c.queue("q3"));
    c.declare(
        Topology::new()
            .exchange(Exchange::direct(&x))
            .queue(Queue::durable(&q1))
            .queue(Queue::durable(&q2))
            .queue(Queue::durable(&q3))
            .bind(Binding::queue(&q1, &x, "k1"))
            .bind(Binding::queue(&q2, &x, "k2"))
            .bind(Binding::queue(&q3, &x, "k3")),
    )
    .await?;
    let m = Envelope::new("copied")
        .with_header("CC", FieldValue::Array(vec!["k2".into()]))
        .with_header("BCC", FieldValue::Array(vec!["k3".into()]));
    c.publish(&x, "k1", m).await?;
    for q in [&q1, &q2, &q3] {
        let d = get_one(&c, q).await?;
        check_eq!(d.routing_key.as_str(), "k1");
        check!(
            d.envelope.header("CC").is_some() && d.envelope.header("BCC").is_none(),
            "{q}: {:?}",
            d.envelope.properties().headers
        );
        d.ack().await?;
    }
    let bad = Envelope::new("bad").with_header("CC", "k2");
    let e = expect_err(
        c.conn().publish(Publish::new(&x, "k1", bad)).await,
        406,
        "CC as a string",
    )?;
    check_eq!(
        e.message(),
        "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\",longstr}"
    );
    Ok(())
}

// Direct reply-to

/// One request over direct reply-to: `client` sends "2+2" to `q` with correlation id `id`, the
/// suite's first connection answers "4" to the address the request carries, and the reply is
/// read from `replies`. Checks the address's form; returns the reply and the address.
async fn direct_reply_round_trip(
    c: &Ctx,
    client: &DynTransport,
    replies: &mut Subscription,
    q: &str,
    id: &str,
) -> Result<(mqtransport_core::Delivery, String), Failure> {
    let request = env("2+2")
        .with_reply_to("amq.rabbitmq.reply-to")
        .with_correlation_id(id);
    check_eq!(
        client.publish(Publish::to_queue(q, request)).await?,
        Confirmation::Confirmed
    );
    let req = get_one(c, q).await?;
    // The broker replaced the pseudo-queue's name with this channel's reply address.
    let reply_to = req.envelope.properties().reply_to.clone().unwrap_or_default();
    check!(
        reply_to.starts_with("amq.rabbitmq.reply-to.") && reply_to.len() > 23,
        "{reply_to}"
    );
    c.conn()
        .publish(Publish::new("", &reply_to, env("4").with_correlation_id(id)))
        .await?;
    req.ack().await?;
    Ok((c.next(replies).await?, reply_to))
}

/// Direct reply-to: the request carries a generated `amq.rabbitmq.reply-to.…` address and the
/// reply published to it reaches the requester.
pub async fn direct_reply_to_round_trip(c: Ctx) -> TestResult {
    let q = c.queue("rpc");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let client = c.connect().await?;
    expect_err(
        client
            .publish(Publish::to_queue(
                &q,
                env("early").with_reply_to("amq.rabbitmq.reply-to"),
            ))
            .await,
        406,
        "no reply consumer",
    )?;
    let client = c.connect().await?;
    expect_err(
        client.consume("amq.rabbitmq.reply-to", ConsumeOptions::default()).await,
        406,
        "acking reply consumer",
    )?;
    let client = c.connect().await?;
    let mut replies = client
        .consume("amq.rabbitmq.reply-to", ConsumeOptions::default().no_ack(true))
        .await?;
    let (r, reply_to) = direct_reply_round_trip(&c, &client, &mut replies, &q, "req-1").await?;
    check_eq!(
        (
            body(&r),
            r.envelope.properties().correlation_id.as_deref(),
            r.routing_key.as_str()
        ),
        ("4".to_owned(), Some("req-1"), reply_to.as_str())
    );
    Ok(())
}

/// A request refused by the broker (sent to a missing exchange, which closes the channel it went
/// out on) fails alone: the reply consumer keeps receiving replies to later requests.
pub async fn a_refused_request_keeps_the_reply_consumer(c: Ctx) -> TestResult {
    let (q, missing) = (c.queue("rpc"), c.exchange("no-such-exchange"));
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let client = c.connect().await?;
    let mut replies = client
        .consume("amq.rabbitmq.reply-to", ConsumeOptions::default().no_ack(true))
        .await?;
    let lost = env("lost").with_reply_to("amq.rabbitmq.reply-to");
    expect_err(
        client.publish(Publish::new(&missing, "k", lost)).await,
        404,
        "request to a missing exchange",
    )?;
    let (r, _) = direct_reply_round_trip(&c, &client, &mut replies, &q, "req-2").await?;
    check_eq!(
        (body(&r), r.envelope.properties().correlation_id.as_deref()),
        ("4".to_owned(), Some("req-2"))
    );
    Ok(())
}

// Purge, delete, get

/// Purge removes ready messages and reports how many; unacknowledged ones survive.
pub async fn purge_removes_ready_messages_only(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..5 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let held = get_one(&c, &q).await?;
    check_eq!(c.conn().purge(&q).await?, 4);
    check_eq!(c.count(&q).await?, 0);
    held.reject(true).await?;
    c.wait_count(&q, 1).await?;
    check_eq!(c.drain(&q).await?, vec!["m0".to_owned()]);
    expect_err(c.conn().purge(&c.queue("missing")).await, 404, "purge missing")?;
    Ok(())
}

/// `if_unused` and `if_empty` guard deletion; delete reports ready messages; a missing queue is
/// fine to delete.
pub async fn delete_queue_conditions(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..4 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let held = get_one(&c, &q).await?;
    let consumer = c.conn().consume(&q, ConsumeOptions::default().prefetch(1)).await?;
    let in_use = DeleteQueue {
        if_unused: true,
        if_empty: false,
    };
    let e = expect_err(c.conn().delete_queue(&q, in_use).await, 406, "if_unused")?;
    check_eq!(
        e.message(),
        format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")
    );
    drop(consumer);
    c.eventually("the consumer is gone", || async {
        Ok(c.conn().queue_info(&q).await?.consumer_count == 0)
    })
    .await?;
    c.wait_count(&q, 3).await?;
    let not_empty = DeleteQueue {
        if_unused: false,
        if_empty: true,
    };
    let e = expect_err(c.conn().delete_queue(&q, not_empty).await, 406, "if_empty")?;
    check_eq!(
        e.message(),
        format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")
    );
    check_eq!(c.conn().delete_queue(&q, DeleteQueue::default()).await?, 3);
    held.ack().await?;
    check_eq!(c.conn().delete_queue(&q, DeleteQueue::default()).await?, 0);
    Ok(())
}

/// `basic.get` reports the ready messages left; an empty queue gives nothing.
pub async fn basic_get_reports_message_count(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    for i in 0..3 {
        c.send(&q, &format!("m{i}")).await?;
    }
    let mut counts = Vec::new();
    while let Some(d) = c.get(&q).await? {
        counts.push(d.message_count);
        d.ack().await?;
    }
    check_eq!(counts, vec![Some(2), Some(1), Some(0)]);
    check!(c.get(&q).await?.is_none());
    Ok(())
}

// Round trip

/// Every basic property and every header type come back unchanged.
pub async fn properties_and_headers_round_trip(c: Ctx) -> TestResult {
    let q = c.queue("q");
    c.declare(Topology::new().queue(Queue::durable(&q))).await?;
    let nested = FieldTable::new().with("inner", "v").with("n", 7i32);
    let headers = FieldTable::new()
        .with("t", true)
        .with("b", -5i8)
        .with("s", -300i16)
        .with("I", -70000i32)
        .with("l", -5_000_000_000i64)
        .with("f", 1.5f32)
        .with("d", 2.25f64)
        .with("D", Decimal { scale: 2, value: 12345 })
        .with("S", "text")
        .with(
            "S-binary",
            FieldValue::LongString(Bytes::from_static(&[0xff, 0xfe, 0x00, 0x61])),
        )
        .with("S-empty", "")
        .with("x", FieldValue::Bytes(Bytes::from_static(b"\x00\x01")))
        .with("T", FieldValue::Timestamp(1_700_000_000))
        .with("F", nested.clone())
        .with(
            "A",
            FieldValue::Array(vec![
                FieldValue::Void,
                1i32.into(),
                FieldValue::Table(nested),
                FieldValue::Array(vec!["x".into()]),
            ]),
        )
        .with("V", FieldValue::Void);
    let mut e = Envelope::new(Bytes::from_static(&[0u8, 159, 146, 150, 255]));
    let p = e.properties_mut();
    p.content_type = Some("application/octet-stream".into());
    p.content_encoding = Some("identity".into());
    p.headers = Some(headers);
    p.delivery_mode = Some(DeliveryMode::Persistent);
    p.priority = Some(3);
    p.correlation_id = Some("corr".into());
    p.reply_to = Some("somewhere".into());
    p.expiration = Some("60000".into());
    p.message_id = Some("01890000-0000-7000-8000-000000000000".into());
    p.timestamp = Some(1_700_000_001);
    p.kind = Some("orders.created".into());
    p.app_id = Some("conformance".into());
    p.cluster_id = Some("c1".into());
    c.publish("", &q, e.clone()).await?;
    let d = get_one(&c, &q).await?;
    check_eq!(d.envelope, e);
    d.ack().await?;
    c.publish("", &q, Envelope::new("bare")).await?;
    let d = get_one(&c, &q).await?;
    check_eq!(d.envelope.properties(), &mqtransport_core::Properties::default());
    d.ack().await?;
    Ok(())
}
