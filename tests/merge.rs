//! `imsim merge`: the shards of a sweep, run as separate processes the way `deploy/` runs them
//! on separate machines, merge into the summary the unsharded sweep prints.

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
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("merge");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Runs `args` as two shards (`--format json --shard I/2`) and returns the two output files.
fn run_shards(label: &str, args: &[&str]) -> Vec<PathBuf> {
    (0..2)
        .map(|index| {
            let shard = format!("{index}/2");
            let mut shard_args = args.to_vec();
            shard_args.extend(["--format", "json", "--shard", &shard]);
            let output = imsim(&shard_args);
            assert_ne!(output.status.code(), Some(2), "{shard_args:?}");
            let path = scratch(&format!("{label}-{index}.jsonl"));
            std::fs::write(&path, &output.stdout).unwrap();
            path
        })
        .collect()
}

/// The lines two summaries must share: each scenario's verdict and counts (without the rate),
/// the failures, the faults exercised and the coverage.
fn comparable(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with("run: ") && !line.starts_with("merge: "))
        .filter(|line| !line.starts_with("determinism: "))
        .map(|line| match line.rsplit_once(", ") {
            Some((head, rate)) if rate.ends_with(" seeds/s") => head.to_string(),
            _ => line.to_string(),
        })
        .collect()
}

#[test]
fn two_shards_merge_into_the_unsharded_summary() {
    let args = ["run", "one-to-one", "clock-skew", "--seeds", "0..3"];
    let shards = run_shards("passing", &args);
    let paths: Vec<&str> = shards.iter().map(|p| p.to_str().unwrap()).collect();
    let mut merge_args = vec!["merge"];
    merge_args.extend(&paths);
    merge_args.extend(["--require-coverage", "--coverage"]);
    let merged = imsim(&merge_args);
    let whole = imsim(&[&args[..], &["--require-coverage", "--coverage"]].concat());
    // one-to-one misses signals in three seeds: both fail on coverage alone, the same way.
    assert_eq!(whole.status.code(), Some(1), "{}", stdout(&whole));
    assert_eq!(
        merged.status.code(),
        whole.status.code(),
        "{}",
        stdout(&merged)
    );
    assert_eq!(comparable(&stdout(&merged)), comparable(&stdout(&whole)));
    assert!(stdout(&merged).contains("COVERAGE MISSED: one-to-one (3 runs) never hit"));
    assert!(stdout(&merged)
        .contains("merge: 6 runs (2 scenarios) from 2 shard files, 6 passed, 0 failed"));
    assert!(stdout(&whole).contains("run: 6 runs (2 scenarios), 6 passed, 0 failed"));

    // Coverage is judged on the union: in server-crash's seeds 0..8, shard 0 alone misses a
    // signal that shard 1 hits, and the sweep as a whole passes.
    let crash = ["run", "server-crash", "--seeds", "0..8"];
    let crash_shards = run_shards("server-crash", &crash);
    let (first, second) = (
        crash_shards[0].to_str().unwrap(),
        crash_shards[1].to_str().unwrap(),
    );
    let alone = imsim(&["merge", first, "--require-coverage"]);
    assert_eq!(alone.status.code(), Some(1), "{}", stdout(&alone));
    assert!(stdout(&alone).contains("COVERAGE MISSED: server-crash (4 runs)"));
    let union = imsim(&["merge", first, second, "--require-coverage"]);
    assert_eq!(union.status.code(), Some(0), "{}", stdout(&union));
    assert!(stdout(&union).contains("coverage: every applicable signal was hit"));
    let whole = imsim(&[&crash[..], &["--require-coverage"]].concat());
    assert_eq!(whole.status.code(), Some(0), "{}", stdout(&whole));
}

#[test]
fn failures_are_listed_with_their_replay_commands() {
    let args = [
        "run",
        "lossy-network",
        "--seeds",
        "0..3",
        "--variant",
        "no-receiver-dedupe",
    ];
    let shards = run_shards("failing", &args);
    let merged = imsim(&[
        "merge",
        shards[0].to_str().unwrap(),
        shards[1].to_str().unwrap(),
    ]);
    let whole = imsim(&args);
    let text = stdout(&merged);
    assert_eq!(merged.status.code(), Some(1), "{text}");
    assert_eq!(whole.status.code(), Some(1));
    let failed = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with("  failed: ") || line.starts_with("FAILED "))
            .map(|line| comparable(line).concat())
            .collect()
    };
    assert_eq!(failed(&text), failed(&stdout(&whole)));
    assert!(
        text.contains("  failed: imsim replay lossy-network --seed 1 --variant no-receiver-dedupe")
    );
    assert!(text.contains("== lossy-network seed 2"), "{text}");
    assert!(
        text.contains("   VIOLATION E1 no-duplicate-display (safety): "),
        "{text}"
    );
}

#[test]
fn overlapping_shards_and_lines_that_are_not_runs_exit_two() {
    let shards = run_shards("overlap", &["run", "one-to-one", "--seeds", "0..2"]);
    let path = shards[0].to_str().unwrap();
    let output = imsim(&["merge", path, path]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the shards overlap"), "{stderr}");

    let bad = scratch("not-a-run.jsonl");
    std::fs::write(&bad, "{\"coverage\": {}}\n").unwrap();
    let output = imsim(&["merge", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not-a-run.jsonl:1: no `scenario`"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `merge --format json` prints what the unsharded `run --format json` prints: the same run
/// objects on stdout, line for line, and the coverage objects on stderr.
#[test]
fn json_merge_prints_the_unsharded_sweeps_runs_and_coverage() {
    let args = ["run", "one-to-one", "clock-skew", "--seeds", "0..6"];
    let shards = run_shards("json", &args);
    let mut merge_args = vec!["merge", "--format", "json"];
    merge_args.extend(shards.iter().map(|p| p.to_str().unwrap()));
    let merged = imsim(&merge_args);
    let whole = imsim(&[&args[..], &["--format", "json"]].concat());
    assert_eq!(merged.status.code(), Some(0), "{}", stdout(&merged));
    assert_eq!(merged.status.code(), whole.status.code());
    let lines = |text: String| -> Vec<String> { text.lines().map(str::to_string).collect() };
    let runs = lines(stdout(&merged));
    assert_eq!(runs.len(), 12, "one object per run, nothing else on stdout");
    assert_eq!(runs, lines(stdout(&whole)));
    let objects = |output: &Output| -> Vec<String> {
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|line| line.starts_with('{'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(objects(&merged).len(), 2, "a coverage object per scenario");
    assert_eq!(objects(&merged), objects(&whole));
    let stderr = String::from_utf8_lossy(&merged.stderr).to_string();
    assert!(
        stderr.contains("merge: 12 runs (2 scenarios) from 2 shard files, 12 passed, 0 failed"),
        "{stderr}"
    );
}
