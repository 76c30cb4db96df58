//! Which app made which writes through the API.
//!
//! The node writes on an app's behalf as this device (the store signs
//! local writes with the device key), so the commits themselves do not name
//! the app. This record does: one JSON line per write, appended and flushed
//! before the write is acknowledged to the app.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use anyhow::Context;
use basic_proto::{CommitId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::tokens::app_id;

/// One write: the app, when, and its commits.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    app: String,
    at_ms: u64,
    commits: Vec<String>,
}

/// What an app wrote through the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppWriteCount {
    /// Write statements that changed something.
    pub writes: u64,
    /// Commits they made.
    pub commits: u64,
}

/// The append-only record of app writes (`app-writes.jsonl`).
#[derive(Debug)]
pub struct AppWrites {
    path: PathBuf,
    append: Mutex<()>,
}

impl AppWrites {
    /// The record at `path` (made on the first write).
    pub fn new(path: PathBuf) -> Self {
        Self { path, append: Mutex::new(()) }
    }

    /// Records that `app` made `commits`, durably.
    pub fn record(&self, app: &PublicKey, commits: &[CommitId], at_ms: u64) -> anyhow::Result<()> {
        let line = Line {
            app: app_id(app),
            at_ms,
            commits: commits.iter().map(ToString::to_string).collect(),
        };
        let mut text = serde_json::to_string(&line)?;
        text.push('\n');
        let _guard = self.append.lock().unwrap_or_else(PoisonError::into_inner);
        let context = || format!("cannot record the write in {}", self.path.display());
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(context)?;
        file.write_all(text.as_bytes()).with_context(context)?;
        file.sync_data().with_context(context)
    }

    /// Writes and commits per app (by principal id). Unreadable lines (a
    /// torn last line after a crash) are skipped.
    pub fn counts(&self) -> anyhow::Result<BTreeMap<String, AppWriteCount>> {
        let mut counts: BTreeMap<String, AppWriteCount> = BTreeMap::new();
        let file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(counts),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        for text in std::io::BufReader::new(file).lines() {
            let text = text.with_context(|| format!("cannot read {}", self.path.display()))?;
            let Ok(line) = serde_json::from_str::<Line>(&text) else { continue };
            let count = counts.entry(line.app).or_default();
            count.writes += 1;
            count.commits += line.commits.len() as u64;
        }
        Ok(counts)
    }
}
