//! From a scenario and the seed's generator: who is in the run (the topology) and what each user
//! does when (the plan). The plan is fixed before the simulation starts, so the workload never
//! depends on how the run unfolds, only on the seed.

use crate::scenario::{Action, Conversations, Scenario, ScriptedAction};
use imsim_history::{ConversationSpec, Topology, UserSpec};
use imsim_model::{Command, ConvId, DeviceId, MembershipChange, UserId};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;

/// Each device's commands, in time order (ms since the start of the run).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub commands: BTreeMap<DeviceId, Vec<(u64, Command)>>,
}

impl Plan {
    pub fn sends(&self) -> usize {
        let is_send = |(_, command): &&(u64, Command)| matches!(command, Command::Send { .. });
        self.commands
            .values()
            .map(|commands| commands.iter().filter(is_send).count())
            .sum()
    }
}

/// Users `u1..=uN`, each with devices numbered consecutively from `d1`, and the conversations.
pub fn topology(scenario: &Scenario, rng: &mut impl Rng) -> Topology {
    let spec = &scenario.topology;
    let users: Vec<UserSpec> = (1..=spec.users)
        .map(|user| UserSpec {
            user: UserId(user),
            devices: (1..=spec.devices_per_user)
                .map(|i| DeviceId((user - 1) * spec.devices_per_user + i))
                .collect(),
        })
        .collect();
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    match &spec.conversations {
        Conversations::AllPairs => {
            for a in 1..=spec.users {
                pairs.extend((a + 1..=spec.users).map(|b| (a, b)));
            }
        }
        Conversations::List(lists) => {
            pairs = lists
                .iter()
                .map(|members| (members[0], members[1]))
                .collect();
        }
        Conversations::Pairs(count) => {
            // Rejection sampling is fine: validation caps `count` at the number of pairs, and
            // dense requests fall back to a shuffle of all pairs.
            let possible = u64::from(spec.users) * u64::from(spec.users - 1) / 2;
            if u64::from(*count) * 2 > possible {
                for a in 1..=spec.users {
                    pairs.extend((a + 1..=spec.users).map(|b| (a, b)));
                }
                pairs.shuffle(rng);
                pairs.truncate(*count as usize);
                pairs.sort();
            } else {
                let mut chosen = std::collections::BTreeSet::new();
                while chosen.len() < *count as usize {
                    let a = rng.gen_range(1..=spec.users);
                    let b = rng.gen_range(1..=spec.users);
                    if a != b {
                        chosen.insert((a.min(b), a.max(b)));
                    }
                }
                pairs = chosen.into_iter().collect();
            }
        }
    }
    // Pairs keep their listed order (a scripted scenario names conversations by position).
    let mut conversations: Vec<ConversationSpec> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, (a, b))| ConversationSpec {
            conv: ConvId(i as u32 + 1),
            members: vec![UserId(a), UserId(b)],
            group: false,
        })
        .collect();
    for group in &spec.groups {
        for _ in 0..group.count {
            let mut members: Vec<UserId> = if group.members.is_empty() {
                let chosen =
                    rand::seq::index::sample(rng, spec.users as usize, group.size as usize);
                chosen.into_iter().map(|i| UserId(i as u32 + 1)).collect()
            } else {
                group.members.iter().map(|user| UserId(*user)).collect()
            };
            members.sort();
            let conv = ConvId(conversations.len() as u32 + 1);
            conversations.push(ConversationSpec {
                conv,
                members,
                group: true,
            });
        }
    }
    Topology {
        users,
        conversations,
    }
}

/// The plan: every device goes online near the start; sends in bursts at random times, each
/// from a random device of a random member of a random conversation; offline periods.
pub fn plan(scenario: &Scenario, topology: &Topology, rng: &mut impl Rng) -> Plan {
    let workload = &scenario.workload;
    if !workload.script.is_empty() {
        return scripted(&workload.script);
    }
    let duration_ms = workload.duration_ms;
    let mut commands: BTreeMap<DeviceId, Vec<(u64, Command)>> = BTreeMap::new();
    let devices_of: BTreeMap<UserId, &[DeviceId]> = topology
        .users
        .iter()
        .map(|u| (u.user, u.devices.as_slice()))
        .collect();
    for device in devices_of.values().flat_map(|devices| devices.iter()) {
        if workload.online_fraction >= 1.0 {
            commands
                .entry(*device)
                .or_default()
                .push((rng.gen_range(0..duration_ms.min(500)), Command::GoOnline));
        } else {
            // One online window of the given share of the phase, placed at random.
            let window_ms = ((duration_ms as f64) * workload.online_fraction) as u64;
            let start_ms = rng.gen_range(0..=duration_ms - window_ms);
            let entry = commands.entry(*device).or_default();
            entry.push((start_ms, Command::GoOnline));
            entry.push((start_ms + window_ms, Command::GoOffline));
        }
        for _ in 0..workload.offline_periods_per_device {
            let start_ms = rng.gen_range(0..duration_ms);
            let end_ms = (start_ms + rng.gen_range(1..=workload.offline_ms_max)).min(duration_ms);
            let entry = commands.entry(*device).or_default();
            entry.push((start_ms, Command::GoOffline));
            entry.push((end_ms, Command::GoOnline));
        }
    }
    let mut sent = 0u32;
    while sent < workload.messages && !topology.conversations.is_empty() {
        let conversation = &topology.conversations[rng.gen_range(0..topology.conversations.len())];
        let user = conversation.members[rng.gen_range(0..conversation.members.len())];
        let devices = devices_of[&user];
        let device = devices[rng.gen_range(0..devices.len())];
        let burst = rng
            .gen_range(1..=workload.burst_max)
            .min(workload.messages - sent);
        let start_ms = rng.gen_range(0..duration_ms);
        for i in 0..burst {
            sent += 1;
            let body = format!("{user}/{device} #{sent}");
            let at_ms = (start_ms + u64::from(i)).min(duration_ms - 1);
            commands.entry(device).or_default().push((
                at_ms,
                Command::Send {
                    conv: conversation.conv,
                    body,
                },
            ));
        }
    }
    membership_changes(
        workload.membership_changes,
        topology,
        &devices_of,
        duration_ms,
        rng,
        &mut commands,
    );
    for _ in 0..workload.reads {
        if topology.conversations.is_empty() {
            break;
        }
        let conversation = &topology.conversations[rng.gen_range(0..topology.conversations.len())];
        let user = conversation.members[rng.gen_range(0..conversation.members.len())];
        let devices = devices_of[&user];
        let device = devices[rng.gen_range(0..devices.len())];
        let at_ms = rng.gen_range(0..duration_ms);
        let read = Command::Read {
            conv: conversation.conv,
        };
        commands.entry(device).or_default().push((at_ms, read));
    }
    roaming(
        workload.roaming_devices,
        topology,
        duration_ms,
        rng,
        &mut commands,
    );
    // Last, so a scenario without edge requests draws exactly what it drew before they existed.
    if workload.edge_requests > 0 && !topology.conversations.is_empty() {
        let body_max = scenario.protocol.body_bytes_max as usize;
        let edge = Edge {
            topology,
            devices_of: &devices_of,
            duration_ms,
            body_max,
        };
        for k in 1..=workload.edge_requests {
            let (device, at_ms, command) = edge.request(k, rng);
            commands.entry(device).or_default().push((at_ms, command));
        }
    }
    // A stable sort keeps same-time commands in the order they were drawn (a burst stays in order).
    for device_commands in commands.values_mut() {
        device_commands.sort_by_key(|(at_ms, _)| *at_ms);
    }
    Plan { commands }
}

/// Membership churn: a random founding member of a random group adds a random user, removes a
/// random founder, or leaves. Changes that no longer make sense when they run (the actor was
/// removed meanwhile, the subject is already a member) are refused by the server, and the user
/// sees the refusal: that is part of what churn tests.
fn membership_changes(
    count: u32,
    topology: &Topology,
    devices_of: &BTreeMap<UserId, &[DeviceId]>,
    duration_ms: u64,
    rng: &mut impl Rng,
    commands: &mut BTreeMap<DeviceId, Vec<(u64, Command)>>,
) {
    let groups: Vec<&ConversationSpec> =
        topology.conversations.iter().filter(|c| c.group).collect();
    let users = topology.users.len() as u32;
    for _ in 0..count {
        let group = groups[rng.gen_range(0..groups.len())];
        let actor = group.members[rng.gen_range(0..group.members.len())];
        let change = match rng.gen_range(0..5) {
            0 | 1 => MembershipChange::Add(UserId(rng.gen_range(1..=users))),
            2 | 3 => MembershipChange::Remove(group.members[rng.gen_range(0..group.members.len())]),
            _ => MembershipChange::Leave,
        };
        let devices = devices_of[&actor];
        let device = devices[rng.gen_range(0..devices.len())];
        let at_ms = rng.gen_range(0..duration_ms);
        commands.entry(device).or_default().push((
            at_ms,
            Command::ChangeMembership {
                conv: group.conv,
                change,
            },
        ));
    }
}

/// Roaming: devices installed mid-run. Each chosen device (never a user's first) does nothing
/// before its install time, then goes online with no local state.
fn roaming(
    count: u32,
    topology: &Topology,
    duration_ms: u64,
    rng: &mut impl Rng,
    commands: &mut BTreeMap<DeviceId, Vec<(u64, Command)>>,
) {
    let spare: Vec<DeviceId> = topology
        .users
        .iter()
        .flat_map(|user| user.devices.iter().skip(1).copied())
        .collect();
    let chosen = rand::seq::index::sample(rng, spare.len(), count as usize);
    for index in chosen {
        let device = spare[index];
        let install_ms = rng.gen_range(duration_ms / 3..=duration_ms * 2 / 3);
        let device_commands = commands.entry(device).or_default();
        device_commands.retain(|(at_ms, _)| *at_ms > install_ms);
        device_commands.insert(0, (install_ms, Command::GoOnline));
    }
}

/// Requests at the protocol's limits (`workload.edge_requests`).
struct Edge<'a> {
    topology: &'a Topology,
    devices_of: &'a BTreeMap<UserId, &'a [DeviceId]>,
    duration_ms: u64,
    body_max: usize,
}

impl Edge<'_> {
    /// The `k`th edge request: a body at the limit, a body one byte over it, an add of a user
    /// nobody knows, or a send to a conversation its user is not in. Where the topology has no
    /// group (for the add) or no user outside some conversation, the body at the limit instead.
    fn request(&self, k: u32, rng: &mut impl Rng) -> (DeviceId, u64, Command) {
        let conversations = &self.topology.conversations;
        let at_ms = rng.gen_range(0..self.duration_ms);
        let kind = rng.gen_range(0..4);
        let groups: Vec<&ConversationSpec> = conversations.iter().filter(|c| c.group).collect();
        if kind == 2 && !groups.is_empty() {
            let group = groups[rng.gen_range(0..groups.len())];
            let user = group.members[rng.gen_range(0..group.members.len())];
            let nobody = self.topology.users.len() as u32
                + rng.gen_range(1..=crate::scenario::UNKNOWN_USERS);
            let change = MembershipChange::Add(UserId(nobody));
            let command = Command::ChangeMembership {
                conv: group.conv,
                change,
            };
            return (self.device_of(user, rng), at_ms, command);
        }
        if kind == 3 {
            let user = self.topology.users[rng.gen_range(0..self.topology.users.len())].user;
            let outside: Vec<&ConversationSpec> = conversations
                .iter()
                .filter(|c| !c.members.contains(&user))
                .collect();
            if !outside.is_empty() {
                let conv = outside[rng.gen_range(0..outside.len())].conv;
                let device = self.device_of(user, rng);
                let body = format!("{user}/{device} edge #{k} (not a member)");
                return (device, at_ms, Command::Send { conv, body });
            }
        }
        let conversation = &conversations[rng.gen_range(0..conversations.len())];
        let user = conversation.members[rng.gen_range(0..conversation.members.len())];
        let device = self.device_of(user, rng);
        let len = if kind == 1 {
            self.body_max + 1
        } else {
            self.body_max
        };
        let mut body = format!("{user}/{device} edge #{k} ");
        body.truncate(len);
        body.extend(std::iter::repeat_n('.', len - body.len()));
        let command = Command::Send {
            conv: conversation.conv,
            body,
        };
        (device, at_ms, command)
    }

    fn device_of(&self, user: UserId, rng: &mut impl Rng) -> DeviceId {
        let devices = self.devices_of[&user];
        devices[rng.gen_range(0..devices.len())]
    }
}

/// The plan of a scripted workload: exactly its actions, in time order.
fn scripted(script: &[ScriptedAction]) -> Plan {
    let mut commands: BTreeMap<DeviceId, Vec<(u64, Command)>> = BTreeMap::new();
    for (i, action) in script.iter().enumerate() {
        // Validation guarantees a conv on sends and changes, and a user on adds and removes.
        let conv = ConvId(action.conv.unwrap_or_default());
        let user = UserId(action.user.unwrap_or_default());
        let change = |change| Command::ChangeMembership { conv, change };
        let command = match action.action {
            Action::GoOnline => Command::GoOnline,
            Action::GoOffline => Command::GoOffline,
            Action::Add => change(MembershipChange::Add(user)),
            Action::Remove => change(MembershipChange::Remove(user)),
            Action::Leave => change(MembershipChange::Leave),
            Action::Read => Command::Read { conv },
            Action::Send => Command::Send {
                // Validation guarantees a send has a conv.
                conv: ConvId(action.conv.expect("a validated send has a conv")),
                body: action
                    .body
                    .clone()
                    .unwrap_or_else(|| format!("d{} #{}", action.device, i + 1)),
            },
        };
        commands
            .entry(DeviceId(action.device))
            .or_default()
            .push((action.at_ms, command));
    }
    for device_commands in commands.values_mut() {
        device_commands.sort_by_key(|(at_ms, _)| *at_ms);
    }
    Plan { commands }
}
