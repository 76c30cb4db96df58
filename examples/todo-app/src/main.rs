//! The `todo-app` binary: see the library.

fn main() -> std::process::ExitCode {
    todo_app::main()
}
