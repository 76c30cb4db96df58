//! `basic-sim`: deterministic simulation of many Basic nodes.

fn main() {}
