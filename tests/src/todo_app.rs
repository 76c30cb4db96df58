//! The example app (`examples/todo-app`), as a binary of this package.

fn main() -> std::process::ExitCode {
    todo_app::main()
}
