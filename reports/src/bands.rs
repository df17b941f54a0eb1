//! Faults and sessions as stretches of time on the timeline: partitions and app kills on a
//! device's lane, server downtime across every lane, a device's time without a session, and the
//! liveness phase. Read from the harness's fault records and the devices' session events.

use crate::lanes::Lanes;
use crate::report::{Band, BandKind};
use crate::time::seconds;
use imsim_history::{Direction, Entry, HarnessEvent, History, Node, Record};
use imsim_model::{DeviceId, Event};
use std::collections::BTreeMap;

/// Faults and sessions as stretches of time: partitions and app kills on a device's lane, server
/// downtime across every lane, a device's time without a session on its lane, and the liveness
/// phase. A stretch the history never closes runs to the end and is marked open-ended.
pub fn bands(history: &History, lanes: &Lanes, duration_ms: u64) -> Vec<Band> {
    let mut open = OpenBands::default();
    for device in history.topology().iter().flat_map(|t| &t.users) {
        for device in &device.devices {
            open.start(BandKind::Offline, Some(*device), 0, "not logged in yet");
        }
    }
    for record in &history.records {
        band_edges(&mut open, record);
    }
    let mut bands = Vec::new();
    for ((kind, device), (start_ms, end_ms, label)) in open.closed {
        bands.push((kind, device, start_ms, end_ms, label, false));
    }
    for ((kind, device), (start_ms, label)) in open.open {
        bands.push((kind, device, start_ms, duration_ms, label, true));
    }
    let mut bands: Vec<Band> = bands
        .into_iter()
        .filter_map(|(kind, device, start_ms, end_ms, label, open_ended)| {
            let lane = match device {
                Some(device) => Some(lanes.of_device(device)?),
                None => None,
            };
            Some(Band {
                kind,
                lane,
                start_ms,
                end_ms,
                label,
                open_ended,
            })
        })
        .collect();
    bands.sort_by_key(|band| (band.start_ms, band.end_ms, band.lane));
    bands
}

/// A band's kind and the device whose lane it shades (`None`: every lane).
type BandKey = (BandKind, Option<DeviceId>);

/// Bands being built: open ones by key with their start and label, and the closed ones (start,
/// end, label) in the order they closed.
#[derive(Default)]
struct OpenBands {
    open: BTreeMap<BandKey, (u64, String)>,
    closed: Vec<(BandKey, (u64, u64, String))>,
}

impl OpenBands {
    /// Opens a band unless one of that kind is open on that lane already (the first cause wins).
    fn start(&mut self, kind: BandKind, device: Option<DeviceId>, t_ms: u64, label: &str) {
        self.open
            .entry((kind, device))
            .or_insert_with(|| (t_ms, label.to_string()));
    }

    fn end(&mut self, kind: BandKind, device: Option<DeviceId>, t_ms: u64) {
        if let Some((start_ms, label)) = self.open.remove(&(kind, device)) {
            self.closed.push(((kind, device), (start_ms, t_ms, label)));
        }
    }
}

fn band_edges(open: &mut OpenBands, record: &Record) {
    let t = record.t_ms;
    match (&record.node, &record.entry) {
        (_, Entry::Harness(HarnessEvent::PartitionStarted { device, direction })) => {
            let label = match direction {
                Direction::Both => "partition: both ways",
                Direction::ToServer => "partition: device→server lost",
                Direction::FromServer => "partition: server→device lost",
            };
            open.start(BandKind::Partition, Some(*device), t, label);
        }
        (_, Entry::Harness(HarnessEvent::PartitionHealed { device })) => {
            open.end(BandKind::Partition, Some(*device), t);
        }
        (_, Entry::Harness(HarnessEvent::NodeCrashed { crashed })) => match crashed {
            Node::Device(device) => {
                open.start(BandKind::DeviceDown, Some(*device), t, "app killed");
                open.start(BandKind::Offline, Some(*device), t, "offline: app killed");
            }
            _ => open.start(BandKind::ServerDown, None, t, "server down"),
        },
        (_, Entry::Harness(HarnessEvent::NodeRestarted { restarted })) => match restarted {
            Node::Device(device) => open.end(BandKind::DeviceDown, Some(*device), t),
            _ => open.end(BandKind::ServerDown, None, t),
        },
        (_, Entry::Harness(HarnessEvent::LivenessPhaseStarted { quiet_period_ms })) => {
            let label = format!("liveness phase (quiet {})", seconds(*quiet_period_ms));
            open.start(BandKind::Liveness, None, t, &label);
        }
        (_, Entry::Harness(HarnessEvent::RunEnded)) => open.end(BandKind::Liveness, None, t),
        (Node::Device(device), Entry::Protocol(Event::LoggedIn { .. })) => {
            open.end(BandKind::Offline, Some(*device), t);
        }
        (Node::Device(device), Entry::Protocol(Event::SessionLost { reason })) => {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            open.start(
                BandKind::Offline,
                Some(*device),
                t,
                &format!("offline: {reason}"),
            );
        }
        _ => {}
    }
}

/// When the liveness phase started, and its quiet period.
pub fn liveness_phase(history: &History) -> (Option<u64>, Option<u64>) {
    history
        .records
        .iter()
        .find_map(|record| match &record.entry {
            Entry::Harness(HarnessEvent::LivenessPhaseStarted { quiet_period_ms }) => {
                Some((Some(record.t_ms), Some(*quiet_period_ms)))
            }
            _ => None,
        })
        .unwrap_or((None, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::*;
    use crate::report::Report;

    fn band_summary(report: &Report) -> Vec<(BandKind, Option<usize>, u64, u64, bool)> {
        report
            .bands
            .iter()
            .map(|b| (b.kind, b.lane, b.start_ms, b.end_ms, b.open_ended))
            .collect()
    }

    #[test]
    fn fault_bands_from_partitions_crashes_and_the_liveness_phase() {
        let mut history = start();
        for device in [D1, D2, D3] {
            login(&mut history, 10, device);
        }
        let partition = HarnessEvent::PartitionStarted {
            device: D2,
            direction: Direction::ToServer,
        };
        harness(&mut history, 100, partition);
        harness(
            &mut history,
            200,
            HarnessEvent::PartitionHealed { device: D2 },
        );
        let crashed = Node::Server;
        harness(&mut history, 300, HarnessEvent::NodeCrashed { crashed });
        let restarted = Node::Server;
        harness(&mut history, 450, HarnessEvent::NodeRestarted { restarted });
        // A partition that never heals runs to the end of the run.
        let partition = HarnessEvent::PartitionStarted {
            device: D3,
            direction: Direction::Both,
        };
        harness(&mut history, 500, partition);
        let quiet_period_ms = 1_000;
        harness(
            &mut history,
            600,
            HarnessEvent::LivenessPhaseStarted { quiet_period_ms },
        );
        harness(&mut history, 1_600, HarnessEvent::RunEnded);
        let report = summary(&history, &[]);
        let faults: Vec<_> = band_summary(&report)
            .into_iter()
            .filter(|b| b.0 != BandKind::Offline)
            .collect();
        assert_eq!(
            faults,
            vec![
                (BandKind::Partition, Some(2), 100, 200, false),
                (BandKind::ServerDown, None, 300, 450, false),
                (BandKind::Partition, Some(3), 500, 1_600, true),
                (BandKind::Liveness, None, 600, 1_600, false),
            ]
        );
        let partition = report
            .bands
            .iter()
            .find(|b| b.lane == Some(2) && b.kind == BandKind::Partition);
        assert_eq!(partition.unwrap().label, "partition: device→server lost");
        assert_eq!(report.liveness_phase_ms, Some(600));
        assert_eq!(report.quiet_period_ms, Some(1_000));
        assert!(report.complete);
        assert_eq!(
            (report.counts.partitions, report.counts.server_crashes),
            (2, 1)
        );
    }

    #[test]
    fn offline_bands_follow_sessions_and_app_kills() {
        let mut history = start();
        login(&mut history, 20, D1);
        logout(&mut history, 100, D1);
        login(&mut history, 300, D1);
        let crashed = Node::Device(D1);
        harness(&mut history, 400, HarnessEvent::NodeCrashed { crashed });
        let restarted = Node::Device(D1);
        harness(&mut history, 500, HarnessEvent::NodeRestarted { restarted });
        login(&mut history, 520, D1);
        login(&mut history, 30, D2);
        let report = summary(&history, &[]);
        let d1: Vec<_> = report
            .bands
            .iter()
            .filter(|b| b.lane == Some(1))
            .map(|b| (b.kind, b.start_ms, b.end_ms, b.label.as_str()))
            .collect();
        assert_eq!(
            d1,
            vec![
                (BandKind::Offline, 0, 20, "not logged in yet"),
                (BandKind::Offline, 100, 300, "offline: logout"),
                (BandKind::DeviceDown, 400, 500, "app killed"),
                (BandKind::Offline, 400, 520, "offline: app killed"),
            ]
        );
        // d3 never logged in: offline for the whole run, and the report says it never ended.
        let d3: Vec<_> = band_summary(&report)
            .into_iter()
            .filter(|b| b.1 == Some(3))
            .collect();
        assert_eq!(d3, vec![(BandKind::Offline, Some(3), 0, 520, true)]);
        assert_eq!(report.counts.device_restarts, 1);
    }
}
