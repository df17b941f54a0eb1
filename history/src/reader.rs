//! Reading a history from JSON lines, written by `imsim` or by anything else (another IM
//! system's clients). Each line is checked on its own and a problem is reported with its line
//! number and what is wrong in words: not JSON, truncated, a missing or mistyped field, an
//! unknown event type, an event reported by the wrong kind of node, time going backwards.
//! The format is documented in `docs/history-format.md`.

use crate::{Entry, HarnessEvent, History, Node, Record};
use imsim_model::Event;
use serde_json::{Map, Value};

/// The event types the harness records (`HarnessEvent`), as they appear in `type`.
pub const HARNESS_EVENT_TYPES: [&str; 8] = [
    "run_started",
    "partition_started",
    "partition_healed",
    "node_crashed",
    "node_restarted",
    "liveness_phase_started",
    "final_timeline",
    "run_ended",
];

/// Which kind of node reports an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporter {
    Device,
    Server,
    Harness,
}

/// Who reports each protocol event: `Client` or `Server` (model/src/event.rs). Exhaustive on
/// purpose: a new event does not compile until it is placed here (and documented).
pub fn reporter_of(event: &Event) -> Reporter {
    match event {
        Event::LoggedIn { .. }
        | Event::SessionLost { .. }
        | Event::SendRequested { .. }
        | Event::SendRefused { .. }
        | Event::SendFailed { .. }
        | Event::SendAcked { .. }
        | Event::Displayed { .. }
        | Event::CursorAdvanced { .. }
        | Event::DuplicateDropped { .. }
        | Event::HeldBack { .. }
        | Event::HoldBackOverflow { .. }
        | Event::PullSent { .. }
        | Event::Retransmitted { .. }
        | Event::ConversationOpened { .. }
        | Event::ReadMarked { .. }
        | Event::ReadSeen { .. }
        | Event::ReadCountSeen { .. }
        | Event::ReadersSeen { .. }
        | Event::PresenceSeen { .. } => Reporter::Device,
        Event::SessionOpened { .. }
        | Event::SessionClosed { .. }
        | Event::Committed { .. }
        | Event::AckSent { .. }
        | Event::RetransmitDeduplicated { .. }
        | Event::OutOfOrderDropped { .. }
        | Event::Rejected { .. }
        | Event::Recovered { .. }
        | Event::PushAbandoned { .. }
        | Event::ReadAdvanced { .. }
        | Event::ReadIgnored { .. }
        | Event::PresenceChanged { .. } => Reporter::Server,
    }
}

/// Parses JSON lines into a history. Blank lines are skipped. The error is the 1-based line
/// number and a sentence saying what is wrong.
pub fn parse_jsonl(text: &str) -> Result<History, (usize, String)> {
    let mut history = History::default();
    let mut previous: Option<(usize, u64)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_record(line).map_err(|message| (number, message))?;
        if let Some((previous_line, previous_ms)) = previous {
            if record.t_ms < previous_ms {
                return Err((
                    number,
                    format!(
                        "t_ms {} is earlier than t_ms {previous_ms} on line {previous_line}: \
                         records must be in the order they happened",
                        record.t_ms
                    ),
                ));
            }
        }
        previous = Some((number, record.t_ms));
        history.records.push(record);
    }
    Ok(history)
}

/// One line: a JSON object with `t_ms`, `node`, `type` and the fields of that type.
pub fn parse_record(line: &str) -> Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|error| json_error(&error))?;
    let Value::Object(mut object) = value else {
        return Err(format!(
            "expected a JSON object ({{\"t_ms\": …, \"node\": …, \"type\": …}}), found {}",
            kind_of(&value)
        ));
    };
    let t_ms = match object.remove("t_ms") {
        Some(Value::Number(number)) if number.as_u64().is_some() => number.as_u64().unwrap_or(0),
        Some(other) => {
            return Err(format!(
                "t_ms must be a whole number of milliseconds (0 or more), found {other}"
            ))
        }
        None => return Err("missing field `t_ms` (simulated time in milliseconds)".to_string()),
    };
    let node = match object.remove("node") {
        Some(value) => serde_json::from_value::<Node>(value.clone()).map_err(|_| {
            format!("node must be \"server\", \"harness\" or {{\"device\": N}}, found {value}")
        })?,
        None => {
            return Err(
                "missing field `node` (\"server\", \"harness\" or {\"device\": N})".to_string(),
            )
        }
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(other) => return Err(format!("type must be a string, found {other}")),
        None => return Err("missing field `type` (the event type, e.g. \"displayed\")".to_string()),
    };
    let entry = parse_entry(&kind, object)?;
    let reporter = match &entry {
        Entry::Protocol(event) => reporter_of(event),
        Entry::Harness(_) => Reporter::Harness,
    };
    let expected = match reporter {
        Reporter::Device => matches!(node, Node::Device(_)),
        Reporter::Server => node == Node::Server,
        Reporter::Harness => node == Node::Harness,
    };
    if !expected {
        let who = match reporter {
            Reporter::Device => "a device event: its node must be {\"device\": N}",
            Reporter::Server => "a server event: its node must be \"server\"",
            Reporter::Harness => "a harness event: its node must be \"harness\"",
        };
        return Err(format!("{kind} is {who}, found {}", node_json(node)));
    }
    Ok(Record { t_ms, node, entry })
}

fn parse_entry(kind: &str, object: Map<String, Value>) -> Result<Entry, String> {
    let value = Value::Object(object);
    if HARNESS_EVENT_TYPES.contains(&kind) {
        return serde_json::from_value::<HarnessEvent>(value)
            .map(Entry::Harness)
            .map_err(|error| format!("{kind}: {error}"));
    }
    serde_json::from_value::<Event>(value)
        .map(Entry::Protocol)
        .map_err(|error| {
            let text = error.to_string();
            if text.starts_with("unknown variant") {
                format!(
                    "unknown event type `{kind}` (docs/history-format.md lists the event types)"
                )
            } else {
                format!("{kind}: {text}")
            }
        })
}

/// serde_json's message without its "at line 1 column N" (every line is line 1 to it), with the
/// column said in words, and a truncated line called what it probably is.
fn json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(message, _)| message);
    match error.classify() {
        serde_json::error::Category::Eof => {
            format!("the line ends in the middle of a JSON value ({message}): is it truncated?")
        }
        _ => format!("not valid JSON at column {}: {message}", error.column()),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn node_json(node: Node) -> String {
    serde_json::to_string(&node).unwrap_or_else(|_| node.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER_COMMIT: &str = r#"{"t_ms":5,"node":"server","type":"committed","conv":1,"seq":1,"sender_user":1,"sender_device":1,"client_msg_id":1,"client_seq":1,"body":"hi"}"#;

    fn error_of(text: &str) -> (usize, String) {
        parse_jsonl(text).expect_err("malformed")
    }

    #[test]
    fn a_good_history_parses() {
        let text = format!(
            "{SERVER_COMMIT}\n\n{}\n{}\n",
            r#"{"t_ms":9,"node":{"device":2},"type":"cursor_advanced","conv":1,"cursor":1}"#,
            r#"{"t_ms":9,"node":"harness","type":"run_ended"}"#
        );
        let history = parse_jsonl(&text).expect("parses");
        assert_eq!(history.records.len(), 3);
        assert_eq!(
            history.records[1].node,
            Node::Device(imsim_model::DeviceId(2))
        );
        assert!(history.is_complete());
    }

    #[test]
    fn a_truncated_line_is_named_as_such() {
        let truncated = &SERVER_COMMIT[..60];
        let (line, message) = error_of(&format!("{SERVER_COMMIT}\n{truncated}\n"));
        assert_eq!(line, 2);
        assert!(message.contains("truncated"), "{message}");
        assert!(!message.contains("line 1"), "{message}");
    }

    #[test]
    fn each_problem_is_said_in_words() {
        let cases = [
            ("[1, 2]", "expected a JSON object"),
            ("{\"t_ms\": 1,, }", "not valid JSON at column"),
            (
                r#"{"node":"server","type":"run_ended"}"#,
                "missing field `t_ms`",
            ),
            (
                r#"{"t_ms":-4,"node":"harness","type":"run_ended"}"#,
                "whole number",
            ),
            (
                r#"{"t_ms":1,"node":"laptop","type":"run_ended"}"#,
                "node must be",
            ),
            (r#"{"t_ms":1,"node":"harness"}"#, "missing field `type`"),
            (
                r#"{"t_ms":1,"node":"server","type":"teleported"}"#,
                "unknown event type `teleported`",
            ),
            (
                r#"{"t_ms":1,"node":"server","type":"committed","seq":1}"#,
                "committed: missing field",
            ),
            (
                r#"{"t_ms":1,"node":{"device":1},"type":"cursor_advanced","conv":"c1","cursor":1}"#,
                "cursor_advanced: invalid type",
            ),
            (
                r#"{"t_ms":1,"node":"server","type":"displayed","conv":1,"seq":1,"sender_user":1,"sender_device":1,"client_msg_id":1,"body":""}"#,
                "displayed is a device event",
            ),
            (
                r#"{"t_ms":1,"node":{"device":1},"type":"run_ended"}"#,
                "run_ended is a harness event",
            ),
        ];
        for (line, expected) in cases {
            let (number, message) = error_of(line);
            assert_eq!(number, 1);
            assert!(message.contains(expected), "{line}: {message}");
        }
    }

    #[test]
    fn time_must_not_go_backwards() {
        let text = format!(
            "{SERVER_COMMIT}\n{}\n",
            r#"{"t_ms":4,"node":"harness","type":"run_ended"}"#
        );
        let (line, message) = error_of(&text);
        assert_eq!(line, 2);
        assert!(
            message.contains("earlier than t_ms 5 on line 1"),
            "{message}"
        );
    }
}
