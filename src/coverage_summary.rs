//! The coverage section of a sweep's summary: for each scenario, every signal it can reach with
//! how often and in how many runs it was hit (never-hit ones marked), the ones it cannot reach
//! named as not applicable; and, for `--require-coverage`, the verdict naming what was missed and
//! the command that sweeps the same seeds again.

use imsim_history::coverage::{Coverage, Signal};
use imsim_model::Variant;
use imsim_sim::reach::{self, applies};
use imsim_sim::Scenario;
use serde_json::{json, Value};

/// One scenario's coverage over the sweep.
pub struct ScenarioCoverage {
    /// The scenario as the user named it.
    pub name: String,
    pub scenario: Scenario,
    pub coverage: Coverage,
    /// The seeds swept (before sharding).
    pub seeds: std::ops::Range<u64>,
}

impl ScenarioCoverage {
    /// The text lines of the summary's coverage section for this scenario.
    pub fn text_lines(&self) -> Vec<String> {
        let coverage = &self.coverage;
        let (applicable, not_applicable): (Vec<Signal>, Vec<Signal>) = Signal::ALL
            .iter()
            .partition(|signal| applies(**signal, &self.scenario));
        let missing = reach::missing(coverage, &self.scenario);
        let mut lines = vec![format!(
            "coverage of {} ({} runs): {} of {} signals apply, {} hit, {} never hit",
            self.name,
            coverage.runs,
            applicable.len(),
            Signal::ALL.len(),
            applicable.len() - missing.len(),
            missing.len(),
        )];
        for signal in applicable {
            let hits = coverage.hits(signal);
            let line = if hits == 0 {
                format!("  {:<36} NEVER HIT", signal.name())
            } else {
                let runs = coverage.runs_hit(signal);
                let share = 100.0 * runs as f64 / coverage.runs.max(1) as f64;
                format!(
                    "  {:<36} {hits:>8} hits in {runs:>6} runs ({share:.1}%)",
                    signal.name()
                )
            };
            lines.push(line);
        }
        if !not_applicable.is_empty() {
            let names: Vec<&str> = not_applicable.iter().map(|s| s.name()).collect();
            lines.push(format!("  not applicable: {}", names.join(", ")));
        }
        lines
    }

    /// The same as one JSON object (one line on stderr in `--format json`).
    pub fn json(&self) -> Value {
        let coverage = &self.coverage;
        let signals: Vec<Value> = Signal::ALL
            .iter()
            .map(|signal| {
                json!({
                    "signal": signal.name(),
                    "applies": applies(*signal, &self.scenario),
                    "hits": coverage.hits(*signal),
                    "runs_hit": coverage.runs_hit(*signal),
                })
            })
            .collect();
        let missing: Vec<&str> = coverage
            .missing(|signal| applies(signal, &self.scenario))
            .iter()
            .map(|s| s.name())
            .collect();
        json!({
            "coverage": {
                "scenario": self.name,
                "runs": coverage.runs,
                "signals": signals,
                "missing": missing,
            }
        })
    }
}

/// The coverage section in one line, when the table is not asked for: how many applicable
/// signals were hit over all scenarios, and the scenarios with one never hit.
pub fn one_line(coverages: &[ScenarioCoverage]) -> String {
    let (mut applicable, mut hit) = (0, 0);
    let mut gaps = Vec::new();
    for entry in coverages {
        let signals = Signal::ALL
            .iter()
            .filter(|signal| applies(**signal, &entry.scenario))
            .count();
        let missing = reach::missing(&entry.coverage, &entry.scenario).len();
        applicable += signals;
        hit += signals - missing;
        if missing > 0 {
            gaps.push(format!("{} ({missing})", entry.name));
        }
    }
    let scenarios = coverages.len();
    let plural = if scenarios == 1 { "" } else { "s" };
    let mut line = format!(
        "coverage: {hit} of {applicable} applicable signals hit over {scenarios} scenario{plural}"
    );
    if !gaps.is_empty() {
        line += &format!("; never hit in {}", gaps.join(", "));
    }
    line + " (--coverage prints the table)"
}

/// What `--require-coverage` says when applicable signals were never hit: one line per
/// scenario naming them, and the command that sweeps the same seeds again. Empty when every
/// applicable signal was hit.
pub fn missing_lines(coverages: &[ScenarioCoverage], shard: Option<String>) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in coverages {
        let missing = reach::missing(&entry.coverage, &entry.scenario);
        if missing.is_empty() {
            continue;
        }
        let names: Vec<&str> = missing.iter().map(|s| s.name()).collect();
        lines.push(format!(
            "COVERAGE MISSED: {} ({} runs) never hit {} applicable signal{}: {}",
            entry.name,
            entry.coverage.runs,
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            names.join(", ")
        ));
        let seeds = &entry.seeds;
        let mut command = format!(
            "imsim run {} --seeds {}..{}",
            entry.name, seeds.start, seeds.end
        );
        if let Some(shard) = &shard {
            command += &format!(" --shard {shard}");
        }
        let variant = entry.scenario.protocol.variant;
        if variant != Variant::Correct {
            command += &format!(" --variant {variant}");
        }
        lines.push(format!("  reproduce: {command} --require-coverage"));
    }
    lines
}
