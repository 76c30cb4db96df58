//! `ingest`: commits from 4 other authors, already signed and encrypted,
//! verified, decrypted, merged and persisted — against the cost of the
//! cryptography alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use basic_proto::{Commit, PublicKey, SigningContext};
use basic_store::IngestError;

use crate::fixture;
use crate::report::{Reporter, per_second, rounded};

type Error = Box<dyn std::error::Error>;

/// Bytes of commits handed to the database at once, as one sync batch.
const BATCH_BYTES: usize = 256 << 10;
/// Threads handing batches to the database (and verifying them).
pub(crate) const FEEDERS: usize = 2;

/// Wall-clock and CPU seconds of some work; the CPU of every thread of
/// this process (the database's own threads included), so that a figure
/// can be compared with its anchor's however busy the machine is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Took {
    pub(crate) wall: f64,
    pub(crate) cpu: f64,
}

impl Took {
    /// Runs `work` and times it.
    pub(crate) fn of<T>(work: impl FnOnce() -> T) -> (T, Self) {
        let (cpu, start) = (process_cpu_seconds(), Instant::now());
        let out = work();
        (out, Self { wall: start.elapsed().as_secs_f64(), cpu: process_cpu_seconds() - cpu })
    }
}

fn process_cpu_seconds() -> f64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let scale = if quick { 20 } else { 1 };
    measure(reporter, 1, 1, 40_000 / scale)?;
    measure(reporter, 10, 10, 4_000 / scale)?;
    Ok(())
}

fn measure(
    reporter: &Reporter,
    rows: i64,
    cells_per_row: usize,
    commits: usize,
) -> Result<(), Error> {
    let cells_per_commit = rows as usize * cells_per_row;
    let bench = fixture::open()?;
    reporter.note(&format!("ingest: preparing {commits} commits of {cells_per_commit} cells"));
    let signed = fixture::foreign_commits(&bench.db, &bench.key, commits, rows, cells_per_row);
    let encoded: Vec<Vec<u8>> = signed.iter().map(|c| c.as_bytes().to_vec()).collect();
    let cells = (commits * cells_per_commit) as f64;

    let crypto = crypto_only(&signed, &bench.key, FEEDERS, Verifier::Reference)?;
    let (batch, took) = feed(&bench.db, &encoded)?;

    let cells_per_s = cells / took.wall;
    let limit = cells / crypto.wall;
    reporter.result(
        "ingest",
        &[
            ("cells_per_commit", cells_per_commit.into()),
            ("commits", commits.into()),
            ("batch_commits", batch.into()),
            ("feeders", FEEDERS.into()),
            ("cells_per_s", per_second(cells, took.wall)),
            ("crypto_limit_cells_per_s", per_second(cells, crypto.wall)),
            ("crypto_threads", FEEDERS.into()),
            ("ratio", ((cells_per_s / limit * 1000.0).round() / 1000.0).into()),
            ("cpu_us_per_commit", rounded(took.cpu / commits as f64 * 1e6)),
            ("crypto_cpu_us_per_commit", rounded(crypto.cpu / commits as f64 * 1e6)),
        ],
    );
    Ok(())
}

/// Hands `encoded` commits to the database in batches of [`BATCH_BYTES`]
/// from [`FEEDERS`] threads, as two peers syncing at once (or one sync
/// session that verifies its next batch while the last one is written):
/// verification of one batch overlaps the writer's work on another.
/// Returns the commits per batch and the time it took.
pub(crate) fn feed(
    db: &basic_store::Database,
    encoded: &[Vec<u8>],
) -> Result<(usize, Took), Error> {
    let batch = (BATCH_BYTES / encoded.first().map_or(1, Vec::len).max(1)).max(1);
    let chunks: Vec<&[Vec<u8>]> = encoded.chunks(batch).collect();
    let next = AtomicUsize::new(0);
    let (fed, took) = Took::of(|| {
        std::thread::scope(|scope| -> Result<(), String> {
            let feeders: Vec<_> = (0..FEEDERS)
                .map(|_| {
                    scope.spawn(|| -> Result<(), String> {
                        while let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
                            for result in db.ingest(chunk).map_err(|e| e.to_string())? {
                                result.map_err(|e: IngestError| {
                                    format!("ingest refused a commit: {e}")
                                })?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            feeders
                .into_iter()
                .try_for_each(|f| f.join().map_err(|_| "feeder panicked".to_string())?)
        })
    });
    fed?;
    Ok((batch, took))
}

/// Whose implementation of strict verification (`crypto.md` §3.3) a
/// crypto limit times.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Verifier {
    /// ed25519-dalek's `verify_strict`, the rule's reference: what an
    /// application verifying these signatures would call.
    Reference,
    /// Basic's own, as its ingest verifies: the same rule, without decoding
    /// R, [`basic_store::VERIFIED_TOGETHER`] signatures at a time with one
    /// field inversion between them (`PublicKey::verify_each`).
    Basic,
}

/// The time to strictly verify and decrypt every commit, and nothing else,
/// on `threads` threads (as many as the ingest uses, for a fair ratio).
pub(crate) fn crypto_only(
    commits: &[Commit],
    key: &basic_proto::ScopeKey,
    threads: usize,
    verifier: Verifier,
) -> Result<Took, Error> {
    let prepared = commits
        .iter()
        .map(|commit| {
            let author = commit.header().author;
            let message = commit.signed_message();
            Ok(Prepared {
                reference: ed25519_dalek::VerifyingKey::from_bytes(author.as_bytes())?,
                // The reference's input whole, made before the timing starts.
                signed: SigningContext::Commit.signed_bytes(&message),
                signature: ed25519_dalek::Signature::from_bytes(commit.signature()),
                author,
                message,
                commit,
            })
        })
        .collect::<Result<Vec<_>, ed25519_dalek::SignatureError>>()?;
    let share = prepared.len().div_ceil(threads.max(1)).max(1);
    let (verified, took) = Took::of(|| {
        std::thread::scope(|scope| -> Result<(), String> {
            let workers: Vec<_> = prepared
                .chunks(share)
                .map(|part| {
                    scope.spawn(move || -> Result<(), String> {
                        for group in part.chunks(basic_store::VERIFIED_TOGETHER) {
                            if let Verifier::Basic = verifier {
                                verify_together(group)?;
                            }
                            for one in group {
                                if let Verifier::Reference = verifier {
                                    (one.reference)
                                        .verify_strict(&one.signed, &one.signature)
                                        .map_err(|e| e.to_string())?;
                                }
                                let commit = one.commit;
                                let nonce = &commit.header().nonce;
                                key.decrypt(nonce, commit.header_bytes(), commit.ciphertext())
                                    .ok_or("decrypt failed")?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().map_err(|_| "worker panicked".to_string())?)
        })
    });
    verified?;
    Ok(took)
}

/// A commit made ready for [`crypto_only`] before its timing starts.
struct Prepared<'c> {
    author: PublicKey,
    /// What Basic's verification hashes after the context's label.
    message: Vec<u8>,
    reference: ed25519_dalek::VerifyingKey,
    /// What the reference verifies: the label, a zero byte, the message.
    signed: Vec<u8>,
    signature: ed25519_dalek::Signature,
    commit: &'c Commit,
}

/// Basic's verification of a group of prepared commits, as its ingest
/// verifies them.
fn verify_together(group: &[Prepared<'_>]) -> Result<(), String> {
    let parts: Vec<[&[u8]; 1]> = group.iter().map(|one| [&one.message[..]]).collect();
    let signed = group.iter().zip(&parts);
    let holds = PublicKey::verify_each(
        SigningContext::Commit,
        signed.map(|(one, parts)| (&one.author, &parts[..], one.commit.signature())),
    );
    match holds.contains(&false) {
        true => Err("a signature failed".into()),
        false => Ok(()),
    }
}
