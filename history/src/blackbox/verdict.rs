//! The result of judging a black-box history: what could be judged, what not and why, and the
//! findings.

use crate::check::{Invariant, Violation};

/// What could be judged and what was found. Findings are the checkers' own `Violation`s, so
/// they print and serialise exactly like those of an imsim history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// (invariant, what was checked).
    pub judged: Vec<(Invariant, String)>,
    /// (invariant, why it could not be judged).
    pub not_judged: Vec<(Invariant, String)>,
    pub findings: Vec<Violation>,
    pub notes: Vec<String>,
}

/// A finding, in the checkers' own violation type.
pub fn finding(invariant: Invariant, explanation: String, witness: Vec<usize>) -> Violation {
    Violation {
        invariant,
        explanation,
        witness,
    }
}
