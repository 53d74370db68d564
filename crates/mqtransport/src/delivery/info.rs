//! The extractors that read a delivery's parts: [`DeliveryInfo`] and [`Headers`]. Both share
//! the delivery's [`DeliveryParts`]: taking them copies nothing.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use mqtransport_core::FieldValue;

use super::parts::DeliveryParts;

/// Where a delivery came from and how often it was tried: an extractor that dereferences to
/// the delivery's [`DeliveryParts`].
///
/// ```
/// use mqtransport::DeliveryInfo;
///
/// async fn handler(info: DeliveryInfo) {
///     if info.attempt() > 1 {
///         println!("retry of {:?} from queue {}", info.message_id(), info.queue());
///     }
/// }
/// # let _ = handler;
/// ```
#[derive(Clone)]
pub struct DeliveryInfo(pub(crate) Arc<DeliveryParts>);

impl Deref for DeliveryInfo {
    type Target = DeliveryParts;

    fn deref(&self) -> &DeliveryParts {
        &self.0
    }
}

impl fmt::Debug for DeliveryInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The message's headers: an extractor.
#[derive(Clone)]
pub struct Headers(pub(crate) Arc<DeliveryParts>);

impl Headers {
    /// The header `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.header(key)
    }

    /// The header `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(FieldValue::as_str)
    }

    /// Every header, in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0
            .envelope
            .properties()
            .headers
            .as_ref()
            .into_iter()
            .flat_map(|t| t.iter())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0
            .envelope
            .properties()
            .headers
            .as_ref()
            .is_none_or(|t| t.is_empty())
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
