//! How runs are shown: a summary per run (text or one JSON object per line), violations with
//! their witness and the command that replays them, and the event trace of a replay.

use imsim_sim::history::Entry;
use std::io::Write;

/// `println!` that ends the process quietly when stdout is closed (`imsim run | head`), instead
/// of panicking on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

pub fn write_line(line: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}").is_err() {
        std::process::exit(0);
    }
}
use imsim_sim::{replay_command, History, RunOutcome, Violation};
use serde_json::{json, Value};

/// The summary of one run; `harness_failure` is a failure of the harness itself (a
/// nondeterministic seed), reported after the violations in the same way.
pub fn print_outcome_text(scenario: &str, outcome: &RunOutcome, harness_failure: Option<&str>) {
    let setup = &outcome.setup;
    let stats = &outcome.stats;
    let faults = serde_json::to_string(&setup.faults).expect("a fault profile serialises");
    say!("== {scenario} seed {} faults {faults}", setup.seed);
    say!(
        "   {}: sends {} committed {} acked {} displayed {} | packets {} dropped {} duplicated {} delayed {} held {} \
         | server crashes {} device restarts {} | simulated {:.1}s | invariants checked {}",
        if outcome.ok() && harness_failure.is_none() {
            "ok"
        } else {
            "FAILED"
        },
        stats.sends,
        stats.committed,
        stats.acked,
        stats.displayed,
        stats.packets.sent,
        stats.packets.dropped,
        stats.packets.duplicated,
        stats.packets.delayed,
        stats.packets.held,
        stats.server_crashes,
        stats.device_restarts,
        stats.simulated_ms as f64 / 1000.0,
                imsim_sim::Invariant::ALL.len(),
    );
    let latency = &stats.latency_ms;
    say!(
        "   cost: storage writes/msg {:.2} | packets/delivery {:.2} | notices/msg {:.2} | \
         presence packets/change {:.2} | send->display p50 {} ms p90 {} ms p99 {} ms max {} ms",
        stats.writes_per_message(),
        stats.packets_per_delivery(),
        stats.notices_per_message(),
        stats.presence_packets_per_change(),
        latency.p50,
        latency.p90,
        latency.p99,
        latency.max,
    );
    if !outcome.ok() {
        for line in outcome.failure_report(scenario).lines() {
            say!("   {line}");
        }
    }
    for line in harness_failure.iter().flat_map(|text| text.lines()) {
        say!("   {line}");
    }
}

/// Each violation as a JSON object with its witness records.
pub fn violations_json(history: &History, violations: &[Violation]) -> Vec<Value> {
    violations
        .iter()
        .map(|v| {
            let witness: Vec<Value> = v
                .witness
                .iter()
                .filter_map(|i| history.records.get(*i))
                .map(|r| serde_json::to_value(r).expect("a record serialises"))
                .collect();
            json!({
                "invariant": v.invariant.to_string(),
                "code": v.invariant.code(),
                "name": v.invariant.name(),
                "class": v.class(),
                "explanation": v.explanation,
                "witness": witness,
            })
        })
        .collect()
}

/// One run as the JSON object `imsim run --format json` prints per line.
pub fn outcome_json(scenario: &str, outcome: &RunOutcome) -> Value {
    json!({
        "scenario": scenario,
        "seed": outcome.setup.seed,
        "ok": outcome.ok(),
        "violations": violations_json(&outcome.history, &outcome.violations),
        "faults": outcome.setup.faults,
        "stats": outcome.stats,
        "replay": replay_command(
            scenario,
            outcome.setup.seed,
            outcome.setup.scenario.protocol.variant
        ),
    })
}

/// The trace of a replay, optionally only one device's or one conversation's events (harness
/// events are always shown: they say what the faults were doing).
pub fn print_trace(outcome: &RunOutcome, device: Option<u32>, conv: Option<u32>) {
    for record in &outcome.history.records {
        let harness = matches!(record.entry, Entry::Harness(_));
        let device_ok =
            device.is_none_or(|d| harness || record.node.to_string() == format!("device-{d}"));
        let conv_ok = conv.is_none_or(|c| {
            harness || {
                let value = serde_json::to_value(&record.entry).expect("an event serialises");
                value.get("conv").and_then(Value::as_u64) == Some(u64::from(c))
            }
        });
        if device_ok && conv_ok {
            say!("{record}");
        }
    }
}
