//! Checkers: each reads only the history and returns the violations it finds. One file per
//! invariant family (DESIGN.md §6); names and codes are stable, reports and tests use them.

mod cluster;
mod cost;
mod durability;
mod exactly_once;
mod groups;
mod index;
pub mod judged;
mod multi_device;
mod ordering;
mod paths;
mod periods;
mod presence;
mod receipts;
#[cfg(test)]
mod testkit;
mod timeliness;
mod validity;

pub use index::HistoryIndex;

use crate::History;
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

/// The invariant families of DESIGN.md §6, one checker file each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Ordering,
    ExactlyOnce,
    Durability,
    Groups,
    Receipts,
    Presence,
    MultiDevice,
    Timeliness,
    Cost,
    Validity,
}

/// `Variant = "code", "name", Family, Class, "one-line definition";` for each invariant, in
/// report order. Registering an invariant is one row here and its check in its family's file.
macro_rules! invariants {
    ($($variant:ident = $code:literal, $name:literal, $family:ident, $class:ident, $definition:literal;)*) => {
        /// Every invariant this crate checks, with its stable code and name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Invariant {
            $($variant,)*
        }

        impl Invariant {
            pub const ALL: &'static [Invariant] = &[$(Invariant::$variant,)*];

            /// The short code, e.g. `O1`.
            pub fn code(self) -> &'static str {
                match self {
                    $(Invariant::$variant => $code,)*
                }
            }

            /// The stable name, e.g. `seq-monotonic`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Invariant::$variant => $name,)*
                }
            }

            pub fn family(self) -> Family {
                match self {
                    $(Invariant::$variant => Family::$family,)*
                }
            }

            pub fn class(self) -> Class {
                match self {
                    $(Invariant::$variant => Class::$class,)*
                }
            }

            /// What must hold, in one line.
            pub fn definition(self) -> &'static str {
                match self {
                    $(Invariant::$variant => $definition,)*
                }
            }
        }
    };
}

invariants! {
    O1SeqMonotonic = "O1", "seq-monotonic", Ordering, Safety,
        "per conversation, committed seqs are unique and strictly increasing, across crashes";
    O2DisplayOrder = "O2", "display-order", Ordering, Safety,
        "a device displays a conversation in increasing seq, a contiguous run of the timeline";
    O3SenderFifo = "O3", "sender-fifo", Ordering, Safety,
        "a device's messages in one conversation commit in the order it sent them";
    O4Agreement = "O4", "agreement", Ordering, Safety,
        "any two devices order any two shared messages the same way";
    E1NoDuplicateDisplay = "E1", "no-duplicate-display", ExactlyOnce, Safety,
        "no device displays the same message twice";
    E2IdempotentCommit = "E2", "idempotent-commit", ExactlyOnce, Safety,
        "at most one committed message per (device, client_msg_id)";
    E3NoPhantom = "E3", "no-phantom", ExactlyOnce, Safety,
        "every displayed message was sent by its claimed sender with that content";
    D1AckedIsDurable = "D1", "acked-is-durable", Durability, Safety,
        "a message acked to its sender is in the timeline after any crash";
    D2EventualDelivery = "D2", "eventual-delivery", Durability, Liveness,
        "after the quiet period every member device displayed every committed message";
    D3CursorContiguous = "D3", "cursor-contiguous", Durability, Safety,
        "a device's cursor never skips a seq it has not displayed";
    D4NoSilentLoss = "D4", "no-silent-loss", Durability, Liveness,
        "a message that never commits ends in a failure its sender saw";
    D5SendResolves = "D5", "send-resolves", Durability, Liveness,
        "every send ends acked or visibly failed on the device that sent it";
    D6StoredOnce = "D6", "stored-once", Durability, Safety,
        "the final durable timeline holds each message once, and each seq once";
    G1MemberOnlyDelivery = "G1", "member-only-delivery", Groups, Safety,
        "a device displays a group message only if its user was a member at its seq";
    G2MemberOnlySend = "G2", "member-only-send", Groups, Safety,
        "a send from a non-member is rejected and never committed";
    V1LimitsEnforced = "V1", "limits-enforced", Validity, Safety,
        "a send over the protocol's limits is refused, and one within them is not refused as too large";
    R1WatermarkMonotonic = "R1", "watermark-monotonic", Receipts, Safety,
        "read watermarks never decrease, at the server or at any observer";
    R2ReadLeDelivered = "R2", "read-le-delivered", Receipts, Safety,
        "read <= received <= the highest committed seq, per user and conversation";
    R3ReadAfterDisplay = "R3", "read-after-display", Receipts, Safety,
        "a read of a message is recorded only after a device of the reader displayed it";
    R4GroupReadCount = "R4", "group-read-count", Receipts, Safety,
        "a group message's read count never exceeds its readers and converges to them";
    P1PresenceConverges = "P1", "presence-converges", Presence, Liveness,
        "after the quiet period every observer shows every subject's true status";
    P2OfflineDetectedInTime = "P2", "offline-detected-in-time", Presence, Safety,
        "a user whose devices all stopped is shown offline within the timeout bound";
    P3PresenceFanoutBounded = "P3", "presence-fanout-bounded", Presence, Safety,
        "a status change goes only to its subscribers, once each";
    M1DevicesConverge = "M1", "devices-converge", MultiDevice, Liveness,
        "after the quiet period a user's devices show the server's timeline";
    M2ReadStateConverges = "M2", "read-state-converges", MultiDevice, Liveness,
        "after the quiet period read watermarks agree across a user's devices";
    M3CursorMonotonic = "M3", "cursor-monotonic", MultiDevice, Safety,
        "a device's sync cursor never goes backwards";
    M4SessionDistinct = "M4", "session-distinct", MultiDevice, Safety,
        "each session the server opens has an id of its own, and a device logs in only to its own session";
    T1DeliveredInTime = "T1", "delivered-in-time", Timeliness, Safety,
        "a device online with a healthy link displays a message within the primary path's bound";
    T2FailoverResynced = "T2", "failover-resynced", Timeliness, Safety,
        "after failing over to another gateway, a device shows what it missed within the sync's bound";
    T3ReadShownInTime = "T3", "read-shown-in-time", Timeliness, Safety,
        "a device online with a healthy link shows a durable read within the read update's bound";
    T4ReadCountShownInTime = "T4", "read-count-shown-in-time", Timeliness, Safety,
        "a group message's sender's healthy devices show each new reader within the count's bound";
    T5PushKeptToSchedule = "T5", "push-kept-to-schedule", Timeliness, Safety,
        "a push is given up only after its whole retry schedule has passed since the commit";
    T6PathRecorded = "T6", "path-recorded", Timeliness, Safety,
        "a display brought by a pull names the reason of the round of pulls that fetched it";
    C1WithinBudget = "C1", "within-budget", Cost, Safety,
        "packets, writes, notices, receipts, presence and queue packets per unit of work stay within the budget";
    C2FanoutBySize = "C2", "fanout-by-size", Cost, Safety,
        "a group above the notify threshold is notified, never pushed; a smaller one is pushed, never notified";
    C3LoginBacksOff = "C3", "login-backs-off", Cost, Safety,
        "after a failed login a device waits its reconnect backoff, doubling up to the cap, before the next";
    C4NotifiedPullHasNews = "C4", "notified-pull-has-news", Cost, Safety,
        "a device pulls on a notice only for news beyond what it holds";
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
    violations.extend(timeliness::check(history, &index));
    violations.extend(paths::check(history, &index));
    violations.extend(cost::check(history, &index));
    violations.extend(cluster::check(history, &index));
    violations.extend(validity::check(history, &index));
    if !history.is_complete() {
        violations.retain(|violation| violation.class() == Class::Safety);
    }
    violations.sort_by_key(|violation| (violation.class(), violation.invariant));
    violations
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique_and_each_family_has_its_letter() {
        let mut codes: Vec<&str> = Invariant::ALL.iter().map(|i| i.code()).collect();
        let mut names: Vec<&str> = Invariant::ALL.iter().map(|i| i.name()).collect();
        codes.sort_unstable();
        codes.dedup();
        names.sort_unstable();
        names.dedup();
        assert_eq!(codes.len(), Invariant::ALL.len());
        assert_eq!(names.len(), Invariant::ALL.len());
        for invariant in Invariant::ALL {
            let letter = match invariant.family() {
                Family::Ordering => 'O',
                Family::ExactlyOnce => 'E',
                Family::Durability => 'D',
                Family::Groups => 'G',
                Family::Receipts => 'R',
                Family::Presence => 'P',
                Family::MultiDevice => 'M',
                Family::Timeliness => 'T',
                Family::Cost => 'C',
                Family::Validity => 'V',
            };
            assert!(invariant.code().starts_with(letter), "{invariant}");
            assert!(!invariant.definition().is_empty());
        }
    }
}
