//! The report as data: everything the HTML, JSON and Markdown renderings show, extracted once
//! from a run's history and verdict. `report.json` is this structure serialised, so its field
//! names are a contract with tools: add fields, never rename or remove them without raising
//! [`FORMAT_VERSION`].

use serde::{Deserialize, Serialize};

/// The version of `report.json`'s layout.
pub const FORMAT_VERSION: u32 = 1;

/// One run, ready to render.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format_version: u32,
    /// The scenario as the user named it (a path or a shipped name): the replay command repeats
    /// it.
    pub scenario: String,
    /// The scenario's own name, from the history's `run_started` record.
    pub scenario_name: String,
    pub seed: u64,
    pub variant: String,
    /// Every invariant held.
    pub ok: bool,
    /// The command that reproduces this run bit for bit.
    pub replay: String,
    /// The history reached `run_ended`; without it, liveness invariants were not judged.
    pub complete: bool,
    /// Simulated time of the last record.
    pub duration_ms: u64,
    /// When faults were healed and the quiet period began (the liveness phase boundary).
    pub liveness_phase_ms: Option<u64>,
    pub quiet_period_ms: Option<u64>,
    pub counts: Counts,
    /// The fault profile exactly as the history's `run_started` record holds it.
    pub faults: serde_json::Value,
    pub lanes: Vec<Lane>,
    /// Protocol events (and harness events the report does not draw as bands), in history order.
    pub events: Vec<TimelineEvent>,
    pub bands: Vec<Band>,
    /// The window the timeline shows first: the first violation's witness, else the densest
    /// stretch of the run.
    pub focus: Focus,
    pub latency: Latency,
    pub invariants: Vec<InvariantRow>,
    pub violations: Vec<ViolationReport>,
    /// Every coverage signal (`imsim_sim::coverage`) with how often this run hit it, in the
    /// signals' list order. A file written before the field existed reads back with it empty.
    #[serde(default)]
    pub coverage: Vec<SignalCount>,
}

/// One coverage signal ("sometimes" property) and how often the run hit it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalCount {
    /// The stable kebab-case name, e.g. `crash-between-store-and-ack`.
    pub signal: String,
    pub description: String,
    pub count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records in the history.
    pub records: u64,
    /// Events on the timeline.
    pub events: u64,
    pub sends: u64,
    pub committed: u64,
    pub acked: u64,
    pub displayed: u64,
    /// Sends refused at once or failed later (the user saw both).
    pub send_failures: u64,
    pub pulls: u64,
    pub server_crashes: u64,
    pub device_restarts: u64,
    pub partitions: u64,
    /// Packet counts exist only for runs simulated in this process, not for recorded histories.
    pub packets: Option<PacketCounts>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketCounts {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub held: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneKind {
    Server,
    Device,
    /// Harness events the report has no band for (new fault kinds appear here).
    Harness,
}

/// One swimlane: the server, one device, or the harness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    /// `server`, `device-3`, `harness`: the node as the history's text form names it.
    pub id: String,
    /// What the page shows, e.g. `d3 · u2`.
    pub label: String,
    pub kind: LaneKind,
    pub device: Option<u32>,
    pub user: Option<u32>,
}

/// One mark on the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// Index of the record in the history (witnesses refer to it).
    pub index: usize,
    pub t_ms: u64,
    /// Index into `Report::lanes`.
    pub lane: usize,
    /// The event's `type` as the history names it, e.g. `send_requested`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The group the event is drawn with: `send`, `commit`, `ack`, `display`, `pull`,
    /// `session`, `retry`, `buffer`, `failure`, or `other` for types the report does not know.
    pub category: String,
    pub conv: Option<u32>,
    /// The message the event is about, when it names one (directly, or by the conversation and
    /// seq it was committed at): the page follows a message across lanes with it.
    pub message: Option<MessageRef>,
    /// The event's fields, compact (`conv=3 seq=7 …`), long values shortened.
    pub detail: String,
}

/// A message's identity across the whole system: the device that sent it and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageRef {
    pub sender_device: u32,
    pub client_msg_id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BandKind {
    /// A device's link to the server is cut (one lane).
    Partition,
    /// The server is down: shaded across every lane.
    ServerDown,
    /// A device's app is killed (one lane).
    DeviceDown,
    /// A device has no session: logged out, lost it, or not logged in yet (one lane).
    Offline,
    /// From the liveness phase boundary to the end of the run (every lane).
    Liveness,
}

/// A stretch of time shaded on the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Band {
    pub kind: BandKind,
    /// Index into `Report::lanes`; `None` spans every lane.
    pub lane: Option<usize>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub label: String,
    /// The history does not say when it ended: it is drawn up to the end of the run.
    pub open_ended: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FocusReason {
    Witness,
    Densest,
    WholeRun,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Focus {
    pub start_ms: u64,
    pub end_ms: u64,
    pub reason: FocusReason,
}

/// Send→display latency in simulated time: from `send_requested` on the sending device to the
/// first `displayed` of that message (matched by sender device and client_msg_id) on each
/// other device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// One per (message, displaying device).
    pub samples: u64,
    /// (committed message, member device other than the sender) pairs never displayed by the
    /// end of the run; `None` when the history has no topology.
    pub not_displayed: Option<u64>,
    pub min_ms: Option<u64>,
    pub p50_ms: Option<u64>,
    pub p90_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
    pub mean_ms: Option<f64>,
    /// Buckets on a 1-2-5 scale, from the one holding the fastest sample to the slowest.
    pub histogram: Vec<Bucket>,
    /// The slowest deliveries, slowest first (at most [`crate::latency::SLOWEST_MAX`]).
    pub slowest: Vec<LatencySample>,
    /// The deliveries by the path that brought them (`displayed.via`: push, ack, or a pull and
    /// its reason), in path order; empty when the history does not say.
    #[serde(default)]
    pub paths: Vec<PathMix>,
}

/// How many deliveries one path made, and how long they took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMix {
    /// `push`, `ack`, `pull (gap)`, `pull (resume)`, …
    pub path: String,
    pub deliveries: u64,
    pub p50_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

/// Samples with `from_ms <= latency < to_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub from_ms: u64,
    pub to_ms: u64,
    pub count: u64,
}

pub use imsim_history::stats::LatencySample;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Held,
    Violated,
    /// A liveness invariant on a history that did not reach its end.
    NotJudged,
}

/// One row of the invariant table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantRow {
    pub code: String,
    pub name: String,
    /// `always` (safety) or `eventually` (liveness).
    pub class: String,
    pub status: Status,
    pub violations: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationReport {
    pub code: String,
    pub name: String,
    pub class: String,
    pub explanation: String,
    pub witness: Vec<WitnessRecord>,
}

/// A record that proves a violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessRecord {
    pub index: usize,
    pub t_ms: u64,
    pub node: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's category (`imsim_history::category`), which colours it.
    pub category: String,
    pub detail: String,
    /// The record as `imsim replay` prints it.
    pub line: String,
}
