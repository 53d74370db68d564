//! [`Extensions`]: values middleware hands to extractors.

use std::any::{Any, TypeId};
use std::fmt;

use mqtransport_core::hash::FxHashMap;

/// A map from type to value, for middleware to hand values to extractors. Empty, it allocates
/// nothing.
#[derive(Default)]
pub struct Extensions {
    map: Option<FxHashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Extensions {
    /// Stores `value`, returning the previous value of that type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.map
            .get_or_insert_with(Default::default)
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    /// The value of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map.as_ref()?.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The value of type `T`, for changing.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.map.as_mut()?.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        self.map
            .as_mut()?
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.as_ref().is_none_or(|m| m.is_empty())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.as_ref().map_or(0, |m| m.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_store_one_value_per_type() {
        let mut ext = Extensions::default();
        assert!(ext.is_empty());
        assert_eq!(ext.insert(5u32), None);
        assert_eq!(ext.insert(7u32), Some(5));
        ext.insert("tenant-a");
        assert_eq!(ext.get::<u32>(), Some(&7));
        *ext.get_mut::<u32>().unwrap() += 1;
        assert_eq!(ext.remove::<u32>(), Some(8));
        assert_eq!(ext.get::<&str>(), Some(&"tenant-a"));
        assert_eq!(ext.get::<u64>(), None);
    }
}
