//! Exactly-once invariants (DESIGN.md §6): no device shows a message twice (E1), the server
//! commits each message at most once however often it is retransmitted (E2), and every message a
//! device shows was really sent, by the device it names, with the content it shows (E3) — for a
//! group's membership entry, the content includes the change itself.
//!
//! A device that replays a whole stretch of a conversation (say after losing its local state) is
//! one problem, so E1 reports each unbroken run of repeated displays once.

use super::index::{device_name, event_at, Findings, MessageKey, Shown};
use super::{HistoryIndex, Invariant, Violation};
use crate::{History, Node};
use imsim_model::{ConvId, DeviceId, Event, MembershipChange, UserId};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    for (conv, device, shown) in index.displays() {
        no_duplicate_display(conv, device, shown, &mut findings);
    }
    idempotent_commit(index, &mut findings);
    no_phantom(history, index, &mut findings);
    findings.into_violations()
}

/// A run of displays that each repeat an earlier one, reported as one E1 violation.
struct Repeats<'a> {
    earlier: &'a Shown,
    first: &'a Shown,
    more: usize,
}

/// E1 for one device and conversation: a display repeats an earlier one if it shows the same
/// message, or another message at the same seq.
fn no_duplicate_display(conv: ConvId, device: DeviceId, shown: &[Shown], findings: &mut Findings) {
    let mut by_message: BTreeMap<MessageKey, &Shown> = BTreeMap::new();
    let mut by_seq = BTreeMap::new();
    let mut repeats: Option<Repeats> = None;
    for display in shown {
        let earlier = by_message
            .get(&display.message)
            .or_else(|| by_seq.get(&display.seq));
        match (earlier, &mut repeats) {
            (Some(_), Some(run)) => run.more += 1,
            (Some(&earlier), None) => {
                repeats = Some(Repeats {
                    earlier,
                    first: display,
                    more: 0,
                });
            }
            (None, _) => {
                if let Some(run) = repeats.take() {
                    report_repeats(conv, device, &run, findings);
                }
            }
        }
        by_message.entry(display.message).or_insert(display);
        by_seq.entry(display.seq).or_insert(display);
    }
    if let Some(run) = repeats {
        report_repeats(conv, device, &run, findings);
    }
}

fn report_repeats(conv: ConvId, device: DeviceId, run: &Repeats, findings: &mut Findings) {
    findings.report(Invariant::E1NoDuplicateDisplay, || {
        let (earlier, first) = (run.earlier, run.first);
        let device = device_name(device);
        let mut text = if earlier.message != first.message {
            format!(
                "{device} displayed {conv} {} twice: as {} and then as {}.",
                first.seq, earlier.message, first.message
            )
        } else if earlier.seq != first.seq {
            format!(
                "{device} displayed {} twice in {conv}: at {} and again at {}.",
                first.message, earlier.seq, first.seq
            )
        } else {
            format!(
                "{device} displayed {conv} {} ({}) twice.",
                first.seq, first.message
            )
        };
        if run.more > 0 {
            text.push_str(&format!(
                " The next {} displays repeated earlier ones too.",
                run.more
            ));
        }
        (text, vec![earlier.record, first.record])
    });
}

/// E2: a message's second commit is a violation; later ones add nothing new.
fn idempotent_commit(index: &HistoryIndex, findings: &mut Findings) {
    let mut reported: BTreeSet<MessageKey> = BTreeSet::new();
    for commit in index.commits() {
        let Some(first) = index.first_commit(commit.message) else {
            continue;
        };
        if first.record == commit.record || !reported.insert(commit.message) {
            continue;
        }
        findings.report(Invariant::E2IdempotentCommit, || {
            let text = format!(
                "The server committed {} twice: at {} {} and again at {} {}.",
                commit.message, first.conv, first.seq, commit.conv, commit.seq
            );
            (text, vec![first.record, commit.record])
        });
    }
}

/// E3: each display matches its claimed sender's send. A bad message is usually shown by every
/// member device, so each message is reported once, at the first display that gets it wrong.
fn no_phantom(history: &History, index: &HistoryIndex, findings: &mut Findings) {
    let mut reported: BTreeSet<MessageKey> = BTreeSet::new();
    for (record, line, event) in history.protocol_events() {
        let (
            Node::Device(device),
            Event::Displayed {
                conv,
                seq,
                sender_user,
                sender_device,
                client_msg_id,
                body,
                ..
            },
        ) = (line.node, event)
        else {
            continue;
        };
        let message = MessageKey::new(*sender_device, *client_msg_id);
        let claim = Claim {
            record,
            conv: *conv,
            sender_user: *sender_user,
            message,
            body,
        };
        let Some((problem, witness)) = mismatch(history, index, &claim) else {
            continue;
        };
        if reported.insert(message) {
            findings.report(Invariant::E3NoPhantom, || {
                let device = device_name(device);
                let text = format!("{device} displayed {conv} {seq} as {message}, {problem}");
                (text, witness)
            });
        }
    }
}

/// What a display says about its message.
struct Claim<'a> {
    record: usize,
    conv: ConvId,
    sender_user: UserId,
    message: MessageKey,
    body: &'a str,
}

/// How a display differs from its send, as the end of a sentence and the witness records.
fn mismatch(
    history: &History,
    index: &HistoryIndex,
    claim: &Claim,
) -> Option<(String, Vec<usize>)> {
    let sender = claim.message.sender_device;
    let id = claim.message.client_msg_id;
    let Some(send) = index.send(claim.message) else {
        return Some((format!("but {sender} never sent {id}."), vec![claim.record]));
    };
    let witness = vec![send.record, claim.record];
    if send.record > claim.record {
        return Some((format!("before {sender} sent it."), witness));
    }
    if send.conv != claim.conv {
        return Some((format!("but {sender} sent {id} in {}.", send.conv), witness));
    }
    if let Some(Event::SendRequested { body, .. }) = event_at(history, send.record) {
        if body != claim.body {
            let text = format!(
                "with body {:?}, but {sender} sent {:?}.",
                preview(claim.body),
                preview(body)
            );
            return Some((text, witness));
        }
    }
    // A display does not record the change it rendered; the device renders what was committed.
    let commit = index.first_commit(claim.message);
    if let Some(commit) = commit.filter(|commit| commit.change != send.change) {
        let text = format!(
            "committed as {}, but {sender} sent {}.",
            describe_change(commit.change),
            describe_change(send.change)
        );
        return Some((text, vec![send.record, commit.record, claim.record]));
    }
    let owner = index.user_of(sender);
    if index.topology_known() && owner != Some(claim.sender_user) {
        let text = match owner {
            Some(owner) => format!(
                "from user {}, but {sender} belongs to {owner}.",
                claim.sender_user
            ),
            None => format!(
                "from user {}, but {sender} is not in the topology.",
                claim.sender_user
            ),
        };
        let topology = index.run_started().into_iter();
        return Some((text, topology.chain([claim.record]).collect()));
    }
    None
}

fn describe_change(change: Option<MembershipChange>) -> String {
    match change {
        None => "a plain message".to_string(),
        Some(MembershipChange::Add(user)) => format!("adding {user}"),
        Some(MembershipChange::Remove(user)) => format!("removing {user}"),
        Some(MembershipChange::Leave) => "leaving".to_string(),
    }
}

/// The start of a body, so one long body does not swamp an explanation.
fn preview(body: &str) -> String {
    const CHARS_MAX: usize = 40;
    if body.chars().count() <= CHARS_MAX {
        return body.to_string();
    }
    let start: String = body.chars().take(CHARS_MAX).collect();
    format!("{start}…")
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use imsim_model::ClientSeq;

    fn exactly_once(story: &Story) -> Vec<Violation> {
        run(story, check)
    }

    /// d1 sends m1..=count to c1 and the server commits them at #1..; nobody has shown anything.
    fn committed(count: u64) -> Story {
        let mut story = Story::one_to_one();
        for id in 1..=count {
            story.send(D1, C1, m(id));
            story.commit(C1, D1, m(id));
            story.ack(D1, C1, m(id), id);
        }
        story
    }

    #[test]
    fn a_correct_conversation_with_a_retransmission_and_a_restart_passes() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.send(D3, C1, m(1));
        story.commit(C1, D3, m(1));
        // The ack was lost; the retransmission is recognised and acked, not committed again.
        story.ack(D3, C1, m(1), 2);
        story.crash(Node::Device(D2));
        story.restart(Node::Device(D2));
        story.deliver(C1, 2);
        story.message(D2, C1, m(1));
        story.finish();
        assert_eq!(exactly_once(&story), vec![]);
    }

    #[test]
    fn e1_a_message_shown_twice_is_reported() {
        let mut story = committed(1);
        let first = story.display(D3, C1, 1);
        let again = story.display(D3, C1, 1);
        let violation = single(exactly_once(&story), Invariant::E1NoDuplicateDisplay);
        assert_eq!(violation.witness, vec![first, again]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #1 (m1 from d1) twice."
        );
    }

    #[test]
    fn e1_a_message_shown_at_two_seqs_is_reported() {
        let mut story = committed(1);
        let first = story.display(D3, C1, 1);
        let again = story.display_as(D3, C1, 2, D1, m(1), &body_of(D1, m(1)));
        let violation = single(exactly_once(&story), Invariant::E1NoDuplicateDisplay);
        assert_eq!(violation.witness, vec![first, again]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed m1 from d1 twice in c1: at #1 and again at #2."
        );
    }

    #[test]
    fn e1_two_messages_shown_at_one_seq_are_reported() {
        let mut story = committed(2);
        let first = story.display(D3, C1, 1);
        let again = story.display_as(D3, C1, 1, D1, m(2), &body_of(D1, m(2)));
        let violation = single(exactly_once(&story), Invariant::E1NoDuplicateDisplay);
        assert_eq!(violation.witness, vec![first, again]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #1 twice: as m1 from d1 and then as m2 from d1."
        );
    }

    #[test]
    fn e1_a_device_replaying_after_a_restart_is_one_violation() {
        let mut story = committed(4);
        let first = story.display(D3, C1, 1);
        story.display(D3, C1, 2);
        story.display(D3, C1, 3);
        story.crash(Node::Device(D3));
        story.restart(Node::Device(D3));
        // The device lost its local state and shows the conversation again from #1.
        let again = story.display(D3, C1, 1);
        story.display(D3, C1, 2);
        story.display(D3, C1, 3);
        story.display(D3, C1, 4);
        let violation = single(exactly_once(&story), Invariant::E1NoDuplicateDisplay);
        assert_eq!(violation.witness, vec![first, again]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #1 (m1 from d1) twice. The next 2 displays repeated earlier \
             ones too."
        );
    }

    #[test]
    fn e1_the_same_message_on_two_devices_is_fine() {
        let mut story = committed(1);
        story.display(D2, C1, 1);
        story.display(D3, C1, 1);
        assert_eq!(exactly_once(&story), vec![]);
    }

    #[test]
    fn e2_a_retransmission_committed_again_is_reported_once() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        let first = story.commit(C1, D1, m(1));
        // The ack was lost and the server did not recognise the retransmissions.
        let second = story.commit(C1, D1, m(1));
        story.commit(C1, D1, m(1));
        let violation = single(exactly_once(&story), Invariant::E2IdempotentCommit);
        assert_eq!(violation.witness, vec![first, second]);
        assert_eq!(
            violation.explanation,
            "The server committed m1 from d1 twice: at c1 #1 and again at c1 #2."
        );
    }

    #[test]
    fn e2_equal_ids_from_different_devices_are_different_messages() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.send(D3, C1, m(1));
        story.commit(C1, D1, m(1));
        story.commit(C1, D3, m(1));
        assert_eq!(exactly_once(&story), vec![]);
    }

    #[test]
    fn e3_a_message_nobody_sent_is_reported() {
        let mut story = committed(1);
        let phantom = story.display_as(D3, C1, 2, D2, m(9), "hi");
        let violation = single(exactly_once(&story), Invariant::E3NoPhantom);
        assert_eq!(violation.witness, vec![phantom]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #2 as m9 from d2, but d2 never sent m9."
        );
    }

    #[test]
    fn e3_a_changed_body_is_reported_once_for_all_devices() {
        let mut story = Story::one_to_one();
        let send = story.send_as(D1, C1, m(1), ClientSeq(1), "see you at 5");
        story.commit(C1, D1, m(1));
        let first = story.display_as(D3, C1, 1, D1, m(1), "see you at 6");
        story.display_as(D2, C1, 1, D1, m(1), "see you at 6");
        let violation = single(exactly_once(&story), Invariant::E3NoPhantom);
        assert_eq!(violation.witness, vec![send, first]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #1 as m1 from d1, with body \"see you at 6\", but d1 sent \
             \"see you at 5\"."
        );
    }

    #[test]
    fn e3_a_message_shown_before_it_was_sent_is_reported() {
        let mut story = Story::one_to_one();
        let early = story.display_as(D3, C1, 1, D1, m(1), &body_of(D1, m(1)));
        let send = story.send(D1, C1, m(1));
        let violation = single(exactly_once(&story), Invariant::E3NoPhantom);
        assert_eq!(violation.witness, vec![early, send]);
        assert!(violation.explanation.ends_with("before d1 sent it."));
    }

    #[test]
    fn e3_a_message_shown_in_another_conversation_is_reported() {
        let mut story = Story::group();
        let send = story.send(D1, C2, m(1));
        let shown = story.display_as(D3, C1, 1, D1, m(1), &body_of(D1, m(1)));
        let violation = single(exactly_once(&story), Invariant::E3NoPhantom);
        assert_eq!(violation.witness, vec![send, shown]);
        assert!(violation.explanation.ends_with("but d1 sent m1 in c2."));
    }

    #[test]
    fn e3_a_membership_entry_committed_with_another_change_is_reported() {
        let mut story = Story::team();
        story.send_change(D1, C1, MembershipChange::Add(U3));
        let send = story.history().records.len() - 1;
        // The server mixed up the subject: u1 asked to add u3, the timeline says u4.
        let commit =
            story.commit_changed(C1, D1, m(CHANGE_ID_FIRST), Some(MembershipChange::Add(U4)));
        let shown = story.display(D3, C1, 1);
        story.display(D6, C1, 1); // the same message: reported once
        let violation = single(exactly_once(&story), Invariant::E3NoPhantom);
        assert_eq!(violation.witness, vec![send, commit, shown]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #1 as m101 from d1, committed as adding u4, but d1 sent adding \
             u3."
        );
    }

    #[test]
    fn e3_a_plain_message_committed_as_a_change_is_reported() {
        let mut story = Story::team();
        let send = story.send(D1, C1, m(1));
        let commit = story.commit_changed(C1, D1, m(1), Some(MembershipChange::Remove(U2)));
        let shown = story.display(D3, C1, 1);
        let violation = single(exactly_once(&story), Invariant::E3NoPhantom);
        assert_eq!(violation.witness, vec![send, commit, shown]);
        assert!(violation
            .explanation
            .ends_with("committed as removing u2, but d1 sent a plain message."));
    }

    #[test]
    fn e3_a_membership_entry_shown_with_another_body_is_reported() {
        let mut story = Story::team();
        let id = story.send_change(D1, C1, MembershipChange::Add(U3));
        let send = story.history().records.len() - 1;
        story.commit(C1, D1, id);
        let shown = story.display_as(D3, C1, 1, D1, id, "adds u4");
        let violation = single(exactly_once(&story), Invariant::E3NoPhantom);
        assert_eq!(violation.witness, vec![send, shown]);
        assert!(violation
            .explanation
            .ends_with("with body \"adds u4\", but d1 sent \"adds u3\"."));
    }

    #[test]
    fn e3_membership_entries_shown_as_sent_pass() {
        let mut story = Story::team();
        story.add(C1, D1, U3);
        story.deliver(C1, 1);
        story.leave(C1, D4);
        story.deliver(C1, 2);
        story.remove(C1, D3, U1);
        story.deliver(C1, 3);
        assert_eq!(exactly_once(&story), vec![]);
    }

    #[test]
    fn e3_a_wrong_sender_user_is_reported() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.commit(C1, D1, m(1));
        let body = body_of(D1, m(1));
        let shown = story.display_from(D3, C1, 1, U2, D1, m(1), &body);
        let violation = single(exactly_once(&story), Invariant::E3NoPhantom);
        let run_started = 0;
        assert_eq!(violation.witness, vec![run_started, shown]);
        assert_eq!(
            violation.explanation,
            "device-3 displayed c1 #1 as m1 from d1, from user u2, but d1 belongs to u1."
        );
    }
}
