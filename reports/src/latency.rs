//! Send→display latency in simulated time, as the report shows it: the samples and percentiles
//! of `imsim_history::stats` (the same figures `imsim run` prints), the slowest deliveries, a
//! histogram, and the pairs never displayed.

use crate::report::{Bucket, Latency, PathMix};
pub use imsim_history::stats::{latency_samples, percentile, LatencySample};
use imsim_history::{History, Node};
use imsim_model::{Event, Via};
use std::collections::{BTreeMap, BTreeSet};

/// The slowest deliveries a report lists.
pub const SLOWEST_MAX: usize = 10;

pub fn measure(history: &History) -> Latency {
    let mut samples = latency_samples(history);
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
    let paths = paths(history, &samples);
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
        paths,
    }
}

/// The samples split by the path of their display. A primary path (push, or a notice's pull
/// in a large group) that gives way to repairs (gap pulls, resumes) is what a slow or wasteful
/// run looks like even when every message arrives.
fn paths(history: &History, samples: &[LatencySample]) -> Vec<PathMix> {
    let mut by_path: BTreeMap<Via, Vec<u64>> = BTreeMap::new();
    for sample in samples {
        let via = match &history.records[sample.display_index].entry {
            imsim_history::Entry::Protocol(Event::Displayed { via: Some(via), .. }) => *via,
            _ => continue,
        };
        by_path.entry(via).or_default().push(sample.latency_ms);
    }
    by_path
        .into_iter()
        .map(|(via, mut latencies)| {
            latencies.sort_unstable();
            PathMix {
                path: path_name(via),
                deliveries: latencies.len() as u64,
                p50_ms: percentile(&latencies, 50),
                max_ms: latencies.last().copied(),
            }
        })
        .collect()
}

fn path_name(via: Via) -> String {
    match via {
        Via::Push => "push".to_string(),
        Via::Ack => "ack".to_string(),
        Via::Pull(reason) => {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("pull ({reason})")
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::*;

    /// d1 sends m1 at 100 ms; d3 (the other user) shows it at 150, d2 (d1's sibling) at 400, d3
    /// again at 500 (a duplicate: not a second sample). d1 sends m2, it commits, nobody shows it.
    fn story() -> History {
        let mut history = start();
        send(&mut history, 100, D1, 1);
        commit(&mut history, 110, D1, 1, 1);
        display(&mut history, 150, D3, D1, 1, 1);
        display(&mut history, 400, D2, D1, 1, 1);
        display(&mut history, 500, D3, D1, 1, 1);
        send(&mut history, 600, D1, 2);
        commit(&mut history, 610, D1, 2, 2);
        history
    }

    #[test]
    fn a_sample_per_message_and_other_device_first_display_only() {
        let samples = latency_samples(&story());
        let found: Vec<(u32, u64)> = samples
            .iter()
            .map(|s| (s.display_device, s.latency_ms))
            .collect();
        assert_eq!(found, vec![(3, 50), (2, 300)]);
        assert_eq!((samples[0].send_index, samples[0].display_index), (1, 3));
    }

    #[test]
    fn the_sender_showing_its_own_message_is_not_a_delivery() {
        let mut history = story();
        display(&mut history, 700, D1, D1, 1, 1);
        assert_eq!(latency_samples(&history).len(), 2);
    }

    #[test]
    fn summary_counts_percentiles_and_undelivered_pairs() {
        let latency = measure(&story());
        assert_eq!(latency.samples, 2);
        assert_eq!((latency.min_ms, latency.max_ms), (Some(50), Some(300)));
        assert_eq!(latency.p50_ms, Some(50));
        assert_eq!((latency.p90_ms, latency.p99_ms), (Some(300), Some(300)));
        assert_eq!(latency.mean_ms, Some(175.0));
        // m2 committed but neither d2 nor d3 showed it.
        assert_eq!(latency.not_displayed, Some(2));
        assert_eq!(latency.slowest[0].latency_ms, 300);
        let total: u64 = latency.histogram.iter().map(|b| b.count).sum();
        assert_eq!(total, 2);
    }

    #[test]
    fn a_display_without_a_send_is_no_sample() {
        let mut history = start();
        display(&mut history, 150, D3, D1, 9, 1);
        assert!(latency_samples(&history).is_empty());
        assert_eq!(measure(&history).p50_ms, None);
    }

    #[test]
    fn histogram_buckets_run_one_two_five_from_the_fastest_to_the_slowest() {
        let buckets = histogram(&[3, 4, 7, 15, 1_500]);
        let edges: Vec<(u64, u64, u64)> = buckets
            .iter()
            .map(|b| (b.from_ms, b.to_ms, b.count))
            .collect();
        assert_eq!(
            edges,
            vec![
                (2, 5, 2),
                (5, 10, 1),
                (10, 20, 1),
                (20, 50, 0),
                (50, 100, 0),
                (100, 200, 0),
                (200, 500, 0),
                (500, 1_000, 0),
                (1_000, 2_000, 1),
            ]
        );
        assert_eq!(
            histogram(&[0])[0],
            Bucket {
                from_ms: 0,
                to_ms: 1,
                count: 1
            }
        );
    }
}
