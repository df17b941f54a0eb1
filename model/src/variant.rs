//! Deliberately broken versions of the protocol: the classic IM bugs, kept selectable so the
//! harness can prove it catches each one (the known-bug catalogue, README). `Correct` is the
//! protocol of DESIGN.md §4; every other variant is one small deviation from it, marked in the
//! code by a `// VARIANT <name>:` comment at each site. The correct path never changes.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    #[default]
    Correct,
    NoReceiverDedupe,
    AckBeforeStore,
    NonIdempotentCommit,
    SeqReuseAfterRestart,
    RetryReorders,
    WatermarkSkipsGap,
    NoGapPull,
    SyncOffByOne,
    StoreOnlyOffline,
    RemovedMemberStillReceives,
    TimestampOrder,
    ReadBeforeDisplay,
    ReadCountDouble,
    GhostOnline,
    PushToOneDevice,
    DedupeWithoutAck,
    StaleRouteCountedDelivered,
    FailoverWithoutResync,
    AudienceFromCurrentMembers,
    HandoverRestartsSeqs,
    ConsumerAcksBeforeDurable,
    NonIdempotentConsumer,
}

/// What the catalogue says about one broken variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogueEntry {
    pub variant: Variant,
    /// The shipped scenario that exposes it.
    pub scenario: &'static str,
    /// The invariant expected to catch it (its stable name, e.g. `no-duplicate-display`).
    pub invariant: &'static str,
    /// Other invariants the same bug may legitimately break in the same run (documented, so a
    /// detection test accepts them alongside the expected one).
    pub also: &'static [&'static str],
    pub description: &'static str,
}

impl Variant {
    pub const ALL: [Variant; 23] = [
        Variant::Correct,
        Variant::NoReceiverDedupe,
        Variant::AckBeforeStore,
        Variant::NonIdempotentCommit,
        Variant::SeqReuseAfterRestart,
        Variant::RetryReorders,
        Variant::WatermarkSkipsGap,
        Variant::NoGapPull,
        Variant::SyncOffByOne,
        Variant::StoreOnlyOffline,
        Variant::RemovedMemberStillReceives,
        Variant::TimestampOrder,
        Variant::ReadBeforeDisplay,
        Variant::ReadCountDouble,
        Variant::GhostOnline,
        Variant::PushToOneDevice,
        Variant::DedupeWithoutAck,
        Variant::StaleRouteCountedDelivered,
        Variant::FailoverWithoutResync,
        Variant::AudienceFromCurrentMembers,
        Variant::HandoverRestartsSeqs,
        Variant::ConsumerAcksBeforeDurable,
        Variant::NonIdempotentConsumer,
    ];

    /// The kebab-case name, as on the command line and in the history.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::NoReceiverDedupe => "no-receiver-dedupe",
            Variant::AckBeforeStore => "ack-before-store",
            Variant::NonIdempotentCommit => "non-idempotent-commit",
            Variant::SeqReuseAfterRestart => "seq-reuse-after-restart",
            Variant::RetryReorders => "retry-reorders",
            Variant::WatermarkSkipsGap => "watermark-skips-gap",
            Variant::NoGapPull => "no-gap-pull",
            Variant::SyncOffByOne => "sync-off-by-one",
            Variant::StoreOnlyOffline => "store-only-offline",
            Variant::RemovedMemberStillReceives => "removed-member-still-receives",
            Variant::TimestampOrder => "timestamp-order",
            Variant::ReadBeforeDisplay => "read-before-display",
            Variant::ReadCountDouble => "read-count-double",
            Variant::GhostOnline => "ghost-online",
            Variant::PushToOneDevice => "push-to-one-device",
            Variant::DedupeWithoutAck => "dedupe-without-ack",
            Variant::StaleRouteCountedDelivered => "stale-route-counted-delivered",
            Variant::FailoverWithoutResync => "failover-without-resync",
            Variant::AudienceFromCurrentMembers => "audience-from-current-members",
            Variant::HandoverRestartsSeqs => "handover-restarts-seqs",
            Variant::ConsumerAcksBeforeDurable => "consumer-acks-before-durable",
            Variant::NonIdempotentConsumer => "non-idempotent-consumer",
        }
    }

    /// Parses a name; the error lists the valid ones.
    pub fn parse(text: &str) -> Result<Variant, String> {
        Variant::ALL
            .into_iter()
            .find(|variant| variant.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
                format!("no variant named `{text}` (valid: {})", names.join(", "))
            })
    }

    /// The catalogue entry of a broken variant; `None` for `Correct`.
    pub fn catalogue_entry(self) -> Option<CatalogueEntry> {
        CATALOGUE
            .iter()
            .copied()
            .find(|entry| entry.variant == self)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every broken variant with the scenario that exposes it and the invariant that catches it.
pub const CATALOGUE: &[CatalogueEntry] = &[
    CatalogueEntry {
        variant: Variant::NoReceiverDedupe,
        scenario: "lossy-network",
        invariant: "no-duplicate-display",
        also: &[],
        description: "a device displays a duplicated or retransmitted push again",
    },
    CatalogueEntry {
        variant: Variant::AckBeforeStore,
        scenario: "crash-storm",
        invariant: "acked-is-durable",
        also: &["eventual-delivery", "no-silent-loss", "display-order"],
        description: "the server acks a send when it writes it, before the write is durable",
    },
    CatalogueEntry {
        variant: Variant::NonIdempotentCommit,
        scenario: "lossy-network",
        invariant: "idempotent-commit",
        also: &["no-duplicate-display", "sender-fifo", "stored-once"],
        description: "a retransmit of a committed message is committed again with a new seq",
    },
    CatalogueEntry {
        variant: Variant::SeqReuseAfterRestart,
        scenario: "server-crash",
        invariant: "seq-monotonic",
        also: &["acked-is-durable", "eventual-delivery", "sender-fifo", "within-budget"],
        description: "after a crash the seq counter restarts from 0, reusing durable seqs",
    },
    CatalogueEntry {
        variant: Variant::RetryReorders,
        scenario: "sender-retry-order",
        invariant: "sender-fifo",
        also: &[],
        description: "the server commits any client_seq as it arrives: a retried first message lands after later ones",
    },
    CatalogueEntry {
        variant: Variant::WatermarkSkipsGap,
        scenario: "lossy-network",
        invariant: "display-order",
        also: &["eventual-delivery", "cursor-contiguous"],
        description: "a device's cursor and ack watermark jump over a hole to the highest seq received",
    },
    CatalogueEntry {
        variant: Variant::NoGapPull,
        scenario: "group-disorder",
        invariant: "eventual-delivery",
        also: &["within-budget"],
        description: "a device with a hole never pulls: it waits for a push that may never come",
    },
    CatalogueEntry {
        variant: Variant::SyncOffByOne,
        scenario: "offline-resume",
        invariant: "eventual-delivery",
        also: &["within-budget"],
        description: "pulls ask for entries after cursor + 1, so the first missing one is never pulled",
    },
    CatalogueEntry {
        variant: Variant::StoreOnlyOffline,
        scenario: "offline-resume",
        invariant: "eventual-delivery",
        also: &["within-budget"],
        description: "entries are kept for pull only for users offline at send time: a failed push to an online user is lost",
    },
    CatalogueEntry {
        variant: Variant::RemovedMemberStillReceives,
        scenario: "group-membership-churn",
        invariant: "member-only-delivery",
        also: &["eventual-delivery", "delivered-in-time"],
        description: "fan-out pushes to the group's founding members, also after one was removed",
    },
    CatalogueEntry {
        variant: Variant::TimestampOrder,
        scenario: "clock-skew",
        invariant: "display-order",
        also: &["agreement"],
        description: "devices order a batch by the sender's clock instead of by seq",
    },
    CatalogueEntry {
        variant: Variant::ReadBeforeDisplay,
        scenario: "receipts-1to1",
        invariant: "read-after-display",
        also: &[],
        description: "a read receipt covers messages received but still held back, not displayed",
    },
    CatalogueEntry {
        variant: Variant::ReadCountDouble,
        scenario: "multi-device",
        invariant: "group-read-count",
        also: &[],
        description: "group read counts count each device that read, so a user's second device is a second reader",
    },
    CatalogueEntry {
        variant: Variant::GhostOnline,
        scenario: "presence-flapping",
        invariant: "offline-detected-in-time",
        also: &["presence-converges"],
        description: "the server never expires a session that stopped heartbeating: a dead phone stays online",
    },
    CatalogueEntry {
        variant: Variant::PushToOneDevice,
        scenario: "multi-device",
        invariant: "delivered-in-time",
        also: &[],
        description: "the server pushes a message to one device per user; the others wait for the heartbeat's sync key",
    },
    CatalogueEntry {
        variant: Variant::DedupeWithoutAck,
        scenario: "lossy-network",
        invariant: "send-resolves",
        also: &["within-budget"],
        description: "the server drops a retransmit of a committed message without acking it again, so a lost ack is never repaired",
    },
    CatalogueEntry {
        variant: Variant::StaleRouteCountedDelivered,
        scenario: "cluster-failover",
        invariant: "delivered-in-time",
        also: &[],
        description: "a push to a stale route counts as delivered: the logic ignores the gateway's answer that it no longer holds the session, so the session stays open and its push is lost until the device's next heartbeat",
    },
    CatalogueEntry {
        variant: Variant::FailoverWithoutResync,
        scenario: "cluster-failover",
        invariant: "failover-resynced",
        also: &["delivered-in-time", "offline-detected-in-time"],
        description: "gateway failover drops the in-flight push without repair: a device logging in through a new gateway resumes its open session with no sync, so what the dead gateway dropped waits for the heartbeat's sync key",
    },
    CatalogueEntry {
        variant: Variant::AudienceFromCurrentMembers,
        scenario: "group-membership-churn",
        invariant: "delivered-in-time",
        also: &["member-only-delivery"],
        description: "a message is pushed to the group's members when it becomes durable, not to those at its seq: a change committed inside its sync window adds a recipient who joined after it, or drops one who left after it",
    },
    CatalogueEntry {
        variant: Variant::HandoverRestartsSeqs,
        scenario: "sharded-logic",
        invariant: "seq-monotonic",
        also: &[
            "acked-is-durable",
            "eventual-delivery",
            "devices-converge",
            "sender-fifo",
            "failover-resynced",
            "within-budget",
        ],
        description: "a logic node that takes a crashed node's shard over starts handing out seqs without reading the last one stored, reusing durable seqs",
    },
    CatalogueEntry {
        variant: Variant::ConsumerAcksBeforeDurable,
        scenario: "queue-faults",
        invariant: "acked-is-durable",
        also: &[
            "no-silent-loss",
            "eventual-delivery",
            "send-resolves",
            "display-order",
            "within-budget",
        ],
        description: "the queue consumer acks the queue and reports stored as soon as it appends, before the sync: a consumer crash loses records the queue will never redeliver and the sender was acked",
    },
    CatalogueEntry {
        variant: Variant::NonIdempotentConsumer,
        scenario: "queue-faults",
        invariant: "stored-once",
        also: &[
            "acked-is-durable",
            "seq-monotonic",
            "idempotent-commit",
            "no-duplicate-display",
            "sender-fifo",
            "display-order",
            "agreement",
            "eventual-delivery",
            "no-silent-loss",
            "send-resolves",
            "devices-converge",
            "within-budget",
        ],
        description: "the queue consumer appends every delivery, redeliveries included: storage holds a message twice (and a server recovering from that store reads a log whose positions no longer match the queue's offsets)",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_parse_and_serde() {
        for variant in Variant::ALL {
            assert_eq!(Variant::parse(variant.name()), Ok(variant));
            let json = serde_json::to_string(&variant).unwrap();
            assert_eq!(json, format!("\"{}\"", variant.name()));
        }
        let error = Variant::parse("nope").unwrap_err();
        assert!(error.contains("ack-before-store"), "{error}");
    }

    #[test]
    fn every_broken_variant_has_one_catalogue_entry() {
        for variant in Variant::ALL {
            let entries = CATALOGUE.iter().filter(|e| e.variant == variant).count();
            let expected = usize::from(variant != Variant::Correct);
            assert_eq!(entries, expected, "{variant}");
            // ...and finds it: the CLI, the shrink fixtures and `imsim variants` look it up.
            let found = variant.catalogue_entry().map(|entry| entry.variant);
            assert_eq!(found, (variant != Variant::Correct).then_some(variant));
        }
    }
}
