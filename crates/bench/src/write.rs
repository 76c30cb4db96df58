//! `write`: durable local writes — parse, plan, sign, encrypt, persist,
//! flush — from 1 and from 16 concurrent writers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use basic_proto::Value;

use crate::fixture;
use crate::report::{Reporter, millis, per_second};

type Error = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Box<dyn std::error::Error>> {
    let duration = if quick { Duration::from_millis(300) } else { Duration::from_secs(5) };
    for writers in [1, 16] {
        measure(reporter, writers, duration).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn measure(reporter: &Reporter, writers: usize, duration: Duration) -> Result<(), Error> {
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
    let mut all: Vec<Duration> = latencies.into_iter().flatten().collect();
    all.sort();
    let quantile = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    reporter.result(
        "write",
        &[
            ("writers", writers.into()),
            ("commits", all.len().into()),
            ("commits_per_s", per_second(all.len() as f64, seconds)),
            ("p50_ms", millis(quantile(0.50))),
            ("p99_ms", millis(quantile(0.99))),
        ],
    );
    Ok(())
}
