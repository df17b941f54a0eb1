//! `imsim run --require-coverage`: a sweep too short to reach every coverage signal fails with
//! exit 1 naming what it missed and how to sweep again; one that reaches them all passes. The
//! summary lists the signals either way.

use imsim_history::coverage::signals;
use imsim_history::History;
use std::process::{Command, Output};

fn imsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run imsim")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn one_seed_misses_signals_and_fails_naming_them() {
    let output = imsim(&["run", "one-to-one", "--seed", "0", "--require-coverage"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let missed = text
        .lines()
        .find(|line| line.starts_with("COVERAGE MISSED: one-to-one (1 runs) never hit "))
        .unwrap_or_else(|| panic!("no verdict line: {text}"));
    // Seed 0 draws no server crash, so every crash signal is missed.
    assert!(missed.contains("crash-between-store-and-ack"), "{missed}");
    assert!(missed.contains("unsynced-writes-lost"), "{missed}");
    assert!(
        text.contains("  reproduce: imsim run one-to-one --seeds 0..1 --require-coverage"),
        "{text}"
    );
    // Not applicable here (no groups): listed as such, never required.
    assert!(!missed.contains("member-added"), "{missed}");
    assert!(text.contains("  not applicable: "), "{text}");
}

#[test]
fn without_the_flag_the_same_sweep_passes_and_marks_what_was_never_hit() {
    let output = imsim(&["run", "one-to-one", "--seed", "0", "--coverage"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.lines()
            .any(|line| line.starts_with("coverage of one-to-one (1 runs): ")),
        "{text}"
    );
    let never = text
        .lines()
        .find(|line| line.trim_start().starts_with("unsynced-writes-lost"))
        .expect("the signal is listed");
    assert!(never.ends_with("NEVER HIT"), "{never}");
    assert!(!text.contains("COVERAGE MISSED"), "{text}");
}

#[test]
fn without_the_table_one_line_names_the_scenarios_with_a_signal_never_hit() {
    let output = imsim(&["run", "one-to-one", "clock-skew", "--seed", "0"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(!text.contains("NEVER HIT"), "{text}");
    let line = text
        .lines()
        .find(|line| line.starts_with("coverage: "))
        .unwrap_or_else(|| panic!("no coverage line: {text}"));
    assert!(line.contains(" applicable signals hit over 2 scenarios; never hit in one-to-one ("));
    assert!(line.ends_with("(--coverage prints the table)"), "{line}");
}

#[test]
fn a_sweep_that_hits_every_applicable_signal_passes() {
    let quiet = imsim(&["run", "clock-skew", "--seeds", "0..4", "--require-coverage"]);
    let text = stdout(&quiet);
    assert_eq!(quiet.status.code(), Some(0), "{text}");
    // Met: the verdict alone, no table.
    assert!(!text.contains("coverage of clock-skew"), "{text}");
    let output = imsim(&[
        "run",
        "clock-skew",
        "--seeds",
        "0..4",
        "--require-coverage",
        "--coverage",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("6 hit, 0 never hit"), "{text}");
    assert!(
        text.contains("coverage: every applicable signal was hit"),
        "{text}"
    );
    let gap = text
        .lines()
        .find(|line| line.trim_start().starts_with("gap-filled-by-pull"))
        .expect("the signal is listed");
    assert!(gap.contains(" runs ("), "{gap}");
}

#[test]
fn json_runs_carry_their_signals_and_stderr_the_coverage() {
    let output = imsim(&[
        "run",
        "clock-skew",
        "--seeds",
        "0..2",
        "--format",
        "json",
        "--require-coverage",
    ]);
    assert_eq!(output.status.code(), Some(0));
    for line in stdout(&output).lines() {
        let run: serde_json::Value = serde_json::from_str(line).expect("a JSON run");
        assert!(run["signals"]["held-back"].as_u64().unwrap() > 0, "{line}");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let coverage: serde_json::Value = stderr
        .lines()
        .find(|line| line.starts_with("{\"coverage\""))
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .expect("a coverage object on stderr");
    let coverage = &coverage["coverage"];
    assert_eq!(coverage["scenario"], "clock-skew");
    assert_eq!(coverage["runs"], 2);
    assert_eq!(coverage["missing"], serde_json::json!([]));
    let signals = coverage["signals"].as_array().unwrap();
    let notify = signals
        .iter()
        .find(|s| s["signal"] == "notify-then-pull")
        .unwrap();
    assert_eq!(notify["applies"], false);
}
#[test]
fn a_history_read_back_counts_the_same() {
    let scenario = imsim_sim::Scenario::default_scenario();
    let history = imsim_sim::run(&scenario, 7).history;
    let read_back = History::from_jsonl(&history.to_jsonl()).expect("the history reads back");
    let counts = signals(&history);
    assert_eq!(counts, signals(&read_back));
    assert!(counts.values().sum::<u64>() > 0);
}
