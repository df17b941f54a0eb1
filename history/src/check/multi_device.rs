//! Multi-device invariants (DESIGN.md §6):
//! - M1 devices-converge (liveness): after the quiet period all devices of a user show the same
//!   entries of each conversation, in the same order, equal to the server's final timeline (over
//!   the user's latest membership period) — also a device installed mid-run (roaming).
//! - M2 read-state-converges (liveness): after the quiet period every device shows the server's
//!   read watermark of its own user, and in 1:1 of the peer.
//! - M3 cursor-monotonic: a device's sync cursor in a conversation never moves back, not even
//!   across a restart, because the cursor lives in the device's local database and a restart
//!   keeps it. A cursor that went back makes the device pull and show again what it showed.
//! - M4 session-distinct: every session the server opens has an id no earlier session had (across
//!   restarts and take-overs), and a device logs in only to a session the server opened for that
//!   device. A session id is how a login, its `session_closed` and the checkers that judge who was
//!   online (T1, P2) tie a device to its session; one id for two sessions lets a late packet of the
//!   old session pass for the new one, and a login answered with another device's session is a
//!   crossed reply. Judged where the history records the server's `session_opened`.

use super::index::{device_name, Findings, MessageKey};
use super::{HistoryIndex, Invariant, Violation};
use crate::{History, Node};
use imsim_model::{ConvId, DeviceId, Event, Seq, SessionId, UserId};
use std::collections::BTreeMap;

pub(super) fn check(history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    cursor_monotonic(history, &mut findings);
    sessions_distinct(history, &mut findings);
    if index.run_ended().is_some() {
        devices_converge(index, &mut findings);
        read_state_converges(history, index, &mut findings);
    }
    findings.into_violations()
}

/// M1: per user with several devices and per conversation, each device's last display of each
/// seq of the user's latest period equals the final timeline's entry there.
fn devices_converge(index: &HistoryIndex, findings: &mut Findings) {
    let convs: Vec<ConvId> = index.conversations().collect();
    let users: Vec<UserId> = index.users().collect();
    for user in users {
        let devices = index.devices_of(user);
        if devices.len() < 2 {
            continue;
        }
        for conv in &convs {
            let Some(period) = index.periods(*conv, user).latest().copied() else {
                continue;
            };
            let Some(timeline) = index.final_timeline(*conv) else {
                continue;
            };
            let expected: Vec<(Seq, MessageKey)> = timeline
                .entries()
                .filter(|(seq, _)| period.contains(*seq))
                .collect();
            for device in devices {
                let mut shown: BTreeMap<Seq, (MessageKey, usize)> = BTreeMap::new();
                for display in index.displays_of(*conv, *device) {
                    if period.contains(display.seq) {
                        shown.insert(display.seq, (display.message, display.record));
                    }
                }
                let differs = expected
                    .iter()
                    .find(|(seq, key)| shown.get(seq).map(|(k, _)| k) != Some(key));
                if let Some((seq, _)) = differs {
                    let who = device_name(*device);
                    let witness = shown.get(seq).map_or(timeline.record, |(_, at)| *at);
                    findings.report(Invariant::M1DevicesConverge, || {
                        let text = format!(
                            "After the quiet period {who} ({user}) does not show {conv} {seq} \
                             as the server's timeline has it, so {user}'s devices disagree."
                        );
                        (text, vec![witness, timeline.record])
                    });
                }
            }
        }
    }
}

/// M2: the last watermark each device shows equals the server's, for its own user and, in 1:1,
/// for the peer.
fn read_state_converges(history: &History, index: &HistoryIndex, findings: &mut Findings) {
    let mut server: BTreeMap<(ConvId, UserId), (Seq, usize)> = BTreeMap::new();
    let mut shown: BTreeMap<(DeviceId, ConvId, UserId), Seq> = BTreeMap::new();
    for (record, line, event) in history.protocol_events() {
        match (line.node, event) {
            (
                Node::Server,
                Event::ReadAdvanced {
                    conv, user, up_to, ..
                },
            ) => {
                let entry = server.entry((*conv, *user)).or_insert((*up_to, record));
                if *up_to >= entry.0 {
                    *entry = (*up_to, record);
                }
            }
            (Node::Device(device), Event::ReadSeen { conv, user, up_to }) => {
                shown.insert((device, *conv, *user), *up_to);
            }
            _ => {}
        }
    }
    for ((conv, user), (up_to, record)) in server {
        let mut watchers = vec![user];
        if !index.is_group(conv) {
            watchers.extend(
                index
                    .users()
                    .filter(|u| *u != user && !index.periods(conv, *u).all().is_empty()),
            );
        }
        for watcher in watchers {
            for device in index.devices_of(watcher) {
                let seen = shown
                    .get(&(*device, conv, user))
                    .copied()
                    .unwrap_or_default();
                if seen != up_to {
                    let who = device_name(*device);
                    findings.report(Invariant::M2ReadStateConverges, || {
                        let text = format!(
                            "After the quiet period {who} shows {user}'s {conv} read watermark \
                             at {seen}, but the server has {up_to}."
                        );
                        (text, vec![record])
                    });
                }
            }
        }
    }
}

/// M3: each `CursorAdvanced` is above the previous one of its device and conversation: the
/// record says the cursor moved, so one at the same seq is a cursor that did not (a duplicate
/// counted as progress: its ack is then batched instead of sent at once, and the server retries
/// what the device holds). The comparison is with the previous cursor, not the highest: a
/// cursor reset once is one report, and the climb back up after it is not reported again.
fn cursor_monotonic(history: &History, findings: &mut Findings) {
    let mut previous: BTreeMap<(ConvId, DeviceId), (Seq, usize)> = BTreeMap::new();
    for (record, line, event) in history.protocol_events() {
        let (Node::Device(device), Event::CursorAdvanced { conv, cursor }) = (line.node, event)
        else {
            continue;
        };
        let Some((before, before_record)) = previous.insert((*conv, device), (*cursor, record))
        else {
            continue;
        };
        if *cursor <= before {
            findings.report(Invariant::M3CursorMonotonic, || {
                let moved = if *cursor < before {
                    format!("went back from {before} to {cursor}")
                } else {
                    format!("was recorded as advanced to {cursor} again, where it already was")
                };
                let text = format!("{}'s {conv} cursor {moved}.", device_name(device));
                (text, vec![before_record, record])
            });
        }
    }
}

/// M4: each `SessionOpened` names an id not opened before; each device's `LoggedIn` names a
/// session opened for that device. Which record comes first is not judged: in a live run the
/// server and the device stamp their records with their own clocks. Not judged without server
/// records of sessions.
fn sessions_distinct(history: &History, findings: &mut Findings) {
    // Each id with the devices it was opened for, and where (once each, when the id is reused).
    let mut opened: BTreeMap<SessionId, Vec<(DeviceId, usize)>> = BTreeMap::new();
    for (record, line, event) in history.protocol_events() {
        let (
            Node::Server,
            Event::SessionOpened {
                session, device, ..
            },
        ) = (line.node, event)
        else {
            continue;
        };
        let owners = opened.entry(*session).or_default();
        if let Some((earlier, at)) = owners.first().copied() {
            findings.report(Invariant::M4SessionDistinct, || {
                let text = format!(
                    "the server opened {session} for {} and again for {}: a session id names one \
                     session.",
                    device_name(earlier),
                    device_name(*device)
                );
                (text, vec![at, record])
            });
        }
        owners.push((*device, record));
    }
    if opened.is_empty() {
        return;
    }
    for (record, line, event) in history.protocol_events() {
        let (Node::Device(device), Event::LoggedIn { session }) = (line.node, event) else {
            continue;
        };
        let owners = opened.get(session).map_or(&[][..], Vec::as_slice);
        if owners.iter().any(|(owner, _)| *owner == device) {
            continue;
        }
        findings.report(Invariant::M4SessionDistinct, || match owners.first() {
            Some((owner, at)) => {
                let text = format!(
                    "{} logged in to {session}, the session the server opened for {}.",
                    device_name(device),
                    device_name(*owner)
                );
                // In history order: a live run may record the login before the opening.
                (text, vec![(*at).min(record), (*at).max(record)])
            }
            None => {
                let text = format!(
                    "{} logged in to {session}, a session the server never opened.",
                    device_name(device)
                );
                (text, vec![record])
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn multi_device(story: &Story) -> Vec<Violation> {
        run(story, check)
    }

    #[test]
    fn cursors_that_survive_a_restart_pass() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.crash(Node::Device(D3));
        story.restart(Node::Device(D3));
        story.message(D1, C1, m(2)); // D3's cursor goes on from 1 to 2
        story.finish();
        assert_eq!(multi_device(&story), vec![]);
    }

    #[test]
    fn m3_a_cursor_recorded_as_advanced_without_moving_fires() {
        let mut story = Story::one_to_one();
        let before = story.cursor(D3, C1, 1);
        let again = story.cursor(D3, C1, 1);
        let violation = single(multi_device(&story), Invariant::M3CursorMonotonic);
        assert_eq!(violation.witness, vec![before, again]);
        assert_eq!(
            violation.explanation,
            "device-3's c1 cursor was recorded as advanced to #1 again, where it already was."
        );
    }

    #[test]
    fn m3_a_cursor_reset_by_a_restart_is_reported_once() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        let before = story.cursor(D3, C1, 2);
        story.crash(Node::Device(D3));
        story.restart(Node::Device(D3));
        // The device forgot its cursor and climbs back up from the start.
        let reset = story.cursor(D3, C1, 1);
        story.cursor(D3, C1, 2);
        let violation = single(multi_device(&story), Invariant::M3CursorMonotonic);
        assert_eq!(violation.witness, vec![before, reset]);
        assert_eq!(
            violation.explanation,
            "device-3's c1 cursor went back from #2 to #1."
        );
    }

    #[test]
    fn siblings_showing_the_same_timeline_and_read_state_pass() {
        let mut story = Story::one_to_one();
        story.message(D3, C1, m(1));
        story.server(Event::ReadAdvanced {
            conv: C1,
            user: U1,
            device: D1,
            up_to: Seq(1),
        });
        for device in [D1, D2, D3] {
            let (conv, user, up_to) = (C1, U1, Seq(1));
            story.device(device, Event::ReadSeen { conv, user, up_to });
        }
        story.finish();
        assert_eq!(multi_device(&story), vec![]);
    }

    #[test]
    fn m1_a_sibling_missing_a_message_fires_after_the_quiet_period() {
        let mut story = Story::one_to_one();
        story.send(D3, C1, m(1));
        story.commit(C1, D3, m(1));
        story.deliver_to(C1, 1, &[D1, D3]);
        story.finish();
        let violation = single(multi_device(&story), Invariant::M1DevicesConverge);
        assert!(
            violation.explanation.contains("device-2 (u1)"),
            "{violation:?}"
        );
    }

    #[test]
    fn m2_a_device_left_with_an_old_watermark_fires_after_the_quiet_period() {
        let mut story = Story::one_to_one();
        story.message(D3, C1, m(1));
        story.message(D3, C1, m(2));
        let read = story.server(Event::ReadAdvanced {
            conv: C1,
            user: U1,
            device: D1,
            up_to: Seq(2),
        });
        for (device, up_to) in [(D1, 2), (D2, 1), (D3, 2)] {
            let (conv, user, up_to) = (C1, U1, Seq(up_to));
            story.device(device, Event::ReadSeen { conv, user, up_to });
        }
        story.finish();
        let violation = single(multi_device(&story), Invariant::M2ReadStateConverges);
        assert_eq!(violation.witness, vec![read]);
        assert!(
            violation
                .explanation
                .contains("device-2 shows u1's c1 read watermark at #1"),
            "{violation:?}"
        );
    }

    /// The server opens `session` for `device` of `user` (the record returned); the device logs
    /// in to `logged_in`.
    fn login(
        story: &mut Story,
        user: UserId,
        device: DeviceId,
        session: u64,
        logged_in: u64,
    ) -> usize {
        let session = SessionId(session);
        let opened = story.server(Event::SessionOpened {
            session,
            user,
            device,
        });
        let session = SessionId(logged_in);
        story.device(device, Event::LoggedIn { session });
        opened
    }

    #[test]
    fn each_login_to_a_fresh_session_of_its_own_passes_across_a_restart() {
        let mut story = Story::one_to_one();
        login(&mut story, U1, D1, 1, 1);
        login(&mut story, U1, D2, 2, 2);
        story.crash(Node::Server);
        story.restart(Node::Server);
        login(&mut story, U1, D1, 1 << 40 | 1, 1 << 40 | 1);
        // A history without the server's records (a black-box system) is not judged.
        let mut blind = Story::one_to_one();
        let session = SessionId(7);
        blind.device(D1, Event::LoggedIn { session });
        for story in [&story, &blind] {
            assert_eq!(multi_device(story), vec![]);
        }
    }

    #[test]
    fn m4_a_session_id_given_out_twice_fires() {
        let mut story = Story::one_to_one();
        let first = login(&mut story, U1, D1, 1, 1);
        story.crash(Node::Server);
        story.restart(Node::Server);
        // The restarted server counts its sessions from 1 again.
        let again = login(&mut story, U2, D3, 1, 1);
        let violation = single(multi_device(&story), Invariant::M4SessionDistinct);
        assert_eq!(violation.witness, vec![first, again]);
        assert_eq!(
            violation.explanation,
            "the server opened s1 for device-1 and again for device-3: a session id names one \
             session."
        );
    }

    #[test]
    fn m4_a_login_to_another_devices_session_or_to_none_fires() {
        let mut story = Story::one_to_one();
        login(&mut story, U1, D1, 1, 1);
        login(&mut story, U2, D3, 2, 1);
        let violation = single(multi_device(&story), Invariant::M4SessionDistinct);
        assert_eq!(
            violation.explanation,
            "device-3 logged in to s1, the session the server opened for device-1."
        );
        let mut story = Story::one_to_one();
        login(&mut story, U1, D1, 1, 9);
        let violation = single(multi_device(&story), Invariant::M4SessionDistinct);
        assert_eq!(
            violation.explanation,
            "device-1 logged in to s9, a session the server never opened."
        );
    }

    #[test]
    fn m3_cursors_are_per_device_and_conversation() {
        let mut story = Story::group();
        story.cursor(D1, C1, 5);
        story.cursor(D2, C1, 1);
        story.cursor(D1, C2, 1);
        assert_eq!(multi_device(&story), vec![]);
    }
}
