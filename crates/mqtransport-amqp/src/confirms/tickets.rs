//! The ledger's bookkeeping by ticket number. OpenTickets are issued in ascending order and mostly
//! settle in that order, so both structures keep a window that starts at the oldest ticket
//! still open: taking, finding and settling a ticket are index operations, and nothing is
//! allocated once the window has grown to the number of publishes in flight.

use std::collections::VecDeque;

/// OpenTickets below `low` have all passed some point; `above[i]` says whether ticket
/// `low + i` has (`above[0]`, ticket `low` itself, never has: `low` would have moved past it).
#[derive(Default)]
pub(super) struct Mark {
    pub(super) low: u64,
    above: VecDeque<bool>,
}

impl Mark {
    /// Ticket `seq` has passed (again, or long ago: nothing changes).
    pub(super) fn pass(&mut self, seq: u64) {
        let Some(i) = seq.checked_sub(self.low).and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if self.above.len() <= i {
            self.above.resize(i + 1, false);
        }
        self.above[i] = true;
        while self.above.front() == Some(&true) {
            self.above.pop_front();
            self.low += 1;
        }
    }
}

/// Open tickets with their values, by ticket number.
pub(super) struct OpenTickets<T> {
    /// The number of the first slot.
    base: u64,
    /// One slot per ticket from `base` on; the first one, if any, is open.
    slots: VecDeque<Option<T>>,
}

impl<T> Default for OpenTickets<T> {
    fn default() -> Self {
        OpenTickets {
            base: 0,
            slots: VecDeque::new(),
        }
    }
}

impl<T> OpenTickets<T> {
    /// Opens ticket `seq` with `value`. OpenTickets are opened in ascending order; one below or at
    /// a ticket already opened is refused (returns `false`).
    pub(super) fn open(&mut self, seq: u64, value: T) -> bool {
        let next = self.base + self.slots.len() as u64;
        if seq < next {
            return false;
        }
        if self.slots.is_empty() {
            self.base = seq;
        } else {
            // Numbers skipped are slots that were never open.
            for _ in next..seq {
                self.slots.push_back(None);
            }
        }
        self.slots.push_back(Some(value));
        true
    }

    fn index(&self, seq: u64) -> Option<usize> {
        seq.checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.slots.len())
    }

    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        let i = self.index(seq)?;
        self.slots[i].as_mut()
    }

    /// Closes ticket `seq`, giving back its value.
    pub(super) fn remove(&mut self, seq: u64) -> Option<T> {
        let i = self.index(seq)?;
        let value = self.slots[i].take()?;
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(value)
    }

    /// The open tickets, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, v)| v.as_ref().map(|v| (base + i as u64, v)))
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// The first slot is open whenever there is one.
    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_moves_past_every_ticket_passed_in_any_order() {
        let mut m = Mark::default();
        m.pass(2);
        m.pass(1);
        assert_eq!(m.low, 0, "ticket 0 has not passed");
        m.pass(0);
        assert_eq!(m.low, 3);
        m.pass(1);
        m.pass(3);
        m.pass(3);
        assert_eq!(m.low, 4, "passing a ticket twice, or one long passed, changes nothing");
    }

    #[test]
    fn tickets_close_in_any_order_and_the_window_follows_the_oldest_open() {
        let mut t = OpenTickets::default();
        for seq in 0..4 {
            assert!(t.open(seq, seq * 10));
        }
        assert!(!t.open(2, 0), "a number already taken");
        assert_eq!(t.remove(2), Some(20));
        assert_eq!(t.remove(2), None, "closed twice");
        assert_eq!(t.remove(0), Some(0));
        assert_eq!(t.iter().collect::<Vec<_>>(), [(1, &10), (3, &30)]);
        assert_eq!(t.get_mut(1).map(|v| *v), Some(10));
        assert_eq!(t.get_mut(0), None);
        assert_eq!(t.get_mut(9), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(1), Some(10));
        assert_eq!(t.remove(3), Some(30));
        assert!(t.is_empty());
        assert!(t.open(7, 70), "a window emptied starts again at any number");
        assert_eq!(t.iter().collect::<Vec<_>>(), [(7, &70)]);
    }
}
