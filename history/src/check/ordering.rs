//! Ordering invariants (DESIGN.md §6): the server numbers each conversation's messages with
//! strictly increasing seqs (O1), every device shows a conversation as the committed timeline
//! from its user's join point on, without holes in what its user may see (O2), a device's
//! messages keep the order its user sent them in (O3), and no two devices show two messages in
//! opposite orders (O4).
//!
//! Each problem is reported once, where it starts: a device that skipped a seq is reported at the
//! skip, not again at every later display; a server that went back is reported at the step back,
//! not at each seq it then reuses.

use super::index::{device_name, Commit, Findings, MessageKey, Shown};
use super::{HistoryIndex, Invariant, Violation};
use crate::History;
use imsim_model::{ClientSeq, ConvId, DeviceId, Seq};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(_history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    seq_monotonic(index, &mut findings);
    for (conv, device, shown) in index.displays() {
        display_order(index, conv, device, shown, &mut findings);
    }
    sender_fifo(index, &mut findings);
    let convs: BTreeSet<ConvId> = index.displays().map(|(conv, _, _)| conv).collect();
    for conv in convs {
        agreement(index, conv, &mut findings);
    }
    findings.into_violations()
}

/// O1: within a conversation each commit's seq is above the previous commit's. Comparing with
/// the previous commit (not the highest so far) reports a server that restarted its numbering
/// once, at the step back, instead of at every seq it reuses afterwards.
fn seq_monotonic(index: &HistoryIndex, findings: &mut Findings) {
    let mut previous: BTreeMap<ConvId, &Commit> = BTreeMap::new();
    for commit in index.commits() {
        if commit.seq == Seq::ZERO {
            findings.report(Invariant::O1SeqMonotonic, || {
                let text = format!(
                    "The server committed {} ({}) at #0; seqs start at #1.",
                    commit.conv, commit.message
                );
                (text, vec![commit.record])
            });
        }
        if let Some(before) = previous.insert(commit.conv, commit) {
            if commit.seq <= before.seq {
                findings.report(Invariant::O1SeqMonotonic, || {
                    went_back(index, before, commit)
                });
            }
        }
    }
}

fn went_back(index: &HistoryIndex, before: &Commit, commit: &Commit) -> (String, Vec<usize>) {
    let conv = commit.conv;
    let mut text = format!(
        "The server committed {conv} {} ({}) after {} ({}): seqs went back.",
        commit.seq, commit.message, before.seq, before.message
    );
    let mut witness = vec![before.record, commit.record];
    let holder = index.commits_at(conv, commit.seq).next();
    if let Some(holder) = holder.filter(|holder| holder.record != commit.record) {
        text.push_str(&format!(
            " {} was already taken by {}.",
            commit.seq, holder.message
        ));
        witness.push(holder.record);
    }
    (text, witness)
}

/// O2 for one device and conversation: each display is the next seq after the highest shown so
/// far, or the join point of one of the user's membership periods (a device that learns of its
/// user's re-join starts afresh there, and may skip the rest of an earlier period), and shows the
/// message committed at that seq. The first display is a join point (seq 1 for a founding
/// member). Displays the user may not see are G1's and are passed over here. After a skip the
/// highest seq moves on, so the displays that follow are judged from there; a skipped seq shown
/// late is part of the skip already reported, and a seq shown twice is E1's to report.
fn display_order(
    index: &HistoryIndex,
    conv: ConvId,
    device: DeviceId,
    shown: &[Shown],
    findings: &mut Findings,
) {
    let periods = index.view(conv, device);
    let mut highest: Option<&Shown> = None;
    for display in shown {
        let Some(period) = periods.containing(display.seq) else {
            continue;
        };
        let highest_seq = highest.map_or(Seq::ZERO, |highest| highest.seq);
        if display.seq <= highest_seq {
            continue;
        }
        // The seq before `display.seq` is visible unless `display.seq` is a join point, so the
        // display must follow the highest at once or start its period.
        let expected = highest_seq.next().max(period.join);
        if display.seq != expected {
            findings.report(Invariant::O2DisplayOrder, || {
                let text = format!(
                    "{} displayed {conv} {} ({}) before {expected}.",
                    device_name(device),
                    display.seq,
                    display.message,
                );
                // A join point it should have started at is part of the proof.
                let join = period.joined_by.filter(|_| expected == period.join);
                let witness = highest
                    .map(|highest| highest.record)
                    .into_iter()
                    .chain(join)
                    .chain([display.record]);
                (text, witness.collect())
            });
        }
        check_committed(index, conv, device, display, findings);
        highest = Some(display);
    }
}

/// O2: the message a device shows at seq s is the one the server committed at s.
fn check_committed(
    index: &HistoryIndex,
    conv: ConvId,
    device: DeviceId,
    display: &Shown,
    findings: &mut Findings,
) {
    if index.commits().is_empty() {
        return; // a history without server events (recorded elsewhere) cannot be judged on this
    }
    let mut committed = index.commits_at(conv, display.seq).peekable();
    let Some(first) = committed.peek().copied() else {
        findings.report(Invariant::O2DisplayOrder, || {
            let text = format!(
                "{} displayed {conv} {} ({}), but nothing was committed at {}.",
                device_name(device),
                display.seq,
                display.message,
                display.seq
            );
            (text, vec![display.record])
        });
        return;
    };
    // Several commits at one seq break O1, which reports them; any of them will do here.
    if committed.any(|commit| commit.message == display.message) {
        return;
    }
    findings.report(Invariant::O2DisplayOrder, || {
        let text = format!(
            "{} displayed {conv} {} as {}, but {} was committed as {}.",
            device_name(device),
            display.seq,
            display.message,
            display.seq,
            first.message
        );
        (text, vec![first.record, display.record])
    });
}

/// One message's place in its sender's stream, for O3. Field order is sort order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Sent {
    sender: DeviceId,
    conv: ConvId,
    client_seq: ClientSeq,
    seq: Seq,
    message: MessageKey,
    commit: usize,
    send: Option<usize>,
}

/// O3: for each sending device and conversation, taking each message's first commit in the
/// order the user pressed send (client_seq), the seqs increase. Only neighbours are compared: a
/// message committed late then shows up as one step back, not once per message it overtook.
fn sender_fifo(index: &HistoryIndex, findings: &mut Findings) {
    let mut sent: Vec<Sent> = Vec::new();
    for commit in index.commits() {
        if index.first_commit(commit.message).map(|first| first.record) != Some(commit.record) {
            continue; // a repeated commit is E2's concern; the first one is where it landed
        }
        // Press order is what the device recorded; the commit's copy is the fallback.
        let send = index.send(commit.message);
        sent.push(Sent {
            sender: commit.message.sender_device,
            conv: commit.conv,
            client_seq: send.map_or(commit.client_seq, |send| send.client_seq),
            seq: commit.seq,
            message: commit.message,
            commit: commit.record,
            send: send.map(|send| send.record),
        });
    }
    sent.sort_unstable();
    for pair in sent.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        let same_stream = (earlier.sender, earlier.conv) == (later.sender, later.conv);
        if !same_stream || earlier.client_seq == later.client_seq || earlier.seq < later.seq {
            continue;
        }
        findings.report(Invariant::O3SenderFifo, || {
            let text = format!(
                "{} sent {} ({}) before {} ({}) in {}, but they were committed at {} and {}.",
                earlier.sender,
                earlier.message.client_msg_id,
                earlier.client_seq,
                later.message.client_msg_id,
                later.client_seq,
                earlier.conv,
                earlier.seq,
                later.seq
            );
            let witness = [
                Some(earlier.commit),
                earlier.send,
                Some(later.commit),
                later.send,
            ];
            (text, witness.into_iter().flatten().collect())
        });
    }
}

/// O4 for one conversation. Fast path: if every device shows messages in increasing order of
/// their first committed seq, all devices agree with that one order, hence with each other. Only
/// when some device does not (or shows an uncommitted message) are devices compared pairwise,
/// which is quadratic in the devices of that conversation but only happens in a broken run.
fn agreement(index: &HistoryIndex, conv: ConvId, findings: &mut Findings) {
    let committed_order = |shown: &[Shown]| {
        let mut seqs = shown
            .iter()
            .map(|display| index.first_commit(display.message).map(|commit| commit.seq));
        let mut previous = Some(Seq::ZERO);
        seqs.all(|seq| {
            let increasing = seq.is_some() && seq > previous;
            previous = seq;
            increasing
        })
    };
    if index
        .displays_in(conv)
        .all(|(_, shown)| committed_order(shown))
    {
        return;
    }
    let orders: Vec<DeviceOrder> = index
        .displays_in(conv)
        .map(|(device, shown)| DeviceOrder::new(device, shown))
        .collect();
    let mut reported: BTreeSet<(MessageKey, MessageKey)> = BTreeSet::new();
    for (at, first) in orders.iter().enumerate() {
        for second in &orders[at + 1..] {
            if findings.is_full(Invariant::O4Agreement) {
                return; // the cap is reached; the rest of a quadratic search buys nothing
            }
            disagreement(conv, first, second, &mut reported, findings);
        }
    }
}

/// One device's first display of each message, in the order it showed them.
struct DeviceOrder<'a> {
    device: DeviceId,
    order: Vec<&'a Shown>,
    position: BTreeMap<MessageKey, usize>,
}

impl<'a> DeviceOrder<'a> {
    fn new(device: DeviceId, shown: &'a [Shown]) -> DeviceOrder<'a> {
        let mut order = Vec::new();
        let mut position = BTreeMap::new();
        for display in shown {
            if let Entry::Vacant(slot) = position.entry(display.message) {
                slot.insert(order.len());
                order.push(display);
            }
        }
        DeviceOrder {
            device,
            order,
            position,
        }
    }
}

/// Reports the first pair of messages the two devices order differently and that is not reported
/// yet: walking `first`'s order, a message that `second` showed before some message `first`
/// showed earlier is such a pair. One report per device pair keeps a device that is wrong about
/// everything from flooding the report.
fn disagreement(
    conv: ConvId,
    first: &DeviceOrder,
    second: &DeviceOrder,
    reported: &mut BTreeSet<(MessageKey, MessageKey)>,
    findings: &mut Findings,
) {
    let mut latest: Option<(usize, &Shown)> = None; // highest position in `second` so far
    for display in &first.order {
        let Some(&position) = second.position.get(&display.message) else {
            continue;
        };
        match latest {
            Some((latest_position, earlier)) if position < latest_position => {
                let pair = (
                    earlier.message.min(display.message),
                    earlier.message.max(display.message),
                );
                if reported.insert(pair) {
                    let in_second = [second.order[latest_position], second.order[position]];
                    findings.report(Invariant::O4Agreement, || {
                        opposite_orders(
                            conv,
                            first.device,
                            [earlier, display],
                            second.device,
                            in_second,
                        )
                    });
                    return;
                }
            }
            _ => latest = Some((position, display)),
        }
    }
}

fn opposite_orders(
    conv: ConvId,
    first: DeviceId,
    in_first: [&Shown; 2],
    second: DeviceId,
    in_second: [&Shown; 2],
) -> (String, Vec<usize>) {
    let text = format!(
        "{} displayed {conv} {} before {}, but {} displayed them the other way round.",
        device_name(first),
        in_first[0].message,
        in_first[1].message,
        device_name(second)
    );
    let witness = in_first
        .iter()
        .chain(&in_second)
        .map(|display| display.record);
    (text, witness.collect())
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::Node;

    fn ordering(story: &Story) -> Vec<Violation> {
        run(story, check)
    }

    /// Two users talk in c1, and the server crashes and recovers between their messages.
    fn conversation() -> Story {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.message(D3, C1, m(1));
        story.crash(Node::Server);
        story.restart(Node::Server);
        story.message(D2, C1, m(1));
        story.message(D1, C1, m(2));
        story
    }

    #[test]
    fn a_correct_conversation_passes() {
        let mut story = conversation();
        story.finish();
        assert_eq!(ordering(&story), vec![]);
    }

    #[test]
    fn a_group_conversation_passes() {
        let mut story = Story::group();
        story.message(D1, C1, m(1));
        story.message(D4, C1, m(1));
        story.message(D5, C2, m(1));
        story.message(D3, C1, m(1));
        assert_eq!(ordering(&story), vec![]);
    }

    #[test]
    fn o1_a_seq_reused_after_a_server_crash_is_reported_once() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.send(D1, C1, m(2));
        story.send(D3, C1, m(1));
        story.send(D3, C1, m(2));
        let first = story.commit(C1, D1, m(1));
        let second = story.commit(C1, D1, m(2));
        story.crash(Node::Server);
        story.restart(Node::Server);
        // The recovered server forgot its high-water mark and numbers from #1 again.
        let reused = story.commit_at(C1, 1, D3, m(1));
        story.commit_at(C1, 2, D3, m(2));
        let violation = single(ordering(&story), Invariant::O1SeqMonotonic);
        assert_eq!(violation.witness, vec![first, second, reused]);
        assert_eq!(
            violation.explanation,
            "The server committed c1 #1 (m1 from d3) after #2 (m2 from d1): seqs went back. \
             #1 was already taken by m1 from d1."
        );
    }

    #[test]
    fn o1_a_seq_zero_commit_is_reported() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        let zero = story.commit_at(C1, 0, D1, m(1));
        let violation = single(ordering(&story), Invariant::O1SeqMonotonic);
        assert_eq!(violation.witness, vec![zero]);
    }

    #[test]
    fn o2_one_skipped_seq_is_one_violation() {
        let mut story = Story::one_to_one();
        for id in 1..=5 {
            story.send(D1, C1, m(id));
            story.commit(C1, D1, m(id));
        }
        story.display(D3, C1, 1);
        let second = story.display(D3, C1, 2);
        let skip = story.display(D3, C1, 4); // #3 never shown before #4
        story.display(D3, C1, 5);
        story.display(D3, C1, 3); // shown late: part of the same problem
        let violation = single(ordering(&story), Invariant::O2DisplayOrder);
        assert_eq!(violation.witness, vec![second, skip]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #4 (m4 from d1) before #3."
        );
    }

    #[test]
    fn o2_a_display_that_skips_seq_1_is_reported() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.send(D1, C1, m(2));
        story.commit(C1, D1, m(1));
        story.commit(C1, D1, m(2));
        let skip = story.display(D3, C1, 2);
        let violation = single(ordering(&story), Invariant::O2DisplayOrder);
        assert_eq!(violation.witness, vec![skip]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #2 (m2 from d1) before #1."
        );
    }

    #[test]
    fn o2_showing_another_message_than_the_committed_one_is_reported() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.send(D1, C1, m(2));
        let at_one = story.commit(C1, D1, m(1));
        story.commit(C1, D1, m(2));
        // The device labels m2 as #1: order and content are both wrong about what #1 is.
        let wrong = story.display_as(D3, C1, 1, D1, m(2), &body_of(D1, m(2)));
        let violation = single(ordering(&story), Invariant::O2DisplayOrder);
        assert_eq!(violation.witness, vec![at_one, wrong]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #1 as m2 from d1, but #1 was committed as m1 from d1."
        );
    }

    #[test]
    fn o2_showing_an_uncommitted_seq_is_reported() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.send(D1, C1, m(2));
        story.commit(C1, D1, m(1));
        story.display(D3, C1, 1);
        // The server pushed m2 at #2 before the write was durable, then crashed and lost it.
        let shown = story.display_as(D3, C1, 2, D1, m(2), &body_of(D1, m(2)));
        let violation = single(ordering(&story), Invariant::O2DisplayOrder);
        assert_eq!(violation.witness, vec![shown]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #2 (m2 from d1), but nothing was committed at #2."
        );
    }

    #[test]
    fn o2_a_rejoined_device_may_skip_the_rest_of_its_first_period() {
        // d4 shows #2 and then #6 on; d5 shows nothing before the re-join at #6.
        let mut story = Story::rejoined();
        for seq in 6..=8 {
            story.deliver_to(C1, seq, &[D5]);
        }
        assert_eq!(ordering(&story), vec![]);
    }

    /// u1 adds u3 at #2 and removes it at #3 (d4 and d5 see both), then sends #4.
    fn added_and_removed() -> Story {
        let mut story = Story::team();
        story.message(D1, C1, m(1));
        story.add(C1, D1, U3);
        story.deliver(C1, 2);
        story.remove(C1, D1, U3);
        story.deliver(C1, 3);
        story.message(D1, C1, m(2));
        story
    }

    #[test]
    fn o2_a_display_after_removal_is_g1_not_o2() {
        let mut story = added_and_removed();
        story.display(D4, C1, 4); // u3 may not see #4
        story.add(C1, D1, U3);
        story.deliver(C1, 5); // a join point: d4 and d5 jump there
        assert_eq!(ordering(&story), vec![]);
        let violations = crate::check::check_all(story.history());
        single(violations, Invariant::G1MemberOnlyDelivery);
    }

    #[test]
    fn o2_a_new_member_that_starts_after_its_join_point_is_reported() {
        let mut story = Story::team();
        story.message(D1, C1, m(1));
        let added = story.add(C1, D1, U3);
        story.send(D3, C1, m(1));
        story.commit(C1, D3, m(1));
        let late = story.display(D4, C1, 3); // "you were added" (#2) never shown
        let violation = single(ordering(&story), Invariant::O2DisplayOrder);
        assert_eq!(violation.witness, vec![added, late]);
        assert_eq!(
            violation.explanation,
            "device-4 displayed c1 #3 (m1 from d3) before #2."
        );
    }

    #[test]
    fn o2_a_rejoined_device_that_skips_its_join_point_is_reported() {
        let mut story = added_and_removed();
        let removal_shown = story.shown_at(D4, C1, 3);
        let readded = story.add(C1, D1, U3); // #5
        story.send(D1, C1, m(3));
        story.commit(C1, D1, m(3));
        let skip = story.display(D4, C1, 6);
        let violation = single(ordering(&story), Invariant::O2DisplayOrder);
        assert_eq!(violation.witness, vec![removal_shown, readded, skip]);
        assert_eq!(
            violation.explanation,
            "device-4 displayed c1 #6 (m3 from d1) before #5."
        );
    }

    #[test]
    fn o2_a_skipped_seq_inside_the_latest_period_is_reported() {
        let mut story = Story::rejoined();
        let first = story.display(D5, C1, 6);
        let skip = story.display(D5, C1, 8);
        let violation = single(ordering(&story), Invariant::O2DisplayOrder);
        assert_eq!(violation.witness, vec![first, skip]);
        assert_eq!(
            violation.explanation,
            "device-5 displayed c1 #8 (m2 from d3) before #7."
        );
    }

    #[test]
    fn o3_a_lost_first_message_committed_after_the_second_is_reported() {
        let mut story = Story::one_to_one();
        let send_first = story.send(D1, C1, m(1));
        let send_second = story.send(D1, C1, m(2));
        // m1 is lost on the way; m2 commits first, then m1's retransmission.
        let commit_second = story.commit(C1, D1, m(2));
        let commit_first = story.commit(C1, D1, m(1));
        let violations = ordering(&story);
        let violation = single(violations, Invariant::O3SenderFifo);
        assert_eq!(
            violation.witness,
            vec![send_first, send_second, commit_second, commit_first]
        );
        assert_eq!(
            violation.explanation,
            "d1 sent m1 (cs1) before m2 (cs2) in c1, but they were committed at #2 and #1."
        );
    }

    #[test]
    fn o3_other_senders_and_conversations_do_not_interleave() {
        let mut story = Story::group();
        story.send(D1, C1, m(1));
        story.send(D1, C2, m(2));
        story.send(D4, C1, m(1));
        story.commit(C2, D1, m(2));
        story.commit(C1, D4, m(1));
        story.commit(C1, D1, m(1));
        assert_eq!(ordering(&story), vec![]);
    }

    /// A device shows an uncommitted message: the shape of a history recorded from another IM
    /// system's clients, with no server events, where only O4 can compare devices.
    fn show(story: &mut Story, device: DeviceId, seq: u64, sender: DeviceId) -> usize {
        story.display_as(device, C1, seq, sender, m(1), &body_of(sender, m(1)))
    }

    #[test]
    fn o4_client_only_devices_that_agree_pass() {
        let mut story = Story::one_to_one();
        for device in [D1, D2, D3] {
            show(&mut story, device, 1, D1);
            show(&mut story, device, 2, D3);
        }
        assert_eq!(ordering(&story), vec![]);
    }

    #[test]
    fn o4_two_devices_showing_two_messages_in_opposite_orders_are_reported() {
        let mut story = Story::one_to_one();
        let d2_first = show(&mut story, D2, 1, D1);
        let d2_second = show(&mut story, D2, 2, D3);
        let d3_first = show(&mut story, D3, 1, D3);
        let d3_second = show(&mut story, D3, 2, D1);
        let violation = single(ordering(&story), Invariant::O4Agreement);
        assert_eq!(
            violation.witness,
            vec![d2_first, d2_second, d3_first, d3_second]
        );
        assert_eq!(
            violation.explanation,
            "device-2 displayed c1 m1 from d1 before m1 from d3, but device-3 displayed them the \
             other way round."
        );
    }

    #[test]
    fn o4_a_pair_many_devices_disagree_on_is_reported_once() {
        let mut story = Story::group();
        for device in [D1, D2, D3, D4] {
            show(&mut story, device, 1, D1);
            show(&mut story, device, 2, D3);
        }
        show(&mut story, D5, 1, D3);
        show(&mut story, D5, 2, D1);
        single(ordering(&story), Invariant::O4Agreement);
    }

    #[test]
    fn o4_devices_that_share_no_pair_agree() {
        let mut story = Story::group();
        // Three devices each saw two of three messages, in a cycle: no two devices share two
        // messages, so no two disagree (a cycle alone is not a violation of O4 as defined).
        show(&mut story, D1, 1, D1);
        show(&mut story, D1, 2, D3);
        show(&mut story, D3, 1, D3);
        show(&mut story, D3, 2, D4);
        show(&mut story, D4, 1, D4);
        show(&mut story, D4, 2, D1);
        assert_eq!(ordering(&story), vec![]);
    }
}
