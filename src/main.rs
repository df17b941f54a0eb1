//! `imsim`: run scenarios over seeds, replay one seed, report on one seed, shrink a failure,
//! check a recorded history, list the known-bug catalogue. Exit codes: 0 every invariant held, 1 a violation (the failing seed
//! and the command that replays it are printed), 2 bad input.

mod args;
mod bench;
mod check;
mod coverage_summary;
mod live_command;
mod merge;
mod output;
mod progress;
mod replay;
mod report;
mod shard;
mod shrink_command;
mod sweep;
mod variants;
mod xmpp;

use args::{load_all, parse_jobs, parse_seed_range, parse_variant, Format};
use clap::{Parser, Subcommand};
use imsim_model::Variant;
use imsim_sim::determinism;
use std::ops::Range;
use std::process::ExitCode;

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
        #[arg(help = scenarios_help())]
        scenarios: Vec<String>,
        /// Run this one seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        #[arg(long, value_parser = parse_seed_range, help = seeds_help())]
        seeds: Option<Range<u64>>,
        /// Seeds run in parallel, each simulation on its own thread.
        #[arg(long, default_value_t = 1, value_parser = parse_jobs)]
        jobs: usize,
        /// Run only this machine's share of the seeds: I/N runs the seeds s with s % N == I;
        /// auto/N takes I from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
        #[arg(long, value_name = "I/N", value_parser = shard::Shard::parse)]
        shard: Option<shard::Shard>,
        /// Run every seed divisible by N a second time and compare the histories (1: every
        /// seed; 0: none). A seed whose two runs differ is a failure.
        #[arg(long, value_name = "N", default_value_t = 20)]
        check_determinism_every: u64,
        /// text: a line per scenario, failures in full, a summary; json: one object per run
        /// on stdout (the summary and coverage go to stderr as lines and JSON objects).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write each failing seed to DIR/<scenario>-seed<N>.toml, a replayable scenario.
        #[arg(long, value_name = "DIR")]
        save_failures: Option<std::path::PathBuf>,
        /// Shrink each failing seed before saving it.
        #[arg(long, requires = "save_failures")]
        shrink: bool,
        /// Run a deliberately broken protocol (see `imsim variants`) instead of the scenario's.
        #[arg(long, value_name = "NAME", value_parser = parse_variant)]
        variant: Option<Variant>,
        /// Fail (exit 1) if a coverage signal that a scenario can reach was never hit in the
        /// sweep; the table of every signal with its count is printed when it fails.
        #[arg(long)]
        require_coverage: bool,
        /// Print the coverage table: every signal of every scenario with its count.
        #[arg(long)]
        coverage: bool,
        /// Print every seed (its faults, figures and costs), not only the failing ones, and the
        /// coverage table.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Combine the JSON outputs of `run --shard I/N` on several machines into one summary:
    /// runs, failures with their replay commands, and coverage judged on the union.
    Merge(merge::MergeArgs),
    /// Run one seed and print its event trace and trace hash.
    Replay(replay::ReplayArgs),
    /// Check every invariant on a history recorded anywhere (JSON lines; `-` reads stdin).
    /// The format: docs/history-format.md.
    Check {
        /// The history: JSON lines, one record each (`-` reads standard input).
        history: std::path::PathBuf,
        /// text: the verdict with each violation and its witness records; json: one object.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run one seed and write report.html, report.json and report.md into a directory.
    Report(report::ReportArgs),
    /// Write a failing seed as a scenario file, shrunk while the same invariant still fails.
    Shrink(shrink_command::ShrinkArgs),
    /// Measure the harness's speed against its targets (madsim's ceiling, seeds per second,
    /// time compression, scale, checker throughput).
    Bench(bench::BenchArgs),
    /// One scale step of `bench`, in its own process so its peak memory is its own.
    #[command(hide = true)]
    BenchScaleStep {
        /// The group size to measure.
        #[arg(long)]
        members: u32,
    },
    /// Run the IM server for real: UDP on --listen, a durable log in --data (SIGTERM stops it
    /// after a final sync).
    Serve(live_command::ServeArgs),
    /// Run a scenario for real on loopback (a server process, real sockets, a real disk, real
    /// SIGKILLs) and check its history like `imsim run`.
    Live(live_command::LiveArgs),
    /// The known-bug catalogue: each broken protocol variant, the scenario that exposes it and
    /// the invariant expected to catch it.
    Variants {
        /// text: a table with a header; json: one object per variant.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Drive a real XMPP server (Prosody) through fault proxies and judge what its clients saw.
    Xmpp(xmpp::XmppArgs),
}

/// `run`'s scenarios, with the default set counted and the scenarios it leaves out named, from
/// the shipped list itself so the help cannot go stale.
fn scenarios_help() -> String {
    let default: Vec<&str> = imsim_sim::scenario::default_set().collect();
    let left_out: Vec<&str> = imsim_sim::scenario::SHIPPED
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !default.contains(name))
        .collect();
    format!(
        "Scenario files or shipped scenario names. None: the default set, {} of the {} shipped \
         scenarios (all but {}, which take seconds per seed and run by name)",
        default.len(),
        imsim_sim::scenario::SHIPPED.len(),
        left_out.join(", ")
    )
}

fn seeds_help() -> String {
    let seeds = sweep::DEFAULT_SEEDS;
    format!(
        "Run seeds A..B (B excluded). With neither --seed nor --seeds: a scenario's pinned seed \
         (its [pinned] table, as `imsim shrink` writes it), else seeds {}..{}",
        seeds.start, seeds.end
    )
}

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
            shard,
            check_determinism_every,
            format,
            save_failures,
            shrink,
            variant,
            require_coverage,
            coverage,
            verbose,
        } => {
            if seed == Some(u64::MAX) {
                eprintln!(
                    "imsim: --seed {}: run takes seeds below it (replay runs any seed)",
                    u64::MAX
                );
                return ExitCode::from(2);
            }
            let seeds = seed.map(|seed| seed..seed + 1).or(seeds);
            let options = sweep::SweepOptions {
                seeds,
                save_failures: save_failures.map(|dir| (dir, shrink)),
                shard: shard.unwrap_or(shard::Shard::WHOLE),
                jobs,
                determinism_every: check_determinism_every,
                format,
                require_coverage,
                verbose,
                coverage_table: coverage,
            };
            load_all(scenarios, variant)
                .and_then(|scenarios| sweep::sweep(&scenarios, &options, determinism::rerun))
        }
        Commands::Merge(args) => merge::command_merge(args),
        Commands::Replay(args) => replay::command_replay(args),
        Commands::Check { history, format } => check::command_check(&history, format),
        Commands::Report(args) => report::command_report(args),
        Commands::Shrink(args) => shrink_command::command_shrink(args),
        Commands::Bench(args) => bench::command_bench(args),
        Commands::BenchScaleStep { members } => bench::command_scale_step(members),
        Commands::Serve(args) => live_command::command_serve(args),
        Commands::Live(args) => live_command::command_live(args),
        Commands::Xmpp(args) => xmpp::command_xmpp(args),
        Commands::Variants { format } => {
            variants::print_catalogue(format);
            Ok(true)
        }
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

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every argument of every subcommand says what it is for in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        let cli = Cli::command();
        let mut missing = Vec::new();
        for command in cli.get_subcommands() {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{} {id}", command.get_name()));
                }
            }
        }
        assert_eq!(missing, Vec::<String>::new(), "arguments without help text");
    }
}
