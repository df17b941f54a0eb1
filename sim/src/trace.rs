//! `RUST_LOG` logging, so a replay reads like a log: every line starts with the simulated time
//! and the node that logged it, the way the history shows them.
//!
//! ```text
//! seed 3      2.211s device-1   DEBUG imsim::event: send_requested {"body":"u1/d1 #74",…}
//! seed 3      2.211s device-1   TRACE imsim::net: transmit d1 -> server pass Send { … }
//! seed 3      2.223s server     TRACE imsim::net: receive from d1 Send { … }
//! ```
//!
//! Targets: `imsim::net` (trace: every packet sent with its fault verdict, every packet
//! received), `imsim::event` (debug: every protocol event as it is recorded), `imsim::harness`
//! (info: faults starting and ending, phases). `RUST_LOG=imsim=debug` shows the protocol,
//! `RUST_LOG=imsim=trace` the packets too. Output goes to stderr; stdout stays the trace or the
//! summary.
//!
//! The node is madsim's: madsim runs each task inside a `node` span carrying the node's name,
//! and [`NodeNames`] keeps that name for the formatter. The time is madsim's clock, read only
//! when a line is written; logging reads no randomness, so a run logs without changing its
//! history. Without `RUST_LOG` no subscriber is installed and every call site costs one load
//! of the global level filter: nothing is formatted.

use imsim_history::Entry;
use imsim_model::DeviceId;
use madsim::time::Instant;
use std::cell::Cell;
use std::fmt;
use tracing::span::{Attributes, Id};
use tracing::{field::Field, Event, Subscriber};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Target of packet lines (trace level).
pub const NET: &str = "imsim::net";
/// Target of protocol events (debug level).
pub const EVENT: &str = "imsim::event";
/// Target of harness events: faults, phases, the end of the run (info level).
pub const HARNESS: &str = "imsim::harness";

/// madsim names the node that runs the controller `madsim-main`; the history calls it the
/// harness.
const MADSIM_MAIN: &str = "madsim-main";

/// Installs the logger when `RUST_LOG` is set and not empty. Returns whether it did, or a
/// message naming what is wrong with `RUST_LOG`.
pub fn init_from_env() -> Result<bool, String> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => value,
        _ => return Ok(false),
    };
    let mut filter = EnvFilter::builder()
        .parse(&directives)
        .map_err(|error| format!("RUST_LOG={directives}: {error}"))?;
    if !directives.contains("madsim") {
        // madsim's `node` spans (error level) carry the node names; keep them even when the
        // user asked only for imsim's targets. madsim's own error events come along: they say
        // why a node panicked, which is worth seeing.
        filter = filter.add_directive(
            "madsim::sim::task=error"
                .parse()
                .expect("a constant directive parses"),
        );
    }
    let format = tracing_subscriber::fmt::layer()
        .event_format(SimulatedFormat)
        .with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(filter)
        .with(NodeNames)
        .with(format)
        .try_init()
        .map_err(|error| format!("cannot install the RUST_LOG logger: {error}"))?;
    Ok(true)
}

thread_local! {
    /// When the run on this thread started (each run has a thread of its own).
    static RUN_START: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Called when a run starts, on its simulation thread, with the instant its history counts from.
pub(crate) fn set_run_start(start: Instant) {
    RUN_START.with(|cell| cell.set(Some(start)));
}

/// Simulated milliseconds since the start of the run, exactly as the history stamps its records;
/// `None` outside a simulation.
fn run_time_ms() -> Option<u64> {
    madsim::time::TimeHandle::try_current()?;
    let start = RUN_START.with(Cell::get)?;
    // Inside the runtime `Instant` is madsim's virtual clock.
    Some(Instant::now().saturating_duration_since(start).as_millis() as u64)
}

/// A node's name, kept in the extensions of madsim's `node` span.
struct NodeName(String);

/// Remembers the name of every madsim `node` span when it is created.
struct NodeNames;

impl<S> Layer<S> for NodeNames
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let metadata = attributes.metadata();
        if metadata.name() != "node" || !metadata.target().starts_with("madsim") {
            return;
        }
        let mut visitor = NameVisitor(None);
        attributes.record(&mut visitor);
        if let (Some(name), Some(span)) = (visitor.0, context.span(id)) {
            span.extensions_mut().insert(NodeName(name));
        }
    }
}

struct NameVisitor(Option<String>);

impl tracing::field::Visit for NameVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "name" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "name" && self.0.is_none() {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

/// `seed N  <simulated time> <node> LEVEL target: fields`.
struct SimulatedFormat;

impl<S, N> FormatEvent<S, N> for SimulatedFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if let Some(seed) = std::thread::current()
            .name()
            .and_then(|name| name.strip_prefix("imsim-seed-"))
        {
            write!(writer, "seed {seed:<4} ")?;
        }
        match run_time_ms() {
            Some(ms) => write!(writer, "{:>5}.{:03}s ", ms / 1000, ms % 1000)?,
            None => write!(writer, "{:>10} ", "-")?,
        }
        let node = context.event_scope().and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<NodeName>().map(|n| n.0.clone()))
        });
        let node = match node.as_deref() {
            Some(MADSIM_MAIN) => "harness",
            Some(name) => name,
            None => "-",
        };
        let metadata = event.metadata();
        write!(
            writer,
            "{node:<10} {:>5} {}: ",
            metadata.level(),
            metadata.target()
        )?;
        context.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// An entry as a log line shows it: its type, then its fields as compact JSON.
pub(crate) struct EntryLine<'a>(pub &'a Entry);

impl fmt::Display for EntryLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = match self.0 {
            Entry::Protocol(event) => serde_json::to_value(event),
            Entry::Harness(event) => serde_json::to_value(event),
        }
        .map_err(|_| fmt::Error)?;
        let kind = fields.as_object_mut().and_then(|o| o.remove("type"));
        let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("?");
        write!(f, "{kind} {fields}")
    }
}

/// A packet's direction on a device's link to the server, for packet lines: `d3 -> server`.
pub(crate) struct Link {
    pub device: DeviceId,
    pub to_server: bool,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_server {
            true => write!(f, "{} -> server", self.device),
            false => write!(f, "server -> {}", self.device),
        }
    }
}

/// Logs an entry as it is recorded: protocol events at debug, harness events at info.
pub(crate) fn log_entry(entry: &Entry) {
    match entry {
        Entry::Protocol(_) => tracing::debug!(target: EVENT, "{}", EntryLine(entry)),
        Entry::Harness(_) => tracing::info!(target: HARNESS, "{}", EntryLine(entry)),
    }
}
