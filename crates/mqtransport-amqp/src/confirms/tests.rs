//! The ledger's rules, on scripted confirms, and a model run under random schedules.

use std::collections::HashMap;

use super::*;

/// A confirm resolved by the test, in the order the test chooses (as lapin would).
#[derive(Clone, Default)]
struct Script(Arc<Mutex<(Option<Verdict>, Option<Waker>)>>);

impl Script {
    fn resolve(&self, v: Verdict) {
        let waker = {
            let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            g.0 = Some(v);
            g.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Awaited for Script {
    fn poll_verdict(&mut self, cx: &mut Context<'_>) -> Poll<Verdict> {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match g.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

struct Harness {
    book: Book<Script>,
    woken: Arc<Woken>,
    replies: HashMap<u64, oneshot::Receiver<PublishOutcome>>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            book: Book::new(),
            woken: Arc::new(Woken::default()),
            replies: HashMap::new(),
        }
    }

    /// Takes a ticket for a publish of `body` to queue `q`, mandatory or not.
    fn open(&mut self, body: &str, mandatory: bool) -> u64 {
        self.open_with(body, mandatory.then(BasicProperties::default))
    }

    /// Takes a ticket for a publish of `body` to queue `q`, mandatory with `properties`.
    fn open_with(&mut self, body: &str, properties: Option<BasicProperties>) -> u64 {
        let (reply, rx) = oneshot::channel();
        let sent = properties.map(|properties| {
            Arc::new(Outgoing {
                exchange: ShortStr::EMPTY,
                routing_key: ShortStr::from("q"),
                mandatory: true,
                body: Bytes::copy_from_slice(body.as_bytes()),
                properties,
            })
        });
        let seq = self.book.open(sent, reply);
        self.replies.insert(seq, rx);
        seq
    }

    fn track(&mut self, seq: u64, confirm: &Script) {
        self.book.track(seq, confirm.clone(), &self.woken);
        self.read();
    }

    /// A mandatory publish of `body` sent and its confirm tracked (not yet resolved).
    fn sent(&mut self, body: &str) -> (u64, Script) {
        let seq = self.open(body, true);
        let confirm = Script::default();
        self.track(seq, &confirm);
        (seq, confirm)
    }

    fn read(&mut self) {
        self.book.read_woken(&self.woken);
    }

    /// How `seq` settled, or `"unsettled"`.
    fn outcome(&mut self, seq: u64) -> String {
        match self.replies.get_mut(&seq).map(oneshot::Receiver::try_recv) {
            Some(Ok(PublishOutcome::Returned { reply_code, .. })) => format!("returned {reply_code}"),
            Some(Ok(s)) => format!("{s:?}").to_lowercase(),
            Some(Err(oneshot::error::TryRecvError::Empty)) => "unsettled".into(),
            Some(Err(oneshot::error::TryRecvError::Closed)) | None => "dropped".into(),
        }
    }
}

/// What a mandatory publish of `body` to queue `q` sent.
fn mandatory(body: &str) -> Option<Arc<Outgoing>> {
    Some(Arc::new(Outgoing {
        exchange: ShortStr::EMPTY,
        routing_key: ShortStr::from("q"),
        mandatory: true,
        body: Bytes::copy_from_slice(body.as_bytes()),
        properties: BasicProperties::default(),
    }))
}

/// The send of a publish that lapin takes once `taken` gets its confirm.
fn send_taken_on(
    ledger: &Arc<Ledger<Script>>,
    body: &str,
    taken: oneshot::Receiver<Script>,
) -> Sending<Script, oneshot::error::RecvError> {
    Sending::new(ledger.ticket(mandatory(body)), Box::pin(taken), Duration::from_secs(60))
}

/// x's return rides on the confirm of a publish whose caller gave up on it while lapin was
/// still taking it: the rest of that send goes on, and its confirm is read.
#[tokio::test(flavor = "current_thread")]
async fn a_send_given_up_midway_still_hands_its_confirm_to_the_ledger() {
    let ledger = Ledger::<Script>::start();
    let (take_a, taken_a) = oneshot::channel();
    let mut a = Box::pin(send_taken_on(&ledger, "a", taken_a));
    assert!(futures_util::poll!(a.as_mut()).is_pending(), "lapin is still taking a");
    let (take_x, taken_x) = oneshot::channel();
    let x = send_taken_on(&ledger, "x", taken_x);
    let cx = Script::default();
    let _ = take_x.send(cx.clone());
    let x_settled = match x.await {
        Ok(settled) => settled,
        Err(e) => panic!("x was not sent: {e}"),
    };
    // x's confirm carries nothing: x's return waits in lapin for the next confirm.
    cx.resolve(Verdict::Ack(None));
    tokio::task::yield_now().await;
    drop(a);
    // lapin takes a after all, and a's confirm takes x's return.
    let ca = Script::default();
    ca.resolve(Verdict::Ack(ret("x")));
    let _ = take_a.send(ca);
    match tokio::time::timeout(std::time::Duration::from_secs(10), x_settled).await {
        Ok(Ok(PublishOutcome::Returned { reply_code, .. })) => assert_eq!(reply_code, 312),
        other => panic!("x settled as {other:?}, not returned"),
    }
    assert!(ledger.book().entries.is_empty(), "a and x both settled");
}

/// lapin never takes a publish given up on (its connection died under it): the task that
/// sees it through gives up after the caller's time, with the ticket.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_send_seen_through_gives_up_after_its_time() {
    let ledger = Ledger::<Script>::start();
    let (_never, taken) = oneshot::channel();
    let send = Sending::new(ledger.ticket(mandatory("a")), Box::pin(taken), Duration::from_secs(5));
    let mut send = Box::pin(send);
    assert!(futures_util::poll!(send.as_mut()).is_pending());
    drop(send);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(ledger.book().entries.len(), 1, "given up before its time");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(ledger.book().entries.is_empty(), "the ticket is still held");
}

#[tokio::test(flavor = "current_thread")]
async fn a_send_dropped_before_its_first_poll_gives_up_its_ticket() {
    let ledger = Ledger::<Script>::start();
    let polled = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&polled);
    let send = Sending::<Script, ()>::new(
        ledger.ticket(mandatory("a")),
        Box::pin(async move {
            seen.store(true, Ordering::SeqCst);
            Ok(Script::default())
        }),
        Duration::from_secs(60),
    );
    drop(send);
    tokio::task::yield_now().await;
    assert!(!polled.load(Ordering::SeqCst), "a send never polled went out");
    assert!(ledger.book().entries.is_empty(), "the ticket is still held");
}

#[test]
fn a_send_given_up_where_no_runtime_runs_gives_up_its_ticket() {
    let ledger = Ledger::<Script>::new();
    let (_take, taken) = oneshot::channel();
    let mut send = Box::pin(send_taken_on(&ledger, "a", taken));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(send.as_mut().poll(&mut cx).is_pending());
    drop(send);
    assert!(ledger.book().entries.is_empty(), "the ticket is still held");
}

fn ret(body: &str) -> Option<Returned> {
    Some(Returned {
        exchange: String::new(),
        routing_key: "q".into(),
        body: body.as_bytes().to_vec(),
        properties: BasicProperties::default(),
        reply_code: 312,
        reply_text: "NO_ROUTE".into(),
    })
}

#[test]
fn a_return_on_a_confirm_tracked_late_still_reaches_its_owner() {
    let mut h = Harness::new();
    let (x, y) = (h.open("x", true), h.open("y", true));
    let (cx, cy) = (Script::default(), Script::default());
    h.track(x, &cx);
    // lapin completes y first, handing it x's return, then x with nothing waiting; y's
    // caller has not handed its confirm over yet.
    cy.resolve(Verdict::Ack(ret("x")));
    cx.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(
        h.outcome(x),
        "unsettled",
        "x's return may ride on a confirm not read yet"
    );
    h.track(y, &cy);
    assert_eq!(h.outcome(x), "returned 312");
    assert_eq!(h.outcome(y), "confirmed");
}

#[test]
fn a_return_behind_another_waits_for_the_next_confirms() {
    let mut h = Harness::new();
    let ((a, ca), (x, cx)) = (h.sent("a"), h.sent("x"));
    // Returns of a then x are waiting; x's confirm comes first and takes a's return.
    cx.resolve(Verdict::Ack(ret("a")));
    h.read();
    assert_eq!(h.outcome(x), "unsettled", "x's own return is still waiting in lapin");
    ca.resolve(Verdict::Ack(ret("x")));
    h.read();
    assert_eq!(h.outcome(a), "returned 312");
    assert_eq!(h.outcome(x), "returned 312");
}

#[test]
fn a_routed_publish_behind_a_foreign_return_settles_once_earlier_ones_complete() {
    let mut h = Harness::new();
    let ((a, ca), (x, cx)) = (h.sent("a"), h.sent("x"));
    cx.resolve(Verdict::Ack(ret("a")));
    h.read();
    assert_eq!(h.outcome(x), "unsettled");
    ca.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(a), "returned 312");
    assert_eq!(h.outcome(x), "confirmed");
}

#[test]
fn a_plain_confirm_waits_only_for_earlier_tickets_to_be_read() {
    let mut h = Harness::new();
    let (x, y) = (h.open("x", true), h.open("y", true));
    let later = Script::default();
    let cx = Script::default();
    h.track(x, &cx);
    cx.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(
        h.outcome(x),
        "unsettled",
        "y was registered before x's confirm was read"
    );
    // y is read (still unconfirmed): its confirm cannot carry anything for x.
    h.track(y, &later);
    assert_eq!(h.outcome(x), "confirmed");
    assert_eq!(h.outcome(y), "unsettled");
    later.resolve(Verdict::Nack(None));
    h.read();
    assert_eq!(h.outcome(y), "nacked");
}

#[test]
fn a_given_up_ticket_does_not_hold_others_back() {
    let mut h = Harness::new();
    let (x, y) = (h.open("x", true), h.open("y", true));
    let cx = Script::default();
    h.track(x, &cx);
    cx.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(x), "unsettled");
    h.book.abandon(y);
    assert_eq!(h.outcome(x), "confirmed");
}

#[test]
fn a_publish_that_is_not_mandatory_settles_at_once_and_passes_on_what_it_carried() {
    let mut h = Harness::new();
    let (n, m) = (h.open("n", false), h.open("m", true));
    let (cn, cm) = (Script::default(), Script::default());
    h.track(n, &cn);
    h.track(m, &cm);
    cn.resolve(Verdict::Ack(ret("m")));
    h.read();
    assert_eq!(h.outcome(n), "confirmed");
    assert_eq!(h.outcome(m), "unsettled");
    cm.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(m), "returned 312");
}

#[test]
fn identical_messages_share_returns_oldest_first_and_failures_settle_at_once() {
    let mut h = Harness::new();
    let ((a, ca), (b, cb), (c, cc)) = (h.sent("same"), h.sent("same"), h.sent("z"));
    cc.resolve(Verdict::Failed(lapin::ErrorKind::ChannelsLimitReached.into()));
    h.read();
    assert!(h.outcome(c).starts_with("failed"), "{}", h.outcome(c));
    cb.resolve(Verdict::Ack(ret("same")));
    h.read();
    ca.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(a), "returned 312");
    assert_eq!(h.outcome(b), "confirmed");
}

#[test]
fn a_return_goes_to_the_publish_it_matches() {
    let mut h = Harness::new();
    let ((a, ca), (b, cb), (c, cc)) = (h.sent("a"), h.sent("b"), h.sent("c"));
    ca.resolve(Verdict::Ack(ret("b")));
    cb.resolve(Verdict::Ack(None));
    cc.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(a), "confirmed");
    assert_eq!(h.outcome(b), "returned 312");
    assert_eq!(h.outcome(c), "confirmed");
}

#[test]
fn among_equal_bodies_the_properties_pick_the_owner() {
    let mut h = Harness::new();
    let urgent = BasicProperties::default().with_priority(9);
    let (a, b) = (
        h.open_with("same", Some(BasicProperties::default())),
        h.open_with("same", Some(urgent.clone())),
    );
    let (ca, cb) = (Script::default(), Script::default());
    h.track(a, &ca);
    h.track(b, &cb);
    let mut r = ret("same");
    if let Some(r) = r.as_mut() {
        r.properties = urgent;
    }
    ca.resolve(Verdict::Ack(r));
    cb.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(a), "confirmed");
    assert_eq!(h.outcome(b), "returned 312");
}

#[test]
fn a_return_whose_properties_match_none_goes_to_the_oldest_candidate() {
    let mut h = Harness::new();
    let (a, b) = (
        h.open_with("same", Some(BasicProperties::default().with_priority(1))),
        h.open_with("same", Some(BasicProperties::default().with_priority(2))),
    );
    let (ca, cb) = (Script::default(), Script::default());
    h.track(a, &ca);
    h.track(b, &cb);
    // The broker may hand back properties re-encoded: the body and route still decide.
    let mut r = ret("same");
    if let Some(r) = r.as_mut() {
        r.properties = BasicProperties::default().with_priority(3);
    }
    cb.resolve(Verdict::Ack(r));
    ca.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(a), "returned 312");
    assert_eq!(h.outcome(b), "confirmed");
}

/// A small deterministic random source for the model below.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n.max(1) as u64).unwrap_or(0)
    }
}

enum Frame {
    Return(usize),
    Ack { tag: usize, multiple: bool },
}

/// Runs one random schedule of publishes against a model of RabbitMQ (returns before their
/// message's ack, acks single or multiple, in any order the ready set allows) and of lapin
/// (a FIFO of waiting returns, each handed to the next confirm completed, multiple-acks
/// completed in any order); callers track their confirms late, the ledger reads at random.
/// Every publish must settle as returned exactly when it was unroutable.
fn model(seed: u64, n: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut h = Harness::new();
    let routable: Vec<bool> = (0..n).map(|_| rng.below(2) != 0).collect();
    let scripts: Vec<Script> = (0..n).map(|_| Script::default()).collect();
    let body = |i: usize| format!("m{i}");
    let mut opened = 0;
    // Tickets opened and not yet registered with lapin; lapin's tags, in order, as tickets.
    let mut unsent: Vec<usize> = Vec::new();
    let mut tag_of_ticket: Vec<Option<usize>> = vec![None; n];
    let mut ticket_of_tag: Vec<usize> = Vec::new();
    let mut untracked: Vec<usize> = Vec::new();
    // The broker: tags routed so far; tags whose ack may go out; tags acked.
    let mut routed = 0;
    let mut ready: BTreeSet<usize> = BTreeSet::new();
    let mut acked: BTreeSet<usize> = BTreeSet::new();
    let mut wire: VecDeque<Frame> = VecDeque::new();
    // lapin: unconfirmed tags and waiting returns.
    let mut pending: BTreeSet<usize> = BTreeSet::new();
    let mut waiting: VecDeque<usize> = VecDeque::new();
    let complete = |tag: usize, waiting: &mut VecDeque<usize>, ticket_of_tag: &[usize]| {
        let ret = waiting.pop_front().and_then(|t| ret(&body(t)));
        scripts[ticket_of_tag[tag]].resolve(Verdict::Ack(ret));
    };
    let mut steps = 0;
    loop {
        steps += 1;
        let done = opened == n
            && unsent.is_empty()
            && untracked.is_empty()
            && routed == ticket_of_tag.len()
            && acked.len() == n
            && wire.is_empty();
        if done || steps > 100_000 {
            break;
        }
        // Callers hand over their confirms and the ledger task reads rarely, so that confirms
        // often complete before anyone reads them.
        match rng.below(12) {
            0 if opened < n => {
                let seq = h.open(&body(opened), true);
                assert_eq!(usize::try_from(seq).ok(), Some(opened));
                unsent.push(opened);
                opened += 1;
            }
            1 if !unsent.is_empty() => {
                // Callers reach lapin in any order once they hold their tickets.
                let t = unsent.swap_remove(rng.below(unsent.len()));
                tag_of_ticket[t] = Some(ticket_of_tag.len());
                pending.insert(ticket_of_tag.len());
                ticket_of_tag.push(t);
                untracked.push(t);
            }
            2 if !untracked.is_empty() && rng.below(3) == 0 => {
                let t = untracked.swap_remove(rng.below(untracked.len()));
                h.track(t as u64, &scripts[t]);
            }
            3 if routed < ticket_of_tag.len() => {
                let tag = routed;
                routed += 1;
                if !routable[ticket_of_tag[tag]] {
                    wire.push_back(Frame::Return(tag));
                    ready.insert(tag);
                } else if rng.below(2) == 0 {
                    ready.insert(tag);
                }
            }
            4 => {
                // A stored message becomes confirmable (its fsync finished).
                let late: Vec<usize> = (0..routed)
                    .filter(|t| !ready.contains(t) && !acked.contains(t))
                    .collect();
                if !late.is_empty() {
                    ready.insert(late[rng.below(late.len())]);
                }
            }
            5 if !ready.is_empty() => {
                let candidates: Vec<usize> = ready.iter().copied().collect();
                let tag = candidates[rng.below(candidates.len())];
                // A multiple-ack covers every unacked tag up to it; all must be ready.
                let multiple = rng.below(2) == 0 && (0..=tag).all(|t| acked.contains(&t) || ready.contains(&t));
                let covered: Vec<usize> = if multiple {
                    (0..=tag).filter(|t| ready.contains(t)).collect()
                } else {
                    vec![tag]
                };
                for t in covered {
                    ready.remove(&t);
                    acked.insert(t);
                }
                wire.push_back(Frame::Ack { tag, multiple });
            }
            6 if !wire.is_empty() => match wire.pop_front() {
                Some(Frame::Return(tag)) => waiting.push_back(ticket_of_tag[tag]),
                Some(Frame::Ack { tag, multiple: false }) => {
                    pending.remove(&tag);
                    complete(tag, &mut waiting, &ticket_of_tag);
                }
                Some(Frame::Ack { tag, multiple: true }) => {
                    let mut tags: Vec<usize> = pending.range(..=tag).copied().collect();
                    // lapin completes them in its hash map's order.
                    while !tags.is_empty() {
                        let t = tags.swap_remove(rng.below(tags.len()));
                        pending.remove(&t);
                        complete(t, &mut waiting, &ticket_of_tag);
                    }
                }
                None => {}
            },
            7 => h.read(),
            _ => {}
        }
    }
    h.read();
    for (i, routable) in routable.iter().enumerate() {
        let expected = if *routable { "confirmed" } else { "returned 312" };
        assert_eq!(h.outcome(i as u64), expected, "seed {seed}, publish {i} of {n}");
    }
}

#[test]
fn every_publish_learns_its_own_fate_under_random_schedules() {
    for seed in 0..2_000 {
        model(seed, 2 + (seed as usize % 14));
    }
}

#[test]
fn a_return_behind_another_may_ride_on_a_later_publish() {
    let mut h = Harness::new();
    let ((a, ca), (x, cx)) = (h.sent("a"), h.sent("x"));
    // Returns of a then x wait in lapin; x's confirm comes first and takes a's return.
    cx.resolve(Verdict::Ack(ret("a")));
    h.read();
    assert_eq!(h.outcome(x), "unsettled");
    // A publish sent after that is confirmed before a and takes x's return; its caller has
    // not handed its confirm over yet when a's confirm (carrying nothing) is read.
    let z = h.open("z", true);
    let cz = Script::default();
    cz.resolve(Verdict::Ack(ret("x")));
    ca.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(a), "returned 312");
    assert_eq!(
        h.outcome(x),
        "unsettled",
        "x's return rides on z's confirm, not read yet"
    );
    h.track(z, &cz);
    assert_eq!(h.outcome(x), "returned 312");
    assert_eq!(h.outcome(z), "confirmed");
}

#[test]
fn a_later_confirm_with_nothing_waiting_settles_a_publish_behind_a_foreign_return() {
    let mut h = Harness::new();
    let ((a, ca), (x, cx), (w, _cw)) = (h.sent("a"), h.sent("x"), h.sent("w"));
    // x's confirm takes a's return: x's own may still be waiting in lapin.
    cx.resolve(Verdict::Ack(ret("a")));
    h.read();
    assert_eq!(h.outcome(x), "unsettled");
    // A publish sent after that is confirmed with nothing waiting, and every confirm
    // before it has been read: had x been returned, its return would have been found.
    let (z, cz) = h.sent("z");
    cz.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(x), "confirmed", "while a and w are still unconfirmed");
    assert_eq!(
        (h.outcome(a), h.outcome(w), h.outcome(z)),
        ("unsettled".into(), "unsettled".into(), "confirmed".into())
    );
    ca.resolve(Verdict::Ack(None));
    h.read();
    assert_eq!(h.outcome(a), "returned 312");
}
