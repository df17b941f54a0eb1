//! `imsim run` at scale: shards that split a sweep exactly, JSON that concatenates across
//! shards, the determinism sample, and the summary.

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Output};

fn imsim(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imsim"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env_remove("JOB_COMPLETION_INDEX");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run imsim")
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("stdout is JSON lines only"))
        .collect()
}

fn keys(value: &Value) -> Vec<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn two_shards_cover_the_seeds_exactly_once() {
    let mut seeds = Vec::new();
    let mut fields = BTreeSet::new();
    for shard in ["0/2", "1/2"] {
        let output = imsim(
            &[
                "run",
                "scenarios/one-to-one.toml",
                "--seeds",
                "0..100",
                "--shard",
                shard,
                "--format",
                "json",
                "--jobs",
                "2",
            ],
            &[],
        );
        assert_eq!(output.status.code(), Some(0), "shard {shard}");
        for run in json_lines(&output) {
            fields.insert(keys(&run));
            seeds.push(run["seed"].as_u64().unwrap());
        }
        let summary = String::from_utf8_lossy(&output.stderr);
        assert!(summary.contains("run: 50 runs"), "{summary}");
    }
    seeds.sort();
    assert_eq!(seeds, (0..100).collect::<Vec<u64>>());
    assert_eq!(
        fields.len(),
        1,
        "every shard prints the same fields: {fields:?}"
    );
}

#[test]
fn auto_shard_reads_the_kubernetes_job_index() {
    let args = [
        "run",
        "one-to-one",
        "--seeds",
        "0..9",
        "--shard",
        "auto/3",
        "--format",
        "json",
    ];
    let output = imsim(&args, &[("JOB_COMPLETION_INDEX", "2")]);
    assert_eq!(output.status.code(), Some(0));
    let seeds: Vec<u64> = json_lines(&output)
        .iter()
        .map(|run| run["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, vec![2, 5, 8]);
}

#[test]
fn bad_sweep_flags_exit_two_naming_the_problem() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (&["--shard", "2/2"], &[], "out of range"),
        (&["--shard", "0/0"], &[], "at least 1"),
        (&["--shard", "half"], &[], "expected I/N"),
        (&["--shard", "auto/4"], &[], "JOB_COMPLETION_INDEX"),
        (
            &["--shard", "auto/4"],
            &[("JOB_COMPLETION_INDEX", "x")],
            "JOB_COMPLETION_INDEX=x",
        ),
        (&["--jobs", "0"], &[], "at least one job"),
    ];
    for (flags, env, expected) in cases {
        let mut args = vec!["run", "one-to-one", "--seeds", "0..4"];
        args.extend_from_slice(flags);
        let output = imsim(&args, env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
}

#[test]
fn every_twentieth_seed_is_checked_for_determinism_by_default() {
    let output = imsim(
        &["run", "one-to-one", "--seeds", "0..41", "--format", "json"],
        &[],
    );
    assert_eq!(output.status.code(), Some(0));
    let checked: Vec<u64> = json_lines(&output)
        .iter()
        .filter(|run| run["determinism"] == "same")
        .map(|run| run["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(checked, vec![0, 20, 40]);
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(
        summary.contains("determinism: 3 seeds run twice"),
        "{summary}"
    );

    let all = imsim(
        &[
            "run",
            "one-to-one",
            "--seeds",
            "3..6",
            "--check-determinism-every",
            "1",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(text.contains("determinism: 3 seeds run twice"), "{text}");
    let none = imsim(
        &[
            "run",
            "one-to-one",
            "--seeds",
            "0..3",
            "--check-determinism-every",
            "0",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&none.stdout);
    assert!(text.contains("determinism: not checked"), "{text}");
}

#[test]
fn the_summary_counts_runs_rate_and_faults_exercised() {
    let output = imsim(
        &["run", "one-to-one", "--seeds", "0..12", "--jobs", "2"],
        &[],
    );
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    let summary = text
        .lines()
        .find(|line| line.starts_with("run: "))
        .expect("a summary line");
    assert!(
        summary.starts_with("run: 12 runs (1 scenario), 12 passed, 0 failed, "),
        "{summary}"
    );
    assert!(summary.contains(" seeds/s"), "{summary}");
    let faults = text
        .lines()
        .find(|line| line.starts_with("faults exercised"))
        .expect("a faults line");
    for class in [
        "loss",
        "duplication",
        "delay",
        "hold",
        "partition",
        "server-crash",
        "device-restart",
        "clock-skew",
    ] {
        assert!(faults.contains(&format!(" {class} ")), "{faults}");
    }
    // Not a terminal: no progress bar escape codes anywhere.
    assert!(!output.stderr.contains(&b'\x1b') && !output.stdout.contains(&b'\x1b'));
}

#[test]
fn a_passing_sweep_prints_a_line_per_scenario_and_the_summary() {
    let output = imsim(&["run", "--seeds", "0..2", "--jobs", "2"], &[]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() <= 40, "{} lines:\n{text}", lines.len());
    assert!(
        !text.contains("== "),
        "no per-seed lines without -v: {text}"
    );
    let scenario_lines: Vec<&&str> = lines.iter().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(scenario_lines.len(), 22, "{text}");
    let one_to_one = scenario_lines
        .iter()
        .find(|line| line.contains(" one-to-one "))
        .expect("a line for one-to-one");
    assert!(
        one_to_one.contains("2 seeds (0..2): 2 passed, 0 failed, "),
        "{one_to_one}"
    );
    assert!(one_to_one.ends_with(" seeds/s"), "{one_to_one}");
    assert!(text.contains("run: 44 runs (22 scenarios), 44 passed, 0 failed"));

    let verbose = imsim(&["run", "one-to-one", "--seeds", "0..2", "-v"], &[]);
    let text = String::from_utf8_lossy(&verbose.stdout);
    for detail in [
        "== one-to-one seed 0 faults {",
        "== one-to-one seed 1 faults {",
        "   ok: sends ",
        "   cost: ",
        "coverage of one-to-one (2 runs)",
    ] {
        assert!(text.contains(detail), "-v prints {detail}: {text}");
    }
}

#[test]
fn a_failing_seed_is_printed_in_full_without_verbose() {
    let args = [
        "run",
        "lossy-network",
        "--seeds",
        "0..1",
        "--variant",
        "no-receiver-dedupe",
    ];
    let output = imsim(&args, &[]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    for part in [
        "== lossy-network seed 0 faults {",
        "   FAILED: sends ",
        "   VIOLATION E1 no-duplicate-display (safety): ",
        "   replay: imsim replay lossy-network --seed 0 --variant no-receiver-dedupe",
        "FAILED lossy-network  1 seed (0..1): 0 passed, 1 failed, ",
        "  failed: imsim replay lossy-network --seed 0 --variant no-receiver-dedupe",
    ] {
        assert!(text.contains(part), "no {part:?} in {text}");
    }
}
