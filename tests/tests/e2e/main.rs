//! End-to-end tests: real `basic` processes on loopback, each in temp
//! directories, each wait bounded, every child killed when its test ends.

mod access;
mod apps;
mod bad_input;
mod client;
mod crash;
mod faults;
mod harness;
mod netns;
mod pinner;
mod recover;
mod relay;
mod removed;
mod rollback;
mod two_devices;
