//! From a run's history and verdict to a [`Report`]: lanes, timeline events, counts, the
//! invariant table and the violations, with the bands (`bands.rs`), the first window
//! (`focus.rs`) and the latencies (`latency.rs`) from their own files. Events are read generically (their `type`
//! and fields as JSON), so an event type added to the model later is drawn without a change here;
//! only the types that carry meaning for a band or a count are matched by name.

use crate::bands::{bands, liveness_phase};
use crate::focus::focus;
use crate::lanes::{is_drawn_as_band, Lanes};
use crate::latency;
use crate::report::{
    Counts, InvariantRow, MessageRef, PacketCounts, Report, SignalCount, Status, TimelineEvent,
    ViolationReport, WitnessRecord, FORMAT_VERSION,
};
use crate::RunSummary;
use imsim_history::category::Category;
use imsim_history::stats::HistoryCounts;
use imsim_history::{replay_command, Class, Invariant, Violation};
use imsim_history::{Entry, HarnessEvent, History, Node};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Event categories, in the order the legend lists them (`imsim_history::category`).
pub const CATEGORIES: [&str; 10] = {
    let mut names = [""; 10];
    let mut i = 0;
    while i < names.len() {
        names[i] = Category::ALL[i].name();
        i += 1;
    }
    names
};

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
        replay: replay_command(
            summary.scenario,
            summary.seed,
            start
                .and_then(|s| imsim_model::Variant::parse(&s.variant).ok())
                .unwrap_or_default(),
        ),
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
        coverage: imsim_history::coverage::signals(history)
            .into_iter()
            .map(|(signal, count)| SignalCount {
                signal: signal.name().to_string(),
                description: signal.description().to_string(),
                count,
            })
            .collect(),
    }
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
            category: Category::of(&record.entry).name().to_string(),
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
                category: Category::of(&record.entry).name().to_string(),
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
    let counted = HistoryCounts::of(summary.history);
    Counts {
        records: summary.history.records.len() as u64,
        events: events as u64,
        sends: counted.sends,
        committed: counted.committed,
        acked: counted.acked,
        displayed: counted.displayed,
        send_failures: counted.send_failures,
        pulls: counted.pulls,
        server_crashes: counted.server_crashes,
        device_restarts: counted.device_restarts,
        partitions: counted.partitions,
        packets: summary.stats.map(|stats| PacketCounts {
            sent: stats.packets.sent,
            dropped: stats.packets.dropped,
            duplicated: stats.packets.duplicated,
            delayed: stats.packets.delayed,
            held: stats.packets.held,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::*;
    use crate::report::FocusReason;
    use imsim_model::{DeviceId, Event};

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

    #[test]
    fn every_coverage_signal_is_listed_with_its_count_in_every_rendering() {
        let mut history = start();
        let held = Event::HeldBack {
            conv: C1,
            seq: imsim_model::Seq(2),
        };
        on(&mut history, 10, Node::Device(D3), held);
        let report = summary(&history, &[]);
        let names: Vec<&str> = report.coverage.iter().map(|r| r.signal.as_str()).collect();
        let all: Vec<&str> = imsim_history::coverage::Signal::ALL
            .iter()
            .map(|s| s.name())
            .collect();
        assert_eq!(names, all);
        let count = |name: &str| {
            report
                .coverage
                .iter()
                .find(|r| r.signal == name)
                .unwrap()
                .count
        };
        assert_eq!(count("held-back"), 1);
        assert_eq!(count("batched-ack"), 0);

        let markdown = report.to_markdown();
        assert!(markdown.contains(&format!("coverage signals: 1 of {} hit", all.len())));
        assert!(markdown.contains("| `held-back` | 1 |"), "{markdown}");
        let html = report.to_html();
        assert!(html.contains(r#"<table id="coverage" class="coverage">"#));
        assert!(html.contains(
            r#"<tr class="hit"><td class="code">held-back</td><td class="count">1</td>"#
        ));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["coverage"][0]["signal"], all[0]);

        // A report.json written before coverage existed still reads.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("coverage");
        let read: Report = serde_json::from_value(old).unwrap();
        assert!(read.coverage.is_empty());
    }
}
