//! The publish path, as named steps: check and convert the message ([`Publisher::outgoing`]),
//! take a place in the window of unconfirmed publishes, pick a channel, send and await the
//! confirm ([`Publisher::attempt`]), and on a lost connection decide whether to send again.
//!
//! Every step is bounded by one deadline, the confirm timeout from the start of the publish: a
//! publish never waits past it, whatever the broker or lapin does.

use std::sync::Arc;
use std::time::Duration;

use mqtransport_core::{
    Capabilities, Confirmation, DIRECT_REPLY_TO, Error, ErrorKind, Publish, Result, Scope, ShortStr,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::channels::Channels;
use crate::confirms::{Confirming, Outgoing, PublishOutcome};
use crate::consumer::Subscriptions;
use crate::convert::{map_err, to_properties};
use crate::declare::check_exchange;
use crate::options::{AmqpOptions, Unconfirmed};
use crate::recorded::Recording;
use crate::refusals::{Blame, KnownExchanges, blame};

/// Publishes with confirms, within a bounded window of unconfirmed publishes.
pub(crate) struct Publisher {
    channels: Arc<Channels>,
    subscriptions: Arc<Subscriptions>,
    recording: Arc<Recording>,
    /// The window of publishes awaiting their confirm.
    window: Arc<Semaphore>,
    confirm_timeout: Duration,
    unconfirmed: Unconfirmed,
    max_unconfirmed: usize,
    /// Exchanges that need no check before a publish (see [`crate::refusals`]).
    known: KnownExchanges,
}

/// How an attempt that did not settle the publish ended, when it may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupted {
    /// Lost with its connection: sent again once the link has a new one.
    WithConnection,
    /// Another publish's refusal closed its channel: sent again on a new channel at once.
    ByRefusal,
}

impl Interrupted {
    /// When the publish went unconfirmed, for errors.
    fn when(self) -> &'static str {
        match self {
            Interrupted::WithConnection => "when its connection was lost",
            Interrupted::ByRefusal => "when another message's refusal closed its channel",
        }
    }

    /// What held it up, for a timeout.
    fn stage(self) -> &'static str {
        match self {
            Interrupted::WithConnection => "lost with its connection",
            Interrupted::ByRefusal => "its channel was closed by another message's refusal",
        }
    }
}

/// How many times one publish may be sent again after other publishes' refusals closed its
/// channel, before it fails with the last refusal.
const MAX_REFUSALS: u8 = 3;

/// How one attempt to publish ended, when it did not end the publish.
enum Attempt {
    /// Done: confirmed, returned or nacked.
    PublishOutcome(Confirmation),
    /// Its time ran out, or the channel failed: the publish fails with this.
    Failed(Error),
    /// The broker closed the channel with this refusal: this publish's or another's.
    Refused(Error),
    /// Lost with its connection: it may be sent again.
    Lost(Error),
}

impl Publisher {
    pub(crate) fn new(
        channels: Arc<Channels>,
        subscriptions: Arc<Subscriptions>,
        recording: Arc<Recording>,
        options: &AmqpOptions,
    ) -> Self {
        let max_unconfirmed = options.max_unconfirmed.max(1);
        Publisher {
            channels,
            subscriptions,
            recording,
            window: Arc::new(Semaphore::new(max_unconfirmed)),
            confirm_timeout: options.confirm_timeout,
            unconfirmed: options.unconfirmed,
            max_unconfirmed,
            known: KnownExchanges::default(),
        }
    }

    /// Publishes sent (or waiting to be) and not yet confirmed.
    pub(crate) fn unconfirmed(&self) -> usize {
        self.max_unconfirmed - self.window.available_permits()
    }

    pub(crate) async fn publish(&self, publish: Publish) -> Result<Confirmation> {
        self.channels.check_open()?;
        let outgoing = Arc::new(self.outgoing(publish)?);
        self.check_exchange(&outgoing).await?;
        let deadline = Instant::now() + self.confirm_timeout;
        let _place = self.take_place(&outgoing, deadline).await?;
        let mut refusals = 0u8;
        // Once an attempt was lost after sending, the message may be in its queue whatever
        // happens next: every later failure says its outcome is unknown.
        let mut lost_before = false;
        let unknown_if_lost = |e: Error, lost_before: bool| if lost_before { e.outcome_unknown() } else { e };
        loop {
            let ch = match self.pick_channel(&outgoing, deadline).await {
                Ok(ch) => ch,
                Err(e) => return Err(unknown_if_lost(e, lost_before)),
            };
            let (lost, how) = match self.attempt(&ch, &outgoing, deadline).await {
                Attempt::PublishOutcome(confirmation) => return Ok(confirmation),
                Attempt::Failed(e) => return Err(unknown_if_lost(e, lost_before)),
                Attempt::Refused(e) => {
                    refusals += 1;
                    let blamed = blame(&e, &outgoing);
                    if blamed == Blame::This || (blamed == Blame::Unknown && refusals > 1) || refusals > MAX_REFUSALS {
                        if e.reply_code() == Some(404) {
                            self.known.forget(&outgoing.exchange);
                        }
                        return Err(unknown_if_lost(e, lost_before));
                    }
                    // Another publish's refusal closed the channel under this one, which the
                    // broker may have taken before the close: like a publish lost with its
                    // connection, it is sent again, on a new channel.
                    self.channels.discard_publisher(&ch).await;
                    (e, Interrupted::ByRefusal)
                }
                Attempt::Lost(e) => (e, Interrupted::WithConnection),
            };
            lost_before = true;
            if let Err(closed) = self.channels.check_open() {
                return Err(closed.outcome_unknown());
            }
            if self.unconfirmed == Unconfirmed::Fail {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!(
                        "{} was not confirmed {}, and is not sent again (Unconfirmed::Fail): {}",
                        describe(&outgoing),
                        how.when(),
                        lost.message()
                    ),
                )
                .outcome_unknown());
            }
            if Instant::now() >= deadline {
                return Err(self
                    .timed_out(&outgoing, &format!("{}: {}", how.stage(), lost.message()))
                    .outcome_unknown());
            }
            if how == Interrupted::WithConnection {
                self.await_new_connection(&ch, deadline).await;
            }
        }
    }

    /// The publish as it goes out: its size checked, a default-exchange routing key resolved
    /// to a server-named queue's current name, its properties converted.
    fn outgoing(&self, publish: Publish) -> Result<Outgoing> {
        publish.check_size(
            Capabilities::rabbitmq().max_message_size,
            self.channels.publish.frame_max(),
        )?;
        let Publish {
            exchange,
            routing_key,
            mandatory,
            envelope,
        } = publish;
        let renamed = if exchange.is_empty() {
            self.recording.renamed(&routing_key)
        } else {
            None
        };
        let routing_key = renamed.map_or(routing_key, ShortStr::from);
        mqtransport_core::publish_rules::check(envelope.properties())?;
        let properties = to_properties(envelope.properties())?;
        Ok(Outgoing {
            exchange,
            routing_key,
            mandatory,
            body: envelope.body,
            properties,
        })
    }

    /// Before the first publish to an exchange this transport has not seen: a passive declare
    /// on the declarations channel, so that a missing exchange fails this publish alone
    /// instead of closing the publishing channel under its neighbours.
    async fn check_exchange(&self, outgoing: &Outgoing) -> Result<()> {
        if self.known.knows(&outgoing.exchange) {
            return Ok(());
        }
        let slot = self.channels.admin().await?;
        check_exchange(slot.channel()?, &outgoing.exchange).await?;
        self.known.learn(&outgoing.exchange);
        Ok(())
    }

    /// A place in the window of unconfirmed publishes, held until the publish settles.
    async fn take_place(&self, outgoing: &Outgoing, deadline: Instant) -> Result<OwnedSemaphorePermit> {
        match tokio::time::timeout_at(deadline, Arc::clone(&self.window).acquire_owned()).await {
            Ok(Ok(place)) => Ok(place),
            Ok(Err(_)) => Err(Error::closed(format!("connection to {} is closed", self.channels.url))),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{} waited {:?} for a place among {} unconfirmed publishes",
                    describe(outgoing),
                    self.confirm_timeout,
                    self.max_unconfirmed
                ),
            )),
        }
    }

    /// The channel to send on: a request asking for a direct reply must go out on the channel
    /// consuming replies; everything else on the publisher channel.
    async fn pick_channel(&self, outgoing: &Outgoing, deadline: Instant) -> Result<Arc<Confirming>> {
        if outgoing.properties.reply_to().as_ref().map(|r| r.as_str()) == Some(DIRECT_REPLY_TO) {
            let mut replies = self.subscriptions.reply_channels();
            loop {
                let current = replies.borrow_and_update().clone();
                match current {
                    // RabbitMQ would close the channel the request went out on.
                    None => {
                        return Err(Error::broker(
                            406,
                            "PRECONDITION_FAILED - fast reply consumer does not exist",
                            Scope::Channel,
                        ));
                    }
                    Some(ch) if ch.channel.status().connected() => return Ok(ch),
                    // The reply channel was closed under its consumer (a refused request
                    // closes it): resume the consumer, whose new channel takes the request.
                    Some(_) => {
                        self.subscriptions.revive_reply_consumer();
                        match tokio::time::timeout_at(deadline, replies.changed()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => {
                                return Err(Error::closed(format!("connection to {} is closed", self.channels.url)));
                            }
                            Err(_) => {
                                return Err(self.timed_out(outgoing, "waiting for the reply consumer's channel"));
                            }
                        }
                    }
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.channels.publisher(left).await {
            Ok(ch) => Ok(ch),
            Err(e) if e.kind() == ErrorKind::Timeout => {
                Err(self.timed_out(outgoing, "waiting for a connection and a publishing channel"))
            }
            Err(e) => Err(e),
        }
    }

    /// Sends the publish on `ch` and awaits its confirm, both bounded by `deadline`.
    async fn attempt(&self, ch: &Arc<Confirming>, outgoing: &Arc<Outgoing>, deadline: Instant) -> Attempt {
        let sending = ch.send(self.confirm_timeout, outgoing);
        tokio::pin!(sending);
        // One timer for the whole attempt: sending and the confirm share the deadline.
        let expired = tokio::time::sleep_until(deadline);
        tokio::pin!(expired);
        // lapin may never answer a send, or a confirm, on a connection that died just then:
        // once the publishing link has left the channel's connection, the wait ends as a loss.
        let lost = {
            let link = &self.channels.publish;
            let generation = ch.generation;
            async move {
                match generation {
                    Some(g) => link.moved_past(g).await,
                    None => std::future::pending().await,
                }
            }
        };
        tokio::pin!(lost);
        let lost_error = || {
            Error::new(
                ErrorKind::Connection,
                format!(
                    "the connection to {} was lost with {} in flight",
                    self.channels.url,
                    describe(outgoing)
                ),
            )
        };
        // An answer ready together with the deadline or the loss wins: it is what happened.
        let settled = tokio::select! {
            biased;
            sent = &mut sending => match sent {
                Ok(settled) => settled,
                Err(e) => return self.failed(map_err(&e, &format!("publishing {}", describe(outgoing)))),
            },
            () = &mut expired => return Attempt::Failed(self.timed_out(outgoing, "sending it").outcome_unknown()),
            () = &mut lost => return Attempt::Lost(lost_error()),
        };
        let settled = tokio::select! {
            biased;
            settled = settled => settled,
            () = &mut expired => {
                return Attempt::Failed(
                    self.timed_out(outgoing, "sent, waiting for its confirm")
                        .outcome_unknown(),
                );
            }
            () = &mut lost => return Attempt::Lost(lost_error()),
        };
        match settled {
            Ok(PublishOutcome::Confirmed) => Attempt::PublishOutcome(Confirmation::Confirmed),
            Ok(PublishOutcome::Returned { reply_code, reply_text }) => {
                Attempt::PublishOutcome(Confirmation::Returned { reply_code, reply_text })
            }
            Ok(PublishOutcome::Nacked) => Attempt::PublishOutcome(Confirmation::Nacked),
            Ok(PublishOutcome::NotRequested) => Attempt::Failed(Error::new(
                ErrorKind::Connection,
                "the publishing channel is not in confirm mode",
            )),
            Ok(PublishOutcome::Failed(e)) => self.failed(map_err(&e, &format!("publishing {}", describe(outgoing)))),
            // The ledger went away with the runtime: nothing will confirm it.
            Err(_) => Attempt::Lost(Error::new(
                ErrorKind::Connection,
                format!(
                    "{} lost its confirm: the publisher channel's ledger stopped",
                    describe(outgoing)
                ),
            )),
        }
    }

    /// A failed send or confirm: a refusal that closed the channel (404, 406, 403), which may
    /// be another publish's; anything else was lost with the connection.
    fn failed(&self, e: Error) -> Attempt {
        if e.scope() == Some(Scope::Channel) {
            Attempt::Refused(e)
        } else {
            Attempt::Lost(e)
        }
    }

    /// Before sending again: waits for the link to leave the connection the attempt was lost
    /// on, unless the attempt's channel is already known closed (the next attempt opens
    /// another, or waits for the connection itself).
    async fn await_new_connection(&self, ch: &Confirming, deadline: Instant) {
        if !ch.channel.status().connected() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match ch.generation {
            Some(g) => self.channels.publish.wait_past(g, left).await,
            // The reply channel: its consumer's recovery installs a new one.
            None => {
                let mut replies = self.subscriptions.reply_channels();
                let _ = tokio::time::timeout(left, replies.changed()).await;
            }
        }
    }

    fn timed_out(&self, outgoing: &Outgoing, stage: &str) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "{} was not confirmed by RabbitMQ at {} within {:?} ({stage})",
                describe(outgoing),
                self.channels.url,
                self.confirm_timeout
            ),
        )
    }
}

/// "the message to exchange 'x' with routing key 'k'", for errors.
fn describe(outgoing: &Outgoing) -> String {
    format!(
        "the message to exchange '{}' with routing key '{}'",
        outgoing.exchange, outgoing.routing_key
    )
}
