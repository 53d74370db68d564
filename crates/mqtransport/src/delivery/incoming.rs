//! [`Incoming`]: a delivery as middleware and extractors see it.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use mqtransport_core::{Envelope, ShortStr};

use super::extensions::Extensions;
use super::parts::DeliveryParts;
use crate::publish::Publisher;

/// What every delivery of one consumer shares.
pub(crate) struct ConsumerCtx {
    pub(crate) queue: ShortStr,
    /// The OpenTelemetry `messaging.system`: `rabbitmq`, or `memory` for the embedded broker.
    pub(crate) system: &'static str,
    pub(crate) publisher: Publisher,
}

/// A delivery on its way through the middleware stack to its handler: its
/// [`DeliveryParts`] (which it dereferences to: `req.queue()`, `req.attempt()`, …) and
/// [`Extensions`] that middleware may use to pass values to extractors.
///
/// This is the request type of every tower [`Service`](tower::Service) in a consumer's stack.
pub struct Incoming {
    pub(crate) parts: Arc<DeliveryParts>,
    pub(crate) ctx: Arc<ConsumerCtx>,
    extensions: Extensions,
}

impl Incoming {
    pub(crate) fn new(parts: Arc<DeliveryParts>, ctx: Arc<ConsumerCtx>) -> Self {
        Incoming {
            parts,
            ctx,
            extensions: Extensions::default(),
        }
    }

    /// What the delivery carries, shared with the extractors and the runtime.
    pub fn parts(&self) -> &DeliveryParts {
        &self.parts
    }

    /// The message, for middleware that rewrites it before the handler sees it. The rewrite is
    /// seen by the extractors and the handler; a retry or dead-letter copy is made of the
    /// message as it was delivered.
    pub fn envelope_mut(&mut self) -> &mut Envelope {
        &mut Arc::make_mut(&mut self.parts).envelope
    }

    /// The OpenTelemetry `messaging.system` of the broker (`rabbitmq`, `memory`).
    pub fn messaging_system(&self) -> &'static str {
        self.ctx.system
    }

    /// Values middleware attached for extractors ([`Extension`](crate::Extension)).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Values middleware attached, for changing.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}

impl Deref for Incoming {
    type Target = DeliveryParts;

    fn deref(&self) -> &DeliveryParts {
        &self.parts
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("parts", &self.parts)
            .field("extensions", &self.extensions)
            .finish()
    }
}
