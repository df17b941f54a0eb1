//! # imsim-history: the record and its verdict
//!
//! A history is the contract between whatever ran a protocol (the madsim simulator, a live run,
//! another vendor's server seen from its clients) and the verdict: every event each device and
//! server observed, as JSON lines. This crate holds everything that needs only a history:
//!
//! - [`record`]: the record types, the JSON-lines writer and the trace hash; [`reader`]: the
//!   strict reader that names the line and field of every problem;
//! - [`faults`]: the fault profile a history carries;
//! - [`check`]: every invariant, one file per family, as one table;
//! - [`coverage`]: the coverage signals ("sometimes" properties), counted from the history;
//! - [`stats`]: the figures of a run, each with one definition; [`traffic`]: what the run
//!   cost (packets, writes) and the budget it must stay in;
//! - [`divergence`]: where two histories of one seed first differ.
//!
//! No madsim, no tokio, no randomness: `cargo tree -p imsim-history` shows the model and serde.

pub mod blackbox;
pub mod category;
pub mod check;
pub mod coverage;
pub mod divergence;
pub mod excerpt;
pub mod faults;
pub mod large_history;
pub mod reader;
pub mod record;
pub mod stats;
pub mod traffic;

pub use check::{check_all, Class, Invariant, Violation};
pub use record::*;

use imsim_model::Variant;

/// The exact command that reproduces a simulated run (with `--variant` when the protocol is a
/// broken one). `scenario_ref` is how the user named the scenario (a path or a shipped name).
pub fn replay_command(scenario_ref: &str, seed: u64, variant: Variant) -> String {
    match variant {
        Variant::Correct => format!("imsim replay {scenario_ref} --seed {seed}"),
        variant => format!("imsim replay {scenario_ref} --seed {seed} --variant {variant}"),
    }
}
