//! The history of a run: every observable event, stamped with simulated time and the node that
//! saw it. It is the only input of the checkers, it serialises as JSON lines (one [`Record`] per
//! line), and its hash is the run's trace hash: the same scenario, seed and variant give the same
//! bytes in any process on any machine.

pub use crate::faults::Direction;
use crate::faults::{FaultProfile, PlacementKind};
pub use crate::traffic::{CostBudget, PacketStats, Traffic};
use imsim_model::{ClientMsgId, ConvId, DeviceId, Event, Message, ProtocolConfig, Seq, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Who observed an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    Server,
    Device(DeviceId),
    /// The simulator itself: faults, phases, the final state of storage.
    Harness,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Server => write!(f, "server"),
            Node::Device(device) => write!(f, "device-{}", device.0),
            Node::Harness => write!(f, "harness"),
        }
    }
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Simulated time since the start of the run, in milliseconds (true time, not a skewed
    /// device clock).
    pub t_ms: u64,
    pub node: Node,
    #[serde(flatten)]
    pub entry: Entry,
}

impl fmt::Display for Record {
    /// One line: time, node, event type, then the event's fields as compact JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = match &self.entry {
            Entry::Protocol(event) => serde_json::to_value(event),
            Entry::Harness(event) => serde_json::to_value(event),
        }
        .map_err(|_| fmt::Error)?;
        let kind = fields.as_object_mut().and_then(|o| o.remove("type"));
        let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("?");
        let seconds = self.t_ms as f64 / 1000.0;
        write!(
            f,
            "{seconds:>9.3}s {:<10} {kind:<24} {fields}",
            self.node.to_string()
        )
    }
}

/// A protocol event (from the model) or a harness event (from the simulator).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entry {
    Protocol(Event),
    Harness(HarnessEvent),
}

/// Who is in the run: users, their devices and the conversations with their members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub users: Vec<UserSpec>,
    pub conversations: Vec<ConversationSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub user: UserId,
    pub devices: Vec<DeviceId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSpec {
    pub conv: ConvId,
    /// The founding members; a group's later changes are `committed` entries with a `change`.
    pub members: Vec<UserId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group: bool,
}

/// One message of a conversation's durable timeline at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub seq: Seq,
    pub sender_device: DeviceId,
    pub client_msg_id: ClientMsgId,
}

impl From<&Message> for TimelineEntry {
    fn from(message: &Message) -> TimelineEntry {
        TimelineEntry {
            seq: message.seq,
            sender_device: message.sender_device,
            client_msg_id: message.client_msg_id,
        }
    }
}

/// The first record of every run: what was run, who is in it and which faults it has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    pub scenario: String,
    pub seed: u64,
    pub variant: String,
    pub topology: Topology,
    pub faults: FaultProfile,
    /// The protocol settings: checkers derive time bounds from them (presence detection).
    #[serde(default)]
    pub protocol: ProtocolConfig,
    /// The cost budget the scenario declares (C1 judges the run's `traffic` against it).
    #[serde(default)]
    pub budget: CostBudget,
}

/// What the simulator records: the run's setup, faults as they start and end, the phase change
/// and the final durable state that liveness invariants compare against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HarnessEvent {
    /// Boxed: it is the largest event by far and occurs once, while every record of a history
    /// is as large as the largest variant.
    RunStarted(Box<RunStart>),
    PartitionStarted {
        device: DeviceId,
        direction: Direction,
    },
    PartitionHealed {
        device: DeviceId,
    },
    NodeCrashed {
        crashed: Node,
    },
    NodeRestarted {
        restarted: Node,
    },
    /// Faults are healed, crashed nodes restarted, every device told to go online, the workload
    /// stopped. Liveness invariants judge the state at `RunEnded`.
    LivenessPhaseStarted {
        quiet_period_ms: u64,
    },
    /// The server's durable timeline of one conversation, read from storage after the quiet
    /// period.
    FinalTimeline {
        conv: ConvId,
        entries: Vec<TimelineEntry>,
    },
    /// What the run cost, as the driver counted it: packets and storage writes.
    Traffic(Box<Traffic>),
    RunEnded,
    /// Cluster topology: a gateway crashed, losing every connection it held.
    GatewayCrashed {
        gateway: u32,
    },
    GatewayRestarted {
        gateway: u32,
    },
    /// Cluster topology: the link between a gateway and the logic is cut, both ways.
    GatewayPartitionStarted {
        gateway: u32,
    },
    GatewayPartitionHealed {
        gateway: u32,
    },
    /// A placement of the fault profile found its moment and fired (a crash it causes follows as
    /// `node_crashed`). `conv`: the conversation whose write or sync it met.
    PlacementFired {
        kind: PlacementKind,
        conv: ConvId,
    },
    /// Sharded logic: a logic node crashed; the shards it ran are handed over
    /// (`shard_handed_over`). When it ran the session shard, `node_crashed` with node `server`
    /// follows, since that shard's sessions and presence were the server's as the history
    /// shows them.
    LogicCrashed {
        logic: u32,
    },
    LogicRestarted {
        logic: u32,
    },
    /// Sharded logic: logic node `to` took shard `shard` over from `from` (which crashed) and
    /// recovered its server from the shard's durable storage.
    ShardHandedOver {
        shard: u32,
        from: u32,
        to: u32,
    },
    /// Queue topology: the queue consumer (the storage writer) crashed, losing its unsynced
    /// writes.
    ConsumerCrashed,
    /// The consumer restarted from its durable store; `lost_unsynced_writes` were lost.
    ConsumerRestarted {
        lost_unsynced_writes: u64,
    },
    /// No ack came in time: the queue delivers again from its ack point `from`; `through`
    /// (exclusive) was the furthest it had delivered.
    QueueRedelivered {
        from: u64,
        through: u64,
    },
    /// The consumer got an offset it had already stored, skipped it and acked again.
    QueueDuplicateSkipped {
        offset: u64,
    },
    /// The queue was full and refused `offset` (the logic enqueues it again later).
    QueueOverflowed {
        offset: u64,
    },
}

/// A whole run's history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub records: Vec<Record>,
}

impl History {
    pub fn push(&mut self, t_ms: u64, node: Node, entry: Entry) {
        self.records.push(Record { t_ms, node, entry });
    }

    /// The history as JSON lines, one record per line.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for record in &self.records {
            // Serialising a `Record` cannot fail: every field is a plain value or a string.
            out.push_str(&serde_json::to_string(record).expect("record serialises"));
            out.push('\n');
        }
        out
    }

    /// Parses JSON lines; the error names the 1-based line number and what is wrong
    /// (see [`crate::reader`]).
    pub fn from_jsonl(text: &str) -> Result<History, (usize, String)> {
        crate::reader::parse_jsonl(text)
    }

    /// FNV-1a over the JSON lines: stable across processes, machines and Rust versions (unlike
    /// `std::hash`, whose output may change between releases).
    pub fn trace_hash(&self) -> u64 {
        let mut hash = Fnv1a::new();
        for record in &self.records {
            hash.write(
                serde_json::to_string(record)
                    .expect("record serialises")
                    .as_bytes(),
            );
            hash.write(b"\n");
        }
        hash.finish()
    }

    /// The run's topology, from its `RunStarted` record.
    pub fn topology(&self) -> Option<&Topology> {
        self.run_start().map(|start| &start.topology)
    }

    pub fn run_start(&self) -> Option<&RunStart> {
        self.records.iter().find_map(|record| match &record.entry {
            Entry::Harness(HarnessEvent::RunStarted(start)) => Some(start.as_ref()),
            _ => None,
        })
    }

    /// Protocol events with their index and record, in history order.
    pub fn protocol_events(&self) -> impl Iterator<Item = (usize, &Record, &Event)> {
        self.records
            .iter()
            .enumerate()
            .filter_map(|(index, record)| match &record.entry {
                Entry::Protocol(event) => Some((index, record, event)),
                Entry::Harness(_) => None,
            })
    }

    /// The driver's `traffic` record, if it wrote one.
    pub fn traffic(&self) -> Option<&Traffic> {
        self.records
            .iter()
            .rev()
            .find_map(|record| match &record.entry {
                Entry::Harness(HarnessEvent::Traffic(traffic)) => Some(traffic.as_ref()),
                _ => None,
            })
    }

    /// Whether the run reached its end (a truncated or safety-only history has no liveness
    /// verdict).
    pub fn is_complete(&self) -> bool {
        self.records
            .iter()
            .any(|record| matches!(record.entry, Entry::Harness(HarnessEvent::RunEnded)))
    }
}

/// The 64-bit FNV-1a hash (public domain algorithm, a few lines, no dependency needed).
pub struct Fnv1a(u64);

impl Fnv1a {
    pub fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a::new()
    }
}
