//! Determinism is the product: the same scenario and seed give the same history, byte for byte,
//! twice in one process and in a fresh process.

use imsim_sim::{run, Scenario};
use std::process::Command;

#[test]
fn same_seed_same_history_in_process() {
    for name in ["one-to-one", "server-crash", "lossy-network"] {
        let scenario = Scenario::load(name).unwrap();
        for seed in [0, 7, 12345] {
            let first = run(&scenario, seed);
            let second = run(&scenario, seed);
            assert_eq!(
                first.history.to_jsonl(),
                second.history.to_jsonl(),
                "{name} seed {seed}"
            );
            assert_eq!(first.history.trace_hash(), second.history.trace_hash());
        }
    }
}

#[test]
fn same_seed_same_hash_in_a_fresh_process() {
    let scenario = Scenario::load("one-to-one").unwrap();
    let in_process = format!(
        "trace-hash: {:016x}",
        run(&scenario, 7).history.trace_hash()
    );
    let output = Command::new(env!("CARGO_BIN_EXE_imsim"))
        .args(["replay", "scenarios/one-to-one.toml", "--seed", "7"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run imsim");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed = stdout
        .lines()
        .find(|line| line.starts_with("trace-hash: "))
        .expect("a trace-hash line");
    assert_eq!(printed, in_process);
}

#[test]
fn different_seeds_differ() {
    let scenario = Scenario::load("one-to-one").unwrap();
    let hashes: std::collections::BTreeSet<u64> = (0..10)
        .map(|seed| run(&scenario, seed).history.trace_hash())
        .collect();
    assert_eq!(hashes.len(), 10, "ten seeds must give ten different runs");
}

/// The history round-trips through JSON lines unchanged, so a saved history is the run.
#[test]
fn history_round_trips_through_json_lines() {
    for name in ["server-crash", "group-membership-churn", "fanout-write"] {
        let outcome = run(&Scenario::load(name).unwrap(), 3);
        let text = outcome.history.to_jsonl();
        let parsed = imsim_history::History::from_jsonl(&text).expect("parses");
        assert_eq!(parsed, outcome.history, "{name}");
        assert_eq!(parsed.trace_hash(), outcome.history.trace_hash(), "{name}");
    }
}
