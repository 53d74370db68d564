//! Settling the publishes of one confirm-mode channel: which publish a `basic.return` belongs to.
//!
//! A `basic.return` carries no delivery tag. RabbitMQ sends a message's return before its
//! confirm, but it may confirm several publishes with one multiple-ack, or a later publish
//! before an earlier one, and lapin hands each waiting return to the next confirm it completes.
//! So the confirm one caller receives may carry another message's return, and the caller's own
//! return may ride on a confirm completed before or after its own.
//!
//! A [`Confirming`] channel's ledger therefore takes every confirm of the channel and settles
//! each publish itself (the callers read what is waiting when they hand over a confirm; a task
//! reads what lapin completes meanwhile):
//! - a return found on any confirm goes to its owner, matched by content: the oldest unsettled
//!   mandatory publish with the same exchange, routing key and body (and, among those, the same
//!   properties) not yet known to be returned;
//! - the ledger reads confirms in the order lapin completed them (each confirm's waker queues
//!   it), so when a mandatory publish's confirm carried no return, lapin had no return waiting
//!   at that point: its own return, if any, rode on a confirm completed earlier, which the ledger
//!   has read once it has read every confirm registered before that point. Every publish holds a
//!   ticket taken before it was sent, so those are the tickets below the count taken when the
//!   confirm was read;
//! - when the confirm carried someone else's return, the publish's own may still be waiting,
//!   to ride on any later confirm, even one of a publish sent afterwards. It has been found once
//!   a confirm of a publish sent after this confirm was read carried no return (lapin then had
//!   none waiting) and, by the rule above, every confirm completed before that one has been
//!   read; or once every publish taken a ticket for has completed and been read.
//!
//! Publishes that are not mandatory cannot be returned and settle as soon as their confirm (and
//! any return riding on it) has been read.
//!
//! A publish whose caller gives up while lapin is still taking it (the caller was cancelled,
//! or the send timed out) may still reach the broker, and its confirm may carry another
//! publish's return. Its send is therefore seen through on a task of its own ([`Sending`]), and
//! its confirm read like any other. Only where no tokio runtime runs to finish it is the send
//! dropped with its ticket; a return riding on its confirm, if it went out, is then lost, and
//! its owner reported confirmed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use lapin::message::BasicReturnMessage;
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use mqtransport_core::ShortStr;
use tokio::sync::oneshot;

/// How one publish ended, as far as the broker told.
#[derive(Debug)]
pub(crate) enum PublishOutcome {
    Confirmed,
    Nacked,
    Returned {
        reply_code: u16,
        reply_text: String,
    },
    /// The channel was not in confirm mode.
    NotRequested,
    /// The channel or connection failed before the confirm arrived.
    Failed(lapin::Error),
}

/// One publish as it goes out: what lapin sends, and what the ledger recognises a mandatory
/// publish's return by. Shared by every attempt to send it and by its ledger entry, so that
/// nothing of it is copied per attempt but the properties lapin takes by value.
pub(crate) struct Outgoing {
    pub(crate) exchange: ShortStr,
    pub(crate) routing_key: ShortStr,
    pub(crate) mandatory: bool,
    pub(crate) body: Bytes,
    pub(crate) properties: BasicProperties,
}

impl Outgoing {
    fn same_route_and_body(&self, r: &Returned) -> bool {
        r.exchange == self.exchange.as_str() && r.routing_key == self.routing_key.as_str() && r.body == self.body
    }
}

/// A `basic.return` as read off a confirm.
pub(crate) struct Returned {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
    reply_code: u16,
    reply_text: String,
}

impl From<BasicReturnMessage> for Returned {
    fn from(r: BasicReturnMessage) -> Self {
        Returned {
            exchange: r.delivery.exchange.as_str().to_owned(),
            routing_key: r.delivery.routing_key.as_str().to_owned(),
            body: r.delivery.data,
            properties: r.delivery.properties,
            reply_code: r.reply_code,
            reply_text: r.reply_text.as_str().to_owned(),
        }
    }
}

/// What one confirm said.
pub(crate) enum Verdict {
    Ack(Option<Returned>),
    Nack(Option<Returned>),
    NotRequested,
    Failed(lapin::Error),
}

/// A confirm the ledger waits for (lapin's, or a scripted one in tests).
pub(crate) trait Awaited: Unpin {
    fn poll_verdict(&mut self, cx: &mut Context<'_>) -> Poll<Verdict>;
}

impl Awaited for PublisherConfirm {
    fn poll_verdict(&mut self, cx: &mut Context<'_>) -> Poll<Verdict> {
        Pin::new(self).poll(cx).map(|r| match r {
            Ok(Confirmation::Ack(ret)) => Verdict::Ack(ret.map(Returned::from)),
            Ok(Confirmation::Nack(ret)) => Verdict::Nack(ret.map(Returned::from)),
            Ok(Confirmation::NotRequested) => Verdict::NotRequested,
            Err(e) => Verdict::Failed(e),
        })
    }
}

/// A channel in confirm mode with the ledger that settles its publishes.
pub(crate) struct Confirming {
    pub(crate) channel: Channel,
    /// The generation of the publishing link's connection the channel is on; `None` for a
    /// channel of the other link (the reply consumer's).
    pub(crate) generation: Option<u64>,
    ledger: Arc<Ledger<PublisherConfirm>>,
}

/// The ledger, shared by the publishing callers (who open and track their publishes, and read
/// what is waiting while they hold it) and the task that reads confirms lapin completes while
/// no caller is around.
struct Ledger<C> {
    book: Mutex<Book<C>>,
    woken: Arc<Woken>,
    /// The channel's `Confirming` is gone: the task ends once every publish has settled.
    closed: AtomicBool,
}

impl<C> Ledger<C> {
    fn book(&self) -> MutexGuard<'_, Book<C>> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Awaited + Send + 'static> Ledger<C> {
    /// A ledger with no task reading it yet.
    fn new() -> Arc<Self> {
        Arc::new(Ledger {
            book: Mutex::new(Book::new()),
            woken: Arc::new(Woken::default()),
            closed: AtomicBool::new(false),
        })
    }

    /// A ledger with its task started. The task ends once `closed` is set and every publish it
    /// holds has settled.
    fn start() -> Arc<Self> {
        let ledger = Self::new();
        tokio::spawn(run(Arc::clone(&ledger)));
        ledger
    }

    /// Takes a place in the channel's order of publishes: take it before the publish is handed
    /// to lapin, so that every publish lapin has registered holds an older ticket than any
    /// confirm read after it, and the ledger knows the publish before its return can arrive.
    /// `sent` is `Some` for a mandatory publish.
    fn ticket(self: &Arc<Self>, sent: Option<Arc<Outgoing>>) -> Ticket<C> {
        let (reply, settled) = oneshot::channel();
        let seq = self.book().open(sent, reply);
        Ticket {
            ledger: Arc::clone(self),
            seq,
            settled: Some(settled),
        }
    }
}

impl Confirming {
    /// Wraps `channel`, already in confirm mode, and starts its ledger task. The task ends once
    /// this value is dropped and every publish it holds has settled.
    pub(crate) fn new(channel: Channel, generation: Option<u64>) -> Arc<Confirming> {
        Arc::new(Confirming {
            channel,
            generation,
            ledger: Ledger::start(),
        })
    }

    /// Publishes `outgoing` with its ticket taken first (see [`Ledger::ticket`]; a mandatory
    /// publish is known to the ledger by what it sent): resolves once lapin has taken the
    /// publish, to the receiver of how it settled. Once polled, the send is seen through for up
    /// to `see_through` even if the caller gives up on it (see [`Sending`]).
    pub(crate) fn send(
        self: &Arc<Self>,
        see_through: Duration,
        outgoing: &Arc<Outgoing>,
    ) -> Sending<PublisherConfirm, lapin::Error> {
        let ticket = self.ledger.ticket(outgoing.mandatory.then(|| Arc::clone(outgoing)));
        let this = Arc::clone(self);
        let outgoing = Arc::clone(outgoing);
        let send = async move {
            let options = lapin::options::BasicPublishOptions {
                mandatory: outgoing.mandatory,
                immediate: false,
            };
            this.channel
                .basic_publish(
                    outgoing.exchange.as_str().into(),
                    outgoing.routing_key.as_str().into(),
                    options,
                    &outgoing.body,
                    outgoing.properties.clone(),
                )
                .await
        };
        Sending::new(ticket, Box::pin(send), see_through)
    }
}

impl Drop for Confirming {
    fn drop(&mut self) {
        self.ledger.closed.store(true, Ordering::Release);
        self.ledger.woken.task.wake();
    }
}

/// A publish's place in its channel's ledger; dropped untracked, the place is given up.
struct Ticket<C: Awaited> {
    ledger: Arc<Ledger<C>>,
    seq: u64,
    /// Taken once the confirm is tracked.
    settled: Option<oneshot::Receiver<PublishOutcome>>,
}

impl<C: Awaited> Ticket<C> {
    /// Hands the publish's confirm to the ledger; the receiver gets how the publish settled.
    fn track(mut self, confirm: C) -> oneshot::Receiver<PublishOutcome> {
        let l = &self.ledger;
        let mut book = l.book();
        book.track(self.seq, confirm, &l.woken);
        // Read now, in turn behind every confirm woken before it.
        book.read_woken(&l.woken);
        drop(book);
        self.settled.take().unwrap_or_else(|| oneshot::channel().1)
    }
}

impl<C: Awaited> Drop for Ticket<C> {
    fn drop(&mut self) {
        if self.settled.is_some() {
            self.ledger.book().abandon(self.seq);
        }
    }
}

/// lapin's send of one publish: resolves to its confirm once lapin has taken the publish.
type SendFuture<C, E> = Pin<Box<dyn Future<Output = Result<C, E>> + Send>>;

/// The send of one publish, holding its ticket: resolves to the receiver of how the publish
/// settled.
///
/// A send the caller gives up on (it was cancelled, or timed out) while lapin was still taking
/// the publish may yet reach the broker, and its confirm may carry another publish's return
/// (lapin hands each waiting return to the next confirm it completes). Given up on before
/// lapin had the publish, the rest of the send therefore goes on in a task of its own, whose
/// confirm still reaches the ledger, with whatever return rides on it; nobody waits for the
/// publish's own outcome. That task gives up, with the ticket, if lapin has not taken the
/// publish within the time the caller had for it. Dropped before its first poll, nothing was
/// sent and the ticket is given up; dropped where no tokio runtime runs, so is the send.
pub(crate) struct Sending<C: Awaited + Send + 'static, E: Send + 'static> {
    /// `None` once resolved.
    send: Option<(SendFuture<C, E>, Ticket<C>)>,
    polled: bool,
    /// How long a send given up on is seen through: lapin may never finish one on a
    /// connection that died under it, and the task must not wait for it forever.
    see_through: Duration,
}

impl<C: Awaited + Send + 'static, E: Send + 'static> Sending<C, E> {
    fn new(ticket: Ticket<C>, send: SendFuture<C, E>, see_through: Duration) -> Self {
        Sending {
            send: Some((send, ticket)),
            polled: false,
            see_through,
        }
    }
}

impl<C: Awaited + Send + 'static, E: Send + 'static> Future for Sending<C, E> {
    type Output = Result<oneshot::Receiver<PublishOutcome>, E>;

    /// Polled again once it has resolved, it stays pending.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some((send, _)) = this.send.as_mut() else {
            return Poll::Pending;
        };
        this.polled = true;
        let sent = std::task::ready!(send.as_mut().poll(cx));
        let Some((_, ticket)) = this.send.take() else {
            return Poll::Pending;
        };
        // A send that failed is given up with its ticket.
        Poll::Ready(sent.map(|confirm| ticket.track(confirm)))
    }
}

impl<C: Awaited + Send + 'static, E: Send + 'static> Drop for Sending<C, E> {
    fn drop(&mut self) {
        let Some((send, ticket)) = self.send.take() else {
            return;
        };
        if !self.polled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The rest of the send hands its confirm to the ledger. Given up after `see_through`,
        // the ticket goes with the send.
        runtime.spawn(tokio::time::timeout(self.see_through, async move {
            if let Ok(confirm) = send.await {
                drop(ticket.track(confirm));
            }
        }));
    }
}

/// Confirms to read, in the order they were woken (lapin's order of completing them).
#[derive(Default)]
struct Woken {
    queue: Mutex<VecDeque<u64>>,
    task: AtomicWaker,
}

impl Woken {
    /// Queues `seq`, woken by lapin, and wakes the ledger task to read it.
    fn push(&self, seq: u64) {
        self.queue_only(seq);
        self.task.wake();
    }

    /// Queues `seq` for whoever reads the queue next.
    fn queue_only(&self, seq: u64) {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push_back(seq);
    }

    fn pop(&self) -> Option<u64> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front()
    }
}

/// The waker of one confirm: queues its ticket.
struct Nudge {
    seq: u64,
    woken: Arc<Woken>,
}

impl Wake for Nudge {
    fn wake(self: Arc<Self>) {
        self.woken.push(self.seq);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.push(self.seq);
    }
}

struct Entry<C> {
    sent: Option<Arc<Outgoing>>,
    reply: oneshot::Sender<PublishOutcome>,
    confirm: Option<(C, Waker)>,
    /// The confirm's verdict, once read.
    outcome: Option<PublishOutcome>,
    returned: Option<(u16, String)>,
}

/// Tickets below `low` have all passed some point; those above it that have are in `above`.
#[derive(Default)]
struct Mark {
    low: u64,
    above: BTreeSet<u64>,
}

impl Mark {
    fn pass(&mut self, seq: u64) {
        if seq == self.low {
            self.low += 1;
            while self.above.remove(&self.low) {
                self.low += 1;
            }
        } else if seq > self.low {
            self.above.insert(seq);
        }
    }
}

struct Book<C> {
    entries: BTreeMap<u64, Entry<C>>,
    /// Confirm read at least once (or ticket given up).
    read: Mark,
    /// Confirm completed (or ticket given up).
    completed: Mark,
    /// Mandatory publishes whose confirm carried no return, waiting until every ticket below
    /// the first number has been read; barriers ascend.
    quiet: VecDeque<(u64, u64)>,
    /// Mandatory publishes whose confirm carried another's return, waiting for a later confirm
    /// that shows lapin had no return left waiting (see `drained`), or for the channel to have
    /// nothing in flight; barriers ascend.
    noisy: VecDeque<(u64, u64)>,
    /// Confirms that carried no return, waiting until every ticket below the first number has
    /// been read; barriers ascend.
    clear: VecDeque<(u64, u64)>,
    /// The latest ticket whose confirm carried no return and that waited out its barrier: lapin
    /// had no return waiting when it completed, and every confirm completed before it has been
    /// read, so every return that arrived before it has been found.
    drained: Option<u64>,
    /// Tickets taken so far.
    issued: u64,
}

impl<C: Awaited> Book<C> {
    fn new() -> Self {
        Book {
            entries: BTreeMap::new(),
            read: Mark::default(),
            completed: Mark::default(),
            quiet: VecDeque::new(),
            noisy: VecDeque::new(),
            clear: VecDeque::new(),
            drained: None,
            issued: 0,
        }
    }

    /// Takes the next ticket for a publish about to go out: its return may be read before its
    /// confirm is tracked.
    fn open(&mut self, sent: Option<Arc<Outgoing>>, reply: oneshot::Sender<PublishOutcome>) -> u64 {
        let seq = self.issued;
        self.issued += 1;
        self.entries.insert(
            seq,
            Entry {
                sent,
                reply,
                confirm: None,
                outcome: None,
                returned: None,
            },
        );
        seq
    }

    /// Takes the confirm of the ticket `seq`, to be read in turn behind every confirm woken
    /// before it (by the caller that tracks it, or in tests by the next read).
    fn track(&mut self, seq: u64, confirm: C, woken: &Arc<Woken>) {
        if let Some(e) = self.entries.get_mut(&seq) {
            let waker = Waker::from(Arc::new(Nudge {
                seq,
                woken: Arc::clone(woken),
            }));
            e.confirm = Some((confirm, waker));
            woken.queue_only(seq);
        }
    }

    /// Gives up the ticket `seq`: its publish did not go out.
    fn abandon(&mut self, seq: u64) {
        self.entries.remove(&seq);
        self.read.pass(seq);
        self.completed.pass(seq);
        self.release();
    }

    /// Polls the confirm of `seq` once.
    fn poll_confirm(&mut self, seq: u64) {
        let Some(entry) = self.entries.get_mut(&seq) else {
            return;
        };
        let Some((confirm, waker)) = entry.confirm.as_mut() else {
            return;
        };
        let polled = confirm.poll_verdict(&mut Context::from_waker(waker));
        self.read.pass(seq);
        if let Poll::Ready(result) = polled {
            entry.confirm = None;
            self.completed.pass(seq);
            self.confirmed(seq, result);
        }
        self.release();
    }

    fn confirmed(&mut self, seq: u64, verdict: Verdict) {
        // Every publish lapin had registered when this confirm was read holds a ticket below
        // the count taken now.
        let barrier = self.issued;
        let (outcome, ret) = match verdict {
            Verdict::Ack(ret) => (PublishOutcome::Confirmed, ret),
            Verdict::Nack(ret) => (PublishOutcome::Nacked, ret),
            Verdict::NotRequested => (PublishOutcome::NotRequested, None),
            Verdict::Failed(e) => (PublishOutcome::Failed(e), None),
        };
        let definite = !matches!(outcome, PublishOutcome::Confirmed | PublishOutcome::Nacked);
        let carried = ret.is_some();
        if let Some(ret) = ret {
            self.found_return(ret);
        } else if !definite {
            self.clear.push_back((barrier, seq));
        }
        let Some(entry) = self.entries.get_mut(&seq) else {
            return;
        };
        entry.outcome = Some(outcome);
        if definite || entry.sent.is_none() || entry.returned.is_some() {
            self.settle(seq);
        } else if carried {
            self.noisy.push_back((barrier, seq));
        } else {
            self.quiet.push_back((barrier, seq));
        }
    }

    /// Gives a return to the oldest unsettled mandatory publish it can be the return of.
    fn found_return(&mut self, ret: Returned) {
        let candidates = || {
            self.entries
                .iter()
                .filter(|(_, e)| e.returned.is_none())
                .filter_map(|(seq, e)| e.sent.as_ref().map(|s| (*seq, s)))
                .filter(|(_, s)| s.same_route_and_body(&ret))
        };
        let owner = candidates()
            .find(|(_, s)| s.properties == ret.properties)
            .or_else(|| candidates().next())
            .map(|(seq, _)| seq);
        // A return no unsettled publish can own belongs to a publish whose caller gave up
        // before it went out; nobody is waiting for it.
        let Some(seq) = owner else { return };
        let Some(entry) = self.entries.get_mut(&seq) else {
            return;
        };
        entry.returned = Some((ret.reply_code, ret.reply_text));
        if entry.outcome.is_some() {
            self.settle(seq);
        }
    }

    /// Settles the waiting publishes whose barrier has been passed.
    fn release(&mut self) {
        while let Some(&(barrier, seq)) = self.quiet.front() {
            if barrier > self.read.low {
                break;
            }
            self.quiet.pop_front();
            self.settle(seq);
        }
        while let Some(&(barrier, seq)) = self.clear.front() {
            if barrier > self.read.low {
                break;
            }
            self.clear.pop_front();
            self.drained = self.drained.max(Some(seq));
        }
        // Nothing in flight: every confirm has been read, and with it every return.
        let idle = self.completed.low >= self.issued;
        while let Some(&(barrier, seq)) = self.noisy.front() {
            // A ticket taken after this confirm was read completed after it.
            if !idle && self.drained.is_none_or(|d| d < barrier) {
                break;
            }
            self.noisy.pop_front();
            self.settle(seq);
        }
    }

    fn settle(&mut self, seq: u64) {
        let Some(entry) = self.entries.remove(&seq) else { return };
        let settled = match (entry.returned, entry.outcome) {
            (Some((reply_code, reply_text)), Some(PublishOutcome::Confirmed | PublishOutcome::Nacked)) => {
                PublishOutcome::Returned { reply_code, reply_text }
            }
            (_, Some(outcome)) => outcome,
            (_, None) => return,
        };
        let _ = entry.reply.send(settled);
    }

    /// Reads the woken confirms in the order they were woken.
    fn read_woken(&mut self, woken: &Woken) {
        while let Some(seq) = woken.pop() {
            self.poll_confirm(seq);
        }
    }
}

/// Reads the confirms lapin completes, until the channel's `Confirming` is gone and every
/// publish has settled.
async fn run<C: Awaited>(ledger: Arc<Ledger<C>>) {
    poll_fn(|cx| {
        ledger.woken.task.register(cx.waker());
        let mut book = ledger.book();
        book.read_woken(&ledger.woken);
        if ledger.closed.load(Ordering::Acquire) && book.entries.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
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
}
