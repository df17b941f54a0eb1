//! Who may see which entries of a conversation, worked out from the history alone: the
//! topology's founding members and the committed membership changes (DESIGN.md §4 "Groups").
//! A user's membership **periods** are `join ..= leave`: a founding member joins at seq 1, an
//! `Add` at seq s starts a period at s, a `Remove` or `Leave` at r ends the open one at r. The
//! user may see seq s when one of its periods contains s.
//!
//! This is the checkers' own reading of the rule, not `imsim_model::Membership`: an oracle that
//! asked the code under test would share its bugs, and the model's type asserts on the changes a
//! broken server might commit, where a checker must carry on. A change that changes nothing (an
//! `Add` of a member, a `Remove` of a non-member) is ignored, as the protocol would refuse it.

use imsim_model::{ConvId, MembershipChange, Seq, UserId};
use std::collections::BTreeMap;

/// `join ..= leave` (open while `leave` is `None`), with the commits that opened and closed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub join: Seq,
    pub leave: Option<Seq>,
    /// The record of the commit that added the user; `None` for a founding member.
    pub joined_by: Option<usize>,
    /// The record of the commit that removed the user (or of its leaving).
    pub left_by: Option<usize>,
}

impl Period {
    pub fn contains(&self, seq: Seq) -> bool {
        self.join <= seq && self.leave.is_none_or(|leave| seq <= leave)
    }
}

/// One user's periods in one conversation, in seq order and disjoint; only the last may be open.
/// A user has few periods (each is a membership change), so lookups are a binary search of a
/// short list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Periods {
    periods: Vec<Period>,
}

impl Periods {
    /// Never a member.
    pub const fn never() -> Periods {
        Periods {
            periods: Vec::new(),
        }
    }

    /// A member from seq 1 on, never removed.
    pub fn founding() -> Periods {
        Periods {
            periods: vec![Period {
                join: Seq(1),
                leave: None,
                joined_by: None,
                left_by: None,
            }],
        }
    }

    pub fn all(&self) -> &[Period] {
        &self.periods
    }

    pub fn latest(&self) -> Option<&Period> {
        self.periods.last()
    }

    /// The latest period that began at or before `seq`; it contains `seq` unless it ended
    /// before.
    pub fn started_by(&self, seq: Seq) -> Option<&Period> {
        let after = self.periods.partition_point(|period| period.join <= seq);
        after.checked_sub(1).map(|at| &self.periods[at])
    }

    /// The period that contains `seq`, if `seq` is visible.
    pub fn containing(&self, seq: Seq) -> Option<&Period> {
        self.started_by(seq).filter(|period| period.contains(seq))
    }

    pub fn visible(&self, seq: Seq) -> bool {
        self.containing(seq).is_some()
    }

    /// The first period that begins after `seq`.
    pub fn next_after(&self, seq: Seq) -> Option<&Period> {
        let after = self.periods.partition_point(|period| period.join <= seq);
        self.periods.get(after)
    }

    fn is_member(&self) -> bool {
        self.latest().is_some_and(|period| period.leave.is_none())
    }

    fn join(&mut self, seq: Seq, record: usize) {
        if self.is_member() {
            return; // already a member: the change changes nothing
        }
        self.periods.push(Period {
            join: seq,
            leave: None,
            joined_by: Some(record),
            left_by: None,
        });
    }

    fn end(&mut self, seq: Seq, record: usize) {
        let Some(open) = self.periods.last_mut() else {
            return; // never a member: nothing to end
        };
        // Commits are applied in seq order, so only a commit at seq 0 (an O1 violation) can come
        // before a founding member's join; it cannot end what has not begun.
        if open.leave.is_none() && open.join <= seq {
            open.leave = Some(seq);
            open.left_by = Some(record);
        }
    }
}

/// One committed membership change, as [`membership`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeAt {
    /// The history record of its commit.
    pub record: usize,
    pub conv: ConvId,
    pub seq: Seq,
    /// The user the server committed it for (who left, or who added or removed someone).
    pub sender_user: UserId,
    pub change: MembershipChange,
}

/// Every user's periods in every conversation, from the founding members and the committed
/// changes in (conversation, seq) order. Commits at one seq (an O1 violation) are applied in the order
/// given; nothing here panics on a broken history.
pub fn membership<'a>(
    founders: impl IntoIterator<Item = (ConvId, &'a [UserId])>,
    changes_in_seq_order: impl IntoIterator<Item = ChangeAt>,
) -> BTreeMap<(ConvId, UserId), Periods> {
    let mut periods: BTreeMap<(ConvId, UserId), Periods> = BTreeMap::new();
    for (conv, members) in founders {
        for user in members {
            periods
                .entry((conv, *user))
                .or_insert_with(Periods::founding);
        }
    }
    for commit in changes_in_seq_order {
        let change = commit.change;
        let subject = change.subject(commit.sender_user);
        let user_periods = periods.entry((commit.conv, subject)).or_default();
        match change {
            MembershipChange::Add(_) => user_periods.join(commit.seq, commit.record),
            MembershipChange::Remove(_) | MembershipChange::Leave => {
                user_periods.end(commit.seq, commit.record)
            }
        }
    }
    // A user whose every change had no effect has no period; it was never a member.
    periods.retain(|_, user_periods| !user_periods.all().is_empty());
    periods
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: ConvId = ConvId(1);
    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);

    /// A commit of `change` by `sender` at `seq`; its record number is the seq times ten.
    fn change(seq: u64, sender: UserId, change: MembershipChange) -> ChangeAt {
        ChangeAt {
            record: seq as usize * 10,
            conv: C1,
            seq: Seq(seq),
            sender_user: sender,
            change,
        }
    }

    fn visible(periods: &Periods, through: u64) -> Vec<u64> {
        (0..=through)
            .filter(|seq| periods.visible(Seq(*seq)))
            .collect()
    }

    #[test]
    fn a_removed_and_readded_member_sees_only_its_periods() {
        let commits = [
            change(3, ALICE, MembershipChange::Add(BOB)),
            change(5, BOB, MembershipChange::Leave),
            change(8, ALICE, MembershipChange::Add(BOB)),
        ];
        let founders = [(C1, &[ALICE][..])];
        let periods = membership(founders, commits);
        let bob = &periods[&(C1, BOB)];
        assert_eq!(visible(bob, 10), vec![3, 4, 5, 8, 9, 10]);
        assert_eq!(visible(&periods[&(C1, ALICE)], 3), vec![1, 2, 3]);
        assert_eq!(bob.started_by(Seq(7)).map(|p| p.join), Some(Seq(3)));
        assert_eq!(bob.started_by(Seq(2)), None);
        assert_eq!(bob.next_after(Seq(5)).map(|p| p.joined_by), Some(Some(80)));
        let first = bob.all()[0];
        assert_eq!((first.joined_by, first.left_by), (Some(30), Some(50)));
        assert_eq!(
            bob.latest().map(|p| (p.join, p.leave)),
            Some((Seq(8), None))
        );
    }

    #[test]
    fn changes_that_change_nothing_are_ignored() {
        let commits = [
            change(0, ALICE, MembershipChange::Leave),
            change(2, ALICE, MembershipChange::Add(ALICE)),
            change(3, ALICE, MembershipChange::Remove(BOB)),
            change(4, BOB, MembershipChange::Leave),
        ];
        let founders = [(C1, &[ALICE][..])];
        let periods = membership(founders, commits);
        assert_eq!(periods[&(C1, ALICE)], Periods::founding());
        assert!(!periods.contains_key(&(C1, BOB)), "never a member");
    }
}
