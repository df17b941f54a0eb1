//! `imsim report SCENARIO --seed N --out DIR [--force]`: run one seed and write its report
//! (`report.html`, `report.json`, `report.md`) into DIR. Exit 0 when every invariant held, 1 on a
//! violation (the report is written either way), 2 on bad input or when a report file exists
//! already and `--force` was not given.

use crate::output::{print_outcome_text, say};
use imsim_reports::{Overwrite, Report, RunSummary, FILE_NAMES};
use imsim_sim::{run, RunOutcome};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A scenario file or a shipped scenario name.
    scenario: String,
    /// The seed to run (every random choice of the run derives from it).
    #[arg(long)]
    seed: u64,
    /// The directory to write into; created if missing.
    #[arg(long)]
    out: PathBuf,
    /// Replace report files that exist in DIR already (otherwise the command refuses).
    #[arg(long)]
    force: bool,
    /// Run a deliberately broken protocol (see `imsim variants`) instead of the scenario's.
    #[arg(long, value_name = "NAME", value_parser = crate::args::parse_variant)]
    variant: Option<imsim_model::Variant>,
}

pub fn command_report(args: ReportArgs) -> Result<bool, String> {
    let scenario = crate::args::load(&args.scenario, args.variant)?;
    let overwrite = if args.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    // Refuse before simulating: a long run should not end in "exists already".
    if overwrite == Overwrite::Refuse {
        let present: Vec<String> = FILE_NAMES
            .iter()
            .map(|name| args.out.join(name))
            .filter(|path| path.exists())
            .map(|path| path.display().to_string())
            .collect();
        if !present.is_empty() {
            return Err(format!(
                "{} already exist{}; refusing to overwrite (--force replaces them)",
                present.join(", "),
                if present.len() == 1 { "s" } else { "" }
            ));
        }
    }
    let outcome = run(&scenario, args.seed);
    let report = Report::build(&summary(&args.scenario, &outcome));
    let written =
        imsim_reports::write(&report, &args.out, overwrite).map_err(|error| error.to_string())?;
    print_outcome_text(&args.scenario, &outcome, None);
    for path in written {
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        say!("wrote {} ({bytes} bytes)", path.display());
    }
    Ok(outcome.ok())
}

/// A report's view of a run simulated in this process.
fn summary<'a>(scenario: &'a str, outcome: &'a RunOutcome) -> RunSummary<'a> {
    RunSummary {
        scenario,
        seed: outcome.setup.seed,
        history: &outcome.history,
        violations: &outcome.violations,
        stats: Some(&outcome.stats),
    }
}
