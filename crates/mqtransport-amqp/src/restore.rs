//! The restore task: on every new connection of the consuming link, declares the recorded
//! topology again and re-opens every consumer, then tells the link it may announce the
//! connection (see [`crate::link`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use lapin::Connection;
use mqtransport_core::{Error, Result};

use crate::consumer::Subscriptions;
use crate::link::{Link, Phase, RESTORE_WAIT};
use crate::recorded::Recording;

/// What a restore works on. Held weakly by the task: the task ends with the transport.
pub(crate) struct Restorer {
    pub(crate) link: Weak<Link>,
    pub(crate) recording: Weak<Recording>,
    pub(crate) subscriptions: Weak<Subscriptions>,
    pub(crate) closed: Arc<AtomicBool>,
}

impl Restorer {
    /// Runs until the link or the transport is gone: each connection the link hands over is
    /// restored, and the link told how it went.
    pub(crate) async fn run(self) {
        let Some(mut phases) = self.link.upgrade().map(|l| l.phases()) else {
            return;
        };
        loop {
            let handed = phases
                .wait_for(|p| matches!(p, Phase::Restoring(..) | Phase::Closed))
                .await
                .map(|p| p.clone());
            let (generation, conn) = match handed {
                Ok(Phase::Restoring(generation, conn)) => (generation, conn),
                // Closed, or the link is gone.
                _ => return,
            };
            // A restore that hangs (the connection dying under it) is given up.
            let ok = matches!(
                tokio::time::timeout(RESTORE_WAIT, self.restore(&conn)).await,
                Ok(Ok(()))
            );
            let Some(link) = self.link.upgrade() else { return };
            link.restored(generation, ok);
            drop(link);
            // Wait for the link to leave this connection's restore before looking again.
            if phases
                .wait_for(|p| !matches!(p, Phase::Restoring(g, _) if *g == generation))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    async fn restore(&self, conn: &Arc<Connection>) -> Result<()> {
        let still_wanted = || {
            if self.closed.load(Ordering::Acquire) {
                Err(Error::closed("the transport was closed during a reconnect"))
            } else {
                Ok(())
            }
        };
        still_wanted()?;
        let (Some(recording), Some(subscriptions)) = (self.recording.upgrade(), self.subscriptions.upgrade()) else {
            return Err(Error::closed("the transport was dropped during a reconnect"));
        };
        recording.redeclare(conn, still_wanted).await?;
        subscriptions.resubscribe_all(conn);
        Ok(())
    }
}
