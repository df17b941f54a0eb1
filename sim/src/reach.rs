//! Which coverage signals a scenario can reach: each signal's [`Need`]s judged against the
//! scenario (the fault classes it can draw or has fixed, its topology and workload), so
//! `--require-coverage` asks of a sweep only what its scenario can produce.

use crate::faults::PARTITION_MS_MAX;
use crate::scenario::{Action, Conversations, Scenario};
use imsim_history::coverage::{Coverage, Need, Signal, Silence, FALLS_BEHIND};
use imsim_history::faults::{Direction, FaultClass};
use std::collections::BTreeSet;

/// Whether `scenario` can reach `signal`, so a sweep of it must.
pub fn applies(signal: Signal, scenario: &Scenario) -> bool {
    signal.needs().iter().all(|need| meets(scenario, *need))
}

fn meets(scenario: &Scenario, need: Need) -> bool {
    let workload = &scenario.workload;
    let scripted = |wanted: &[Action]| {
        workload
            .script
            .iter()
            .any(|action| wanted.contains(&action.action))
    };
    let topology = &scenario.topology;
    match need {
        Need::AnyFault(classes) => {
            let possible = possible_faults(scenario);
            classes.iter().any(|class| possible.contains(class))
        }
        Need::MembershipChanges => {
            workload.membership_changes > 0
                || scripted(&[Action::Add, Action::Remove, Action::Leave])
        }
        Need::LargeGroup => topology
            .groups
            .iter()
            .any(|group| group.size > scenario.protocol.notify_threshold_members),
        Need::Offline => {
            workload.offline_periods_per_device > 0
                || workload.online_fraction < 1.0
                || scripted(&[Action::GoOffline])
        }
        Need::MultiDevice => topology.devices_per_user > 1,
        Need::Bursts => workload.burst_max > 1,
        Need::Silence(silence) => can_be_silent(scenario, silence),
        Need::Reads => workload.reads > 0 || scripted(&[Action::Read]),
        Need::OneToOne => one_to_one_count(scenario) > 0,
        Need::Groups => !topology.groups.is_empty(),
        Need::Roaming => workload.roaming_devices > 0,
        Need::EdgeRequests => workload.edge_requests > 0,
        Need::Capacity => {
            let devices = u64::from(scenario.device_count()) + u64::from(workload.roaming_devices);
            let gateway_max = topology.gateway_connections_max.unwrap_or(u32::MAX);
            devices > u64::from(scenario.protocol.sessions_max) || devices > u64::from(gateway_max)
        }
        Need::Pages => {
            let falls_behind =
                meets(scenario, Need::Offline) || meets(scenario, Need::AnyFault(FALLS_BEHIND));
            let sends = u64::from(workload.messages)
                + workload
                    .script
                    .iter()
                    .filter(|action| action.action == Action::Send)
                    .count() as u64;
            let page = u64::from(scenario.protocol.pull_page_max);
            falls_behind && sends >= conversation_count(scenario) * page
        }
    }
}

/// The fault classes a run of `scenario` can have: the swarm's classes (when it draws) and the
/// fixed profile's.
pub fn possible_faults(scenario: &Scenario) -> BTreeSet<FaultClass> {
    let mut classes: BTreeSet<FaultClass> = scenario.faults.profile.classes().into_iter().collect();
    if scenario.faults.swarm {
        classes.extend(scenario.faults.swarm_classes.iter().copied());
    }
    classes
}

/// Whether a partition of `scenario` (fixed, or drawn by the swarm up to
/// [`PARTITION_MS_MAX`]) cuts the right direction for longer than the protocol waits.
fn can_be_silent(scenario: &Scenario, silence: Silence) -> bool {
    let protocol = &scenario.protocol;
    let (directions, bound_ms): (&[Direction], u64) = match silence {
        Silence::DeviceHearsNothing => (
            &[Direction::Both, Direction::FromServer],
            protocol.server_silence_timeout_ms,
        ),
        Silence::ServerHearsNothing => (
            &[Direction::Both, Direction::ToServer],
            protocol.session_timeout_ms,
        ),
        Silence::PushesLost => {
            // Abandoning needs the session to outlive every try: when the device's silence
            // timeout comes first it logs in again and the server drops the old session's pushes.
            let retries_ms = protocol.push_schedule_ms();
            if retries_ms >= protocol.server_silence_timeout_ms {
                return false;
            }
            // Under loss every try can go missing while heartbeats still get through.
            if possible_faults(scenario).contains(&FaultClass::Loss) {
                return true;
            }
            (&[Direction::FromServer], retries_ms)
        }
    };
    let fixed = scenario
        .faults
        .profile
        .partitions
        .iter()
        .any(|p| directions.contains(&p.direction) && p.duration_ms >= bound_ms);
    let drawn = scenario.faults.swarm
        && scenario
            .faults
            .swarm_classes
            .contains(&FaultClass::Partition)
        && PARTITION_MS_MAX >= bound_ms;
    fixed || drawn
}

/// The 1:1 conversations of `scenario`.
fn one_to_one_count(scenario: &Scenario) -> u64 {
    let topology = &scenario.topology;
    let users = u64::from(topology.users);
    match &topology.conversations {
        Conversations::AllPairs => users * users.saturating_sub(1) / 2,
        Conversations::Pairs(pairs) => u64::from(*pairs),
        Conversations::List(lists) => lists.len() as u64,
    }
}

/// 1:1 conversations and groups of the scenario's topology (at least 1).
fn conversation_count(scenario: &Scenario) -> u64 {
    let groups = &scenario.topology.groups;
    let groups: u64 = groups.iter().map(|g| u64::from(g.count)).sum();
    (one_to_one_count(scenario) + groups).max(1)
}

/// The signals `scenario` can reach that no run of `coverage` hit, in list order.
pub fn missing(coverage: &Coverage, scenario: &Scenario) -> Vec<Signal> {
    coverage.missing(|signal| applies(signal, scenario))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn applicability_follows_the_scenario() {
        let one_to_one = Scenario::load("one-to-one").unwrap();
        let churn = Scenario::load("group-membership-churn").unwrap();
        let crash_storm = Scenario::load("crash-storm").unwrap();
        let group_2000 = Scenario::load("group-2000").unwrap();
        // Groups: only with membership changes.
        assert!(!applies(Signal::MemberRemoved, &one_to_one));
        assert!(applies(Signal::MemberRemoved, &churn));
        // Crashes: drawn by the swarm, or fixed in the profile, or neither.
        assert!(applies(Signal::CrashBetweenStoreAndAck, &one_to_one));
        assert!(applies(Signal::CrashBetweenStoreAndAck, &crash_storm));
        let lossy = Scenario::load("lossy-network").unwrap();
        assert!(!applies(Signal::CrashBetweenStoreAndAck, &lossy));
        // Notify-then-pull: only with a group above the threshold.
        assert!(!applies(Signal::NotifyThenPull, &one_to_one));
        assert!(applies(Signal::NotifyThenPull, &group_2000));
        let mut below = churn.clone();
        below.protocol.notify_threshold_members = 10;
        assert!(!applies(Signal::NotifyThenPull, &below));
        below.protocol.notify_threshold_members = 9;
        assert!(applies(Signal::NotifyThenPull, &below));
        // Presence goes to 1:1 contacts: a scenario of groups alone has none to see offline
        // (it counted its group as a 1:1 conversation, and group-2000-cluster never hit it).
        assert!(applies(Signal::ContactSeenOffline, &one_to_one));
        assert!(!applies(Signal::ContactSeenOffline, &group_2000));
        // Long silences: a drawn partition (at most 10 s) never outlasts a 30 s timeout; a
        // fixed one may.
        assert!(!applies(Signal::SessionExpiredByServer, &one_to_one));
        let offline = Scenario::load("offline-resume").unwrap();
        assert!(applies(Signal::SessionExpiredByServer, &offline));
        assert!(applies(Signal::SessionTimedOut, &offline));
        let mut uplink_only = offline.clone();
        let partitions = &mut uplink_only.faults.profile.partitions;
        partitions.retain(|p| p.direction == Direction::ToServer);
        assert!(applies(Signal::SessionExpiredByServer, &uplink_only));
        assert!(!applies(Signal::SessionTimedOut, &uplink_only));
        // Push abandonment: only when the tries end before the device's silence timeout.
        assert!(applies(Signal::PushAbandoned, &lossy));
        let mut six_tries = lossy.clone();
        six_tries.protocol.push_attempts_max = 6;
        assert!(!applies(Signal::PushAbandoned, &six_tries));
        // Signals without needs apply everywhere.
        assert!(applies(Signal::HeldBack, &lossy));
    }

    #[test]
    fn coverage_adds_runs_and_names_what_is_missing() {
        let scenario = Scenario::load("lossy-network").unwrap();
        let mut coverage = Coverage::default();
        let mut counts: BTreeMap<Signal, u64> = Signal::ALL.iter().map(|s| (*s, 0)).collect();
        counts.insert(Signal::HeldBack, 3);
        coverage.add(&counts);
        coverage.add(&counts);
        assert_eq!(coverage.runs, 2);
        assert_eq!(coverage.hits(Signal::HeldBack), 6);
        assert_eq!(coverage.runs_hit(Signal::HeldBack), 2);
        let missing = missing(&coverage, &scenario);
        assert!(!missing.contains(&Signal::HeldBack));
        assert!(missing.contains(&Signal::DuplicateDropped));
        assert!(
            !missing.contains(&Signal::UnsyncedWritesLost),
            "not applicable"
        );
    }
}
