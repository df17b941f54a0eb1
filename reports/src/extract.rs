//! From a run's history and verdict to a [`Report`]: lanes, timeline events, fault bands, the
//! window shown first, counts and the invariant table. Events are read generically (their `type`
//! and fields as JSON), so an event type added to the model later is drawn without a change here;
//! only the types that carry meaning for a band or a count are matched by name.

use crate::latency;
use crate::report::{
    Band, BandKind, Counts, Focus, FocusReason, InvariantRow, Lane, LaneKind, PacketCounts, Report,
    Status, TimelineEvent, ViolationReport, WitnessRecord, FORMAT_VERSION,
};
use crate::RunSummary;
use imsim_model::{DeviceId, Event};
use imsim_sim::history::{Direction, Entry, HarnessEvent, History, Node, Record};
use imsim_sim::{replay_command, Class, Invariant, Violation};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Event categories, in the order the legend lists them. Each known event type belongs to one;
/// a type not listed in [`category_of`] is `other`.
pub const CATEGORIES: [&str; 10] = [
    "send", "commit", "ack", "display", "pull", "session", "retry", "buffer", "failure", "other",
];

/// The category an event type is drawn with.
pub fn category_of(kind: &str) -> &'static str {
    match kind {
        "send_requested" => "send",
        "committed" => "commit",
        "send_acked" | "ack_sent" => "ack",
        "displayed" => "display",
        "pull_sent" => "pull",
        "logged_in" | "session_lost" | "session_opened" | "session_closed" | "recovered" => {
            "session"
        }
        "retransmitted" | "retransmit_deduplicated" | "out_of_order_dropped" => "retry",
        "held_back" | "duplicate_dropped" | "hold_back_overflow" | "cursor_advanced" => "buffer",
        "send_refused" | "send_failed" | "rejected" | "push_abandoned" => "failure",
        _ => "other",
    }
}

/// How many events the timeline should show at once for a run to stay readable; the first
/// window is the densest stretch that holds no more than this.
pub const FOCUS_EVENTS_TARGET: usize = 1_500;

/// Window widths tried for the densest stretch, in milliseconds.
const FOCUS_WIDTHS_MS: [u64; 14] = [
    500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000,
    3_600_000, 7_200_000,
];

pub fn build(summary: &RunSummary) -> Report {
    let history = summary.history;
    let start = history
        .records
        .iter()
        .find_map(|record| match &record.entry {
            Entry::Harness(HarnessEvent::RunStarted(start)) => Some(start.as_ref()),
            _ => None,
        });
    let duration_ms = history.records.iter().map(|r| r.t_ms).max().unwrap_or(0);
    let lanes = Lanes::new(history);
    let events = events(history, &lanes);
    let bands = bands(history, &lanes, duration_ms);
    let (liveness_phase_ms, quiet_period_ms) = liveness_phase(history);
    let witness_times = first_witness_times(history, summary.violations);
    Report {
        format_version: FORMAT_VERSION,
        scenario: summary.scenario.to_string(),
        scenario_name: start.map_or_else(|| summary.scenario.to_string(), |s| s.scenario.clone()),
        seed: summary.seed,
        variant: start.map_or_else(|| "unknown".to_string(), |s| s.variant.clone()),
        ok: summary.violations.is_empty(),
        replay: replay_command(summary.scenario, summary.seed),
        complete: history.is_complete(),
        duration_ms,
        liveness_phase_ms,
        quiet_period_ms,
        counts: counts(summary, events.len()),
        faults: start.map_or(Value::Null, |s| {
            serde_json::to_value(&s.faults).unwrap_or(Value::Null)
        }),
        focus: focus(&events, &witness_times, duration_ms),
        lanes: lanes.lanes,
        events,
        bands,
        latency: latency::measure(history),
        invariants: invariant_rows(summary.violations, history.is_complete()),
        violations: summary
            .violations
            .iter()
            .map(|v| violation_report(history, v))
            .collect(),
    }
}

/// The lanes of a run: the server first, then each device in topology order (user by user),
/// then devices the topology does not list, then the harness if it recorded an event the report
/// has no band for.
pub struct Lanes {
    pub lanes: Vec<Lane>,
    by_node: BTreeMap<Node, usize>,
}

impl Lanes {
    pub fn new(history: &History) -> Lanes {
        let mut lanes = Lanes {
            lanes: Vec::new(),
            by_node: BTreeMap::new(),
        };
        lanes.add(Node::Server, "server".to_string(), None);
        for user in history
            .topology()
            .map(|t| t.users.as_slice())
            .unwrap_or(&[])
        {
            for device in &user.devices {
                lanes.add(
                    Node::Device(*device),
                    format!("{} · {}", device, user.user),
                    Some(user.user.0),
                );
            }
        }
        for record in &history.records {
            match record.node {
                Node::Device(device) if !lanes.by_node.contains_key(&record.node) => {
                    lanes.add(record.node, device.to_string(), None);
                }
                Node::Harness if !lanes.by_node.contains_key(&Node::Harness) => {
                    if let Entry::Harness(event) = &record.entry {
                        if !is_drawn_as_band(event) {
                            lanes.add(Node::Harness, "harness".to_string(), None);
                        }
                    }
                }
                _ => {}
            }
        }
        lanes
    }

    fn add(&mut self, node: Node, label: String, user: Option<u32>) {
        if self.by_node.contains_key(&node) {
            return;
        }
        let (kind, device) = match node {
            Node::Server => (LaneKind::Server, None),
            Node::Device(device) => (LaneKind::Device, Some(device.0)),
            Node::Harness => (LaneKind::Harness, None),
        };
        self.by_node.insert(node, self.lanes.len());
        self.lanes.push(Lane {
            id: node.to_string(),
            label,
            kind,
            device,
            user,
        });
    }

    pub fn of(&self, node: Node) -> Option<usize> {
        self.by_node.get(&node).copied()
    }

    fn of_device(&self, device: DeviceId) -> Option<usize> {
        self.of(Node::Device(device))
    }
}

/// Harness events that become bands, or that only set the run up or close it: not marks.
fn is_drawn_as_band(event: &HarnessEvent) -> bool {
    matches!(
        event,
        HarnessEvent::RunStarted(_)
            | HarnessEvent::PartitionStarted { .. }
            | HarnessEvent::PartitionHealed { .. }
            | HarnessEvent::NodeCrashed { .. }
            | HarnessEvent::NodeRestarted { .. }
            | HarnessEvent::LivenessPhaseStarted { .. }
            | HarnessEvent::FinalTimeline { .. }
            | HarnessEvent::RunEnded
    )
}

/// Every record drawn as a mark: protocol events, and harness events without a band.
pub fn events(history: &History, lanes: &Lanes) -> Vec<TimelineEvent> {
    let mut events = Vec::new();
    for (index, record) in history.records.iter().enumerate() {
        if let Entry::Harness(event) = &record.entry {
            if is_drawn_as_band(event) {
                continue;
            }
        }
        let Some(lane) = lanes.of(record.node) else {
            continue;
        };
        let (kind, fields) = type_and_fields(&record.entry);
        events.push(TimelineEvent {
            index,
            t_ms: record.t_ms,
            lane,
            category: category_of(&kind).to_string(),
            conv: fields
                .get("conv")
                .and_then(Value::as_u64)
                .and_then(|c| u32::try_from(c).ok()),
            detail: detail(&fields),
            kind,
        });
    }
    events
}

/// An entry's `type` and its other fields, read from its JSON form (so any event type works).
pub fn type_and_fields(entry: &Entry) -> (String, Map<String, Value>) {
    let value = match entry {
        Entry::Protocol(event) => serde_json::to_value(event),
        Entry::Harness(event) => serde_json::to_value(event),
    };
    let mut fields = match value {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    let kind = match fields.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => "unknown".to_string(),
    };
    (kind, fields)
}

/// Longest string value shown in a detail; the JSON report and the history have the rest.
const DETAIL_VALUE_CHARS_MAX: usize = 48;

/// `conv=3 seq=7 body="hi" …`: conversation and seq first, then the other fields by name.
pub fn detail(fields: &Map<String, Value>) -> String {
    let first = ["conv", "seq"];
    let ordered = first
        .iter()
        .filter_map(|key| fields.get_key_value(*key))
        .chain(
            fields
                .iter()
                .filter(|(key, _)| !first.contains(&key.as_str())),
        );
    let parts: Vec<String> = ordered
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => format!("\"{text}\""),
                other => other.to_string(),
            };
            format!("{key}={}", shorten(&text, DETAIL_VALUE_CHARS_MAX))
        })
        .collect();
    parts.join(" ")
}

fn shorten(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text.to_string();
    }
    let kept: String = text.chars().take(chars_max - 1).collect();
    format!("{kept}…")
}

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

/// `1.5 s`, `250 ms`: simulated time for a label.
pub fn seconds(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn liveness_phase(history: &History) -> (Option<u64>, Option<u64>) {
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

fn first_witness_times(history: &History, violations: &[Violation]) -> Vec<u64> {
    violations.first().map_or_else(Vec::new, |violation| {
        violation
            .witness
            .iter()
            .filter_map(|index| history.records.get(*index))
            .map(|record| record.t_ms)
            .collect()
    })
}

/// The window the timeline opens on: around the first violation's witness when there is one;
/// otherwise the densest stretch that stays readable, or the whole active run if it all is.
pub fn focus(events: &[TimelineEvent], witness_times: &[u64], duration_ms: u64) -> Focus {
    if let (Some(first), Some(last)) = (witness_times.iter().min(), witness_times.iter().max()) {
        let pad_ms = ((last - first) / 4).max(1_500);
        return Focus {
            start_ms: first.saturating_sub(pad_ms),
            end_ms: (last + pad_ms).min(duration_ms.max(last + 1)),
            reason: FocusReason::Witness,
        };
    }
    let times: Vec<u64> = events.iter().map(|e| e.t_ms).collect();
    let active_end_ms = times
        .last()
        .map_or(duration_ms, |last| last + last / 50 + 1);
    if times.len() <= FOCUS_EVENTS_TARGET {
        return Focus {
            start_ms: 0,
            end_ms: active_end_ms.min(duration_ms.max(1)),
            reason: FocusReason::WholeRun,
        };
    }
    let mut chosen = (FOCUS_WIDTHS_MS[0], densest(&times, FOCUS_WIDTHS_MS[0]).0);
    for width_ms in FOCUS_WIDTHS_MS {
        let (start_ms, count) = densest(&times, width_ms);
        if count > FOCUS_EVENTS_TARGET {
            break;
        }
        chosen = (width_ms, start_ms);
    }
    let (width_ms, start_ms) = chosen;
    // A little context before the densest stretch.
    let start_ms = start_ms.saturating_sub(width_ms / 10);
    Focus {
        start_ms,
        end_ms: start_ms + width_ms,
        reason: FocusReason::Densest,
    }
}

/// The start of the window of `width_ms` holding the most events (`times` sorted), and how many
/// it holds.
pub fn densest(times: &[u64], width_ms: u64) -> (u64, usize) {
    let (mut best_start, mut best_count, mut first) = (0, 0, 0);
    for (last, t) in times.iter().enumerate() {
        while times[first] + width_ms <= *t {
            first += 1;
        }
        if last + 1 - first > best_count {
            (best_start, best_count) = (times[first], last + 1 - first);
        }
    }
    (best_start, best_count)
}

fn class_name(class: Class) -> &'static str {
    match class {
        Class::Safety => "always",
        Class::Liveness => "eventually",
    }
}

pub fn invariant_rows(violations: &[Violation], complete: bool) -> Vec<InvariantRow> {
    Invariant::ALL
        .iter()
        .map(|invariant| {
            let count = violations
                .iter()
                .filter(|v| v.invariant == *invariant)
                .count() as u64;
            let status = if count > 0 {
                Status::Violated
            } else if invariant.class() == Class::Liveness && !complete {
                Status::NotJudged
            } else {
                Status::Held
            };
            InvariantRow {
                code: invariant.code().to_string(),
                name: invariant.name().to_string(),
                class: class_name(invariant.class()).to_string(),
                status,
                violations: count,
            }
        })
        .collect()
}

fn violation_report(history: &History, violation: &Violation) -> ViolationReport {
    let witness = violation
        .witness
        .iter()
        .filter_map(|index| Some((*index, history.records.get(*index)?)))
        .map(|(index, record)| {
            let (kind, fields) = type_and_fields(&record.entry);
            WitnessRecord {
                index,
                t_ms: record.t_ms,
                node: record.node.to_string(),
                kind,
                detail: detail(&fields),
                line: record.to_string(),
            }
        })
        .collect();
    ViolationReport {
        code: violation.invariant.code().to_string(),
        name: violation.invariant.name().to_string(),
        class: class_name(violation.class()).to_string(),
        explanation: violation.explanation.clone(),
        witness,
    }
}

fn counts(summary: &RunSummary, events: usize) -> Counts {
    let mut counts = Counts {
        records: summary.history.records.len() as u64,
        events: events as u64,
        packets: summary.stats.map(|stats| PacketCounts {
            sent: stats.packets.sent,
            dropped: stats.packets.dropped,
            duplicated: stats.packets.duplicated,
            delayed: stats.packets.delayed,
            held: stats.packets.held,
        }),
        ..Counts::default()
    };
    for record in &summary.history.records {
        match &record.entry {
            Entry::Protocol(Event::SendRequested { .. }) => counts.sends += 1,
            Entry::Protocol(Event::Committed { .. }) => counts.committed += 1,
            Entry::Protocol(Event::SendAcked { .. }) => counts.acked += 1,
            Entry::Protocol(Event::Displayed { .. }) => counts.displayed += 1,
            Entry::Protocol(Event::SendRefused { .. } | Event::SendFailed { .. }) => {
                counts.send_failures += 1;
            }
            Entry::Protocol(Event::PullSent { .. }) => counts.pulls += 1,
            Entry::Harness(HarnessEvent::NodeCrashed {
                crashed: Node::Server,
            }) => counts.server_crashes += 1,
            Entry::Harness(HarnessEvent::NodeCrashed { .. }) => counts.device_restarts += 1,
            Entry::Harness(HarnessEvent::PartitionStarted { .. }) => counts.partitions += 1,
            _ => {}
        }
    }
    counts
}
