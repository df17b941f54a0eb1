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

use crate::faults::{FaultProfile, LinkFault};
use crate::scenario::{Conversations, Scenario};
use imsim_model::DeviceId;
use std::collections::BTreeMap;

/// One fault entry the shrinker may drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultEntry {
    /// One device's link in the loss rule (the rule goes when its last device goes).
    Loss(DeviceId),
    Duplication(DeviceId),
    Delay,
    Hold,
    Partition(usize),
    ServerCrash(usize),
    DeviceRestart(usize),
    ClockSkew(usize),
}

/// Every entry of `profile`.
pub fn fault_entries(profile: &FaultProfile) -> Vec<FaultEntry> {
    let mut entries = Vec::new();
    if let Some(loss) = &profile.loss {
        entries.extend(loss.devices.iter().map(|d| FaultEntry::Loss(*d)));
    }
    if let Some(duplication) = &profile.duplication {
        entries.extend(
            duplication
                .devices
                .iter()
                .map(|d| FaultEntry::Duplication(*d)),
        );
    }
    if profile.delay.is_some() {
        entries.push(FaultEntry::Delay);
    }
    if profile.hold.is_some() {
        entries.push(FaultEntry::Hold);
    }
    entries.extend((0..profile.partitions.len()).map(FaultEntry::Partition));
    entries.extend((0..profile.server_crashes.len()).map(FaultEntry::ServerCrash));
    entries.extend((0..profile.device_restarts.len()).map(FaultEntry::DeviceRestart));
    entries.extend((0..profile.clock_skew.len()).map(FaultEntry::ClockSkew));
    entries
}

/// `profile` with only the `kept` entries.
pub fn keep_faults(profile: &FaultProfile, kept: &[FaultEntry]) -> FaultProfile {
    let link = |fault: &Option<LinkFault>, entry: fn(DeviceId) -> FaultEntry| {
        map_link(fault, &|device| {
            kept.contains(&entry(device)).then_some(device)
        })
    };
    FaultProfile {
        loss: link(&profile.loss, FaultEntry::Loss),
        duplication: link(&profile.duplication, FaultEntry::Duplication),
        delay: profile
            .delay
            .clone()
            .filter(|_| kept.contains(&FaultEntry::Delay)),
        hold: profile
            .hold
            .clone()
            .filter(|_| kept.contains(&FaultEntry::Hold)),
        partitions: kept_items(&profile.partitions, kept, FaultEntry::Partition),
        server_crashes: kept_items(&profile.server_crashes, kept, FaultEntry::ServerCrash),
        device_restarts: kept_items(&profile.device_restarts, kept, FaultEntry::DeviceRestart),
        clock_skew: kept_items(&profile.clock_skew, kept, FaultEntry::ClockSkew),
    }
}

/// The items of a list whose entry (`entry(index)`) is kept.
fn kept_items<T: Clone>(
    items: &[T],
    kept: &[FaultEntry],
    entry: fn(usize) -> FaultEntry,
) -> Vec<T> {
    items
        .iter()
        .enumerate()
        .filter(|(i, _)| kept.contains(&entry(*i)))
        .map(|(_, item)| item.clone())
        .collect()
}

/// What of the topology a cut keeps: user numbers, device slots (1-based, the same for every
/// user) and conversation numbers, each ascending.
#[derive(Clone, Debug)]
pub struct Keep {
    pub users: Vec<u32>,
    pub slots: Vec<u32>,
    pub conversations: Vec<u32>,
}

impl Keep {
    /// Everything of `scenario`'s topology (an explicit one).
    pub fn all(scenario: &Scenario) -> Keep {
        let conversations = match &scenario.topology.conversations {
            Conversations::List(lists) => lists.len() as u32,
            _ => 0,
        };
        Keep {
            users: (1..=scenario.topology.users).collect(),
            slots: (1..=scenario.topology.devices_per_user).collect(),
            conversations: (1..=conversations).collect(),
        }
    }
}

/// `scenario` with only what `keep` names, renumbered from 1. `None` when too little is left
/// for a valid scenario (two users, one conversation, one device per user).
pub fn keep_topology(scenario: &Scenario, keep: &Keep) -> Option<Scenario> {
    let Conversations::List(lists) = &scenario.topology.conversations else {
        return None;
    };
    if keep.users.len() < 2 || keep.slots.is_empty() {
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
    let mut conversations = Vec::new();
    let mut conv_map = BTreeMap::new();
    for conv in &keep.conversations {
        let members = lists.get(*conv as usize - 1)?;
        let renamed: Option<Vec<u32>> = members.iter().map(|u| user_map.get(u).copied()).collect();
        if let Some(renamed) = renamed {
            conversations.push(renamed);
            conv_map.insert(*conv, conversations.len() as u32);
        }
    }
    if conversations.is_empty() {
        return None;
    }
    let mut cut = scenario.clone();
    cut.topology.users = keep.users.len() as u32;
    cut.topology.devices_per_user = slots;
    cut.topology.conversations = Conversations::List(conversations);
    cut.workload.script = scenario
        .workload
        .script
        .iter()
        .filter_map(|action| {
            let mut action = action.clone();
            action.device = device_map(action.device)?;
            if let Some(conv) = action.conv {
                action.conv = Some(*conv_map.get(&conv)?);
            }
            Some(action)
        })
        .collect();
    cut.faults.profile = map_devices(&scenario.faults.profile, &|d| device_map(d.0).map(DeviceId));
    Some(cut)
}

/// A link fault on the devices `map` keeps, renamed; none when it keeps none.
fn map_link(
    fault: &Option<LinkFault>,
    map: &dyn Fn(DeviceId) -> Option<DeviceId>,
) -> Option<LinkFault> {
    let fault = fault.as_ref()?;
    let devices: Vec<DeviceId> = fault.devices.iter().filter_map(|d| map(*d)).collect();
    (!devices.is_empty()).then_some(LinkFault {
        probability: fault.probability,
        devices,
    })
}

/// `profile` with every device renamed by `map`; faults on devices it drops go too.
fn map_devices(profile: &FaultProfile, map: &dyn Fn(DeviceId) -> Option<DeviceId>) -> FaultProfile {
    let mut mapped = profile.clone();
    mapped.loss = map_link(&profile.loss, map);
    mapped.duplication = map_link(&profile.duplication, map);
    mapped
        .partitions
        .retain_mut(|p| map(p.device).map(|d| p.device = d).is_some());
    mapped
        .device_restarts
        .retain_mut(|r| map(r.device).map(|d| r.device = d).is_some());
    mapped
        .clock_skew
        .retain_mut(|s| map(s.device).map(|d| s.device = d).is_some());
    mapped
}

/// 0 and every moment something starts (an action, a partition, a crash, a restart), in order.
pub fn moments(scenario: &Scenario) -> Vec<u64> {
    let profile = &scenario.faults.profile;
    let mut moments: Vec<u64> = std::iter::once(0)
        .chain(scenario.workload.script.iter().map(|a| a.at_ms))
        .chain(profile.partitions.iter().map(|p| p.start_ms))
        .chain(profile.server_crashes.iter().map(|c| c.at_ms))
        .chain(profile.device_restarts.iter().map(|r| r.at_ms))
        .collect();
    moments.sort_unstable();
    moments.dedup();
    moments
}

/// Moves everything that starts at or after `from_ms` (and the end of the safety phase) `by_ms`
/// earlier; fault windows keep their length.
pub fn shift_earlier(scenario: &mut Scenario, from_ms: u64, by_ms: u64) {
    let shift = |ms: &mut u64| {
        if *ms >= from_ms {
            *ms -= by_ms;
        }
    };
    scenario
        .workload
        .script
        .iter_mut()
        .for_each(|a| shift(&mut a.at_ms));
    let profile = &mut scenario.faults.profile;
    profile
        .partitions
        .iter_mut()
        .for_each(|p| shift(&mut p.start_ms));
    profile
        .server_crashes
        .iter_mut()
        .for_each(|c| shift(&mut c.at_ms));
    profile
        .device_restarts
        .iter_mut()
        .for_each(|r| shift(&mut r.at_ms));
    scenario.workload.duration_ms -= by_ms;
}

/// The shortest safety phase that still holds every action and fault.
pub fn duration_floor(scenario: &Scenario) -> u64 {
    let profile = &scenario.faults.profile;
    let actions = scenario.workload.script.iter().map(|a| a.at_ms + 1);
    let partitions = profile
        .partitions
        .iter()
        .map(|p| p.start_ms + p.duration_ms);
    let crashes = profile
        .server_crashes
        .iter()
        .map(|c| c.at_ms + c.downtime_ms);
    let restarts = profile
        .device_restarts
        .iter()
        .map(|r| r.at_ms + r.downtime_ms);
    actions
        .chain(partitions)
        .chain(crashes)
        .chain(restarts)
        .fold(1, u64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explicit::explicit;

    #[test]
    fn keeping_everything_changes_nothing() {
        let form = explicit(&Scenario::load("one-to-one").unwrap(), 2);
        assert_eq!(keep_topology(&form, &Keep::all(&form)), Some(form.clone()));
        let entries = fault_entries(&form.faults.profile);
        assert_eq!(
            keep_faults(&form.faults.profile, &entries),
            form.faults.profile
        );
        assert_eq!(
            keep_faults(&form.faults.profile, &[]),
            FaultProfile::default()
        );
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
}
