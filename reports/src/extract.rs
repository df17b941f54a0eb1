//! From a run's history and verdict to a [`Report`]: lanes, timeline events, fault bands, the
//! window shown first, counts and the invariant table. Events are read generically (their `type`
//! and fields as JSON), so an event type added to the model later is drawn without a change here;
//! only the types that carry meaning for a band or a count are matched by name.

use crate::latency;
use crate::report::{
    Band, BandKind, Counts, Focus, FocusReason, InvariantRow, Lane, LaneKind, MessageRef,
    PacketCounts, Report, Status, TimelineEvent, ViolationReport, WitnessRecord, FORMAT_VERSION,
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
    let mut committed = BTreeMap::new();
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
        let conv = fields
            .get("conv")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok());
        events.push(TimelineEvent {
            index,
            t_ms: record.t_ms,
            lane,
            category: category_of(&kind).to_string(),
            conv,
            message: message_of(record.node, &fields, &mut committed),
            detail: detail(&fields),
            kind,
        });
    }
    events
}

fn field_u64(fields: &Map<String, Value>, name: &str) -> Option<u64> {
    fields.get(name).and_then(Value::as_u64)
}

/// The message an event names, read from its fields so new event types that use the same
/// field names are followed too: `sender_device` + `client_msg_id`; a device's own
/// `client_msg_id`; the server's `device` + `client_msg_id`; else `conv` + `seq`, looked up among
/// the commits seen so far (a commit records both names of a message).
fn message_of(
    node: Node,
    fields: &Map<String, Value>,
    committed: &mut BTreeMap<(u64, u64), MessageRef>,
) -> Option<MessageRef> {
    let sender = field_u64(fields, "sender_device").or_else(|| match node {
        Node::Device(device) => Some(u64::from(device.0)),
        _ => field_u64(fields, "device"),
    });
    let named = match (sender, field_u64(fields, "client_msg_id")) {
        (Some(sender), Some(client_msg_id)) => Some(MessageRef {
            sender_device: u32::try_from(sender).ok()?,
            client_msg_id,
        }),
        _ => None,
    };
    let position = field_u64(fields, "conv").zip(field_u64(fields, "seq"));
    match (named, position) {
        (Some(message), Some(position)) => {
            committed.insert(position, message);
            Some(message)
        }
        (Some(message), None) => Some(message),
        (None, Some(position)) => committed.get(&position).copied(),
        (None, None) => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::*;
    use imsim_sim::history::Direction;

    fn summary(history: &History, violations: &[Violation]) -> Report {
        build(&RunSummary {
            scenario: "scenarios/hand.toml",
            seed: 7,
            history,
            violations,
            stats: None,
        })
    }

    #[test]
    fn lanes_are_the_server_then_devices_user_by_user() {
        let mut history = start();
        // A device the topology does not list still gets a lane, after the known ones.
        login(&mut history, 5, DeviceId(9));
        let lanes = Lanes::new(&history);
        let ids: Vec<&str> = lanes.lanes.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(
            ids,
            ["server", "device-1", "device-2", "device-3", "device-9"]
        );
        assert_eq!(lanes.lanes[2].label, "d2 · u1");
        assert_eq!(lanes.lanes[3].user, Some(2));
        assert_eq!(lanes.lanes[4].user, None);
        assert_eq!(lanes.of(Node::Device(D3)), Some(3));
        // Every harness event of this history is a band or setup: no harness lane.
        assert_eq!(lanes.of(Node::Harness), None);
    }

    #[test]
    fn events_keep_history_indices_lanes_categories_and_fields() {
        let mut history = start();
        let sent = send(&mut history, 100, D1, 1);
        let committed = commit(&mut history, 110, D1, 1, 1);
        let report = summary(&history, &[]);
        let events = &report.events;
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].index, events[0].lane), (sent, 1));
        assert_eq!((events[1].index, events[1].lane), (committed, 0));
        assert_eq!(events[0].kind, "send_requested");
        assert_eq!(events[0].category, "send");
        assert_eq!(events[1].category, "commit");
        assert_eq!(events[1].conv, Some(1));
        assert!(
            events[1].detail.starts_with("conv=1 seq=1 body="),
            "{}",
            events[1].detail
        );
    }

    #[test]
    fn events_name_their_message_directly_or_by_conversation_and_seq() {
        let mut history = start();
        send(&mut history, 100, D1, 4);
        commit(&mut history, 110, D1, 4, 1);
        let ack = Event::AckSent {
            device: D1,
            conv: C1,
            client_msg_id: imsim_model::ClientMsgId(4),
            seq: imsim_model::Seq(1),
        };
        on(&mut history, 111, Node::Server, ack);
        let held = Event::HeldBack {
            conv: C1,
            seq: imsim_model::Seq(1),
        };
        on(&mut history, 120, Node::Device(D3), held);
        display(&mut history, 130, D3, D1, 4, 1);
        let cursor = Event::CursorAdvanced {
            conv: C1,
            cursor: imsim_model::Seq(1),
        };
        on(&mut history, 131, Node::Device(D3), cursor);
        let report = summary(&history, &[]);
        let m4 = Some(MessageRef {
            sender_device: 1,
            client_msg_id: 4,
        });
        let messages: Vec<_> = report.events.iter().map(|e| e.message).collect();
        assert_eq!(messages, vec![m4, m4, m4, m4, m4, None]);
    }

    #[test]
    fn unknown_event_types_are_drawn_as_other() {
        assert_eq!(category_of("presence_changed"), "other");
        assert_eq!(category_of("displayed"), "display");
        for category in CATEGORIES {
            assert!(CATEGORIES.contains(&category));
        }
    }

    #[test]
    fn long_values_are_shortened_in_details() {
        let mut fields = Map::new();
        fields.insert("body".to_string(), Value::String("x".repeat(200)));
        fields.insert("seq".to_string(), Value::from(4));
        let text = detail(&fields);
        assert!(text.starts_with("seq=4 body=\"xxx"), "{text}");
        assert!(text.ends_with('…') && text.chars().count() < 70, "{text}");
    }

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

    #[test]
    fn densest_window_finds_the_busiest_stretch() {
        let times = [0, 10, 1_000, 1_001, 1_002, 1_003, 5_000];
        assert_eq!(densest(&times, 100), (1_000, 4));
        assert_eq!(densest(&times, 2_000), (0, 6));
        assert_eq!(densest(&[], 100), (0, 0));
    }

    fn events_at(times: &[u64]) -> Vec<TimelineEvent> {
        times
            .iter()
            .enumerate()
            .map(|(index, t_ms)| TimelineEvent {
                index,
                t_ms: *t_ms,
                lane: 0,
                kind: "displayed".to_string(),
                category: "display".to_string(),
                conv: None,
                message: None,
                detail: String::new(),
            })
            .collect()
    }

    #[test]
    fn focus_is_the_witness_else_the_whole_run_else_the_densest_stretch() {
        let few = events_at(&[100, 200, 50_000]);
        let witness = focus(&few, &[10_000, 12_000], 60_000);
        assert_eq!(
            (witness.start_ms, witness.end_ms, witness.reason),
            (8_500, 13_500, FocusReason::Witness)
        );
        let whole = focus(&few, &[], 60_000);
        assert_eq!((whole.start_ms, whole.reason), (0, FocusReason::WholeRun));
        assert!(whole.end_ms > 50_000 && whole.end_ms <= 60_000);
        // Many events, most of them in a burst around 30 s: the first view is that burst.
        let mut times: Vec<u64> = (0..FOCUS_EVENTS_TARGET as u64).map(|i| i * 100).collect();
        times.extend((0..FOCUS_EVENTS_TARGET as u64).map(|i| 300_000 + i));
        times.sort();
        let dense = focus(&events_at(&times), &[], 400_000);
        assert_eq!(dense.reason, FocusReason::Densest);
        assert!(
            dense.start_ms <= 300_000 && dense.end_ms >= 300_000 + 1_500,
            "{dense:?}"
        );
        assert!(dense.end_ms - dense.start_ms < 400_000);
    }

    #[test]
    fn invariant_table_lists_every_invariant_with_its_class_and_status() {
        let violation = Violation {
            invariant: Invariant::E1NoDuplicateDisplay,
            explanation: "shown twice".to_string(),
            witness: vec![],
        };
        let rows = invariant_rows(&[violation], false);
        assert_eq!(rows.len(), Invariant::ALL.len());
        let row = |code: &str| rows.iter().find(|r| r.code == code).unwrap();
        assert_eq!(
            (row("E1").status, row("E1").violations),
            (Status::Violated, 1)
        );
        assert_eq!(row("E1").class, "always");
        assert_eq!(row("O1").status, Status::Held);
        // An incomplete history has no liveness verdict.
        assert_eq!(row("D2").status, Status::NotJudged);
        assert_eq!(row("D2").class, "eventually");
        assert_eq!(invariant_rows(&[], true)[8].status, Status::Held);
    }

    #[test]
    fn a_violation_carries_its_witness_records_and_the_replay_command() {
        let mut history = start();
        send(&mut history, 100, D1, 1);
        let first = display(&mut history, 150, D3, D1, 1, 1);
        let second = display(&mut history, 160, D3, D1, 1, 1);
        let violation = Violation {
            invariant: Invariant::E1NoDuplicateDisplay,
            explanation: "d3 showed m1 twice".to_string(),
            witness: vec![first, second],
        };
        let report = summary(&history, &[violation]);
        assert!(!report.ok);
        assert_eq!(report.replay, "imsim replay scenarios/hand.toml --seed 7");
        let witness = &report.violations[0].witness;
        assert_eq!(witness.len(), 2);
        assert_eq!((witness[1].index, witness[1].t_ms), (second, 160));
        assert_eq!(
            (witness[1].node.as_str(), witness[1].kind.as_str()),
            ("device-3", "displayed")
        );
        assert!(witness[1].line.contains("displayed"));
        assert_eq!(report.focus.reason, FocusReason::Witness);
        assert_eq!(report.scenario_name, "hand-made");
    }
}
