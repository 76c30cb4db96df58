//! The hybrid logical clock that orders writes.
//!
//! Implements `protocol-spec/clocks-and-merge.md` §1. A stamp is the wall
//! time in milliseconds and a counter. Local writes take a stamp above every
//! stamp seen so far, so a write made after seeing another always wins over
//! it, however slow the writer's clock. A received stamp more than
//! [`MAX_AHEAD_MS`] ahead of the receiver's clock is *held back* — kept, not
//! applied, until the receiver's clock catches up — so no writer wins
//! last-writer-wins by lying about time, and no honest write is lost.
//! Clocks only decide *when* a commit is applied, never *how*: the merge
//! reads only the stamps inside commits, so replicas with different clocks
//! reach the same tables once they hold the same commits.

/// How far ahead of the receiver's clock a stamp may be before it is held
/// back: 60 seconds (`protocol-spec/DECISIONS.md`, D7).
pub const MAX_AHEAD_MS: u64 = 60_000;

/// A hybrid logical clock stamp, ordered by wall time, then counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Orders stamps within one millisecond.
    pub counter: u32,
}

impl Hlc {
    /// The smallest stamp strictly greater than `self`; the greatest stamp
    /// is its own successor (it is 584 million years away).
    pub fn successor(self) -> Hlc {
        match (self.counter.checked_add(1), self.wall_ms.checked_add(1)) {
            (Some(counter), _) => Hlc { wall_ms: self.wall_ms, counter },
            (None, Some(wall_ms)) => Hlc { wall_ms, counter: 0 },
            (None, None) => self,
        }
    }
}

/// A stamp too far ahead of the local clock to apply yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "clock {ahead_ms} ms ahead of ours (limit {MAX_AHEAD_MS} ms): held back until {apply_at_ms}"
)]
pub struct ClockAhead {
    /// How far the stamp is ahead of the local clock.
    pub ahead_ms: u64,
    /// Local wall time from which the stamp may be applied.
    pub apply_at_ms: u64,
}

/// Checks that `stamp` is at most [`MAX_AHEAD_MS`] ahead of `now_ms`.
pub fn check_not_ahead(stamp: Hlc, now_ms: u64) -> Result<(), ClockAhead> {
    let limit = now_ms.saturating_add(MAX_AHEAD_MS);
    if stamp.wall_ms > limit {
        Err(ClockAhead {
            ahead_ms: stamp.wall_ms - now_ms,
            apply_at_ms: stamp.wall_ms - MAX_AHEAD_MS,
        })
    } else {
        Ok(())
    }
}

/// One writer's clock: the greatest stamp it has issued or observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    last: Hlc,
}

impl Clock {
    /// A clock that has already seen `last` (restored from storage).
    pub fn resume(last: Hlc) -> Self {
        Self { last }
    }

    /// The greatest stamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A stamp for a local write at wall time `now_ms`: the wall time if it
    /// is ahead of everything seen, else the successor of the last stamp.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.wall_ms {
            Hlc { wall_ms: now_ms, counter: 0 }
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Records a received stamp, so later local writes order after it.
    /// A stamp too far ahead is refused and the clock is left unchanged.
    pub fn observe(&mut self, stamp: Hlc, now_ms: u64) -> Result<(), ClockAhead> {
        check_not_ahead(stamp, now_ms)?;
        self.last = self.last.max(stamp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_write_after_seeing_another_wins_even_with_a_slow_clock() {
        let mut fast = Clock::default();
        let mut slow = Clock::default();
        let seen = fast.tick(10_000);
        slow.observe(seen, 5_000).unwrap();
        let reply = slow.tick(5_001);
        assert!(reply > seen);
    }

    #[test]
    fn stamps_too_far_ahead_are_held_back() {
        let now = 1_000_000;
        let ok = Hlc { wall_ms: now + MAX_AHEAD_MS, counter: 7 };
        assert_eq!(check_not_ahead(ok, now), Ok(()));
        let ahead = Hlc { wall_ms: now + MAX_AHEAD_MS + 1, counter: 0 };
        assert_eq!(
            check_not_ahead(ahead, now),
            Err(ClockAhead { ahead_ms: MAX_AHEAD_MS + 1, apply_at_ms: now + 1 })
        );
        let mut clock = Clock::default();
        assert!(clock.observe(ahead, now).is_err());
        assert_eq!(clock.last(), Hlc::default());
        // Once the local clock has caught up, the same stamp is accepted.
        assert_eq!(clock.observe(ahead, now + 1), Ok(()));
        assert_eq!(clock.last(), ahead);
    }

    #[test]
    fn counter_overflow_moves_to_the_next_millisecond() {
        let stamp = Hlc { wall_ms: 5, counter: u32::MAX };
        assert_eq!(stamp.successor(), Hlc { wall_ms: 6, counter: 0 });
        let last = Hlc { wall_ms: u64::MAX, counter: u32::MAX };
        assert_eq!(last.successor(), last);
    }

    proptest! {
        #[test]
        fn ticks_strictly_increase(events in proptest::collection::vec((any::<bool>(), 0u64..1_000_000, 0u64..1_000_000), 1..50)) {
            let mut clock = Clock::default();
            let mut previous = None;
            for (is_local, now, remote_wall) in events {
                if is_local {
                    let stamp = clock.tick(now);
                    if let Some(p) = previous { prop_assert!(stamp > p); }
                    previous = Some(stamp);
                } else {
                    let _ = clock.observe(Hlc { wall_ms: remote_wall, counter: 3 }, now);
                    if let Some(p) = previous { prop_assert!(clock.last() >= p); }
                }
            }
        }
    }
}
