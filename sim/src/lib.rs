//! # imsim-sim: the simulator
//!
//! Runs the `imsim-model` state machines on a seeded madsim network with fault injection, records
//! the history of what every node observed, and checks the invariants on it.

pub mod check;
pub mod faults;
pub mod history;
