//! `imsim variants [--format json]`: the known-bug catalogue, one broken protocol variant per
//! line with the scenario that exposes it, the invariant expected to catch it and what it does.

use crate::args::Format;
use crate::output::say;
use imsim_model::CATALOGUE;
use serde_json::json;

pub fn print_catalogue(format: Format) {
    if format == Format::Text {
        for line in catalogue_lines() {
            say!("{line}");
        }
        return;
    }
    for entry in CATALOGUE {
        say!(
            "{}",
            json!({
                "name": entry.variant.name(),
                "scenario": entry.scenario,
                "invariant": entry.invariant,
                "also": entry.also,
                "description": entry.description,
            })
        );
    }
}

/// The catalogue as a table: a header, then one row per variant, columns as wide as their
/// widest cell.
fn catalogue_lines() -> Vec<String> {
    let header = ["VARIANT", "SCENARIO", "CAUGHT BY", "WHAT IT BREAKS"];
    let rows: Vec<[&str; 4]> = std::iter::once(header)
        .chain(CATALOGUE.iter().map(|entry| {
            [
                entry.variant.name(),
                entry.scenario,
                entry.invariant,
                entry.description,
            ]
        }))
        .collect();
    let width = |column: usize| rows.iter().map(|row| row[column].chars().count()).max();
    let widths = [width(0), width(1), width(2)].map(|w| w.unwrap_or(0));
    rows.iter()
        .map(|row| {
            format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_header_and_every_column_starts_at_the_same_place() {
        let lines = catalogue_lines();
        assert!(lines[0].starts_with("VARIANT "), "{}", lines[0]);
        assert_eq!(lines.len(), CATALOGUE.len() + 1);
        for title in ["SCENARIO", "CAUGHT BY", "WHAT IT BREAKS"] {
            let at = lines[0].find(title).unwrap();
            for line in &lines[1..] {
                let before: String = line.chars().take(at).collect();
                assert!(before.ends_with("  "), "{title} misaligned: {line}");
                let cell = line.chars().nth(at).unwrap();
                assert_ne!(cell, ' ', "{title} misaligned: {line}");
            }
        }
    }
}
