//! When each session next needs the world's attention, soonest first, so
//! that a step touches only the sessions that are due rather than all of
//! them (a 100-node world has about 10,000).

use std::collections::{BTreeSet, HashMap};

use crate::net::NodeId;

/// A session's key: `(from, to)`.
type Key = (NodeId, NodeId);

/// One alarm per session at most; setting it again moves it.
#[derive(Debug, Default)]
pub(crate) struct Alarms {
    queue: BTreeSet<(u64, Key)>,
    at: HashMap<Key, u64>,
}

impl Alarms {
    /// Sets the alarm of `key` to `at`, or clears it.
    pub(crate) fn set(&mut self, key: Key, at: Option<u64>) {
        if let Some(old) = self.at.remove(&key) {
            self.queue.remove(&(old, key));
        }
        if let Some(at) = at {
            self.queue.insert((at, key));
            self.at.insert(key, at);
        }
    }

    /// The soonest alarm.
    pub(crate) fn next(&self) -> Option<u64> {
        self.queue.first().map(|&(at, _)| at)
    }

    /// Takes the soonest alarm if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<Key> {
        let &(at, key) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.pop_first();
        self.at.remove(&key);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_alarms_come_soonest_first_and_a_moved_alarm_rings_once() {
        let mut alarms = Alarms::default();
        alarms.set((0, 1), Some(30));
        alarms.set((1, 0), Some(10));
        alarms.set((2, 0), Some(20));
        alarms.set((2, 0), Some(40));
        alarms.set((1, 2), Some(5));
        alarms.set((1, 2), None);
        assert_eq!(alarms.next(), Some(10));
        assert_eq!(alarms.pop_due(35), Some((1, 0)));
        assert_eq!(alarms.pop_due(35), Some((0, 1)));
        assert_eq!(alarms.pop_due(35), None);
        assert_eq!(alarms.next(), Some(40));
        assert_eq!(alarms.pop_due(40), Some((2, 0)));
        assert_eq!(alarms.next(), None);
    }
}
