//! The words a black-box verdict is reported in, shared by `imsim xmpp` and `imsim check`:
//! counts of what the history holds, every invariant judged (and on what), every invariant
//! not judged (and why), and each finding with its witness records.

use super::format::{BlackBoxEvent, BlackBoxHistory};
use super::judge::Verdict;
use crate::check::Class;
use serde_json::{json, Value};

/// One line of counts: sends, acks, displays, sessions, faults, archive entries, duration.
pub fn counts(history: &BlackBoxHistory) -> String {
    let mut counts = [0usize; 8];
    for record in &history.records {
        let slot = match &record.event {
            BlackBoxEvent::SendInvoked { .. } => 0,
            BlackBoxEvent::SendAcked { .. } => 1,
            BlackBoxEvent::Displayed { .. } => 2,
            BlackBoxEvent::MarkerReceived { .. } => 3,
            BlackBoxEvent::SessionLost { .. } => 4,
            BlackBoxEvent::SessionResumed { .. } => 5,
            BlackBoxEvent::Fault { .. } => 6,
            BlackBoxEvent::FinalRead { entries, .. } => {
                counts[7] += entries.len();
                continue;
            }
            _ => continue,
        };
        counts[slot] += 1;
    }
    let seconds = history
        .records
        .last()
        .map_or(0.0, |record| record.t_ms as f64 / 1000.0);
    format!(
        "sends {} acked {} displayed {} markers {} | sessions lost {} resumed {} | faults {} | archived {} | {seconds:.1}s",
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], counts[7]
    )
}

/// The verdict as indented text lines (without a header line).
pub fn verdict_text(history: &BlackBoxHistory, verdict: &Verdict) -> String {
    let mut text = String::new();
    let failed: Vec<_> = verdict
        .findings
        .iter()
        .map(|finding| finding.invariant)
        .collect();
    for (invariant, what) in &verdict.judged {
        let mark = if failed.contains(invariant) {
            "FAILED"
        } else {
            "held"
        };
        text += &format!("judged {invariant}: {mark} ({what})\n");
    }
    for (invariant, why) in &verdict.not_judged {
        text += &format!("not judged {invariant}: {why}\n");
    }
    for note in &verdict.notes {
        text += &format!("note: {note}\n");
    }
    for finding in &verdict.findings {
        let class = match finding.class() {
            Class::Safety => "safety",
            Class::Liveness => "liveness",
        };
        text += &format!(
            "VIOLATION {} ({class}): {}\n",
            finding.invariant, finding.explanation
        );
        for index in &finding.witness {
            if let Some(record) = history.records.get(*index) {
                let line = serde_json::to_string(record).unwrap_or_default();
                text += &format!("  [{index}] {}\n", shorten(&line));
            }
        }
    }
    text
}

/// What was judged and what not, as JSON fields (`judged`, `not_judged`, `notes`); the CLI
/// adds the violations in the one JSON shape every command uses.
pub fn judgement_json(verdict: &Verdict) -> Value {
    let judged: Vec<Value> = verdict
        .judged
        .iter()
        .map(|(invariant, what)| json!({"invariant": invariant.to_string(), "checked": what}))
        .collect();
    let not_judged: Vec<Value> = verdict
        .not_judged
        .iter()
        .map(|(invariant, why)| json!({"invariant": invariant.to_string(), "why": why}))
        .collect();
    json!({"judged": judged, "not_judged": not_judged, "notes": verdict.notes})
}

/// A final read can hold hundreds of entries: witnesses show its start.
fn shorten(line: &str) -> String {
    const WITNESS_CHARS_MAX: usize = 400;
    if line.chars().count() <= WITNESS_CHARS_MAX {
        return line.to_string();
    }
    let cut: String = line.chars().take(WITNESS_CHARS_MAX).collect();
    format!("{cut} …")
}
