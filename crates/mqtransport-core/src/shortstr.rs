//! `ShortStr`: an immutable name (exchange, routing key, queue) that clones without allocating.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// An immutable string that clones without allocating: up to 23 bytes it is stored inline
/// (cloning copies it and touches no shared memory), longer ones are shared by reference count.
/// Exchange names and routing keys travel with every message, so deliveries carry them as
/// `ShortStr`; inline storage keeps a publisher and a consumer on different cores from
/// bouncing one reference count between them for every message.
///
/// ```
/// use mqtransport_core::ShortStr;
///
/// let key = ShortStr::from("orders.created");
/// let copy = key.clone(); // no allocation
/// assert_eq!(copy, "orders.created");
/// assert!(key.starts_with("orders."));
/// ```
#[derive(Clone, Default)]
pub struct ShortStr(smol_str::SmolStr);

impl ShortStr {
    /// The empty string.
    pub const EMPTY: ShortStr = ShortStr(smol_str::SmolStr::new_inline(""));

    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for ShortStr {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ShortStr {
    #[inline]
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ShortStr {
    #[inline]
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> Self {
        ShortStr(smol_str::SmolStr::new(s))
    }
}

impl From<String> for ShortStr {
    fn from(s: String) -> Self {
        ShortStr(smol_str::SmolStr::new(s))
    }
}

impl From<&String> for ShortStr {
    fn from(s: &String) -> Self {
        ShortStr::from(s.as_str())
    }
}

impl From<&ShortStr> for ShortStr {
    fn from(s: &ShortStr) -> Self {
        s.clone()
    }
}

impl From<ShortStr> for String {
    fn from(s: ShortStr) -> Self {
        s.as_str().to_owned()
    }
}

impl PartialEq for ShortStr {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortStr {}

impl PartialEq<str> for ShortStr {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortStr {
    #[inline]
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ShortStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialOrd for ShortStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShortStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for ShortStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_hashes_as_str() {
        let a = ShortStr::from("k");
        assert_eq!(a, "k");
        assert_eq!(a, String::from("k"));
        assert_eq!(ShortStr::from(""), ShortStr::EMPTY);
        let set: std::collections::HashSet<ShortStr> = [a.clone()].into_iter().collect();
        assert!(set.contains("k"));
        assert_eq!(format!("{a} {a:?}"), "k \"k\"");
    }
}
