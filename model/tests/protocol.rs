//! Protocol unit tests: one promise of the model per test, driven by the in-memory network in
//! `support` (zero-latency links, one virtual clock, faults placed by hand). Device 1 belongs to
//! user 1 ("Alice"), device 2 to user 2 ("Bob"); they share the 1:1 conversation `ConvId(1)`.

mod support;

use imsim_model::{
    Address, Client, ClientMsgId, ClientSeq, Command, ConvId, DeviceId, Event, MembershipChange,
    Packet, ProtocolConfig, PullReason, Rejection, SendFailure, Seq, SessionEnd, Time, UserId,
};
use support::{Fate, Flight, Net, SERVER};

const ALICE: u32 = 1;
const BOB: u32 = 2;
const CONV: ConvId = ConvId(1);
const CAROL: u32 = 3;
const GROUP: ConvId = ConvId(9);

/// Users 1 and 2 with one device each, sharing `CONV`; nobody online yet.
fn one_to_one(config: ProtocolConfig) -> Net {
    let users = [UserId(1), UserId(2)];
    Net::new(config, &users, &[(CONV, &users)])
}

/// `one_to_one`, with both devices logged in.
fn online(config: ProtocolConfig) -> Net {
    let mut net = one_to_one(config);
    net.command(ALICE, Command::GoOnline);
    net.command(BOB, Command::GoOnline);
    net.run_until_quiet();
    net
}

/// (seq, body) of every message device `d` displayed in `conv`, in display order.
fn displayed(net: &Net, d: u32, conv: ConvId) -> Vec<(u64, String)> {
    let events = net.events_of(Address(d));
    let displayed = events.filter_map(|event| match event {
        Event::Displayed {
            conv: c, seq, body, ..
        } if *c == conv => Some((seq.0, body.clone())),
        _ => None,
    });
    displayed.collect()
}

/// (seq, client_seq, body) of every `Committed` event of `conv`, across server restarts.
fn committed(net: &Net, conv: ConvId) -> Vec<(u64, u64, String)> {
    let committed = net.events_of(SERVER).filter_map(|event| match event {
        Event::Committed {
            conv: c,
            seq,
            client_seq,
            body,
            ..
        } if *c == conv => Some((seq.0, client_seq.0, body.clone())),
        _ => None,
    });
    committed.collect()
}

fn bodies(prefix: &str, count: u64) -> Vec<(u64, String)> {
    (1..=count).map(|i| (i, format!("{prefix}{i}"))).collect()
}

// ---- packet predicates ----

fn send_with(client_seq: u64) -> impl Fn(&Flight) -> bool {
    move |f| matches!(&f.packet, Packet::Send { client_seq: cs, .. } if cs.0 == client_seq)
}

fn send_ack_to(d: u32) -> impl Fn(&Flight) -> bool {
    move |f| f.to == Address(d) && matches!(f.packet, Packet::SendAck { .. })
}

fn deliver_to(d: u32, seq: u64) -> impl Fn(&Flight) -> bool {
    move |f| {
        f.to == Address(d)
            && matches!(&f.packet, Packet::Deliver { message } if message.seq.0 == seq)
    }
}

fn any_deliver_to(d: u32) -> impl Fn(&Flight) -> bool {
    move |f| f.to == Address(d) && matches!(f.packet, Packet::Deliver { .. })
}

fn login_from(d: u32) -> impl Fn(&Flight) -> bool {
    move |f| f.from == Address(d) && matches!(f.packet, Packet::Login { .. })
}

/// Whether any packet that left the server names `seq` (in an ack, a push or a pull page).
fn server_revealed(net: &Net, seq: u64) -> bool {
    let reveals = |f: &Flight| match &f.packet {
        Packet::SendAck { seq: s, .. } => s.0 == seq,
        Packet::Deliver { message } => message.seq.0 == seq,
        Packet::PullResponse { messages, .. } => messages.iter().any(|m| m.seq.0 == seq),
        _ => false,
    };
    net.log
        .iter()
        .any(|(_, f, _)| f.from == SERVER && reveals(f))
}

// ---- 1. the happy path ----

// The baseline every other guarantee builds on: store, ack, push, display at the server's seq.
#[test]
fn send_is_committed_acked_and_displayed_on_both_devices() {
    let mut net = online(ProtocolConfig::default());
    assert_eq!(
        net.count(SERVER, |e| matches!(e, Event::SessionOpened { .. })),
        2
    );
    assert!(net.client(ALICE).is_online() && net.client(BOB).is_online());

    net.send(ALICE, CONV, "hi");
    net.run_until_quiet();

    assert_eq!(committed(&net, CONV), vec![(1, 1, "hi".to_string())]);
    let server_order: Vec<&str> = net
        .events_of(SERVER)
        .filter(|e| matches!(e, Event::Committed { .. } | Event::AckSent { .. }))
        .map(Event::name)
        .collect();
    assert_eq!(server_order, ["committed", "ack_sent"], "store, then ack");
    let acked = |e: &Event| matches!(e, Event::SendAcked { seq: Seq(1), .. });
    assert_eq!(net.count(Address(ALICE), acked), 1);
    assert_eq!(displayed(&net, BOB, CONV), vec![(1, "hi".to_string())]);
    assert_eq!(
        displayed(&net, ALICE, CONV),
        vec![(1, "hi".to_string())],
        "the sender shows its own message at its seq"
    );
    assert_eq!(net.client(ALICE).cursor(CONV), Seq(1));
    assert_eq!(net.client(BOB).cursor(CONV), Seq(1));
    assert_eq!(net.client(ALICE).outbox_len(), 0);
}

// ---- 2. identity ----

// A device that cannot prove who it is must never get a session.
#[test]
fn login_with_wrong_token_is_refused_with_bad_credentials() {
    let mut net = one_to_one(ProtocolConfig::default());
    let mut identity = net.client(ALICE).identity();
    identity.token += 1;
    net.clients[0] = Client::new(net.config.clone(), identity);
    net.command(ALICE, Command::GoOnline);
    net.advance(10_000);

    let refusals = net.packets(Fate::Delivered, |f| {
        f.to == Address(ALICE)
            && matches!(&f.packet, Packet::Error { reason: Rejection::BadCredentials, refused } if refused == "login")
    });
    assert!(!refusals.is_empty());
    assert_eq!(net.server.session_count(), 0);
    assert_eq!(
        net.count(SERVER, |e| matches!(e, Event::SessionOpened { .. })),
        0
    );
    assert_eq!(
        net.count(Address(ALICE), |e| matches!(e, Event::LoggedIn { .. })),
        0
    );
    let rejected = |e: &Event| {
        matches!(
            e,
            Event::Rejected {
                reason: Rejection::BadCredentials,
                device: Some(DeviceId(1)),
                ..
            }
        )
    };
    assert_eq!(net.count(SERVER, rejected), refusals.len());
    // The device keeps trying, but backs off rather than hammering the server.
    let logins: Vec<Time> = net
        .packets(Fate::Delivered, login_from(ALICE))
        .iter()
        .map(|(at, _)| *at)
        .collect();
    assert!(logins.len() >= 3);
    assert!(logins
        .windows(2)
        .all(|w| w[1].since_ms(w[0]) >= net.config.reconnect_backoff_initial_ms));
}

// Only a logged-in session may talk to the server; everything else gets an explicit error.
#[test]
fn packet_from_address_without_session_gets_not_logged_in() {
    let mut net = online(ProtocolConfig::default());
    let stranger = Address(99);
    net.inject(stranger, SERVER, Packet::Heartbeat);
    net.inject(
        stranger,
        SERVER,
        Packet::Pull {
            conv: CONV,
            after: Seq(0),
            limit: 10,
        },
    );
    net.run_until_quiet();

    let errors: Vec<String> = net
        .packets(Fate::Delivered, |f| f.to == stranger)
        .iter()
        .map(|(_, f)| match &f.packet {
            Packet::Error {
                reason: Rejection::NotLoggedIn,
                refused,
            } => refused.clone(),
            other => panic!("a stranger got {other:?}"),
        })
        .collect();
    assert_eq!(errors, ["heartbeat", "pull"]);
    let rejected = |e: &Event| {
        matches!(
            e,
            Event::Rejected {
                reason: Rejection::NotLoggedIn,
                device: None,
                ..
            }
        )
    };
    assert_eq!(net.count(SERVER, rejected), 2);
}

// A session must not be able to put words in another user's mouth (E3 no-phantom).
#[test]
fn send_claiming_another_user_is_refused_with_wrong_user_and_never_committed() {
    let mut net = online(ProtocolConfig::default());
    let forged = Packet::Send {
        conv: CONV,
        sender: UserId(2),
        client_msg_id: ClientMsgId(1),
        client_seq: ClientSeq(1),
        body: "forged".to_string(),
        client_time_ms: 0,
        change: None,
    };
    net.inject(Address(ALICE), SERVER, forged);
    net.advance(5_000);

    let refusal = net.packets(Fate::Delivered, |f| {
        f.to == Address(ALICE)
            && matches!(&f.packet, Packet::Error { reason: Rejection::WrongUser, refused } if refused == "send")
    });
    assert_eq!(refusal.len(), 1);
    let rejected = |e: &Event| {
        matches!(
            e,
            Event::Rejected {
                reason: Rejection::WrongUser,
                device: Some(DeviceId(1)),
                ..
            }
        )
    };
    assert_eq!(net.count(SERVER, rejected), 1);
    assert!(committed(&net, CONV).is_empty());
    assert!(net.server.durable_timeline(CONV).is_empty());
    assert_eq!(
        net.server.storage().written(),
        0,
        "nothing was even written"
    );
    assert!(displayed(&net, BOB, CONV).is_empty());
    // The refusal does not cost Alice her session.
    assert!(net.client(ALICE).is_online());
}

// A 1:1 conversation has no membership: a change asked for in one is refused, whoever it
// names, and the conversation keeps its two members (G1 member-only-delivery).
#[test]
fn a_membership_change_in_a_one_to_one_conversation_is_refused() {
    const CAROL: UserId = UserId(3);
    let users = [UserId(1), UserId(2), CAROL];
    let mut net = Net::new(ProtocolConfig::default(), &users, &[(CONV, &users[..2])]);
    net.command(ALICE, Command::GoOnline);
    net.run_until_quiet();
    let add_carol = Packet::Send {
        conv: CONV,
        sender: UserId(1),
        client_msg_id: ClientMsgId(1),
        client_seq: ClientSeq(1),
        body: "adds u3".to_string(),
        client_time_ms: 0,
        change: Some(MembershipChange::Add(CAROL)),
    };
    net.inject(Address(ALICE), SERVER, add_carol);
    net.advance(1_000);
    let refused = |e: &Event| {
        matches!(
            e,
            Event::Rejected {
                reason: Rejection::Unexpected,
                device: Some(DeviceId(1)),
                ..
            }
        )
    };
    assert_eq!(net.count(SERVER, refused), 1);
    assert!(committed(&net, CONV).is_empty());
}

// ---- 3. idempotent retransmit ----

// A lost ack must not turn one message into two (E2 idempotent-commit).
#[test]
fn retransmit_of_committed_message_gets_original_seq_and_commits_once() {
    let mut net = online(ProtocolConfig::default());
    net.drop_next(send_ack_to(ALICE));
    net.send(ALICE, CONV, "once");
    net.run_until_quiet();
    assert_eq!(committed(&net, CONV).len(), 1);
    assert_eq!(net.client(ALICE).outbox_len(), 1, "the ack was lost");

    net.advance(net.config.retransmit_initial_ms);

    assert_eq!(
        net.count(Address(ALICE), |e| matches!(e, Event::Retransmitted { .. })),
        1
    );
    let dedup = |e: &Event| {
        matches!(
            e,
            Event::RetransmitDeduplicated {
                seq: Seq(1),
                device: DeviceId(1),
                ..
            }
        )
    };
    assert_eq!(net.count(SERVER, dedup), 1);
    assert_eq!(committed(&net, CONV), vec![(1, 1, "once".to_string())]);
    let acked: Vec<Seq> = net
        .events_of(Address(ALICE))
        .filter_map(|e| match e {
            Event::SendAcked { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(acked, [Seq(1)]);
    assert_eq!(net.client(ALICE).outbox_len(), 0);
    assert_eq!(displayed(&net, ALICE, CONV), vec![(1, "once".to_string())]);
    assert_eq!(displayed(&net, BOB, CONV), vec![(1, "once".to_string())]);
}

// ---- 4. sender FIFO ----

// The classic group-disorder bug: a lost first message must not commit after later ones (O3).
#[test]
fn later_sends_arriving_before_a_lost_first_are_dropped_and_window_commits_in_order() {
    let mut net = online(ProtocolConfig::default());
    net.drop_next(send_with(1));
    for body in ["m1", "m2", "m3"] {
        net.send(ALICE, CONV, body);
    }
    net.run_until_quiet();

    let dropped: Vec<(u64, u64)> = net
        .events_of(SERVER)
        .filter_map(|e| match e {
            Event::OutOfOrderDropped {
                client_seq,
                expected,
                ..
            } => Some((client_seq.0, expected.0)),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, [(2, 1), (3, 1)]);
    assert!(committed(&net, CONV).is_empty());

    net.advance(net.config.retransmit_initial_ms);

    let expected = vec![
        (1, 1, "m1".to_string()),
        (2, 2, "m2".to_string()),
        (3, 3, "m3".to_string()),
    ];
    assert_eq!(committed(&net, CONV), expected);
    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 3));
    assert_eq!(displayed(&net, ALICE, CONV), bodies("m", 3));
}

// ---- 5. hold-back and gap pull ----

// A device shows the timeline without holes: a later message waits until the hole is filled (O2).
#[test]
fn message_after_a_lost_push_is_held_back_and_the_gap_is_pulled() {
    let mut net = online(ProtocolConfig::default());
    net.drop_all(deliver_to(BOB, 1)); // seq 1 is never pushed successfully
    net.send(ALICE, CONV, "m1");
    net.send(ALICE, CONV, "m2");
    net.run_until_quiet();

    assert!(displayed(&net, BOB, CONV).is_empty());
    assert_eq!(
        net.count(Address(BOB), |e| matches!(
            e,
            Event::HeldBack { seq: Seq(2), .. }
        )),
        1
    );

    net.advance(net.config.gap_timeout_ms - 1);
    assert!(
        displayed(&net, BOB, CONV).is_empty(),
        "no pull before the gap timeout"
    );
    net.advance(1);

    let gap_pull = |e: &Event| {
        matches!(
            e,
            Event::PullSent {
                after: Seq(0),
                reason: PullReason::Gap,
                ..
            }
        )
    };
    assert_eq!(net.count(Address(BOB), gap_pull), 1);
    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 2));
    net.advance(60_000);
    assert_eq!(
        displayed(&net, BOB, CONV),
        bodies("m", 2),
        "each shown once, also after push retries"
    );
}

// A hole filled by a late push must be displayed in order without waiting for a pull (O2).
#[test]
fn pushes_delivered_in_reverse_order_are_displayed_in_seq_order_without_a_pull() {
    let mut net = online(ProtocolConfig::default());
    net.hold_all(any_deliver_to(BOB));
    net.send(ALICE, CONV, "m1");
    net.send(ALICE, CONV, "m2");
    net.run_until_quiet();
    assert_eq!(net.held.len(), 2);

    net.release_held();
    assert!(net.deliver_first(deliver_to(BOB, 2)));
    assert!(
        displayed(&net, BOB, CONV).is_empty(),
        "seq 2 waits for seq 1"
    );
    net.run_until_quiet();

    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 2));
    assert_eq!(
        net.count(Address(BOB), |e| matches!(e, Event::PullSent { .. })),
        0
    );
    net.advance(60_000);
    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 2));
}

// ---- 6. duplicate push ----

// A duplicated packet must never show a message twice (E1 no-duplicate-display).
#[test]
fn duplicate_push_is_dropped_by_the_device() {
    let mut net = online(ProtocolConfig::default());
    net.duplicate_next(any_deliver_to(BOB));
    net.send(ALICE, CONV, "once");
    net.run_until_quiet();

    assert_eq!(net.packets(Fate::Duplicated, deliver_to(BOB, 1)).len(), 1);
    assert_eq!(
        net.packets(Fate::Delivered, deliver_to(BOB, 1)).len(),
        1,
        "the copy"
    );
    assert_eq!(
        net.count(Address(BOB), |e| matches!(
            e,
            Event::DuplicateDropped { seq: Seq(1), .. }
        )),
        1
    );
    assert_eq!(displayed(&net, BOB, CONV), vec![(1, "once".to_string())]);
}

// ---- 7. offline and resume ----

// Everything is stored whether the recipient is online or not, and resumes from its cursor in pages.
#[test]
fn offline_device_pulls_missed_messages_in_pages_from_its_cursor() {
    let config = ProtocolConfig {
        pull_page_max: 3,
        ..ProtocolConfig::default()
    };
    let mut net = online(config);
    net.send(ALICE, CONV, "m1");
    net.run_until_quiet();
    net.command(BOB, Command::GoOffline);
    net.run_until_quiet();
    assert_eq!(
        net.count(SERVER, |e| matches!(
            e,
            Event::SessionClosed {
                reason: SessionEnd::Logout,
                ..
            }
        )),
        1
    );

    for i in 2..=8 {
        net.send(ALICE, CONV, &format!("m{i}"));
    }
    net.advance(1_000);
    assert_eq!(committed(&net, CONV).len(), 8);
    assert_eq!(
        displayed(&net, BOB, CONV),
        bodies("m", 1),
        "nothing reaches an offline device"
    );

    net.command(BOB, Command::GoOnline);
    net.run_until_quiet();

    let pulls: Vec<(u64, PullReason)> = net
        .events_of(Address(BOB))
        .filter_map(|e| match e {
            Event::PullSent { after, reason, .. } => Some((after.0, *reason)),
            _ => None,
        })
        .collect();
    let expected = [
        (1, PullReason::Resume),
        (4, PullReason::NextPage),
        (7, PullReason::NextPage),
    ];
    assert_eq!(pulls, expected);
    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 8));
}

// ---- 8. crash between write and sync ----

// Store-then-ack: an unsynced write may be lost, but never after anyone saw it (D1, O1).
#[test]
fn crash_before_sync_loses_only_an_invisible_write_and_retransmit_commits_it() {
    let mut net = online(ProtocolConfig::default());
    net.send(ALICE, CONV, "m1");
    net.run_until_quiet();
    assert_eq!(
        net.count(Address(ALICE), |e| matches!(e, Event::SendAcked { .. })),
        1
    );

    net.hold_syncs = true;
    net.send(ALICE, CONV, "m2");
    net.run_until_quiet();
    assert_eq!(net.server.storage().written(), 2);
    assert_eq!(net.server.storage().synced(), 1);
    assert_eq!(committed(&net, CONV).len(), 1);
    assert!(
        !server_revealed(&net, 2),
        "nothing about seq 2 leaves before it is durable"
    );

    net.crash_server();
    net.hold_syncs = false;
    let recovered = |e: &Event| {
        matches!(
            e,
            Event::Recovered {
                messages: 1,
                lost_unsynced_writes: 1
            }
        )
    };
    assert_eq!(net.count(SERVER, recovered), 1);
    assert_eq!(
        net.server.durable_timeline(CONV).len(),
        1,
        "the acked message survives"
    );

    net.advance(30_000);

    assert_eq!(
        committed(&net, CONV),
        vec![(1, 1, "m1".to_string()), (2, 2, "m2".to_string())]
    );
    let acked: Vec<u64> = net
        .events_of(Address(ALICE))
        .filter_map(|e| match e {
            Event::SendAcked { seq, .. } => Some(seq.0),
            _ => None,
        })
        .collect();
    assert_eq!(acked, [1, 2]);
    assert_eq!(displayed(&net, ALICE, CONV), bodies("m", 2));
    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 2));
    assert_eq!(net.client(ALICE).outbox_len(), 0);
}

// A seq lost with an unsynced write may go to another sender; every device must still agree (O1, O4).
#[test]
fn seq_of_a_lost_write_taken_by_another_sender_is_seen_the_same_everywhere() {
    let mut net = online(ProtocolConfig::default());
    net.send(ALICE, CONV, "a1");
    net.run_until_quiet();
    net.hold_syncs = true;
    net.send(ALICE, CONV, "a2");
    net.run_until_quiet();
    net.crash_server();
    net.hold_syncs = false;

    // Bob's app restarts (so he logs in at once) and sends before Alice's retransmit comes back.
    net.restart_client(BOB);
    net.run_until_quiet();
    net.send(BOB, CONV, "b1");
    net.run_until_quiet();
    net.advance(30_000);

    let expected = vec![
        (1, 1, "a1".to_string()),
        (2, 1, "b1".to_string()),
        (3, 2, "a2".to_string()),
    ];
    assert_eq!(committed(&net, CONV), expected);
    let timeline = [(1, "a1"), (2, "b1"), (3, "a2")].map(|(seq, body)| (seq, body.to_string()));
    assert_eq!(displayed(&net, ALICE, CONV), timeline);
    assert_eq!(displayed(&net, BOB, CONV), timeline);
}

// ---- 9. server restart ----

// A restarted server forgets sessions; devices must notice, log in again and carry on.
#[test]
fn devices_log_in_again_after_server_restart_and_continue() {
    let mut net = online(ProtocolConfig::default());
    net.send(ALICE, CONV, "m1");
    net.run_until_quiet();
    net.crash_server();
    assert_eq!(net.server.session_count(), 0);

    net.send(ALICE, CONV, "m2");
    net.run_until_quiet();
    let forgot = |e: &Event| {
        matches!(
            e,
            Event::SessionLost {
                reason: SessionEnd::ServerForgot
            }
        )
    };
    assert_eq!(
        net.count(Address(ALICE), forgot),
        1,
        "the send itself revealed the restart"
    );
    let not_logged_in = |f: &Flight| {
        f.to == Address(ALICE)
            && matches!(&f.packet, Packet::Error { reason: Rejection::NotLoggedIn, refused } if refused == "send")
    };
    assert_eq!(net.packets(Fate::Delivered, not_logged_in).len(), 1);

    net.advance(net.config.heartbeat_interval_ms + net.config.heartbeat_probe_ms);

    assert_eq!(
        net.count(Address(BOB), forgot),
        1,
        "Bob's heartbeat revealed the restart"
    );
    let heartbeat_refused = |f: &Flight| {
        f.to == Address(BOB)
            && matches!(&f.packet, Packet::Error { reason: Rejection::NotLoggedIn, refused } if refused == "heartbeat")
    };
    assert_eq!(net.packets(Fate::Delivered, heartbeat_refused).len(), 1);
    for d in [ALICE, BOB] {
        assert!(net.client(d).is_online());
        assert_eq!(
            net.count(Address(d), |e| matches!(e, Event::LoggedIn { .. })),
            2
        );
        assert_eq!(displayed(&net, d, CONV), bodies("m", 2));
    }
    assert_eq!(
        committed(&net, CONV),
        vec![(1, 1, "m1".to_string()), (2, 2, "m2".to_string())]
    );

    net.send(BOB, CONV, "m3");
    net.run_until_quiet();
    assert_eq!(displayed(&net, ALICE, CONV), bodies("m", 3));
}

// ---- 10. heartbeats and silence ----

// Heartbeats are what tell a live session from a dead one, on both ends.
#[test]
fn heartbeats_keep_the_session_alive() {
    let mut net = online(ProtocolConfig::default());
    net.advance(5 * 60_000);

    let heartbeats = net.packets(Fate::Delivered, |f| {
        f.from == Address(ALICE) && f.packet == Packet::Heartbeat
    });
    assert!(heartbeats.len() >= 5 * 60_000 / net.config.heartbeat_interval_ms as usize);
    assert_eq!(
        net.count(SERVER, |e| matches!(e, Event::SessionClosed { .. })),
        0
    );
    for d in [ALICE, BOB] {
        assert_eq!(
            net.count(Address(d), |e| matches!(e, Event::SessionLost { .. })),
            0
        );
        assert!(net.client(d).is_online());
    }
}

// A silent peer must be declared dead on both sides, and the device must reconnect without a storm.
#[test]
fn silence_expires_the_session_on_both_sides_and_the_device_reconnects_with_backoff() {
    let mut net = online(ProtocolConfig::default());
    let cut = net.now;
    net.drop_all(|f| f.from == Address(ALICE) || f.to == Address(ALICE));
    net.advance(60_000);

    let server_closed = net.events[&SERVER].iter().find_map(|(at, e)| match e {
        Event::SessionClosed {
            device: DeviceId(1),
            reason: SessionEnd::Timeout,
            ..
        } => Some(*at),
        _ => None,
    });
    let expired_at = server_closed.expect("server expires the silent session");
    assert!(expired_at.since_ms(cut) >= net.config.session_timeout_ms);
    assert!(
        expired_at.since_ms(cut) < net.config.session_timeout_ms + 2 * net.config.server_tick_ms
    );
    let lost_at = net.events[&Address(ALICE)]
        .iter()
        .find_map(|(at, e)| match e {
            Event::SessionLost {
                reason: SessionEnd::Timeout,
            } => Some(*at),
            _ => None,
        });
    let lost_at = lost_at.expect("device drops the silent session");
    assert_eq!(lost_at.since_ms(cut), net.config.server_silence_timeout_ms);
    assert!(!net.client(ALICE).is_online());
    assert!(net.client(BOB).is_online(), "Bob heartbeats on");

    // Login attempts after the loss: the first waits the initial backoff, gaps then grow.
    let logins: Vec<Time> = net
        .packets(Fate::Dropped, login_from(ALICE))
        .iter()
        .map(|(at, _)| *at)
        .collect();
    assert!(logins.len() >= 3);
    assert_eq!(
        logins[0].since_ms(lost_at),
        net.config.reconnect_backoff_initial_ms
    );
    let gaps: Vec<u64> = logins.windows(2).map(|w| w[1].since_ms(w[0])).collect();
    assert!(
        gaps.windows(2).all(|g| g[0] < g[1]
            || g[1] == net.config.reconnect_backoff_max_ms + net.config.login_timeout_ms),
        "gaps {gaps:?}"
    );
    // The device's own record of it: the first login on going online, then one per try after
    // the loss, each counting the failures before it (what C3 judges the waits by).
    let attempts: Vec<u32> = net
        .events_of(Address(ALICE))
        .filter_map(|event| match event {
            Event::LoginSent { attempt } => Some(*attempt),
            _ => None,
        })
        .collect();
    let after_loss = (0..logins.len() as u32).collect::<Vec<_>>();
    assert_eq!(attempts, [&[0][..], &after_loss].concat());
    let failures = net.count(Address(ALICE), |e| {
        matches!(e, Event::LoginFailed { refused: false })
    });
    assert_eq!(failures, logins.len());

    net.clear_rules();
    net.advance(net.config.reconnect_backoff_max_ms + net.config.login_timeout_ms);
    assert!(net.client(ALICE).is_online());
    assert_eq!(
        net.count(Address(ALICE), |e| matches!(e, Event::LoggedIn { .. })),
        2
    );
    net.send(ALICE, CONV, "back");
    net.run_until_quiet();
    assert_eq!(displayed(&net, BOB, CONV), vec![(1, "back".to_string())]);
}

// ---- 11. outbox bound ----

// Overflow is an error the user sees, never a silent drop (D4, bounds).
#[test]
fn send_beyond_outbox_max_while_offline_is_refused_at_once() {
    let config = ProtocolConfig {
        outbox_max: 3,
        ..ProtocolConfig::default()
    };
    let mut net = one_to_one(config);
    net.command(BOB, Command::GoOnline);
    net.run_until_quiet();
    for i in 1..=4 {
        net.send(ALICE, CONV, &format!("m{i}"));
    }

    let requested = net.count(Address(ALICE), |e| matches!(e, Event::SendRequested { .. }));
    assert_eq!(requested, 3);
    let refused: Vec<&Event> = net
        .events_of(Address(ALICE))
        .filter(|e| matches!(e, Event::SendRefused { .. }))
        .collect();
    let expected = Event::SendRefused {
        conv: CONV,
        body: "m4".to_string(),
        reason: SendFailure::OutboxFull,
    };
    assert_eq!(refused, [&expected]);
    assert_eq!(net.client(ALICE).outbox_len(), 3);

    net.command(ALICE, Command::GoOnline);
    net.run_until_quiet();
    assert_eq!(
        displayed(&net, BOB, CONV),
        bodies("m", 3),
        "the refused message never commits"
    );
    net.send(ALICE, CONV, "m4");
    net.run_until_quiet();
    assert_eq!(
        displayed(&net, BOB, CONV),
        bodies("m", 4),
        "room again once acked"
    );
}

// ---- 12. hold-back bound ----

// A bounded buffer may drop what it cannot hold, but must never show anything out of order (O2, D2).
#[test]
fn more_out_of_order_messages_than_hold_back_max_all_display_in_order() {
    let config = ProtocolConfig {
        hold_back_max: 2,
        ..ProtocolConfig::default()
    };
    let mut net = online(config);
    net.drop_all(deliver_to(BOB, 1));
    for i in 1..=6 {
        net.send(ALICE, CONV, &format!("m{i}"));
    }
    net.run_until_quiet();

    assert!(displayed(&net, BOB, CONV).is_empty());
    let held: Vec<u64> = net
        .events_of(Address(BOB))
        .filter_map(|e| match e {
            Event::HeldBack { seq, .. } => Some(seq.0),
            _ => None,
        })
        .collect();
    assert_eq!(held, [2, 3]);
    assert_eq!(
        net.count(Address(BOB), |e| matches!(
            e,
            Event::HoldBackOverflow { .. }
        )),
        3
    );

    net.advance(60_000);
    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 6));
}

// A full buffer must evict its highest message, not the one that closes the hole (O2, D2).
#[test]
fn full_hold_back_evicts_its_highest_message_and_still_displays_everything_in_order() {
    let config = ProtocolConfig {
        hold_back_max: 2,
        ..ProtocolConfig::default()
    };
    let mut net = online(config);
    net.hold_all(any_deliver_to(BOB));
    for i in 1..=5 {
        net.send(ALICE, CONV, &format!("m{i}"));
    }
    net.run_until_quiet();
    net.release_held();
    for seq in [5, 4, 3, 2] {
        assert!(net.deliver_first(deliver_to(BOB, seq)));
    }

    let evicted: Vec<u64> = net
        .events_of(Address(BOB))
        .filter_map(|e| match e {
            Event::HoldBackOverflow { seq, .. } => Some(seq.0),
            _ => None,
        })
        .collect();
    assert_eq!(
        evicted,
        [5, 4],
        "each lower arrival pushes out the highest held"
    );
    assert!(displayed(&net, BOB, CONV).is_empty());

    net.run_until_quiet(); // seq 1 arrives: 1, 2, 3 show at once
    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 3));
    net.advance(60_000); // 4 and 5 come back by push retry or pull
    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 5));
}

// ---- 13. the sync key ----

// Without a hole there is no gap to pull; the heartbeat's sync key is the last line of defence.
#[test]
fn a_last_message_whose_pushes_all_failed_arrives_through_the_sync_key() {
    let config = ProtocolConfig {
        push_attempts_max: 3,
        ..ProtocolConfig::default()
    };
    let mut net = online(config);
    net.drop_all(any_deliver_to(BOB));
    net.send(ALICE, CONV, "last");
    net.advance(10_000);

    let abandoned = |e: &Event| {
        matches!(
            e,
            Event::PushAbandoned {
                device: DeviceId(2),
                seq: Seq(1),
                ..
            }
        )
    };
    assert_eq!(net.count(SERVER, abandoned), 1);
    assert_eq!(net.packets(Fate::Dropped, any_deliver_to(BOB)).len(), 3);
    assert!(displayed(&net, BOB, CONV).is_empty());

    net.advance(net.config.heartbeat_interval_ms);

    let sync_requests = net.packets(Fate::Delivered, |f| {
        f.from == Address(BOB) && f.packet == Packet::SyncRequest
    });
    assert_eq!(sync_requests.len(), 1);
    let resume = |e: &Event| {
        matches!(
            e,
            Event::PullSent {
                after: Seq(0),
                reason: PullReason::Resume,
                ..
            }
        )
    };
    assert_eq!(net.count(Address(BOB), resume), 1);
    assert_eq!(displayed(&net, BOB, CONV), vec![(1, "last".to_string())]);
}

// ---- 14. app restart ----

// The outbox and cursor are the device's database: an app restart must lose neither (D4, M3).
#[test]
fn app_restart_keeps_cursor_and_outbox_and_resends_unacked_messages_once() {
    let mut net = online(ProtocolConfig::default());
    net.send(ALICE, CONV, "m1");
    net.run_until_quiet();
    net.drop_next(send_ack_to(ALICE)); // m2 commits, its ack is lost
    net.drop_next(send_with(3)); // m3 never reaches the server
    net.send(ALICE, CONV, "m2");
    net.send(ALICE, CONV, "m3");
    net.run_until_quiet();
    assert_eq!(committed(&net, CONV).len(), 2);

    net.restart_client(ALICE);
    assert!(!net.client(ALICE).is_online());
    assert_eq!(net.client(ALICE).cursor(CONV), Seq(1));
    assert_eq!(net.client(ALICE).outbox_len(), 2);

    net.run_until_quiet();

    assert!(net.client(ALICE).is_online());
    let expected: Vec<(u64, u64, String)> = (1..=3).map(|i| (i, i, format!("m{i}"))).collect();
    assert_eq!(committed(&net, CONV), expected);
    assert_eq!(
        net.count(SERVER, |e| matches!(
            e,
            Event::RetransmitDeduplicated { seq: Seq(2), .. }
        )),
        1
    );
    assert_eq!(net.client(ALICE).outbox_len(), 0);
    assert_eq!(
        displayed(&net, ALICE, CONV),
        bodies("m", 3),
        "nothing shown twice after the restart"
    );
    assert_eq!(displayed(&net, BOB, CONV), bodies("m", 3));
}

// A logout the network holds back until after the device's next login must not end that
// login's session. Found with a 2,000-member group behind 4 gateways and 3 logic nodes
// (scenarios/group-2000-cluster.toml): a device logged out and at once back in, a shard
// got the two the wrong way round, and the device got no news of the group until its next
// heartbeat was refused 15 s later.
#[test]
fn a_logout_overtaken_by_the_next_login_ends_nothing() {
    stale_logout_ends_nothing(false);
}

// The same with the app killed and started again between the logout and the login: the
// restart must not give the new connection the number of the one the logout ended.
#[test]
fn a_logout_overtaken_by_the_login_after_an_app_restart_ends_nothing() {
    stale_logout_ends_nothing(true);
}

fn stale_logout_ends_nothing(restart_between: bool) {
    let mut net = online(ProtocolConfig::default());
    net.hold_all(|f| f.from == Address(ALICE) && matches!(f.packet, Packet::Logout { .. }));
    net.command(ALICE, Command::GoOffline);
    if restart_between {
        net.restart_client(ALICE);
    }
    net.command(ALICE, Command::GoOnline);
    net.advance(1_000);
    assert!(net.client(ALICE).is_online());
    net.clear_rules();
    net.release_held();
    net.run_until_quiet();
    let logouts = |net: &Net| {
        net.count(SERVER, |e| {
            matches!(
                e,
                Event::SessionClosed {
                    reason: SessionEnd::Logout,
                    ..
                }
            )
        })
    };
    assert_eq!(logouts(&net), 0, "the stale logout ended the new session");
    net.send(BOB, CONV, "still there?");
    net.advance(1_000);
    let shown = displayed(&net, ALICE, CONV);
    assert_eq!(
        shown.last().map(|(_, body)| body.as_str()),
        Some("still there?")
    );
    // The logout of the session it names still ends it.
    net.command(ALICE, Command::GoOffline);
    net.run_until_quiet();
    assert_eq!(logouts(&net), 1);
}

/// Alice, Bob and Carol (device 3), the members of `GROUP`, all logged in; the group is above
/// `notify_threshold_members` (2), so news reaches it by notify-then-pull.
fn notified_group_online(notify_merge_ms: u64) -> Net {
    let config = ProtocolConfig {
        notify_threshold_members: 2,
        notify_merge_ms,
        ..ProtocolConfig::default()
    };
    let users = [UserId(1), UserId(2), UserId(3)];
    let mut net = Net::with_groups(config, &users, &[], &[(GROUP, &users)]);
    for d in [ALICE, BOB, CAROL] {
        net.command(d, Command::GoOnline);
    }
    net.run_until_quiet();
    net
}

fn notice_to(d: u32) -> impl Fn(&Flight) -> bool {
    move |f: &Flight| f.to == Address(d) && matches!(f.packet, Packet::Notify { .. })
}

// Notify-then-pull (a group above `notify_threshold_members`): one notice is outstanding per
// device and group, and news merges into it, unless it was already sent again unanswered. Found
// with a 2,000-member group behind 4 gateways and 3 logic nodes (seed 136 of
// scenarios/group-2000-cluster.toml): a notice lost in a partition had backed off to seconds,
// and the news after the heal waited for it.
#[test]
fn news_merges_into_a_fresh_notice_and_goes_out_again_after_a_retried_one() {
    let mut net = notified_group_online(0);
    // Fresh: the second message's news merges into the notice still outstanding.
    net.hold_all(notice_to(CAROL));
    net.send(BOB, GROUP, "first");
    net.send(BOB, GROUP, "second");
    net.advance(500);
    assert_eq!(net.packets(Fate::Held, notice_to(CAROL)).len(), 1);
    net.clear_rules();
    net.release_held();
    net.run_until_quiet();
    let shown = |net: &Net| -> Vec<String> {
        let displayed = displayed(net, CAROL, GROUP).into_iter();
        displayed.map(|(_, body)| body).collect()
    };
    assert_eq!(shown(&net), ["first", "second"]);
    // Retried: the notice and its first retry (1 s later) are lost; the next news goes out at
    // once rather than at the second retry, 2 s after the first.
    net.drop_all(notice_to(CAROL));
    net.send(BOB, GROUP, "third");
    net.advance(1_500);
    assert_eq!(net.packets(Fate::Dropped, notice_to(CAROL)).len(), 2);
    net.clear_rules();
    net.send(BOB, GROUP, "fourth");
    net.advance(100);
    assert_eq!(shown(&net), ["first", "second", "third", "fourth"]);
}

#[test]
fn messages_that_overtook_a_devices_join_are_shown_when_the_join_arrives() {
    let users = [UserId(1), UserId(2), UserId(3)];
    let founders = [UserId(1), UserId(2)];
    let config = ProtocolConfig::default();
    let mut net = Net::with_groups(config, &users, &[], &[(GROUP, &founders)]);
    for d in [ALICE, BOB, CAROL] {
        net.command(d, Command::GoOnline);
    }
    net.run_until_quiet();
    net.send(BOB, GROUP, "before Carol");
    net.run_until_quiet();
    // Alice adds Carol (seq 2) and says hello (seq 3); the hello reaches Carol first.
    net.hold_all(deliver_to(CAROL, 2));
    let change = imsim_model::MembershipChange::Add(UserId(3));
    net.command(
        ALICE,
        Command::ChangeMembership {
            conv: GROUP,
            change,
        },
    );
    net.send(ALICE, GROUP, "hello Carol");
    net.run_until_quiet();
    assert_eq!(displayed(&net, CAROL, GROUP), [], "the hello is held back");
    // The join point lifts Carol's cursor past what came before her; the hello, above it, is
    // kept and shown with the join, not left to the push's retry a second later.
    net.clear_rules();
    net.release_held();
    net.run_until_quiet();
    let seqs: Vec<u64> = displayed(&net, CAROL, GROUP)
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(seqs, [2, 3]);
    let pushes_of_hello = net.packets(Fate::Delivered, deliver_to(CAROL, 3)).len();
    assert_eq!(pushes_of_hello, 1, "no retry was needed");
}

// A device acks a notice of news it already has (its own message, merged into a round). When
// the next commit's news merges into that notice while the ack is on its way, the ack answers
// what the notice said, not the news merged since: the server sends that news in a fresh notice
// at once, not at the notice's retry a second later. Found by the group property test
// (tests/properties.rs, seed 2089137161296234520): three devices saw a message 1 s late.
#[test]
fn news_merged_into_a_notice_whose_ack_was_in_flight_goes_out_when_the_ack_arrives() {
    let mut net = notified_group_online(1);
    let ack_from =
        |d: u32| move |f: &Flight| f.from == Address(d) && matches!(f.packet, Packet::Ack { .. });
    let shown = |net: &Net| -> Vec<String> {
        let displayed = displayed(net, BOB, GROUP).into_iter();
        displayed.map(|(_, body)| body).collect()
    };
    // Bob's own message comes back to him in the round's notice (on the server's next tick);
    // his ack of it is held.
    net.hold_all(ack_from(BOB));
    net.send(BOB, GROUP, "first");
    net.advance(300);
    assert_eq!(net.packets(Fate::Delivered, notice_to(BOB)).len(), 1);
    // Alice's message merges into Bob's outstanding notice: the next round skips him.
    net.send(ALICE, GROUP, "second");
    net.advance(300);
    assert_eq!(net.packets(Fate::Delivered, notice_to(BOB)).len(), 1);
    assert_eq!(shown(&net), ["first"]);
    net.clear_rules();
    net.release_held();
    net.advance(50);
    assert_eq!(shown(&net), ["first", "second"]);
    assert_eq!(net.packets(Fate::Delivered, notice_to(BOB)).len(), 2);
}
