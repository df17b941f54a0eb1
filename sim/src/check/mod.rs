//! Checkers: each reads only the history and returns the violations it finds. One file per
//! invariant family (DESIGN.md §6); names and codes are stable, reports and tests use them.

mod durability;
mod exactly_once;
mod groups;
mod index;
mod multi_device;
mod ordering;
mod periods;
mod presence;
mod receipts;
#[cfg(test)]
mod testkit;

pub use index::HistoryIndex;

use crate::history::History;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Safety properties must hold at every point of every run ("always"); liveness properties must
/// hold once faults are healed and the quiet period has passed ("eventually").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Safety,
    Liveness,
}

/// Every invariant this crate checks, with its stable code and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Invariant {
    O1SeqMonotonic,
    O2DisplayOrder,
    O3SenderFifo,
    O4Agreement,
    E1NoDuplicateDisplay,
    E2IdempotentCommit,
    E3NoPhantom,
    D1AckedIsDurable,
    D2EventualDelivery,
    D3CursorContiguous,
    D4NoSilentLoss,
    G1MemberOnlyDelivery,
    G2MemberOnlySend,
    R1WatermarkMonotonic,
    R2ReadLeDelivered,
    R3ReadAfterDisplay,
    R4GroupReadCount,
    P1PresenceConverges,
    P2OfflineDetectedInTime,
    P3PresenceFanoutBounded,
    M1DevicesConverge,
    M2ReadStateConverges,
    M3CursorMonotonic,
}

impl Invariant {
    pub const ALL: [Invariant; 23] = [
        Invariant::O1SeqMonotonic,
        Invariant::O2DisplayOrder,
        Invariant::O3SenderFifo,
        Invariant::O4Agreement,
        Invariant::E1NoDuplicateDisplay,
        Invariant::E2IdempotentCommit,
        Invariant::E3NoPhantom,
        Invariant::D1AckedIsDurable,
        Invariant::D2EventualDelivery,
        Invariant::D3CursorContiguous,
        Invariant::D4NoSilentLoss,
        Invariant::G1MemberOnlyDelivery,
        Invariant::G2MemberOnlySend,
        Invariant::R1WatermarkMonotonic,
        Invariant::R2ReadLeDelivered,
        Invariant::R3ReadAfterDisplay,
        Invariant::R4GroupReadCount,
        Invariant::P1PresenceConverges,
        Invariant::P2OfflineDetectedInTime,
        Invariant::P3PresenceFanoutBounded,
        Invariant::M1DevicesConverge,
        Invariant::M2ReadStateConverges,
        Invariant::M3CursorMonotonic,
    ];

    /// The short code, e.g. `O1`.
    pub fn code(self) -> &'static str {
        self.label().0
    }

    /// The stable name, e.g. `seq-monotonic`.
    pub fn name(self) -> &'static str {
        self.label().1
    }

    pub fn class(self) -> Class {
        match self {
            Invariant::D2EventualDelivery
            | Invariant::D4NoSilentLoss
            | Invariant::P1PresenceConverges
            | Invariant::M1DevicesConverge
            | Invariant::M2ReadStateConverges => Class::Liveness,
            _ => Class::Safety,
        }
    }

    fn label(self) -> (&'static str, &'static str) {
        match self {
            Invariant::O1SeqMonotonic => ("O1", "seq-monotonic"),
            Invariant::O2DisplayOrder => ("O2", "display-order"),
            Invariant::O3SenderFifo => ("O3", "sender-fifo"),
            Invariant::O4Agreement => ("O4", "agreement"),
            Invariant::E1NoDuplicateDisplay => ("E1", "no-duplicate-display"),
            Invariant::E2IdempotentCommit => ("E2", "idempotent-commit"),
            Invariant::E3NoPhantom => ("E3", "no-phantom"),
            Invariant::D1AckedIsDurable => ("D1", "acked-is-durable"),
            Invariant::D2EventualDelivery => ("D2", "eventual-delivery"),
            Invariant::D3CursorContiguous => ("D3", "cursor-contiguous"),
            Invariant::D4NoSilentLoss => ("D4", "no-silent-loss"),
            Invariant::G1MemberOnlyDelivery => ("G1", "member-only-delivery"),
            Invariant::G2MemberOnlySend => ("G2", "member-only-send"),
            Invariant::R1WatermarkMonotonic => ("R1", "watermark-monotonic"),
            Invariant::R2ReadLeDelivered => ("R2", "read-le-delivered"),
            Invariant::R3ReadAfterDisplay => ("R3", "read-after-display"),
            Invariant::R4GroupReadCount => ("R4", "group-read-count"),
            Invariant::P1PresenceConverges => ("P1", "presence-converges"),
            Invariant::P2OfflineDetectedInTime => ("P2", "offline-detected-in-time"),
            Invariant::P3PresenceFanoutBounded => ("P3", "presence-fanout-bounded"),
            Invariant::M1DevicesConverge => ("M1", "devices-converge"),
            Invariant::M2ReadStateConverges => ("M2", "read-state-converges"),
            Invariant::M3CursorMonotonic => ("M3", "cursor-monotonic"),
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// One broken invariant, with the few history records that prove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    /// One or two sentences a person can act on.
    pub explanation: String,
    /// Indices into `History::records`, in history order: the minimal witness.
    pub witness: Vec<usize>,
}

impl Violation {
    pub fn class(&self) -> Class {
        self.invariant.class()
    }
}

/// Runs every checker. Safety violations come first, then liveness, each in invariant order.
/// Liveness invariants are only judged on a complete history (one with `RunEnded`).
pub fn check_all(history: &History) -> Vec<Violation> {
    let index = HistoryIndex::new(history);
    let mut violations = Vec::new();
    violations.extend(ordering::check(history, &index));
    violations.extend(exactly_once::check(history, &index));
    violations.extend(durability::check(history, &index));
    violations.extend(groups::check(history, &index));
    violations.extend(receipts::check(history, &index));
    violations.extend(presence::check(history, &index));
    violations.extend(multi_device::check(history, &index));
    if !history.is_complete() {
        violations.retain(|violation| violation.class() == Class::Safety);
    }
    violations.sort_by_key(|violation| (violation.class(), violation.invariant));
    violations
}
