//! Scenarios: routing.

use super::prelude::*;

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

/// An exchange whose binding matched (here to an exchange with no queues) does not use its
/// alternate exchange: the message is unroutable and returned.
pub async fn alternate_exchange_is_skipped_when_a_binding_matched(c: Ctx) -> TestResult {
    let (ae, main, empty, qae) = (c.exchange("ae"), c.exchange("main"), c.exchange("empty"), c.queue("ae"));
    c.declare(
        Topology::new()
            .exchange(Exchange::fanout(&ae))
            .exchange(Exchange::direct(&main).alternate_exchange(&ae))
            .exchange(Exchange::fanout(&empty))
            .queue(Queue::durable(&qae))
            .bind(Binding::queue(&qae, &ae, ""))
            .bind(Binding::exchange(&empty, &main, "k")),
    )
    .await?;
    let got = c.publish(&main, "k", env("nowhere")).await?;
    check!(
        matches!(got, Confirmation::Returned { reply_code: 312, .. }),
        "expected a return, got {got:?}"
    );
    check_eq!(c.publish(&main, "other", env("to-ae")).await?, Confirmation::Confirmed);
    check_eq!(c.drain(&qae).await?, vec!["to-ae".to_owned()]);
    Ok(())
}

/// An exchange reached through an exchange-to-exchange binding that routes nothing uses its
/// own alternate exchange.
pub async fn downstream_exchange_uses_its_own_alternate(c: Ctx) -> TestResult {
    let (main, inner, ae, qae) = (c.exchange("main"), c.exchange("inner"), c.exchange("ae"), c.queue("ae"));
    c.declare(
        Topology::new()
            .exchange(Exchange::fanout(&ae))
            .exchange(Exchange::direct(&main))
            .exchange(Exchange::direct(&inner).alternate_exchange(&ae))
            .queue(Queue::durable(&qae))
            .bind(Binding::queue(&qae, &ae, ""))
            .bind(Binding::exchange(&inner, &main, "k")),
    )
    .await?;
    check_eq!(c.publish(&main, "k", env("via-inner")).await?, Confirmation::Confirmed);
    let d = get_one(&c, &qae).await?;
    check_eq!(
        (d.exchange.as_str(), d.routing_key.as_str(), body(&d)),
        (main.as_str(), "k", "via-inner".to_owned())
    );
    d.ack().await?;
    Ok(())
}

/// A reply text longer than an AMQP short string is cut to 252 bytes and `...`, as RabbitMQ
/// sends it.
pub async fn reply_texts_are_cut_at_255_bytes(c: Ctx) -> TestResult {
    let taken = c.exchange("").len();
    let x = c.exchange(&"n".repeat(250 - taken));
    let e = expect_err(c.conn().publish(Publish::new(&x, "k", env("m"))).await, 404, "publish")?;
    let full = format!("NOT_FOUND - no exchange '{x}' in vhost '/'");
    check_eq!(e.message(), format!("{}...", &full[..252]));
    Ok(())
}
