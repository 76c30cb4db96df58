//! kill -9 during writes: every acknowledged write survives, and the node
//! syncs afterwards, while the other device writes and syncs all along.
//! Two rounds in the default run; `BASIC_KILL_ROUNDS=1000` makes it a soak.
//! And kill -9 in the middle of a new device's first sync: it reopens with
//! every row it showed and ends with every row, once (one kill by default,
//! `BASIC_FIRST_SYNC_KILLS=20` for a soak).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::harness::{BASIC, Data, Node, SYNC_TIMEOUT, wait_for};
use super::two_devices::{device_of, join, wait_in_sync};

/// Acknowledged writes before the kill.
const BEFORE_KILL: usize = 25;

/// Rounds of kill -9 in the default run; `BASIC_KILL_ROUNDS=1000` for the soak.
fn rounds() -> usize {
    std::env::var("BASIC_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

#[test]
fn acknowledged_writes_survive_kill_9_and_sync_afterwards() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let mut b = b_data.up(&[a.address()]);
    wait_in_sync(&b, &device_of(&a));

    // A writes and syncs all along, while B is killed again and again in
    // the middle of its own writes.
    let a_writes = Writer::start(a.url("/v0/sql"), a.token.clone(), "a");
    let mut acked_on_b = Vec::new();
    let rounds = rounds();
    for round in 0..rounds {
        let prefix = format!("b{round}-");
        let writer = Writer::start(b.url("/v0/sql"), b.token.clone(), &prefix);
        wait_for(&format!("round {round}: writes acknowledged on B"), SYNC_TIMEOUT, || {
            if let Some(ended) = writer.ended.lock().expect("ended").as_ref() {
                panic!("round {round}: B's writer stopped before the kill: {ended}");
            }
            (writer.acked.lock().expect("acked").len() >= BEFORE_KILL).then_some(())
        });
        b.kill9();
        let acked = writer.stop();
        b = b_data.up(&[a.address()]);
        let held = ids_from(&b, &prefix);
        for id in &acked {
            assert!(held.contains(id), "round {round}: acknowledged write {id} lost");
        }
        acked_on_b.extend(acked);
        if rounds > 10 && round % 10 == 9 {
            eprintln!(
                "{} rounds of kill -9, {} writes acknowledged on B",
                round + 1,
                acked_on_b.len()
            );
        }
    }
    let acked_on_a = a_writes.stop();
    eprintln!(
        "{rounds} kills; {} writes acknowledged on B, {} on A",
        acked_on_b.len(),
        acked_on_a.len()
    );

    // Still syncs: both end with every write either acknowledged.
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('after', 'After the crashes')", json!([]));
    let on_b = wait_for("A and B converge", SYNC_TIMEOUT, || {
        let (on_a, on_b) = (ids(&a), ids(&b));
        (on_a == on_b && on_a.contains(&"after".to_owned())).then_some(on_b)
    });
    let on_b: std::collections::HashSet<String> = on_b.into_iter().collect();
    for id in acked_on_a.iter().chain(&acked_on_b) {
        assert!(on_b.contains(id), "acknowledged write {id} lost");
    }
}

/// Rows on A for each kill of the first sync (one more share than kills):
/// a first sync shows its rows a group of up to 16,384 at a time, and a
/// debug build takes seconds over them.
const ROWS_PER_KILL: usize = 20_000;

#[test]
fn a_first_sync_killed_midway_reopens_and_ends_with_every_row() {
    let kills: usize =
        std::env::var("BASIC_FIRST_SYNC_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let rows = ROWS_PER_KILL * (kills + 1);
    let a_data = Data::with_todo(BASIC);
    let import = a_data.path().join("lists.jsonl");
    let export = a_data.basic(&["export"]).ok();
    let mut lines = vec![export.lines().next().expect("export header").to_owned()];
    lines.extend((0..rows).map(|i| {
        let row = json!({ "id": format!("l{i:07}"), "name": format!("List {i}") });
        json!({ "table": "todo.lists", "row": row }).to_string()
    }));
    std::fs::write(&import, lines.join("\n") + "\n").expect("import file");
    a_data.basic(&["import", &import.display().to_string()]).ok();
    let a = a_data.up(&[]);
    let on_a = ids(&a);
    assert_eq!(on_a.len(), rows);

    let b_data = join(&a);
    let mut b = b_data.up(&[a.address()]);
    let mut killed = 0;
    while killed < kills {
        // Killed once B shows more rows than before (a group visible, the
        // next ones on their way: merged, logged, flushed), after a pause
        // that differs from kill to kill.
        let before = count(&b);
        let seen = wait_for(&format!("kill {killed}: B shows more rows"), SYNC_TIMEOUT, || {
            let now = count(&b);
            (now > before).then_some(now)
        });
        if seen == rows {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(killed as u64 * 53 % 250));
        b.kill9();
        b = b_data.up(&[a.address()]);
        let reopened = b.sql(COUNT_LISTS, json!([]))["rows"][0][0].as_u64().expect("count");
        let reopened = usize::try_from(reopened).expect("count");
        assert!(
            reopened >= seen,
            "kill {killed}: B showed {seen} rows, after reopening {reopened}"
        );
        eprintln!("kill {killed}: B showed {seen} of {rows} rows; {reopened} after reopening");
        killed += 1;
        if reopened == rows {
            // It had received the rest before the kill: nothing more to show.
            break;
        }
    }
    assert!(killed > 0, "B held every row before it could be killed; raise ROWS_PER_KILL");
    wait_for("B holds every row", SYNC_TIMEOUT * 3, || (count(&b) == rows).then_some(()));
    assert_eq!(ids(&b), on_a, "B's rows after {killed} kills");
    let digest = "SELECT count(*), sum(length(name)), max(name) FROM todo.lists";
    assert_eq!(b.sql(digest, json!([]))["rows"], a.sql(digest, json!([]))["rows"]);
}

const COUNT_LISTS: &str = "SELECT count(*) FROM todo.lists";

/// The rows of `todo.lists` a node shows; 0 while the schema has not
/// reached it.
fn count(node: &Node) -> usize {
    let (status, answer) = node.sql_as(&node.token, COUNT_LISTS, json!([]));
    match status {
        200 => answer["rows"][0][0].as_u64().map_or(0, |n| n as usize),
        _ => 0,
    }
}

/// The list ids a node holds, in order.
fn ids(node: &Node) -> Vec<String> {
    ids_from(node, "")
}

/// The list ids a node holds that start with `prefix`, in order, read in
/// pages (a soak's table outgrows what one query may return).
fn ids_from(node: &Node, prefix: &str) -> Vec<String> {
    const PAGE: usize = 10_000;
    let sql = format!(
        "SELECT id FROM todo.lists WHERE id > ? AND substr(id, 1, {}) = ? ORDER BY id LIMIT {PAGE}",
        prefix.chars().count()
    );
    let mut ids: Vec<String> = Vec::new();
    loop {
        let after = ids.last().map_or("", String::as_str);
        let page = node.sql(&sql, json!([after, prefix]))["rows"].clone();
        let page = page.as_array().expect("rows");
        ids.extend(page.iter().filter_map(|r| r[0].as_str().map(str::to_owned)));
        if page.len() < PAGE {
            return ids;
        }
    }
}

/// A thread writing rows through a node's API until stopped or the node
/// dies; it keeps the ids of the writes that were acknowledged.
struct Writer {
    acked: Arc<Mutex<Vec<String>>>,
    /// Why it stopped on its own: the first answer that was not a success.
    ended: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(url: String, token: String, prefix: &str) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(Mutex::new(None));
        let thread = {
            let (acked, stop, prefix) = (Arc::clone(&acked), Arc::clone(&stop), prefix.to_owned());
            let ended = Arc::clone(&ended);
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .timeout_global(Some(std::time::Duration::from_secs(30)))
                    .build()
                    .new_agent();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("{prefix}{i:05}");
                    let body = json!({
                        "sql": "INSERT INTO todo.lists (id, name) VALUES (?, ?)",
                        "params": [id, "written"],
                    });
                    let sent = agent
                        .post(&url)
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .send(body.to_string().as_bytes());
                    let failure = match sent {
                        Ok(response) if response.status() == 200 => {
                            acked.lock().expect("acked").push(id);
                            continue;
                        }
                        Ok(mut response) => format!(
                            "{id}: {} {}",
                            response.status(),
                            response.body_mut().read_to_string().unwrap_or_default()
                        ),
                        Err(error) => format!("{id}: {error}"),
                    };
                    // The node died, or refused: nothing more is acknowledged.
                    *ended.lock().expect("ended") = Some(failure);
                    break;
                }
            })
        };
        Self { acked, ended, stop, thread }
    }

    /// Stops the writer; returns the ids of the acknowledged writes.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("writer");
        let mut acked = self.acked.lock().expect("acked");
        std::mem::take(&mut *acked)
    }
}
