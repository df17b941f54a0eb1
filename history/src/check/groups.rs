//! Group access invariants (DESIGN.md §6 "Groups and access"): a device displays an entry only
//! if its user may see it (G1), and the server commits an entry only from a member (G2).
//!
//! "May see" is the membership periods the index derives from the topology's founding members
//! and the committed changes: a user sees seq s when one of its periods `join ..= leave`
//! contains s, so an added user sees its own add, a removed user its own removal, and nothing
//! between two periods. Both invariants need to know who is who, so a history without a topology
//! (recorded elsewhere) is not judged; a conversation the topology does not list has no members.

use super::index::{device_name, Findings, Shown};
use super::periods::Periods;
use super::{HistoryIndex, Invariant, Violation};
use crate::History;
use imsim_model::{ConvId, DeviceId, MembershipChange, Seq};

pub(super) fn check(_history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    for (conv, device, shown) in index.displays() {
        member_only_delivery(index, conv, device, shown, &mut findings);
    }
    member_only_send(index, &mut findings);
    findings.into_violations()
}

/// G1 for one device and conversation. A device that keeps receiving after its user's removal
/// usually shows every later entry, so each device and conversation is reported once, at the
/// first display it should not have made, with the count of the others.
fn member_only_delivery(
    index: &HistoryIndex,
    conv: ConvId,
    device: DeviceId,
    shown: &[Shown],
    findings: &mut Findings,
) {
    let Some(user) = index.user_of(device) else {
        return; // no topology, or a device it does not list: whose membership is unknown
    };
    let periods = index.periods(conv, user);
    let mut unseeable = shown.iter().filter(|display| !periods.visible(display.seq));
    let Some(first) = unseeable.next() else {
        return;
    };
    let more = unseeable.count();
    findings.report(Invariant::G1MemberOnlyDelivery, || {
        let (why, reason) = not_a_member(index, periods, first.seq);
        let mut text = format!(
            "{} displayed {conv} {} ({}), but {user} was not a member at {}: {why}.",
            device_name(device),
            first.seq,
            first.message,
            first.seq
        );
        if more > 0 {
            text.push_str(&format!(
                " It displayed {more} more that its user may not see."
            ));
        }
        (text, reason.into_iter().chain([first.record]).collect())
    });
}

/// Why `user` may not see `seq`, as the end of a sentence, and the record that shows it: the
/// change that ended its last period before `seq`, the later change that added it, or the
/// topology that does not name it as a founder.
fn not_a_member(index: &HistoryIndex, periods: &Periods, seq: Seq) -> (String, Option<usize>) {
    if let Some(period) = periods.started_by(seq) {
        if let Some(leave) = period.leave.filter(|leave| *leave < seq) {
            return (
                format!("its membership ended at {leave}"),
                period.left_by.or(index.run_started()),
            );
        }
    }
    match periods.next_after(seq) {
        Some(period) if period.joined_by.is_some() => (
            format!("it was added only at {}", period.join),
            period.joined_by,
        ),
        // A founding member, and `seq` is before the first (seq 0: O1 reports that too).
        Some(period) => (
            format!("its membership began at {}", period.join),
            index.run_started(),
        ),
        None => ("it was never a member".to_string(), index.run_started()),
    }
}

/// G2: every entry is committed from a user who was a member at its seq. A `Leave` at s is
/// still its sender's (the period ends at s, inclusive); an `Add` of oneself that opens a period
/// is a non-member joining on its own. A repeated commit of one message is E2's to report.
fn member_only_send(index: &HistoryIndex, findings: &mut Findings) {
    if !index.topology_known() {
        return;
    }
    for commit in index.commits() {
        if index.first_commit(commit.message).map(|first| first.record) != Some(commit.record) {
            continue;
        }
        let user = commit.sender_user;
        let periods = index.periods(commit.conv, user);
        let self_added = |join: Seq, joined_by: Option<usize>| {
            join == commit.seq && joined_by == Some(commit.record)
        };
        let member = periods
            .containing(commit.seq)
            .is_some_and(|period| !self_added(period.join, period.joined_by));
        if member {
            continue;
        }
        findings.report(Invariant::G2MemberOnlySend, || {
            let (why, reason) = match commit.change {
                Some(MembershipChange::Add(added)) if added == user => {
                    self_added_reason(index, periods, commit.seq)
                }
                _ => not_a_member(index, periods, commit.seq),
            };
            let text = format!(
                "The server committed {} {} ({}) from {user}, who was not a member: {why}.",
                commit.conv, commit.seq, commit.message
            );
            (text, reason.into_iter().chain([commit.record]).collect())
        });
    }
}

/// Why a user who added itself at `seq` was not a member just before: the end of its previous
/// period, or the topology that does not name it as a founder.
fn self_added_reason(index: &HistoryIndex, periods: &Periods, seq: Seq) -> (String, Option<usize>) {
    let before = periods.started_by(Seq(seq.0.saturating_sub(1)));
    match before.and_then(|period| period.leave.zip(period.left_by)) {
        Some((leave, left_by)) if leave < seq => (
            format!("it added itself after its membership ended at {leave}"),
            Some(left_by),
        ),
        _ => ("it added itself".to_string(), index.run_started()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn groups(story: &Story) -> Vec<Violation> {
        run(story, check)
    }

    /// u1 adds u3 at #2 and removes it at #3; u2 then talks at #4 and u1 at #5, which u3 may not
    /// see. Returns the story and the removal's commit record.
    fn removed() -> (Story, usize) {
        let mut story = Story::team();
        story.message(D1, C1, m(1));
        story.add(C1, D1, U3);
        story.deliver(C1, 2);
        let removal = story.remove(C1, D1, U3);
        story.deliver(C1, 3);
        story.message(D3, C1, m(1));
        story.message(D1, C1, m(2));
        (story, removal)
    }

    #[test]
    fn adds_removals_and_a_rejoin_delivered_to_exactly_the_members_pass() {
        let mut story = Story::rejoined();
        for seq in 6..=8 {
            story.deliver_to(C1, seq, &[D5]);
        }
        story.add(C1, D5, U4);
        story.deliver(C1, 9);
        story.message(D6, C1, m(1));
        story.leave(C1, D4); // u3 sees its own leaving, and nothing after it
        story.deliver(C1, 11);
        story.message(D1, C1, m(3));
        assert_eq!(groups(&story), vec![]);
    }

    #[test]
    fn g1_displays_after_a_removal_are_one_violation_with_the_removal_as_witness() {
        let (mut story, removal) = removed();
        // The server kept pushing to d4 after u3's removal at #3.
        let leaked = story.display(D4, C1, 4);
        story.display(D4, C1, 5);
        let violation = single(groups(&story), Invariant::G1MemberOnlyDelivery);
        assert_eq!(violation.witness, vec![removal, leaked]);
        assert_eq!(
            violation.explanation,
            "device-4 displayed c1 #4 (m1 from d3), but u3 was not a member at #4: its \
             membership ended at #3. It displayed 1 more that its user may not see."
        );
    }

    #[test]
    fn g1_history_from_before_the_join_is_reported_with_the_add_as_witness() {
        let mut story = Story::team();
        story.message(D1, C1, m(1));
        let added = story.add(C1, D1, U3);
        // A new member pulled the group's history from seq 1 instead of from its join point.
        let early = story.display(D4, C1, 1);
        let violation = single(groups(&story), Invariant::G1MemberOnlyDelivery);
        assert_eq!(violation.witness, vec![added, early]);
        assert_eq!(
            violation.explanation,
            "device-4 displayed c1 #1 (m1 from d1), but u3 was not a member at #1: it was added \
             only at #2."
        );
    }

    #[test]
    fn g1_a_user_never_in_the_group_is_reported_with_the_topology_as_witness() {
        let mut story = Story::team();
        story.message(D1, C1, m(1));
        let shown = story.display(D6, C1, 1);
        let violation = single(groups(&story), Invariant::G1MemberOnlyDelivery);
        let run_started = 0;
        assert_eq!(violation.witness, vec![run_started, shown]);
        assert!(violation.explanation.ends_with("it was never a member."));
    }

    #[test]
    fn g1_a_history_without_topology_is_not_judged() {
        let mut story = Story::team();
        story.message(D1, C1, m(1));
        story.display(D6, C1, 1);
        let mut history = story.history().clone();
        history.records.remove(0); // the RunStarted with the topology
        let index = HistoryIndex::new(&history);
        assert_eq!(check(&history, &index), vec![]);
    }

    #[test]
    fn g2_a_message_committed_from_a_removed_member_is_reported() {
        let (mut story, removal) = removed();
        // d4 had the message in its outbox; the server did not check membership at commit.
        story.send(D4, C1, m(1));
        let commit = story.commit(C1, D4, m(1));
        let violation = single(groups(&story), Invariant::G2MemberOnlySend);
        assert_eq!(violation.witness, vec![removal, commit]);
        assert_eq!(
            violation.explanation,
            "The server committed c1 #6 (m1 from d4) from u3, who was not a member: its \
             membership ended at #3."
        );
    }

    #[test]
    fn g2_a_message_from_a_user_never_in_the_group_is_reported() {
        let mut story = Story::team();
        story.send(D6, C1, m(1));
        let commit = story.commit(C1, D6, m(1));
        let violation = single(groups(&story), Invariant::G2MemberOnlySend);
        assert_eq!(violation.witness, vec![0, commit]);
        assert!(violation.explanation.ends_with("it was never a member."));
    }

    #[test]
    fn g2_a_non_member_adding_itself_is_reported() {
        let mut story = Story::team();
        story.message(D1, C1, m(1));
        let commit = story.add(C1, D6, U4);
        let violation = single(groups(&story), Invariant::G2MemberOnlySend);
        assert_eq!(violation.witness, vec![0, commit]);
        assert_eq!(
            violation.explanation,
            "The server committed c1 #2 (m101 from d6) from u4, who was not a member: it added \
             itself."
        );
    }

    #[test]
    fn broken_membership_commits_are_judged_without_panicking() {
        let mut story = Story::team();
        let leave = story.send_change(D1, C1, MembershipChange::Leave);
        story.commit_at(C1, 0, D1, leave); // seq 0, before u1's period began: no effect
        let add = story.send_change(D3, C1, MembershipChange::Add(U1));
        story.commit(C1, D3, add); // u1 is a member already: no effect
        let remove = story.send_change(D1, C1, MembershipChange::Remove(U4));
        story.commit(C1, D1, remove); // u4 never was: no effect
        let (first, second) = (
            story.send_change(D1, C1, MembershipChange::Add(U3)),
            story.send_change(D3, C1, MembershipChange::Remove(U3)),
        );
        story.commit_at(C1, 3, D1, first);
        story.commit_at(C1, 3, D3, second); // two changes at one seq: u3 sees #3 only
        story.deliver(C1, 3);
        story.finish();
        let index = HistoryIndex::new(story.history());
        let spans: Vec<(Seq, Option<Seq>)> = (index.periods(C1, U1).all().iter())
            .chain(index.periods(C1, U3).all())
            .map(|period| (period.join, period.leave))
            .collect();
        assert_eq!(spans, vec![(Seq(1), None), (Seq(3), Some(Seq(3)))]);
        let violations = crate::check::check_all(story.history());
        assert!(violations
            .iter()
            .any(|violation| violation.invariant == Invariant::O1SeqMonotonic));
        // Only the entry at #0 is from a non-member: nobody is a member before seq 1.
        let g2: Vec<&Violation> = violations
            .iter()
            .filter(|violation| violation.invariant == Invariant::G2MemberOnlySend)
            .collect();
        assert_eq!(g2.len(), 1, "{violations:#?}");
        assert!(g2[0].explanation.contains("c1 #0"), "{}", g2[0].explanation);
    }

    #[test]
    fn g2_a_removed_member_adding_itself_back_is_reported_with_its_removal() {
        let (mut story, removal) = removed();
        let commit = story.add(C1, D5, U3);
        let violation = single(groups(&story), Invariant::G2MemberOnlySend);
        assert_eq!(violation.witness, vec![removal, commit]);
        assert!(violation
            .explanation
            .ends_with("it added itself after its membership ended at #3."));
    }

    #[test]
    fn g2_a_repeated_commit_is_left_to_e2() {
        let (mut story, _) = removed();
        story.send(D4, C1, m(1));
        story.commit(C1, D4, m(1));
        story.commit(C1, D4, m(1)); // E2; one G2 for the message
        let violations = groups(&story);
        assert_eq!(violations.len(), 1, "{violations:#?}");
    }
}
