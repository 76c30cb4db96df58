//! The `basic` command.

fn main() {}
