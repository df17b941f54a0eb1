//! A large, correct group history built directly (not through the test `Story`, whose lookups
//! are sized for hand-made stories), to measure the checkers' throughput and to keep them
//! linear-ish: one group of `members` users, one in ten with a second device, members added,
//! removed and re-added while messages flow, every entry displayed on exactly the devices of the
//! users who may see it, cursors acked in batches.
//!
//! `imsim bench` times every checker over one of these (its `checker_events_per_s`).

use crate::faults::FaultProfile;
use crate::{ConversationSpec, Entry, HarnessEvent, History, Node, RunStart};
use crate::{TimelineEntry, Topology, UserSpec};
use imsim_model::{ClientMsgId, ClientSeq, ConvId, DeviceId, Event, MembershipChange, Seq};
use imsim_model::{UserId, Via};
use std::collections::BTreeMap;

const GROUP: ConvId = ConvId(1);
/// Every this many entries is a membership change.
const CHANGE_EVERY: u64 = 10;
/// A device acks its cursor after this many displays (batched acks).
const CURSOR_EVERY: u64 = 8;

/// A tiny deterministic generator (xorshift64), so the history is the same on every run.
struct Draw(u64);

impl Draw {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

struct Builder {
    history: History,
    t_ms: u64,
    devices: Vec<Vec<DeviceId>>,
    /// Indexed by user number; index 0 unused.
    member: Vec<bool>,
    client_seq: BTreeMap<DeviceId, u64>,
    next_id: BTreeMap<DeviceId, u64>,
    timeline: Vec<TimelineEntry>,
}

impl Builder {
    fn push(&mut self, node: Node, event: Event) {
        self.t_ms += 1;
        self.history.push(self.t_ms, node, Entry::Protocol(event));
    }

    fn harness(&mut self, event: HarnessEvent) {
        self.t_ms += 1;
        self.history
            .push(self.t_ms, Node::Harness, Entry::Harness(event));
    }

    /// One entry: sent by `sender`'s first device, committed, acked, displayed by every device of
    /// every user who may see it.
    fn entry(&mut self, sender: u32, change: Option<MembershipChange>) {
        let device = self.devices[sender as usize][0];
        let id = self.next_id.entry(device).or_insert(0);
        *id += 1;
        let client_msg_id = ClientMsgId(*id);
        let client_seq = self.client_seq.entry(device).or_insert(0);
        *client_seq += 1;
        let client_seq = ClientSeq(*client_seq);
        let seq = Seq(self.timeline.len() as u64 + 1);
        let body = match change {
            Some(MembershipChange::Add(user)) => format!("adds {user}"),
            Some(MembershipChange::Remove(user)) => format!("removes {user}"),
            Some(MembershipChange::Leave) => "leaves".to_string(),
            None => format!("{client_msg_id} from {device}"),
        };
        let (conv, sender_user) = (GROUP, UserId(sender));
        let client_time_ms = self.t_ms;
        self.push(
            Node::Device(device),
            Event::SendRequested {
                conv,
                client_msg_id,
                client_seq,
                body: body.clone(),
                client_time_ms,
                change,
            },
        );
        self.push(
            Node::Server,
            Event::Committed {
                conv,
                seq,
                sender_user,
                sender_device: device,
                client_msg_id,
                client_seq,
                body: body.clone(),
                change,
            },
        );
        self.push(
            Node::Device(device),
            Event::SendAcked {
                conv,
                client_msg_id,
                seq,
            },
        );
        self.timeline.push(TimelineEntry {
            seq,
            sender_device: device,
            client_msg_id,
        });
        let removed = match change {
            Some(MembershipChange::Add(user)) => {
                self.member[user.0 as usize] = true;
                None
            }
            Some(removal) => Some(removal.subject(sender_user)),
            None => None,
        };
        for user in 1..self.member.len() {
            if !self.member[user] {
                continue;
            }
            for at in 0..self.devices[user].len() {
                let shown = self.devices[user][at];
                let display = Event::Displayed {
                    conv,
                    seq,
                    sender_user,
                    sender_device: device,
                    client_msg_id,
                    body: body.clone(),
                    via: Some(Via::Push),
                };
                self.push(Node::Device(shown), display);
                if seq.0.is_multiple_of(CURSOR_EVERY) || removed == Some(UserId(user as u32)) {
                    let cursor = Event::CursorAdvanced { conv, cursor: seq };
                    self.push(Node::Device(shown), cursor);
                }
            }
        }
        if let Some(user) = removed {
            self.member[user.0 as usize] = false;
        }
    }
}

/// The history: `members` users found the group less one in a hundred, who are added later;
/// every tenth entry is a change (add a newcomer, remove a random member, re-add a removed one);
/// `messages` entries in all.
pub fn large_group(members: u32, messages: u64) -> History {
    let users: Vec<UserSpec> = (1..=members)
        .map(|user| {
            let mut devices = vec![DeviceId(user)];
            if user.is_multiple_of(10) {
                devices.push(DeviceId(members + user));
            }
            UserSpec {
                user: UserId(user),
                devices,
            }
        })
        .collect();
    let newcomers = (members / 100).max(1);
    let founders: Vec<UserId> = (1..=members - newcomers).map(UserId).collect();
    let topology = Topology {
        users: users.clone(),
        conversations: vec![ConversationSpec {
            conv: GROUP,
            members: founders.clone(),
            group: true,
        }],
    };
    let mut builder = Builder {
        history: History::default(),
        t_ms: 0,
        devices: std::iter::once(Vec::new())
            .chain(users.into_iter().map(|spec| spec.devices))
            .collect(),
        member: vec![false; members as usize + 1],
        client_seq: BTreeMap::new(),
        next_id: BTreeMap::new(),
        timeline: Vec::new(),
    };
    for user in &founders {
        builder.member[user.0 as usize] = true;
    }
    builder.harness(HarnessEvent::RunStarted(Box::new(RunStart {
        scenario: "large-group".to_string(),
        seed: 0,
        variant: "default".to_string(),
        topology,
        faults: FaultProfile::default(),
        protocol: Default::default(),
        budget: Default::default(),
    })));
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
    let mut next_newcomer = members - newcomers + 1;
    let mut removed: Vec<u32> = Vec::new();
    for number in 1..=messages {
        let current: Vec<u32> = (1..=members)
            .filter(|u| builder.member[*u as usize])
            .collect();
        let sender = current[draw.below(current.len())];
        let change = if !number.is_multiple_of(CHANGE_EVERY) {
            None
        } else if number.is_multiple_of(3 * CHANGE_EVERY) && next_newcomer <= members {
            next_newcomer += 1;
            Some(MembershipChange::Add(UserId(next_newcomer - 1)))
        } else if number.is_multiple_of(2 * CHANGE_EVERY) && !removed.is_empty() {
            let back = removed.swap_remove(draw.below(removed.len()));
            Some(MembershipChange::Add(UserId(back)))
        } else {
            let out = current[draw.below(current.len())];
            removed.push(out);
            if out == sender {
                Some(MembershipChange::Leave)
            } else {
                Some(MembershipChange::Remove(UserId(out)))
            }
        };
        builder.entry(sender, change);
    }
    builder.harness(HarnessEvent::LivenessPhaseStarted {
        quiet_period_ms: 5_000,
    });
    let entries = std::mem::take(&mut builder.timeline);
    builder.harness(HarnessEvent::FinalTimeline {
        conv: GROUP,
        entries,
    });
    builder.harness(HarnessEvent::RunEnded);
    builder.history
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_all;

    #[test]
    fn a_mid_sized_group_with_churn_breaks_no_invariant() {
        let history = large_group(300, 120);
        assert_eq!(check_all(&history), vec![]);
    }
}
