//! How runs are shown: a summary per run (text or one JSON object per line), violations with
//! their witness and the command that replays them, and the event trace of a replay.

use imsim_history::Entry;
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
use imsim_history::{replay_command, History, Violation};
use imsim_sim::RunOutcome;
use serde::Serialize;
use serde_json::{json, Value};

/// The summary of one run; `harness_failure` is a failure of the harness itself (a
/// nondeterministic seed), reported after the violations in the same way.
pub fn print_outcome_text(scenario: &str, outcome: &RunOutcome, harness_failure: Option<&str>) {
    let setup = &outcome.setup;
    let stats = &outcome.stats;
    let faults = serde_json::to_string(&setup.faults).expect("a fault profile serialises");
    say!("== {scenario} seed {} faults {faults}", setup.seed);
    if let Some(drawn) = &setup.features {
        let features = serde_json::to_string(drawn).expect("the drawn features serialise");
        say!("   features {features}");
    }
    say!(
        "   {}: sends {} committed {} acked {} displayed {} | packets {} dropped {} duplicated {} delayed {} held {} \
         | server crashes {} device restarts {} | simulated {:.1}s | invariants checked {}",
        if outcome.ok() && harness_failure.is_none() {
            "ok"
        } else {
            "FAILED"
        },
        stats.counts.sends,
        stats.counts.committed,
        stats.counts.acked,
        stats.counts.displayed,
        stats.packets.sent,
        stats.packets.dropped,
        stats.packets.duplicated,
        stats.packets.delayed,
        stats.packets.held,
        stats.counts.server_crashes,
        stats.counts.device_restarts,
        stats.counts.simulated_ms as f64 / 1000.0,
                imsim_history::Invariant::ALL.len(),
    );
    let latency = &stats.latency_ms;
    let queue = match stats.packets.queue_path() {
        0 => String::new(),
        _ => format!(
            " | queue packets/msg {:.2}",
            stats.queue_packets_per_message()
        ),
    };
    say!(
        "   cost: message writes/msg {:.2} | packets/delivery {:.2} | notices/msg {:.2} | \
         presence packets/change {:.2}{queue} | send->display p50 {} ms p90 {} ms p99 {} ms \
         max {} ms",
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

/// A violation as `imsim run`, `imsim check` and the sweep's determinism check print it in
/// JSON: the one shape of a violation for tools.
#[derive(Clone, Debug, Serialize)]
pub struct ViolationJson {
    /// Code and name, e.g. `O1 seq-monotonic`.
    pub invariant: String,
    pub code: String,
    pub name: String,
    /// `safety`, `liveness`, or `harness` (the run itself misbehaved: nondeterminism).
    pub class: String,
    pub explanation: String,
    /// The witness records, as history lines.
    pub witness: Vec<Value>,
    /// For a nondeterministic seed: the first record at which its two histories differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverging_record: Option<usize>,
}

impl ViolationJson {
    pub fn of(history: &History, violation: &Violation) -> ViolationJson {
        let witness = violation
            .witness
            .iter()
            .filter_map(|i| history.records.get(*i))
            .map(|r| serde_json::to_value(r).expect("a record serialises"))
            .collect();
        ViolationJson {
            invariant: violation.invariant.to_string(),
            code: violation.invariant.code().to_string(),
            name: violation.invariant.name().to_string(),
            class: format!("{:?}", violation.class()).to_lowercase(),
            explanation: violation.explanation.clone(),
            witness,
            diverging_record: None,
        }
    }
}

/// Each violation as a JSON object with its witness records.
pub fn violations_json(history: &History, violations: &[Violation]) -> Vec<Value> {
    violations
        .iter()
        .map(|v| serde_json::to_value(ViolationJson::of(history, v)).expect("plain values"))
        .collect()
}

/// One run as the JSON object `imsim run --format json` prints per line.
pub fn outcome_json(scenario: &str, outcome: &RunOutcome) -> Value {
    let mut object = json!({
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
    });
    if let Some(drawn) = &outcome.setup.features {
        object["features"] = json!(drawn);
    }
    object
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
