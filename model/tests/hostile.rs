//! Hostile input: whatever a device puts on the wire — ids that do not exist, seq 0 or far past
//! the head, another user's name, a body over the limit, server-bound packets sent to the
//! server, a flood of logins — the server answers without panicking, commits nothing outside the
//! protocol's limits, and the honest devices carry on as if nothing happened.
//!
//! Mallory is user 3 with a valid token, talking to the server from a raw socket (`MALLORY`) in
//! place of a client; a stranger with no session sends from `STRANGER`. Alice and Bob are honest.
//! Carol shares a conversation with Alice only: Mallory must learn nothing of it, neither its
//! messages, reads and readers, nor Carol's presence.

mod support;

use imsim_model::{
    Address, ClientMsgId, ClientSeq, Command, ConvId, DeviceId, Event, MembershipChange, Packet,
    PresenceEntry, ProtocolConfig, Rejection, Seq, SessionId, UserId,
};
use proptest::prelude::*;
use support::Net;

const ALICE: u32 = 1;
const BOB: u32 = 2;
const MALLORY: Address = Address(9);
const STRANGER: Address = Address(10);
const ONE_TO_ONE: ConvId = ConvId(1);
const GROUP: ConvId = ConvId(2);
/// Alice and Carol's 1:1 conversation, and Carol.
const SECRET: ConvId = ConvId(3);
const CAROL: UserId = UserId(4);
const BODY_MAX: u32 = 16;

fn seq() -> impl Strategy<Value = Seq> {
    prop_oneof![Just(Seq(0)), (1..6u64).prop_map(Seq), Just(Seq(u64::MAX))]
}

/// The 1:1 conversation, the group, a conversation Mallory is not in, and ids nobody uses.
fn conv() -> impl Strategy<Value = ConvId> {
    prop_oneof![Just(ConvId(0)), (1..5u32).prop_map(ConvId)]
}

fn user() -> impl Strategy<Value = UserId> {
    (0..6u32).prop_map(UserId)
}

fn body() -> impl Strategy<Value = String> {
    (0..BODY_MAX as usize + 3).prop_map(|len| "b".repeat(len))
}

fn change() -> impl Strategy<Value = Option<MembershipChange>> {
    prop_oneof![
        Just(None),
        user().prop_map(|u| Some(MembershipChange::Add(u))),
        user().prop_map(|u| Some(MembershipChange::Remove(u))),
        Just(Some(MembershipChange::Leave)),
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        // Mallory knows only its own token: a login as anyone else is a guess.
        (
            user(),
            0..5u32,
            prop_oneof![Just(0u64), Just(1003), Just(9999)],
            0..3u64,
        )
            .prop_map(|(user, device, token, connection)| Packet::Login {
                user,
                device: DeviceId(device),
                token,
                connection,
            }),
        (0..3u64).prop_map(|connection| Packet::Logout { connection }),
        Just(Packet::Heartbeat),
        (conv(), user(), 0..4u64, 0..4u64, body(), change()).prop_map(
            |(conv, sender, id, client_seq, body, change)| Packet::Send {
                conv,
                sender,
                client_msg_id: ClientMsgId(id),
                client_seq: ClientSeq(client_seq),
                body,
                client_time_ms: 0,
                change,
            }
        ),
        (conv(), seq()).prop_map(|(conv, watermark)| Packet::Ack { conv, watermark }),
        (
            conv(),
            seq(),
            prop_oneof![Just(0u32), Just(1), Just(u32::MAX)]
        )
            .prop_map(|(conv, after, limit)| Packet::Pull { conv, after, limit }),
        Just(Packet::SyncRequest),
        (conv(), seq()).prop_map(|(conv, up_to)| Packet::Read { conv, up_to }),
        Just(Packet::ReceiptSyncRequest),
        (conv(), seq()).prop_map(|(conv, seq)| Packet::ReadersQuery { conv, seq }),
        proptest::option::of(conv()).prop_map(|conv| Packet::PresenceQuery { conv }),
        // Packets only a server sends, sent to the server.
        Just(Packet::LoginOk {
            session: SessionId(1),
            heads: Vec::new(),
        }),
        (conv(), seq()).prop_map(|(conv, head)| Packet::Notify { conv, head }),
        Just(Packet::Error {
            reason: Rejection::Unexpected,
            refused: "login".to_string(),
        }),
        // Cluster packets, sent to a server that is no logic node.
        Just(Packet::Upstream {
            device: Address(1),
            packet: Box::new(Packet::SyncRequest),
        }),
        Just(Packet::KeepAlive { device: Address(2) }),
    ]
}

/// One step of the attack: a packet from Mallory or the stranger, or time passing.
#[derive(Clone, Debug)]
enum Step {
    FromMallory(Packet),
    FromStranger(Packet),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => packet().prop_map(Step::FromMallory),
        2 => packet().prop_map(Step::FromStranger),
        1 => (1..3_000u64).prop_map(Step::Wait),
    ]
}

/// Alice (d1), Bob (d2) and Mallory (d3, a raw socket) share the group; Alice and Bob the 1:1.
/// Alice and Bob are online and have talked a little; Mallory is logged in.
fn setup() -> Net {
    let config = ProtocolConfig {
        body_bytes_max: BODY_MAX,
        ..ProtocolConfig::default()
    };
    let (alice, bob, mallory) = (UserId(1), UserId(2), UserId(3));
    let mut net = Net::with_groups(
        config,
        &[alice, bob, mallory, CAROL],
        &[(ONE_TO_ONE, &[alice, bob]), (SECRET, &[alice, CAROL])],
        &[(GROUP, &[alice, bob, mallory])],
    );
    net.command(ALICE, Command::GoOnline);
    net.command(BOB, Command::GoOnline);
    net.command(4, Command::GoOnline);
    net.run_until_quiet();
    net.send(ALICE, GROUP, "hi all");
    net.send(BOB, ONE_TO_ONE, "hi alice");
    net.send(4, SECRET, "just us");
    let login = Packet::Login {
        user: mallory,
        device: DeviceId(3),
        token: 1003,
        connection: 0,
    };
    net.inject(MALLORY, support::SERVER, login);
    net.run_until_quiet();
    net
}

/// What a packet to Mallory tells of the secret conversation or of Carol, if anything. A
/// refusal that names the conversation Mallory itself named tells nothing. Once Carol is in the
/// group (`carol_in_group`: someone added her, Mallory too may), her presence is Mallory's to see.
fn leak(packet: &Packet, carol_in_group: bool) -> Option<&'static str> {
    let about_carol =
        |entries: &[PresenceEntry]| !carol_in_group && entries.iter().any(|e| e.user == CAROL);
    match packet {
        Packet::Deliver { message } if message.conv == SECRET => Some("a message"),
        Packet::Notify { conv, .. } if *conv == SECRET => Some("its head"),
        Packet::PullResponse { conv, .. } if *conv == SECRET => Some("a pull"),
        Packet::ReadUpdate { conv, .. } if *conv == SECRET => Some("a read"),
        Packet::ReadCounts { conv, .. } if *conv == SECRET => Some("read counts"),
        Packet::Readers { conv, .. } if *conv == SECRET => Some("its readers"),
        Packet::SyncState { heads } | Packet::LoginOk { heads, .. }
            if heads.iter().any(|head| head.conv == SECRET) =>
        {
            Some("its head in a sync")
        }
        Packet::ReceiptState { watermarks, counts }
            if watermarks.iter().any(|mark| mark.conv == SECRET)
                || counts.iter().any(|(conv, _)| *conv == SECRET) =>
        {
            Some("its receipts")
        }
        Packet::Presence(entry) if entry.user == CAROL && !carol_in_group => {
            Some("Carol's presence")
        }
        Packet::PresenceState { entries } if about_carol(entries) => Some("Carol's presence"),
        _ => None,
    }
}

fn displayed(net: &Net, d: u32, conv: ConvId, body: &str) -> bool {
    net.events_of(Address(d)).any(|event| {
        matches!(event, Event::Displayed { conv: c, body: b, .. } if *c == conv && b == body)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn the_server_survives_any_input_and_honest_devices_carry_on(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let mut net = setup();
        for step in steps {
            match step {
                Step::FromMallory(packet) => net.inject(MALLORY, support::SERVER, packet),
                Step::FromStranger(packet) => net.inject(STRANGER, support::SERVER, packet),
                Step::Wait(ms) => net.advance(ms),
            }
            net.run_until_quiet();
        }
        // Mallory learnt nothing of the conversation it is not in. Carol's presence is secret
        // until someone adds her to the group (seen: Mallory adding her, then asking the group's
        // presence); a later removal is not followed, so that is the end of her secret here.
        let mut server_events = net.events.get(&support::SERVER).into_iter().flatten();
        let carol_added = server_events.find(|(_, event)| {
            matches!(
                event,
                Event::Committed { conv, change: Some(MembershipChange::Add(user)), .. }
                    if *conv == GROUP && *user == CAROL
            )
        });
        let carol_added_at = carol_added.map(|(at, _)| *at);
        for (at, flight, _) in &net.log {
            if flight.to == MALLORY {
                let carol_in_group = carol_added_at.is_some_and(|added| *at >= added);
                let leaked = leak(&flight.packet, carol_in_group);
                prop_assert!(leaked.is_none(), "leaked to Mallory: {:?}", flight.packet);
            }
        }
        // Nothing outside the limits was committed.
        for event in net.events_of(support::SERVER) {
            if let Event::Committed { body, change, sender_user, .. } = event {
                prop_assert!(body.len() <= BODY_MAX as usize, "committed an over-long body");
                if let Some(MembershipChange::Add(user)) = change {
                    prop_assert!((1..=4).contains(&user.0), "{sender_user} added unknown {user}");
                }
            }
        }
        // The honest devices carry on in the conversation Mallory is not in (in the group,
        // Mallory may remove them: that is membership, not an attack).
        net.send(ALICE, ONE_TO_ONE, "still here?");
        net.send(BOB, ONE_TO_ONE, "yes");
        net.advance(60_000);
        prop_assert!(displayed(&net, BOB, ONE_TO_ONE, "still here?"));
        prop_assert!(displayed(&net, ALICE, ONE_TO_ONE, "yes"));
        for d in [ALICE, BOB] {
            let acked = net.count(Address(d), |event| matches!(event, Event::SendAcked { .. }));
            prop_assert_eq!(acked, 2, "device {} acks", d);
        }
    }
}
