//! Presence invariants (DESIGN.md §6). The server's view of a user is replayed from its
//! `presence_changed` events (a server crash ends every session, so everyone is offline until
//! they log in again); a device's view from its `presence_seen` events.
//! - P1 presence-converges (liveness): after the quiet period the server shows a user online
//!   exactly when it holds a session of one of its devices, and every device that follows the
//!   user shows that status: in push mode the devices of the user's 1:1 contacts, in pull mode
//!   the devices whose open conversation has the user as a member.
//! - P2 offline-detected-in-time: when every device of a user is dead, cut off from the server
//!   (crashed, or partitioned toward the server) or logged out, the server shows the user offline within the
//!   protocol's detection bound (session timeout + one housekeeping tick, plus the longest delay
//!   the fault profile can give a packet already in flight); and in push mode a contact's device
//!   whose link to the server is healthy the whole time shows it within the propagation bound.
//! - P3 presence-fanout-bounded: a change is pushed only to its subscribers (the devices of the
//!   user's 1:1 contacts), each at most once; in pull mode it is pushed to nobody.

use super::index::{device_name, Findings};
use super::{HistoryIndex, Invariant, Violation};
use crate::{Direction, Entry, HarnessEvent, History, Node, RunStart};
use imsim_model::{DeviceId, Event, PresenceMode, ProtocolConfig, SessionEnd, UserId};
use std::collections::{BTreeMap, BTreeSet};

/// Network latency allowance on top of the bounds: the simulated network's own delay.
const LATENCY_ALLOWANCE_MS: u64 = 100;

pub(super) fn check(history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    let Some(start) = history.run_start() else {
        return Vec::new();
    };
    let contacts = contacts(start);
    fanout_bounded(history, start, &contacts, &mut findings);
    // A history that records no presence (one from elsewhere) is not judged on it.
    let recorded = history
        .protocol_events()
        .any(|(_, _, event)| matches!(event, Event::PresenceChanged { .. }));
    if !recorded {
        return findings.into_violations();
    }
    detected_in_time(history, index, start, &contacts, &mut findings);
    if index.run_ended().is_some() {
        converges(history, index, start, &contacts, &mut findings);
    }
    findings.into_violations()
}

/// Each user's 1:1 peers.
fn contacts(start: &RunStart) -> BTreeMap<UserId, BTreeSet<UserId>> {
    let mut contacts: BTreeMap<UserId, BTreeSet<UserId>> = BTreeMap::new();
    for conversation in start.topology.conversations.iter().filter(|c| !c.group) {
        for a in &conversation.members {
            for b in &conversation.members {
                if a != b {
                    contacts.entry(*a).or_default().insert(*b);
                }
            }
        }
    }
    contacts
}

fn fanout_bounded(
    history: &History,
    start: &RunStart,
    contacts: &BTreeMap<UserId, BTreeSet<UserId>>,
    findings: &mut Findings,
) {
    let subscribers = |user: UserId| -> BTreeSet<DeviceId> {
        if start.protocol.presence == PresenceMode::Pull {
            return BTreeSet::new();
        }
        let peers = contacts.get(&user).cloned().unwrap_or_default();
        start
            .topology
            .users
            .iter()
            .filter(|spec| peers.contains(&spec.user))
            .flat_map(|spec| spec.devices.iter().copied())
            .collect()
    };
    for (record, line, event) in history.protocol_events() {
        let (Node::Server, Event::PresenceChanged { user, notified, .. }) = (line.node, event)
        else {
            continue;
        };
        let allowed = subscribers(*user);
        let mut seen = BTreeSet::new();
        let extra: Vec<DeviceId> = notified
            .iter()
            .copied()
            .filter(|device| !allowed.contains(device) || !seen.insert(*device))
            .collect();
        if let Some(first) = extra.first() {
            let who = device_name(*first);
            findings.report(Invariant::P3PresenceFanoutBounded, || {
                let text = format!(
                    "{user}'s status change was pushed to {} device(s) outside its {} \
                     subscriber(s) or more than once, e.g. {who}.",
                    extra.len(),
                    allowed.len()
                );
                (text, vec![record])
            });
        }
    }
}

/// The server's status of each user as it changes: (time, user, online, record). A server crash
/// is every user going offline.
fn server_view(history: &History) -> Vec<(u64, Option<UserId>, bool, usize)> {
    let mut changes = Vec::new();
    for (record, line) in history.records.iter().enumerate() {
        match &line.entry {
            Entry::Protocol(Event::PresenceChanged { user, online, .. }) => {
                changes.push((line.t_ms, Some(*user), *online, record))
            }
            Entry::Harness(HarnessEvent::NodeCrashed {
                crashed: Node::Server,
            }) => changes.push((line.t_ms, None, false, record)),
            _ => {}
        }
    }
    changes
}

/// Whether the server showed `user` online at `t_ms`, and the record that made it so.
fn server_status(
    view: &[(u64, Option<UserId>, bool, usize)],
    user: UserId,
    t_ms: u64,
) -> (bool, Option<usize>) {
    let mut status = (false, None);
    for (at, who, online, record) in view {
        if *at > t_ms {
            break;
        }
        if who.is_none() || *who == Some(user) {
            status = (*online, Some(*record));
        }
    }
    status
}

/// Why a device is silent toward the server.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Silence {
    Crashed,
    Partitioned,
    /// The user logged out on purpose: nothing is heard from the device until it logs in again
    /// (if the logout packet is lost, only the session timeout ends the session, so the same
    /// bound applies).
    LoggedOut,
}

/// Per device, the intervals in which nothing it sends reaches the server: crashed, partitioned
/// both ways or toward the server, or logged out until the server opens a session of it again.
/// `(from, to, record that started it)`.
fn silences(history: &History) -> BTreeMap<DeviceId, Vec<(u64, u64, usize)>> {
    let mut open: BTreeMap<(DeviceId, Silence), (u64, usize)> = BTreeMap::new();
    let mut silences: BTreeMap<DeviceId, Vec<(u64, u64, usize)>> = BTreeMap::new();
    let end_ms = history.records.last().map_or(0, |r| r.t_ms);
    for (record, line) in history.records.iter().enumerate() {
        let (begins, ends) = match (&line.node, &line.entry) {
            (_, Entry::Harness(event)) => match event {
                HarnessEvent::NodeCrashed {
                    crashed: Node::Device(device),
                } => (Some((*device, Silence::Crashed)), None),
                HarnessEvent::PartitionStarted { device, direction }
                    if *direction != Direction::FromServer =>
                {
                    (Some((*device, Silence::Partitioned)), None)
                }
                HarnessEvent::NodeRestarted {
                    restarted: Node::Device(device),
                } => (None, Some((*device, Silence::Crashed))),
                HarnessEvent::PartitionHealed { device } => {
                    (None, Some((*device, Silence::Partitioned)))
                }
                _ => (None, None),
            },
            (
                Node::Device(device),
                Entry::Protocol(Event::SessionLost {
                    reason: SessionEnd::Logout,
                }),
            ) => (Some((*device, Silence::LoggedOut)), None),
            (Node::Server, Entry::Protocol(Event::SessionOpened { device, .. })) => {
                (None, Some((*device, Silence::LoggedOut)))
            }
            _ => (None, None),
        };
        if let Some(key) = begins {
            open.entry(key).or_insert((line.t_ms, record));
        }
        if let Some(key) = ends {
            if let Some((from, at)) = open.remove(&key) {
                silences
                    .entry(key.0)
                    .or_default()
                    .push((from, line.t_ms, at));
            }
        }
    }
    for ((device, _), (from, at)) in open {
        silences.entry(device).or_default().push((from, end_ms, at));
    }
    silences
}

/// The longest a packet sent before a silence can still arrive after it began.
fn in_flight_ms(start: &RunStart) -> u64 {
    let faults = &start.faults;
    let delay = faults.delay.as_ref().map_or(0, |d| d.delay_ms_max);
    let hold = faults.hold.as_ref().map_or(0, |h| h.delay_ms_max);
    delay + hold + LATENCY_ALLOWANCE_MS
}

fn detected_in_time(
    history: &History,
    index: &HistoryIndex,
    start: &RunStart,
    contacts: &BTreeMap<UserId, BTreeSet<UserId>>,
    findings: &mut Findings,
) {
    let protocol: &ProtocolConfig = &start.protocol;
    let silences = silences(history);
    let view = server_view(history);
    let bound_ms = protocol.offline_detection_ms() + in_flight_ms(start);
    let users: Vec<UserId> = index.users().collect();
    for user in users {
        // Intersect the silences of all of the user's devices.
        let mut together: Vec<(u64, u64, usize)> = vec![(0, u64::MAX, 0)];
        for device in index.devices_of(user) {
            let mine = silences.get(device).map_or(&[][..], Vec::as_slice);
            let mut next = Vec::new();
            for (a_from, a_to, a_at) in &together {
                for (b_from, b_to, b_at) in mine {
                    let (from, to) = ((*a_from).max(*b_from), (*a_to).min(*b_to));
                    if from < to {
                        let at = if b_from >= a_from { *b_at } else { *a_at };
                        next.push((from, to, at));
                    }
                }
            }
            together = next;
        }
        for (from, to, started) in together {
            let deadline = from + bound_ms;
            if to <= deadline {
                continue;
            }
            let (online, since) = server_status(&view, user, deadline);
            if online {
                findings.report(Invariant::P2OfflineDetectedInTime, || {
                    let text = format!(
                        "Every device of {user} stopped reaching the server at {:.3}s, but the \
                         server still showed {user} online at {:.3}s, {bound_ms} ms later; it \
                         must show offline at most {bound_ms} ms after (session timeout {} ms + \
                         tick {} ms + in-flight packets {} ms).",
                        from as f64 / 1000.0,
                        deadline as f64 / 1000.0,
                        protocol.session_timeout_ms,
                        protocol.server_tick_ms,
                        in_flight_ms(start),
                    );
                    (text, [Some(started), since].into_iter().flatten().collect())
                });
                continue;
            }
            if protocol.presence == PresenceMode::Push {
                observers_see_offline(
                    history, index, start, contacts, user, deadline, to, started, findings,
                );
            }
        }
    }
}

/// P2's observer half: a contact's device with a healthy link the whole time shows `user`
/// offline within the propagation bound after the server's deadline.
#[allow(clippy::too_many_arguments)]
fn observers_see_offline(
    history: &History,
    index: &HistoryIndex,
    start: &RunStart,
    contacts: &BTreeMap<UserId, BTreeSet<UserId>>,
    user: UserId,
    deadline: u64,
    silence_end: u64,
    started: usize,
    findings: &mut Findings,
) {
    let faults = &start.faults;
    if faults.delay.is_some() || faults.hold.is_some() || faults.server_may_crash() {
        return;
    }
    let by = deadline + start.protocol.presence_propagation_ms() + LATENCY_ALLOWANCE_MS;
    if silence_end <= by || gateway_fault_near(start, deadline, by) {
        return;
    }
    let lossy: BTreeSet<DeviceId> = [&faults.loss, &faults.duplication]
        .into_iter()
        .flatten()
        .flat_map(|fault| fault.devices.iter().copied())
        .collect();
    let disturbed: BTreeSet<DeviceId> = faults
        .partitions
        .iter()
        .map(|p| p.device)
        .chain(faults.device_restarts.iter().map(|r| r.device))
        .collect();
    for contact in contacts.get(&user).into_iter().flatten() {
        for device in index.devices_of(*contact) {
            if lossy.contains(device) || disturbed.contains(device) {
                continue;
            }
            // Online with one session from before the deadline until `by`.
            let mut session_since = None;
            let mut shown = None;
            for (record, line, event) in history.protocol_events() {
                if line.t_ms > by {
                    break;
                }
                if line.node != Node::Device(*device) {
                    continue;
                }
                match event {
                    Event::LoggedIn { .. } => session_since = Some(line.t_ms),
                    Event::SessionLost { .. } => session_since = None,
                    Event::PresenceSeen { user: u, online } if *u == user => {
                        shown = Some((*online, record))
                    }
                    _ => {}
                }
            }
            let healthy = session_since.is_some_and(|since| since <= deadline);
            if let (true, Some((true, record))) = (healthy, shown) {
                let who = device_name(*device);
                findings.report(Invariant::P2OfflineDetectedInTime, || {
                    let text = format!(
                        "{who}, a contact of {user} with a healthy link, still showed {user} \
                         online at {:.3}s although every device of {user} had stopped.",
                        by as f64 / 1000.0
                    );
                    (text, vec![started, record])
                });
            }
        }
    }
}

/// Cluster topology: whether a gateway was down or cut from the logic between `deadline` and
/// `by`, or so shortly before that its devices may not have failed over yet. Which devices sat
/// behind it is not in the history, so no observer counts as having a healthy link then.
fn gateway_fault_near(start: &RunStart, deadline: u64, by: u64) -> bool {
    let protocol = &start.protocol;
    let failover_ms = protocol.heartbeat_interval_ms + protocol.server_silence_timeout_ms;
    let crashes = start.faults.gateway_crashes.iter();
    let crashes = crashes.map(|c| (c.at_ms, c.at_ms + c.downtime_ms));
    let cuts = start.faults.gateway_partitions.iter();
    let cuts = cuts.map(|p| (p.start_ms, p.start_ms + p.duration_ms));
    crashes
        .chain(cuts)
        .any(|(from, to)| from <= by && to + failover_ms >= deadline)
}

fn converges(
    history: &History,
    index: &HistoryIndex,
    start: &RunStart,
    contacts: &BTreeMap<UserId, BTreeSet<UserId>>,
    findings: &mut Findings,
) {
    // The server's final status and sessions; each device's last shown status and open conv.
    let mut status: BTreeMap<UserId, (bool, usize)> = BTreeMap::new();
    let mut sessions: BTreeMap<UserId, BTreeSet<DeviceId>> = BTreeMap::new();
    let mut shown: BTreeMap<(DeviceId, UserId), (bool, usize)> = BTreeMap::new();
    let mut open: BTreeMap<DeviceId, imsim_model::ConvId> = BTreeMap::new();
    let mut online: BTreeSet<DeviceId> = BTreeSet::new();
    for (record, line) in history.records.iter().enumerate() {
        match (&line.node, &line.entry) {
            (_, Entry::Harness(HarnessEvent::NodeCrashed { crashed })) => match crashed {
                Node::Server => {
                    status.clear();
                    sessions.clear();
                }
                Node::Device(device) => {
                    online.remove(device);
                }
                Node::Harness => {}
            },
            (Node::Server, Entry::Protocol(event)) => match event {
                Event::PresenceChanged { user, online, .. } => {
                    status.insert(*user, (*online, record));
                }
                Event::SessionOpened { user, device, .. } => {
                    sessions.entry(*user).or_default().insert(*device);
                }
                Event::SessionClosed { device, .. } => {
                    if let Some(user) = index.user_of(*device) {
                        sessions.entry(user).or_default().remove(device);
                    }
                }
                _ => {}
            },
            (Node::Device(device), Entry::Protocol(event)) => match event {
                Event::PresenceSeen { user, online } => {
                    shown.insert((*device, *user), (*online, record));
                }
                Event::ConversationOpened { conv } => {
                    open.insert(*device, *conv);
                }
                Event::LoggedIn { .. } => {
                    online.insert(*device);
                }
                Event::SessionLost { .. } => {
                    online.remove(device);
                }
                _ => {}
            },
            _ => {}
        }
    }
    let end = index.run_ended().unwrap_or(0);
    let users: Vec<UserId> = index.users().collect();
    let truth = |user: UserId| status.get(&user).map_or((false, end), |s| *s);
    for user in &users {
        let holds = sessions.get(user).is_some_and(|s| !s.is_empty());
        let (shows, record) = truth(*user);
        if holds != shows {
            findings.report(Invariant::P1PresenceConverges, || {
                let text = format!(
                    "After the quiet period the server shows {user} {} although it holds {} \
                     session of {user}.",
                    word(shows),
                    if holds { "a" } else { "no" }
                );
                (text, vec![record, end])
            });
        }
    }
    for device in &online {
        let Some(observer) = index.user_of(*device) else {
            continue;
        };
        let followed: Vec<UserId> = match start.protocol.presence {
            PresenceMode::Push => contacts
                .get(&observer)
                .map(|c| c.iter().copied().collect())
                .unwrap_or_default(),
            PresenceMode::Pull => match open.get(device) {
                Some(conv)
                    if index
                        .periods(*conv, observer)
                        .latest()
                        .is_some_and(|p| p.leave.is_none()) =>
                {
                    users
                        .iter()
                        .copied()
                        .filter(|u| {
                            *u != observer
                                && index
                                    .periods(*conv, *u)
                                    .latest()
                                    .is_some_and(|p| p.leave.is_none())
                        })
                        .collect()
                }
                _ => Vec::new(),
            },
        };
        for subject in followed {
            let (truth, truth_record) = truth(subject);
            let seen = shown.get(&(*device, subject)).copied();
            if seen.map(|(online, _)| online) != Some(truth) {
                let who = device_name(*device);
                let shows = seen.map_or("nothing", |(online, _)| word(online));
                let witness = seen.map_or(truth_record, |(_, at)| at);
                findings.report(Invariant::P1PresenceConverges, || {
                    let text = format!(
                        "After the quiet period {who} shows {subject} {shows}, but {subject} is \
                         {}.",
                        word(truth)
                    );
                    (text, vec![witness, truth_record, end])
                });
            }
        }
    }
}

fn word(online: bool) -> &'static str {
    if online {
        "online"
    } else {
        "offline"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use imsim_model::SessionId;

    fn presence(story: &Story) -> Vec<Violation> {
        run(story, check)
    }

    fn changed(story: &mut Story, user: UserId, online: bool, notified: &[DeviceId]) -> usize {
        story.server(Event::PresenceChanged {
            user,
            online,
            notified: notified.to_vec(),
        })
    }

    fn opened(story: &mut Story, user: UserId, device: DeviceId) -> usize {
        let session = SessionId(u64::from(device.0));
        story.device(device, Event::LoggedIn { session });
        story.server(Event::SessionOpened {
            session,
            user,
            device,
        })
    }

    fn shown(story: &mut Story, device: DeviceId, user: UserId, online: bool) -> usize {
        story.device(device, Event::PresenceSeen { user, online })
    }

    /// u1 (d1, d2) and u2 (d3) log in; each is pushed to the other's devices.
    fn everyone_online() -> Story {
        let mut story = Story::one_to_one();
        opened(&mut story, U1, D1);
        changed(&mut story, U1, true, &[]);
        opened(&mut story, U1, D2);
        opened(&mut story, U2, D3);
        changed(&mut story, U2, true, &[D1, D2]);
        shown(&mut story, D1, U2, true);
        shown(&mut story, D2, U2, true);
        shown(&mut story, D3, U1, true);
        story
    }

    #[test]
    fn true_status_everywhere_passes() {
        let mut story = everyone_online();
        story.finish();
        assert_eq!(presence(&story), vec![]);
    }

    #[test]
    fn p3_a_push_beyond_the_contacts_fires() {
        // c1 and c2 are 1:1 here: u2's contacts are u1 and u3, c1's other members.
        let mut story = Story::group();
        changed(&mut story, U2, true, &[D1, D2, D4, D5]);
        let push = changed(&mut story, U2, false, &[D1, D3, D1]);
        let violation = single(presence(&story), Invariant::P3PresenceFanoutBounded);
        assert_eq!(violation.witness, vec![push]);
        assert!(
            violation.explanation.contains("2 device(s)"),
            "{violation:?}"
        );
        assert!(violation.explanation.contains("device-3"), "{violation:?}");
    }

    #[test]
    fn p3_a_push_in_pull_mode_fires() {
        let mut story = Story::one_to_one();
        story.set_protocol(ProtocolConfig {
            presence: PresenceMode::Pull,
            ..ProtocolConfig::default()
        });
        changed(&mut story, U2, true, &[D1]);
        single(presence(&story), Invariant::P3PresenceFanoutBounded);
    }

    #[test]
    fn p2_a_dead_phone_detected_within_the_session_timeout_passes() {
        let mut story = everyone_online();
        story.crash(Node::Device(D3));
        story.wait(ProtocolConfig::default().session_timeout_ms);
        changed(&mut story, U2, false, &[D1, D2]);
        shown(&mut story, D1, U2, false);
        shown(&mut story, D2, U2, false);
        story.wait(30_000);
        story.restart(Node::Device(D3));
        assert_eq!(presence(&story), vec![]);
    }

    #[test]
    fn p2_a_dead_phone_still_online_fires() {
        let mut story = everyone_online();
        let crash = story.crash(Node::Device(D3));
        story.wait(60_000);
        story.restart(Node::Device(D3));
        let violation = single(presence(&story), Invariant::P2OfflineDetectedInTime);
        assert!(violation.witness.contains(&crash), "{violation:?}");
        assert!(violation.explanation.contains("still showed u2 online"));
    }

    #[test]
    fn p2_the_bound_comes_from_the_protocol_settings() {
        let mut story = everyone_online();
        story.set_protocol(ProtocolConfig {
            session_timeout_ms: 60_000,
            server_silence_timeout_ms: 60_000,
            ..ProtocolConfig::default()
        });
        story.crash(Node::Device(D3));
        story.wait(45_000);
        changed(&mut story, U2, false, &[D1, D2]);
        shown(&mut story, D1, U2, false);
        shown(&mut story, D2, U2, false);
        story.wait(30_000);
        story.restart(Node::Device(D3));
        // Detected after 45 s: late for the default 30 s timeout, in time for 60 s.
        let violations = presence(&story);
        assert!(violations.is_empty(), "{violations:?}");
    }

    /// u2's only phone dies; the server notices and pushes the change to d1 only, so d2 keeps
    /// showing u2 online.
    fn contact_left_showing_a_dead_phone(mut story: Story) -> Story {
        story.crash(Node::Device(D3));
        story.wait(30_000);
        changed(&mut story, U2, false, &[D1]);
        shown(&mut story, D1, U2, false);
        story.wait(30_000);
        story.restart(Node::Device(D3));
        story
    }

    #[test]
    fn p2_a_contact_left_showing_a_dead_phone_online_fires() {
        let story = contact_left_showing_a_dead_phone(everyone_online());
        let violation = single(presence(&story), Invariant::P2OfflineDetectedInTime);
        assert!(
            violation.explanation.starts_with("device-2"),
            "{violation:?}"
        );
    }

    #[test]
    fn p2_an_observer_behind_a_crashed_gateway_is_not_judged_until_it_can_fail_over() {
        // The story above, in a cluster whose gateway 0 is down when u2's change is pushed:
        // d2 may sit behind it and hear nothing until it fails over.
        let gateway_down = |at_ms: u64| {
            let mut story = everyone_online();
            story.set_faults(crate::faults::FaultProfile {
                gateway_crashes: vec![crate::faults::GatewayCrashFault {
                    gateway: 0,
                    at_ms,
                    downtime_ms: 8_000,
                }],
                ..Default::default()
            });
            contact_left_showing_a_dead_phone(story)
        };
        assert_eq!(presence(&gateway_down(25_000)), vec![]);
        // A gateway crash only after the bound leaves the observer judged.
        let after = gateway_down(200_000);
        let violation = single(presence(&after), Invariant::P2OfflineDetectedInTime);
        assert!(
            violation.explanation.starts_with("device-2"),
            "{violation:?}"
        );
    }

    fn logged_out(story: &mut Story, device: DeviceId) -> usize {
        let reason = SessionEnd::Logout;
        let lost = story.device(device, Event::SessionLost { reason });
        let session = SessionId(u64::from(device.0));
        story.server(Event::SessionClosed {
            session,
            device,
            reason,
        });
        lost
    }

    #[test]
    fn p2_a_user_shown_offline_when_its_devices_log_out_passes() {
        let mut story = everyone_online();
        logged_out(&mut story, D1);
        logged_out(&mut story, D2);
        changed(&mut story, U1, false, &[D3]);
        shown(&mut story, D3, U1, false);
        story.wait(60_000);
        opened(&mut story, U1, D1);
        changed(&mut story, U1, true, &[D3]);
        shown(&mut story, D3, U1, true);
        story.finish();
        assert_eq!(presence(&story), vec![]);
    }

    #[test]
    fn p2_a_user_left_online_after_every_device_logged_out_fires() {
        // d1 and d2 log out cleanly; the server keeps u1 online for 60 s until d1 logs in again.
        let mut story = everyone_online();
        logged_out(&mut story, D1);
        let last = logged_out(&mut story, D2);
        story.wait(60_000);
        opened(&mut story, U1, D1);
        story.finish();
        let violation = single(presence(&story), Invariant::P2OfflineDetectedInTime);
        assert!(violation.witness.contains(&last), "{violation:?}");
        let bound = ProtocolConfig::default().offline_detection_ms() + LATENCY_ALLOWANCE_MS;
        assert!(
            violation.explanation.contains(&format!(
                "still showed u1 online at {:.3}s, {bound} ms later; it must show offline at \
                 most {bound} ms after",
                (story.history().records[last].t_ms + bound) as f64 / 1000.0
            )),
            "{violation:?}"
        );
    }

    #[test]
    fn p2_one_device_logged_out_while_another_stays_online_passes() {
        let mut story = everyone_online();
        logged_out(&mut story, D1);
        story.wait(60_000);
        story.finish();
        assert_eq!(presence(&story), vec![]);
    }

    #[test]
    fn p1_a_stale_status_after_the_quiet_period_fires() {
        let mut story = everyone_online();
        let stale = shown(&mut story, D2, U2, false);
        story.finish();
        let violation = single(presence(&story), Invariant::P1PresenceConverges);
        assert!(violation.witness.contains(&stale), "{violation:?}");
        assert!(violation.explanation.contains("device-2 shows u2 offline"));
    }

    #[test]
    fn p1_a_server_status_that_disagrees_with_its_sessions_fires() {
        let mut story = everyone_online();
        changed(&mut story, U1, false, &[D3]);
        shown(&mut story, D3, U1, false);
        story.finish();
        let violation = single(presence(&story), Invariant::P1PresenceConverges);
        assert!(violation.explanation.contains("server shows u1 offline"));
    }
}
