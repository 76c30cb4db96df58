//! The `basic` command.

/// mimalloc rather than the system's allocator: the writer's row states
/// are many small allocations (D44).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    basic::without_huge_pages();
    basic::private_files();
    basic::main()
}
