//! The argument types and parsers the subcommands share: the output format, seeds, jobs,
//! `--variant`, and scenario loading (a path or a shipped name).

use clap::ValueEnum;
use imsim_model::Variant;
use imsim_sim::scenario::default_set;
use imsim_sim::Scenario;
use std::ops::Range;

/// How a command prints its result: for people, or one JSON object per line for tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn parse_jobs(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("at least one job is needed".to_string()),
        Ok(jobs) => Ok(jobs),
        Err(_) => Err(format!("`{text}` is not a number of jobs")),
    }
}

pub fn parse_seed_range(text: &str) -> Result<Range<u64>, String> {
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

/// `--variant NAME`: a bad name is refused (exit 2) with the list of valid ones.
pub fn parse_variant(text: &str) -> Result<Variant, String> {
    Variant::parse(text)
}

/// Loads a scenario and, when `--variant` was given, switches its protocol to that variant (the
/// run records it in `RunStart.variant`).
pub fn load(name: &str, variant: Option<Variant>) -> Result<Scenario, String> {
    let mut scenario = Scenario::load(name).map_err(|error| error.to_string())?;
    if let Some(variant) = variant {
        scenario.protocol.variant = variant;
    }
    Ok(scenario)
}

/// Loads every scenario before running any, so a typo in the last one fails at once.
pub fn load_all(
    names: Vec<String>,
    variant: Option<Variant>,
) -> Result<Vec<(String, Scenario)>, String> {
    let names = if names.is_empty() {
        default_set().map(str::to_string).collect()
    } else {
        names
    };
    names
        .into_iter()
        .map(|name| load(&name, variant).map(|scenario| (name, scenario)))
        .collect()
}
