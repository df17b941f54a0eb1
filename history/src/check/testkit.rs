//! A builder for hand-made histories, so checker tests read as a story: who sent what, what the
//! server committed, what each device showed. Every call appends one record (10 ms after the
//! previous one) and returns its index, which tests compare with a violation's witness.
//!
//! The story follows group membership as the protocol defines it (founders from seq 1, a change
//! takes effect at its own seq), so `deliver` shows an entry to the devices of exactly the users
//! who may see it; tests that break the rule display by hand.

use super::index::HistoryIndex;
use crate::check::{Invariant, Violation};
use crate::faults::FaultProfile;
use crate::{ConversationSpec, Entry, HarnessEvent, History, Node, TimelineEntry};
use crate::{RunStart, Topology, UserSpec};
use imsim_model::{ClientMsgId, ClientSeq, ConvId, DeviceId, Event, Rejection, SendFailure};
use imsim_model::{MembershipChange, Seq, UserId};
use std::collections::{BTreeMap, BTreeSet};

pub const U1: UserId = UserId(1);
pub const U2: UserId = UserId(2);
pub const U3: UserId = UserId(3);
pub const U4: UserId = UserId(4);
pub const D1: DeviceId = DeviceId(1);
pub const D2: DeviceId = DeviceId(2);
pub const D3: DeviceId = DeviceId(3);
pub const D4: DeviceId = DeviceId(4);
pub const D5: DeviceId = DeviceId(5);
pub const D6: DeviceId = DeviceId(6);
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

/// The first id a device gives a membership change (`m101`), so changes never take an id a
/// test chose for a message.
pub const CHANGE_ID_FIRST: u64 = 101;

/// A checker's signature, so tests can run any family on a story.
pub type Checker = fn(&History, &HistoryIndex) -> Vec<Violation>;

pub struct Story {
    history: History,
    t_ms: u64,
    topology: Topology,
    next_seq: BTreeMap<ConvId, Seq>,
    next_client_seq: BTreeMap<(DeviceId, ConvId), ClientSeq>,
    /// What each send carried, so commits and displays can repeat it.
    sent: BTreeMap<(DeviceId, ClientMsgId), Sent>,
    /// The server's timeline as committed so far (the last commit at a seq wins).
    committed: BTreeMap<(ConvId, Seq), (DeviceId, ClientMsgId)>,
    /// Each conversation's members now.
    members: BTreeMap<ConvId, BTreeSet<UserId>>,
    /// Who may see each committed seq: the members after its change, and a removed user.
    audience: BTreeMap<(ConvId, Seq), BTreeSet<UserId>>,
    next_change_id: BTreeMap<DeviceId, u64>,
    /// The record of the last commit at each seq.
    commit_records: BTreeMap<(ConvId, Seq), usize>,
    /// Devices `deliver` passes over.
    offline: BTreeSet<DeviceId>,
    final_timelines_written: Vec<ConvId>,
    liveness_started: bool,
}

#[derive(Clone)]
struct Sent {
    client_seq: ClientSeq,
    body: String,
    change: Option<MembershipChange>,
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

    /// A group for membership stories: c1 is founded by u1 (d1, d2) and u2 (d3); u3 (d4, d5)
    /// and u4 (d6) are in the run but not in c1 until someone adds them.
    pub fn team() -> Story {
        let users = vec![
            (U1, vec![D1, D2]),
            (U2, vec![D3]),
            (U3, vec![D4, D5]),
            (U4, vec![D6]),
        ];
        Story::with_groups(users, vec![(C1, vec![U1, U2])], true)
    }

    /// The team after membership churn, everything delivered to exactly who may see it while
    /// online: u1 sends #1; u1 adds u3 at #2; u2 sends #3 and u1 removes u3 at #4 while d4 is
    /// offline; u1 sends #5; d4 comes back and u2 re-adds u3 at #6; u1 and u2 send #7 and #8.
    /// So d4 shows #2 and then #6 to #8, skipping the rest of its first period as a re-joined
    /// device may. d5 was offline throughout and has shown nothing; it is online again, and
    /// what it shows is the test's to say.
    pub fn rejoined() -> Story {
        let mut story = Story::team();
        story.message(D1, C1, m(1));
        story.go_offline(D5);
        story.add(C1, D1, U3);
        story.deliver(C1, 2);
        story.go_offline(D4);
        story.message(D3, C1, m(1));
        story.remove(C1, D1, U3);
        story.deliver(C1, 4);
        story.message(D1, C1, m(2));
        story.go_online(D4);
        story.add(C1, D3, U3);
        story.deliver(C1, 6);
        story.message(D2, C1, m(1));
        story.message(D3, C1, m(2));
        story.go_online(D5);
        story
    }

    pub fn new(
        users: Vec<(UserId, Vec<DeviceId>)>,
        conversations: Vec<(ConvId, Vec<UserId>)>,
    ) -> Story {
        Story::with_groups(users, conversations, false)
    }

    fn with_groups(
        users: Vec<(UserId, Vec<DeviceId>)>,
        conversations: Vec<(ConvId, Vec<UserId>)>,
        group: bool,
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
                    group,
                })
                .collect(),
        };
        let members = topology
            .conversations
            .iter()
            .map(|spec| (spec.conv, spec.members.iter().copied().collect()))
            .collect();
        let mut story = Story {
            history: History::default(),
            t_ms: 0,
            topology: topology.clone(),
            next_seq: BTreeMap::new(),
            next_client_seq: BTreeMap::new(),
            sent: BTreeMap::new(),
            committed: BTreeMap::new(),
            members,
            audience: BTreeMap::new(),
            next_change_id: BTreeMap::new(),
            commit_records: BTreeMap::new(),
            offline: BTreeSet::new(),
            final_timelines_written: Vec::new(),
            liveness_started: false,
        };
        story.harness(HarnessEvent::RunStarted(Box::new(RunStart {
            scenario: "hand-made".to_string(),
            seed: 0,
            variant: "default".to_string(),
            topology,
            faults: FaultProfile::default(),
            protocol: Default::default(),
            budget: Default::default(),
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

    pub fn harness(&mut self, event: HarnessEvent) -> usize {
        self.push(Node::Harness, Entry::Harness(event))
    }

    /// Any server event (the helpers above cover the common ones).
    pub fn server(&mut self, event: Event) -> usize {
        self.push(Node::Server, Entry::Protocol(event))
    }

    /// Lets `ms` pass before the next record (each record is 10 ms after the previous anyway).
    pub fn wait(&mut self, ms: u64) {
        self.t_ms += ms;
    }

    /// The protocol settings the story's run declares (checkers derive time bounds from them).
    pub fn set_protocol(&mut self, protocol: imsim_model::ProtocolConfig) {
        if let Entry::Harness(HarnessEvent::RunStarted(start)) = &mut self.history.records[0].entry
        {
            start.protocol = protocol;
        }
    }

    /// The fault profile the story's run declares.
    pub fn set_faults(&mut self, faults: crate::faults::FaultProfile) {
        if let Entry::Harness(HarnessEvent::RunStarted(start)) = &mut self.history.records[0].entry
        {
            start.faults = faults;
        }
    }

    pub fn device(&mut self, device: DeviceId, event: Event) -> usize {
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
        let client_seq = self.next_client_seq(device, conv);
        self.send_as(device, conv, id, client_seq, &body_of(device, id))
    }

    fn next_client_seq(&mut self, device: DeviceId, conv: ConvId) -> ClientSeq {
        let client_seq = self
            .next_client_seq
            .entry((device, conv))
            .or_insert(ClientSeq(1));
        let this = *client_seq;
        *client_seq = this.next();
        this
    }

    /// The user asks for a membership change: it is sent like a message (the device's next
    /// client_seq, a fresh id from `CHANGE_ID_FIRST` on, the body the client writes). Returns
    /// the id.
    pub fn send_change(
        &mut self,
        device: DeviceId,
        conv: ConvId,
        change: MembershipChange,
    ) -> ClientMsgId {
        let next = self.next_change_id.entry(device).or_insert(CHANGE_ID_FIRST);
        let id = m(*next);
        *next += 1;
        let client_seq = self.next_client_seq(device, conv);
        let body = match change {
            MembershipChange::Add(user) => format!("adds {user}"),
            MembershipChange::Remove(user) => format!("removes {user}"),
            MembershipChange::Leave => "leaves".to_string(),
        };
        self.sent.insert(
            (device, id),
            Sent {
                client_seq,
                body: body.clone(),
                change: Some(change),
            },
        );
        let client_time_ms = self.t_ms;
        self.device(
            device,
            Event::SendRequested {
                conv,
                client_msg_id: id,
                client_seq,
                body,
                client_time_ms,
                change: Some(change),
            },
        );
        id
    }

    /// `by` adds `user` to `conv`: the request and its commit at the next seq, whose record is
    /// returned. Nobody is shown anything yet (see `deliver`).
    pub fn add(&mut self, conv: ConvId, by: DeviceId, user: UserId) -> usize {
        self.change(conv, by, MembershipChange::Add(user))
    }

    /// `by` removes `user` from `conv`, as `add`.
    pub fn remove(&mut self, conv: ConvId, by: DeviceId, user: UserId) -> usize {
        self.change(conv, by, MembershipChange::Remove(user))
    }

    /// `device`'s user leaves `conv`, as `add`.
    pub fn leave(&mut self, conv: ConvId, device: DeviceId) -> usize {
        self.change(conv, device, MembershipChange::Leave)
    }

    /// A membership change sent, committed and acked to the device that asked for it.
    fn change(&mut self, conv: ConvId, by: DeviceId, change: MembershipChange) -> usize {
        let id = self.send_change(by, conv, change);
        let record = self.commit(conv, by, id);
        let seq = self.head(conv);
        self.ack(by, conv, id, seq);
        record
    }

    /// The record of the last commit at `seq`.
    pub fn commit_record(&self, conv: ConvId, seq: u64) -> usize {
        self.commit_records[&(conv, Seq(seq))]
    }

    /// The record of `device`'s first display of `seq` in `conv`.
    pub fn shown_at(&self, device: DeviceId, conv: ConvId, seq: u64) -> usize {
        let shown = |record: &crate::Record| {
            record.node == Node::Device(device)
                && matches!(
                    &record.entry,
                    Entry::Protocol(Event::Displayed { conv: c, seq: s, .. })
                        if *c == conv && *s == Seq(seq)
                )
        };
        let at = self.history.records.iter().position(shown);
        at.expect("the test displayed it")
    }

    /// `deliver` passes over the device until it is online again.
    pub fn go_offline(&mut self, device: DeviceId) {
        self.offline.insert(device);
    }

    pub fn go_online(&mut self, device: DeviceId) {
        self.offline.remove(&device);
    }

    /// The last seq committed in `conv` (0 before the first).
    pub fn head(&self, conv: ConvId) -> u64 {
        self.next_seq.get(&conv).map_or(0, |next| next.0 - 1)
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
        let sent = Sent {
            client_seq,
            body: body.to_string(),
            change: None,
        };
        self.sent.insert((device, id), sent);
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
        let change = self.sent.get(&(sender, id)).and_then(|sent| sent.change);
        self.commit_changed_at(conv, seq, sender, id, change)
    }

    /// The server commits a sent message at the next seq with `change`, whatever was sent.
    pub fn commit_changed(
        &mut self,
        conv: ConvId,
        sender: DeviceId,
        id: ClientMsgId,
        change: Option<MembershipChange>,
    ) -> usize {
        let seq = self.head(conv) + 1;
        self.commit_changed_at(conv, seq, sender, id, change)
    }

    fn commit_changed_at(
        &mut self,
        conv: ConvId,
        seq: u64,
        sender: DeviceId,
        id: ClientMsgId,
        change: Option<MembershipChange>,
    ) -> usize {
        let seq = Seq(seq);
        let Sent {
            client_seq, body, ..
        } = self.sent.get(&(sender, id)).cloned().unwrap_or(Sent {
            client_seq: ClientSeq(0),
            body: body_of(sender, id),
            change: None,
        });
        self.next_seq.insert(conv, seq.next());
        self.committed.insert((conv, seq), (sender, id));
        let sender_user = self.user_of(sender);
        self.follow_membership(conv, seq, sender_user, change);
        let record = self.history.records.len();
        self.commit_records.insert((conv, seq), record);
        let event = Event::Committed {
            conv,
            seq,
            sender_user,
            sender_device: sender,
            client_msg_id: id,
            client_seq,
            body,
            change,
        };
        self.push(Node::Server, Entry::Protocol(event))
    }

    /// Applies a committed entry's change and notes who may see the entry.
    fn follow_membership(
        &mut self,
        conv: ConvId,
        seq: Seq,
        sender: UserId,
        change: Option<MembershipChange>,
    ) {
        let members = self.members.entry(conv).or_default();
        let mut audience = members.clone();
        match change {
            Some(MembershipChange::Add(user)) => {
                members.insert(user);
                audience.insert(user);
            }
            Some(removal) => {
                members.remove(&removal.subject(sender));
            }
            None => {}
        }
        self.audience.insert((conv, seq), audience);
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

    /// The server refused the send for good (as from a non-member) and the device shows it failed.
    pub fn fail(&mut self, device: DeviceId, conv: ConvId, id: ClientMsgId) -> usize {
        let reason = SendFailure::Rejected(Rejection::NotMember);
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
            .map_or_else(|| body_of(sender, id), |sent| sent.body.clone());
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
            via: Some(imsim_model::Via::Push),
        };
        self.device(device, event)
    }

    /// Names `via` as the path of the display at record `index`.
    pub fn set_via(&mut self, index: usize, via: imsim_model::Via) {
        if let Entry::Protocol(Event::Displayed { via: path, .. }) =
            &mut self.history.records[index].entry
        {
            *path = Some(via);
        }
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

    /// Every online device of every user who may see `seq` shows it and moves its cursor to it.
    pub fn deliver(&mut self, conv: ConvId, seq: u64) {
        let mut audience = self.audience_devices(conv, seq);
        audience.retain(|device| !self.offline.contains(device));
        self.deliver_to(conv, seq, &audience);
    }

    /// These devices show `seq` and move their cursors to it.
    pub fn deliver_to(&mut self, conv: ConvId, seq: u64, devices: &[DeviceId]) {
        for &device in devices {
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

    /// The devices of the users who may see `seq` (who were members when it was committed).
    pub fn audience_devices(&self, conv: ConvId, seq: u64) -> Vec<DeviceId> {
        let empty = BTreeSet::new();
        let audience = self.audience.get(&(conv, Seq(seq))).unwrap_or(&empty);
        let users = self
            .topology
            .users
            .iter()
            .filter(|user| audience.contains(&user.user));
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
