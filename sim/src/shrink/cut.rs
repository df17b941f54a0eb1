//! The edits the shrinker tries, as pure functions of an explicit scenario: keep some fault
//! entries; keep some users, device slots and conversations and renumber what is left; move
//! what happens earlier.
//!
//! Renumbering rather than leaving holes: devices are numbered from the users
//! (`(user - 1) * devices_per_user + slot`) and conversations by position, so a topology cannot
//! skip a number. Every reference is rewritten through one map (script devices and
//! conversations, conversation members, each fault's device); what refers to something dropped
//! is dropped with it. A renumbered run is a different madsim run (addresses and node order
//! change), which is fine: the shrinker keeps a cut only when its run still fails.

use crate::faults::FaultEntry;
use crate::scenario::{Conversations, GroupSpec, Scenario};
use imsim_model::DeviceId;
use std::collections::BTreeMap;

/// What of the topology a cut keeps: user numbers, device slots (1-based, the same for every
/// user) and conversation numbers (the 1:1 conversations first, then the groups, as a topology
/// numbers them), each ascending.
#[derive(Clone, Debug)]
pub struct Keep {
    pub users: Vec<u32>,
    pub slots: Vec<u32>,
    pub conversations: Vec<u32>,
}

impl Keep {
    /// Everything of `scenario`'s topology (an explicit one).
    pub fn all(scenario: &Scenario) -> Keep {
        let pairs = match &scenario.topology.conversations {
            Conversations::List(lists) => lists.len() as u32,
            _ => 0,
        };
        let groups: u32 = scenario.topology.groups.iter().map(|g| g.count).sum();
        Keep {
            users: (1..=scenario.topology.users).collect(),
            slots: (1..=scenario.topology.devices_per_user).collect(),
            conversations: (1..=pairs + groups).collect(),
        }
    }
}

/// `scenario` with only what `keep` names, renumbered from 1. A 1:1 conversation goes with
/// either of its users; a group loses the founding members that go and goes itself when fewer
/// than two are left; an add or remove of a user that goes goes too. `None` when too little is
/// left for a valid scenario (two users, one conversation, one device per user), or when a group
/// was drawn rather than listed (an explicit scenario lists its members).
pub fn keep_topology(scenario: &Scenario, keep: &Keep) -> Option<Scenario> {
    let Conversations::List(lists) = &scenario.topology.conversations else {
        return None;
    };
    if keep.users.len() < 2 || keep.slots.is_empty() {
        return None;
    }
    let groups = &scenario.topology.groups;
    if groups.iter().any(|g| g.members.is_empty()) {
        return None;
    }
    let slots_before = scenario.topology.devices_per_user;
    let slots = keep.slots.len() as u32;
    let user_map: BTreeMap<u32, u32> = (1..)
        .zip(&keep.users)
        .map(|(new, old)| (*old, new))
        .collect();
    let device_map = |device: u32| -> Option<u32> {
        let (user, slot) = (
            (device - 1) / slots_before + 1,
            (device - 1) % slots_before + 1,
        );
        let new_user = user_map.get(&user)?;
        let new_slot = keep.slots.iter().position(|s| *s == slot)? as u32;
        Some((new_user - 1) * slots + new_slot + 1)
    };
    let renamed = |members: &[u32]| -> Vec<u32> {
        members
            .iter()
            .filter_map(|u| user_map.get(u).copied())
            .collect()
    };
    // Old conversation number → its members after the cut, 1:1 conversations first.
    let mut pairs = Vec::new();
    let mut kept_groups = Vec::new();
    let mut conv_map = BTreeMap::new();
    for conv in &keep.conversations {
        let index = *conv as usize - 1;
        if let Some(members) = lists.get(index) {
            let members = renamed(members);
            if members.len() == 2 {
                pairs.push(members);
                conv_map.insert(*conv, (false, pairs.len() as u32));
            }
        } else {
            let group = groups.get(index - lists.len())?;
            let members = renamed(&group.members);
            if members.len() >= 2 {
                kept_groups.push(GroupSpec {
                    size: members.len() as u32,
                    count: 1,
                    members,
                });
                conv_map.insert(*conv, (true, kept_groups.len() as u32));
            }
        }
    }
    if pairs.is_empty() && kept_groups.is_empty() {
        return None;
    }
    // Groups are numbered after the 1:1 conversations that are left.
    let pair_count = pairs.len() as u32;
    let conv_number = |conv: u32| -> Option<u32> {
        let (group, position) = *conv_map.get(&conv)?;
        Some(if group {
            pair_count + position
        } else {
            position
        })
    };
    let mut cut = scenario.clone();
    cut.topology.users = keep.users.len() as u32;
    cut.topology.devices_per_user = slots;
    cut.topology.conversations = Conversations::List(pairs);
    cut.topology.groups = kept_groups;
    cut.workload.script = scenario
        .workload
        .script
        .iter()
        .filter_map(|action| {
            let mut action = action.clone();
            action.device = device_map(action.device)?;
            if let Some(conv) = action.conv {
                action.conv = Some(conv_number(conv)?);
            }
            if let Some(user) = action.user {
                action.user = Some(*user_map.get(&user)?);
            }
            Some(action)
        })
        .collect();
    cut.faults.profile = scenario
        .faults
        .profile
        .map_devices(&|d| device_map(d.0).map(DeviceId));
    Some(cut)
}

/// 0 and every moment something starts (an action, a fault), in order.
pub fn moments(scenario: &Scenario) -> Vec<u64> {
    let faults = scenario.faults.profile.windows();
    let mut moments: Vec<u64> = std::iter::once(0)
        .chain(scenario.workload.script.iter().map(|a| a.at_ms))
        .chain(faults.iter().map(|(start_ms, _)| *start_ms))
        .collect();
    moments.sort_unstable();
    moments.dedup();
    moments
}

/// Moves everything that starts at or after `from_ms` (and the end of the safety phase) `by_ms`
/// earlier; fault windows keep their length.
pub fn shift_earlier(scenario: &mut Scenario, from_ms: u64, by_ms: u64) {
    for action in scenario.workload.script.iter_mut() {
        if action.at_ms >= from_ms {
            action.at_ms -= by_ms;
        }
    }
    scenario.faults.profile.shift_earlier(from_ms, by_ms);
    scenario.workload.duration_ms -= by_ms;
}

/// `scenario` ended at `end_ms`: the actions from then on go, so do the faults that would still
/// last then, and the safety phase ends there. What happened before is the same run as far as
/// nothing before `end_ms` depended on what came after, which is why cutting the tail keeps a
/// failure far more often than cutting the same number of actions anywhere else.
pub fn truncate(scenario: &Scenario, end_ms: u64) -> Scenario {
    let mut cut = scenario.clone();
    cut.workload.script.retain(|action| action.at_ms < end_ms);
    let profile = &scenario.faults.profile;
    let ends_in_time = |entry: &FaultEntry| {
        let alone = profile.keep(std::slice::from_ref(entry));
        alone
            .windows()
            .iter()
            .all(|(_, until_ms)| *until_ms <= end_ms)
    };
    let kept: Vec<FaultEntry> = profile.entries().into_iter().filter(ends_in_time).collect();
    cut.faults.profile = profile.keep(&kept);
    cut.workload.duration_ms = end_ms;
    cut
}

/// The shortest safety phase that still holds every action and fault.
pub fn duration_floor(scenario: &Scenario) -> u64 {
    let actions = scenario.workload.script.iter().map(|a| a.at_ms + 1);
    let faults = scenario.faults.profile.windows();
    actions
        .chain(faults.iter().map(|(_, end_ms)| *end_ms))
        .fold(1, u64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explicit::explicit;
    use crate::faults::FaultProfile;

    #[test]
    fn keeping_everything_changes_nothing() {
        let form = explicit(&Scenario::load("one-to-one").unwrap(), 2);
        assert_eq!(keep_topology(&form, &Keep::all(&form)), Some(form.clone()));
        let entries = form.faults.profile.entries();
        assert_eq!(form.faults.profile.keep(&entries), form.faults.profile);
        assert_eq!(form.faults.profile.keep(&[]), FaultProfile::default());
    }

    #[test]
    fn dropping_a_user_renumbers_every_reference() {
        let text = r#"
            name = "cut"
            [topology]
            users = 3
            devices_per_user = 2
            conversations = [[1, 2], [2, 3], [1, 3]]
            [workload]
            duration_ms = 1_000
            messages = 0
            script = [
                { at_ms = 1, device = 2, action = "send", conv = 3 },
                { at_ms = 2, device = 3, action = "send", conv = 2 },
                { at_ms = 3, device = 6, action = "send", conv = 3, body = "x" },
            ]
            [faults]
            swarm = false
            [faults.profile]
            loss = { probability = 0.5, devices = [3, 4] }
            partitions = [{ device = 5, direction = "both", start_ms = 0, duration_ms = 10 }]
        "#;
        let scenario = Scenario::parse("cut.toml", text).unwrap();
        let keep = Keep {
            users: vec![1, 3],
            slots: vec![2],
            conversations: vec![1, 2, 3],
        };
        let cut = keep_topology(&scenario, &keep).unwrap();
        cut.validate().unwrap();
        assert_eq!(cut.topology.users, 2);
        assert_eq!(cut.topology.devices_per_user, 1);
        assert_eq!(
            cut.topology.conversations,
            Conversations::List(vec![vec![1, 2]])
        );
        // d2 (u1 slot 2) → d1 and d6 (u3 slot 2) → d2, c3 → c1; d3 is user 2's, gone with c2.
        let script: Vec<(u32, Option<u32>)> = cut
            .workload
            .script
            .iter()
            .map(|a| (a.device, a.conv))
            .collect();
        assert_eq!(script, vec![(1, Some(1)), (2, Some(1))]);
        assert_eq!(cut.faults.profile.loss, None, "d3 and d4 are user 2's");
        assert_eq!(cut.faults.profile.partitions, vec![]);
        let slot_one = Keep {
            users: vec![1, 2, 3],
            slots: vec![1],
            conversations: vec![1, 2, 3],
        };
        let cut = keep_topology(&scenario, &slot_one).unwrap();
        assert_eq!(cut.faults.profile.loss.unwrap().devices, vec![DeviceId(2)]);
        assert_eq!(cut.faults.profile.partitions[0].device, DeviceId(3));
    }

    #[test]
    fn dropping_a_user_keeps_its_groups_without_it() {
        let text = r#"
            name = "cut"
            [topology]
            users = 4
            conversations = [[1, 2]]
            groups = [{ size = 3, members = [1, 3, 4] }, { size = 2, members = [2, 3] }]
            [workload]
            duration_ms = 1_000
            messages = 0
            script = [
                { at_ms = 1, device = 4, action = "send", conv = 2 },
                { at_ms = 2, device = 1, action = "remove", conv = 2, user = 4 },
                { at_ms = 3, device = 1, action = "add", conv = 2, user = 2 },
                { at_ms = 4, device = 2, action = "send", conv = 3 },
            ]
            [faults]
            swarm = false
        "#;
        let scenario = Scenario::parse("cut.toml", text).unwrap();
        let keep = Keep {
            users: vec![1, 2, 4],
            ..Keep::all(&scenario)
        };
        assert_eq!(Keep::all(&scenario).conversations, vec![1, 2, 3]);
        let cut = keep_topology(&scenario, &keep).unwrap();
        cut.validate().unwrap();
        // u3 goes: group 2 keeps u1 and u4 (now u3); group 3 ([2, 3]) has one member left.
        assert_eq!(cut.topology.users, 3);
        let members: Vec<Vec<u32>> = cut
            .topology
            .groups
            .iter()
            .map(|g| g.members.clone())
            .collect();
        assert_eq!(members, vec![vec![1, 3]]);
        assert_eq!(cut.topology.groups[0].size, 2);
        let script: Vec<(u32, Option<u32>, Option<u32>)> = cut
            .workload
            .script
            .iter()
            .map(|a| (a.device, a.conv, a.user))
            .collect();
        assert_eq!(
            script,
            vec![
                (3, Some(2), None),
                (1, Some(2), Some(3)),
                (1, Some(2), Some(2))
            ],
            "the group's actions follow it, users renumbered; the other group's send goes"
        );
        let without_the_pair = Keep {
            conversations: vec![2, 3],
            ..Keep::all(&scenario)
        };
        let cut = keep_topology(&scenario, &without_the_pair).unwrap();
        cut.validate().unwrap();
        assert_eq!(cut.topology.conversations, Conversations::List(vec![]));
        assert_eq!(
            cut.workload.script[0].conv,
            Some(1),
            "groups renumbered from 1"
        );
        assert_eq!(cut.workload.script[3].conv, Some(2));
    }
}
