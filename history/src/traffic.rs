//! What a run cost the network and the disk, as the driver that ran it counted: packets sent
//! (by kind, and what the fault layer did to them) and storage writes. The driver records it in
//! the history (`traffic`, just before `run_ended`), so the cost figures and the cost budget
//! are judged from the history alone, like every other invariant.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the fault layer did to a run's packets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub held: u64,
    /// Packets sent, by kind (`deliver`, `notify`, `pull` …).
    pub by_kind: BTreeMap<String, u64>,
}

impl PacketStats {
    /// Packets sent of `kind`.
    pub fn of_kind(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    /// Packets of the message path: sends and their acks, pushes and their acks, notices,
    /// pulls and their answers, and head syncs. Heartbeats, logins, presence and receipts are
    /// left out: they scale with time online and with reads, not with messages.
    pub fn message_path(&self) -> u64 {
        MESSAGE_PATH.iter().map(|kind| self.of_kind(kind)).sum()
    }

    /// Packets of read receipts ([`RECEIPT_PATH`]).
    pub fn receipt_path(&self) -> u64 {
        RECEIPT_PATH.iter().map(|kind| self.of_kind(kind)).sum()
    }

    /// Packets of the queue between the logic and storage ([`QUEUE_PATH`]).
    pub fn queue_path(&self) -> u64 {
        QUEUE_PATH.iter().map(|kind| self.of_kind(kind)).sum()
    }
}

/// The packet kinds [`PacketStats::message_path`] counts (`imsim_model::Packet::kind`).
pub const MESSAGE_PATH: [&str; 10] = [
    "send",
    "send_ack",
    "send_rejected",
    "deliver",
    "ack",
    "notify",
    "pull",
    "pull_response",
    "sync_request",
    "sync_state",
];

/// The packet kinds of read receipts: reads, the updates and counts they cause, and the
/// receipt sync and reader lists a device asks for.
pub const RECEIPT_PATH: [&str; 7] = [
    "read",
    "read_update",
    "read_counts",
    "receipt_sync_request",
    "receipt_state",
    "readers_query",
    "readers",
];

/// The packet kinds of the queue topology: the logic's enqueues, the queue's deliveries to the
/// consumer and its acks, and the consumer's `stored` to the logic.
pub const QUEUE_PATH: [&str; 4] = ["enqueue", "queue_deliver", "queue_ack", "stored"];

/// The `traffic` record: the driver's counts at the end of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub packets: PacketStats,
    /// Records the server's storage holds at the end (messages, refusals, inbox copies).
    pub synced_writes: u64,
    /// Of those, the records that store a message: timeline entries and fan-out inbox copies.
    pub message_writes: u64,
}

/// The most a run may cost, per unit of work (C1 `within-budget`). A scenario declares its own
/// in a `[budget]` table; the defaults are the highest figures of the shipped scenarios' correct
/// runs (seeds 0..400) plus a margin, so a scenario without a table is judged loosely and a
/// shipped scenario, with its own measured budget, tightly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostBudget {
    /// Message-path packets ([`MESSAGE_PATH`]) per message displayed on a recipient's device.
    pub packets_per_delivery: f64,
    /// Storage writes of messages (timeline entries and inbox copies, not refusals or reads)
    /// per committed entry (store once: 1; fan-out write: about the audience).
    /// `None`: 2 for store once, and one per user of the topology (any user may be added to a
    /// group) plus 2 for fan-out write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_per_message: Option<f64>,
    /// Notices (notify-then-pull groups) per message displayed on a recipient's device: a
    /// notice announces news to one device, and merging makes it fewer than one per message.
    pub notices_per_delivery: f64,
    /// Presence packets (pushed changes and status lists) per status change at the server.
    pub presence_packets_per_change: f64,
    /// Receipt packets ([`RECEIPT_PATH`]) per read the users made.
    pub receipt_packets_per_read: f64,
    /// Queue packets ([`QUEUE_PATH`]) per committed entry, in the queue topology: an enqueue,
    /// a delivery, an ack and a `stored` each, plus what loss, redelivery and resends add.
    pub queue_packets_per_message: f64,
}

impl Default for CostBudget {
    fn default() -> CostBudget {
        CostBudget {
            packets_per_delivery: 16.0,
            writes_per_message: None,
            notices_per_delivery: 1.0,
            presence_packets_per_change: 10.5,
            receipt_packets_per_read: 12.0,
            queue_packets_per_message: 16.0,
        }
    }
}

impl CostBudget {
    /// Checks the budget makes sense; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("packets_per_delivery", Some(self.packets_per_delivery)),
            ("writes_per_message", self.writes_per_message),
            ("notices_per_delivery", Some(self.notices_per_delivery)),
            (
                "presence_packets_per_change",
                Some(self.presence_packets_per_change),
            ),
            (
                "receipt_packets_per_read",
                Some(self.receipt_packets_per_read),
            ),
            (
                "queue_packets_per_message",
                Some(self.queue_packets_per_message),
            ),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                if !value.is_finite() || value <= 0.0 {
                    return Err(format!("budget.{field}: {value} is not a positive number"));
                }
            }
        }
        Ok(())
    }
}
