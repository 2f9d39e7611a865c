//! Integration tests: restash over real HTTP against real Redis processes.

mod bad_input;
mod cluster;
mod failover;
mod harness;
mod process;
mod protocol;
mod sdk;
mod transports;
