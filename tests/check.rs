//! `imsim check HISTORY.jsonl`: the run's verdict on a recorded history, violations on an edited
//! one, and a line number for a malformed one. Also keeps docs/history-format.md honest: its
//! examples pass, and every event type a run records is documented.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn imsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run imsim")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// Records a history with `replay --history-out` and returns (replay output, history path).
fn record(scenario: &str, seed: u64, name: &str) -> (Output, PathBuf) {
    let path = scratch(name);
    let seed = seed.to_string();
    let out = path.to_str().unwrap();
    let output = imsim(&["replay", scenario, "--seed", &seed, "--history-out", out]);
    (output, path)
}

#[test]
fn a_recorded_history_gets_the_runs_verdict() {
    for (scenario, seed) in [
        ("one-to-one", 3),
        ("server-crash", 1),
        ("offline-resume", 2),
    ] {
        let (replay, path) = record(scenario, seed, &format!("{scenario}-{seed}.jsonl"));
        let run_json = imsim(&[
            "run",
            scenario,
            "--seed",
            &seed.to_string(),
            "--format",
            "json",
        ]);
        let run: serde_json::Value = serde_json::from_slice(&run_json.stdout).unwrap();
        let check = imsim(&["check", path.to_str().unwrap(), "--format", "json"]);
        let checked: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
        assert_eq!(
            check.status.code(),
            replay.status.code(),
            "{scenario} {seed}"
        );
        assert_eq!(checked["ok"], run["ok"], "{scenario} {seed}");
        assert_eq!(
            checked["violations"], run["violations"],
            "{scenario} {seed}"
        );
        assert_eq!(checked["seed"], seed);
        assert_eq!(checked["notes"], serde_json::json!([]), "a full history");
        let text_check = text(&imsim(&["check", path.to_str().unwrap()]).stdout);
        assert!(text_check.contains("   ok: "), "{text_check}");
    }
}

#[test]
fn a_duplicated_display_exits_one_naming_e1() {
    let (_, path) = record("one-to-one", 5, "for-duplicate.jsonl");
    let history = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = history.lines().collect();
    let at = lines
        .iter()
        .position(|line| line.contains(r#""type":"displayed""#))
        .unwrap();
    lines.insert(at + 1, lines[at]);
    let edited = scratch("duplicate-display.jsonl");
    std::fs::write(&edited, lines.join("\n")).unwrap();
    let output = imsim(&["check", edited.to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("VIOLATION E1 no-duplicate-display (safety)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("  [{}] ", at + 1)),
        "the witness: {stdout}"
    );
    assert!(
        stdout.contains("replay: imsim replay one-to-one --seed 5"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("history: {}", edited.display())),
        "{stdout}"
    );
}

#[test]
fn a_truncated_line_exits_two_with_its_line_number() {
    let (_, path) = record("one-to-one", 6, "for-truncation.jsonl");
    let history = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = history.lines().map(str::to_string).collect();
    let half = lines[9].len() / 2;
    lines[9].truncate(half);
    let truncated = scratch("truncated.jsonl");
    std::fs::write(&truncated, lines.join("\n")).unwrap();
    let output = imsim(&["check", truncated.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:10: ", truncated.display())),
        "{stderr}"
    );
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn odd_bytes_are_named_by_line_and_a_byte_order_mark_is_accepted() {
    let (_, path) = record("one-to-one", 6, "for-odd-bytes.jsonl");
    let history = std::fs::read(&path).unwrap();

    let mut with_bom = "\u{feff}".as_bytes().to_vec();
    with_bom.extend_from_slice(&history);
    let bom = scratch("bom.jsonl");
    std::fs::write(&bom, &with_bom).unwrap();
    let output = imsim(&["check", bom.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    // A Latin-1 byte in the body of line 12.
    let line_12 = history
        .split(|b| *b == b'\n')
        .take(11)
        .map(|line| line.len() + 1)
        .sum::<usize>();
    let mut latin1 = history.clone();
    latin1.insert(line_12 + 1, 0xe9);
    let bad = scratch("latin1.jsonl");
    std::fs::write(&bad, &latin1).unwrap();
    let output = imsim(&["check", bad.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:12: not valid UTF-8: byte 0xe9 at column 2",
            bad.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_huge_line_is_quoted_in_part_and_a_huge_number_is_out_of_range() {
    let huge = scratch("huge.jsonl");
    let node = "x".repeat(2_000_000);
    std::fs::write(
        &huge,
        format!(r#"{{"t_ms":1,"node":"{node}","type":"run_ended"}}"#),
    )
    .unwrap();
    let output = imsim(&["check", huge.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", &stderr[..200]);
    assert!(stderr.len() < 1_000, "{} bytes of error", stderr.len());
    assert!(stderr.contains(":1: node must be"), "{stderr}");

    let big = scratch("big-number.jsonl");
    std::fs::write(
        &big,
        r#"{"t_ms":123456789012345678901234,"node":"harness","type":"run_ended"}"#,
    )
    .unwrap();
    let output = imsim(&["check", big.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(":1: run_ended: field `t_ms`: ") && stderr.contains(" is out of range"),
        "{stderr}"
    );
}

#[test]
fn unreadable_or_empty_input_exits_two() {
    let missing = imsim(&["check", "no-such-history.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no-such-history.jsonl: cannot read"));
    let empty = scratch("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let output = imsim(&["check", empty.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no records"));
}

#[test]
fn a_history_without_run_started_is_checked_with_a_note() {
    let (_, path) = record("one-to-one", 8, "for-no-topology.jsonl");
    let history = std::fs::read_to_string(&path).unwrap();
    let without: Vec<&str> = history
        .lines()
        .filter(|line| !line.contains(r#""type":"run_started""#))
        .collect();
    let partial = scratch("no-run-started.jsonl");
    std::fs::write(&partial, without.join("\n")).unwrap();
    let output = imsim(&["check", partial.to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("note: no run_started record"), "{stdout}");
    assert!(
        !stdout.contains("replay:"),
        "no scenario, no replay command"
    );
}

#[test]
fn the_documented_examples_pass() {
    let example = imsim(&["check", "docs/example-history.jsonl"]);
    assert_eq!(example.status.code(), Some(0), "{}", text(&example.stdout));
    let doc = std::fs::read_to_string("docs/history-format.md").unwrap();
    let block: Vec<&str> = doc
        .split("```jsonl\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a jsonl example in the doc")
        .lines()
        .collect();
    let minimal = scratch("minimal.jsonl");
    std::fs::write(&minimal, block.join("\n")).unwrap();
    let output = imsim(&["check", minimal.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
}

#[test]
fn every_recorded_event_type_is_documented() {
    let doc = std::fs::read_to_string("docs/history-format.md").unwrap();
    let mut types = std::collections::BTreeSet::new();
    for scenario in [
        "one-to-one",
        "lossy-network",
        "server-crash",
        "offline-resume",
    ] {
        let scenario = imsim_sim::Scenario::load(scenario).unwrap();
        for seed in 0..3 {
            for line in imsim_sim::run(&scenario, seed).history.to_jsonl().lines() {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                types.insert(value["type"].as_str().unwrap().to_string());
            }
        }
    }
    types.extend(
        imsim_history::reader::HARNESS_EVENT_TYPES
            .iter()
            .map(|kind| kind.to_string()),
    );
    assert!(types.len() > 20, "{types:?}");
    for kind in types {
        assert!(
            doc.contains(&format!("`{kind}`")),
            "{kind} is not documented"
        );
    }
}
