//! `imsim merge SHARD.jsonl…`: one summary from the outputs of `imsim run --format json --shard
//! I/N` on several machines. It counts the runs, prints every failure with its replay command,
//! adds up the coverage signals of all shards, and judges `--require-coverage` on that union: a
//! signal hit on one machine counts for the whole sweep. Exit 0 when every run passed (and, if
//! required, every applicable signal was hit), 1 otherwise, 2 when a file cannot be read, a line
//! is not a run, or two shards ran the same seed.
//!
//! `--format json` prints what `imsim run --format json` prints for the unsharded sweep: every
//! run's object on stdout (each scenario's seeds in order), and on stderr the summary lines and
//! one coverage object per scenario.

use crate::args::{load, Format};
use crate::coverage_summary::{self, ScenarioCoverage};
use crate::output::say;
use crate::shard::Shard;
use crate::sweep::{faults_line, ScenarioLine};
use imsim_history::coverage::{Coverage, Signal};
use imsim_history::excerpt::{cut, EXCERPT_CHARS_MAX};
use imsim_sim::faults::{FaultClass, FaultProfile};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct MergeArgs {
    /// The shards' outputs: what `imsim run --format json --shard I/N` printed on stdout, one
    /// file per shard.
    #[arg(required = true, value_name = "SHARD.jsonl")]
    pub shards: Vec<PathBuf>,
    /// Fail (exit 1) if a coverage signal that a scenario can reach was hit in no shard.
    #[arg(long)]
    pub require_coverage: bool,
    /// Print the coverage table of the union: every signal of every scenario with its count.
    #[arg(long)]
    pub coverage: bool,
    /// text: a line per scenario, the failures and the summary; json: what `run --format json`
    /// prints for the whole sweep (runs on stdout; summary and coverage objects on stderr).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// One run as a shard printed it.
struct ShardRun {
    seed: u64,
    ok: bool,
    line: Value,
    /// Which file and line it came from, to name both when two shards ran the same seed.
    origin: String,
}

pub fn command_merge(args: MergeArgs) -> Result<bool, String> {
    // Scenarios in the order the shards list them, each one's runs by seed.
    let mut order: Vec<String> = Vec::new();
    let mut runs: BTreeMap<String, BTreeMap<u64, ShardRun>> = BTreeMap::new();
    for path in &args.shards {
        let name = path.display().to_string();
        let text = std::fs::read(path)
            .map_err(|error| format!("{name}: cannot read: {error}"))
            .and_then(|bytes| {
                imsim_history::reader::decode(&bytes)
                    .map(str::to_string)
                    .map_err(|(line, message)| format!("{name}:{line}: {message}"))
            })?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let origin = format!("{name}:{}", index + 1);
            let (scenario, run) = parse_run(line, origin)?;
            if !runs.contains_key(&scenario) {
                order.push(scenario.clone());
            }
            let seeds = runs.entry(scenario.clone()).or_default();
            if let Some(earlier) = seeds.get(&run.seed) {
                return Err(format!(
                    "{}: {scenario} seed {} was run by another shard too ({}): the shards \
                     overlap",
                    run.origin, run.seed, earlier.origin
                ));
            }
            seeds.insert(run.seed, run);
        }
    }
    let width = order.iter().map(String::len).max().unwrap_or(0);
    let (mut total, mut failed, mut twice) = (0u64, 0u64, 0u64);
    let mut faults: BTreeMap<FaultClass, u64> = BTreeMap::new();
    let mut commands = Vec::new();
    let mut coverages = Vec::new();
    let json = args.format == Format::Json;
    // As in `run --format json`: stdout holds only runs, so merged outputs concatenate too.
    let summary = |line: &str| match json {
        true => eprintln!("{line}"),
        false => say!("{line}"),
    };
    for scenario in &order {
        let seeds = &runs[scenario];
        let mut coverage = Coverage::default();
        let mut scenario_failed = 0;
        for run in seeds.values() {
            total += 1;
            if json {
                say!("{}", run.line);
            }
            if !run.ok {
                scenario_failed += 1;
                if !json {
                    print_failure(scenario, run);
                }
                commands.extend(replay_commands(&run.line));
            }
            if run.line["determinism"]
                .as_str()
                .is_some_and(|d| d != "not_checked")
            {
                twice += 1;
            }
            if let Ok(profile) = serde_json::from_value::<FaultProfile>(run.line["faults"].clone())
            {
                for class in profile.classes() {
                    *faults.entry(class).or_insert(0) += 1;
                }
            }
            coverage.add(&signals(&run.line));
        }
        failed += scenario_failed;
        let first = seeds.keys().next().copied().unwrap_or(0);
        let last = seeds.keys().last().copied().unwrap_or(0);
        let line = ScenarioLine {
            name: scenario,
            name_width: width,
            runs: seeds.len() as u64,
            failed: scenario_failed,
            wall_s: None,
            seeds: first..last + 1,
            shard: Shard::WHOLE,
        };
        if !json {
            say!("{}", line.text());
        }
        coverages.push(ScenarioCoverage {
            name: scenario.clone(),
            scenario: load(scenario, variant_of(seeds.values().next()))?,
            coverage,
            seeds: first..last + 1,
        });
    }
    let files = args.shards.len();
    summary(&format!(
        "merge: {total} runs ({} scenario{}) from {files} shard file{}, {} passed, {failed} failed",
        order.len(),
        if order.len() == 1 { "" } else { "s" },
        if files == 1 { "" } else { "s" },
        total - failed,
    ));
    summary(&format!("determinism: {twice} seeds run twice"));
    summary(&faults_line(&faults, total));
    for command in &commands {
        summary(&format!("  failed: {command}"));
    }
    let missed = if args.require_coverage {
        coverage_summary::missing_lines(&coverages, None)
    } else {
        Vec::new()
    };
    if json {
        for entry in &coverages {
            summary(&entry.json().to_string());
        }
    } else if args.coverage || !missed.is_empty() {
        for line in coverages.iter().flat_map(ScenarioCoverage::text_lines) {
            summary(&line);
        }
    } else if !args.require_coverage {
        summary(&coverage_summary::one_line(&coverages));
    }
    for line in &missed {
        summary(line);
    }
    if args.require_coverage && missed.is_empty() {
        summary("coverage: every applicable signal was hit");
    }
    Ok(failed == 0 && missed.is_empty())
}

/// A line of a shard's output: a run (`scenario`, `seed`, `ok`, …).
fn parse_run(line: &str, origin: String) -> Result<(String, ShardRun), String> {
    let not_a_run = |why: &str| {
        format!(
            "{origin}: {why}; a shard file holds what `imsim run --format json --shard I/N` \
             printed on stdout, one run per line: {}",
            cut(line, EXCERPT_CHARS_MAX)
        )
    };
    let value: Value = serde_json::from_str(line).map_err(|_| not_a_run("not JSON"))?;
    let scenario = value["scenario"]
        .as_str()
        .ok_or_else(|| not_a_run("no `scenario`"))?
        .to_string();
    let seed = value["seed"]
        .as_u64()
        .ok_or_else(|| not_a_run("no whole-number `seed`"))?;
    let ok = value["ok"]
        .as_bool()
        .ok_or_else(|| not_a_run("no true/false `ok`"))?;
    let run = ShardRun {
        seed,
        ok,
        line: value,
        origin,
    };
    Ok((scenario, run))
}

/// A failed run as the sweep prints one: its violations with their witness records, and the
/// command that replays it.
fn print_failure(scenario: &str, run: &ShardRun) {
    say!("== {scenario} seed {}", run.seed);
    if let Some(panic) = run.line["panic"].as_str() {
        say!("   PANICKED: {panic}");
    }
    for violation in run.line["violations"].as_array().into_iter().flatten() {
        say!(
            "   VIOLATION {} ({}): {}",
            violation["invariant"].as_str().unwrap_or("?"),
            violation["class"].as_str().unwrap_or("?"),
            violation["explanation"].as_str().unwrap_or("")
        );
        for record in violation["witness"].as_array().into_iter().flatten() {
            say!("     {record}");
        }
    }
    for command in replay_commands(&run.line) {
        say!("   replay: {command}");
    }
}

/// The commands that replay a failed run, as the sweep lists them: the violation's replay and,
/// for a nondeterministic seed, the determinism check.
fn replay_commands(line: &Value) -> Vec<String> {
    let Some(replay) = line["replay"].as_str() else {
        return Vec::new();
    };
    let Some(plain) = replay.strip_suffix(" --check-determinism") else {
        return vec![replay.to_string()];
    };
    let violations = line["violations"].as_array().map_or(0, Vec::len);
    // The determinism violation is one of them; any other is an invariant that failed too.
    match violations > 1 {
        true => vec![plain.to_string(), replay.to_string()],
        false => vec![replay.to_string()],
    }
}

/// The signals a run hit, by name.
fn signals(line: &Value) -> BTreeMap<Signal, u64> {
    line["signals"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, count)| Some((Signal::parse(name)?, count.as_u64()?)))
        .collect()
}

/// The `--variant` of a run's replay command, so the scenario's reach is judged as it ran.
fn variant_of(run: Option<&ShardRun>) -> Option<imsim_model::Variant> {
    let replay = run?.line["replay"].as_str()?;
    let (_, rest) = replay.split_once(" --variant ")?;
    imsim_model::Variant::parse(rest.split_whitespace().next()?).ok()
}
