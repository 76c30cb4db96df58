//! The `basic` command, for the end-to-end tests (the same code as the
//! node's binary: `basic::main`).

fn main() -> std::process::ExitCode {
    basic::main()
}
