//! `imsim bench`: the harness's own speed, each figure beside its target (issue 7). In one run:
//! madsim's datagram ceiling, the protocol's packet rate against it, seeds per second, time
//! compression on a heartbeat-heavy hour, the 10k-member group and how it grows with group size,
//! and the checkers' throughput. Missed targets are reported, not errors: exit 0 when it ran.
//!
//! Every wall-clock reading is taken outside the simulation (inside it, time is virtual). Each
//! scale step runs in a child process of this executable (`bench-scale-step`), because peak
//! memory (VmHWM) is per process.

use crate::args::Format;
use imsim_history::check_all;
use imsim_history::large_history::large_group;
use imsim_sim::scenario::Conversations;
use imsim_sim::{ceiling, run, simulate, Scenario, Setup};
use serde_json::{json, Map, Value};
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Smaller sizes (a 5-minute heartbeat span, only the 10k group): under a minute.
    #[arg(long)]
    quick: bool,
    /// Tiny sizes through the same code paths, for the test suite (not a measurement).
    #[arg(long, hide = true, conflicts_with = "quick")]
    smoke: bool,
    /// text: a table of each measurement against its target; json: one object.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// How much of each measurement to run.
struct Sizes {
    mode: &'static str,
    ceiling_datagrams: u64,
    packet_seeds: u64,
    swarm_seeds: u64,
    heartbeat_devices: u32,
    heartbeat_ms: u64,
    scale_members: &'static [u32],
    checker_members: u32,
    checker_messages: u64,
    /// Datagrams through the codec and loopback UDP.
    live_datagrams: u64,
    /// Traffic (and as much quiet) of the scenario run simulated and live.
    live_duration_ms: u64,
    live_time_scale: f64,
}

const FULL: Sizes = Sizes {
    mode: "full",
    ceiling_datagrams: 1_000_000,
    packet_seeds: 200,
    swarm_seeds: 600,
    heartbeat_devices: 1_000,
    heartbeat_ms: 3_600_000,
    scale_members: &[10_000, 20_000, 50_000],
    checker_members: 10_000,
    checker_messages: 100,
    live_datagrams: 200_000,
    live_duration_ms: 10_000,
    live_time_scale: 1.0,
};

const QUICK: Sizes = Sizes {
    mode: "quick",
    ceiling_datagrams: 200_000,
    packet_seeds: 50,
    swarm_seeds: 100,
    heartbeat_devices: 1_000,
    heartbeat_ms: 300_000,
    scale_members: &[10_000],
    live_datagrams: 50_000,
    live_duration_ms: 5_000,
    ..FULL
};

const SMOKE: Sizes = Sizes {
    mode: "smoke",
    ceiling_datagrams: 2_000,
    packet_seeds: 2,
    swarm_seeds: 4,
    heartbeat_devices: 10,
    heartbeat_ms: 60_000,
    scale_members: &[50, 100],
    checker_members: 100,
    checker_messages: 20,
    live_datagrams: 500,
    live_duration_ms: 1_000,
    live_time_scale: 0.1,
};

/// The group size the scale targets are set for.
const SCALE_TARGET_MEMBERS: u32 = 10_000;

/// A figure's target.
#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    Below(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(bound) => value >= bound,
            Target::Below(bound) => value < bound,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtLeast(bound) => format!(">= {}", number(bound)),
            Target::Below(bound) => format!("< {}", number(bound)),
        }
    }
}

/// The report: figures in the order measured, each with an optional target.
#[derive(Default)]
struct Report {
    rows: Vec<(String, f64, Option<Target>)>,
    scale: Vec<Value>,
}

impl Report {
    fn add(&mut self, key: &str, value: f64, target: Option<Target>) {
        eprintln!("bench: {key} = {}", number(value));
        self.rows.push((key.to_string(), value, target));
    }
}

pub fn command_bench(args: BenchArgs) -> Result<bool, String> {
    let sizes = match (args.quick, args.smoke) {
        (_, true) => &SMOKE,
        (true, _) => &QUICK,
        _ => &FULL,
    };
    let started = Instant::now();
    let mut report = Report::default();
    let ceiling = ceiling::datagrams_per_s(sizes.ceiling_datagrams);
    report.add("ceiling_datagrams_per_s", ceiling, None);
    let packets_per_s = packet_rate(sizes.packet_seeds);
    report.add("packets_per_s", packets_per_s, None);
    report.add(
        "packet_ratio",
        packets_per_s / ceiling,
        Some(Target::AtLeast(0.5)),
    );
    let per_core = Some(Target::AtLeast(100.0));
    report.add("seeds_per_s", seed_rate(sizes.swarm_seeds, 1), per_core);
    let jobs2 = seed_rate(sizes.swarm_seeds, 2);
    report.add("seeds_per_s_jobs2", jobs2, Some(Target::AtLeast(200.0)));
    report.add("seeds_per_s_jobs2_per_core", jobs2 / 2.0, per_core);
    report.add(
        "time_compression",
        time_compression(sizes.heartbeat_devices, sizes.heartbeat_ms),
        Some(Target::AtLeast(1_000.0)),
    );
    scale(sizes.scale_members, &mut report)?;
    let (records, events_per_s) = checker_rate(sizes.checker_members, sizes.checker_messages)?;
    report.add("checker_records", records as f64, None);
    report.add(
        "checker_events_per_s",
        events_per_s,
        Some(Target::AtLeast(1_000_000.0)),
    );
    live(sizes, &mut report)?;
    let wall_s = started.elapsed().as_secs_f64();
    match args.format {
        Format::Json => println!("{}", to_json(&report, sizes.mode, wall_s)),
        Format::Text => print!("{}", to_text(&report, sizes.mode, wall_s)),
    }
    Ok(true)
}

/// The default scenario with faults off: packets sent per wall second of simulation (history
/// recording included; the checkers are timed on their own below).
fn packet_rate(seeds: u64) -> f64 {
    let mut scenario = Scenario::default_scenario();
    scenario.faults.swarm = false;
    let started = Instant::now();
    let mut packets = 0;
    for seed in 0..seeds {
        let history = simulate(&Setup::new(&scenario, seed));
        packets += history.traffic().map_or(0, |traffic| traffic.packets.sent);
    }
    packets as f64 / started.elapsed().as_secs_f64()
}

/// Seeds per wall second of the default scenario with swarm faults, each run checked, on
/// `threads` threads (seed k on thread k % threads).
fn seed_rate(seeds: u64, threads: u64) -> f64 {
    let scenario = Scenario::default_scenario();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for first in 0..threads {
            let scenario = &scenario;
            scope.spawn(move || {
                for seed in (first..seeds).step_by(threads as usize) {
                    std::hint::black_box(run(scenario, seed).ok());
                }
            });
        }
    });
    seeds as f64 / started.elapsed().as_secs_f64()
}

/// `devices` devices online for `duration_ms` with ten messages in all: simulated seconds per
/// wall second of one checked run.
fn time_compression(devices: u32, duration_ms: u64) -> f64 {
    let mut scenario = Scenario::default_scenario();
    scenario.name = format!("heartbeat-{devices}");
    scenario.topology.users = devices;
    scenario.topology.devices_per_user = 1;
    scenario.topology.conversations = Conversations::Pairs(10.min(devices / 2));
    scenario.workload.duration_ms = duration_ms;
    scenario.workload.messages = 10;
    scenario.workload.offline_periods_per_device = 0;
    scenario.workload.online_fraction = 1.0;
    scenario.faults.swarm = false;
    let started = Instant::now();
    let outcome = run(&scenario, 0);
    let wall_s = started.elapsed().as_secs_f64();
    outcome.stats.counts.simulated_ms as f64 / 1_000.0 / wall_s
}

/// The live figures: the codec over loopback UDP, and one short scenario simulated and live.
fn live(sizes: &Sizes, report: &mut Report) -> Result<(), String> {
    use imsim_live::bench::{compression, datagram_sizes, loopback_packets_per_s, short_scenario};
    for (kind, bytes) in datagram_sizes() {
        report.add(&format!("live_datagram_bytes_{kind}"), bytes as f64, None);
    }
    let loopback = loopback_packets_per_s(sizes.live_datagrams)?;
    report.add("live_loopback_packets_per_s", loopback, None);
    let imsim = std::env::current_exe()
        .map_err(|error| format!("cannot find the imsim binary to start the server: {error}"))?;
    let scenario = short_scenario(sizes.live_duration_ms);
    let figures = compression(&scenario, 0, sizes.live_time_scale, imsim)?;
    report.add("live_time_scale", sizes.live_time_scale, None);
    report.add("live_scenario_s", figures.scenario_s, None);
    report.add("live_simulated_wall_s", figures.simulated_wall_s, None);
    report.add("live_wall_s", figures.live_wall_s, None);
    report.add(
        "live_wall_per_simulated_wall",
        figures.live_wall_s / figures.simulated_wall_s,
        None,
    );
    report.add("live_packets_per_s", figures.live_packets_per_s, None);
    report.add("live_fdatasync_ms_mean", figures.fdatasync_ms_mean, None);
    report.add("live_ok", f64::from(u8::from(figures.live_ok)), None);
    Ok(())
}

/// Every checker over a generated group history: (records, records per second).
fn checker_rate(members: u32, messages: u64) -> Result<(usize, f64), String> {
    let history = large_group(members, messages);
    let started = Instant::now();
    let violations = check_all(&history);
    let wall_s = started.elapsed().as_secs_f64();
    if !violations.is_empty() {
        return Err(format!(
            "the generated history broke an invariant: {}",
            violations[0].explanation
        ));
    }
    let records = history.records.len();
    Ok((records, records as f64 / wall_s))
}

/// The group-10k workload with `members` users, all in the one group.
fn group_scenario(members: u32) -> Result<Scenario, String> {
    let mut scenario = Scenario::load("group-10k").map_err(|error| error.to_string())?;
    scenario.name = format!("group-{members}");
    scenario.topology.users = members;
    // The scale figures measure the workload alone, as they did before group-10k had faults: a
    // drawn server crash would make one step's cost a reconnect storm and the next one's not.
    scenario.faults.swarm = false;
    let group = scenario
        .topology
        .groups
        .first_mut()
        .ok_or("group-10k has no group")?;
    group.size = members;
    scenario.validate()?;
    Ok(scenario)
}

/// The hidden `bench-scale-step` subcommand: one checked run of the group workload at `members`,
/// printed as one JSON line with this process's peak memory.
pub fn command_scale_step(members: u32) -> Result<bool, String> {
    let scenario = group_scenario(members)?;
    let started = Instant::now();
    let outcome = run(&scenario, 0);
    let wall_s = started.elapsed().as_secs_f64();
    let step = json!({
        "members": members,
        "wall_s": wall_s,
        "peak_mib": peak_memory_kib()? as f64 / 1024.0,
        "deliveries": outcome.stats.counts.delivered,
        "deliveries_per_s": outcome.stats.counts.delivered as f64 / wall_s,
        "packets_sent": outcome.stats.packets.sent,
        "simulated_ms": outcome.stats.counts.simulated_ms,
        "violations": outcome.violations.len(),
    });
    println!("{step}");
    Ok(true)
}

/// This process's peak resident memory (VmHWM), in KiB.
fn peak_memory_kib() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|error| format!("cannot read /proc/self/status: {error}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM line in /proc/self/status".to_string())
}

/// Runs each scale step in a child process, then the growth per doubling between steps.
fn scale(steps: &[u32], report: &mut Report) -> Result<(), String> {
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let mut previous: Option<Value> = None;
    for members in steps {
        let output = std::process::Command::new(&executable)
            .args(["bench-scale-step", "--members", &members.to_string()])
            .output()
            .map_err(|error| format!("cannot start a scale step: {error}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut step: Value = match serde_json::from_str(stdout.trim()) {
            Ok(step) if output.status.success() => step,
            _ => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                return Err(format!("scale step {members} failed: {stderr}"));
            }
        };
        let field = |step: &Value, key: &str| step[key].as_f64().unwrap_or(f64::NAN);
        if *members == SCALE_TARGET_MEMBERS {
            report.add(
                "scale_10k_wall_s",
                field(&step, "wall_s"),
                Some(Target::Below(15.0)),
            );
            let peak = field(&step, "peak_mib");
            report.add("scale_10k_peak_mib", peak, Some(Target::Below(1_024.0)));
            let rate = field(&step, "deliveries_per_s");
            report.add("scale_10k_deliveries_per_s", rate, None);
        }
        if let Some(before) = &previous {
            let doublings = (f64::from(*members) / field(before, "members")).log2();
            let growth = |key: &str| (field(&step, key) / field(before, key)).powf(1.0 / doublings);
            let (wall, memory) = (growth("wall_s"), growth("peak_mib"));
            step["wall_growth_per_doubling"] = json!(wall);
            step["memory_growth_per_doubling"] = json!(memory);
        }
        eprintln!("bench: scale step {step}");
        report.scale.push(step.clone());
        previous = Some(step);
    }
    Ok(())
}

fn to_json(report: &Report, mode: &str, wall_s: f64) -> Value {
    let mut object = Map::new();
    let mut targets = Map::new();
    for (key, value, target) in &report.rows {
        object.insert(key.clone(), json!(value));
        if let Some(target) = target {
            let entry = json!({"target": target.describe(), "met": target.met(*value)});
            targets.insert(key.clone(), entry);
        }
    }
    object.insert("scale".to_string(), json!(report.scale));
    object.insert("targets".to_string(), Value::Object(targets));
    object.insert("mode".to_string(), json!(mode));
    object.insert("cores".to_string(), json!(cores()));
    object.insert("wall_s".to_string(), json!(wall_s));
    Value::Object(object)
}

fn to_text(report: &Report, mode: &str, wall_s: f64) -> String {
    let mut text = format!(
        "imsim bench ({mode}, release={}, {} cores, {wall_s:.1} s)\n\n",
        !cfg!(debug_assertions),
        cores()
    );
    text += &format!(
        "| {:<28} | {:>14} | {:>13} | {:<4} |\n",
        "figure", "value", "target", "met"
    );
    text += &format!("|{:-<30}|{:->16}|{:->15}|{:-<6}|\n", "", "", "", "");
    for (key, value, target) in &report.rows {
        let (goal, met) = match target {
            Some(target) => (
                target.describe(),
                if target.met(*value) { "yes" } else { "NO" },
            ),
            None => (String::new(), ""),
        };
        text += &format!(
            "| {key:<28} | {:>14} | {goal:>13} | {met:<4} |\n",
            number(*value)
        );
    }
    text += "\n| members | wall s | peak MiB | deliveries/s | wall growth/doubling | memory growth/doubling |\n";
    text += "|--------:|-------:|---------:|-------------:|---------------------:|-----------------------:|\n";
    for step in &report.scale {
        let field = |key: &str| step[key].as_f64().map(number).unwrap_or("-".to_string());
        text += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            field("members"),
            field("wall_s"),
            field("peak_mib"),
            field("deliveries_per_s"),
            field("wall_growth_per_doubling"),
            field("memory_growth_per_doubling"),
        );
    }
    text
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Three significant figures for small values, whole numbers with separators for large ones.
fn number(value: f64) -> String {
    if !value.is_finite() || value.abs() < 1_000.0 {
        return format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string();
    }
    let whole = format!("{:.0}", value.round());
    let mut grouped = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}
