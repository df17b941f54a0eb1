//! The simulation as the oracle of mutation testing (`scripts/mutants.sh`): every scenario of the
//! default set on a small band of seeds, failing on the first seed that breaks an invariant. The
//! runaway guard (`sim/src/runaway.rs`) stops a mutant that loops on the network; cargo-mutants'
//! timeout stops one that loops without sending.
//!
//! Not part of a plain `cargo test` (`test = false` in `sim/Cargo.toml`): run it by name,
//! `cargo test --release -p imsim-sim --test mutation_sweep`. `IMSIM_MUTANTS_SEEDS=A..B` sets
//! the seeds (default 0..30). `IMSIM_MUTANTS_HASHES=FILE` writes `scenario seed trace-hash` for
//! every run: the same file for a survivor and for the unmutated tree is the evidence that the
//! mutant is equivalent (`mutants/equivalent.txt`).
//!
//! Half of the oracle is the correct protocol holding; the other half is the known-bug catalogue
//! still being caught: code that only a broken variant runs (`// VARIANT` sites in model/src)
//! cannot change the correct protocol, but a mutant there can make a catalogue bug vanish, and
//! the harness's claim to catch it with it.
//!
//! The order is seed-major (seed 0 of every scenario, then seed 1, …): a mutant that breaks the
//! protocol outright fails within the first few runs whichever feature it breaks, so a killed
//! mutant costs seconds, and only a survivor pays for the whole band.

use imsim_history::coverage::{self, Coverage, Signal};
use imsim_model::CATALOGUE;
use imsim_sim::scenario::default_set;
use imsim_sim::{run, Scenario};
use std::ops::Range;
use std::time::Instant;

/// Seeds when `IMSIM_MUTANTS_SEEDS` is not set.
const SEEDS_DEFAULT: Range<u64> = 0..30;

/// How far from the band's first seed a catalogue variant may be first caught: the promise the
/// README's detection table measures ("each caught within 1,000 seeds"). The search stops at the
/// first catch, so on the unmutated tree it costs each variant's first-detection seed (the
/// slowest, `stale-route-counted-delivered`, 45 runs of `cluster-failover`), and only a
/// mutant that hides a bug pays for the whole band.
const CATALOGUE_SEEDS: u64 = 1_000;

fn seeds() -> Range<u64> {
    let Ok(text) = std::env::var("IMSIM_MUTANTS_SEEDS") else {
        return SEEDS_DEFAULT;
    };
    let parsed = text
        .split_once("..")
        .and_then(|(start, end)| Some(start.parse().ok()?..end.parse().ok()?));
    match parsed {
        Some(seeds) if !seeds.is_empty() => seeds,
        _ => panic!("IMSIM_MUTANTS_SEEDS={text:?}: expected A..B with A < B"),
    }
}

#[test]
fn default_set_holds_every_invariant() {
    let seeds = seeds();
    let scenarios: Vec<(&str, Scenario)> = default_set()
        .map(|name| (name, Scenario::load(name).expect("shipped, so valid")))
        .collect();
    // Hashing a history is a pass over all of it: only when asked for.
    let hashes_path = std::env::var("IMSIM_MUTANTS_HASHES").ok();
    let mut hashes = String::new();
    let mut coverage = Coverage::default();
    let started = Instant::now();
    for seed in seeds.clone() {
        for (name, scenario) in &scenarios {
            let outcome = run(scenario, seed);
            coverage.add(&coverage::signals(&outcome.history));
            assert!(
                outcome.ok(),
                "{name} seed {seed}:\n{}",
                outcome.failure_report(name)
            );
            if hashes_path.is_some() {
                hashes += &format!("{name} {seed} {:016x}\n", outcome.history.trace_hash());
            }
        }
    }
    // Every coverage signal is reached by some run of the band (measured: all are, on 0..30).
    // A mutant that switches a path off everywhere (a membership change always refused, a
    // notice never sent) breaks no invariant, but leaves its signal at zero.
    let unreached: Vec<&str> = Signal::ALL
        .iter()
        .filter(|signal| coverage.hits(**signal) == 0)
        .map(|signal| signal.name())
        .collect();
    assert!(
        unreached.is_empty(),
        "no run of the default set on seeds {seeds:?} reached {unreached:?}"
    );
    if let Some(path) = hashes_path {
        std::fs::write(&path, hashes).expect("write the trace hashes");
    }
    eprintln!(
        "mutation sweep: {} scenarios x seeds {seeds:?} held every invariant in {:.1}s",
        scenarios.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn every_catalogue_variant_is_caught_by_its_invariant() {
    let start = seeds().start;
    let seeds = start..start + CATALOGUE_SEEDS;
    for entry in CATALOGUE {
        let mut scenario = Scenario::load(entry.scenario).expect("shipped, so valid");
        scenario.protocol.variant = entry.variant;
        let caught = seeds
            .clone()
            .map(|seed| run(&scenario, seed))
            .find(|outcome| {
                outcome
                    .violations
                    .iter()
                    .any(|violation| violation.invariant.name() == entry.invariant)
            });
        let Some(outcome) = caught else {
            panic!(
                "{} on {} no longer breaks {} on seeds {seeds:?}",
                entry.variant, entry.scenario, entry.invariant
            );
        };
        // The replay command is how a user reproduces the catch: it must name the variant.
        let report = outcome.failure_report(entry.scenario);
        assert!(
            report.contains(&format!("--variant {}", entry.variant.name())),
            "the replay command does not name the variant:\n{report}"
        );
    }
}
