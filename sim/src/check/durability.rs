//! Durability and no-loss invariants (DESIGN.md §6): what the server acked is in its final
//! timeline (D1), every member device ends up showing every stored message (D2, liveness), a
//! device's cursor never claims a seq it has not shown (D3), and every send ends committed or
//! visibly failed (D4, liveness).
//!
//! The liveness checks need the end of the run: on a history without `RunEnded` they report
//! nothing (as `check_all` also ensures), because "not yet" is not "never".

use super::index::{device_name, FinalTimeline, Findings, MessageKey};
use super::{HistoryIndex, Invariant, Violation};
use crate::history::{History, Node};
use imsim_model::{ClientMsgId, ConvId, DeviceId, Event, Seq};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    acked_is_durable(history, index, &mut findings);
    eventual_delivery(index, &mut findings);
    cursor_contiguous(history, &mut findings);
    no_silent_loss(history, index, &mut findings);
    findings.into_violations()
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

/// D2: by `RunEnded`, every device of every member has shown every message of the final
/// timeline (or, if the harness wrote none for a conversation, every committed message). One
/// report per device and conversation, naming the first missing message and the count.
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
            let shown = index.displays_of(conv, device);
            let before_end = shown.iter().take_while(|display| display.record < ended);
            let displayed: BTreeSet<MessageKey> =
                before_end.map(|display| display.message).collect();
            let mut missing = expected
                .iter()
                .filter(|expected| !displayed.contains(&expected.message));
            let Some(first) = missing.next() else {
                continue;
            };
            let undelivered = Undelivered {
                conv,
                device,
                first,
                count: 1 + missing.count(),
                of: expected.len(),
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
    first: &'a Expected,
    count: usize,
    of: usize,
    last_shown: Option<usize>,
    ended: usize,
}

impl Undelivered<'_> {
    fn describe(&self) -> (String, Vec<usize>) {
        let text = format!(
            "By the end of the run {} had not displayed {} of the {} messages of {}, the first \
             being {} ({}).",
            device_name(self.device),
            self.count,
            self.of,
            self.conv,
            self.first.seq,
            self.first.message
        );
        let witness = [Some(self.first.record), self.last_shown, Some(self.ended)];
        (text, witness.into_iter().flatten().collect())
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

/// What a device has displayed in one conversation, as far as a cursor may claim it.
#[derive(Default)]
struct Prefix {
    /// Every seq up to here is displayed.
    contiguous: Seq,
    /// The record of the display of `contiguous`.
    contiguous_record: Option<usize>,
    /// Displays beyond a hole, by seq, with their records.
    ahead: BTreeMap<Seq, usize>,
    /// The hole already reported, so a stuck hole is reported once, not at every cursor move.
    reported_hole: Option<Seq>,
}

impl Prefix {
    fn show(&mut self, seq: Seq, record: usize) {
        if seq != self.contiguous.next() {
            if seq > self.contiguous {
                self.ahead.entry(seq).or_insert(record);
            }
            return;
        }
        self.contiguous = seq;
        self.contiguous_record = Some(record);
        while let Some(record) = self.ahead.remove(&self.contiguous.next()) {
            self.contiguous = self.contiguous.next();
            self.contiguous_record = Some(record);
        }
    }
}

/// D3: when a device moves its cursor to c, it has displayed every seq up to c.
fn cursor_contiguous(history: &History, findings: &mut Findings) {
    let mut prefixes: BTreeMap<(ConvId, DeviceId), Prefix> = BTreeMap::new();
    for (record, line, event) in history.protocol_events() {
        let Node::Device(device) = line.node else {
            continue;
        };
        match event {
            Event::Displayed { conv, seq, .. } => {
                prefixes
                    .entry((*conv, device))
                    .or_default()
                    .show(*seq, record);
            }
            Event::CursorAdvanced { conv, cursor } => {
                let prefix = prefixes.entry((*conv, device)).or_default();
                let hole = prefix.contiguous.next();
                if *cursor < hole || prefix.reported_hole == Some(hole) {
                    continue;
                }
                prefix.reported_hole = Some(hole);
                findings.report(Invariant::D3CursorContiguous, || {
                    let text = format!(
                        "{} moved its {conv} cursor to {cursor} without having displayed {hole}.",
                        device_name(device)
                    );
                    (
                        text,
                        prefix
                            .contiguous_record
                            .into_iter()
                            .chain([record])
                            .collect(),
                    )
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
        assert_eq!(
            invariants,
            [d2_for_each_device, vec![Invariant::D4NoSilentLoss]].concat()
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
