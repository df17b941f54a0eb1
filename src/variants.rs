//! `imsim variants [--format json]`: the known-bug catalogue, one broken protocol variant per
//! line with the scenario that exposes it, the invariant expected to catch it and what it does.

use crate::args::Format;
use crate::output::say;
use imsim_model::CATALOGUE;
use serde_json::json;

pub fn print_catalogue(format: Format) {
    for entry in CATALOGUE {
        match format {
            Format::Text => say!(
                "{:<30} {:<24} {:<22} {}",
                entry.variant.name(),
                entry.scenario,
                entry.invariant,
                entry.description
            ),
            Format::Json => say!(
                "{}",
                json!({
                    "name": entry.variant.name(),
                    "scenario": entry.scenario,
                    "invariant": entry.invariant,
                    "also": entry.also,
                    "description": entry.description,
                })
            ),
        }
    }
}
