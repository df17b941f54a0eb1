//! The command-line contract (DESIGN.md §7): exit 0 when every invariant held, 1 on a violation,
//! 2 on bad input with a message naming the file, the field and the problem — never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn imsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run imsim")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Writes the default scenario with one line replaced (or appended) and runs it.
fn run_edited(name: &str, find: &str, replace: &str) -> (i32, String) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/one-to-one.toml"),
    )
    .unwrap();
    let edited = if find.is_empty() {
        format!("{text}\n{replace}\n")
    } else {
        text.replacen(find, replace, 1)
    };
    assert_ne!(edited, text, "the edit must change the scenario");
    let path = scratch(name);
    std::fs::write(&path, edited).unwrap();
    let output = imsim(&["run", path.to_str().unwrap(), "--seed", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "imsim panicked: {stderr}");
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn default_scenario_runs_and_exits_zero() {
    let output = imsim(&["run", "--seeds", "0..3"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("0 failed"), "{stdout}");
}

#[test]
fn json_format_is_one_object_per_run() {
    let output = imsim(&["run", "one-to-one", "--seeds", "0..4", "--format", "json"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 4);
    for (seed, line) in lines.iter().enumerate() {
        assert_eq!(line["seed"], seed as u64);
        assert_eq!(line["scenario"], "one-to-one");
        assert_eq!(line["ok"], true);
        assert!(line["violations"].as_array().unwrap().is_empty());
    }
}

#[test]
fn unknown_field_is_named() {
    let (code, stderr) = run_edited(
        "unknown.toml",
        "messages = 60",
        "messages = 60\nmesages = 3",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unknown.toml") && stderr.contains("mesages"),
        "{stderr}"
    );
}

#[test]
fn negative_value_is_named() {
    let (code, stderr) = run_edited("negative.toml", "users = 6", "users = -6");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("negative.toml") && stderr.contains("users"),
        "{stderr}"
    );
}

#[test]
fn absurd_values_are_named() {
    let cases = [
        ("users = 6", "users = 4000000000", "users"),
        ("users = 6", "users = 1", "topology.users"),
        ("messages = 60", "messages = 99999999", "workload.messages"),
        ("duration_ms = 30_000", "duration_ms = 0", "workload.duration_ms"),
        ("messages = 60", "messages = 60\nedge_requests = 99999999", "workload.edge_requests"),
        ("", "[protocol]\nheartbeat_interval_ms = 0", "protocol.heartbeat_interval_ms"),
        ("", "[protocol]\nretransmit_initial_ms = 9000\nretransmit_max_ms = 10", "retransmit"),
        ("", "[faults.profile]\nloss = { probability = 1.5, devices = [1] }", "faults.profile.loss.probability"),
        ("", "[[faults.profile.partitions]]\ndevice = 99\ndirection = \"both\"\nstart_ms = 0\nduration_ms = 10", "partitions[0].device"),
        ("", "[[faults.profile.server_crashes]]\nat_ms = 29000\ndowntime_ms = 5000", "server_crashes[0]"),
    ];
    for (i, (find, replace, field)) in cases.iter().enumerate() {
        let (code, stderr) = run_edited(&format!("absurd-{i}.toml"), find, replace);
        assert_eq!(code, 2, "case {replace}: {stderr}");
        assert!(
            stderr.contains(field),
            "case {replace}: the message must name {field}: {stderr}"
        );
    }
}

#[test]
fn missing_scenario_exits_two() {
    let output = imsim(&["run", "no-such-scenario.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-scenario.toml"));
}

#[test]
fn bad_seed_range_exits_two() {
    assert_eq!(imsim(&["run", "--seeds", "5..2"]).status.code(), Some(2));
    assert_eq!(imsim(&["run", "--seeds", "abc"]).status.code(), Some(2));
}

#[test]
fn replay_prints_the_trace_and_its_hash() {
    let output = imsim(&["replay", "one-to-one", "--seed", "2", "--device", "1"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("run_started"));
    assert!(stdout.contains("device-1"));
    assert!(
        !stdout.contains(" device-2 "),
        "--device 1 hides other devices' events"
    );
    assert!(stdout.lines().last().unwrap().starts_with("trace-hash: "));
}

#[test]
fn history_out_never_overwrites() {
    let path = scratch("existing-history.jsonl");
    std::fs::write(&path, "precious").unwrap();
    let output = imsim(&[
        "replay",
        "one-to-one",
        "--seed",
        "1",
        "--history-out",
        path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    let fresh = scratch("fresh-history.jsonl");
    let _ = std::fs::remove_file(&fresh);
    let output = imsim(&[
        "replay",
        "one-to-one",
        "--seed",
        "1",
        "--history-out",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0));
    let text = std::fs::read_to_string(&fresh).unwrap();
    assert!(imsim_history::History::from_jsonl(&text)
        .unwrap()
        .is_complete());
}

/// A mistyped path is an error, not a silent run of the shipped scenario with the same stem;
/// the repository's own `scenarios/NAME.toml` spelling works from any directory.
#[test]
fn a_missing_path_is_not_replaced_by_a_shipped_scenario() {
    let output = imsim(&["run", "elsewhere/one-to-one.toml", "--seed", "1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("elsewhere/one-to-one.toml"));
    let anywhere = Command::new(env!("CARGO_BIN_EXE_imsim"))
        .args(["run", "scenarios/one-to-one.toml", "--seed", "1"])
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run imsim");
    assert_eq!(anywhere.status.code(), Some(0));
}

#[test]
fn a_variant_run_fails_and_its_replay_command_names_the_variant() {
    let output = imsim(&[
        "run",
        "lossy-network",
        "--variant",
        "no-receiver-dedupe",
        "--seed",
        "0",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("E1 no-duplicate-display"), "{stdout}");
    assert!(
        stdout.contains("imsim replay lossy-network --seed 0 --variant no-receiver-dedupe"),
        "{stdout}"
    );
    let replay = imsim(&[
        "replay",
        "lossy-network",
        "--seed",
        "0",
        "--variant",
        "no-receiver-dedupe",
    ]);
    assert_eq!(replay.status.code(), Some(1));
}

#[test]
fn a_bad_variant_name_exits_2_listing_the_valid_ones() {
    for command in ["run", "replay", "shrink", "report"] {
        let output = imsim(&[command, "one-to-one", "--variant", "nope"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("ack-before-store") && stderr.contains("correct"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn variants_lists_the_catalogue_as_text_and_json() {
    let text = imsim(&["variants"]);
    assert_eq!(text.status.code(), Some(0));
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert_eq!(text.lines().count(), imsim_model::CATALOGUE.len() + 1);
    assert!(text.starts_with("VARIANT "), "a header first: {text}");
    assert!(text.contains("ack-before-store"));
    let json = imsim(&["variants", "--format", "json"]);
    let json = String::from_utf8_lossy(&json.stdout).to_string();
    for line in json.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["name", "scenario", "invariant"] {
            assert!(value[field].is_string(), "{line}");
        }
    }
    assert_eq!(json.lines().count(), imsim_model::CATALOGUE.len());
}

#[test]
fn a_toml_error_on_a_huge_line_quotes_a_window_around_the_error() {
    let path = scratch("huge-line.toml");
    let value = "x".repeat(2_000_000);
    std::fs::write(&path, format!("[workload]\nmessages = \"{value}\" junk\n")).unwrap();
    let output = imsim(&["run", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.len() < 1_500, "{} bytes of error", stderr.len());
    assert!(
        stderr.contains("huge-line.toml: TOML parse error at line 2"),
        "{stderr}"
    );
    // The window shows where the parser stopped, with the caret under it.
    let lines: Vec<&str> = stderr.lines().collect();
    let source = lines
        .iter()
        .position(|l| l.starts_with("2 | "))
        .expect("the line");
    assert!(lines[source].contains("\" junk"), "{stderr}");
    // In characters: the window starts with a one-character '…'.
    let caret = lines[source + 1].find('^').expect("a caret");
    let under: String = lines[source].chars().skip(caret).take(4).collect();
    assert_eq!(under, "junk", "{stderr}");
}
