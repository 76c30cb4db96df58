//! Per-peer token buckets for inbound requests.
//!
//! Deterministic: every call takes `now`, nothing reads a clock. Each peer
//! has a bucket of `burst` tokens refilled at `rate` tokens per second; a
//! request takes one token. A request that finds the bucket empty is
//! refused and adds a strike; strikes drain at the same `rate`. A peer whose
//! strikes exceed `burst` — it keeps sending at more than twice the allowed
//! rate — is told to go away ([`Verdict::Disconnect`]).

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

/// What to do with one inbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit: deliver it.
    Allow,
    /// Over the limit: drop it.
    Refuse,
    /// Over the limit again and again: drop it and disconnect the peer.
    Disconnect,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    strikes: f64,
    last: Instant,
}

/// Token buckets keyed by peer. Entries are removed when the peer
/// disconnects, so the map is bounded by the connection limits.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<PeerId, Bucket>,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once. A `burst` of 0
    /// is treated as 1 so that a positive rate can ever allow a request.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self { rate: f64::from(rate), burst: f64::from(burst.max(1)), buckets: HashMap::new() }
    }

    /// Accounts one inbound request from `peer` at `now`.
    pub(crate) fn check(&mut self, peer: PeerId, now: Instant) -> Verdict {
        let burst = self.burst;
        let bucket =
            self.buckets.entry(peer).or_insert(Bucket { tokens: burst, strikes: 0.0, last: now });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.last = bucket.last.max(now);
        let refill = elapsed * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.strikes = (bucket.strikes - refill).max(0.0);

        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Verdict::Allow
        } else {
            bucket.strikes += 1.0;
            if bucket.strikes > burst { Verdict::Disconnect } else { Verdict::Refuse }
        }
    }

    /// Forgets `peer` (it disconnected).
    pub(crate) fn remove(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }

    /// Number of peers tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refuse() {
        let mut limiter = RateLimiter::new(10, 5);
        let peer = PeerId::random();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.check(peer, t0), Verdict::Allow);
        }
        assert_eq!(limiter.check(peer, t0), Verdict::Refuse);
    }

    #[test]
    fn refills_at_rate_and_caps_at_burst() {
        let mut limiter = RateLimiter::new(10, 5);
        let peer = PeerId::random();
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.check(peer, t0);
        }
        // 100 ms at 10/s = one token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.check(peer, t1), Verdict::Allow);
        assert_eq!(limiter.check(peer, t1), Verdict::Refuse);
        // An hour idle refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(limiter.check(peer, t2), Verdict::Allow);
        }
        assert_eq!(limiter.check(peer, t2), Verdict::Refuse);
    }

    #[test]
    fn peers_are_independent() {
        let mut limiter = RateLimiter::new(1, 1);
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert_eq!(limiter.check(a, t0), Verdict::Allow);
        assert_eq!(limiter.check(a, t0), Verdict::Refuse);
        assert_eq!(limiter.check(b, t0), Verdict::Allow);
    }

    #[test]
    fn persistent_abuse_disconnects() {
        let mut limiter = RateLimiter::new(10, 3);
        let peer = PeerId::random();
        let t0 = Instant::now();
        let verdicts: Vec<_> = (0..7).map(|_| limiter.check(peer, t0)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Allow, Allow, Allow, Refuse, Refuse, Refuse, Disconnect]);
    }

    #[test]
    fn sending_at_the_rate_never_strikes_out() {
        let mut limiter = RateLimiter::new(10, 2);
        let peer = PeerId::random();
        let t0 = Instant::now();
        // Twice the burst up front, then exactly the rate for a minute.
        let mut refused = 0;
        for _ in 0..4 {
            if limiter.check(peer, t0) == Verdict::Refuse {
                refused += 1;
            }
        }
        assert_eq!(refused, 2);
        for i in 1..=600 {
            let now = t0 + Duration::from_millis(100 * i);
            assert_eq!(limiter.check(peer, now), Verdict::Allow, "request {i}");
        }
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut limiter = RateLimiter::new(10, 1);
        let peer = PeerId::random();
        let t1 = Instant::now() + Duration::from_secs(10);
        assert_eq!(limiter.check(peer, t1), Verdict::Allow);
        assert_eq!(limiter.check(peer, t1 - Duration::from_secs(5)), Verdict::Refuse);
    }

    #[test]
    fn remove_forgets_the_peer() {
        let mut limiter = RateLimiter::new(1, 1);
        let peer = PeerId::random();
        let t0 = Instant::now();
        limiter.check(peer, t0);
        assert_eq!(limiter.len(), 1);
        limiter.remove(&peer);
        assert_eq!(limiter.len(), 0);
        assert_eq!(limiter.check(peer, t0), Verdict::Allow);
    }
}
