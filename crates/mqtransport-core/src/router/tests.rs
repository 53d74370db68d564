//! The router's rules, checked against what RabbitMQ 3.10 does.

use super::*;

const KEYS: [&str; 13] = [
    "", "a", "a.b", "a.b.c", "b.a", "a..b", ".a", "a.", "..", "a.b.b", "b.a.c", "a.x.y.b", "A",
];

/// The topic matching table RabbitMQ 3.10 was observed to follow, row by row (the
/// conformance scenario `topic_patterns_match_words` checks the same on every transport).
const TABLE: [(&str, &str); 19] = [
    ("#", "XXXXXXXXXXXXX"),
    ("*", ".X..........X"),
    ("a.*", "..X....X....."),
    ("a.#", ".XXX.X.X.X.X."),
    ("#.a", ".X..X.X......"),
    ("*.a.*", "..........X.."),
    ("a.#.b", "..X..X...X.X."),
    ("#.#", "XXXXXXXXXXXXX"),
    ("a.*.#", "..XX.X.X.X.X."),
    ("", "X............"),
    ("a..b", ".....X......."),
    (".a", "......X......"),
    ("a.", ".......X....."),
    ("*.*", "..X.X.XX....."),
    ("#.*", ".XXXXXXXXXXXX"),
    ("*.#", ".XXXXXXXXXXXX"),
    ("#.a.#", ".XXXXXXX.XXX."),
    ("a.b", "..X.........."),
    ("A", "............X"),
];

#[test]
fn topic_matching_follows_the_reference_table() -> Result<()> {
    for (pattern, row) in TABLE {
        let mut r = Router::new();
        r.declare_exchange(&Exchange::topic("t"))?;
        r.bind(&Binding::queue("q", "t", pattern))?;
        for (key, expect) in KEYS.iter().zip(row.chars()) {
            let routed = r.route("t", &[key], None)?;
            assert_eq!(!routed.is_empty(), expect == 'X', "pattern {pattern:?} key {key:?}");
        }
    }
    Ok(())
}

#[test]
fn one_copy_per_queue_and_unbind_prunes() -> Result<()> {
    let mut r = Router::new();
    r.declare_exchange(&Exchange::topic("t"))?;
    r.bind(&Binding::queue("q", "t", "a.*"))?;
    r.bind(&Binding::queue("q", "t", "#"))?;
    r.bind(&Binding::queue("q", "t", "#"))?;
    assert_eq!(r.binding_count("t"), 2);
    assert_eq!(r.route("t", &["a.b"], None)?.queues(), ["q"]);
    r.unbind(&Binding::queue("q", "t", "#"))?;
    assert!(r.route("t", &["x"], None)?.is_empty());
    assert_eq!(r.route("t", &["a.b"], None)?.queues(), ["q"]);
    Ok(())
}

#[test]
fn headers_matching() -> Result<()> {
    let cases: Vec<(FieldTable, Vec<FieldTable>, Vec<FieldTable>)> = vec![
        (
            FieldTable::new().with("x-match", "any").with("a", 1i32).with("b", 2i32),
            vec![
                FieldTable::new().with("a", 1i8),
                FieldTable::new().with("b", 2.0f64),
                FieldTable::new().with("a", 1i64).with("x-foo", "bar"),
            ],
            vec![FieldTable::new().with("a", "1"), FieldTable::new()],
        ),
        (
            FieldTable::new().with("a", 1i32).with("x-foo", "bar"),
            vec![FieldTable::new().with("a", 1i32)],
            vec![FieldTable::new().with("x-foo", "bar")],
        ),
        (
            FieldTable::new()
                .with("x-match", "all-with-x")
                .with("a", 1i32)
                .with("x-foo", "bar"),
            vec![FieldTable::new().with("a", 1i32).with("x-foo", "bar")],
            vec![FieldTable::new().with("a", 1i32)],
        ),
        (
            FieldTable::new().with("a", FieldValue::Void),
            vec![
                FieldTable::new().with("a", FieldValue::Void),
                FieldTable::new().with("a", "z"),
            ],
            vec![FieldTable::new().with("b", 1i32)],
        ),
        (
            FieldTable::new().with("t", true),
            vec![FieldTable::new().with("t", true)],
            vec![FieldTable::new().with("t", 1i32)],
        ),
    ];
    for (args, yes, no) in cases {
        let mut r = Router::new();
        r.declare_exchange(&Exchange::headers("h"))?;
        r.bind(&Binding::queue("q", "h", "").arguments(args.clone()))?;
        for h in yes {
            assert!(
                !r.route("h", &[""], Some(&h))?.is_empty(),
                "{args:?} should match {h:?}"
            );
        }
        for h in no {
            assert!(
                r.route("h", &[""], Some(&h))?.is_empty(),
                "{args:?} should not match {h:?}"
            );
        }
    }
    let mut r = Router::new();
    r.declare_exchange(&Exchange::headers("h"))?;
    r.bind(&Binding::queue("all", "h", "").arguments(FieldTable::new().with("x-match", "all")))?;
    r.bind(&Binding::queue("any", "h", "").arguments(FieldTable::new().with("x-match", "any")))?;
    assert_eq!(r.route("h", &[""], None)?.queues(), ["all"]);
    let e = r
        .bind(&Binding::queue("q", "h", "").arguments(FieldTable::new().with("x-match", "bogus")))
        .unwrap_err();
    assert_eq!(
        e.message(),
        "PRECONDITION_FAILED - Invalid x-match field value <<\"bogus\">>; expected all, any, all-with-x, or any-with-x"
    );
    let e = r
        .bind(&Binding::queue("q", "h", "").arguments(FieldTable::new().with("x-match", 1i32)))
        .unwrap_err();
    assert_eq!(
        e.message(),
        "PRECONDITION_FAILED - Invalid x-match field type signedint (value 1); expected longstr"
    );
    Ok(())
}

#[test]
fn exchange_to_exchange_without_loops_and_alternate() -> Result<()> {
    let mut r = Router::new();
    r.declare_exchange(&Exchange::topic("x1"))?;
    r.declare_exchange(&Exchange::direct("x2"))?;
    r.declare_exchange(&Exchange::fanout("x3"))?;
    r.bind(&Binding::exchange("x2", "x1", "a.*"))?;
    r.bind(&Binding::exchange("x3", "x1", "#"))?;
    r.bind(&Binding::queue("q", "x2", "a.b"))?;
    r.bind(&Binding::queue("q", "x3", ""))?;
    assert_eq!(r.route("x1", &["a.b"], None)?.queues(), ["q"]);
    // a <-> b loop
    r.declare_exchange(&Exchange::fanout("a"))?;
    r.declare_exchange(&Exchange::fanout("b"))?;
    r.bind(&Binding::exchange("b", "a", ""))?;
    r.bind(&Binding::exchange("a", "b", ""))?;
    r.bind(&Binding::queue("qa", "a", ""))?;
    assert_eq!(r.route("b", &["k"], None)?.queues(), ["qa"]);
    // alternate exchange
    r.declare_exchange(&Exchange::fanout("ae"))?;
    r.bind(&Binding::queue("unrouted", "ae", ""))?;
    r.declare_exchange(&Exchange::direct("main").alternate_exchange("ae"))?;
    r.bind(&Binding::queue("k", "main", "k"))?;
    assert_eq!(r.route("main", &["k"], None)?.queues(), ["k"]);
    assert_eq!(r.route("main", &["z"], None)?.queues(), ["unrouted"]);
    // An exchange whose binding matched an exchange without queues does not use its
    // alternate; the exchange that matched nothing uses its own.
    r.declare_exchange(&Exchange::fanout("empty"))?;
    r.bind(&Binding::exchange("empty", "main", "to-empty"))?;
    assert!(r.route("main", &["to-empty"], None)?.is_empty());
    r.declare_exchange(&Exchange::fanout("ae2"))?;
    r.bind(&Binding::queue("unrouted2", "ae2", ""))?;
    r.declare_exchange(&Exchange::direct("inner").alternate_exchange("ae2"))?;
    r.bind(&Binding::exchange("inner", "main", "to-inner"))?;
    assert_eq!(r.route("main", &["to-inner"], None)?.queues(), ["unrouted2"]);
    // Dead letters may go to an internal exchange.
    r.declare_exchange(&Exchange::fanout("hidden").internal())?;
    r.bind(&Binding::queue("dlq", "hidden", ""))?;
    assert_eq!(r.route("hidden", &["k"], None).unwrap_err().reply_code(), Some(403));
    assert_eq!(r.route_dead_letter("hidden", &["k"], None)?.queues(), ["dlq"]);
    Ok(())
}

#[test]
fn errors_and_auto_delete() -> Result<()> {
    let mut r = Router::with_builtin_exchanges();
    assert_eq!(
        r.route("nope", &["k"], None).unwrap_err().message(),
        "NOT_FOUND - no exchange 'nope' in vhost '/'"
    );
    r.declare_exchange(&Exchange::direct("i").internal())?;
    assert_eq!(r.route("i", &["k"], None).unwrap_err().reply_code(), Some(403));
    assert_eq!(
        r.delete_exchange("amq.direct", false).unwrap_err().reply_code(),
        Some(403)
    );
    r.declare_exchange(&Exchange::direct("ad").auto_delete())?;
    r.bind(&Binding::queue("q1", "ad", "k"))?;
    r.bind(&Binding::queue("q2", "ad", "k"))?;
    assert!(r.unbind(&Binding::queue("q1", "ad", "k"))?.is_empty());
    assert!(r.exchange("ad").is_ok());
    assert_eq!(r.remove_destination(&Destination::Queue("q2".into())), ["ad"]);
    assert!(r.exchange("ad").is_err());
    r.declare_exchange(&Exchange::direct("used"))?;
    r.bind(&Binding::queue("q", "used", "k"))?;
    assert_eq!(r.delete_exchange("used", true).unwrap_err().reply_code(), Some(406));
    assert!(r.delete_exchange("missing", false)?.is_empty());
    Ok(())
}
