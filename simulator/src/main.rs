//! `basic-sim`: many Basic nodes in one process, on virtual time, over a
//! faulty simulated network, driving the real sync state machine and the
//! real replica. Same seed, same run: the trace hash says so.

use std::process::ExitCode;
use std::time::Instant;

use basic_sim::{Config, net, run, scenario};
use clap::Parser;

/// Deterministic simulation of Basic nodes over a faulty network.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Run one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a sweep of seeds, `A..B` (B excluded).
    #[arg(long)]
    seeds: Option<String>,
    /// The scenario: live-push, partition-heal, revoke-during-partition,
    /// device-loss, pinner-only-availability, byzantine, or `all`.
    #[arg(long, default_value = "partition-heal")]
    scenario: String,
    /// Device nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// App nodes (granted the `todo` scope).
    #[arg(long, default_value_t = 1)]
    apps: usize,
    /// Pinning peers.
    #[arg(long, default_value_t = 1)]
    pinners: usize,
    /// Writes per run.
    #[arg(long, default_value_t = 40)]
    steps: u64,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.02)]
    loss: f64,
    /// Probability that a message is duplicated.
    #[arg(long, default_value_t = 0.02)]
    dup: f64,
    /// Probability that a message is held back and overtaken.
    #[arg(long, default_value_t = 0.05)]
    reorder: f64,
    /// Largest one-way delay, ms.
    #[arg(long, default_value_t = 50)]
    delay_ms: u64,
    /// One JSON object per run on stdout.
    #[arg(long)]
    json: bool,
    /// Print the whole trace to stderr.
    #[arg(long)]
    trace: bool,
}

fn parse_range(text: &str) -> anyhow::Result<std::ops::Range<u64>> {
    let (a, b) = text.split_once("..").ok_or_else(|| anyhow::anyhow!("expected A..B"))?;
    Ok(a.trim().parse()?..b.trim().parse()?)
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let seeds = match (&cli.seeds, cli.seed) {
        (Some(range), _) => parse_range(range)?,
        (None, Some(seed)) => seed..seed + 1,
        (None, None) => 0..1,
    };
    let scenarios: Vec<&str> =
        if cli.scenario == "all" { scenario::NAMES.to_vec() } else { vec![cli.scenario.as_str()] };
    let mut failed = 0u64;
    for scenario in scenarios {
        let started = Instant::now();
        let mut runs = 0u64;
        for seed in seeds.clone() {
            runs += 1;
            let config = Config {
                seed,
                nodes: cli.nodes,
                apps: cli.apps,
                pinners: cli.pinners,
                steps: cli.steps,
                faults: net::Faults {
                    loss: cli.loss,
                    dup: cli.dup,
                    reorder: cli.reorder,
                    delay_ms: cli.delay_ms,
                },
                echo: cli.trace,
                ..Config::default()
            };
            let run_started = Instant::now();
            match run(scenario, config) {
                Ok(s) => {
                    let wall = run_started.elapsed().as_millis();
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "ok": true, "scenario": s.scenario, "seed": s.seed,
                                "events": s.events, "messages": s.messages, "bytes": s.bytes,
                                "lost": s.lost, "commits": s.commits, "closed": s.closed,
                                "attacks": s.attacks, "convergence_ms": s.convergence_ms,
                                "end_ms": s.end_ms, "hash": s.hash, "wall_ms": wall,
                            })
                        );
                    } else {
                        println!(
                            "ok {} seed={} events={} msgs={} bytes={} lost={} commits={} closed={} attacks={} converged_in={}ms sim={}s wall={}ms hash={}",
                            s.scenario,
                            s.seed,
                            s.events,
                            s.messages,
                            s.bytes,
                            s.lost,
                            s.commits,
                            s.closed,
                            s.attacks,
                            s.convergence_ms,
                            s.end_ms / 1000,
                            wall,
                            &s.hash[..16]
                        );
                    }
                }
                Err(failure) => {
                    failed += 1;
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "ok": false, "scenario": scenario, "seed": failure.seed,
                                "step": failure.step, "time_ms": failure.now,
                                "invariant": failure.invariant, "detail": failure.detail,
                                "tail": failure.tail,
                            })
                        );
                    } else {
                        println!("{scenario}: {failure}");
                    }
                }
            }
        }
        if !cli.json && runs > 1 {
            println!("# {scenario}: {runs} runs in {:.1}s", started.elapsed().as_secs_f64());
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
