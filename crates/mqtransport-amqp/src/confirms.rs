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
mod tests;
