//! A delivery as the app sees it: its [`DeliveryParts`] (the message, where it came from, how
//! often it was tried), one value per delivery shared by the [`Incoming`] request that
//! middleware sees, the [`DeliveryInfo`] and [`Headers`] extractors and the runtime that settles
//! it; and the [`Extensions`] middleware hands to extractors.

mod extensions;
mod incoming;
mod info;
mod parts;

pub use extensions::Extensions;
pub(crate) use incoming::ConsumerCtx;
pub use incoming::Incoming;
pub use info::{DeliveryInfo, Headers};
pub use parts::DeliveryParts;
