//! Scenarios are data: a TOML file holds the topology, the workload, the faults and the protocol
//! settings of a run. Parsing rejects unknown fields; [`Scenario::validate`] rejects values that
//! make no sense or exceed the limits, naming the field. The shipped scenarios are embedded in the
//! binary so `imsim run` works from any directory.

use crate::faults::{FaultClass, FaultProfile};
use crate::fields::check_range;
use imsim_history::excerpt::{fit_lines, EXCERPT_CHARS_MAX};
use imsim_history::CostBudget;
use imsim_model::ProtocolConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// `(name, contents of scenarios/<name>.toml)` for each name.
macro_rules! shipped {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../scenarios/", $name, ".toml")))),*]
    };
}

/// The scenarios shipped in `scenarios/`, embedded: (name, file contents). The first is the
/// default.
pub const SHIPPED: &[(&str, &str)] = shipped![
    "one-to-one",
    "lossy-network",
    "server-crash",
    "offline-resume",
    "sender-retry-order",
    "group-small",
    "group-membership-churn",
    "group-disorder",
    "notify-pull",
    "fanout-write",
    "clock-skew",
    "crash-storm",
    "receipts-1to1",
    "receipts-group",
    "presence-push",
    "presence-pull",
    "presence-flapping",
    "multi-device",
    "roaming",
    "feature-swarm",
    "cluster-failover",
    "sharded-logic",
    "queue-faults",
    "group-500",
    "group-2000",
    "group-2000-cluster",
    "group-10k",
];

/// The scenarios `imsim run` runs when none is named: every shipped one that takes
/// milliseconds per seed. The large groups take seconds per seed and are run by name.
pub fn default_set() -> impl Iterator<Item = &'static str> {
    SHIPPED
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !LARGE.contains(name))
}

const LARGE: [&str; 5] = [
    "group-500",
    "group-2000",
    "group-2000-cluster",
    "group-10k",
    "receipts-group",
];

/// Limits that keep a run within this machine's means; a scenario beyond them is refused.
pub const USERS_MAX: u32 = 100_000;
pub const DEVICES_PER_USER_MAX: u32 = 8;
pub const MESSAGES_MAX: u32 = 1_000_000;
pub const DURATION_MS_MAX: u64 = 24 * 3_600_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub topology: TopologySpec,
    pub workload: WorkloadSpec,
    #[serde(default)]
    pub faults: FaultSpec,
    /// Workload features and protocol modes drawn per seed (the feature swarm).
    #[serde(default, skip_serializing_if = "is_default")]
    pub features: FeatureSpec,
    #[serde(default)]
    pub protocol: ProtocolConfig,
    #[serde(default)]
    pub liveness: LivenessSpec,
    /// The most a run may cost (C1 `within-budget`); absent: loose defaults.
    #[serde(default)]
    pub budget: CostBudget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
}

/// The `[features]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Draw per seed which features are on: reads, membership churn, a second device per user,
    /// roaming devices, pull-mode presence, notify-then-pull for groups, fan-out write, and a
    /// fault storm (several server crashes with duplication on every link).
    #[serde(default)]
    pub swarm: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    pub users: u32,
    #[serde(default = "one")]
    pub devices_per_user: u32,
    /// 1:1 conversations: `"all-pairs"`, a number of distinct random pairs, or an explicit list
    /// of member lists (`[[1, 2], [2, 3]]`, user numbers), numbered c1, c2 … in order.
    #[serde(default)]
    pub conversations: Conversations,
    /// Groups, numbered after the 1:1 conversations; members drawn at random from the users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupSpec>,
    /// The cluster topology: this many gateways in front of the logic server (0, the default:
    /// devices talk to a single server directly). Each device connects to one gateway and fails
    /// over to the next when it loses it (`imsim_model::cluster`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gateways: u32,
    /// The most connections one gateway holds; a login beyond them is refused (`ServerFull`)
    /// and the device backs off and tries the next gateway. Needs gateways. Unset, the default:
    /// the protocol's `sessions_max`, which also caps the logic's sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_connections_max: Option<u32>,
    /// Sharded logic: this many logic nodes behind the gateways, conversations sharded over
    /// them by id (1, the default: one logic server). Needs gateways
    /// (`imsim_model::cluster::shard`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub logic: u32,
    /// The queue topology: the logic's commits reach storage through an at-least-once queue
    /// and its consumer, each a node of its own (`imsim_model::cluster::queue`). One logic node
    /// only; gateways are allowed. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queue: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Founding members of each group.
    pub size: u32,
    /// How many groups of this size.
    #[serde(default = "one")]
    pub count: u32,
    /// Explicit founding members (user numbers) of one group, instead of a random draw: then
    /// `count` is 1 and `size` is their number. The explicit form of a run uses it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Conversations {
    #[default]
    #[serde(with = "all_pairs")]
    AllPairs,
    Pairs(u32),
    List(Vec<Vec<u32>>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Length of the safety phase: workload and faults run together this long.
    pub duration_ms: u64,
    /// Messages sent during the safety phase, at uniformly random times.
    pub messages: u32,
    /// A send is a burst of 1..=`burst_max` messages from one device in one conversation, a
    /// millisecond apart (the pattern that exposes sender-order bugs).
    #[serde(default = "one")]
    pub burst_max: u32,
    /// Times each device goes offline (the user logs out) during the safety phase.
    #[serde(default)]
    pub offline_periods_per_device: u32,
    /// Longest offline period.
    #[serde(default = "default_offline_ms_max")]
    pub offline_ms_max: u64,
    /// Share of devices online at any moment of the safety phase: each device is online for one
    /// window of this share of the phase, at a random place (1 = online from the start).
    #[serde(default = "default_online_fraction")]
    pub online_fraction: f64,
    /// Group membership changes (add, remove, leave) at random times, by random members.
    #[serde(default)]
    pub membership_changes: u32,
    /// Reads at random times: a random device of a random member opens a conversation and reads
    /// what it displayed (in pull-mode presence, opening also asks who of its members is online).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reads: u32,
    /// Devices installed mid-run (roaming): each is a user's second or later device that first
    /// goes online at a random time in the middle third of the safety phase, with no local state,
    /// and pulls the history in pages. Needs `topology.devices_per_user` of 2 or more.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub roaming_devices: u32,
    /// Requests at the protocol's limits, from random members at random times: a body of exactly
    /// `protocol.body_bytes_max` bytes (the server must take it), one byte over (it must refuse
    /// it), an add of a user nobody knows (refused), a send to a conversation its user is not in
    /// (refused). What a careless or hostile client sends; V1 and G2 judge the answers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub edge_requests: u32,
    /// An explicit schedule. When given it is the whole workload (the random one above must be
    /// switched off: `messages = 0`, `offline_periods_per_device = 0`), so a shrunk or
    /// hand-written failure replays the same user actions whatever the seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<ScriptedAction>,
}

/// One user action at a fixed time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedAction {
    pub at_ms: u64,
    pub device: u32,
    pub action: Action,
    /// The conversation of a `send` or a membership change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<u32>,
    /// The user an `add` or `remove` is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// The body of a `send`; defaults to a unique text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Send,
    GoOnline,
    GoOffline,
    /// Group membership changes, sent by the acting device's user.
    Add,
    Remove,
    Leave,
    /// Open the conversation and read what the device displayed of it.
    Read,
}

/// A scenario saved for one seed: `imsim run FILE` without `--seed` runs this seed, and the
/// regression tests check that exactly the `expect`ed invariants fail (none: all hold).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pinned {
    pub seed: u64,
    /// Invariant codes (`O3`, `D1` …) that this run is expected to violate.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Why this case is kept: a one-line postmortem.
    #[serde(default)]
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Draw a fault profile per seed: each class in `swarm_classes` on or off, parameters drawn.
    #[serde(default = "yes")]
    pub swarm: bool,
    #[serde(default = "FaultClass::all")]
    pub swarm_classes: Vec<FaultClass>,
    /// Faults applied in every seed (in swarm mode, in addition to the drawn ones): the same
    /// format a run prints in its header, so a drawn profile can be pasted here and replayed.
    #[serde(default)]
    pub profile: FaultProfile,
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            swarm: true,
            swarm_classes: FaultClass::all(),
            profile: FaultProfile::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivenessSpec {
    /// How long the liveness phase waits, healed and quiet, before convergence must hold.
    /// Defaults to the protocol's own bound (`ProtocolConfig::convergence_bound_ms`).
    pub quiet_period_ms: Option<u64>,
}

/// A scenario that could not be loaded: which file, which field, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub source: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// A path to a TOML file, or the name of a shipped scenario (`one-to-one`, …).
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        let path = Path::new(name_or_path);
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|error| ScenarioError {
                source: name_or_path.to_string(),
                message: format!("cannot read: {error}"),
            })?;
            return Scenario::parse(name_or_path, &text);
        }
        // A shipped scenario by its name, or by its path in this repository (`scenarios/x.toml`),
        // so the README's commands work from any directory. Any other missing path is an error:
        // running an embedded scenario in place of a mistyped file would hide the mistake.
        let name = name_or_path
            .strip_prefix("scenarios/")
            .and_then(|rest| rest.strip_suffix(".toml"))
            .unwrap_or(name_or_path);
        match SHIPPED.iter().find(|(shipped, _)| *shipped == name) {
            Some((name, text)) => Scenario::parse(&format!("scenarios/{name}.toml"), text),
            None => Err(ScenarioError {
                source: name_or_path.to_string(),
                message: format!(
                    "no such file, and not a shipped scenario (shipped: {})",
                    SHIPPED
                        .iter()
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// The default scenario (the first shipped one).
    pub fn default_scenario() -> Scenario {
        let (name, _) = SHIPPED[0];
        // The shipped scenarios are parsed and validated by a test, so this cannot fail.
        Scenario::load(name).expect("the default scenario is valid")
    }

    /// Parses and validates `text`; `source` names the file in errors.
    pub fn parse(source: &str, text: &str) -> Result<Scenario, ScenarioError> {
        // Quotes of the file are cut: a TOML error on a 2 MB line would print the whole line.
        let error = |message: String| ScenarioError {
            source: source.to_string(),
            message: fit_lines(&message, EXCERPT_CHARS_MAX),
        };
        let scenario: Scenario =
            toml::from_str(text).map_err(|e| error(e.to_string().trim_end().to_string()))?;
        scenario.validate().map_err(error)?;
        Ok(scenario)
    }

    /// The scenario as a TOML file that `Scenario::parse` reads back unchanged.
    pub fn to_toml(&self) -> String {
        // Every field is a plain value, a table or an array of tables: serialising cannot fail.
        toml::to_string(self).expect("a scenario serialises to TOML")
    }

    /// The number of devices in the run.
    pub fn device_count(&self) -> u32 {
        self.topology.users * self.topology.devices_per_user
    }

    /// How long the liveness phase waits.
    pub fn quiet_period_ms(&self) -> u64 {
        self.liveness
            .quiet_period_ms
            .unwrap_or_else(|| self.protocol.convergence_bound_ms())
    }

    /// Checks every value, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.topology;
        let w = &self.workload;
        check_range("topology.users", t.users.into(), 2, USERS_MAX.into())?;
        check_range(
            "topology.devices_per_user",
            t.devices_per_user.into(),
            1,
            DEVICES_PER_USER_MAX.into(),
        )?;
        match &t.conversations {
            Conversations::AllPairs => {}
            Conversations::Pairs(pairs) => {
                let possible = u64::from(t.users) * u64::from(t.users - 1) / 2;
                let min = if t.groups.is_empty() { 1 } else { 0 };
                check_range("topology.conversations", (*pairs).into(), min, possible)?;
            }
            Conversations::List(lists) => {
                let min = if t.groups.is_empty() { 1 } else { 0 };
                check_range(
                    "topology.conversations (count)",
                    lists.len() as u64,
                    min,
                    USERS_MAX.into(),
                )?;
                for (i, members) in lists.iter().enumerate() {
                    check_range(
                        &format!("topology.conversations[{i}] (members)"),
                        members.len() as u64,
                        2,
                        2,
                    )?;
                    for user in members {
                        check_range(
                            &format!("topology.conversations[{i}][]"),
                            (*user).into(),
                            1,
                            t.users.into(),
                        )?;
                    }
                    if members[0] == members[1] {
                        return Err(format!(
                            "topology.conversations[{i}] names user {} twice",
                            members[0]
                        ));
                    }
                }
            }
        }
        for (i, group) in t.groups.iter().enumerate() {
            if !group.members.is_empty() {
                let field = format!("topology.groups[{i}]");
                if group.count != 1 || group.size as usize != group.members.len() {
                    return Err(format!(
                        "{field}: with explicit members, count must be 1 and size their number"
                    ));
                }
                let distinct: std::collections::BTreeSet<_> = group.members.iter().collect();
                if distinct.len() != group.members.len() {
                    return Err(format!("{field}.members names a user twice"));
                }
                for user in &group.members {
                    check_range(
                        &format!("{field}.members[]"),
                        (*user).into(),
                        1,
                        t.users.into(),
                    )?;
                }
            }
            check_range(
                &format!("topology.groups[{i}].size"),
                group.size.into(),
                2,
                t.users.into(),
            )?;
            check_range(
                &format!("topology.groups[{i}].count"),
                group.count.into(),
                1,
                10_000,
            )?;
        }
        check_range("workload.duration_ms", w.duration_ms, 1, DURATION_MS_MAX)?;
        if !(w.online_fraction > 0.0 && w.online_fraction <= 1.0) {
            return Err(format!(
                "workload.online_fraction = {} is out of range: it must be above 0 and at most 1",
                w.online_fraction
            ));
        }
        check_range(
            "workload.membership_changes",
            w.membership_changes.into(),
            0,
            MESSAGES_MAX.into(),
        )?;
        if w.membership_changes > 0 && t.groups.is_empty() {
            return Err("workload.membership_changes needs topology.groups".to_string());
        }
        check_range("workload.reads", w.reads.into(), 0, MESSAGES_MAX.into())?;
        check_range(
            "workload.edge_requests",
            w.edge_requests.into(),
            0,
            MESSAGES_MAX.into(),
        )?;
        if w.roaming_devices > 0 {
            let spare = u64::from(t.users) * u64::from(t.devices_per_user - 1);
            if spare == 0 {
                return Err(
                    "workload.roaming_devices needs topology.devices_per_user of 2 or more \
                     (a roaming device is a user's additional device)"
                        .to_string(),
                );
            }
            check_range(
                "workload.roaming_devices",
                w.roaming_devices.into(),
                0,
                spare,
            )?;
        }
        check_range(
            "workload.messages",
            w.messages.into(),
            0,
            MESSAGES_MAX.into(),
        )?;
        check_range("workload.burst_max", w.burst_max.into(), 1, 1_000)?;
        check_range(
            "workload.offline_periods_per_device",
            w.offline_periods_per_device.into(),
            0,
            100,
        )?;
        check_range(
            "workload.offline_ms_max",
            w.offline_ms_max,
            1,
            DURATION_MS_MAX,
        )?;
        self.validate_script()?;
        self.protocol.validate()?;
        self.budget.validate()?;
        if let Some(quiet_ms) = self.liveness.quiet_period_ms {
            check_range("liveness.quiet_period_ms", quiet_ms, 1, DURATION_MS_MAX)?;
        }
        check_range(
            "topology.gateways",
            t.gateways.into(),
            0,
            imsim_model::cluster::GATEWAYS_MAX.into(),
        )?;
        if let Some(max) = t.gateway_connections_max {
            if t.gateways == 0 {
                return Err("topology.gateway_connections_max needs topology.gateways".into());
            }
            check_range(
                "topology.gateway_connections_max",
                max.into(),
                1,
                u32::MAX.into(),
            )?;
        }
        self.validate_logic()?;
        self.validate_queue()?;
        if t.gateways == 0 {
            let cluster = FaultClass::cluster();
            let swarm = &self.faults.swarm_classes;
            if let Some(class) = swarm.iter().find(|class| cluster.contains(class)) {
                return Err(format!(
                    "faults.swarm_classes has {class:?}, a fault of the cluster topology: set \
                     topology.gateways"
                ));
            }
        }
        crate::faults::validate(
            &self.faults.profile,
            "faults.profile",
            self.device_count(),
            t.gateways,
            w.duration_ms,
        )
    }
}

impl Scenario {
    /// Sharded logic: shards live behind gateways; the single server's own faults and the
    /// presence mode that reads group membership at the session shard are refused.
    fn validate_logic(&self) -> Result<(), String> {
        let (t, faults) = (&self.topology, &self.faults);
        let shards_max = imsim_model::cluster::LOGIC_SHARDS_MAX;
        check_range("topology.logic", t.logic.into(), 1, shards_max.into())?;
        let drawn = |class| faults.swarm && faults.swarm_classes.contains(&class);
        if t.logic == 1 {
            if drawn(FaultClass::LogicCrash) || !faults.profile.logic_crashes.is_empty() {
                return Err(
                    "a logic-crash needs topology.logic > 1 (a node to hand over to)".into(),
                );
            }
            return Ok(());
        }
        if t.gateways == 0 {
            return Err(
                "topology.logic > 1 needs topology.gateways (they route to the shards)".into(),
            );
        }
        if drawn(FaultClass::ServerCrash) || !faults.profile.server_crashes.is_empty() {
            return Err("topology.logic > 1 has no single server to crash: use logic-crash".into());
        }
        if drawn(FaultClass::Placement) || !faults.profile.placements.is_empty() {
            return Err(
                "topology.logic > 1 has no single server driver to place faults in: leave \
                 placement out of faults.swarm_classes"
                    .into(),
            );
        }
        if self.protocol.presence == imsim_model::PresenceMode::Pull {
            return Err(
                "topology.logic > 1 supports presence = \"push\" only (pull reads group \
                 membership at the session shard, which owns only its own groups)"
                    .into(),
            );
        }
        for (i, crash) in faults.profile.logic_crashes.iter().enumerate() {
            if crash.logic >= t.logic {
                return Err(format!(
                    "faults.profile.logic_crashes[{i}].logic = {} names no logic node \
                     (topology.logic = {}; numbered from 0)",
                    crash.logic, t.logic
                ));
            }
            let end_ms = crash.at_ms.saturating_add(crash.downtime_ms);
            if end_ms > self.workload.duration_ms {
                return Err(format!(
                    "faults.profile.logic_crashes[{i}] ends at {end_ms} ms, after the safety \
                     phase (workload.duration_ms = {})",
                    self.workload.duration_ms
                ));
            }
        }
        Ok(())
    }

    /// The queue topology: one logic node (the queue carries one storage log), and its fault
    /// classes only with it.
    fn validate_queue(&self) -> Result<(), String> {
        let (t, faults) = (&self.topology, &self.faults);
        if t.queue && t.logic > 1 {
            return Err(format!(
                "topology.queue = true needs a single logic node, but topology.logic = {} (the \
                 queue carries one storage log; sharded logic with a queue is not supported)",
                t.logic
            ));
        }
        if t.queue {
            return Ok(());
        }
        let queue_classes = FaultClass::queue();
        if faults.swarm {
            let swarm = &faults.swarm_classes;
            if let Some(class) = swarm.iter().find(|class| queue_classes.contains(class)) {
                return Err(format!(
                    "faults.swarm_classes has {class:?}, a fault of the queue topology: set \
                     topology.queue = true"
                ));
            }
        }
        let fixed = faults.profile.classes();
        if let Some(class) = fixed.iter().find(|class| queue_classes.contains(class)) {
            return Err(format!(
                "faults.profile has {class:?}, a fault of the queue topology: set topology.queue \
                 = true"
            ));
        }
        Ok(())
    }

    fn validate_script(&self) -> Result<(), String> {
        let w = &self.workload;
        if w.script.is_empty() {
            return Ok(());
        }
        if w.messages > 0
            || w.offline_periods_per_device > 0
            || w.reads > 0
            || w.roaming_devices > 0
            || w.edge_requests > 0
        {
            return Err(
                "workload.script replaces the random workload: set workload.messages = 0 and \
                        workload.offline_periods_per_device = 0 (and no reads, roaming_devices \
                        or edge_requests)"
                    .to_string(),
            );
        }
        let groups: u64 = self
            .topology
            .groups
            .iter()
            .map(|g| u64::from(g.count))
            .sum();
        let conversations = groups
            + match &self.topology.conversations {
                Conversations::List(lists) => lists.len() as u64,
                _ => {
                    return Err(
                        "workload.script needs an explicit topology.conversations list".to_string(),
                    )
                }
            };
        for (i, action) in w.script.iter().enumerate() {
            let field = format!("workload.script[{i}]");
            check_range(
                &format!("{field}.at_ms"),
                action.at_ms,
                0,
                w.duration_ms - 1,
            )?;
            check_range(
                &format!("{field}.device"),
                action.device.into(),
                1,
                self.device_count().into(),
            )?;
            let needs_conv = !matches!(action.action, Action::GoOnline | Action::GoOffline);
            match (needs_conv, action.conv) {
                (true, Some(conv)) => {
                    check_range(&format!("{field}.conv"), conv.into(), 1, conversations)?
                }
                (true, None) => return Err(format!("{field}: a {:?} needs a conv", action.action)),
                (false, Some(_)) => {
                    return Err(format!(
                        "{field}: only a send, a read or a membership change has a conv"
                    ))
                }
                (false, None) => {}
            }
            match (
                matches!(action.action, Action::Add | Action::Remove),
                action.user,
            ) {
                // An add may also name one of the few ids after the last user, whom nobody owns:
                // an edge request the server must refuse (`workload.edge_requests`).
                (true, Some(user)) => {
                    let unknown = match action.action {
                        Action::Add => UNKNOWN_USERS,
                        _ => 0,
                    };
                    check_range(
                        &format!("{field}.user"),
                        user.into(),
                        1,
                        u64::from(self.topology.users + unknown),
                    )?
                }
                (true, None) => return Err(format!("{field}: an add or remove needs a user")),
                (false, Some(_)) => {
                    return Err(format!("{field}: only an add or remove has a user"))
                }
                (false, None) => {}
            }
        }
        Ok(())
    }
}

/// How many user ids after the last user an `add` may name (a script's, or an edge request's):
/// ids nobody owns, which the server must refuse.
pub const UNKNOWN_USERS: u32 = 3;

fn one() -> u32 {
    1
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn is_one(value: &u32) -> bool {
    *value == 1
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn yes() -> bool {
    true
}

fn default_offline_ms_max() -> u64 {
    10_000
}

fn default_online_fraction() -> f64 {
    1.0
}

/// `conversations = "all-pairs"` in TOML.
mod all_pairs {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("all-pairs")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "all-pairs" {
            Ok(())
        } else {
            Err(serde::de::Error::custom(format!(
                "expected \"all-pairs\" or a number, found \"{text}\""
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SHIPPED;
    use std::collections::BTreeSet;

    /// The shipped list follows the folder: a TOML file added to `scenarios/` and not shipped
    /// would never run, and a shipped name without its file would not build.
    #[test]
    fn every_scenario_file_is_shipped_and_every_shipped_name_has_a_file() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios");
        let files: BTreeSet<String> = std::fs::read_dir(folder)
            .expect("the scenarios folder")
            .map(|entry| entry.expect("a folder entry").file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .filter_map(|name| name.strip_suffix(".toml").map(str::to_string))
            .collect();
        let shipped: BTreeSet<String> = SHIPPED.iter().map(|(name, _)| name.to_string()).collect();
        let not_shipped: Vec<&String> = files.difference(&shipped).collect();
        let no_file: Vec<&String> = shipped.difference(&files).collect();
        assert!(
            not_shipped.is_empty(),
            "scenarios/ holds files the binary does not ship (add them to SHIPPED in \
             sim/src/scenario.rs): {not_shipped:?}"
        );
        assert!(no_file.is_empty(), "shipped without a file: {no_file:?}");
    }
}
