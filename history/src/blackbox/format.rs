//! The black-box history profile: what the clients of a server we did not write can observe,
//! as JSON lines (docs/history-format.md, "Black-box histories").
//!
//! Unlike an imsim history there are no server records: no commit time, no per-conversation
//! seq. Ids are strings (the server's stanza ids, the clients' message ids). The durable truth
//! is the `final_read` of every conversation's archive at the end of the run. Records of a type
//! this reader does not know are kept as `Unknown` and counted, never refused, so a writer can
//! add its own.

use serde::{Deserialize, Serialize};

/// The `type` of the first record of every black-box history.
pub const HEADER_TYPE: &str = "blackbox_started";

/// One line of a black-box history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlackBoxRecord {
    /// Wall-clock milliseconds since the start of the run, never decreasing.
    pub t_ms: u64,
    #[serde(flatten)]
    pub event: BlackBoxEvent,
}

/// A client (one connection-owning device of one user) in the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub client: String,
    pub user: String,
}

/// A conversation in the header: a 1:1 chat (one archive per member user) or a group (one
/// shared archive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationInfo {
    pub conv: String,
    pub kind: ConversationKind,
    pub members: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

/// How a message reached a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Pushed on the live stream.
    Live,
    /// A copy of a message another device of the same user sent or received (XEP-0280).
    Carbon,
    /// Delivered late with an XEP-0203 delay stamp: from offline storage at login, or from
    /// the queue of a session that was resumed (XEP-0198).
    Delayed,
    /// Fetched from the archive after a reconnect (XEP-0313).
    Catchup,
}

/// What a read marker or receipt says about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    /// Delivered to a device (XEP-0184 receipt or XEP-0333 `received`).
    Received,
    /// Shown to the user (XEP-0333 `displayed`): a read marker.
    Displayed,
}

/// One entry of a conversation's archive as the final read returned it, in archive order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// The server's id of the entry (XEP-0359 stanza-id / the archive result id).
    pub server_id: String,
    /// The sender's own message id, when the stored message carries one.
    #[serde(default)]
    pub msg: Option<String>,
    pub sender: String,
    pub body: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlackBoxEvent {
    /// The header: the system under test, the clients and the conversations.
    BlackboxStarted {
        system: String,
        #[serde(default)]
        seed: Option<u64>,
        #[serde(default)]
        faults: serde_json::Value,
        clients: Vec<ClientInfo>,
        conversations: Vec<ConversationInfo>,
    },
    /// The user pressed send: `msg` is the client's id for the message.
    SendInvoked {
        client: String,
        conv: String,
        msg: String,
        body: String,
    },
    /// The server acknowledged receiving the message (XEP-0198 `<a h>` or the group's
    /// reflection); `server_id` when the acknowledgement names the stored entry.
    SendAcked {
        client: String,
        conv: String,
        msg: String,
        #[serde(default)]
        server_id: Option<String>,
    },
    /// The client sent the message again (on a new session, after resumption failed).
    SendRetried {
        client: String,
        conv: String,
        msg: String,
    },
    /// The client shows the message as failed.
    SendFailed {
        client: String,
        conv: String,
        msg: String,
        reason: String,
    },
    /// A message arrived, before the client's dedupe.
    Received {
        client: String,
        session: String,
        conv: String,
        #[serde(default)]
        msg: Option<String>,
        sender: String,
        body: String,
        #[serde(default)]
        server_id: Option<String>,
        /// The server's order token, when it hands one out (a sequence number, a timestamp
        /// it promises to order by). XMPP gives none: stanza ids are opaque.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order: Option<String>,
        via: Via,
    },
    /// The client showed the message to its user (after its dedupe).
    Displayed {
        client: String,
        conv: String,
        msg: String,
        sender: String,
        body: String,
    },
    /// The client sent a marker or receipt for the message `msg` of `sender`.
    MarkerSent {
        client: String,
        conv: String,
        msg: String,
        sender: String,
        kind: MarkerKind,
    },
    /// A marker or receipt from `from` (a user) about the message `msg` arrived.
    MarkerReceived {
        client: String,
        conv: String,
        msg: String,
        from: String,
        kind: MarkerKind,
    },
    SessionStarted {
        client: String,
        session: String,
    },
    SessionLost {
        client: String,
        session: String,
        reason: String,
    },
    SessionResumed {
        client: String,
        session: String,
    },
    /// The harness applied a fault (`fault`: reset, stall, blackhole, delay, refuse,
    /// server_kill) to `target` (a client or `server`).
    Fault {
        fault: String,
        target: String,
        #[serde(default)]
        detail: Option<String>,
    },
    /// The harness ended a fault (`fault` as above), or restarted the server.
    FaultHealed {
        fault: String,
        target: String,
    },
    /// The archive of `conv` as `reader` (a user) reads it at the end: the durable truth.
    FinalRead {
        conv: String,
        reader: String,
        entries: Vec<ArchiveEntry>,
    },
    /// Faults healed, quiet period over, final reads done: liveness is judged here.
    RunEnded,
    /// A record type this reader does not know; kept only to be counted.
    #[serde(other)]
    Unknown,
}

/// A black-box history: the records in the order they happened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlackBoxHistory {
    pub records: Vec<BlackBoxRecord>,
}

impl BlackBoxHistory {
    /// True when the first non-blank line is a black-box header, so `imsim check` can tell
    /// the two profiles apart without parsing the whole file.
    pub fn looks_like(text: &str) -> bool {
        text.lines()
            .find(|line| !line.trim().is_empty())
            .and_then(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .is_some_and(|value| value["type"] == HEADER_TYPE)
    }

    /// Reads JSON lines; an error names the 1-based line and what is wrong with it.
    pub fn from_jsonl(text: &str) -> Result<BlackBoxHistory, (usize, String)> {
        let mut records: Vec<BlackBoxRecord> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let record: BlackBoxRecord = serde_json::from_str(line)
                .map_err(|error| (number, format!("not a black-box record: {error}")))?;
            if let Some(previous) = records.last() {
                if record.t_ms < previous.t_ms {
                    return Err((
                        number,
                        format!(
                            "t_ms {} is earlier than t_ms {} on the line before: records must be in the order they happened",
                            record.t_ms, previous.t_ms
                        ),
                    ));
                }
            }
            if records.is_empty() && !matches!(record.event, BlackBoxEvent::BlackboxStarted { .. })
            {
                return Err((
                    number,
                    format!("the first record of a black-box history must be `{HEADER_TYPE}`"),
                ));
            }
            records.push(record);
        }
        Ok(BlackBoxHistory { records })
    }

    pub fn to_jsonl(&self) -> String {
        let mut text = String::new();
        for record in &self.records {
            // Serialising plain data with string keys cannot fail.
            text += &serde_json::to_string(record).expect("a record serialises");
            text.push('\n');
        }
        text
    }

    /// The header, when the history has one.
    pub fn header(&self) -> Option<(&[ClientInfo], &[ConversationInfo])> {
        self.records.iter().find_map(|record| match &record.event {
            BlackBoxEvent::BlackboxStarted {
                clients,
                conversations,
                ..
            } => Some((clients.as_slice(), conversations.as_slice())),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_unknown_types_are_kept() {
        let text = concat!(
            r#"{"t_ms":0,"type":"blackbox_started","system":"x","clients":[{"client":"a","user":"u1"}],"conversations":[{"conv":"c","kind":"group","members":["u1"]}]}"#,
            "\n",
            r#"{"t_ms":5,"type":"send_invoked","client":"a","conv":"c","msg":"m1","body":"hi","extra":1}"#,
            "\n",
            r#"{"t_ms":6,"type":"typing_started","client":"a"}"#,
            "\n"
        );
        assert!(BlackBoxHistory::looks_like(text));
        let history = BlackBoxHistory::from_jsonl(text).unwrap();
        assert_eq!(history.records.len(), 3);
        assert_eq!(history.records[2].event, BlackBoxEvent::Unknown);
        let again = BlackBoxHistory::from_jsonl(&history.to_jsonl()).unwrap();
        assert_eq!(again.records[1], history.records[1]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let text = concat!(
            r#"{"t_ms":0,"type":"blackbox_started","system":"x","clients":[],"conversations":[]}"#,
            "\n",
            r#"{"t_ms":5,"type":"send_invoked","client":"a","conv":"c","body":"hi"}"#,
        );
        let (line, message) = BlackBoxHistory::from_jsonl(text).unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("missing field `msg`"), "{message}");
        let backwards = concat!(
            r#"{"t_ms":9,"type":"blackbox_started","system":"x","clients":[],"conversations":[]}"#,
            "\n",
            r#"{"t_ms":5,"type":"run_ended"}"#,
        );
        let (line, message) = BlackBoxHistory::from_jsonl(backwards).unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("earlier"), "{message}");
    }
}
