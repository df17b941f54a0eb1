//! Timeliness: what the primary path must do in time, not only eventually. The repair paths
//! (push retries, gap pulls, the heartbeat's sync key, re-syncs at login) deliver everything
//! in the end, so a bug that only breaks the primary path — a push that never goes out, a notice
//! sent to the wrong audience — passes every eventual invariant while making delivery seconds
//! late and traffic heavier. T1 bounds the primary path where nothing excuses a repair:
//!
//! - **T1 delivered-in-time**: a committed message is displayed on each member device that was
//!   online with a healthy link from the commit until the bound, within
//!   [`delivery_bound_ms`] of the commit. "Online with a healthy link" is read from the
//!   history: the device was logged in and held a session at the server the whole time, its
//!   link had no loss and no partition, neither it nor the server crashed, and every earlier
//!   entry of the conversation that it must show was already shown or judged the same way (a
//!   hole left by an earlier fault legitimately holds the message back). An entry the device
//!   dropped because its hold-back buffer was full (`hold_back_overflow`, bounded by
//!   `hold_back_max`) is left to a pull by design and is not judged either. Membership changes
//!   are timeline entries, so T1 bounds how fast a change reaches the members too. The path
//!   counts as well as the time: where the profile draws no delay or hold (so a healthy link
//!   reorders pushes by milliseconds, far below the gap timeout) and the conversation is pushed
//!   to (not notify-then-pull), a display by a gap pull means the push never came, and fires T1
//!   even within the bound.
//! - **T3 read-shown-in-time**: a durable read (`read_advanced`) is shown (`read_seen`, at that
//!   watermark or a later one) within [`read_bound_ms`] on every device that must show it and
//!   was online with a healthy link over that time: the reader's other devices and, in 1:1, the
//!   peer's devices (the "read" tick). The receipt key in the heartbeat repairs a lost update
//!   seconds later; on a healthy link it should not be needed. A read the server already holds
//!   (`read_ignored` at or below the durable watermark: the device resent it, its update lost
//!   to an earlier fault) is answered with the watermark, so the device that sent it shows its
//!   read within the same bound.
//! - **T4 read-count-shown-in-time**: when a durable read makes a member count as a reader of a
//!   group message (its sender excluded, a member at its seq, not a membership entry: R4's
//!   count), every device of the message's sender that was online with a healthy link shows a
//!   count at least that high within [`read_count_bound_ms`]: the read's bound, plus one batch
//!   window and a tick where the group can be above `notify_threshold_members` (large groups
//!   merge a window's reads). R4 judges the exact count at the end of the run; this is when.
//! - **T5 push-kept-to-schedule**: the server gives up a push of a message to a session
//!   (`push_abandoned`) no sooner than its whole retry schedule after the message's commit
//!   ([`ProtocolConfig::push_schedule_ms`]: `push_attempts_max` tries, backing off from
//!   `push_retry_initial_ms` to `push_retry_max_ms`). Giving up early is repaired by the
//!   heartbeat's sync key seconds later, so no eventual invariant sees it, and T1 does not judge
//!   the lossy links where retries matter; this is the bound on the retry path itself.

use super::index::{device_name, Findings};
use super::{HistoryIndex, Invariant, Violation};
use crate::{Entry, HarnessEvent, History, Node, RunStart};
use imsim_model::{
    ConvId, DeviceId, Event, ProtocolConfig, PullReason, Seq, SessionId, UserId, Via,
};
use std::collections::{BTreeMap, BTreeSet};

/// A datagram's latency in the simulator is 1–10 ms; the driver adds no more. Allowed per hop
/// on top of the fault profile's own delays, with room for the drivers of real networks.
const HOP_ALLOWANCE_MS: u64 = 50;

pub(super) fn check(history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    if let Some(start) = history.run_start() {
        let links = Links::of(history, start);
        delivered_in_time(history, index, start, &links, &mut findings);
        read_shown_in_time(history, index, start, &links, &mut findings);
        read_count_shown_in_time(history, index, start, &links, &mut findings);
        push_kept_to_schedule(history, &start.protocol, &mut findings);
    }
    findings.into_violations()
}

/// The longest the primary path may take from a commit to the display on a healthy device:
/// the push (or, above `notify_threshold_members`, the merged notice, the pull and its answer,
/// and the tick that sends the notice), one server tick, and one gap timeout for two pushes that overtook each other. A push lost
/// and retried (`push_retry_initial_ms`) or a heartbeat repair (`heartbeat_interval_ms`) is
/// later than this with the default settings: on a healthy link neither should be needed.
pub fn delivery_bound_ms(protocol: &ProtocolConfig, large_group: bool, in_flight_ms: u64) -> u64 {
    // Notify-then-pull keeps one notice outstanding per device and merges later news into it
    // until the device pulls. A notice that crosses a pull in flight is not left to the
    // notice's retry: the device pulls again when the answer comes without the news. Until
    // 4 December 2026 the bound allowed that retry (`push_retry_initial_ms`), and a client
    // that waited for it (mutant `client/receiving.rs:277`) passed every invariant.
    let (hops, merge_ms) = if large_group {
        (3, protocol.notify_merge_ms + protocol.server_tick_ms)
    } else {
        (1, 0)
    };
    merge_ms
        + protocol.server_tick_ms
        + protocol.gap_timeout_ms
        + hops * (HOP_ALLOWANCE_MS + in_flight_ms)
}

/// The longest a durable read may take to show on a healthy device: the update goes out when
/// the read's sync completes, so one hop (and its share of the profile's delays), with a tick
/// and a second hop's allowance for the driver.
pub fn read_bound_ms(protocol: &ProtocolConfig, in_flight_ms: u64) -> u64 {
    protocol.server_tick_ms + 2 * (HOP_ALLOWANCE_MS + in_flight_ms)
}

/// The longest a group message's read count may take to reach its sender's healthy devices:
/// the read's own bound, plus, where the group can be large (counts batched per window), one
/// `receipt_batch_ms` window and the tick that sends it.
pub fn read_count_bound_ms(protocol: &ProtocolConfig, large_group: bool, in_flight_ms: u64) -> u64 {
    let batch_ms = if large_group {
        protocol.receipt_batch_ms + protocol.server_tick_ms
    } else {
        0
    };
    read_bound_ms(protocol, in_flight_ms) + batch_ms
}

/// T5: each `push_abandoned` of a message comes at least the push schedule after the
/// message's first commit (a push starts at the commit, or later for a session that opened
/// after it; a notice, `seq` 0, starts at a merge window the history does not show).
fn push_kept_to_schedule(history: &History, protocol: &ProtocolConfig, findings: &mut Findings) {
    let schedule_ms = protocol.push_schedule_ms();
    let mut committed: BTreeMap<(ConvId, Seq), (u64, usize)> = BTreeMap::new();
    for (index, record, event) in history.protocol_events() {
        match event {
            Event::Committed { conv, seq, .. } => {
                committed
                    .entry((*conv, *seq))
                    .or_insert((record.t_ms, index));
            }
            Event::PushAbandoned { device, conv, seq } if *seq != Seq::ZERO => {
                let Some(&(at_ms, commit)) = committed.get(&(*conv, *seq)) else {
                    continue;
                };
                let kept_ms = record.t_ms.saturating_sub(at_ms);
                if kept_ms < schedule_ms {
                    findings.report(Invariant::T5PushKeptToSchedule, || {
                        let text = format!(
                            "The server gave up pushing {conv} {seq} to {} {kept_ms} ms after \
                             the commit; its {} tries take at least {schedule_ms} ms \
                             (push_retry_initial_ms {}, push_retry_max_ms {}).",
                            device_name(*device),
                            protocol.push_attempts_max,
                            protocol.push_retry_initial_ms,
                            protocol.push_retry_max_ms
                        );
                        (text, vec![commit, index])
                    });
                }
            }
            _ => {}
        }
    }
}

/// What both bounds read of the links: the profile's extra delay a packet may take (drawn delay
/// plus hold), the lossy devices, and when each device was online with a healthy link.
struct Links {
    in_flight_ms: u64,
    lossy: BTreeSet<DeviceId>,
    healthy: Healthy,
}

impl Links {
    fn of(history: &History, start: &RunStart) -> Links {
        let faults = &start.faults;
        Links {
            in_flight_ms: faults.delay.as_ref().map_or(0, |d| d.delay_ms_max)
                + faults.hold.as_ref().map_or(0, |h| h.delay_ms_max),
            lossy: faults
                .loss
                .iter()
                .flat_map(|loss| loss.devices.iter().copied())
                .collect(),
            healthy: healthy_intervals(history),
        }
    }
}

fn read_shown_in_time(
    history: &History,
    index: &HistoryIndex,
    start: &RunStart,
    links: &Links,
    findings: &mut Findings,
) {
    let Links {
        in_flight_ms,
        lossy,
        healthy,
    } = links;
    let bound_ms = read_bound_ms(&start.protocol, *in_flight_ms);
    let end_ms = history.records.last().map_or(0, |r| r.t_ms);
    let devices_of: BTreeMap<UserId, &[DeviceId]> = start
        .topology
        .users
        .iter()
        .map(|user| (user.user, user.devices.as_slice()))
        .collect();
    // Per (device, conv, user): each watermark the device showed, with its time and record.
    let mut shown: BTreeMap<(DeviceId, ConvId, UserId), Vec<Shown>> = BTreeMap::new();
    for (i, record, event) in history.protocol_events() {
        if let (Node::Device(device), Event::ReadSeen { conv, user, up_to }) = (record.node, event)
        {
            shown
                .entry((device, *conv, *user))
                .or_default()
                .push((record.t_ms, *up_to, i));
        }
    }
    let owed = OwedReads {
        shown: &shown,
        lossy,
        healthy,
        bound_ms,
        end_ms,
    };
    for (i, record, event) in history.protocol_events() {
        if let (
            Node::Server,
            Event::ReadIgnored {
                conv,
                user,
                device,
                up_to,
                watermark,
            },
        ) = (record.node, event)
        {
            // A resent read the server already holds durably: it answers with the watermark,
            // so the device that sent it shows its read within the same bound.
            let deadline_ms = record.t_ms + bound_ms;
            if watermark < up_to {
                continue;
            }
            let Some(later) = owed.missed(*device, *conv, *user, *up_to, record.t_ms) else {
                continue;
            };
            findings.report(Invariant::T3ReadShownInTime, || {
                let text = format!(
                    "{} resent its read of {conv} up to #{} at {:.3}s, which the server already \
                     held (watermark #{}), and was online with a healthy link until {:.3}s, but \
                     showed it {}: the server answers a resent read with the watermark, within \
                     {bound_ms} ms.",
                    device_name(*device),
                    up_to.0,
                    record.t_ms as f64 / 1000.0,
                    watermark.0,
                    deadline_ms as f64 / 1000.0,
                    shown_when(later.map(|(at, _, _)| *at)),
                );
                let mut witness = vec![i];
                witness.extend(later.map(|(_, _, record)| *record));
                (text, witness)
            });
            continue;
        }
        let (
            Node::Server,
            Event::ReadAdvanced {
                conv,
                user,
                device: reader,
                up_to,
            },
        ) = (record.node, event)
        else {
            continue;
        };
        let deadline_ms = record.t_ms + bound_ms;
        let watchers: Vec<DeviceId> = if index.is_group(*conv) {
            devices_of.get(user).copied().unwrap_or_default().to_vec()
        } else {
            index.member_devices(*conv).to_vec()
        };
        for device in watchers {
            if device == *reader {
                continue;
            }
            let Some(later) = owed.missed(device, *conv, *user, *up_to, record.t_ms) else {
                continue;
            };
            findings.report(Invariant::T3ReadShownInTime, || {
                let when = shown_when(later.map(|(at, _, _)| *at));
                let text = format!(
                    "{} was online with a healthy link from {user}'s read of {conv} up to #{} \
                     at {:.3}s until {:.3}s, but showed it {when}: a read update must arrive \
                     within {bound_ms} ms (a repair path showed it, or none did).",
                    device_name(device),
                    up_to.0,
                    record.t_ms as f64 / 1000.0,
                    deadline_ms as f64 / 1000.0,
                );
                let mut witness = vec![i];
                witness.extend(later.map(|(_, _, record)| *record));
                (text, witness)
            });
        }
    }
}

/// What T3 owes a device: a watermark shown within the read bound.
struct OwedReads<'a> {
    shown: &'a BTreeMap<(DeviceId, ConvId, UserId), Vec<Shown>>,
    lossy: &'a BTreeSet<DeviceId>,
    healthy: &'a Healthy,
    bound_ms: u64,
    end_ms: u64,
}

impl<'a> OwedReads<'a> {
    /// Whether `device`, owed `user`'s watermark in `conv` up to `up_to` from `from_ms`, missed
    /// it: judged (online with a healthy link, not lossy, the bound inside the run) and not
    /// shown by the bound. Then `Some` of the later showing, if any.
    fn missed(
        &self,
        device: DeviceId,
        conv: ConvId,
        user: UserId,
        up_to: Seq,
        from_ms: u64,
    ) -> Option<Option<&'a Shown>> {
        let deadline_ms = from_ms + self.bound_ms;
        let intervals = self.healthy.get(&device).map_or(&[][..], Vec::as_slice);
        if deadline_ms > self.end_ms
            || self.lossy.contains(&device)
            || !healthy_between(intervals, from_ms, deadline_ms)
        {
            return None;
        }
        let seen = self
            .shown
            .get(&(device, conv, user))
            .map_or(&[][..], Vec::as_slice);
        if seen
            .iter()
            .any(|(at, seq, _)| *at <= deadline_ms && *seq >= up_to)
        {
            return None;
        }
        Some(seen.iter().find(|(_, seq, _)| *seq >= up_to))
    }
}

/// "only at 1.234s" or "never".
fn shown_when(at_ms: Option<u64>) -> String {
    match at_ms {
        Some(at) => format!("only at {:.3}s", at as f64 / 1000.0),
        None => "never".to_string(),
    }
}

fn read_count_shown_in_time(
    history: &History,
    index: &HistoryIndex,
    start: &RunStart,
    links: &Links,
    findings: &mut Findings,
) {
    let end_ms = history.records.last().map_or(0, |r| r.t_ms);
    let protocol = &start.protocol;
    // Where a group may be above the notify threshold at some point (its founders plus every
    // add), counts may wait for a batch window: the larger bound, never a false alarm.
    let mut most_members: BTreeMap<ConvId, usize> = start
        .topology
        .conversations
        .iter()
        .filter(|c| c.group)
        .map(|c| (c.conv, c.members.len()))
        .collect();
    // Per (device, conv, seq): each count the device showed, with its time and record.
    let mut shown: BTreeMap<(DeviceId, ConvId, Seq), Vec<CountShown>> = BTreeMap::new();
    for (i, record, event) in history.protocol_events() {
        match (record.node, event) {
            (Node::Device(device), Event::ReadCountSeen { conv, seq, readers }) => shown
                .entry((device, *conv, *seq))
                .or_default()
                .push((record.t_ms, *readers, i)),
            (
                Node::Server,
                Event::Committed {
                    conv,
                    change: Some(imsim_model::MembershipChange::Add(_)),
                    ..
                },
            ) => *most_members.entry(*conv).or_default() += 1,
            _ => {}
        }
    }
    // Per group message: its sender, if it counts readers (not a membership entry).
    let mut counted: BTreeMap<(ConvId, Seq), UserId> = BTreeMap::new();
    let mut watermark: BTreeMap<(ConvId, UserId), Seq> = BTreeMap::new();
    let mut readers: BTreeMap<(ConvId, Seq), BTreeSet<UserId>> = BTreeMap::new();
    for (i, record, event) in history.protocol_events() {
        match (record.node, event) {
            (
                Node::Server,
                Event::Committed {
                    conv,
                    seq,
                    sender_user,
                    change: None,
                    ..
                },
            ) if index.is_group(*conv) => {
                counted.insert((*conv, *seq), *sender_user);
            }
            (
                Node::Server,
                Event::ReadAdvanced {
                    conv, user, up_to, ..
                },
            ) if index.is_group(*conv) => {
                let from = watermark.insert((*conv, *user), *up_to).unwrap_or_default();
                let large = most_members.get(conv).copied().unwrap_or(0)
                    > protocol.notify_threshold_members as usize;
                let bound_ms = read_count_bound_ms(protocol, large, links.in_flight_ms);
                let deadline_ms = record.t_ms + bound_ms;
                if deadline_ms > end_ms {
                    continue;
                }
                for seq in from.0 + 1..=up_to.0 {
                    let seq = Seq(seq);
                    let Some(sender) = counted.get(&(*conv, seq)) else {
                        continue;
                    };
                    if sender == user || !index.periods(*conv, *user).visible(seq) {
                        continue;
                    }
                    let count = readers.entry((*conv, seq)).or_default();
                    count.insert(*user);
                    let need = count.len() as u32;
                    for device in index.devices_of(*sender) {
                        let intervals = links.healthy.get(device).map_or(&[][..], Vec::as_slice);
                        if links.lossy.contains(device)
                            || !healthy_between(intervals, record.t_ms, deadline_ms)
                        {
                            continue;
                        }
                        let seen = shown
                            .get(&(*device, *conv, seq))
                            .map_or(&[][..], Vec::as_slice);
                        if seen
                            .iter()
                            .any(|(at, readers, _)| *at <= deadline_ms && *readers >= need)
                        {
                            continue;
                        }
                        findings.report(Invariant::T4ReadCountShownInTime, || {
                            let later = seen.iter().find(|(_, readers, _)| *readers >= need);
                            let when = match later {
                                Some((at, _, _)) => format!("only at {:.3}s", *at as f64 / 1000.0),
                                None => "never".to_string(),
                            };
                            let text = format!(
                                "{} was online with a healthy link from {user}'s read of {conv} \
                                 up to #{} at {:.3}s until {:.3}s, but showed {need} reader(s) of \
                                 its user's message #{} {when}: a read count must arrive within \
                                 {bound_ms} ms (a repair path showed it, or none did).",
                                device_name(*device),
                                up_to.0,
                                record.t_ms as f64 / 1000.0,
                                deadline_ms as f64 / 1000.0,
                                seq.0,
                            );
                            let mut witness = vec![i];
                            witness.extend(later.map(|(_, _, record)| *record));
                            (text, witness)
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// A read count a device showed: when, how many readers, and its record.
type CountShown = (u64, u32, usize);

/// A watermark a device showed: when, up to which seq, and its record.
type Shown = (u64, Seq, usize);

/// Whether one of `intervals` (sorted, `[from, to)`) covers `from_ms ..= to_ms`.
fn healthy_between(intervals: &[(u64, u64)], from_ms: u64, to_ms: u64) -> bool {
    let at = intervals.partition_point(|(start, _)| *start <= from_ms);
    at > 0 && {
        let (start, end) = intervals[at - 1];
        start <= from_ms && to_ms < end
    }
}

/// The intervals `[from, to)` in which a device was online with a healthy link.
type Healthy = BTreeMap<DeviceId, Vec<(u64, u64)>>;

fn delivered_in_time(
    history: &History,
    index: &HistoryIndex,
    start: &RunStart,
    links: &Links,
    findings: &mut Findings,
) {
    let Links {
        in_flight_ms,
        lossy,
        healthy,
    } = links;
    let in_flight_ms = *in_flight_ms;
    let mut overflows: BTreeMap<(DeviceId, ConvId), BTreeSet<u64>> = BTreeMap::new();
    for (_, record, event) in history.protocol_events() {
        if let (Node::Device(device), Event::HoldBackOverflow { conv, seq }) = (record.node, event)
        {
            overflows.entry((device, *conv)).or_default().insert(seq.0);
        }
    }
    let no_overflow = BTreeSet::new();
    let end_ms = history.records.last().map_or(0, |r| r.t_ms);
    let large_group_members = start.protocol.notify_threshold_members as usize;
    for conv in index.conversations() {
        let members = index.member_devices(conv);
        let large = index.is_group(conv) && members.len() > large_group_members;
        let bound_ms = delivery_bound_ms(&start.protocol, large, in_flight_ms);
        for device in members {
            if lossy.contains(device) {
                continue;
            }
            let intervals = healthy.get(device).map_or(&[][..], Vec::as_slice);
            let shown: BTreeMap<u64, usize> = index
                .displays_of(conv, *device)
                .iter()
                .map(|shown| (shown.seq.0, shown.record))
                .collect();
            let overflowed = overflows.get(&(*device, conv)).unwrap_or(&no_overflow);
            let judge = Judge {
                history,
                conv,
                device: *device,
                intervals,
                shown: &shown,
                overflowed,
                bound_ms,
                end_ms,
                // Without drawn delays or holds a healthy link reorders pushes by a few ms,
                // far below the gap timeout: a gap pull means a push never came.
                gap_pull_is_repair: !large && in_flight_ms == 0,
            };
            judge.each_commit(index, findings);
        }
    }
}

struct Judge<'a> {
    history: &'a History,
    conv: ConvId,
    device: DeviceId,
    intervals: &'a [(u64, u64)],
    shown: &'a BTreeMap<u64, usize>,
    /// Seqs the device dropped from a full hold-back buffer.
    overflowed: &'a BTreeSet<u64>,
    bound_ms: u64,
    end_ms: u64,
    /// A display by a gap pull is a repair of the primary path, even within the bound.
    gap_pull_is_repair: bool,
}

impl Judge<'_> {
    /// Whether the display at `record` came by a gap pull.
    fn by_gap_pull(&self, record: usize) -> bool {
        matches!(
            &self.history.records[record].entry,
            Entry::Protocol(Event::Displayed {
                via: Some(Via::Pull(PullReason::Gap)),
                ..
            })
        )
    }

    fn each_commit(&self, index: &HistoryIndex, findings: &mut Findings) {
        let view = index.view(self.conv, self.device);
        // The latest display of an earlier entry that was not judged: until then a hole an
        // earlier fault left may hold later entries back.
        let mut unjudged_shown_by = 0u64;
        let mut seen = BTreeSet::new();
        for commit in index.commits_of(self.conv) {
            if !view.visible(commit.seq) || !seen.insert(commit.seq) {
                continue;
            }
            let committed_ms = self.history.records[commit.record].t_ms;
            let deadline_ms = committed_ms + self.bound_ms;
            // Re-added before the deadline: the device is owed only its new period (as D2
            // judges it) and may skip this entry for good, so it neither counts nor blocks.
            let rejoined_ms = view
                .next_after(commit.seq)
                .and_then(|period| period.joined_by)
                .map(|record| self.history.records[record].t_ms);
            if rejoined_ms.is_some_and(|at| at <= deadline_ms) {
                continue;
            }
            let display = self.shown.get(&commit.seq.0).copied();
            let display_ms = display.map(|record| self.history.records[record].t_ms);
            let judged = deadline_ms <= self.end_ms
                && unjudged_shown_by <= committed_ms
                && !self.overflowed.contains(&commit.seq.0)
                && self.healthy_between(committed_ms, deadline_ms);
            if !judged {
                unjudged_shown_by = unjudged_shown_by.max(display_ms.unwrap_or(u64::MAX));
                continue;
            }
            let repaired = self.gap_pull_is_repair && display.is_some_and(|r| self.by_gap_pull(r));
            if display_ms.is_some_and(|at| at <= deadline_ms) && !repaired {
                continue;
            }
            findings.report(Invariant::T1DeliveredInTime, || {
                let when = match display_ms {
                    Some(at) if repaired => format!(
                        "at {:.3}s by a gap pull (no drawn delay could hold its push back that \
                         long)",
                        at as f64 / 1000.0
                    ),
                    Some(at) => format!("only at {:.3}s", at as f64 / 1000.0),
                    None => "never".to_string(),
                };
                let text = format!(
                    "{} was online with a healthy link from the commit of {} #{} at {:.3}s \
                     until {:.3}s, but displayed it {when}: the primary path must deliver within \
                     {} ms (a repair path delivered it, or none did).",
                    device_name(self.device),
                    self.conv,
                    commit.seq.0,
                    committed_ms as f64 / 1000.0,
                    deadline_ms as f64 / 1000.0,
                    self.bound_ms
                );
                let mut witness = vec![commit.record];
                witness.extend(display);
                (text, witness)
            });
        }
    }

    fn healthy_between(&self, from_ms: u64, to_ms: u64) -> bool {
        healthy_between(self.intervals, from_ms, to_ms)
    }
}

/// Per device, when it was online with a healthy link: logged in on the device, a live session
/// at the server, not partitioned, neither it nor the server down, and
/// no gateway down or cut from the logic (cluster topology).
fn healthy_intervals(history: &History) -> Healthy {
    #[derive(Default)]
    struct State {
        logged_in: bool,
        sessions: BTreeSet<SessionId>,
        /// Partitions of this device in force (two may overlap: one each way).
        partitions: u32,
        crashed: bool,
        since: Option<u64>,
    }
    let mut states: BTreeMap<DeviceId, State> = BTreeMap::new();
    let mut server_down = false;
    // Cluster topology: gateways down or cut from the logic. Which devices sat behind one is
    // not in the history, so while any is, no device counts as healthy.
    let mut gateway_faults: u32 = 0;
    let mut intervals: Healthy = BTreeMap::new();
    let end_ms = history.records.last().map_or(0, |r| r.t_ms);
    for record in &history.records {
        let mut touched: Vec<DeviceId> = Vec::new();
        match (&record.node, &record.entry) {
            (Node::Device(device), Entry::Protocol(event)) => {
                let state = states.entry(*device).or_default();
                match event {
                    Event::LoggedIn { .. } => state.logged_in = true,
                    Event::SessionLost { .. } => state.logged_in = false,
                    _ => continue,
                }
                touched.push(*device);
            }
            (Node::Server, Entry::Protocol(event)) => match event {
                Event::SessionOpened {
                    session, device, ..
                } => {
                    states.entry(*device).or_default().sessions.insert(*session);
                    touched.push(*device);
                }
                Event::SessionClosed {
                    session, device, ..
                } => {
                    states.entry(*device).or_default().sessions.remove(session);
                    touched.push(*device);
                }
                _ => continue,
            },
            (_, Entry::Harness(event)) => match event {
                HarnessEvent::PartitionStarted { device, .. } => {
                    states.entry(*device).or_default().partitions += 1;
                    touched.push(*device);
                }
                HarnessEvent::PartitionHealed { device } => {
                    let state = states.entry(*device).or_default();
                    state.partitions = state.partitions.saturating_sub(1);
                    touched.push(*device);
                }
                HarnessEvent::NodeCrashed {
                    crashed: Node::Device(device),
                } => {
                    let state = states.entry(*device).or_default();
                    state.crashed = true;
                    state.logged_in = false;
                    touched.push(*device);
                }
                HarnessEvent::NodeRestarted {
                    restarted: Node::Device(device),
                } => {
                    states.entry(*device).or_default().crashed = false;
                    touched.push(*device);
                }
                HarnessEvent::NodeCrashed {
                    crashed: Node::Server,
                } => {
                    server_down = true;
                    for state in states.values_mut() {
                        state.sessions.clear();
                    }
                    touched.extend(states.keys().copied());
                }
                HarnessEvent::NodeRestarted {
                    restarted: Node::Server,
                } => {
                    server_down = false;
                    touched.extend(states.keys().copied());
                }
                // Sharded logic: the new owner of a shard starts with no sessions, so until a
                // device logs in again (a new session at the session shard) the shard cannot
                // push to it.
                HarnessEvent::ShardHandedOver { .. } => {
                    for state in states.values_mut() {
                        state.sessions.clear();
                    }
                    touched.extend(states.keys().copied());
                }
                HarnessEvent::GatewayCrashed { .. }
                | HarnessEvent::GatewayPartitionStarted { .. }
                | HarnessEvent::LogicCrashed { .. } => {
                    gateway_faults += 1;
                    touched.extend(states.keys().copied());
                }
                HarnessEvent::GatewayRestarted { .. }
                | HarnessEvent::GatewayPartitionHealed { .. }
                | HarnessEvent::LogicRestarted { .. } => {
                    gateway_faults = gateway_faults.saturating_sub(1);
                    touched.extend(states.keys().copied());
                }
                _ => continue,
            },
            _ => continue,
        }
        for device in touched {
            let state = states.entry(device).or_default();
            let healthy = state.logged_in
                && !state.sessions.is_empty()
                && state.partitions == 0
                && !state.crashed
                && !server_down
                && gateway_faults == 0;
            match (healthy, state.since) {
                (true, None) => state.since = Some(record.t_ms),
                (false, Some(since)) => {
                    state.since = None;
                    if record.t_ms > since {
                        intervals
                            .entry(device)
                            .or_default()
                            .push((since, record.t_ms));
                    }
                }
                _ => {}
            }
        }
    }
    for (device, state) in states {
        if let Some(since) = state.since {
            // Still healthy at the end: healthy past the last record.
            intervals
                .entry(device)
                .or_default()
                .push((since, end_ms.saturating_add(1)));
        }
    }
    intervals
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::Direction;
    use imsim_model::{ClientMsgId, UserId};

    fn timeliness(story: &Story) -> Vec<Violation> {
        check(story.history(), &HistoryIndex::new(story.history()))
    }

    /// Every device of the 1:1 story logs in and gets a session at the server.
    fn online() -> Story {
        let mut story = Story::one_to_one();
        for (session, (user, device)) in [(U1, D1), (U1, D2), (U2, D3)].into_iter().enumerate() {
            login(&mut story, user, device, session as u64 + 1);
        }
        story
    }

    fn login(story: &mut Story, user: UserId, device: DeviceId, session: u64) {
        let session = SessionId(session);
        story.server(Event::SessionOpened {
            session,
            user,
            device,
        });
        story.device(device, Event::LoggedIn { session });
    }

    /// Sent and committed, then displayed everywhere after `late_ms`.
    fn late_message(story: &mut Story, id: ClientMsgId, late_ms: u64) -> (usize, u64) {
        story.send(D1, C1, id);
        let commit = story.commit(C1, D1, id);
        let seq = story.head(C1);
        story.ack(D1, C1, id, seq);
        story.wait(late_ms);
        story.deliver(C1, seq);
        (commit, seq)
    }

    /// A message from D1 committed, then D3's push of it given up `after_ms` later.
    fn abandoned_after(after_ms: u64) -> (Story, usize, usize) {
        let mut story = online();
        story.send(D1, C1, m(1));
        let commit = story.commit(C1, D1, m(1));
        story.wait(after_ms - 10);
        let abandoned = story.server(Event::PushAbandoned {
            device: D3,
            conv: C1,
            seq: Seq(1),
        });
        story.deliver(C1, 1);
        story.finish();
        (story, commit, abandoned)
    }

    fn of(violations: Vec<Violation>, invariant: Invariant) -> Vec<Violation> {
        violations
            .into_iter()
            .filter(|violation| violation.invariant == invariant)
            .collect()
    }

    #[test]
    fn t5_a_push_given_up_before_its_schedule_fires() {
        // Found by cargo-mutants: `attempts += 1` as `-= 1` wraps the counter, and the server
        // gave up after two tries; the heartbeat repaired it, so nothing else fired.
        let schedule_ms = ProtocolConfig::default().push_schedule_ms();
        assert_eq!(schedule_ms, 31_000, "1 + 2 + 4 + 8 + 8 + 8 s");
        let (story, commit, abandoned) = abandoned_after(4_000);
        let violation = single(
            of(timeliness(&story), Invariant::T5PushKeptToSchedule),
            Invariant::T5PushKeptToSchedule,
        );
        assert_eq!(violation.witness, vec![commit, abandoned]);
        assert!(
            violation
                .explanation
                .contains("gave up pushing c1 #1 to device-3 4000 ms after the commit"),
            "{}",
            violation.explanation
        );
    }

    #[test]
    fn t5_a_push_given_up_after_its_schedule_passes() {
        let (story, _, _) = abandoned_after(31_000);
        assert_eq!(
            of(timeliness(&story), Invariant::T5PushKeptToSchedule),
            vec![]
        );
        // A notice (seq 0) starts at a merge window the history does not show: not judged.
        let mut story = online();
        story.message(D1, C1, m(1));
        story.server(Event::PushAbandoned {
            device: D3,
            conv: C1,
            seq: Seq::ZERO,
        });
        story.finish();
        assert_eq!(
            of(timeliness(&story), Invariant::T5PushKeptToSchedule),
            vec![]
        );
    }

    #[test]
    fn a_prompt_delivery_on_healthy_links_passes() {
        let mut story = online();
        story.message(D1, C1, m(1));
        story.message(D3, C1, m(1));
        story.finish();
        assert_eq!(timeliness(&story), vec![]);
        assert_eq!(crate::check::check_all(story.history()), vec![]);
    }

    #[test]
    fn t1_a_delivery_left_to_a_repair_path_fires() {
        let mut story = online();
        let (commit, seq) = late_message(&mut story, m(1), 15_000);
        story.finish();
        let violations = timeliness(&story);
        assert_eq!(violations.len(), 3, "every device waited: {violations:#?}");
        let violation = &violations[1];
        assert_eq!(violation.invariant, Invariant::T1DeliveredInTime);
        assert_eq!(violation.witness[0], commit);
        assert_eq!(violation.witness[1], story.shown_at(D2, C1, seq));
        assert!(
            violation
                .explanation
                .contains("device-2 was online with a healthy link"),
            "{}",
            violation.explanation
        );
    }

    #[test]
    fn t1_a_partitioned_or_lossy_device_is_not_judged() {
        let mut story = online();
        story.harness(HarnessEvent::PartitionStarted {
            device: D3,
            direction: Direction::FromServer,
        });
        late_message(&mut story, m(1), 15_000);
        story.harness(HarnessEvent::PartitionHealed { device: D3 });
        story.finish();
        let violations = timeliness(&story);
        let late: Vec<&str> = violations.iter().map(|v| &v.explanation[..8]).collect();
        assert_eq!(late, ["device-1", "device-2"], "{violations:#?}");
    }

    #[test]
    fn t1_two_overlapping_partitions_keep_the_link_unhealthy_until_both_heal() {
        let mut story = online();
        for direction in [Direction::FromServer, Direction::ToServer] {
            story.harness(HarnessEvent::PartitionStarted {
                device: D3,
                direction,
            });
        }
        story.harness(HarnessEvent::PartitionHealed { device: D3 });
        late_message(&mut story, m(1), 15_000);
        story.harness(HarnessEvent::PartitionHealed { device: D3 });
        story.finish();
        let violations = timeliness(&story);
        assert!(violations
            .iter()
            .all(|v| !v.explanation.starts_with("device-3")));
    }

    #[test]
    fn t1_a_hole_left_by_an_earlier_fault_excuses_what_waits_behind_it() {
        let mut story = online();
        // m1 commits while d3 is logged out: its late display is no primary-path failure,
        // and m2, committed while d3 is healthy, legitimately waits behind it.
        story.device(
            D3,
            Event::SessionLost {
                reason: imsim_model::SessionEnd::Logout,
            },
        );
        story.send(D1, C1, m(1));
        story.commit(C1, D1, m(1));
        story.ack(D1, C1, m(1), 1);
        story.deliver_to(C1, 1, &[D1, D2]);
        login(&mut story, U2, D3, 9);
        story.send(D1, C1, m(2));
        story.commit(C1, D1, m(2));
        story.ack(D1, C1, m(2), 2);
        story.deliver_to(C1, 2, &[D1, D2]);
        story.wait(20_000);
        story.deliver_to(C1, 1, &[D3]);
        story.deliver_to(C1, 2, &[D3]);
        story.finish();
        assert_eq!(timeliness(&story), vec![]);
    }

    /// `user` (on `reader`) read c1 up to #1, durably; then `watchers` show it after `late_ms`.
    fn read(
        story: &mut Story,
        user: UserId,
        reader: DeviceId,
        watchers: &[DeviceId],
        late_ms: u64,
    ) -> (usize, Vec<usize>) {
        let conv = C1;
        let up_to = imsim_model::Seq(1);
        let advanced = story.server(Event::ReadAdvanced {
            conv,
            user,
            device: reader,
            up_to,
        });
        story.wait(late_ms);
        let shown = watchers
            .iter()
            .map(|d| story.device(*d, Event::ReadSeen { conv, user, up_to }))
            .collect();
        (advanced, shown)
    }

    #[test]
    fn t3_a_read_shown_promptly_on_siblings_and_the_peer_passes() {
        let mut story = online();
        story.message(D1, C1, m(1));
        read(&mut story, U2, D3, &[D1, D2], 20);
        read(&mut story, U1, D1, &[D2, D3], 20);
        story.finish();
        assert_eq!(timeliness(&story), vec![]);
    }

    #[test]
    fn t3_a_read_tick_left_to_the_receipt_key_fires() {
        let mut story = online();
        story.message(D1, C1, m(1));
        let (advanced, shown) = read(&mut story, U2, D3, &[D1, D2], 8_000);
        story.finish();
        let violations = timeliness(&story);
        assert_eq!(violations.len(), 2, "{violations:#?}");
        let violation = &violations[1];
        assert_eq!(violation.invariant, Invariant::T3ReadShownInTime);
        assert_eq!(violation.witness, vec![advanced, shown[1]]);
        assert!(
            violation
                .explanation
                .starts_with("device-2 was online with a healthy link from u2's read"),
            "{}",
            violation.explanation
        );
    }

    /// D3 read c1 up to #1 (durable, shown on every watcher), then sent that read again (its
    /// own update lost, say): the server ignores it and answers with the watermark.
    fn resent_read(story: &mut Story, late_ms: u64) -> (usize, usize) {
        let (conv, up_to) = (C1, imsim_model::Seq(1));
        read(story, U2, D3, &[D1, D2], 20);
        let ignored = story.server(Event::ReadIgnored {
            conv,
            user: U2,
            device: D3,
            up_to,
            watermark: up_to,
        });
        story.wait(late_ms);
        let shown = story.device(
            D3,
            Event::ReadSeen {
                conv,
                user: U2,
                up_to,
            },
        );
        (ignored, shown)
    }

    #[test]
    fn t3_a_resent_read_answered_with_the_watermark_passes() {
        let mut story = online();
        story.message(D1, C1, m(1));
        resent_read(&mut story, 20);
        story.finish();
        assert_eq!(timeliness(&story), vec![]);
    }

    #[test]
    fn t3_a_resent_read_the_server_leaves_unanswered_fires() {
        let mut story = online();
        story.message(D1, C1, m(1));
        let (ignored, shown) = resent_read(&mut story, 8_000);
        story.finish();
        let violation = single(timeliness(&story), Invariant::T3ReadShownInTime);
        assert_eq!(violation.witness, vec![ignored, shown]);
        assert!(
            violation.explanation.starts_with(
                "device-3 resent its read of c1 up to #1 at 0.220s, which the server already \
                 held (watermark #1)"
            ),
            "{}",
            violation.explanation
        );
    }

    #[test]
    fn t3_a_sibling_that_never_shows_the_read_fires_and_an_unhealthy_one_is_not_judged() {
        let mut story = online();
        story.message(D1, C1, m(1));
        story.harness(HarnessEvent::PartitionStarted {
            device: D3,
            direction: Direction::Both,
        });
        // d2 never shows u1's read; d3, the peer, is cut off and shows it late, excused.
        read(&mut story, U1, D1, &[], 0);
        story.wait(8_000);
        story.harness(HarnessEvent::PartitionHealed { device: D3 });
        story.device(
            D3,
            Event::ReadSeen {
                conv: C1,
                user: U1,
                up_to: imsim_model::Seq(1),
            },
        );
        story.finish();
        let violations = timeliness(&story);
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert!(violations[0].explanation.starts_with("device-2"));
        assert!(violations[0].explanation.contains("showed it never"));
    }

    #[test]
    fn t3_in_a_group_only_the_readers_own_devices_are_judged() {
        let mut story = Story::group();
        for (session, (user, device)) in [(U1, D1), (U1, D2), (U2, D3), (U3, D4), (U3, D5)]
            .into_iter()
            .enumerate()
        {
            login(&mut story, user, device, session as u64 + 1);
        }
        story.message(D1, C1, m(1));
        read(&mut story, U3, D4, &[D5], 10);
        story.finish();
        assert_eq!(timeliness(&story), vec![]);
    }

    /// The team group (u1 on d1 and d2, u2 on d3), everyone logged in, u1's message #1
    /// delivered, and u2's durable read of it. Returns the read's record.
    fn group_read(protocol: ProtocolConfig) -> (Story, usize) {
        let mut story = Story::team();
        story.set_protocol(protocol);
        for (session, (user, device)) in [(U1, D1), (U1, D2), (U2, D3)].into_iter().enumerate() {
            login(&mut story, user, device, session as u64 + 1);
        }
        story.message(D1, C1, m(1));
        let advanced = story.server(Event::ReadAdvanced {
            conv: C1,
            user: U2,
            device: D3,
            up_to: imsim_model::Seq(1),
        });
        (story, advanced)
    }

    fn count_seen(story: &mut Story, device: DeviceId, readers: u32) -> usize {
        let seq = imsim_model::Seq(1);
        story.device(
            device,
            Event::ReadCountSeen {
                conv: C1,
                seq,
                readers,
            },
        )
    }

    #[test]
    fn t4_a_read_count_shown_promptly_on_the_senders_devices_passes() {
        let (mut story, _) = group_read(ProtocolConfig::default());
        story.wait(20);
        count_seen(&mut story, D1, 1);
        count_seen(&mut story, D2, 1);
        story.finish();
        assert_eq!(timeliness(&story), vec![]);
    }

    #[test]
    fn t4_a_read_count_left_to_the_receipt_key_fires() {
        let (mut story, advanced) = group_read(ProtocolConfig::default());
        story.wait(20);
        count_seen(&mut story, D1, 1);
        count_seen(&mut story, D2, 0); // an older count does not do
        story.wait(8_000);
        let late = count_seen(&mut story, D2, 1);
        story.finish();
        let violation = single(timeliness(&story), Invariant::T4ReadCountShownInTime);
        assert_eq!(violation.witness, vec![advanced, late]);
        assert!(
            violation.explanation.starts_with("device-2 was online")
                && violation
                    .explanation
                    .contains("showed 1 reader(s) of its user's message #1 only at"),
            "{}",
            violation.explanation
        );
    }

    #[test]
    fn t4_a_large_group_may_wait_one_batch_window() {
        let protocol = ProtocolConfig {
            notify_threshold_members: 1,
            ..ProtocolConfig::default()
        };
        let late_ms = read_bound_ms(&protocol, 0) + protocol.receipt_batch_ms / 2;
        let (mut story, _) = group_read(protocol.clone());
        story.wait(late_ms);
        count_seen(&mut story, D1, 1);
        count_seen(&mut story, D2, 1);
        story.finish();
        assert_eq!(timeliness(&story), vec![]);
        // The same delay in a small group is late.
        let (mut story, _) = group_read(ProtocolConfig::default());
        story.wait(late_ms);
        count_seen(&mut story, D1, 1);
        count_seen(&mut story, D2, 1);
        story.finish();
        assert_eq!(timeliness(&story).len(), 2);
    }

    #[test]
    fn t4_own_reads_and_membership_entries_count_no_reader() {
        let (mut story, _) = group_read(ProtocolConfig::default());
        story.wait(20);
        count_seen(&mut story, D1, 1);
        count_seen(&mut story, D2, 1);
        // u1 adds u3 (#2, a membership entry) and reads its own timeline: nobody new to count.
        story.add(C1, D1, U3);
        story.server(Event::ReadAdvanced {
            conv: C1,
            user: U1,
            device: D1,
            up_to: imsim_model::Seq(2),
        });
        story.wait(8_000);
        story.finish();
        let violations = timeliness(&story);
        assert!(
            violations
                .iter()
                .all(|v| v.invariant != Invariant::T4ReadCountShownInTime),
            "{violations:#?}"
        );
    }

    #[test]
    fn the_bound_comes_from_the_protocol_settings() {
        let protocol = ProtocolConfig::default();
        let small = delivery_bound_ms(&protocol, false, 0);
        assert_eq!(small, 250 + 300 + HOP_ALLOWANCE_MS);
        assert!(
            small < protocol.push_retry_initial_ms,
            "a retried push is late"
        );
        assert_eq!(delivery_bound_ms(&protocol, false, 400), small + 400);
        let merged = ProtocolConfig {
            notify_merge_ms: 2_000,
            ..ProtocolConfig::default()
        };
        let large = delivery_bound_ms(&merged, true, 0);
        assert_eq!(large, 2_000 + 250 + 250 + 300 + 3 * HOP_ALLOWANCE_MS);
        assert!(
            large < merged.notify_merge_ms + merged.push_retry_initial_ms,
            "a notice left to its retry is late"
        );
        let read = read_bound_ms(&protocol, 0);
        assert_eq!(read, 250 + 2 * HOP_ALLOWANCE_MS);
        assert!(
            read < protocol.heartbeat_interval_ms,
            "a receipt-key repair is late"
        );
    }
}
