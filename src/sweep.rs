//! `imsim run`: sweeps of seeds at scale. Seeds run in parallel (`--jobs`), a share of them per
//! machine (`--shard I/N`, or `auto/N` in a Kubernetes Indexed Job), every `N`th seed run twice
//! to check determinism (`--check-determinism-every`), with a progress bar on a terminal and a
//! summary at the end: runs, failures, seeds per second and how often each fault class was on.

use crate::args::Format;
use crate::coverage_summary::{self, ScenarioCoverage};
use crate::output::{outcome_json, print_outcome_text, say, ViolationJson};
use crate::progress::Progress;
use crate::shard::{Shard, ShardSeeds};
use imsim_history::coverage::{self, Coverage, Signal};
use imsim_history::{replay_command, History};
use imsim_model::Variant;
use imsim_sim::determinism::{first_divergence, is_sampled, Divergence};
use imsim_sim::faults::FaultClass;
use imsim_sim::{run, RunOutcome, Scenario};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

/// Seeds run when none are given and the scenario pins none.
pub const DEFAULT_SEEDS: Range<u64> = 0..10;

pub struct SweepOptions {
    /// `None`: a scenario's `[pinned]` seed if it has one, else `DEFAULT_SEEDS`.
    pub seeds: Option<Range<u64>>,
    /// Where failing seeds are saved as replayable scenario files, and whether shrunk first.
    pub save_failures: Option<(std::path::PathBuf, bool)>,
    pub shard: Shard,
    pub jobs: usize,
    /// Rerun every seed divisible by this (0: never) and compare histories.
    pub determinism_every: u64,
    pub format: Format,
    /// Fail (exit 1) when a coverage signal the scenario can reach was never hit.
    pub require_coverage: bool,
    /// Text: print every seed, not only the failing ones, and the coverage table.
    pub verbose: bool,
    /// Text: print the coverage table (it is printed anyway when `require_coverage` fails).
    pub coverage_table: bool,
}

/// What the determinism sample found for one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeterminismCheck {
    NotChecked,
    Same,
    Differs {
        first_hash: u64,
        second_hash: u64,
        divergence: Option<Divergence>,
    },
}

impl DeterminismCheck {
    fn label(&self) -> &'static str {
        match self {
            DeterminismCheck::NotChecked => "not_checked",
            DeterminismCheck::Same => "same",
            DeterminismCheck::Differs { .. } => "differs",
        }
    }
}

/// One seed of a sweep: the run, its determinism check and its coverage signals.
pub struct SeedRun {
    pub outcome: RunOutcome,
    pub determinism: DeterminismCheck,
    pub signals: BTreeMap<Signal, u64>,
}

impl SeedRun {
    pub fn ok(&self) -> bool {
        self.outcome.ok() && !matches!(self.determinism, DeterminismCheck::Differs { .. })
    }
}

/// How a seed is run again for the determinism check; a parameter so tests can break it.
pub type Rerun = fn(&Scenario, u64) -> History;

/// Runs one seed, and runs it again when it is in the determinism sample.
pub fn run_seed(scenario: &Scenario, seed: u64, every: u64, rerun: Rerun) -> SeedRun {
    let outcome = run(scenario, seed);
    let determinism = if is_sampled(seed, every) {
        compare(&outcome.history, &rerun(scenario, seed))
    } else {
        DeterminismCheck::NotChecked
    };
    // Counted on the worker thread: it is a pass over the whole history.
    let signals = coverage::signals(&outcome.history);
    let mut outcome = outcome;
    let differs = matches!(determinism, DeterminismCheck::Differs { .. });
    if outcome.ok() && !differs {
        // Nothing downstream reads a passing run's history. Freeing it here, on the thread that
        // allocated it, keeps the collecting thread from becoming the sweep's bottleneck: it
        // spent most of its time in cross-thread frees (glibc arena locks), capping a sweep at
        // about one core.
        outcome.history = History::default();
    }
    SeedRun {
        outcome,
        determinism,
        signals,
    }
}

/// Equal records serialise to equal lines, so comparing records first spares hashing both
/// histories in the common case; the hashes decide otherwise (they are what users compare).
fn compare(first: &History, second: &History) -> DeterminismCheck {
    if first.records == second.records {
        return DeterminismCheck::Same;
    }
    let (first_hash, second_hash) = (first.trace_hash(), second.trace_hash());
    if first_hash == second_hash {
        return DeterminismCheck::Same;
    }
    DeterminismCheck::Differs {
        first_hash,
        second_hash,
        divergence: first_divergence(first, second),
    }
}

/// The command that checks a seed's determinism.
fn determinism_command(scenario: &str, seed: u64, variant: Variant) -> String {
    format!(
        "{} --check-determinism",
        replay_command(scenario, seed, variant)
    )
}

/// The text report of a nondeterministic seed, shaped like a violation's.
fn determinism_report(
    scenario: &str,
    seed: u64,
    variant: Variant,
    check: &DeterminismCheck,
) -> Option<String> {
    let DeterminismCheck::Differs {
        first_hash,
        second_hash,
        divergence,
    } = check
    else {
        return None;
    };
    let mut report = format!(
        "NONDETERMINISTIC (harness): seed {seed} ran twice in this process and recorded two \
         different histories: trace-hash {first_hash:016x}, then {second_hash:016x}.\n"
    );
    if let Some(divergence) = divergence {
        report += &divergence.describe("run 1", "run 2");
        report.push('\n');
    }
    report += &format!("replay: {}\n", determinism_command(scenario, seed, variant));
    Some(report)
}

/// The JSON object of one run: `outcome_json` plus `determinism`; a nondeterministic seed is
/// not ok and lists a `determinism` violation whose witness is the two diverging records.
fn seed_json(scenario: &str, seed_run: &SeedRun) -> Value {
    let mut value = outcome_json(scenario, &seed_run.outcome);
    value["determinism"] = json!(seed_run.determinism.label());
    // Only the signals hit, so that shards' lines add up to the sweep's coverage.
    let hit: BTreeMap<&str, u64> = seed_run
        .signals
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(signal, count)| (signal.name(), *count))
        .collect();
    value["signals"] = json!(hit);
    if let DeterminismCheck::Differs {
        first_hash,
        second_hash,
        divergence,
    } = &seed_run.determinism
    {
        let seed = seed_run.outcome.setup.seed;
        let record = |line: Option<&String>| {
            line.and_then(|line| serde_json::from_str::<Value>(line).ok())
                .unwrap_or(Value::Null)
        };
        let witness = match divergence {
            Some(d) => vec![record(d.left.as_ref()), record(d.right.as_ref())],
            None => Vec::new(),
        };
        let violation = ViolationJson {
            invariant: "DET deterministic".to_string(),
            code: "DET".to_string(),
            name: "deterministic".to_string(),
            class: "harness".to_string(),
            explanation: format!(
                "seed {seed} ran twice in this process and recorded two different histories: \
                 trace-hash {first_hash:016x}, then {second_hash:016x}"
            ),
            witness,
            diverging_record: divergence.as_ref().map(|d| d.index),
        };
        let violation = serde_json::to_value(violation).expect("plain values");
        value["ok"] = json!(false);
        if let Some(violations) = value["violations"].as_array_mut() {
            violations.push(violation);
        }
        let variant = seed_run.outcome.setup.scenario.protocol.variant;
        value["replay"] = json!(determinism_command(scenario, seed, variant));
    }
    value
}

/// A seed whose run panicked (a bug in the model or the harness, not an invariant violation):
/// the panic's message; where it was raised went to stderr with it.
pub struct Panicked {
    pub seed: u64,
    pub message: String,
}

/// Runs one seed like `run_seed`, catching a panic so that one bad seed fails the sweep with its
/// replay command instead of ending it (or, on a worker thread, silently dropping the seeds
/// after it).
fn run_seed_caught(
    scenario: &Scenario,
    seed: u64,
    every: u64,
    rerun: Rerun,
) -> Result<SeedRun, Panicked> {
    let run = std::panic::AssertUnwindSafe(|| run_seed(scenario, seed, every, rerun));
    std::panic::catch_unwind(run).map_err(|payload| Panicked {
        seed,
        message: imsim_sim::shrink::panic_message(&*payload),
    })
}

/// Runs `seeds` on `jobs` threads and returns the runs in seed order, each as soon as it and
/// every seed before it are done.
fn run_seeds(
    scenario: &Scenario,
    seeds: ShardSeeds,
    jobs: usize,
    every: u64,
    rerun: Rerun,
) -> impl Iterator<Item = Result<SeedRun, Panicked>> {
    let next = Arc::new(AtomicU64::new(0));
    let (sender, receiver) = mpsc::channel();
    let threads = (jobs as u64).min(seeds.len());
    for _ in 0..threads {
        let (next, sender, scenario) = (next.clone(), sender.clone(), scenario.clone());
        std::thread::spawn(move || loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(seed) = seeds.nth(k) else { break };
            if sender
                .send((k, run_seed_caught(&scenario, seed, every, rerun)))
                .is_err()
            {
                break;
            }
        });
    }
    drop(sender);
    let mut pending = BTreeMap::new();
    let mut expected = 0u64;
    std::iter::from_fn(move || loop {
        if let Some(seed_run) = pending.remove(&expected) {
            expected += 1;
            return Some(seed_run);
        }
        let (k, seed_run) = receiver.recv().ok()?;
        pending.insert(k, seed_run);
    })
}

/// What the summary counts.
#[derive(Default)]
struct Tally {
    runs: u64,
    failed_runs: u64,
    determinism_checked: u64,
    /// Replay commands of failed runs.
    failed: Vec<String>,
    /// Runs with each fault class on.
    faults: BTreeMap<FaultClass, u64>,
}

impl Tally {
    fn add_panicked(&mut self, replay: String) {
        self.runs += 1;
        self.failed_runs += 1;
        self.failed.push(replay);
    }

    fn add(&mut self, scenario: &str, seed_run: &SeedRun) {
        self.runs += 1;
        let seed = seed_run.outcome.setup.seed;
        let variant = seed_run.outcome.setup.scenario.protocol.variant;
        if seed_run.determinism != DeterminismCheck::NotChecked {
            self.determinism_checked += 1;
        }
        if !seed_run.ok() {
            self.failed_runs += 1;
        }
        if !seed_run.outcome.ok() {
            self.failed.push(replay_command(scenario, seed, variant));
        }
        if matches!(seed_run.determinism, DeterminismCheck::Differs { .. }) {
            self.failed
                .push(determinism_command(scenario, seed, variant));
        }
        for class in seed_run.outcome.setup.faults.classes() {
            *self.faults.entry(class).or_insert(0) += 1;
        }
    }

    /// The summary lines: runs and rate, the determinism sample, faults exercised, failures.
    fn summary(&self, options: &SweepOptions, scenarios: usize, wall_s: f64) -> Vec<String> {
        let failed_runs = self.failed_runs;
        let rate = self.runs as f64 / wall_s.max(1e-9);
        let mut lines = vec![format!(
            "run: {} runs ({scenarios} scenario{}), {} passed, {failed_runs} failed, {rate:.1} seeds/s, wall {wall_s:.2}s",
            self.runs,
            if scenarios == 1 { "" } else { "s" },
            self.runs - failed_runs,
        )];
        let (index, count) = (options.shard.index, options.shard.count);
        let range = match &options.seeds {
            Some(seeds) => format!("{}..{}", seeds.start, seeds.end),
            None => "the default or pinned seeds".to_string(),
        };
        if self.runs == 0 {
            lines.push(format!(
                "note: no seed of {range} belongs to shard {index}/{count}: nothing was run"
            ));
        }
        if options.shard != Shard::WHOLE {
            lines.push(format!(
                "shard {index}/{count}: the seeds s of {range} with s % {count} == {index}"
            ));
        }
        lines.push(match options.determinism_every {
            0 => "determinism: not checked (--check-determinism-every 0)".to_string(),
            every => format!(
                "determinism: {} seeds run twice (every seed divisible by {every})",
                self.determinism_checked
            ),
        });
        lines.push(faults_line(&self.faults, self.runs));
        lines.extend(
            self.failed
                .iter()
                .map(|command| format!("  failed: {command}")),
        );
        lines
    }
}

/// How many runs had each fault class on, and their share of `runs`. The cluster classes are
/// listed only when some run had one (a single-server sweep cannot).
pub fn faults_line(faults: &BTreeMap<FaultClass, u64>, runs: u64) -> String {
    let cluster = FaultClass::cluster()
        .into_iter()
        .filter(|class| faults.contains_key(class));
    let faults: Vec<String> = FaultClass::all()
        .into_iter()
        .chain(cluster)
        .map(|class| {
            let name = serde_json::to_value(class).expect("a fault class serialises");
            let count = faults.get(&class).copied().unwrap_or(0);
            let share = 100.0 * count as f64 / runs.max(1) as f64;
            format!("{} {count} ({share:.0}%)", name.as_str().unwrap_or("?"))
        })
        .collect();
    format!(
        "faults exercised (runs with the class on, share of runs): {}",
        faults.join(", ")
    )
}

/// Runs every scenario over this shard's seeds and prints each run and the summary. Returns
/// whether every run passed.
pub fn sweep(
    scenarios: &[(String, Scenario)],
    options: &SweepOptions,
    rerun: Rerun,
) -> Result<bool, String> {
    let range_of = |scenario: &Scenario| {
        let pinned = scenario
            .pinned
            .as_ref()
            .map(|pinned| pinned.seed..pinned.seed + 1);
        options.seeds.clone().or(pinned).unwrap_or(DEFAULT_SEEDS)
    };
    let seeds_of = |scenario: &Scenario| options.shard.seeds(range_of(scenario));
    if let Some((dir, _)) = &options.save_failures {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("{}: cannot create: {error}", dir.display()))?;
    }
    let total = scenarios
        .iter()
        .map(|(_, scenario)| seeds_of(scenario).len())
        .sum();
    let mut progress = Progress::new(total);
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut coverages = Vec::new();
    let name_width = scenarios.iter().map(|(name, _)| name.len()).max();
    for (name, scenario) in scenarios {
        let mut coverage = Coverage::default();
        let scenario_started = Instant::now();
        let (runs_before, failed_before) = (tally.runs, tally.failed_runs);
        let every = options.determinism_every;
        for result in run_seeds(scenario, seeds_of(scenario), options.jobs, every, rerun) {
            let seed_run = match result {
                Ok(seed_run) => seed_run,
                Err(panicked) => {
                    let replay = replay_command(name, panicked.seed, scenario.protocol.variant);
                    progress.print(|| print_panicked(name, &panicked, &replay, options.format));
                    tally.add_panicked(replay);
                    progress.advance(tally.runs, tally.failed_runs, started);
                    continue;
                }
            };
            let seed = seed_run.outcome.setup.seed;
            if let (Some((dir, shrink)), false) = (&options.save_failures, seed_run.outcome.ok()) {
                let path = crate::shrink_command::save_failure(
                    dir,
                    name,
                    scenario,
                    &seed_run.outcome,
                    *shrink,
                )?;
                progress.print(|| eprintln!("saved: {}", path.display()));
            }
            let shown = options.verbose || !seed_run.ok();
            progress.print(|| match options.format {
                Format::Text if !shown => {}
                Format::Text => {
                    let harness = determinism_report(
                        name,
                        seed,
                        scenario.protocol.variant,
                        &seed_run.determinism,
                    );
                    print_outcome_text(name, &seed_run.outcome, harness.as_deref());
                }
                Format::Json => say!("{}", seed_json(name, &seed_run)),
            });
            tally.add(name, &seed_run);
            coverage.add(&seed_run.signals);
            progress.advance(tally.runs, tally.failed_runs, started);
        }
        if options.format == Format::Text {
            let line = ScenarioLine {
                name,
                name_width: name_width.unwrap_or(0),
                runs: tally.runs - runs_before,
                failed: tally.failed_runs - failed_before,
                wall_s: Some(scenario_started.elapsed().as_secs_f64()),
                seeds: range_of(scenario),
                shard: options.shard,
            };
            progress.print(|| say!("{}", line.text()));
        }
        coverages.push(ScenarioCoverage {
            name: name.clone(),
            scenario: scenario.clone(),
            coverage,
            seeds: range_of(scenario),
        });
    }
    progress.finish();
    let wall_s = started.elapsed().as_secs_f64();
    let print = |line: &str| match options.format {
        Format::Text => say!("{line}"),
        // stdout is one JSON object per run, so that shards concatenate into one result set.
        Format::Json => eprintln!("{line}"),
    };
    for line in tally.summary(options, scenarios.len(), wall_s) {
        print(&line);
    }
    let shard = (options.shard != Shard::WHOLE)
        .then(|| format!("{}/{}", options.shard.index, options.shard.count));
    let missed = if options.require_coverage {
        coverage_summary::missing_lines(&coverages, shard)
    } else {
        Vec::new()
    };
    let table = options.verbose || options.coverage_table || !missed.is_empty();
    match options.format {
        Format::Text if table => coverages
            .iter()
            .flat_map(ScenarioCoverage::text_lines)
            .for_each(|line| print(&line)),
        Format::Text if !options.require_coverage => print(&coverage_summary::one_line(&coverages)),
        Format::Text => {}
        Format::Json => coverages
            .iter()
            .for_each(|entry| print(&entry.json().to_string())),
    }
    for line in &missed {
        print(line);
    }
    if options.require_coverage && missed.is_empty() {
        print("coverage: every applicable signal was hit");
    }
    Ok(tally.failed_runs == 0 && missed.is_empty())
}

/// A scenario's line in a sweep's text output, once its seeds are done.
pub struct ScenarioLine<'a> {
    pub name: &'a str,
    /// The longest scenario name of the sweep, so the lines align.
    pub name_width: usize,
    pub runs: u64,
    pub failed: u64,
    /// How long the seeds took (`None` for a merge of shards: no one wall time).
    pub wall_s: Option<f64>,
    /// The seeds swept (before sharding).
    pub seeds: Range<u64>,
    pub shard: Shard,
}

impl ScenarioLine<'_> {
    /// e.g. `ok    one-to-one    10 seeds (0..10): 10 passed, 0 failed, 95.2 seeds/s`.
    pub fn text(&self) -> String {
        let verdict = if self.failed == 0 { "ok" } else { "FAILED" };
        let mut seeds = format!("{}..{}", self.seeds.start, self.seeds.end);
        if self.shard != Shard::WHOLE {
            seeds += &format!(", shard {}/{}", self.shard.index, self.shard.count);
        }
        let mut line = format!(
            "{verdict:<6} {:<width$}  {} seed{} ({seeds}): {} passed, {} failed",
            self.name,
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            self.runs - self.failed,
            self.failed,
            width = self.name_width,
        );
        if let Some(wall_s) = self.wall_s {
            let rate = self.runs as f64 / wall_s.max(1e-9);
            line += &format!(", {rate:.1} seeds/s");
        }
        line
    }
}

fn print_panicked(scenario: &str, panicked: &Panicked, replay: &str, format: Format) {
    let seed = panicked.seed;
    match format {
        Format::Text => {
            say!("== {scenario} seed {seed}");
            say!("   PANICKED: {}", panicked.message);
            say!("   replay: {replay}");
        }
        Format::Json => say!(
            "{}",
            json!({
                "scenario": scenario,
                "seed": seed,
                "ok": false,
                "panic": panicked.message,
                "replay": replay,
            })
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imsim_sim::determinism::rerun;

    /// A rerun that stamps one record a millisecond later, as a nondeterministic harness might.
    fn broken_rerun(scenario: &Scenario, seed: u64) -> History {
        let mut history = rerun(scenario, seed);
        let at = history.records.len() / 2;
        history.records[at].t_ms += 1;
        history
    }

    /// A rerun that panics on seed 1, as a model bug would.
    fn panicking_rerun(scenario: &Scenario, seed: u64) -> History {
        assert!(seed != 1, "a bug hit by seed 1");
        rerun(scenario, seed)
    }

    #[test]
    fn a_panicking_seed_fails_with_its_replay_command_and_the_sweep_goes_on() {
        let scenario = Scenario::default_scenario();
        let seeds = Shard::WHOLE.seeds(0..4);
        let results: Vec<Result<SeedRun, Panicked>> =
            run_seeds(&scenario, seeds, 2, 1, panicking_rerun).collect();
        let seeds: Vec<(u64, bool)> = results
            .iter()
            .map(|result| match result {
                Ok(seed_run) => (seed_run.outcome.setup.seed, true),
                Err(panicked) => (panicked.seed, false),
            })
            .collect();
        assert_eq!(seeds, [(0, true), (1, false), (2, true), (3, true)]);
        let Err(panicked) = &results[1] else {
            unreachable!()
        };
        assert_eq!(panicked.message, "a bug hit by seed 1");

        let options = SweepOptions {
            seeds: Some(0..3),
            save_failures: None,
            shard: Shard::WHOLE,
            jobs: 1,
            determinism_every: 1,
            format: Format::Json,
            require_coverage: false,
            verbose: false,
            coverage_table: false,
        };
        let scenarios = [("one-to-one".to_string(), scenario)];
        assert_eq!(sweep(&scenarios, &options, panicking_rerun), Ok(false));
    }

    #[test]
    fn a_sampled_nondeterministic_seed_fails_with_its_divergence() {
        let scenario = Scenario::default_scenario();
        let sampled = run_seed(&scenario, 40, 20, broken_rerun);
        let DeterminismCheck::Differs { divergence, .. } = &sampled.determinism else {
            panic!("the broken rerun must be caught");
        };
        let at = sampled.outcome.history.records.len() / 2;
        assert_eq!(divergence.as_ref().map(|d| d.index), Some(at));
        assert!(!sampled.ok());
        let report =
            determinism_report("one-to-one", 40, Variant::Correct, &sampled.determinism).unwrap();
        assert!(
            report.contains(&format!("first diverging record: [{at}]")),
            "{report}"
        );
        assert!(report.ends_with("replay: imsim replay one-to-one --seed 40 --check-determinism\n"));
        let value = seed_json("one-to-one", &sampled);
        assert_eq!(value["ok"], false);
        assert_eq!(value["determinism"], "differs");
        assert_eq!(value["violations"][0]["code"], "DET");
        assert_eq!(value["violations"][0]["diverging_record"], at as u64);

        let unsampled = run_seed(&scenario, 41, 20, broken_rerun);
        assert_eq!(unsampled.determinism, DeterminismCheck::NotChecked);
        assert!(unsampled.ok());
        assert_eq!(
            seed_json("one-to-one", &unsampled)["determinism"],
            "not_checked"
        );
        let every = run_seed(&scenario, 41, 1, rerun);
        assert_eq!(every.determinism, DeterminismCheck::Same);
    }
}
