//! Where a database takes time and randomness from: the system on a
//! device; a virtual clock and a seed in the simulator, so that a run
//! repeats bit for bit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;

/// Current wall time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Every clock reading and random number of a database, and of the flows
/// that make one (creation, pairing, recovery) and sync with it.
#[derive(Clone)]
pub struct Environment {
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    randomness: Randomness,
}

#[derive(Clone)]
enum Randomness {
    /// The operating system's generator.
    System,
    /// Generators derived from a seed, one per draw, in draw order.
    Seeded { seed: [u8; 32], draws: Arc<AtomicU64> },
}

impl Environment {
    /// The system's clock and random numbers.
    pub fn system() -> Self {
        Self { clock: Arc::new(now_ms), randomness: Randomness::System }
    }

    /// `clock` (ms since the Unix epoch) and random numbers that follow
    /// from `seed`: the same calls in the same order draw the same numbers.
    pub fn simulated(clock: Arc<dyn Fn() -> u64 + Send + Sync>, seed: [u8; 32]) -> Self {
        Self { clock, randomness: Randomness::Seeded { seed, draws: Arc::new(AtomicU64::new(0)) } }
    }

    /// Wall time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// A random number generator for one task (keys, nonces, seals).
    pub fn rng(&self) -> StdRng {
        match &self.randomness {
            Randomness::System => StdRng::from_rng(&mut rand::rng()),
            Randomness::Seeded { seed, draws } => {
                let mut hasher = blake3::Hasher::new_derive_key("basic-store environment draw");
                hasher.update(seed);
                hasher.update(&draws.fetch_add(1, Ordering::Relaxed).to_le_bytes());
                StdRng::from_seed(*hasher.finalize().as_bytes())
            }
        }
    }
}

impl Default for Environment {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seeded = matches!(self.randomness, Randomness::Seeded { .. });
        f.debug_struct("Environment").field("seeded", &seeded).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn a_seeded_environment_repeats_and_each_draw_differs() {
        let clock = Arc::new(|| 7);
        let (a, b) = (
            Environment::simulated(clock.clone(), [1; 32]),
            Environment::simulated(clock, [1; 32]),
        );
        let draws = |e: &Environment| (0..3).map(|_| e.rng().next_u64()).collect::<Vec<_>>();
        let first = draws(&a);
        assert_eq!(first, draws(&b), "same seed, same draws");
        assert_ne!(first[0], first[1], "each draw is its own stream");
        assert_eq!(a.now_ms(), 7);
        assert_ne!(Environment::system().rng().next_u64(), Environment::system().rng().next_u64());
    }
}
