//! `report.md`: what a CI comment needs — the verdict, the counts, the invariant table and each
//! violation with its witness and the command that replays it. The HTML has the rest.

use crate::report::{Report, Status};
use crate::time::seconds;
use std::fmt::Write;

pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let verdict = if report.ok { "ok" } else { "FAILED" };
    let _ = writeln!(
        out,
        "### imsim report: `{}` seed {} — {verdict}\n",
        report.scenario, report.seed
    );
    let counts = &report.counts;
    let _ = writeln!(
        out,
        "variant `{}` · {} records · {} simulated{}\n",
        report.variant,
        counts.records,
        seconds(report.duration_ms),
        if report.complete {
            ""
        } else {
            " · **incomplete history: liveness not judged**"
        }
    );
    let _ = writeln!(
        out,
        "sends {} · committed {} · acked {} · displayed {} · send failures {} · pulls {} · \
         server crashes {} · device restarts {} · partitions {}",
        counts.sends,
        counts.committed,
        counts.acked,
        counts.displayed,
        counts.send_failures,
        counts.pulls,
        counts.server_crashes,
        counts.device_restarts,
        counts.partitions
    );
    if let Some(packets) = &counts.packets {
        let _ = writeln!(
            out,
            "\npackets {} · dropped {} · duplicated {} · delayed {} · held {}",
            packets.sent, packets.dropped, packets.duplicated, packets.delayed, packets.held
        );
    }
    let latency = &report.latency;
    if let (Some(p50), Some(p90), Some(p99)) = (latency.p50_ms, latency.p90_ms, latency.p99_ms) {
        let _ = writeln!(
            out,
            "\nsend→display latency (simulated): p50 {} · p90 {} · p99 {} · max {} ({} samples)",
            seconds(p50),
            seconds(p90),
            seconds(p99),
            seconds(latency.max_ms.unwrap_or(p99)),
            latency.samples
        );
    }
    invariant_table(&mut out, report);
    violations(&mut out, report);
    coverage(&mut out, report);
    let _ = writeln!(out, "\nreplay: `{}`", report.replay);
    out
}

fn invariant_table(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "\n| code | invariant | class | result |\n|---|---|---|---|"
    );
    for row in &report.invariants {
        let result = match row.status {
            Status::Held => "held".to_string(),
            Status::Violated => format!("**VIOLATED** ({})", row.violations),
            Status::NotJudged => "not judged".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {result} |",
            row.code, row.name, row.class
        );
    }
}

/// Folded, so the comment stays short: the count of each coverage signal in this run.
fn coverage(out: &mut String, report: &Report) {
    if report.coverage.is_empty() {
        return;
    }
    let hit = report.coverage.iter().filter(|row| row.count > 0).count();
    let _ = writeln!(
        out,
        "\n<details><summary>coverage signals: {hit} of {} hit</summary>\n\n\
         | signal | count |\n|---|---|",
        report.coverage.len()
    );
    for row in &report.coverage {
        let _ = writeln!(out, "| `{}` | {} |", row.signal, row.count);
    }
    let _ = writeln!(out, "\n</details>");
}

fn violations(out: &mut String, report: &Report) {
    if report.violations.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n#### Violations\n");
    for violation in &report.violations {
        let _ = writeln!(
            out,
            "- **{} {}** ({}): {}",
            violation.code, violation.name, violation.class, violation.explanation
        );
        let _ = writeln!(out, "\n  ```");
        for record in &violation.witness {
            let _ = writeln!(out, "  [{}] {}", record.index, record.line);
        }
        let _ = writeln!(out, "  ```");
    }
}
