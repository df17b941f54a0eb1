//! `imsim`: run scenarios over seeds, replay one seed. Exit codes: 0 every invariant held,
//! 1 a violation (the failing seed and the command that replays it are printed), 2 bad input.

mod output;
mod replay;

use clap::{Parser, Subcommand, ValueEnum};
use imsim_sim::replay_command;
use imsim_sim::scenario::SHIPPED;
use imsim_sim::{run, RunOutcome, Scenario};
use output::{print_outcome_json, print_outcome_text, say};
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
        /// Also run the seed again in this process and once in a fresh process: all three
        /// trace hashes must match (exit 1 if not, with the first diverging record).
        #[arg(long)]
        check_determinism: bool,
        /// Print only the history as JSON lines (used by --check-determinism's fresh process).
        #[arg(long, hide = true, conflicts_with_all = ["device", "conv", "history_out", "check_determinism"])]
        emit_history: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

const DEFAULT_SEEDS: Range<u64> = 0..10;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = imsim_sim::trace::init_from_env() {
        eprintln!("imsim: {message}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Commands::Run {
            scenarios,
            seed,
            seeds,
            jobs,
            format,
        } => {
            let seeds = seed
                .map(|seed| seed..seed + 1)
                .or(seeds)
                .unwrap_or(DEFAULT_SEEDS);
            command_run(scenarios, seeds, jobs.max(1), format)
        }
        Commands::Replay {
            scenario,
            seed,
            device,
            conv,
            history_out,
            check_determinism,
            emit_history,
        } => replay::command_replay(replay::ReplayArgs {
            scenario,
            seed,
            device,
            conv,
            history_out,
            check_determinism,
            emit_history,
        }),
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
        SHIPPED.iter().map(|(name, _)| name.to_string()).collect()
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

fn command_run(
    names: Vec<String>,
    seeds: Range<u64>,
    jobs: usize,
    format: Format,
) -> Result<bool, String> {
    let scenarios = load_all(names)?;
    let started = Instant::now();
    let (mut runs, mut failed) = (0u64, Vec::new());
    for (name, scenario) in &scenarios {
        for outcome in run_seeds(scenario, seeds.clone(), jobs) {
            match format {
                Format::Text => print_outcome_text(name, &outcome),
                Format::Json => print_outcome_json(name, &outcome),
            }
            runs += 1;
            if !outcome.ok() {
                failed.push(replay_command(name, outcome.setup.seed));
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
