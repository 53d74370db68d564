//! The ready messages of a queue, in delivery order: one FIFO per priority level.

use std::collections::VecDeque;

use super::message::Msg;

/// Ready messages, one FIFO per priority level (one level without `x-max-priority`).
#[derive(Debug, Default)]
pub(crate) struct Ready {
    levels: Vec<VecDeque<Msg>>,
    len: usize,
    pub(crate) bytes: usize,
    /// Ready messages that can expire: none, and expiry needs no look at the head.
    pub(crate) timed: usize,
}

impl Ready {
    pub(crate) fn new(max_priority: Option<u8>) -> Self {
        let n = max_priority.map_or(1, |m| usize::from(m) + 1);
        Ready {
            levels: (0..n).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
            timed: 0,
        }
    }

    #[inline]
    fn level(&self, msg: &Msg) -> usize {
        if self.levels.len() == 1 {
            return 0;
        }
        let p = usize::from(msg.data.envelope.properties().priority.unwrap_or(0));
        p.min(self.levels.len() - 1)
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Counts a message coming in; returns its level.
    #[inline]
    fn added(&mut self, msg: &Msg) -> usize {
        self.len += 1;
        self.bytes += msg.data.envelope.body.len();
        self.timed += usize::from(msg.expires_at.is_some());
        self.level(msg)
    }

    #[inline]
    pub(crate) fn push_back(&mut self, msg: Msg) {
        let l = self.added(&msg);
        self.levels[l].push_back(msg);
    }

    pub(crate) fn push_front(&mut self, msg: Msg) {
        let l = self.added(&msg);
        self.levels[l].push_front(msg);
    }

    /// Puts a message back at its original position (classic queues).
    pub(crate) fn insert_by_seq(&mut self, msg: Msg) {
        let l = self.added(&msg);
        let level = &mut self.levels[l];
        let at = level.partition_point(|m| m.seq < msg.seq);
        level.insert(at, msg);
    }

    #[inline]
    pub(crate) fn head(&self) -> Option<&Msg> {
        self.levels.iter().rev().find_map(|l| l.front())
    }

    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<Msg> {
        let msg = self.levels.iter_mut().rev().find_map(|l| l.pop_front())?;
        self.len -= 1;
        self.bytes -= msg.data.envelope.body.len();
        self.timed -= usize::from(msg.expires_at.is_some());
        Some(msg)
    }

    pub(crate) fn clear(&mut self) -> usize {
        let n = self.len;
        for l in &mut self.levels {
            l.clear();
        }
        self.len = 0;
        self.bytes = 0;
        self.timed = 0;
        n
    }
}
