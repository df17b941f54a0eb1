//! Send→display latency in simulated time. A sample is one message shown on one device other
//! than the one that sent it (siblings of the sender count: multi-device delivery is delivery):
//! from the sender's `send_requested` to that device's first `displayed` of the message, matched
//! by (sender_device, client_msg_id), the message's identity across the whole system.

use crate::report::{Bucket, Latency, LatencySample};
use imsim_model::{ClientMsgId, ConvId, DeviceId, Event};
use imsim_sim::history::{History, Node};
use std::collections::{BTreeMap, BTreeSet};

/// The slowest deliveries a report lists.
pub const SLOWEST_MAX: usize = 10;

pub fn measure(history: &History) -> Latency {
    let mut samples = samples(history);
    let not_displayed = not_displayed(history);
    if samples.is_empty() {
        return Latency {
            not_displayed,
            ..Latency::default()
        };
    }
    let mut sorted: Vec<u64> = samples.iter().map(|s| s.latency_ms).collect();
    sorted.sort_unstable();
    samples.sort_by(|a, b| {
        (b.latency_ms, a.send_index, a.display_index).cmp(&(
            a.latency_ms,
            b.send_index,
            b.display_index,
        ))
    });
    samples.truncate(SLOWEST_MAX);
    let total: u64 = sorted.iter().sum();
    Latency {
        samples: sorted.len() as u64,
        not_displayed,
        min_ms: sorted.first().copied(),
        p50_ms: percentile(&sorted, 50),
        p90_ms: percentile(&sorted, 90),
        p99_ms: percentile(&sorted, 99),
        max_ms: sorted.last().copied(),
        mean_ms: Some(total as f64 / sorted.len() as f64),
        histogram: histogram(&sorted),
        slowest: samples,
    }
}

/// Every (message, other device) pair with a send and a display, in history order of display.
pub fn samples(history: &History) -> Vec<LatencySample> {
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
                    continue; // a display without a send is E3's business, not a latency
                };
                if !shown.insert((*sender_device, *client_msg_id, device)) {
                    continue; // a second display is E1's business; latency counts the first
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

/// Committed messages not displayed on a member device (other than the sender) by the end of
/// the run. Membership is the topology's: conversations whose members change (groups) will need
/// the join point, which the history does not record yet.
fn not_displayed(history: &History) -> Option<u64> {
    let topology = history.topology()?;
    let devices_of: BTreeMap<_, _> = topology
        .users
        .iter()
        .map(|user| (user.user, user.devices.clone()))
        .collect();
    let mut committed = BTreeSet::new();
    let mut shown = BTreeSet::new();
    for (_, record, event) in history.protocol_events() {
        match (record.node, event) {
            (
                Node::Server,
                Event::Committed {
                    conv,
                    sender_device,
                    client_msg_id,
                    ..
                },
            ) => {
                committed.insert((*conv, *sender_device, *client_msg_id));
            }
            (
                Node::Device(device),
                Event::Displayed {
                    sender_device,
                    client_msg_id,
                    ..
                },
            ) => {
                shown.insert((*sender_device, *client_msg_id, device));
            }
            _ => {}
        }
    }
    let mut missing = 0;
    for (conv, sender, id) in committed {
        let Some(spec) = topology.conversations.iter().find(|c| c.conv == conv) else {
            continue;
        };
        for member in &spec.members {
            for device in devices_of.get(member).into_iter().flatten() {
                if *device != sender && !shown.contains(&(sender, id, *device)) {
                    missing += 1;
                }
            }
        }
    }
    Some(missing)
}

/// The nearest-rank percentile of sorted values: the smallest value at least `percent`% of the
/// values are at or below.
pub fn percentile(sorted: &[u64], percent: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() as u64 * percent).div_ceil(100).max(1);
    sorted.get(rank as usize - 1).copied()
}

/// Bucket edges 0, 1, 2, 5, 10, 20, 50 … ms: latencies span milliseconds (a push) to tens of
/// seconds (a device offline), so equal-width buckets would put nearly everything in the first.
fn edges_up_to(max_ms: u64) -> Vec<u64> {
    let mut edges = vec![0];
    let mut decade = 1u64;
    loop {
        for step in [1, 2, 5] {
            let edge = decade.saturating_mul(step);
            edges.push(edge);
            if edge > max_ms {
                return edges;
            }
        }
        decade = decade.saturating_mul(10);
    }
}

/// Counts per bucket, from the bucket of the smallest value to that of the largest (sorted input).
pub fn histogram(sorted: &[u64]) -> Vec<Bucket> {
    let (Some(min), Some(max)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    let edges = edges_up_to(*max);
    let mut buckets: Vec<Bucket> = edges
        .windows(2)
        .map(|pair| Bucket {
            from_ms: pair[0],
            to_ms: pair[1],
            count: 0,
        })
        .collect();
    for value in sorted {
        if let Some(bucket) = buckets
            .iter_mut()
            .find(|b| b.from_ms <= *value && *value < b.to_ms)
        {
            bucket.count += 1;
        }
    }
    let first = buckets.iter().position(|b| b.to_ms > *min).unwrap_or(0);
    buckets.drain(..first);
    buckets
}
