//! Hand-made histories for the unit tests: a few lines that read as the story they tell.

use crate::{Report, RunSummary};
use imsim_history::faults::FaultProfile;
use imsim_history::Violation;
use imsim_history::{ConversationSpec, Entry, HarnessEvent, History, Node, RunStart};
use imsim_history::{Topology, UserSpec};
use imsim_model::{ClientMsgId, ClientSeq, ConvId, DeviceId, Event, SessionEnd, SessionId};
use imsim_model::{Seq, UserId};

pub const D1: DeviceId = DeviceId(1);
pub const D2: DeviceId = DeviceId(2);
pub const D3: DeviceId = DeviceId(3);
pub const C1: ConvId = ConvId(1);

/// u1 owns d1 and d2, u2 owns d3; c1 is their 1:1 conversation.
pub fn start() -> History {
    let mut history = History::default();
    let topology = Topology {
        users: vec![
            UserSpec {
                user: UserId(1),
                devices: vec![D1, D2],
            },
            UserSpec {
                user: UserId(2),
                devices: vec![D3],
            },
        ],
        conversations: vec![ConversationSpec {
            conv: C1,
            members: vec![UserId(1), UserId(2)],
            group: false,
        }],
    };
    history.push(
        0,
        Node::Harness,
        Entry::Harness(HarnessEvent::RunStarted(Box::new(RunStart {
            scenario: "hand-made".to_string(),
            seed: 7,
            variant: "correct".to_string(),
            topology,
            faults: FaultProfile::default(),
            protocol: Default::default(),
            budget: Default::default(),
        }))),
    );
    history
}

pub fn harness(history: &mut History, t_ms: u64, event: HarnessEvent) -> usize {
    history.push(t_ms, Node::Harness, Entry::Harness(event));
    history.records.len() - 1
}

pub fn on(history: &mut History, t_ms: u64, node: Node, event: Event) -> usize {
    history.push(t_ms, node, Entry::Protocol(event));
    history.records.len() - 1
}

pub fn login(history: &mut History, t_ms: u64, device: DeviceId) -> usize {
    let session = SessionId(u64::from(device.0));
    on(
        history,
        t_ms,
        Node::Device(device),
        Event::LoggedIn { session },
    )
}

pub fn logout(history: &mut History, t_ms: u64, device: DeviceId) -> usize {
    let reason = SessionEnd::Logout;
    on(
        history,
        t_ms,
        Node::Device(device),
        Event::SessionLost { reason },
    )
}

pub fn send(history: &mut History, t_ms: u64, device: DeviceId, id: u64) -> usize {
    let event = Event::SendRequested {
        conv: C1,
        client_msg_id: ClientMsgId(id),
        client_seq: ClientSeq(id),
        body: format!("m{id} from {device}"),
        client_time_ms: t_ms,
        change: None,
    };
    on(history, t_ms, Node::Device(device), event)
}

pub fn commit(history: &mut History, t_ms: u64, sender: DeviceId, id: u64, seq: u64) -> usize {
    let event = Event::Committed {
        conv: C1,
        seq: Seq(seq),
        sender_user: UserId(if sender == D3 { 2 } else { 1 }),
        sender_device: sender,
        client_msg_id: ClientMsgId(id),
        client_seq: ClientSeq(id),
        body: format!("m{id} from {sender}"),
        change: None,
    };
    on(history, t_ms, Node::Server, event)
}

pub fn display(
    history: &mut History,
    t_ms: u64,
    device: DeviceId,
    sender: DeviceId,
    id: u64,
    seq: u64,
) -> usize {
    let event = Event::Displayed {
        conv: C1,
        seq: Seq(seq),
        sender_user: UserId(if sender == D3 { 2 } else { 1 }),
        sender_device: sender,
        client_msg_id: ClientMsgId(id),
        body: format!("m{id} from {sender}"),
        via: Some(imsim_model::Via::Push),
    };
    on(history, t_ms, Node::Device(device), event)
}

/// The report of a hand-made history, as `scenarios/hand.toml` seed 7.
pub fn summary(history: &History, violations: &[Violation]) -> Report {
    Report::build(&RunSummary {
        scenario: "scenarios/hand.toml",
        seed: 7,
        history,
        violations,
        stats: None,
    })
}
