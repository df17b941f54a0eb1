//! `imsim`: run scenarios over seeds, replay one seed, report on one seed, shrink a failure.
//! Exit codes: 0 every invariant held, 1 a violation (the failing seed and the command that
//! replays it are printed), 2 bad input.

mod output;
mod report;
mod shrink_command;

use clap::{Parser, Subcommand, ValueEnum};
use imsim_sim::replay_command;
use imsim_sim::scenario::default_set;
use imsim_sim::{run, RunOutcome, Scenario};
use output::{print_outcome_json, print_outcome_text, print_trace, say};
use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "imsim",
    version,
    about = "Deterministic simulation test harness for instant messaging"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run scenarios over seeds and check every invariant.
    Run {
        /// Scenario files or shipped scenario names; none runs every shipped scenario.
        scenarios: Vec<String>,
        /// Run this one seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Run seeds A..B (B excluded).
        #[arg(long, value_parser = parse_seed_range)]
        seeds: Option<Range<u64>>,
        /// Seeds run in parallel, each simulation on its own thread.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write each failing seed to DIR/<scenario>-seed<N>.toml, a replayable scenario.
        #[arg(long, value_name = "DIR")]
        save_failures: Option<std::path::PathBuf>,
        /// Shrink each failing seed before saving it.
        #[arg(long, requires = "save_failures")]
        shrink: bool,
    },
    /// Run one seed and print its event trace and trace hash.
    Replay {
        scenario: String,
        #[arg(long)]
        seed: u64,
        /// Show only events of this device (number) plus harness events.
        #[arg(long)]
        device: Option<u32>,
        /// Show only events of this conversation (number) plus harness events.
        #[arg(long)]
        conv: Option<u32>,
        /// Also write the whole history as JSON lines to this file (it must not exist).
        #[arg(long)]
        history_out: Option<std::path::PathBuf>,
    },
    /// Run one seed and write report.html, report.json and report.md into a directory.
    Report(report::ReportArgs),
    /// Write a failing seed as a scenario file, shrunk while the same invariant still fails.
    Shrink(shrink_command::ShrinkArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

const DEFAULT_SEEDS: Range<u64> = 0..10;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Run {
            scenarios,
            seed,
            seeds,
            jobs,
            format,
            save_failures,
            shrink,
        } => {
            let seeds = seed.map(|seed| seed..seed + 1).or(seeds);
            let save = save_failures.map(|dir| (dir, shrink));
            command_run(scenarios, seeds, jobs.max(1), format, save)
        }
        Commands::Replay {
            scenario,
            seed,
            device,
            conv,
            history_out,
        } => command_replay(&scenario, seed, device, conv, history_out),
        Commands::Report(args) => report::command_report(args),
        Commands::Shrink(args) => shrink_command::command_shrink(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("imsim: {message}");
            ExitCode::from(2)
        }
    }
}

fn parse_seed_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("expected A..B, found `{text}`"))?;
    let start: u64 = start
        .parse()
        .map_err(|_| format!("`{start}` is not a seed (a whole number)"))?;
    let end: u64 = end
        .parse()
        .map_err(|_| format!("`{end}` is not a seed (a whole number)"))?;
    if start >= end {
        return Err(format!("the range {start}..{end} is empty"));
    }
    Ok(start..end)
}

/// Loads every scenario before running any, so a typo in the last one fails at once.
fn load_all(names: Vec<String>) -> Result<Vec<(String, Scenario)>, String> {
    let names = if names.is_empty() {
        default_set().map(str::to_string).collect()
    } else {
        names
    };
    names
        .into_iter()
        .map(|name| {
            Scenario::load(&name)
                .map(|scenario| (name, scenario))
                .map_err(|error| error.to_string())
        })
        .collect()
}

/// `save`: the directory failing seeds are written to, and whether to shrink them first.
fn command_run(
    names: Vec<String>,
    seeds: Option<Range<u64>>,
    jobs: usize,
    format: Format,
    save: Option<(std::path::PathBuf, bool)>,
) -> Result<bool, String> {
    let scenarios = load_all(names)?;
    if let Some((dir, _)) = &save {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("{}: cannot create: {error}", dir.display()))?;
    }
    let started = Instant::now();
    let (mut runs, mut failed) = (0u64, Vec::new());
    for (name, scenario) in &scenarios {
        // A pinned scenario (a saved failure, a regression case) runs its own seed by default.
        let pinned = scenario
            .pinned
            .as_ref()
            .map(|pinned| pinned.seed..pinned.seed + 1);
        let seeds = seeds.clone().or(pinned).unwrap_or(DEFAULT_SEEDS);
        for outcome in run_seeds(scenario, seeds, jobs) {
            match format {
                Format::Text => print_outcome_text(name, &outcome),
                Format::Json => print_outcome_json(name, &outcome),
            }
            runs += 1;
            if !outcome.ok() {
                failed.push(replay_command(name, outcome.setup.seed));
                if let Some((dir, shrink)) = &save {
                    let path =
                        shrink_command::save_failure(dir, name, scenario, &outcome, *shrink)?;
                    eprintln!("saved: {}", path.display());
                }
            }
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    if format == Format::Text {
        let rate = runs as f64 / wall_s.max(1e-9);
        say!(
            "run: {runs} runs ({} scenarios), {} passed, {} failed, {rate:.1} seeds/s, wall {wall_s:.2}s",
            scenarios.len(),
            runs - failed.len() as u64,
            failed.len()
        );
        for command in &failed {
            say!("  failed: {command}");
        }
    }
    Ok(failed.is_empty())
}

/// Runs seeds on `jobs` threads and returns the outcomes in seed order, as each next one is ready.
fn run_seeds(
    scenario: &Scenario,
    seeds: Range<u64>,
    jobs: usize,
) -> impl Iterator<Item = RunOutcome> {
    let next_seed = Arc::new(AtomicU64::new(seeds.start));
    let (sender, receiver) = mpsc::channel();
    for _ in 0..jobs.min((seeds.end - seeds.start) as usize) {
        let (next_seed, sender, scenario, end) = (
            next_seed.clone(),
            sender.clone(),
            scenario.clone(),
            seeds.end,
        );
        std::thread::spawn(move || loop {
            let seed = next_seed.fetch_add(1, Ordering::Relaxed);
            if seed >= end || sender.send((seed, run(&scenario, seed))).is_err() {
                break;
            }
        });
    }
    drop(sender);
    let mut pending = std::collections::BTreeMap::new();
    let mut expected = seeds.start;
    std::iter::from_fn(move || loop {
        if let Some(outcome) = pending.remove(&expected) {
            expected += 1;
            return Some(outcome);
        }
        let (seed, outcome) = receiver.recv().ok()?;
        pending.insert(seed, outcome);
    })
}

fn command_replay(
    name: &str,
    seed: u64,
    device: Option<u32>,
    conv: Option<u32>,
    history_out: Option<std::path::PathBuf>,
) -> Result<bool, String> {
    let scenario = Scenario::load(name).map_err(|error| error.to_string())?;
    if let Some(path) = &history_out {
        if path.exists() {
            return Err(format!(
                "{}: already exists; refusing to overwrite it",
                path.display()
            ));
        }
    }
    let outcome = run(&scenario, seed);
    print_trace(&outcome, device, conv);
    if let Some(path) = history_out {
        std::fs::write(&path, outcome.history.to_jsonl())
            .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    }
    print_outcome_text(name, &outcome);
    say!("trace-hash: {:016x}", outcome.history.trace_hash());
    Ok(outcome.ok())
}
