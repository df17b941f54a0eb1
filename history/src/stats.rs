//! Figures of one run, each with ONE definition that `imsim run`'s summary, the reports and the
//! bench share: counts of what the history records, send→display latency, and the cost ratios
//! (packets per delivery, storage writes per message, presence packets per change, notices per
//! message). Packet and write counts come from the history's `traffic` record, which the driver
//! that ran the run writes.

use crate::record::{Entry, HarnessEvent, History, Node};
pub use crate::traffic::PacketStats;
use imsim_model::{ClientMsgId, ConvId, DeviceId, Event};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Counts of what a history records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistoryCounts {
    pub sends: u64,
    pub committed: u64,
    pub acked: u64,
    /// Every display, the sender's own devices included.
    pub displayed: u64,
    /// Displays on devices other than the sender's own.
    pub delivered: u64,
    /// Sends refused at once or failed later (the user saw both).
    pub send_failures: u64,
    pub pulls: u64,
    pub server_crashes: u64,
    pub device_restarts: u64,
    pub partitions: u64,
    /// Users going online or offline at the server.
    pub presence_changes: u64,
    /// Reads the users made (`read_marked`).
    pub reads: u64,
    /// Writes a server crash lost before they were synced.
    pub lost_unsynced_writes: u64,
    /// The time of the last record.
    pub simulated_ms: u64,
}

impl HistoryCounts {
    pub fn of(history: &History) -> HistoryCounts {
        let mut counts = HistoryCounts::default();
        for record in &history.records {
            counts.simulated_ms = counts.simulated_ms.max(record.t_ms);
            match &record.entry {
                Entry::Protocol(event) => counts.count_event(record.node, event),
                Entry::Harness(HarnessEvent::NodeCrashed {
                    crashed: Node::Server,
                }) => counts.server_crashes += 1,
                Entry::Harness(HarnessEvent::NodeCrashed { .. }) => counts.device_restarts += 1,
                Entry::Harness(HarnessEvent::PartitionStarted { .. }) => counts.partitions += 1,
                Entry::Harness(_) => {}
            }
        }
        counts
    }

    fn count_event(&mut self, node: Node, event: &Event) {
        match event {
            Event::SendRequested { .. } => self.sends += 1,
            Event::Committed { .. } => self.committed += 1,
            Event::SendAcked { .. } => self.acked += 1,
            Event::Displayed { sender_device, .. } => {
                self.displayed += 1;
                if node != Node::Device(*sender_device) {
                    self.delivered += 1;
                }
            }
            Event::SendRefused { .. } | Event::SendFailed { .. } => self.send_failures += 1,
            Event::PullSent { .. } => self.pulls += 1,
            Event::PresenceChanged { .. } => self.presence_changes += 1,
            Event::ReadMarked { .. } => self.reads += 1,
            Event::Recovered {
                lost_unsynced_writes,
                ..
            } => self.lost_unsynced_writes += lost_unsynced_writes,
            _ => {}
        }
    }
}

/// Counts and costs of one run, for the summary line and the bench.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    #[serde(flatten)]
    pub counts: HistoryCounts,
    pub packets: PacketStats,
    /// Storage records written (synced or lost in a crash): messages, refusals, inbox copies.
    pub storage_writes: u64,
    /// Of the records the storage holds at the end, those that store a message.
    pub message_writes: u64,
    /// Send → first display on each other device, in milliseconds.
    pub latency_ms: Quantiles,
}

impl RunStats {
    /// The figures of `history`; packets and writes from its `traffic` record (zero without
    /// one, as in a history of another system's clients). The writes a crash lost are counted
    /// from the history.
    pub fn of(history: &History) -> RunStats {
        let counts = HistoryCounts::of(history);
        let traffic = history.traffic().cloned().unwrap_or_default();
        let mut latencies: Vec<u64> = latency_samples(history)
            .iter()
            .map(|sample| sample.latency_ms)
            .collect();
        latencies.sort_unstable();
        RunStats {
            storage_writes: traffic.synced_writes + counts.lost_unsynced_writes,
            message_writes: traffic.message_writes,
            counts,
            packets: traffic.packets,
            latency_ms: Quantiles::of_sorted(&latencies),
        }
    }

    /// Message writes (timeline entries and fan-out inbox copies the storage holds at the end)
    /// per committed entry: 1 for store once, about the audience for fan-out write.
    pub fn writes_per_message(&self) -> f64 {
        self.message_writes as f64 / self.counts.committed.max(1) as f64
    }

    /// Message-path packets (sends, pushes, acks, notices, pulls and their answers; not
    /// heartbeats, logins, presence or receipts) per message displayed on a recipient's device.
    pub fn packets_per_delivery(&self) -> f64 {
        self.packets.message_path() as f64 / self.counts.delivered.max(1) as f64
    }

    /// Presence packets (pushed changes, and status lists sent at login or on request) per
    /// status change: the storm coefficient of presence, push or pull.
    pub fn presence_packets_per_change(&self) -> f64 {
        let packets = self.packets.of_kind("presence") + self.packets.of_kind("presence_state");
        packets as f64 / self.counts.presence_changes.max(1) as f64
    }

    /// Receipt packets (reads, their updates and counts, receipt syncs, reader lists) per read
    /// the users made.
    pub fn receipt_packets_per_read(&self) -> f64 {
        self.packets.receipt_path() as f64 / self.counts.reads.max(1) as f64
    }

    /// Queue packets (enqueues, deliveries to the consumer, its acks and `stored`) per
    /// committed entry; 0 outside the queue topology.
    pub fn queue_packets_per_message(&self) -> f64 {
        self.packets.queue_path() as f64 / self.counts.committed.max(1) as f64
    }

    /// Notices sent per message displayed on a recipient's device (below 1 when notices merge).
    pub fn notices_per_delivery(&self) -> f64 {
        self.packets.of_kind("notify") as f64 / self.counts.delivered.max(1) as f64
    }

    /// Notices sent per committed entry: the storm coefficient of notify-then-pull.
    pub fn notices_per_message(&self) -> f64 {
        self.packets.of_kind("notify") as f64 / self.counts.committed.max(1) as f64
    }
}

/// Nearest-rank quantiles of a sample (0 when it is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Quantiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Quantiles {
    pub fn of_sorted(sorted: &[u64]) -> Quantiles {
        let at = |percent| percentile(sorted, percent).unwrap_or(0);
        Quantiles {
            p50: at(50),
            p90: at(90),
            p99: at(99),
            max: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// The nearest-rank percentile of sorted values: the smallest value at least `percent`% of the
/// values are at or below. For [10, 20], p50 is 10.
pub fn percentile(sorted: &[u64], percent: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() as u64 * percent).div_ceil(100).max(1);
    sorted.get(rank as usize - 1).copied()
}

/// One message shown on one device other than the one that sent it (siblings of the sender
/// count: multi-device delivery is delivery), from the sender's `send_requested` to that
/// device's first `displayed` of the message, matched by (sender_device, client_msg_id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySample {
    pub conv: u32,
    pub sender_device: u32,
    pub client_msg_id: u64,
    pub display_device: u32,
    pub sent_ms: u64,
    pub displayed_ms: u64,
    pub latency_ms: u64,
    /// History indices of the `send_requested` and the `displayed` record.
    pub send_index: usize,
    pub display_index: usize,
}

/// Every (message, other device) pair with a send and a display, in history order of display.
/// A display without a send is E3's business and a second display E1's: neither is a sample.
pub fn latency_samples(history: &History) -> Vec<LatencySample> {
    let mut sends: BTreeMap<(DeviceId, ClientMsgId), (u64, usize, ConvId)> = BTreeMap::new();
    let mut shown: BTreeSet<(DeviceId, ClientMsgId, DeviceId)> = BTreeSet::new();
    let mut samples = Vec::new();
    for (index, record, event) in history.protocol_events() {
        let Node::Device(device) = record.node else {
            continue;
        };
        match event {
            Event::SendRequested {
                conv,
                client_msg_id,
                ..
            } => {
                sends
                    .entry((device, *client_msg_id))
                    .or_insert((record.t_ms, index, *conv));
            }
            Event::Displayed {
                sender_device,
                client_msg_id,
                ..
            } if device != *sender_device => {
                let Some((sent_ms, send_index, conv)) =
                    sends.get(&(*sender_device, *client_msg_id))
                else {
                    continue;
                };
                if !shown.insert((*sender_device, *client_msg_id, device)) {
                    continue;
                }
                samples.push(LatencySample {
                    conv: conv.0,
                    sender_device: sender_device.0,
                    client_msg_id: client_msg_id.0,
                    display_device: device.0,
                    sent_ms: *sent_ms,
                    displayed_ms: record.t_ms,
                    latency_ms: record.t_ms.saturating_sub(*sent_ms),
                    send_index: *send_index,
                    display_index: index,
                });
            }
            _ => {}
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), Some(50));
        assert_eq!(percentile(&values, 90), Some(90));
        assert_eq!(percentile(&values, 99), Some(99));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[10, 20], 50), Some(10));
        let quantiles = Quantiles::of_sorted(&[10, 20]);
        assert_eq!((quantiles.p50, quantiles.max), (10, 20));
    }
}
