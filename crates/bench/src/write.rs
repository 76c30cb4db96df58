//! `write`: durable local writes — parse, plan, sign, encrypt, persist,
//! flush — from 1 and from 16 concurrent writers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use basic_proto::Value;

use crate::fixture;
use crate::report::{Reporter, millis, per_second};

type Error = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Box<dyn std::error::Error>> {
    for writers in [1, 16] {
        let stats = measure(writers, duration(quick)).map_err(|e| e.to_string())?;
        reporter.result(
            "write",
            &[
                ("writers", writers.into()),
                ("commits", stats.commits.into()),
                ("commits_per_s", per_second(stats.commits as f64, stats.seconds)),
                ("p50_ms", millis(stats.p50)),
                ("p99_ms", millis(stats.p99)),
            ],
        );
    }
    Ok(())
}

/// How long each measurement writes.
pub(crate) fn duration(quick: bool) -> Duration {
    if quick { Duration::from_millis(300) } else { Duration::from_secs(5) }
}

/// Durable writes counted, and their latencies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) commits: usize,
    pub(crate) seconds: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

impl Stats {
    /// The statistics of `latencies` over `seconds`.
    pub(crate) fn of(mut latencies: Vec<Duration>, seconds: f64) -> Self {
        latencies.sort();
        let quantile = |q: f64| {
            let at = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
            latencies.get(at).copied().unwrap_or_default()
        };
        Self { commits: latencies.len(), seconds, p50: quantile(0.50), p99: quantile(0.99) }
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.commits as f64 / self.seconds
    }
}

/// `writers` threads each running single-row `INSERT`s for `duration`.
pub(crate) fn measure(writers: usize, duration: Duration) -> Result<Stats, Error> {
    let bench = fixture::open().map_err(|e| e.to_string())?;
    let db = &bench.db;
    let next_id = AtomicI64::new(0);
    let sql = "INSERT INTO bench.items (id, list_id, title, done, n) VALUES (?, ?, ?, ?, ?)";
    let start = Instant::now();
    let latencies = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<Duration>, Error> {
                    let mut latencies = Vec::new();
                    while start.elapsed() < duration {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let params = [
                            Value::Integer(id),
                            fixture::cell(id, 0),
                            fixture::cell(id, 1),
                            fixture::cell(id, 2),
                            Value::Integer(id),
                        ];
                        let began = Instant::now();
                        db.execute(sql, &params, None)?;
                        latencies.push(began.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "writer thread panicked")?)
            .collect::<Result<Vec<_>, Error>>()
    })?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(Stats::of(latencies.into_iter().flatten().collect(), seconds))
}
