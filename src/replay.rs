//! `imsim replay`: one seed's trace and trace hash, its history as JSON lines on request, and
//! the determinism self-check (`--check-determinism`): the seed runs twice in this process and
//! once in a fresh child process, and the three trace hashes must match.

use crate::output::{print_outcome_text, print_trace, say};
use imsim_history::History;
use imsim_model::Variant;
use imsim_sim::determinism::{first_divergence, rerun};
use imsim_sim::{run, Scenario};
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A scenario file, or the name of a shipped scenario (the files in scenarios/).
    pub scenario: String,
    /// The seed to replay: any whole number (every random choice of the run derives from it).
    #[arg(long)]
    pub seed: u64,
    /// Show only events of this device (number) plus harness events.
    #[arg(long)]
    pub device: Option<u32>,
    /// Show only events of this conversation (number) plus harness events.
    #[arg(long)]
    pub conv: Option<u32>,
    /// Also write the whole history as JSON lines to this file (it must not exist).
    #[arg(long)]
    pub history_out: Option<PathBuf>,
    /// Also run the seed again in this process and once in a fresh process: all three
    /// trace hashes must match (exit 1 if not, with the first diverging record).
    #[arg(long)]
    pub check_determinism: bool,
    /// Print only the history as JSON lines (used by --check-determinism's fresh process).
    #[arg(long, hide = true, conflicts_with_all = ["device", "conv", "history_out", "check_determinism"])]
    pub emit_history: bool,
    /// Run a deliberately broken protocol (see `imsim variants`) instead of the scenario's.
    #[arg(long, value_name = "NAME", value_parser = crate::args::parse_variant)]
    pub variant: Option<imsim_model::Variant>,
}

pub fn command_replay(args: ReplayArgs) -> Result<bool, String> {
    let scenario = crate::args::load(&args.scenario, args.variant)?;
    if let Some(path) = &args.history_out {
        if path.exists() {
            return Err(format!(
                "{}: already exists; refusing to overwrite it",
                path.display()
            ));
        }
    }
    let outcome = run(&scenario, args.seed);
    if args.emit_history {
        say!("{}", outcome.history.to_jsonl().trim_end());
        return Ok(true);
    }
    print_trace(&outcome, args.device, args.conv);
    if let Some(path) = &args.history_out {
        write_new_file(path, &outcome.history.to_jsonl())?;
    }
    print_outcome_text(&args.scenario, &outcome, None);
    say!("trace-hash: {:016x}", outcome.history.trace_hash());
    if !args.check_determinism {
        return Ok(outcome.ok());
    }
    let deterministic = check_determinism(&args.scenario, &scenario, args.seed, &outcome.history)?;
    Ok(outcome.ok() && deterministic)
}

/// Runs the seed again here and in a child process and compares the three histories.
fn check_determinism(
    name: &str,
    scenario: &Scenario,
    seed: u64,
    first: &History,
) -> Result<bool, String> {
    let second = rerun(scenario, seed);
    let third = run_in_child(name, seed, scenario.protocol.variant)?;
    let runs = [
        ("run 1 (this process)", first),
        ("run 2 (this process)", &second),
        ("run 3 (fresh process)", &third),
    ];
    for (label, history) in runs {
        say!(
            "determinism: {label:<22} trace-hash: {:016x}",
            history.trace_hash()
        );
    }
    let mut same = true;
    for (label, history) in &runs[1..] {
        if let Some(divergence) = first_divergence(first, history) {
            same = false;
            say!("determinism: FAILED: {} differs from {}", label, runs[0].0);
            for line in divergence.describe(runs[0].0, label).lines() {
                say!("  {line}");
            }
        }
    }
    if same {
        say!("determinism: ok, three equal hashes");
    }
    Ok(same)
}

/// Re-invokes this executable as `imsim replay NAME --seed N --emit-history` and reads the
/// history it prints. Logging is switched off in the child: its stderr is only read on failure.
fn run_in_child(name: &str, seed: u64, variant: Variant) -> Result<History, String> {
    let executable = std::env::current_exe()
        .map_err(|error| format!("cannot find this executable to rerun it: {error}"))?;
    let output = Command::new(&executable)
        .args([
            "replay",
            name,
            "--seed",
            &seed.to_string(),
            "--emit-history",
            "--variant",
            variant.name(),
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot start {}: {error}", executable.display()))?;
    if !output.status.success() {
        return Err(format!(
            "the fresh process ({} replay {name} --seed {seed} --emit-history) failed with {}: {}",
            executable.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| "the fresh process printed a history that is not UTF-8".to_string())?;
    History::from_jsonl(&text).map_err(|(line, message)| {
        format!("the fresh process printed a history that does not parse: line {line}: {message}")
    })
}

/// Writes `text` to `path`, which must not exist yet: a user's file is never overwritten, even
/// one created between the check at start-up and now.
pub fn write_new_file(path: &PathBuf, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!(
                    "{}: already exists; refusing to overwrite it",
                    path.display()
                )
            }
            _ => format!("{}: cannot create: {error}", path.display()),
        })?;
    file.write_all(text.as_bytes())
        .map_err(|error| format!("{}: cannot write: {error}", path.display()))
}
