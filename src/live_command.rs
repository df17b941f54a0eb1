//! `imsim serve` and `imsim live`: the protocol for real (the logic is in `imsim-live`).
//!
//! Exit codes as everywhere: 0 every invariant held (or a server stopped cleanly), 1 a
//! violation, 2 bad input — a scenario that does not load, a data directory that is locked or
//! corrupt (the message names the file and the offset), a harness that could not run.

use crate::args::Format;
use crate::output::{outcome_json, print_outcome_text, say};
use imsim_live::clock::{monotonic_ns, Clock};
use imsim_live::directory::directory_of;
use imsim_live::run::{run_live, LiveOptions, LiveOutcome};
use imsim_live::server::{serve, ServeClock, ServeOptions};
use imsim_sim::Setup;
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// The data directory: the durable log, locked while this server runs.
    #[arg(long)]
    pub data: PathBuf,
    /// The scenario whose users, conversations and protocol settings the server serves.
    #[arg(long, default_value = "one-to-one")]
    pub scenario: String,
    /// The seed that draws the scenario's topology.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Serve a deliberately broken protocol (see `imsim variants`) instead of the correct one.
    #[arg(long, value_name = "NAME", value_parser = crate::args::parse_variant)]
    pub variant: Option<imsim_model::Variant>,
    /// Real time per scenario time (0.1 runs every protocol timeout ten times faster).
    #[arg(long, default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// The monotonic-clock reading (ns) that is scenario time zero (set by `imsim live`).
    #[arg(long, default_value_t = 0, hide = true)]
    pub clock_origin_ns: u64,
    /// Print `started` once the data directory is open, then read the clock origin (ns) from a
    /// line of stdin (`imsim live`'s first server: scenario time starts once the process is up).
    #[arg(long, hide = true, conflicts_with = "clock_origin_ns")]
    pub clock_origin_stdin: bool,
    /// Append the server's events to this file as JSON lines.
    #[arg(long)]
    pub events_out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct LiveArgs {
    /// A scenario file or a shipped scenario name.
    pub scenario: String,
    /// The seed that draws the topology, workload and faults (default: drawn, and printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Real time per scenario time: 0.1 runs a 174 s scenario in about 17 s.
    #[arg(long, default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// Write the merged history as JSON lines to this file (it must not exist).
    #[arg(long)]
    pub history_out: Option<PathBuf>,
    /// Run a deliberately broken protocol (see `imsim variants`) instead of the correct one.
    #[arg(long, value_name = "NAME", value_parser = crate::args::parse_variant)]
    pub variant: Option<imsim_model::Variant>,
    /// text for people; json: one JSON object for the run, as `imsim run --format json`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

fn parse_time_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if (0.01..=100.0).contains(&scale) => Ok(scale),
        _ => Err(format!("`{text}` is not a time scale in 0.01..=100")),
    }
}

pub fn command_serve(args: ServeArgs) -> Result<bool, String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let scenario = crate::args::load(&args.scenario, args.variant)?;
    let setup = Setup::new(&scenario, args.seed);
    let clock = if args.clock_origin_stdin {
        ServeClock::Deferred {
            scale: args.time_scale,
            origin_ns: Box::new(clock_origin_from_stdin),
        }
    } else {
        ServeClock::Fixed(Clock::new(args.clock_origin_ns, args.time_scale))
    };
    let options = ServeOptions {
        listen: args.listen,
        data: args.data,
        config: scenario.protocol.clone(),
        directory: directory_of(&setup.topology),
        clock,
        events_out: args.events_out,
    };
    serve(options, |address| {
        // The parent (`imsim live`) waits for this line before it starts the devices.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening {address}");
        let _ = stdout.flush();
    })
    .map_err(|error| error.to_string())?;
    Ok(true)
}

/// Says `started` on stdout and reads the clock origin from the next line of stdin.
fn clock_origin_from_stdin() -> Result<u64, String> {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "started");
    let _ = stdout.flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|error| format!("--clock-origin-stdin: cannot read stdin: {error}"))?;
    line.trim().parse().map_err(|_| {
        format!(
            "--clock-origin-stdin: expected a clock reading in nanoseconds on stdin, got `{}`",
            line.trim()
        )
    })
}

pub fn command_live(args: LiveArgs) -> Result<bool, String> {
    let scenario = crate::args::load(&args.scenario, args.variant)?;
    if scenario.topology.gateways > 0 {
        return Err(format!(
            "{}: topology.gateways runs only in simulation (`imsim run`); a live run has one \
             server and no gateways",
            args.scenario
        ));
    }
    if let Some(path) = &args.history_out {
        if path.exists() {
            return Err(format!(
                "{}: already exists; refusing to overwrite it",
                path.display()
            ));
        }
    }
    let seed = args.seed.unwrap_or_else(|| monotonic_ns() % 1_000_000);
    let imsim = std::env::current_exe()
        .map_err(|error| format!("cannot find the imsim binary to start the server: {error}"))?;
    if args.format == Format::Text {
        say!(
            "live: {} seed {seed} at time scale {} (a live run is not replayable bit for bit: \
             the seed draws the workload and the faults, the timing is real)",
            args.scenario,
            args.time_scale
        );
    }
    let options = LiveOptions {
        scenario,
        seed,
        time_scale: args.time_scale,
        imsim,
    };
    let live = run_live(&options)?;
    if let Some(path) = &args.history_out {
        crate::replay::write_new_file(path, &live.outcome.history.to_jsonl())?;
    }
    match args.format {
        Format::Text => print_live_text(&args.scenario, &live),
        Format::Json => {
            let mut value = outcome_json(&args.scenario, &live.outcome);
            value["live"] = live_json(&live);
            say!("{value}");
        }
    }
    Ok(live.outcome.ok())
}

fn live_json(live: &LiveOutcome) -> serde_json::Value {
    json!({
        "wall_s": live.wall.as_secs_f64(),
        "server": live.server_counts,
        "notes": live.notes,
        "run_dir": (!live.outcome.ok()).then(|| live.run_dir.display().to_string()),
    })
}

fn print_live_text(scenario: &str, live: &LiveOutcome) {
    print_outcome_text(scenario, &live.outcome, None);
    let packets = live.outcome.stats.packets.sent;
    let wall_s = live.wall.as_secs_f64();
    say!(
        "   live: wall {wall_s:.1}s | packets at the device sockets {packets} ({:.0}/s)",
        packets as f64 / wall_s.max(1e-9)
    );
    for counts in &live.server_counts {
        say!(
            "   server: received {} sent {} | bad datagrams {} oversized {} send buffer full {} \
             | syncs {} mean fdatasync {:.2} ms",
            counts.received,
            counts.sent,
            counts.bad_datagrams,
            counts.oversized,
            counts.send_buffer_full,
            counts.syncs,
            counts.sync_us as f64 / 1_000.0 / counts.syncs.max(1) as f64
        );
    }
    for note in &live.notes {
        say!("   note: {note}");
    }
    if !live.outcome.ok() {
        say!(
            "   (the replay line runs this seed in the simulator; the live run's files: {})",
            live.run_dir.display()
        );
    }
}
