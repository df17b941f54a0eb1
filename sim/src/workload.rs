//! From a scenario and the seed's generator: who is in the run (the topology) and what each user
//! does when (the plan). The plan is fixed before the simulation starts, so the workload never
//! depends on how the run unfolds, only on the seed.

use crate::history::{ConversationSpec, Topology, UserSpec};
use crate::scenario::{Action, Conversations, Scenario, ScriptedAction};
use imsim_model::{Command, ConvId, DeviceId, UserId};
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
    let conversations = pairs
        .into_iter()
        .enumerate()
        .map(|(i, (a, b))| ConversationSpec {
            conv: ConvId(i as u32 + 1),
            members: vec![UserId(a), UserId(b)],
        })
        .collect();
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
        commands
            .entry(*device)
            .or_default()
            .push((rng.gen_range(0..duration_ms.min(500)), Command::GoOnline));
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
    // A stable sort keeps same-time commands in the order they were drawn (a burst stays in order).
    for device_commands in commands.values_mut() {
        device_commands.sort_by_key(|(at_ms, _)| *at_ms);
    }
    Plan { commands }
}

/// The plan of a scripted workload: exactly its actions, in time order.
fn scripted(script: &[ScriptedAction]) -> Plan {
    let mut commands: BTreeMap<DeviceId, Vec<(u64, Command)>> = BTreeMap::new();
    for (i, action) in script.iter().enumerate() {
        let command = match action.action {
            Action::GoOnline => Command::GoOnline,
            Action::GoOffline => Command::GoOffline,
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
