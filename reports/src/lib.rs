//! # imsim-reports: a run a person can read
//!
//! Renders one run — its history and its verdict — three ways:
//!
//! - `report.html`: one self-contained page (inline SVG, CSS and a little JS; no network) with a
//!   swimlane timeline per device and the server, fault bands, the send→display latency
//!   distribution, the invariant table, and each violation's witness highlighted on the timeline
//!   next to the command that replays it;
//! - `report.json`: the same data for tools ([`Report`], field names stable);
//! - `report.md`: a short summary for a CI comment.
//!
//! The crate reads the history and the run summary types only (DESIGN.md §2): it never runs a
//! simulation, so a history recorded elsewhere renders as well as one simulated here.
//!
//! ```no_run
//! # let (history, violations) = (imsim_history::History::default(), Vec::new());
//! use imsim_reports::{Overwrite, Report, RunSummary};
//! let summary = RunSummary { scenario: "one-to-one", seed: 1, history: &history,
//!                            violations: &violations, stats: None };
//! let report = Report::build(&summary);
//! imsim_reports::write(&report, "out".as_ref(), Overwrite::Refuse).unwrap();
//! ```

mod bands;
mod extract;
mod files;
#[cfg(test)]
mod fixture;
mod focus;
mod histogram;
mod html;
mod lanes;
pub mod latency;
mod markdown;
mod markup;
mod report;
mod svg;
mod time;

pub use extract::CATEGORIES;
pub use files::{write, Overwrite, WriteError, FILE_NAMES};
pub use focus::densest;
pub use report::*;

use imsim_history::stats::RunStats;
use imsim_history::{History, Violation};

/// What a report is made of: a run's history and verdict, and how to name it.
#[derive(Clone, Copy, Debug)]
pub struct RunSummary<'a> {
    /// The scenario as the user named it (a path or a shipped name); the replay command
    /// repeats it.
    pub scenario: &'a str,
    pub seed: u64,
    pub history: &'a History,
    pub violations: &'a [Violation],
    /// Counts of a run simulated in this process (packets are not in the history).
    pub stats: Option<&'a RunStats>,
}

impl Report {
    /// Extracts everything the renderings show from a run.
    pub fn build(summary: &RunSummary) -> Report {
        extract::build(summary)
    }

    /// `report.json`: pretty-printed, so a diff between two reports reads line by line, except
    /// that each timeline event takes one line (pretty-printed, they would make up most of the
    /// file: 7.6 MB instead of 5.3 MB for a run of 27,000 events).
    pub fn to_json(&self) -> String {
        let events: Vec<String> = self
            .events
            .iter()
            // A `Report` holds plain values and strings: it always serialises.
            .map(|event| serde_json::to_string(event).expect("an event serialises"))
            .collect();
        let head = Report {
            events: Vec::new(),
            ..self.clone()
        };
        let pretty = serde_json::to_string_pretty(&head).expect("a report serialises");
        if events.is_empty() {
            return pretty + "\n";
        }
        // `"events": []` can only be the key: inside a string its quotes would be escaped.
        let array = format!("\"events\": [\n    {}\n  ]", events.join(",\n    "));
        pretty.replacen("\"events\": []", &array, 1) + "\n"
    }

    /// `report.html`: one page, no external resources.
    pub fn to_html(&self) -> String {
        html::page(self)
    }

    /// `report.md`: the summary for a CI comment.
    pub fn to_markdown(&self) -> String {
        markdown::summary(self)
    }
}
