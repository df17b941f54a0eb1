//! # imsim-sim: the simulator
//!
//! Runs the `imsim-model` state machines on a seeded madsim network with fault injection, records
//! the history of what every node observed, and checks the invariants on it.
//!
//! - [`scenario`]: the TOML scenario format and its validation;
//! - [`workload`]: topology and the per-device plan, derived from the seed;
//! - [`faults`]: the fault profile (swarm or scripted) and the packet rules;
//! - [`node`] and [`run`]: the madsim driver and the run's two phases;
//! - [`history`]: what a run records; [`check`]: the invariants over it;
//! - [`explicit`] and [`shrink`]: a run written out as a scripted scenario, and made small.

pub mod ceiling;
pub mod check;
pub mod coverage;
pub mod determinism;
pub mod explicit;
pub mod faults;
pub mod history;
pub mod history_reader;
pub mod large_history;
mod node;
pub mod run;
pub mod scenario;
pub mod shrink;
pub mod trace;
pub mod workload;

pub use check::{check_all, Class, Invariant, Violation};
pub use history::History;
pub use node::PacketStats;
pub use run::{replay_command, run, simulate, RunOutcome, RunStats, Setup};
pub use scenario::{Scenario, ScenarioError};
