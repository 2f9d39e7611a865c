//! Integration tests: restash over real HTTP against real Redis processes.

mod bad_input;
mod cache;
mod cluster;
mod contract;
mod deploy;
mod failover;
mod faults;
mod harness;
mod multiplexer;
mod mux_faults;
mod process;
mod protocol;
mod pubsub;
mod sdk;
mod sharded_pubsub;
mod tenancy;
mod transports;
