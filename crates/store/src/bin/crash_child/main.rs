//! The writer that `crates/store/tests/store/crash.rs` kills with `kill -9`, over
//! and over (see that test's module doc); `move_crash.rs` kills it while it
//! opens a replica that sled kept, so while it moves it into redb. Not a
//! tool: a helper process of the tests, which find it through
//! `CARGO_BIN_EXE_crash_child`.
//!
//! ```text
//! crash_child DIR ROUND SEED
//! ```
//!
//! Opens the database in DIR and writes from [`WRITERS`] threads until it
//! is killed: inserts of fresh rows, updates and deletes of its own earlier
//! rows, re-inserts of deleted ones (so generations move past 1 and 2), and
//! now and then an update of every row's priority.
//! It prints `ready` once the database is open, then, around every write,
//! `begin …` before calling `execute` and `ack … COMMITS` once it returned
//! `Ok`: a write acknowledged to its caller, which must be on disk. ROUND
//! makes its row ids unique; SEED drives its choice of writes.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use basic_proto::{Name, Value};
use basic_store::{Database, Executed, Schema};

mod protocol;

use protocol::{Op, Rng};

/// Writer threads.
const WRITERS: u64 = 4;
/// A writer thread's pause before each write. Unoptimized, checking the
/// signatures of what a child wrote at full speed would take the parent
/// several times longer than the writing did.
const PAUSE_MS: std::ops::Range<u64> = if cfg!(debug_assertions) { 0..30 } else { 0..1 };
/// Live rows a writer thread keeps at most; past it, it only updates and
/// deletes.
const LIVE_PER_WRITER: usize = 100;
/// One write in this many updates every row ([`Op::Bump`]).
const BUMP_ONE_IN: u64 = 40;
/// The child stops writing on its own after this long, in case its parent died.
const LIFETIME: Duration = Duration::from_secs(120);

/// Prints one protocol line and flushes it into the pipe, so that it
/// reaches the parent even if the process is killed right after. The line
/// goes out in one `write`; the parent ignores a torn last line anyway.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes()).expect("stdout is the parent's pipe");
    out.flush().expect("stdout is the parent's pipe");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, round, seed] = args.as_slice() else {
        panic!("usage: crash_child DIR ROUND SEED");
    };
    let round: u64 = round.parse().expect("ROUND is a number");
    let seed: u64 = seed.parse().expect("SEED is a number");
    let db = Database::open(Path::new(dir)).expect("the database opens");
    let items = Name::new("todo.items").expect("a valid name");
    if db.catalog().table(&items).is_none() {
        let examples = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
        let schema = Schema::from_file(examples.join("todo.toml")).expect("the todo schema");
        db.apply_schema(schema).expect("the schema applies");
    }
    db.execute("INSERT OR IGNORE INTO lists (id, name) VALUES ('l', 'L')", &[], None)
        .expect("the list is written");
    // Rows left by earlier rounds, shared out among the threads: updates
    // and deletes reach across restarts.
    let mut inherited: Vec<Vec<(String, u64)>> = vec![Vec::new(); WRITERS as usize];
    let found = db.query("SELECT id, title FROM items ORDER BY id", &[], None).expect("a query");
    for (i, row) in found.rows.iter().enumerate() {
        let [Value::Text(id), Value::Text(title)] = row.as_slice() else { panic!("{row:?}") };
        let version = title.strip_prefix(&format!("{id}v")).and_then(|v| v.parse().ok());
        let version = version.unwrap_or_else(|| panic!("title {title} of {id}"));
        inherited[i % WRITERS as usize].push((id.clone(), version));
    }
    say("ready");
    let stop = Instant::now() + LIFETIME;
    std::thread::scope(|scope| {
        for (thread, rows) in (0..WRITERS).zip(inherited) {
            let db = &db;
            let mut rng = Rng(seed ^ thread.wrapping_mul(0x2545_f491_4f6c_dd1d));
            scope.spawn(move || writer(db, round, thread, rows, &mut rng, stop));
        }
    });
}

/// One writer thread: rows it owns, one write at a time.
fn writer(
    db: &Database,
    round: u64,
    thread: u64,
    mut live: Vec<(String, u64)>,
    rng: &mut Rng,
    stop: Instant,
) {
    // Rows of this thread, live and deleted: id and the version of its
    // last title, so that every title written to a row is new.
    let mut dead: Vec<(String, u64)> = Vec::new();
    let mut fresh = 0;
    while Instant::now() < stop {
        let pause = rng.range(PAUSE_MS);
        if pause > 0 {
            std::thread::sleep(Duration::from_millis(pause));
        }
        let choice = match live.len() {
            0 => 0,
            // Keep queries of all rows small however long the soak.
            n if n >= LIVE_PER_WRITER => rng.range(4..8),
            _ => rng.below(10),
        };
        let op = match choice {
            _ if rng.below(BUMP_ONE_IN) == 0 => Op::Bump,
            4 | 5 => {
                let at = rng.below(live.len() as u64) as usize;
                let row = &mut live[at];
                row.1 += 1;
                Op::Update { id: row.0.clone(), title: format!("{}v{}", row.0, row.1) }
            }
            6 | 7 => {
                let (id, version) = live.swap_remove(rng.below(live.len() as u64) as usize);
                dead.push((id.clone(), version));
                Op::Delete { id }
            }
            8 | 9 if !dead.is_empty() => {
                let (id, version) = dead.swap_remove(rng.below(dead.len() as u64) as usize);
                live.push((id.clone(), version + 1));
                Op::Insert { title: format!("{id}v{}", version + 1), id }
            }
            _ => {
                let id = format!("r{round}t{thread}n{fresh}");
                fresh += 1;
                live.push((id.clone(), 0));
                Op::Insert { title: format!("{id}v0"), id }
            }
        };
        say(&format!("begin {op}"));
        let text = |s: &str| Value::Text(s.into());
        let result = match &op {
            Op::Insert { id, title } => db.execute(
                "INSERT INTO items (id, list, title) VALUES (?, 'l', ?)",
                &[text(id), text(title)],
                None,
            ),
            Op::Update { id, title } => db.execute(
                "UPDATE items SET title = ?, priority = priority + 1 WHERE id = ?",
                &[text(title), text(id)],
                None,
            ),
            Op::Delete { id } => db.execute("DELETE FROM items WHERE id = ?", &[text(id)], None),
            Op::Bump => db.execute("UPDATE items SET priority = priority + 1", &[], None),
        };
        match result {
            Ok(Executed::Written(outcome))
                if outcome.rows_affected == 1 || matches!(op, Op::Bump) =>
            {
                let commits: Vec<String> = outcome.commits.iter().map(|c| c.to_string()).collect();
                // "-": a bump of an empty table writes no commit.
                let commits = if commits.is_empty() { "-".to_owned() } else { commits.join(",") };
                say(&format!("ack {op} {commits}"));
            }
            other => {
                say(&format!("error {op}: {other:?}"));
                panic!("{op}: {other:?}");
            }
        }
    }
}
