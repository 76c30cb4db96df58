//! The `basic` command.

fn main() -> std::process::ExitCode {
    basic::main()
}
