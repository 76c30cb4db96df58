//! How often apps may ask for access: anyone may ask, without a token, so
//! a page (or a local program) could flood the user with requests. Each
//! origin (requests without one count together) has a bucket of
//! [`PER_ORIGIN`] requests refilled one every [`PER_ORIGIN_REFILL`], and
//! all of them together one of [`TOTAL`] refilled one every
//! [`TOTAL_REFILL`]; an empty bucket is a 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Requests one origin may make at once.
pub(super) const PER_ORIGIN: u32 = 10;
/// How fast one origin's bucket refills.
pub(super) const PER_ORIGIN_REFILL: Duration = Duration::from_secs(6);
/// Requests all origins may make at once.
pub(super) const TOTAL: u32 = 30;
/// How fast the common bucket refills.
pub(super) const TOTAL_REFILL: Duration = Duration::from_secs(1);
/// Most origins tracked at once; beyond, full buckets are forgotten, and if
/// none is full the request is refused as if the common bucket were empty.
const MAX_ORIGINS: usize = 1024;

/// A bucket of requests.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests left, as of `at`.
    left: u32,
    /// When `left` was counted.
    at: Instant,
}

impl Bucket {
    fn full(size: u32, now: Instant) -> Self {
        Self { left: size, at: now }
    }

    /// Refills by the time elapsed, up to `size`.
    fn refill(&mut self, size: u32, every: Duration, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        let earned = elapsed.as_nanos() / every.as_nanos().max(1);
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        if earned > 0 {
            self.left = self.left.saturating_add(earned).min(size);
            // Keep the part of a refill period already elapsed.
            self.at = if self.left == size { now } else { self.at + every * earned };
        }
    }

    /// How long until the next request is earned.
    fn wait(&self, every: Duration, now: Instant) -> Duration {
        (self.at + every).saturating_duration_since(now).max(Duration::from_secs(1))
    }
}

/// The buckets of access requests.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    total: Bucket,
    origins: HashMap<String, Bucket>,
}

impl Throttle {
    /// Full buckets as of `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(State { total: Bucket::full(TOTAL, now), origins: HashMap::new() }),
        }
    }

    /// Takes one request of `origin` (`""`: no origin) at `now`, or says
    /// how long to wait.
    pub fn take(&self, origin: &str, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { total, origins } = &mut *state;
        total.refill(TOTAL, TOTAL_REFILL, now);
        if !origins.contains_key(origin) && origins.len() >= MAX_ORIGINS {
            origins.retain(|_, bucket| {
                bucket.refill(PER_ORIGIN, PER_ORIGIN_REFILL, now);
                bucket.left < PER_ORIGIN
            });
            if origins.len() >= MAX_ORIGINS {
                return Err(total.wait(TOTAL_REFILL, now));
            }
        }
        let own = origins.entry(origin.to_owned()).or_insert_with(|| Bucket::full(PER_ORIGIN, now));
        own.refill(PER_ORIGIN, PER_ORIGIN_REFILL, now);
        if own.left == 0 {
            return Err(own.wait(PER_ORIGIN_REFILL, now));
        }
        if total.left == 0 {
            return Err(total.wait(TOTAL_REFILL, now));
        }
        own.left -= 1;
        total.left -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_origin_cannot_flood_and_refills_slowly() {
        let start = Instant::now();
        let throttle = Throttle::new(start);
        for _ in 0..PER_ORIGIN {
            throttle.take("http://evil.example", start).unwrap();
        }
        let wait = throttle.take("http://evil.example", start).unwrap_err();
        assert!(wait >= Duration::from_secs(1) && wait <= PER_ORIGIN_REFILL, "{wait:?}");
        // Another origin is not held up by it.
        throttle.take("http://todo.example", start).unwrap();
        // One more once a refill period has passed, and only one.
        let later = start + PER_ORIGIN_REFILL;
        throttle.take("http://evil.example", later).unwrap();
        throttle.take("http://evil.example", later).unwrap_err();
    }

    #[test]
    fn many_origins_together_are_held_to_the_total() {
        let start = Instant::now();
        let throttle = Throttle::new(start);
        let taken = (0..100)
            .filter(|i| throttle.take(&format!("http://o{i}.example"), start).is_ok())
            .count();
        assert_eq!(taken, TOTAL as usize);
        let later = start + TOTAL_REFILL * 5;
        let more = (100..200)
            .filter(|i| throttle.take(&format!("http://o{i}.example"), later).is_ok())
            .count();
        assert_eq!(more, 5);
    }

    #[test]
    fn the_origins_tracked_are_bounded() {
        let start = Instant::now();
        let throttle = Throttle::new(start);
        let mut now = start;
        for i in 0..(MAX_ORIGINS + 50) {
            now += TOTAL_REFILL;
            // Each origin asks once: its bucket is full again a few
            // periods later, and then forgotten.
            let _ = throttle.take(&format!("http://o{i}.example"), now);
        }
        let state = throttle.state.lock().unwrap();
        assert!(state.origins.len() <= MAX_ORIGINS);
    }
}
