//! Who may see what of a conversation. Membership changes are timeline entries, so membership is
//! a function of the seq: a user sees seq `s` when one of its membership periods contains `s`.
//! A period starts at the entry that added the user (or at seq 1 for a founding member) and ends
//! at the entry that removed it, both included: the added user sees "you were added", the
//! removed one sees "you were removed", and nothing in between two periods.

use crate::ids::{Seq, UserId};
use crate::wire::{MembershipChange, Rejection};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Every user who was ever a member, with its periods in seq order; only the last may be
    /// open.
    periods: BTreeMap<UserId, Vec<Period>>,
    current: BTreeSet<UserId>,
}

/// `join ..= leave` (open while `leave` is `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub join: Seq,
    pub leave: Option<Seq>,
}

impl Membership {
    /// A conversation whose members were there from its first seq on.
    pub fn founded(members: &[UserId]) -> Membership {
        let mut membership = Membership::default();
        for user in members {
            membership.periods.insert(
                *user,
                vec![Period {
                    join: Seq(1),
                    leave: None,
                }],
            );
            membership.current.insert(*user);
        }
        membership
    }

    pub fn is_member(&self, user: UserId) -> bool {
        self.current.contains(&user)
    }

    /// The members now, in user order.
    pub fn members(&self) -> impl Iterator<Item = UserId> + '_ {
        self.current.iter().copied()
    }

    pub fn member_count(&self) -> usize {
        self.current.len()
    }

    /// Whether `change`, sent by `sender` (a member), would change anything.
    pub fn check(&self, sender: UserId, change: MembershipChange) -> Result<(), Rejection> {
        debug_assert!(self.is_member(sender), "only members change membership");
        let subject = change.subject(sender);
        match change {
            MembershipChange::Add(_) if self.is_member(subject) => Err(Rejection::NoEffect),
            MembershipChange::Remove(_) if !self.is_member(subject) => Err(Rejection::NoEffect),
            _ => Ok(()),
        }
    }

    /// Applies a committed change at `seq`.
    pub fn apply(&mut self, seq: Seq, sender: UserId, change: MembershipChange) {
        let subject = change.subject(sender);
        let periods = self.periods.entry(subject).or_default();
        match change {
            MembershipChange::Add(_) => {
                assert!(self.current.insert(subject), "added a member twice");
                periods.push(Period {
                    join: seq,
                    leave: None,
                });
            }
            MembershipChange::Remove(_) | MembershipChange::Leave => {
                assert!(self.current.remove(&subject), "removed a non-member");
                let open = periods.last_mut().expect("a member has a period");
                assert!(open.leave.is_none() && open.join <= seq);
                open.leave = Some(seq);
            }
        }
    }

    /// Whether `user` may see the entry at `seq`.
    pub fn visible(&self, user: UserId, seq: Seq) -> bool {
        self.periods.get(&user).is_some_and(|periods| {
            periods
                .iter()
                .any(|p| p.join <= seq && p.leave.is_none_or(|leave| seq <= leave))
        })
    }

    /// The users who may see the entry at `seq`.
    pub fn audience(&self, seq: Seq) -> impl Iterator<Item = UserId> + '_ {
        self.periods
            .keys()
            .copied()
            .filter(move |user| self.visible(*user, seq))
    }

    /// The users who may see at least one entry in `from ..= to`.
    pub fn audience_between(&self, from: Seq, to: Seq) -> impl Iterator<Item = UserId> + '_ {
        self.periods.iter().filter_map(move |(user, periods)| {
            let overlaps = periods
                .iter()
                .any(|p| p.join <= to && p.leave.is_none_or(|leave| leave >= from));
            overlaps.then_some(*user)
        })
    }

    /// What `user` may see up to `head`: `(floor, cap)` of its latest period that started by
    /// `head`, or `None` if it was never a member by then.
    pub fn window(&self, user: UserId, head: Seq) -> Option<(Seq, Seq)> {
        let period = self
            .periods
            .get(&user)?
            .iter()
            .rev()
            .find(|p| p.join <= head)?;
        let cap = period.leave.map_or(head, |leave| leave.min(head));
        Some((Seq(period.join.0 - 1), cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_and_readded_member_sees_only_its_periods() {
        let (alice, bob) = (UserId(1), UserId(2));
        let mut membership = Membership::founded(&[alice]);
        membership.apply(Seq(3), alice, MembershipChange::Add(bob));
        membership.apply(Seq(5), bob, MembershipChange::Leave);
        membership.apply(Seq(8), alice, MembershipChange::Add(bob));
        let seen: Vec<u64> = (1..=9)
            .filter(|s| membership.visible(bob, Seq(*s)))
            .collect();
        assert_eq!(seen, vec![3, 4, 5, 8, 9]);
        assert_eq!(membership.window(bob, Seq(9)), Some((Seq(7), Seq(9))));
        assert_eq!(membership.window(bob, Seq(6)), Some((Seq(2), Seq(5))));
        assert_eq!(membership.window(bob, Seq(2)), None);
        assert_eq!(membership.audience(Seq(6)).collect::<Vec<_>>(), vec![alice]);
        assert_eq!(
            membership.check(alice, MembershipChange::Add(bob)),
            Err(Rejection::NoEffect)
        );
    }

    /// The audience of a notice round over `from ..= to`: who may see any entry of it. A member
    /// removed within the round hears of its removal; one removed before it hears nothing more
    /// of the group (its activity is none of that user's business, and the notice is waste).
    #[test]
    fn a_round_reaches_members_removed_within_it_and_not_before() {
        let (alice, bob, carol) = (UserId(1), UserId(2), UserId(3));
        let mut membership = Membership::founded(&[alice, bob]);
        membership.apply(Seq(3), alice, MembershipChange::Add(carol));
        membership.apply(Seq(5), bob, MembershipChange::Leave);
        let round = |from: u64, to: u64| -> Vec<UserId> {
            membership.audience_between(Seq(from), Seq(to)).collect()
        };
        assert_eq!(round(1, 2), vec![alice, bob]);
        assert_eq!(round(4, 5), vec![alice, bob, carol]);
        assert_eq!(round(5, 9), vec![alice, bob, carol]);
        assert_eq!(round(6, 9), vec![alice, carol]);
    }
}
