//! Reports of real runs: a passing one, one made to fail by hand (none of the shipped scenarios
//! fails), one with event types the report has never heard of, and one far larger than any
//! shipped scenario. The failing report is left in the target directory to be looked at.

use imsim_history::{check_all, Invariant};
use imsim_history::{Entry, History};
use imsim_model::Event;
use imsim_reports::{FocusReason, Overwrite, Report, RunSummary, Status, WriteError};
use imsim_sim::{run, RunOutcome, Scenario};
use std::path::PathBuf;

fn outcome(name: &str, seed: u64) -> RunOutcome {
    run(&Scenario::load(name).expect("a shipped scenario"), seed)
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("reports")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The history with the first `displayed` record shown again 40 records later: a duplicate
/// display, the E1 bug.
fn with_duplicate_display(history: &History) -> History {
    let mut history = history.clone();
    let first = history
        .records
        .iter()
        .position(|r| matches!(r.entry, Entry::Protocol(Event::Displayed { .. })))
        .expect("the run displays messages");
    let at = (first + 40).min(history.records.len() - 1);
    let mut copy = history.records[first].clone();
    copy.t_ms = history.records[at].t_ms;
    history.records.insert(at, copy);
    history
}

#[test]
fn a_failing_run_shows_its_witness_and_replay_command() {
    let passing = outcome("one-to-one", 1);
    assert!(passing.ok());
    let history = with_duplicate_display(&passing.history);
    let violations = check_all(&history);
    let e1 = violations
        .iter()
        .find(|v| v.invariant == Invariant::E1NoDuplicateDisplay)
        .expect("the duplicate display is caught");
    let summary = RunSummary {
        scenario: "one-to-one",
        seed: 1,
        history: &history,
        violations: &violations,
        stats: Some(&passing.stats),
    };
    let report = Report::build(&summary);
    assert!(!report.ok);
    assert_eq!(report.focus.reason, FocusReason::Witness);
    let row = report.invariants.iter().find(|r| r.code == "E1").unwrap();
    assert_eq!(row.status, Status::Violated);

    let html = report.to_html();
    assert!(html.contains(r#"<tr id="inv-E1" class="violated">"#));
    assert!(html.contains(r#"id="violations""#));
    assert!(html.contains("imsim replay one-to-one --seed 1"));
    for index in &e1.witness {
        assert!(
            html.contains(&format!(">[{index}]<")),
            "witness [{index}] labelled"
        );
    }
    assert!(html.contains("witness-ring"));
    assert!(
        html.contains(r#"class="m k-display w""#),
        "witness marks are outlined"
    );

    let markdown = report.to_markdown();
    assert!(markdown.contains("FAILED"));
    assert!(markdown.contains("| E1 | no-duplicate-display | always | **VIOLATED** (1) |"));
    assert!(markdown.contains("`imsim replay one-to-one --seed 1`"));

    // Left for a person (or a screenshot) to look at.
    let dir = scratch("failing");
    imsim_reports::write(&report, &dir, Overwrite::Refuse).unwrap();
    println!("failing report: {}", dir.join("report.html").display());
}

#[test]
fn json_is_the_report_with_stable_field_names() {
    let outcome = outcome("server-crash", 2);
    let report = Report::build(&summary("server-crash", &outcome));
    let json = report.to_json();
    let parsed: Report = serde_json::from_str(&json).expect("report.json parses as a Report");
    assert_eq!(parsed, report);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in [
        "format_version",
        "scenario",
        "seed",
        "ok",
        "replay",
        "counts",
        "lanes",
        "events",
        "bands",
        "latency",
        "invariants",
        "violations",
    ] {
        assert!(value.get(field).is_some(), "report.json has `{field}`");
    }
    assert!(value["events"][0]["type"].is_string());
    assert_eq!(value["counts"]["server_crashes"], 3);
    assert!(value["bands"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["kind"] == "server_down"));
    // The path mix splits every latency sample by the packet that delivered it: pushes
    // first, and after three crashes some resumes.
    let paths = &report.latency.paths;
    let total: u64 = paths.iter().map(|p| p.deliveries).sum();
    assert_eq!(total, report.latency.samples, "{paths:?}");
    let push = paths.iter().find(|p| p.path == "push").expect("pushes");
    assert!(push.deliveries * 2 > total, "{paths:?}");
    assert!(paths.iter().any(|p| p.path == "pull (resume)"), "{paths:?}");
    assert!(report.to_html().contains("<h3>Delivery paths</h3>"));
}

#[test]
fn event_types_the_report_does_not_know_get_a_colour_and_a_legend_entry() {
    let outcome = outcome("one-to-one", 3);
    let mut report = Report::build(&summary("one-to-one", &outcome));
    // As if the model had grown presence events since this crate was written.
    for event in report.events.iter_mut().filter(|e| e.kind == "logged_in") {
        event.kind = "presence_changed".to_string();
        event.category = "other".to_string();
    }
    let html = report.to_html();
    assert!(html.contains(".t-presence_changed{fill:hsl("));
    assert!(html.contains(r#"data-hide="t-presence_changed""#));
    assert!(html.contains(r#"class="m k-other t-presence_changed""#));
}

#[test]
fn writing_refuses_to_overwrite_unless_asked() {
    let outcome = outcome("one-to-one", 4);
    let report = Report::build(&summary("one-to-one", &outcome));
    let dir = scratch("overwrite").join("nested");
    let written = imsim_reports::write(&report, &dir, Overwrite::Refuse).unwrap();
    assert_eq!(written.len(), 3);
    std::fs::write(dir.join("report.md"), "edited by hand").unwrap();
    match imsim_reports::write(&report, &dir, Overwrite::Refuse) {
        Err(WriteError::Exists(paths)) => assert_eq!(paths.len(), 3),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let kept = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert_eq!(kept, "edited by hand", "nothing was overwritten");
    imsim_reports::write(&report, &dir, Overwrite::Replace).unwrap();
    assert!(std::fs::read_to_string(dir.join("report.md"))
        .unwrap()
        .starts_with("### imsim report"));
}

/// Ten times the messages of the default scenario for ten times as long: the page stays small
/// and still opens on a readable window.
#[test]
fn a_long_busy_run_stays_a_few_megabytes() {
    let text = include_str!("../scenarios/one-to-one.toml")
        .replace("duration_ms = 30_000", "duration_ms = 300_000")
        .replace("messages = 60", "messages = 3_000");
    let scenario = Scenario::parse("big.toml", &text).expect("the edited scenario is valid");
    let outcome = run(&scenario, 1);
    let report = Report::build(&summary("big.toml", &outcome));
    let html = report.to_html();
    println!(
        "{} records, {} events: html {} bytes, json {} bytes, first window {:?}",
        report.counts.records,
        report.counts.events,
        html.len(),
        report.to_json().len(),
        report.focus
    );
    assert!(report.counts.events > 10_000, "{}", report.counts.events);
    assert!(html.len() < 4_000_000, "{} bytes", html.len());
    assert_eq!(report.focus.reason, FocusReason::Densest);
}

/// A report's view of a run simulated in this process.
fn summary<'a>(scenario: &'a str, outcome: &'a RunOutcome) -> RunSummary<'a> {
    RunSummary {
        scenario,
        seed: outcome.setup.seed,
        history: &outcome.history,
        violations: &outcome.violations,
        stats: Some(&outcome.stats),
    }
}
