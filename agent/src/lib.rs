//! faultline-agent: injects network faults into its own host's kernel and reverts
//! them on time, even after a crash.

pub mod containers;
pub mod engine;
pub mod fault;
#[cfg(test)]
mod fuzz_tests;
pub mod journal;
pub mod kernel;
pub mod metrics;
pub mod otlp;
pub mod pods;
pub mod process;
pub mod server;
pub mod session;
