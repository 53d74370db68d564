//! A fast, non-cryptographic hasher for maps keyed by names the application chooses (queues,
//! exchanges, routing-key words). SipHash's protection against crafted keys buys nothing there
//! and costs a large share of the routing hot path.

use std::hash::{BuildHasherDefault, Hasher};

/// The Fx hash (as used inside rustc): rotate, xor, multiply, one machine word at a time.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The last step is a multiply, which leaves the low bits depending on the low input
        // bytes only; hash tables pick buckets from the low bits, so keys sharing a prefix
        // would collide. Rotating brings the well-mixed high bits down (as rustc-hash 2 does).
        self.hash.rotate_left(26)
    }
}

/// `BuildHasher` for [`FxHasher`].
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;

/// A `HashMap` using [`FxHasher`].
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuildHasher>;

/// A `HashSet` using [`FxHasher`].
pub type FxHashSet<T> = std::collections::HashSet<T, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn distinguishes_lengths_and_contents() {
        let b = FxBuildHasher::default();
        assert_ne!(b.hash_one("a"), b.hash_one("a\0"));
        assert_ne!(b.hash_one("orders.created"), b.hash_one("orders.deleted"));
        assert_eq!(b.hash_one("same"), b.hash_one("same"));
        // Keys differing only after a common prefix spread over the low bits too.
        let low: std::collections::HashSet<u64> = (0..1000)
            .map(|i| b.hash_one(format!("svc{i}").as_bytes()) & 0x3ff)
            .collect();
        assert!(low.len() > 500, "only {} distinct low-bit buckets of 1024", low.len());
    }
}
