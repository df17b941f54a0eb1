//! Durability and no-loss invariants (DESIGN.md §6): what the server acked is in its final
//! timeline (D1), every member device ends up showing every stored entry of its user's latest
//! membership period (D2, liveness), a device's cursor never claims a seq its user may see and
//! it has not shown (D3), and every send ends committed or visibly failed (D4, liveness).
//!
//! The liveness checks need the end of the run: on a history without `RunEnded` they report
//! nothing (as `check_all` also ensures), because "not yet" is not "never".

use super::index::{device_name, FinalTimeline, Findings, MessageKey};
use super::periods::Period;
use super::{HistoryIndex, Invariant, Violation};
use crate::{History, Node};
use imsim_model::{ClientMsgId, ConvId, DeviceId, Event, Seq, UserId};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    acked_is_durable(history, index, &mut findings);
    eventual_delivery(index, &mut findings);
    cursor_contiguous(history, index, &mut findings);
    no_silent_loss(history, index, &mut findings);
    send_resolves(history, index, &mut findings);
    stored_once(index, &mut findings);
    findings.into_violations()
}

/// D6: storage holds each message once and each seq once. A store that took a message twice
/// (a queue consumer that appends a redelivery again) would read back a conversation with a
/// message repeated, whatever the devices happened to display.
fn stored_once(index: &HistoryIndex, findings: &mut Findings) {
    for conv in index.conversations() {
        let Some(timeline) = index.final_timeline(conv) else {
            continue;
        };
        for (seq, message) in &timeline.repeated {
            findings.report(Invariant::D6StoredOnce, || {
                let first = match (timeline.seq_of(*message), timeline.at(*seq)) {
                    (Some(first), _) => format!("{message} is already stored at {first}"),
                    (None, Some(other)) => format!("{seq} already holds {other}"),
                    (None, None) => "an earlier entry has the same place".to_string(),
                };
                let text =
                    format!("the final timeline of {conv} holds {message} at {seq} again: {first}");
                (text, vec![timeline.record])
            });
        }
    }
}

/// One `SendAcked`: the server told `device` that its message is durable at `conv` `seq`.
struct Ack {
    record: usize,
    device: DeviceId,
    conv: ConvId,
    seq: Seq,
    message: MessageKey,
}

/// D1: each ack names a place in the final timeline that holds the acked message. Without a
/// final timeline (the history stops early) the commits are the best record of what is stored.
fn acked_is_durable(history: &History, index: &HistoryIndex, findings: &mut Findings) {
    let mut judged: BTreeSet<(MessageKey, Seq)> = BTreeSet::new();
    for (record, line, event) in history.protocol_events() {
        let (
            Node::Device(device),
            Event::SendAcked {
                conv,
                client_msg_id,
                seq,
            },
        ) = (line.node, event)
        else {
            continue;
        };
        let message = MessageKey::new(device, *client_msg_id);
        // A repeated ack (of a retransmission) proves nothing new.
        if !judged.insert((message, *seq)) {
            continue;
        }
        let ack = Ack {
            record,
            device,
            conv: *conv,
            seq: *seq,
            message,
        };
        match index.final_timeline(ack.conv) {
            Some(timeline) if timeline.at(ack.seq) != Some(message) => {
                findings.report(Invariant::D1AckedIsDurable, || {
                    not_in_timeline(&ack, timeline)
                });
            }
            Some(_) => {}
            None if index
                .commits_at(ack.conv, ack.seq)
                .all(|commit| commit.message != message) =>
            {
                findings.report(Invariant::D1AckedIsDurable, || not_committed(index, &ack));
            }
            None => {}
        }
    }
}

fn acked(ack: &Ack) -> String {
    let id = ack.message.client_msg_id;
    format!(
        "{} got an ack for {id} at {} {}",
        device_name(ack.device),
        ack.conv,
        ack.seq
    )
}

fn not_in_timeline(ack: &Ack, timeline: &FinalTimeline) -> (String, Vec<usize>) {
    let there = match timeline.at(ack.seq) {
        Some(other) => format!("{other} at {}", ack.seq),
        None => format!("nothing at {}", ack.seq),
    };
    let elsewhere = match timeline.seq_of(ack.message) {
        Some(seq) => format!("{} at {seq}", ack.message),
        None => format!("no {} at all", ack.message),
    };
    let text = format!(
        "{}, but the final timeline has {there} and {elsewhere}.",
        acked(ack)
    );
    (text, vec![ack.record, timeline.record])
}

fn not_committed(index: &HistoryIndex, ack: &Ack) -> (String, Vec<usize>) {
    let mut text = format!("{}, but no commit put it there", acked(ack));
    let mut witness = vec![ack.record];
    if let Some(other) = index.commits_at(ack.conv, ack.seq).next() {
        text.push_str(&format!(
            " ({} was committed at {})",
            other.message, ack.seq
        ));
        witness.push(other.record);
    }
    text.push_str(&format!(
        " and the run has no final timeline of {}.",
        ack.conv
    ));
    (text, witness)
}

/// One message a conversation should end up showing, and the record that says so.
struct Expected {
    seq: Seq,
    message: MessageKey,
    record: usize,
}

/// D2: by `RunEnded`, every device of every user who was ever a member has shown every message
/// of the final timeline (or, if the harness wrote none for a conversation, every committed
/// message) in its user's latest membership period, from the join to the leave or the end. An
/// earlier period is not required: a device that was offline through it may start afresh at the
/// re-join. One report per device and conversation, naming the first missing message and the
/// count.
fn eventual_delivery(index: &HistoryIndex, findings: &mut Findings) {
    let Some(ended) = index.run_ended() else {
        return;
    };
    for conv in index.conversations() {
        let expected = expected_messages(index, conv);
        if expected.is_empty() {
            continue;
        }
        for &device in index.member_devices(conv) {
            let Some(period) = index.view(conv, device).latest() else {
                continue;
            };
            // `expected` is in seq order: the period's share is one slice of it.
            let from = expected.partition_point(|entry| entry.seq < period.join);
            let to = expected.partition_point(|entry| period.leave.is_none_or(|l| entry.seq <= l));
            let due = &expected[from..to.max(from)];
            if due.is_empty() {
                continue;
            }
            let shown = index.displays_of(conv, device);
            let before_end = shown.iter().take_while(|display| display.record < ended);
            let displayed: BTreeSet<MessageKey> =
                before_end.map(|display| display.message).collect();
            let mut missing = due
                .iter()
                .filter(|expected| !displayed.contains(&expected.message));
            let Some(first) = missing.next() else {
                continue;
            };
            let undelivered = Undelivered {
                conv,
                device,
                user: index.user_of(device),
                period,
                first,
                count: 1 + missing.count(),
                of: due.len(),
                last_shown: shown
                    .iter()
                    .rev()
                    .find(|display| display.record < ended)
                    .map(|display| display.record),
                ended,
            };
            findings.report(Invariant::D2EventualDelivery, || undelivered.describe());
        }
    }
}

/// What a device had not shown of a conversation by the end of the run.
struct Undelivered<'a> {
    conv: ConvId,
    device: DeviceId,
    user: Option<UserId>,
    period: &'a Period,
    first: &'a Expected,
    count: usize,
    of: usize,
    last_shown: Option<usize>,
    ended: usize,
}

impl Undelivered<'_> {
    fn describe(&self) -> (String, Vec<usize>) {
        let text = format!(
            "By the end of the run {} had not displayed {} of the {} messages of {}{}, the first \
             being {} ({}).",
            device_name(self.device),
            self.count,
            self.of,
            self.conv,
            self.scope(),
            self.first.seq,
            self.first.message
        );
        let witness = [
            self.period.joined_by,
            Some(self.first.record),
            self.last_shown,
            Some(self.ended),
        ];
        (text, witness.into_iter().flatten().collect())
    }

    /// Which part of the conversation the device owed, when it is not all of it.
    fn scope(&self) -> String {
        let user = self
            .user
            .map_or("its user".to_string(), |user| user.to_string());
        match (self.period.join, self.period.leave) {
            (Seq(1), None) => String::new(),
            (join, None) => format!(" from {user}'s join at {join} on"),
            (Seq(1), Some(leave)) => format!(" up to {user}'s leaving at {leave}"),
            (join, Some(leave)) => {
                format!(" from {user}'s join at {join} to its leaving at {leave}")
            }
        }
    }
}

fn expected_messages(index: &HistoryIndex, conv: ConvId) -> Vec<Expected> {
    if let Some(timeline) = index.final_timeline(conv) {
        let record = timeline.record;
        return timeline
            .entries()
            .map(|(seq, message)| Expected {
                seq,
                message,
                record,
            })
            .collect();
    }
    let first_commits = index.commits_of(conv).filter(|commit| {
        index.first_commit(commit.message).map(|first| first.record) == Some(commit.record)
    });
    first_commits
        .map(|commit| Expected {
            seq: commit.seq,
            message: commit.message,
            record: commit.record,
        })
        .collect()
}

/// The seqs a device has displayed in one conversation, as disjoint runs of consecutive seqs,
/// so a cursor can be checked against any stretch (a re-joined device's claim starts at its join
/// point, not at seq 1) in O(log runs). A device normally shows one run per membership period,
/// so the map stays tiny.
#[derive(Default)]
struct Displayed {
    /// Each run's first seq → its last seq and the record of the display of that last seq.
    runs: BTreeMap<Seq, (Seq, usize)>,
    /// The hole already reported, so a stuck hole is reported once, not at every cursor move.
    reported_hole: Option<Seq>,
}

impl Displayed {
    fn show(&mut self, seq: Seq, record: usize) {
        let before = self.runs.range(..=seq).next_back();
        if let Some((_, &(last, _))) = before {
            if seq <= last {
                return; // shown before: E1's concern
            }
        }
        let start = match before {
            Some((&start, &(last, _))) if last.next() == seq => start,
            _ => seq,
        };
        let after = Seq(seq.0.saturating_add(1));
        let end = self.runs.remove(&after).unwrap_or((seq, record));
        self.runs.insert(start, end);
    }

    /// The first seq of `from ..= to` not displayed, with the record of the display of the seq
    /// before it (if that one was displayed).
    fn hole(&self, from: Seq, to: Seq) -> Option<(Seq, Option<usize>)> {
        match self.runs.range(..=from).next_back() {
            Some((_, &(last, record))) if last >= from => {
                (last < to).then(|| (last.next(), Some(record)))
            }
            _ => Some((from, None)),
        }
    }
}

/// D3: when a device moves its cursor to c, it has displayed every seq its user may see from
/// the start of the membership period that c falls in (or last began before c) up to c. For a
/// founding member that is every seq up to c, as in a 1:1 conversation.
fn cursor_contiguous(history: &History, index: &HistoryIndex, findings: &mut Findings) {
    let mut displayed: BTreeMap<(ConvId, DeviceId), Displayed> = BTreeMap::new();
    for (record, line, event) in history.protocol_events() {
        let Node::Device(device) = line.node else {
            continue;
        };
        match event {
            Event::Displayed { conv, seq, .. } => {
                displayed
                    .entry((*conv, device))
                    .or_default()
                    .show(*seq, record);
            }
            Event::CursorAdvanced { conv, cursor } => {
                let Some(period) = index.view(*conv, device).started_by(*cursor) else {
                    continue; // its user may see nothing up to the cursor, so it owes nothing
                };
                let to = period.leave.map_or(*cursor, |leave| leave.min(*cursor));
                let shown = displayed.entry((*conv, device)).or_default();
                let Some((hole, before)) = shown.hole(period.join, to) else {
                    continue;
                };
                if shown.reported_hole == Some(hole) {
                    continue;
                }
                shown.reported_hole = Some(hole);
                findings.report(Invariant::D3CursorContiguous, || {
                    let text = format!(
                        "{} moved its {conv} cursor to {cursor} without having displayed {hole}.",
                        device_name(device)
                    );
                    let join = period.joined_by.filter(|_| hole == period.join);
                    let witness = before.into_iter().chain(join).chain([record]);
                    (text, witness.collect())
                });
            }
            _ => {}
        }
    }
}

/// D4: every message a user sent ends committed or marked failed before the run ends.
fn no_silent_loss(history: &History, index: &HistoryIndex, findings: &mut Findings) {
    let Some(ended) = index.run_ended() else {
        return;
    };
    for (record, line, event) in history.protocol_events() {
        let (
            Node::Device(device),
            Event::SendRequested {
                conv,
                client_msg_id,
                ..
            },
        ) = (line.node, event)
        else {
            continue;
        };
        let message = MessageKey::new(device, *client_msg_id);
        let first_send = index.send(message).map(|send| send.record) == Some(record);
        if !first_send || index.first_commit(message).is_some() || index.failure(message).is_some()
        {
            continue;
        }
        findings.report(Invariant::D4NoSilentLoss, || {
            let text = lost(device, *conv, *client_msg_id);
            (text, vec![record, ended])
        });
    }
}

/// D5: every message a user sent ends, on the device that sent it, acknowledged or marked
/// failed. The server knowing it committed is not enough: a device that never hears so keeps the
/// message "sending" and resends it for ever (a server that forgets a commit's ack, or acks
/// another id). A send that never committed and never failed is D4's.
fn send_resolves(history: &History, index: &HistoryIndex, findings: &mut Findings) {
    let Some(ended) = index.run_ended() else {
        return;
    };
    let mut resolved: BTreeSet<(DeviceId, ClientMsgId)> = BTreeSet::new();
    let mut sent: Vec<(usize, DeviceId, ConvId, ClientMsgId)> = Vec::new();
    for (record, line, event) in history.protocol_events() {
        let Node::Device(device) = line.node else {
            continue;
        };
        match event {
            Event::SendRequested {
                conv,
                client_msg_id,
                ..
            } => sent.push((record, device, *conv, *client_msg_id)),
            Event::SendAcked { client_msg_id, .. } | Event::SendFailed { client_msg_id, .. } => {
                resolved.insert((device, *client_msg_id));
            }
            _ => {}
        }
    }
    let mut judged: BTreeSet<(DeviceId, ClientMsgId)> = BTreeSet::new();
    for (record, device, conv, id) in sent {
        if resolved.contains(&(device, id)) || !judged.insert((device, id)) {
            continue;
        }
        let Some(commit) = index.first_commit(MessageKey::new(device, id)) else {
            continue;
        };
        findings.report(Invariant::D5SendResolves, || {
            let text = format!(
                "{} sent {id} in {conv}, and at the end of the run it still shows it as sending: \
                 the server committed it at seq {}, but the device was never told.",
                device_name(device),
                commit.seq.0
            );
            (text, vec![record, commit.record, ended])
        });
    }
}

fn lost(device: DeviceId, conv: ConvId, id: ClientMsgId) -> String {
    format!(
        "{} sent {id} in {conv}, but by the end of the run it was neither committed nor marked \
         failed.",
        device_name(device)
    )
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::check::check_all;

    fn durability(story: &Story) -> Vec<Violation> {
        run(story, check)
    }

    /// Three messages in c1 with a server crash in between, everything delivered.
    fn delivered() -> Story {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.crash(Node::Server);
        story.restart(Node::Server);
        story.message(D3, C1, m(1));
        story.message(D2, C1, m(1));
        story
    }

    #[test]
    fn a_correct_complete_run_passes() {
        let mut story = delivered();
        story.send(D1, C1, m(2));
        story.fail(D1, C1, m(2)); // failed, and the user was told: not a loss
        story.finish();
        assert_eq!(durability(&story), vec![]);
    }

    #[test]
    fn a_correct_run_cut_short_passes() {
        let story = delivered();
        assert_eq!(durability(&story), vec![]);
    }

    #[test]
    fn d1_an_ack_lost_in_a_server_crash_is_reported() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.send(D1, C1, m(2));
        // Acked before the write was synced; the crash lost it and #2 went to d3's message.
        let ack = story.ack(D1, C1, m(2), 2);
        story.crash(Node::Server);
        story.restart(Node::Server);
        story.message(D3, C1, m(1));
        story.fail(D1, C1, m(2));
        story.liveness_phase();
        let timeline = story.final_timeline(C1, &[(1, D1, m(1)), (2, D3, m(1))]);
        story.finish();
        let violation = single(durability(&story), Invariant::D1AckedIsDurable);
        assert_eq!(violation.witness, vec![ack, timeline]);
        assert_eq!(
            violation.explanation,
            "device-1 got an ack for m2 at c1 #2, but the final timeline has m1 from d3 at #2 and \
             no m2 from d1 at all."
        );
    }

    #[test]
    fn d6_a_message_stored_twice_fires_and_a_timeline_holding_each_once_passes() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.message(D1, C1, m(2));
        story.liveness_phase();
        let timeline = story.final_timeline(C1, &[(1, D1, m(1)), (1, D1, m(1)), (2, D1, m(2))]);
        story.finish();
        let violation = single(durability(&story), Invariant::D6StoredOnce);
        assert_eq!(violation.witness, vec![timeline]);
        assert_eq!(
            violation.explanation,
            "the final timeline of c1 holds m1 from d1 at #1 again: m1 from d1 is already \
             stored at #1"
        );

        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.message(D1, C1, m(2));
        story.liveness_phase();
        story.final_timeline(C1, &[(1, D1, m(1)), (2, D1, m(2))]);
        story.finish();
        let found = durability(&story);
        assert!(
            found.iter().all(|v| v.invariant != Invariant::D6StoredOnce),
            "{found:?}"
        );
    }

    #[test]
    fn d1_without_a_final_timeline_an_ack_is_compared_with_the_commits() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.send(D1, C1, m(2));
        let ack = story.ack(D1, C1, m(2), 2); // nothing was committed at #2
        let violation = single(durability(&story), Invariant::D1AckedIsDurable);
        assert_eq!(violation.witness, vec![ack]);
        assert_eq!(
            violation.explanation,
            "device-1 got an ack for m2 at c1 #2, but no commit put it there and the run has no \
             final timeline of c1."
        );
    }

    #[test]
    fn d2_a_device_that_missed_a_message_is_reported_once() {
        let mut story = Story::one_to_one();
        let mut last_shown = 0;
        for id in 1..=3 {
            story.send(D1, C1, m(id));
            story.commit(C1, D1, m(id));
            story.ack(D1, C1, m(id), id);
            story.display(D1, C1, id);
            story.display(D3, C1, id);
            if id == 1 {
                // d2, u1's second device, shows #1 and then never catches up.
                last_shown = story.display(D2, C1, id);
            }
        }
        story.liveness_phase();
        let timeline = story.final_timeline(C1, &[(1, D1, m(1)), (2, D1, m(2)), (3, D1, m(3))]);
        let ended = story.finish();
        let violation = single(durability(&story), Invariant::D2EventualDelivery);
        assert_eq!(violation.witness, vec![last_shown, timeline, ended]);
        assert_eq!(
            violation.explanation,
            "By the end of the run device-2 had not displayed 2 of the 3 messages of c1, the first \
             being #2 (m2 from d1)."
        );
    }

    #[test]
    fn d2_every_member_device_of_a_group_must_display_everything() {
        let mut story = Story::group();
        story.send(D3, C1, m(1));
        story.commit(C1, D3, m(1));
        story.ack(D3, C1, m(1), 1);
        for device in [D1, D2, D3, D4] {
            story.display(device, C1, 1);
        }
        let ended = story.finish();
        let violation = single(durability(&story), Invariant::D2EventualDelivery);
        assert!(
            violation.explanation.contains("device-5"),
            "{}",
            violation.explanation
        );
        assert_eq!(violation.witness.last(), Some(&ended));
    }

    #[test]
    fn liveness_is_not_judged_on_an_incomplete_history() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1)); // neither committed nor failed
        story.send(D3, C1, m(1));
        story.commit(C1, D3, m(1)); // committed, displayed nowhere
        story.liveness_phase();
        assert_eq!(durability(&story), vec![]);
        assert_eq!(check_all(story.history()), vec![]);

        story.finish();
        let invariants: Vec<Invariant> = check_all(story.history())
            .iter()
            .map(|v| v.invariant)
            .collect();
        let d2_for_each_device = vec![Invariant::D2EventualDelivery; 3];
        // u1's two devices both miss the message: they agree with each other but not with the
        // server's timeline, which M1 requires too.
        let m1_for_u1 = vec![Invariant::M1DevicesConverge; 2];
        assert_eq!(
            invariants,
            [
                d2_for_each_device,
                vec![Invariant::D4NoSilentLoss],
                // d3's message committed but d3 never heard so.
                vec![Invariant::D5SendResolves],
                m1_for_u1
            ]
            .concat()
        );
    }

    #[test]
    fn d3_a_cursor_over_a_hole_is_reported_once() {
        let mut story = Story::one_to_one();
        for id in 1..=5 {
            story.send(D1, C1, m(id));
            story.commit(C1, D1, m(id));
        }
        story.display(D3, C1, 1);
        let second = story.display(D3, C1, 2);
        story.display(D3, C1, 4);
        // The push of #3 failed, yet the watermark moved over it.
        let cursor = story.cursor(D3, C1, 4);
        story.display(D3, C1, 5);
        story.cursor(D3, C1, 5); // the same hole: not reported again
        let violation = single(durability(&story), Invariant::D3CursorContiguous);
        assert_eq!(violation.witness, vec![second, cursor]);
        assert_eq!(
            violation.explanation,
            "device-3 moved its c1 cursor to #4 without having displayed #3."
        );
    }

    #[test]
    fn d3_a_cursor_ahead_of_the_display_is_reported() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.commit(C1, D1, m(1));
        let cursor = story.cursor(D3, C1, 1);
        story.display(D3, C1, 1);
        let violation = single(durability(&story), Invariant::D3CursorContiguous);
        assert_eq!(violation.witness, vec![cursor]);
    }

    #[test]
    fn d3_a_hole_filled_late_makes_the_cursor_valid() {
        let mut story = Story::one_to_one();
        for id in 1..=3 {
            story.send(D1, C1, m(id));
            story.commit(C1, D1, m(id));
        }
        story.display(D3, C1, 1);
        story.display(D3, C1, 3); // held back by the device in a real run; O2 is not D3's concern
        story.display(D3, C1, 2);
        story.cursor(D3, C1, 3);
        assert_eq!(durability(&story), vec![]);
    }

    #[test]
    fn a_rejoined_member_owes_only_its_latest_period() {
        // d4 showed #2 and #6 on, its cursor jumping from #2 to #6; d5 only #6 on.
        let mut story = Story::rejoined();
        for seq in 6..=8 {
            story.deliver_to(C1, seq, &[D5]);
        }
        story.finish();
        assert_eq!(durability(&story), vec![]);
    }

    #[test]
    fn d2_a_missing_entry_of_the_latest_period_is_reported() {
        let mut story = Story::rejoined();
        story.deliver_to(C1, 6, &[D5]);
        let last = story.display(D5, C1, 7);
        story.cursor(D5, C1, 7);
        let ended = story.finish();
        let timeline = ended - 1;
        let violation = single(durability(&story), Invariant::D2EventualDelivery);
        let rejoin = story.commit_record(C1, 6);
        assert_eq!(violation.witness, vec![rejoin, last, timeline, ended]);
        assert_eq!(
            violation.explanation,
            "By the end of the run device-5 had not displayed 1 of the 3 messages of c1 from u3's \
             join at #6 on, the first being #8 (m2 from d3)."
        );
    }

    #[test]
    fn d2_a_removed_member_owes_its_period_up_to_and_with_the_removal() {
        let mut story = Story::team();
        story.message(D1, C1, m(1));
        let added = story.add(C1, D1, U3);
        story.deliver(C1, 2);
        story.message(D3, C1, m(1));
        story.go_offline(D5);
        story.remove(C1, D1, U3);
        story.deliver(C1, 4);
        story.go_online(D5);
        story.message(D1, C1, m(2)); // for u1 and u2 only
        story.finish();
        let violation = single(durability(&story), Invariant::D2EventualDelivery);
        assert_eq!(violation.witness[0], added);
        assert_eq!(
            violation.explanation,
            "By the end of the run device-5 had not displayed 1 of the 3 messages of c1 from u3's \
             join at #2 to its leaving at #4, the first being #4 (m102 from d1)."
        );
    }

    #[test]
    fn d3_a_cursor_over_a_hole_in_the_latest_period_is_reported() {
        let mut story = Story::rejoined();
        let first = story.display(D5, C1, 6);
        story.display(D5, C1, 8);
        let cursor = story.cursor(D5, C1, 8);
        let violation = single(durability(&story), Invariant::D3CursorContiguous);
        assert_eq!(violation.witness, vec![first, cursor]);
        assert_eq!(
            violation.explanation,
            "device-5 moved its c1 cursor to #8 without having displayed #7."
        );
    }

    #[test]
    fn d3_a_cursor_past_an_unshown_join_point_is_reported() {
        let mut story = Story::rejoined();
        story.display(D5, C1, 7);
        let cursor = story.cursor(D5, C1, 7);
        let violation = single(durability(&story), Invariant::D3CursorContiguous);
        assert_eq!(violation.witness, vec![story.commit_record(C1, 6), cursor]);
        assert_eq!(
            violation.explanation,
            "device-5 moved its c1 cursor to #7 without having displayed #6."
        );
    }

    #[test]
    fn d3_a_cursor_beyond_a_removal_owes_only_what_its_user_may_see() {
        let mut story = Story::team();
        story.add(C1, D1, U3);
        story.deliver(C1, 1);
        story.remove(C1, D1, U3);
        story.deliver(C1, 2);
        story.message(D1, C1, m(1));
        story.cursor(D4, C1, 3); // over a seq u3 may not see: nothing to show there
        assert_eq!(durability(&story), vec![]);
    }

    #[test]
    fn d4_a_send_that_neither_committed_nor_failed_is_reported() {
        let mut story = delivered();
        let send = story.send(D2, C1, m(2));
        let ended = story.finish();
        let violation = single(durability(&story), Invariant::D4NoSilentLoss);
        assert_eq!(violation.witness, vec![send, ended]);
        assert_eq!(
            violation.explanation,
            "device-2 sent m2 in c1, but by the end of the run it was neither committed nor marked \
             failed."
        );
    }

    #[test]
    fn d5_a_commit_the_sender_never_hears_of_is_reported() {
        let mut story = delivered();
        let send = story.send(D2, C1, m(2));
        let commit = story.commit(C1, D2, m(2));
        let seq = story.head(C1);
        story.deliver(C1, seq);
        let ended = story.finish();
        let violations = durability(&story);
        let violation = single(violations, Invariant::D5SendResolves);
        assert_eq!(violation.witness, vec![send, commit, ended]);
        assert!(
            violation.explanation.contains("the server committed it"),
            "{}",
            violation.explanation
        );
    }

    #[test]
    fn d5_an_ack_or_a_visible_failure_resolves_a_send() {
        let mut story = delivered();
        story.send(D2, C1, m(2));
        let seq = story.head(C1) + 1;
        story.commit(C1, D2, m(2));
        story.deliver(C1, seq);
        story.ack(D2, C1, m(2), seq);
        story.send(D2, C1, m(3));
        story.fail(D2, C1, m(3));
        story.finish();
        assert_eq!(durability(&story), vec![]);
    }

    #[test]
    fn a_flood_of_lost_sends_is_capped() {
        let mut story = Story::one_to_one();
        for id in 1..=30 {
            story.send(D1, C1, m(id)); // the server is down for good: nothing commits
        }
        story.finish();
        let violations = durability(&story);
        assert_eq!(violations.len(), 20);
        assert!(violations[19]
            .explanation
            .ends_with("(10 more D4 violations not shown.)"));
    }
}
