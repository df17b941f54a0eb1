//! Reading a history from JSON lines, written by `imsim` or by anything else (another IM
//! system's clients). Each line is checked on its own and a problem is reported with its line
//! number and what is wrong in words: not JSON, truncated, a missing or mistyped field, an
//! unknown event type, an event reported by the wrong kind of node, time going backwards.
//! The format is documented in `docs/history-format.md`.

use crate::excerpt::{cut, fit_lines, EXCERPT_CHARS_MAX};
use crate::{Entry, HarnessEvent, History, Node, Record};
use imsim_model::Event;
use serde_json::{Map, Value};

/// The event types the harness records (`HarnessEvent`), as they appear in `type`.
pub const HARNESS_EVENT_TYPES: [&str; 22] = [
    "run_started",
    "partition_started",
    "partition_healed",
    "node_crashed",
    "node_restarted",
    "liveness_phase_started",
    "final_timeline",
    "traffic",
    "run_ended",
    "gateway_crashed",
    "gateway_restarted",
    "gateway_partition_started",
    "gateway_partition_healed",
    "placement_fired",
    "logic_crashed",
    "logic_restarted",
    "shard_handed_over",
    "consumer_crashed",
    "consumer_restarted",
    "queue_redelivered",
    "queue_duplicate_skipped",
    "queue_overflowed",
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
        | Event::LoginSent { .. }
        | Event::LoginFailed { .. }
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
        | Event::PresenceSeen { .. }
        | Event::FailedOver { .. } => Reporter::Device,
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
        | Event::PresenceChanged { .. }
        | Event::RouteStale { .. } => Reporter::Server,
    }
}

/// The text of a history file's bytes; the error is the 1-based line of the first byte that is
/// not UTF-8, and a sentence naming it and its column.
pub fn decode(bytes: &[u8]) -> Result<&str, (usize, String)> {
    std::str::from_utf8(bytes).map_err(|error| {
        let valid = &bytes[..error.valid_up_to()];
        let line = 1 + valid.iter().filter(|b| **b == b'\n').count();
        let line_start = valid
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        // The column in characters, as an editor counts it: the line's prefix is valid UTF-8.
        let column = 1 + String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count();
        let byte = bytes[error.valid_up_to()];
        (
            line,
            format!(
                "not valid UTF-8: byte 0x{byte:02x} at column {column}; a history is UTF-8 JSON \
                 lines"
            ),
        )
    })
}

/// Parses JSON lines into a history. Blank lines are skipped, and so is a UTF-8 byte order mark
/// at the start (some Windows tools write one). The error is the 1-based line number and a
/// sentence saying what is wrong, quoting at most about `EXCERPT_CHARS_MAX` characters of the
/// line.
pub fn parse_jsonl(text: &str) -> Result<History, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut history = History::default();
    let mut previous: Option<(usize, u64)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_record(line)
            .map_err(|message| (number, fit_lines(&message, 2 * EXCERPT_CHARS_MAX)))?;
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
    if let Some((field, number)) = out_of_range(&object) {
        let kind = match object.get("type") {
            Some(Value::String(kind)) => format!("{}: ", cut(kind, EXCERPT_CHARS_MAX)),
            _ => String::new(),
        };
        return Err(format!(
            "{kind}field `{field}`: {number} is out of range (whole numbers in a history are 0 \
             to {})",
            u64::MAX
        ));
    }
    let t_ms = match object.remove("t_ms") {
        Some(Value::Number(number)) if number.as_u64().is_some() => number.as_u64().unwrap_or(0),
        Some(other) => {
            let found = quote(&other);
            return Err(format!(
                "t_ms must be a whole number of milliseconds (0 or more), found {found}"
            ));
        }
        None => return Err("missing field `t_ms` (simulated time in milliseconds)".to_string()),
    };
    let node = match object.remove("node") {
        Some(value) => serde_json::from_value::<Node>(value.clone()).map_err(|_| {
            let found = quote(&value);
            format!("node must be \"server\", \"harness\" or {{\"device\": N}}, found {found}")
        })?,
        None => {
            return Err(
                "missing field `node` (\"server\", \"harness\" or {\"device\": N})".to_string(),
            )
        }
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(other) => return Err(format!("type must be a string, found {}", quote(other))),
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

/// The first number (by field path) too large for any integer field, e.g. 1e20 written out as
/// digits: serde_json reads it as a float, which would be reported as "floating point".
fn out_of_range(object: &Map<String, Value>) -> Option<(String, String)> {
    fn find(path: &str, value: &Value) -> Option<(String, String)> {
        match value {
            Value::Number(number) => {
                let float = number.as_f64().filter(|_| number.is_f64())?;
                let whole = float.fract() == 0.0 && float.abs() >= u64::MAX as f64;
                whole.then(|| (path.to_string(), number.to_string()))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(index, item)| find(&format!("{path}[{index}]"), item)),
            Value::Object(fields) => fields.iter().find_map(|(key, item)| {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                find(&path, item)
            }),
            _ => None,
        }
    }
    object
        .iter()
        .find_map(|(key, value)| find(&cut(key, EXCERPT_CHARS_MAX), value))
}

/// serde's "invalid value: integer `N`, expected u32" in words: N is out of range for a field
/// of that width.
fn integer_out_of_range(text: &str) -> Option<String> {
    let rest = text.strip_prefix("invalid value: integer `")?;
    let (number, expected) = rest.split_once("`, expected ")?;
    let max = match expected {
        "u8" => u64::from(u8::MAX),
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        _ => return None,
    };
    Some(format!(
        "{number} is out of range (this field is a whole number from 0 to {max})"
    ))
}

/// A value as an error message quotes it: at most about `EXCERPT_CHARS_MAX` characters.
fn quote(value: &Value) -> String {
    cut(&value.to_string(), EXCERPT_CHARS_MAX)
}

fn parse_entry(kind: &str, object: Map<String, Value>) -> Result<Entry, String> {
    let value = Value::Object(object);
    // Error messages quote the type (it may be anything) cut short, and serde's own text too:
    // it can quote a value.
    let named = cut(kind, EXCERPT_CHARS_MAX);
    if HARNESS_EVENT_TYPES.contains(&kind) {
        return serde_json::from_value::<HarnessEvent>(value)
            .map(Entry::Harness)
            .map_err(|error| harness_error(kind, &error));
    }
    serde_json::from_value::<Event>(value)
        .map(Entry::Protocol)
        .map_err(|error| {
            let text = error.to_string();
            if let Some(range) = integer_out_of_range(&text) {
                format!("{named}: {range}")
            } else if text.starts_with("unknown variant") {
                format!(
                    "unknown event type `{named}` (docs/history-format.md lists the event types)"
                )
            } else {
                format!("{named}: {}", cut(&text, EXCERPT_CHARS_MAX))
            }
        })
}

fn harness_error(kind: &str, error: &serde_json::Error) -> String {
    let text = error.to_string();
    match integer_out_of_range(&text) {
        Some(range) => format!("{kind}: {range}"),
        None => format!("{kind}: {}", cut(&text, EXCERPT_CHARS_MAX)),
    }
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
    fn numbers_too_large_for_their_field_are_out_of_range() {
        let cases = [
            (
                r#"{"t_ms":100000000000000000000,"node":"harness","type":"run_ended"}"#,
                "run_ended: field `t_ms`: 1e+20 is out of range",
            ),
            (
                r#"{"t_ms":1,"node":{"device":1},"type":"cursor_advanced","conv":1,"cursor":1e30}"#,
                "cursor_advanced: field `cursor`: 1e+30 is out of range",
            ),
            (
                r#"{"t_ms":1,"node":{"device":1},"type":"cursor_advanced","conv":5000000000,"cursor":1}"#,
                "cursor_advanced: 5000000000 is out of range (this field is a whole number from 0 to 4294967295)",
            ),
        ];
        for (line, expected) in cases {
            let (_, message) = error_of(line);
            assert!(message.contains(expected), "{line}: {message}");
            assert!(!message.contains("floating point"), "{message}");
        }
        // A fraction is not a range problem: serde's own words stand.
        let (_, message) = error_of(
            r#"{"t_ms":1,"node":{"device":1},"type":"cursor_advanced","conv":1,"cursor":1.5}"#,
        );
        assert!(
            message.contains("invalid type: floating point"),
            "{message}"
        );
    }

    #[test]
    fn a_huge_value_is_quoted_in_part() {
        let huge = "x".repeat(2_000_000);
        let line = format!(r#"{{"t_ms":1,"node":"{huge}","type":"run_ended"}}"#);
        let (_, message) = error_of(&line);
        assert!(message.len() < 1_000, "{} bytes", message.len());
        assert!(message.contains("(1999802 more characters)"), "{message}");
        let line = format!(r#"{{"t_ms":1,"node":"server","type":"{huge}"}}"#);
        let (_, message) = error_of(&line);
        assert!(message.len() < 1_000, "{} bytes", message.len());
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_a_non_utf8_byte_is_named_by_line() {
        let text = format!("\u{feff}{SERVER_COMMIT}\n");
        assert_eq!(
            parse_jsonl(&text).expect("a BOM is skipped").records.len(),
            1
        );

        let mut bytes = format!("{SERVER_COMMIT}\n{SERVER_COMMIT}\n").into_bytes();
        let at = SERVER_COMMIT.len() + 1 + SERVER_COMMIT.find("hi").unwrap();
        bytes[at] = 0xff;
        let (line, message) = decode(&bytes).expect_err("not UTF-8");
        assert_eq!(line, 2);
        let column = SERVER_COMMIT.find("hi").unwrap() + 1;
        assert!(
            message.contains(&format!("byte 0xff at column {column}")),
            "{message}"
        );
        assert_eq!(decode(SERVER_COMMIT.as_bytes()), Ok(SERVER_COMMIT));
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
