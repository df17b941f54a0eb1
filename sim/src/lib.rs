//! # imsim-sim: the simulator
//!
//! Runs the `imsim-model` state machines on a seeded madsim network with fault injection and
//! records the history of what every node observed; `imsim-history` judges it.
//!
//! - [`scenario`]: the TOML scenario format and its validation;
//! - [`workload`]: topology and the per-device plan, derived from the seed;
//! - [`faults`]: drawing the fault profile (swarm), the packet rules and the layer that applies
//!   them, and the schedule of crashes, restarts and partitions;
//! - `node` and [`run`]: the madsim driver and the run's two phases;
//! - [`reach`]: which coverage signals a scenario can reach;
//! - [`explicit`] and [`shrink`]: a run written out as a scripted scenario, and made small.

pub mod ceiling;
pub mod determinism;
mod discovery;
pub mod explicit;
pub mod faults;
pub mod features;
mod fields;
mod node;
mod queue;
mod queue_shared;
pub mod reach;
pub mod run;
mod runaway;
pub mod scenario;
mod shards;
pub mod shrink;
mod sync;
pub mod trace;
pub mod workload;

pub use run::{run, simulate, RunOutcome, Setup};
pub use scenario::{Scenario, ScenarioError};
