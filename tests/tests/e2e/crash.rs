//! kill -9 during writes: every acknowledged write survives, and the node
//! syncs afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::harness::{Data, SYNC_TIMEOUT, wait_for};
use super::two_devices::{device_of, join, wait_in_sync};

/// Acknowledged writes before the kill.
const BEFORE_KILL: usize = 25;

#[test]
fn acknowledged_writes_survive_kill_9_and_sync_afterwards() {
    let a_data = Data::with_todo();
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let mut b = b_data.up(&[a.address()]);
    wait_in_sync(&b, &device_of(&a));

    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        let (url, token) = (b.url("/v0/sql"), b.token.clone());
        std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(std::time::Duration::from_secs(5)))
                .build()
                .new_agent();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = json!({
                    "sql": "INSERT INTO todo.lists (id, name) VALUES (?, ?)",
                    "params": [format!("w{i:05}"), "written"],
                });
                let sent = agent
                    .post(&url)
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .send(body.to_string().as_bytes());
                match sent {
                    Ok(response) if response.status() == 200 => {
                        acked.lock().expect("acked").push(i);
                    }
                    // The node died: nothing more can be acknowledged.
                    _ => break,
                }
            }
        })
    };
    wait_for("writes acknowledged", SYNC_TIMEOUT, || {
        (acked.lock().expect("acked").len() >= BEFORE_KILL).then_some(())
    });
    b.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let acked = acked.lock().expect("acked").clone();
    eprintln!("{} writes acknowledged before kill -9", acked.len());

    let b = b_data.up(&[a.address()]);
    let held = b.rows("SELECT id FROM todo.lists ORDER BY id");
    let held: Vec<&str> =
        held.as_array().expect("rows").iter().filter_map(|r| r[0].as_str()).collect();
    for i in &acked {
        assert!(held.contains(&format!("w{i:05}").as_str()), "acknowledged write {i} lost");
    }
    // Still syncs: A gets everything B holds, and B's new write.
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('after', 'After the crash')", json!([]));
    let on_b = b.rows("SELECT id FROM todo.lists ORDER BY id");
    a.wait_rows("SELECT id FROM todo.lists ORDER BY id", &on_b);
}
