//! Bugs the simulator found, one test each, with the seed that found it
//! (all fixed; each test failed before its fix).

use basic_sim::{Config, invariants, run, scenario};

/// A `ranges-reply` lost in the network left a hole for good: the
/// requester marked the author reconciled when it queued the range, and
/// after `handle_failure` never asked again while the peer's entry was
/// unchanged. Fixed: a failed exchange forgets what was reconciled.
#[test]
fn a_lost_ranges_reply_leaves_no_hole_seed_17() {
    if let Err(failure) = run("pinner-only-availability", Config { seed: 17, ..Config::default() })
    {
        panic!("{failure}");
    }
}

/// Nodes that stored a revoked app's commits before the revocation reached
/// them keep them (rejected); the others refuse them. Summaries never
/// agreed, every round resent the same commits, and a revocation left empty
/// row states where the others held no row. Fixed: sync neither counts nor
/// serves rejected commits, and a row no admitted commit writes is deleted.
#[test]
fn rejected_commits_do_not_keep_replicas_apart_seed_3() {
    let mut world =
        scenario::build("revoke-during-partition", Config { seed: 3, ..Config::default() })
            .unwrap();
    world.run("revoke-during-partition").unwrap();
    invariants::same_heads(&world).unwrap();
    let reference = invariants::rows(&world, 0).unwrap();
    for i in 1..world.nodes.len() {
        if world.nodes[i].role == basic_sim::node::Role::Device {
            assert_eq!(invariants::rows(&world, i).unwrap(), reference, "{}", world.nodes[i].name);
        }
    }
}

/// A run ended when the devices agreed, before an app whose `ranges`
/// request was lost had timed out and asked again: the app still lacked an
/// acknowledged commit (superseded, so its rows already matched). Fixed in
/// the simulator: a run waits until every entitled replica holds every
/// acknowledged write, within the liveness bound.
#[test]
fn a_run_waits_for_every_acknowledged_write_seed_222() {
    if let Err(failure) = run("partition-heal", Config { seed: 222, ..Config::default() }) {
        panic!("{failure}");
    }
}
