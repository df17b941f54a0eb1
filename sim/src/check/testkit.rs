//! A builder for hand-made histories, so checker tests read as a story: who sent what, what the
//! server committed, what each device showed. Every call appends one record (10 ms after the
//! previous one) and returns its index, which tests compare with a violation's witness.

use super::index::HistoryIndex;
use crate::check::{Invariant, Violation};
use crate::faults::FaultProfile;
use crate::history::{ConversationSpec, Entry, HarnessEvent, History, Node, TimelineEntry};
use crate::history::{RunStart, Topology, UserSpec};
use imsim_model::{ClientMsgId, ClientSeq, ConvId, DeviceId, Event, Rejection, SendFailure};
use imsim_model::{Seq, UserId};
use std::collections::BTreeMap;

pub const U1: UserId = UserId(1);
pub const U2: UserId = UserId(2);
pub const U3: UserId = UserId(3);
pub const D1: DeviceId = DeviceId(1);
pub const D2: DeviceId = DeviceId(2);
pub const D3: DeviceId = DeviceId(3);
pub const D4: DeviceId = DeviceId(4);
pub const D5: DeviceId = DeviceId(5);
pub const C1: ConvId = ConvId(1);
pub const C2: ConvId = ConvId(2);

/// A message id: `m(4)` reads like the history's `m4`.
pub fn m(id: u64) -> ClientMsgId {
    ClientMsgId(id)
}

/// The body a device types for a message, unless a test says otherwise.
pub fn body_of(device: DeviceId, id: ClientMsgId) -> String {
    format!("hello from {device} ({id})")
}

/// A checker's signature, so tests can run any family on a story.
pub type Checker = fn(&History, &HistoryIndex) -> Vec<Violation>;

pub struct Story {
    history: History,
    t_ms: u64,
    topology: Topology,
    next_seq: BTreeMap<ConvId, Seq>,
    next_client_seq: BTreeMap<(DeviceId, ConvId), ClientSeq>,
    /// What each send carried, so commits and displays can repeat it.
    sent: BTreeMap<(DeviceId, ClientMsgId), (ClientSeq, String)>,
    /// The server's timeline as committed so far (the last commit at a seq wins).
    committed: BTreeMap<(ConvId, Seq), (DeviceId, ClientMsgId)>,
    final_timelines_written: Vec<ConvId>,
    liveness_started: bool,
}

impl Story {
    /// u1 owns d1 and d2, u2 owns d3; c1 is the 1:1 conversation of u1 and u2.
    pub fn one_to_one() -> Story {
        Story::new(
            vec![(U1, vec![D1, D2]), (U2, vec![D3])],
            vec![(C1, vec![U1, U2])],
        )
    }

    /// As `one_to_one`, plus u3 with d4 and d5; c1 has all three users, c2 is u1 and u3.
    pub fn group() -> Story {
        Story::new(
            vec![(U1, vec![D1, D2]), (U2, vec![D3]), (U3, vec![D4, D5])],
            vec![(C1, vec![U1, U2, U3]), (C2, vec![U1, U3])],
        )
    }

    pub fn new(
        users: Vec<(UserId, Vec<DeviceId>)>,
        conversations: Vec<(ConvId, Vec<UserId>)>,
    ) -> Story {
        let topology = Topology {
            users: users
                .into_iter()
                .map(|(user, devices)| UserSpec { user, devices })
                .collect(),
            conversations: conversations
                .into_iter()
                .map(|(conv, members)| ConversationSpec {
                    conv,
                    members,
                    group: false,
                })
                .collect(),
        };
        let mut story = Story {
            history: History::default(),
            t_ms: 0,
            topology: topology.clone(),
            next_seq: BTreeMap::new(),
            next_client_seq: BTreeMap::new(),
            sent: BTreeMap::new(),
            committed: BTreeMap::new(),
            final_timelines_written: Vec::new(),
            liveness_started: false,
        };
        story.harness(HarnessEvent::RunStarted(Box::new(RunStart {
            scenario: "hand-made".to_string(),
            seed: 0,
            variant: "default".to_string(),
            topology,
            faults: FaultProfile::default(),
        })));
        story
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    fn push(&mut self, node: Node, entry: Entry) -> usize {
        self.t_ms += 10;
        self.history.push(self.t_ms, node, entry);
        self.history.records.len() - 1
    }

    fn harness(&mut self, event: HarnessEvent) -> usize {
        self.push(Node::Harness, Entry::Harness(event))
    }

    fn device(&mut self, device: DeviceId, event: Event) -> usize {
        self.push(Node::Device(device), Entry::Protocol(event))
    }

    fn user_of(&self, device: DeviceId) -> UserId {
        let spec = self
            .topology
            .users
            .iter()
            .find(|spec| spec.devices.contains(&device));
        spec.map_or(UserId(0), |spec| spec.user)
    }

    /// The user presses send: the message gets the device's next client_seq in `conv`.
    pub fn send(&mut self, device: DeviceId, conv: ConvId, id: ClientMsgId) -> usize {
        let client_seq = self
            .next_client_seq
            .entry((device, conv))
            .or_insert(ClientSeq(1));
        let this = *client_seq;
        *client_seq = this.next();
        self.send_as(device, conv, id, this, &body_of(device, id))
    }

    /// A send with an explicit client_seq and body.
    pub fn send_as(
        &mut self,
        device: DeviceId,
        conv: ConvId,
        id: ClientMsgId,
        client_seq: ClientSeq,
        body: &str,
    ) -> usize {
        self.sent
            .insert((device, id), (client_seq, body.to_string()));
        let client_time_ms = self.t_ms;
        let body = body.to_string();
        self.device(
            device,
            Event::SendRequested {
                conv,
                client_msg_id: id,
                client_seq,
                body,
                client_time_ms,
                change: None,
            },
        )
    }

    /// The server commits a sent message at the conversation's next seq.
    pub fn commit(&mut self, conv: ConvId, sender: DeviceId, id: ClientMsgId) -> usize {
        let seq = *self.next_seq.get(&conv).unwrap_or(&Seq(1));
        self.commit_at(conv, seq.0, sender, id)
    }

    /// The server commits a sent message at an explicit seq (the next seq follows it).
    pub fn commit_at(
        &mut self,
        conv: ConvId,
        seq: u64,
        sender: DeviceId,
        id: ClientMsgId,
    ) -> usize {
        let seq = Seq(seq);
        let (client_seq, body) = self
            .sent
            .get(&(sender, id))
            .cloned()
            .unwrap_or((ClientSeq(0), body_of(sender, id)));
        self.next_seq.insert(conv, seq.next());
        self.committed.insert((conv, seq), (sender, id));
        let sender_user = self.user_of(sender);
        let event = Event::Committed {
            conv,
            seq,
            sender_user,
            sender_device: sender,
            client_msg_id: id,
            client_seq,
            body,
            change: None,
        };
        self.push(Node::Server, Entry::Protocol(event))
    }

    pub fn ack(&mut self, device: DeviceId, conv: ConvId, id: ClientMsgId, seq: u64) -> usize {
        self.device(
            device,
            Event::SendAcked {
                conv,
                client_msg_id: id,
                seq: Seq(seq),
            },
        )
    }

    pub fn fail(&mut self, device: DeviceId, conv: ConvId, id: ClientMsgId) -> usize {
        let reason = SendFailure::Rejected(Rejection::BodyTooLarge);
        self.device(
            device,
            Event::SendFailed {
                conv,
                client_msg_id: id,
                reason,
            },
        )
    }

    /// The device shows what the server committed at `seq`.
    pub fn display(&mut self, device: DeviceId, conv: ConvId, seq: u64) -> usize {
        let (sender, id) = self.committed[&(conv, Seq(seq))];
        let body = self
            .sent
            .get(&(sender, id))
            .map_or_else(|| body_of(sender, id), |sent| sent.1.clone());
        self.display_as(device, conv, seq, sender, id, &body)
    }

    /// The device shows anything at all at `seq`, claimed to come from `sender`.
    pub fn display_as(
        &mut self,
        device: DeviceId,
        conv: ConvId,
        seq: u64,
        sender: DeviceId,
        id: ClientMsgId,
        body: &str,
    ) -> usize {
        let sender_user = self.user_of(sender);
        self.display_from(device, conv, seq, sender_user, sender, id, body)
    }

    /// As `display_as`, with the sender's user given too.
    #[allow(clippy::too_many_arguments)] // mirrors the event's fields one to one
    pub fn display_from(
        &mut self,
        device: DeviceId,
        conv: ConvId,
        seq: u64,
        sender_user: UserId,
        sender: DeviceId,
        id: ClientMsgId,
        body: &str,
    ) -> usize {
        let body = body.to_string();
        let event = Event::Displayed {
            conv,
            seq: Seq(seq),
            sender_user,
            sender_device: sender,
            client_msg_id: id,
            body,
        };
        self.device(device, event)
    }

    pub fn cursor(&mut self, device: DeviceId, conv: ConvId, seq: u64) -> usize {
        self.device(
            device,
            Event::CursorAdvanced {
                conv,
                cursor: Seq(seq),
            },
        )
    }

    pub fn crash(&mut self, node: Node) -> usize {
        self.harness(HarnessEvent::NodeCrashed { crashed: node })
    }

    pub fn restart(&mut self, node: Node) -> usize {
        self.harness(HarnessEvent::NodeRestarted { restarted: node })
    }

    /// Every member device of `conv` shows `seq` and moves its cursor to it.
    pub fn deliver(&mut self, conv: ConvId, seq: u64) {
        let members = self.member_devices(conv);
        for device in members {
            self.display(device, conv, seq);
            self.cursor(device, conv, seq);
        }
    }

    /// The whole happy path of one message: sent, committed, acked, shown everywhere.
    pub fn message(&mut self, sender: DeviceId, conv: ConvId, id: ClientMsgId) -> u64 {
        self.send(sender, conv, id);
        self.commit(conv, sender, id);
        let seq = self.next_seq[&conv].0 - 1;
        self.ack(sender, conv, id, seq);
        self.deliver(conv, seq);
        seq
    }

    fn member_devices(&self, conv: ConvId) -> Vec<DeviceId> {
        let spec = self
            .topology
            .conversations
            .iter()
            .find(|spec| spec.conv == conv);
        let members = spec.map_or(&[][..], |spec| &spec.members[..]);
        let users = self
            .topology
            .users
            .iter()
            .filter(|user| members.contains(&user.user));
        users
            .flat_map(|user| user.devices.iter().copied())
            .collect()
    }

    pub fn liveness_phase(&mut self) -> usize {
        self.liveness_started = true;
        self.harness(HarnessEvent::LivenessPhaseStarted {
            quiet_period_ms: 5_000,
        })
    }

    /// A final timeline stating exactly these (seq, sender, id) entries.
    pub fn final_timeline(
        &mut self,
        conv: ConvId,
        entries: &[(u64, DeviceId, ClientMsgId)],
    ) -> usize {
        self.final_timelines_written.push(conv);
        let entries = entries
            .iter()
            .map(|(seq, sender_device, client_msg_id)| TimelineEntry {
                seq: Seq(*seq),
                sender_device: *sender_device,
                client_msg_id: *client_msg_id,
            })
            .collect();
        self.harness(HarnessEvent::FinalTimeline { conv, entries })
    }

    /// Ends the run: the liveness phase, a final timeline per conversation (what was committed,
    /// unless the test wrote one already) and `RunEnded`, whose record is returned.
    pub fn finish(&mut self) -> usize {
        if !self.liveness_started {
            self.liveness_phase();
        }
        let convs: Vec<ConvId> = self
            .topology
            .conversations
            .iter()
            .map(|spec| spec.conv)
            .collect();
        for conv in convs {
            if !self.final_timelines_written.contains(&conv) {
                let entries: Vec<(u64, DeviceId, ClientMsgId)> = self
                    .committed
                    .range((conv, Seq::ZERO)..=(conv, Seq(u64::MAX)))
                    .map(|((_, seq), (sender, id))| (seq.0, *sender, *id))
                    .collect();
                self.final_timeline(conv, &entries);
            }
        }
        self.harness(HarnessEvent::RunEnded)
    }
}

/// Runs one checker family on a story.
pub fn run(story: &Story, checker: Checker) -> Vec<Violation> {
    let index = HistoryIndex::new(story.history());
    checker(story.history(), &index)
}

/// The one violation a test expects, of the invariant it expects.
pub fn single(violations: Vec<Violation>, invariant: Invariant) -> Violation {
    assert_eq!(
        violations.len(),
        1,
        "expected exactly one violation: {violations:#?}"
    );
    assert_eq!(violations[0].invariant, invariant, "{violations:#?}");
    violations.into_iter().next().expect("length checked above")
}
