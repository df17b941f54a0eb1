//! `imsim replay`: the determinism self-check across processes, and `RUST_LOG` logging that
//! shows simulated time and node names without changing the run.

use std::process::{Command, Output};

fn imsim(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imsim"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run imsim")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn hash_line(text: &str) -> &str {
    text.lines()
        .find(|line| line.starts_with("trace-hash: "))
        .expect("a trace-hash line")
}

#[test]
fn check_determinism_prints_three_equal_hashes() {
    let output = imsim(
        &[
            "replay",
            "scenarios/one-to-one.toml",
            "--seed",
            "3",
            "--check-determinism",
        ],
        &[],
    );
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let hashes: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("determinism: run "))
        .map(|line| line.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(hashes.len(), 3, "{text}");
    assert!(hashes.iter().all(|hash| *hash == hashes[0]), "{text}");
    assert_eq!(hash_line(&text), format!("trace-hash: {}", hashes[0]));
    assert!(text.contains("run 3 (fresh process)"), "{text}");
    assert!(text.lines().last().unwrap().contains("three equal hashes"));
}

#[test]
fn emit_history_prints_only_the_history() {
    let output = imsim(
        &["replay", "one-to-one", "--seed", "4", "--emit-history"],
        &[],
    );
    assert_eq!(output.status.code(), Some(0));
    let history = imsim_history::History::from_jsonl(&stdout(&output)).expect("only JSON lines");
    assert!(history.is_complete());
    let replay = stdout(&imsim(&["replay", "one-to-one", "--seed", "4"], &[]));
    assert_eq!(
        hash_line(&replay),
        format!("trace-hash: {:016x}", history.trace_hash())
    );
}

#[test]
fn rust_log_shows_simulated_time_and_node_on_stderr_and_changes_nothing() {
    let plain = imsim(&["replay", "one-to-one", "--seed", "2"], &[]);
    assert!(plain.stderr.is_empty(), "no logging without RUST_LOG");
    let logged = imsim(
        &["replay", "one-to-one", "--seed", "2"],
        &[("RUST_LOG", "imsim=trace")],
    );
    assert_eq!(logged.status.code(), Some(0));
    assert_eq!(
        stdout(&logged),
        stdout(&plain),
        "logging goes to stderr only"
    );
    let log = String::from_utf8_lossy(&logged.stderr);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 100, "{log}");
    // `seed 2   <s.mmm>s <node> LEVEL target: …` on every line.
    for line in &lines {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("seed"), "{line}");
        assert_eq!(words.next(), Some("2"), "{line}");
        let time = words.next().unwrap_or_default();
        assert!(time.ends_with('s') && time.contains('.'), "{line}");
        let node = words.next().unwrap_or_default();
        assert!(
            node == "server" || node == "harness" || node.starts_with("device-"),
            "{line}"
        );
    }
    let has = |needle: &str| {
        lines.iter().any(|line| {
            line.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(needle)
        })
    };
    assert!(
        has("device-1 TRACE imsim::net: transmit d1 -> server"),
        "{log}"
    );
    assert!(has("server TRACE imsim::net: receive from a"), "{log}");
    assert!(has("DEBUG imsim::event: displayed {"), "{log}");
    assert!(has("harness INFO imsim::harness: run_ended"), "{log}");
    // The log's times are the history's: the first display is at the same millisecond in both.
    let first_display = |text: &str| {
        text.lines()
            .find(|line| line.contains("displayed"))
            .and_then(|line| line.split_whitespace().find(|word| word.ends_with('s')))
            .map(str::to_string)
    };
    assert_eq!(first_display(&log), first_display(&stdout(&plain)));
}

#[test]
fn a_bad_rust_log_is_refused_with_exit_two() {
    let output = imsim(
        &["replay", "one-to-one", "--seed", "1"],
        &[("RUST_LOG", "imsim=loud")],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RUST_LOG=imsim=loud"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
