//! `imsim check HISTORY.jsonl`: every checker over a history recorded anywhere — by `imsim
//! replay --history-out`, or by another IM system's clients writing the same format
//! (`docs/history-format.md`). Exit 0 when every invariant holds, 1 on violations (reported as
//! `imsim run` reports them), 2 when the file cannot be read or a line is malformed (its line
//! number and what is wrong).

use crate::args::Format;
use crate::output::{say, violations_json};
use imsim_history::check::judged::{judgements, Judgement};
use imsim_history::{check_all, replay_command, History, Violation};
use imsim_history::{Entry, HarnessEvent, RunStart};
use imsim_model::Event;
use imsim_sim::Scenario;
use serde_json::json;
use std::path::Path;

/// Reads, checks and reports one history file (`-` reads standard input).
pub fn command_check(path: &Path, format: Format) -> Result<bool, String> {
    let name = path.display().to_string();
    let bytes = if name == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|error| format!("standard input: cannot read: {error}"))?;
        bytes
    } else {
        std::fs::read(path).map_err(|error| format!("{name}: cannot read: {error}"))?
    };
    let text = imsim_history::reader::decode(&bytes)
        .map_err(|(line, message)| format!("{name}:{line}: {message}"))?;
    if imsim_history::blackbox::BlackBoxHistory::looks_like(text) {
        return crate::xmpp::check_blackbox(&name, text, format);
    }
    let history =
        History::from_jsonl(text).map_err(|(line, message)| format!("{name}:{line}: {message}"))?;
    if history.records.is_empty() {
        return Err(format!(
            "{name}: no records: a history has one JSON object per line (docs/history-format.md)"
        ));
    }
    let violations = check_all(&history);
    let replay = run_start(&history)
        .filter(|start| Scenario::load(&start.scenario).is_ok())
        .map(|start| {
            let variant = imsim_model::Variant::parse(&start.variant).unwrap_or_default();
            replay_command(&start.scenario, start.seed, variant)
        });
    let notes = not_judged(&history);
    let judgements = judgements(&history);
    let (mut judged, mut vacuous, mut not_judged) = (Vec::new(), Vec::new(), Vec::new());
    for (invariant, judgement) in &judgements {
        match judgement {
            Judgement::Judged => judged.push(invariant.to_string()),
            Judgement::Vacuous(why) => {
                vacuous.push(json!({"invariant": invariant.to_string(), "why": why}))
            }
            Judgement::NotJudged(why) => {
                not_judged.push(json!({"invariant": invariant.to_string(), "why": why}))
            }
        }
    }
    match format {
        Format::Text => {
            say!("== {name}: {}", describe(&history));
            say!(
                "   {}: {} | invariants judged {}, vacuous {}, not judged {}",
                if violations.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                },
                counts(&history),
                judged.len(),
                vacuous.len(),
                not_judged.len()
            );
            for (invariant, judgement) in &judgements {
                match judgement {
                    Judgement::Judged => {}
                    Judgement::Vacuous(why) => say!("   vacuous: {invariant}: {why}"),
                    Judgement::NotJudged(why) => say!("   not judged: {invariant}: {why}"),
                }
            }
            for note in &notes {
                say!("   note: {note}");
            }
            if !violations.is_empty() {
                for line in violations_text(&history, &violations).lines() {
                    say!("   {line}");
                }
                if let Some(command) = &replay {
                    say!("   replay: {command}");
                }
                say!("   history: {name}");
            }
        }
        Format::Json => {
            let start = run_start(&history);
            say!(
                "{}",
                json!({
                    "history": name,
                    "scenario": start.map(|s| s.scenario.clone()),
                    "seed": start.map(|s| s.seed),
                    "ok": violations.is_empty(),
                    "violations": violations_json(&history, &violations),
                    "records": history.records.len(),
                    "notes": notes,
                    "judged": judged,
                    "vacuous": vacuous,
                    "not_judged": not_judged,
                    "replay": replay,
                })
            );
        }
    }
    Ok(violations.is_empty())
}

/// Every violation with its witness records, exactly as `RunOutcome::failure_report` writes
/// them (without its replay line: a history from elsewhere may have no scenario to replay).
pub fn violations_text(history: &History, violations: &[Violation]) -> String {
    let mut report = String::new();
    for violation in violations {
        let class = format!("{:?}", violation.class()).to_lowercase();
        report += &format!(
            "VIOLATION {} ({class}): {}\n",
            violation.invariant, violation.explanation
        );
        for index in &violation.witness {
            if let Some(record) = history.records.get(*index) {
                report += &format!("  [{index}] {record}\n");
            }
        }
    }
    report
}

fn run_start(history: &History) -> Option<&RunStart> {
    history
        .records
        .iter()
        .find_map(|record| match &record.entry {
            Entry::Harness(HarnessEvent::RunStarted(start)) => Some(start.as_ref()),
            _ => None,
        })
}

fn describe(history: &History) -> String {
    let records = history.records.len();
    match run_start(history) {
        Some(start) => format!(
            "scenario {} seed {} variant {}, {records} records",
            start.scenario, start.seed, start.variant
        ),
        None => format!("{records} records"),
    }
}

fn counts(history: &History) -> String {
    let (mut sends, mut committed, mut acked, mut displayed) = (0, 0, 0, 0);
    for (_, _, event) in history.protocol_events() {
        match event {
            Event::SendRequested { .. } => sends += 1,
            Event::Committed { .. } => committed += 1,
            Event::SendAcked { .. } => acked += 1,
            Event::Displayed { .. } => displayed += 1,
            _ => {}
        }
    }
    let simulated_ms = history.records.last().map_or(0, |record| record.t_ms);
    format!(
        "sends {sends} committed {committed} acked {acked} displayed {displayed} | simulated {:.1}s",
        simulated_ms as f64 / 1000.0
    )
}

/// What the checkers cannot judge on this history, and why (docs/history-format.md, "What a
/// history needs").
fn not_judged(history: &History) -> Vec<String> {
    let has = |wanted: fn(&HarnessEvent) -> bool| {
        history
            .records
            .iter()
            .any(|record| matches!(&record.entry, Entry::Harness(event) if wanted(event)))
    };
    let mut notes = Vec::new();
    if !has(|event| matches!(event, HarnessEvent::RunStarted(_))) {
        notes.push(
            "no run_started record, so the topology is unknown: D2 eventual-delivery is not \
             judged (it needs each conversation's members), and E3 does not check that a \
             sender device belongs to the user a display names"
                .to_string(),
        );
    }
    if !history.is_complete() {
        notes.push(
            "no run_ended record, so the history counts as cut short: the liveness invariants \
             (D2 eventual-delivery, D4 no-silent-loss) are not judged"
                .to_string(),
        );
    } else if !has(|event| matches!(event, HarnessEvent::FinalTimeline { .. })) {
        notes.push(
            "no final_timeline records: D1 and D2 compare with the commits in the history \
             instead of the server's final storage"
                .to_string(),
        );
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use imsim_history::Node;

    /// `check` reports violations in the words `run` uses: the same text, less the replay line.
    #[test]
    fn the_report_is_the_one_run_prints() {
        let scenario = Scenario::default_scenario();
        let mut outcome = imsim_sim::run(&scenario, 1);
        let at = outcome
            .history
            .records
            .iter()
            .position(|r| matches!(r.entry, Entry::Protocol(Event::Displayed { .. })))
            .expect("a display");
        let copy = outcome.history.records[at].clone();
        outcome.history.records.insert(at + 1, copy);
        outcome.violations = check_all(&outcome.history);
        assert!(!outcome.violations.is_empty());
        let text = violations_text(&outcome.history, &outcome.violations);
        assert!(
            text.contains("VIOLATION E1 no-duplicate-display (safety)"),
            "{text}"
        );
        let expected = format!("{text}replay: imsim replay one-to-one --seed 1\n");
        assert_eq!(outcome.failure_report("one-to-one"), expected);
    }

    #[test]
    fn notes_say_what_a_partial_history_cannot_show() {
        let outcome = imsim_sim::run(&Scenario::default_scenario(), 2);
        assert_eq!(not_judged(&outcome.history), Vec::<String>::new());
        let mut partial = outcome.history.clone();
        partial
            .records
            .retain(|record| record.node != Node::Harness);
        let notes = not_judged(&partial);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("D2 eventual-delivery is not judged"));
        assert!(notes[1].contains("liveness invariants"));
        let mut no_timeline = outcome.history;
        no_timeline.records.retain(|record| {
            !matches!(
                record.entry,
                Entry::Harness(HarnessEvent::FinalTimeline { .. })
            )
        });
        assert!(not_judged(&no_timeline)[0].contains("no final_timeline"));
    }
}
