//! `basic-vectors`: writes the protocol test vectors to `protocol-spec/vectors/`.
//!
//! Usage: `cargo run -p basic-vectors [-- --check]`. With `--check`, writes
//! nothing and exits non-zero if any file differs from what would be written.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(_) => {
            eprintln!(
                "usage: basic-vectors [--check]\n\nWrites protocol-spec/vectors/*.json; --check compares instead."
            );
            return ExitCode::from(2);
        }
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/vectors");
    let mut stale = 0;
    for file in basic_vectors::generate() {
        let path = dir.join(file.name);
        let text = file.render();
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == text {
            println!("unchanged {}", path.display());
        } else if check {
            println!("differs   {}", path.display());
            stale += 1;
        } else if let Err(e) = std::fs::write(&path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote     {}", path.display());
        }
    }
    if stale > 0 {
        eprintln!("{stale} vector file(s) out of date: run `cargo run -p basic-vectors`");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
