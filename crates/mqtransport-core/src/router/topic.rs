//! The topic exchange's bindings, as a trie of binding words.

use crate::hash::FxHashMap as HashMap;
use crate::topology::Destination;

/// A topic trie: one node per binding word; `*` and `#` in their own slots.
#[derive(Debug, Default)]
pub(super) struct TrieNode {
    children: HashMap<Box<str>, TrieNode>,
    star: Option<Box<TrieNode>>,
    hash: Option<Box<TrieNode>>,
    destinations: Vec<Destination>,
}

/// Splits a key or pattern: the empty string is zero words; otherwise split on `.`, keeping empty
/// words.
pub(super) fn words(s: &str) -> impl Iterator<Item = &str> {
    let empty = s.is_empty();
    s.split('.').filter(move |_| !empty)
}

impl TrieNode {
    pub(super) fn insert(&mut self, pattern: &str, destination: Destination) {
        let mut node = self;
        for w in words(pattern) {
            node = match w {
                "*" => node.star.get_or_insert_with(Default::default),
                "#" => node.hash.get_or_insert_with(Default::default),
                w => node.children.entry(w.into()).or_default(),
            };
        }
        node.destinations.push(destination);
    }

    /// Removes one `destination` under `pattern`; prunes empty nodes. Returns whether found.
    pub(super) fn remove(&mut self, pattern: &[&str], destination: &Destination) -> bool {
        let Some((first, rest)) = pattern.split_first() else {
            return match self.destinations.iter().position(|d| d == destination) {
                Some(i) => {
                    self.destinations.swap_remove(i);
                    true
                }
                None => false,
            };
        };
        match *first {
            "*" | "#" => {
                let slot = if *first == "*" { &mut self.star } else { &mut self.hash };
                let removed = slot.as_mut().is_some_and(|n| n.remove(rest, destination));
                if slot.as_ref().is_some_and(|n| n.is_empty()) {
                    *slot = None;
                }
                removed
            }
            w => {
                let removed = self.children.get_mut(w).is_some_and(|n| n.remove(rest, destination));
                if self.children.get(w).is_some_and(TrieNode::is_empty) {
                    self.children.remove(w);
                }
                removed
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.destinations.is_empty() && self.children.is_empty() && self.star.is_none() && self.hash.is_none()
    }

    pub(super) fn collect<'a>(&'a self, key: &[&str], out: &mut Vec<&'a Destination>) {
        match key.split_first() {
            None => out.extend(self.destinations.iter()),
            Some((first, rest)) => {
                if let Some(child) = self.children.get(*first) {
                    child.collect(rest, out);
                }
                if let Some(star) = &self.star {
                    star.collect(rest, out);
                }
            }
        }
        if let Some(hash) = &self.hash {
            // `#` consumes zero or more words.
            for skip in 0..=key.len() {
                hash.collect(&key[skip..], out);
            }
        }
    }
}
