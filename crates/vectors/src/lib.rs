//! Basic's protocol test vectors: generated here, stored as JSON under
//! `protocol-spec/vectors/`, and checked by this crate's tests.
//!
//! Every input is derived from fixed seeds, so generating twice gives the
//! same bytes. Generation also cross-checks the implementation: where a
//! vector lists intermediate steps (the x25519 agreements of a seal, say),
//! they are recomputed here from the spec's formulas with the primitives
//! directly, and generation fails if `basic-proto` disagrees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod access;
mod commits;
mod control;
pub mod errors;
pub mod json;
mod keys;
mod merge;
mod negative;
mod sealing;
mod sync;

use basic_proto::SecretKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::Value as Json;

/// One vector file: its name under `protocol-spec/vectors/` and content.
#[derive(Debug)]
pub struct VectorFile {
    /// File name, e.g. `commits.json`.
    pub name: &'static str,
    /// The vectors.
    pub content: Json,
}

impl VectorFile {
    /// The file's exact text: pretty JSON and a final newline.
    pub fn render(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.content).expect("JSON always renders");
        text.push('\n');
        text
    }
}

/// Every vector file, in a fixed order.
pub fn generate() -> Vec<VectorFile> {
    vec![
        VectorFile { name: "keys.json", content: keys::vectors() },
        VectorFile { name: "commits.json", content: commits::vectors() },
        VectorFile { name: "sealing.json", content: sealing::vectors() },
        VectorFile { name: "merge.json", content: merge::vectors() },
        VectorFile { name: "negative.json", content: negative::vectors() },
        VectorFile { name: "control.json", content: control::vectors() },
        VectorFile { name: "sync.json", content: sync::vectors() },
        VectorFile { name: "access.json", content: access::vectors() },
    ]
}

/// BLAKE3 context of the fixture seeds.
pub const FIXTURE_CONTEXT: &str = "basic/v0 test vector fixture";

/// A fixed 32-byte value named `name`.
pub fn fixture(name: &str) -> [u8; 32] {
    blake3::derive_key(FIXTURE_CONTEXT, name.as_bytes())
}

/// The principal whose seed is `fixture(name)`.
pub fn principal(name: &str) -> SecretKey {
    SecretKey::from_seed(fixture(name))
}

/// A ChaCha20 RNG seeded with `fixture(name)`.
pub fn rng(name: &str) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(fixture(name))
}
