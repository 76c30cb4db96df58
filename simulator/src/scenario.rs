//! Named scenarios: who is in the world, who can reach whom, and what
//! happens when.

use anyhow::bail;
use basic_proto::Name;

use crate::adversary::ALL;
use crate::net::Faults;
use crate::net::NodeId;
use crate::node::Role;
use crate::world::{Action, Config, World, below};

/// Every scenario's name.
pub const NAMES: [&str; 6] = [
    "live-push",
    "partition-heal",
    "revoke-during-partition",
    "device-loss",
    "pinner-only-availability",
    "byzantine",
];

/// Simulated ms between writes, on average.
const WRITE_EVERY_MS: u64 = 300;

struct Cast {
    devices: Vec<NodeId>,
    pinners: Vec<NodeId>,
    apps: Vec<NodeId>,
}

/// Adds devices, pinners and apps. Devices form a full mesh unless
/// `pinner_only`, where every node reaches only the pinning peers.
fn cast(
    world: &mut World,
    devices: usize,
    pinners: usize,
    apps: usize,
    pinner_only: bool,
) -> anyhow::Result<Cast> {
    let mut cast = Cast { devices: vec![0], pinners: vec![], apps: vec![] };
    for _ in 1..devices {
        let peers = if pinner_only { vec![] } else { cast.devices.clone() };
        cast.devices.push(world.add_node(Role::Device, &peers)?);
    }
    for _ in 0..pinners {
        let peers = cast.devices.clone();
        cast.pinners.push(world.add_node(Role::Pinner, &peers)?);
    }
    let todo = Name::new("todo")?;
    for _ in 0..apps {
        let peers = if pinner_only { cast.pinners.clone() } else { cast.devices.clone() };
        let role = Role::App { namespace: todo.clone(), scope: world.scope_of("todo")? };
        cast.apps.push(world.add_node(role, &peers)?);
    }
    Ok(cast)
}

/// Schedules `steps` writes on random writers from t=1 s; returns when they end.
fn writes(world: &mut World, steps: u64) -> u64 {
    let mut at = 1_000;
    for _ in 0..steps {
        at += 1 + below(&mut world.rng, 2 * WRITE_EVERY_MS);
        world.at(at, Action::Write(None));
    }
    at
}

/// A world for `name`, with its agenda.
pub fn build(name: &str, config: Config) -> anyhow::Result<World> {
    let steps = config.steps;
    let (nodes, pinners, apps) = (config.nodes.max(1), config.pinners, config.apps);
    let mut world = World::new(config)?;
    match name {
        "live-push" => {
            // No periodic resync, no partition, no loss and no reordering:
            // after each session's first round, every write, grant,
            // revocation and new device reaches the others by live push
            // alone, and the rounds a responder starts when a peer's new
            // session shows what its pushes did not bring (writes made while
            // its session was down, sync.md §6). (A lost or overtaken push
            // can leave a gap that only a later round fills.)
            world.config.resync_ms = u64::MAX;
            world.net =
                crate::net::Net::new(Faults { loss: 0.0, reorder: 0.0, ..world.config.faults });
            let cast = cast(&mut world, nodes.max(2), pinners, apps.max(1), false)?;
            let end = writes(&mut world, steps);
            world.at(end / 3, Action::AddDevice);
            world.at(end / 2, Action::Revoke(cast.apps[0]));
            world.at(end + 1_000, Action::Settle);
        }
        "partition-heal" => {
            let cast = cast(&mut world, nodes.max(2), pinners, apps, false)?;
            let end = writes(&mut world, steps);
            let everyone: Vec<NodeId> = (0..world.nodes.len()).collect();
            for (from, to) in [(end / 5, 2 * end / 5), (3 * end / 5, 4 * end / 5)] {
                let cut = 1 + below(&mut world.rng, everyone.len() as u64 - 1) as usize;
                let (a, b) = everyone.split_at(cut);
                world.at(from, Action::Partition(a.to_vec(), b.to_vec()));
                world.at(to, Action::Heal);
            }
            let victim = cast.devices[below(&mut world.rng, cast.devices.len() as u64) as usize];
            world.at(end / 2, Action::Crash(victim));
            world.at(end / 2 + 3_000, Action::Restart(victim));
            world.at(end + 1_000, Action::Settle);
        }
        "revoke-during-partition" => {
            let cast = cast(&mut world, nodes.max(2), pinners, apps.max(1), false)?;
            let end = writes(&mut world, steps);
            let rest: Vec<NodeId> = (1..world.nodes.len()).collect();
            world.at(end / 4, Action::Partition(vec![0], rest));
            world.at(end / 3, Action::Revoke(cast.apps[0]));
            world.at(2 * end / 3, Action::Heal);
            world.at(end + 1_000, Action::Settle);
        }
        "device-loss" => {
            let cast = cast(&mut world, nodes.max(3), pinners, apps, false)?;
            let end = writes(&mut world, steps);
            let (crashed, lost) = (cast.devices[1], cast.devices[cast.devices.len() - 1]);
            world.at(end / 4, Action::Crash(crashed));
            world.at(end / 3, Action::Restart(crashed));
            world.at(end / 2, Action::LoseDevice(lost));
            world.at(3 * end / 5, Action::AddDevice);
            world.at(end + 1_000, Action::Settle);
        }
        "pinner-only-availability" => {
            let cast = cast(&mut world, nodes.max(2), pinners.max(1), apps, true)?;
            let end = writes(&mut world, steps);
            let pinner = cast.pinners[0];
            world.at(end / 3, Action::Crash(pinner));
            world.at(end / 3 + 2_000, Action::Restart(pinner));
            world.at(end + 1_000, Action::Settle);
        }
        "byzantine" => {
            let cast = cast(&mut world, nodes.max(2), pinners, apps.max(1), false)?;
            let end = writes(&mut world, steps);
            let rounds = 16u64;
            // Devices and pinning peers alike are attacked.
            let targets: Vec<_> = cast.devices.iter().chain(&cast.pinners).copied().collect();
            for k in 0..rounds {
                let attack = ALL[k as usize % ALL.len()];
                let target = below(&mut world.rng, targets.len() as u64) as usize;
                world.at(500 + k * end / rounds, Action::Attack(attack, targets[target]));
            }
            world.at(3 * end / 4, Action::Revoke(cast.apps[0]));
            world.at(end + 1_000, Action::Settle);
        }
        other => bail!("unknown scenario {other:?}; known: {}", NAMES.join(", ")),
    }
    Ok(world)
}
