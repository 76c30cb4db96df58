//! Deterministic simulation of many Basic nodes in one process: virtual
//! time, one seeded RNG, a simulated network that loses, delays, reorders
//! and duplicates messages and partitions, driving the real sync state
//! machine ([`basic_proto::sync`]) and the real replica
//! ([`basic_store::Database`] over [`basic_store::MemStore`]).
//!
//! ```no_run
//! let config = basic_sim::Config { seed: 7, ..basic_sim::Config::default() };
//! let summary = basic_sim::run("partition-heal", config).expect("invariants hold");
//! println!("{}", summary.hash);
//! ```

pub mod adversary;
mod alarms;
pub mod invariants;
pub mod model;
pub mod net;
pub mod node;
pub mod scenario;
pub mod trace;
pub mod world;

pub use invariants::Failure;
pub use world::{Config, Summary, World};

/// Runs one seed of one scenario and checks every invariant.
pub fn run(scenario: &str, config: Config) -> Result<Summary, Failure> {
    let seed = config.seed;
    let harness = |e: anyhow::Error| Failure {
        seed,
        step: 0,
        now: 0,
        invariant: "harness".into(),
        detail: format!("{e:#}"),
        tail: vec![],
    };
    let mut world = scenario::build(scenario, config).map_err(harness)?;
    world.run(scenario)
}
