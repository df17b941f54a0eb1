//! Read receipts, presence and multi-device: one promise per test, on the in-memory network of
//! `support`. Owners are listed per device: `owners[d - 1]` owns device `d`.

mod support;

use imsim_model::{
    Address, Command, ConvId, Event, Packet, PresenceMode, ProtocolConfig, Seq, UserId, Variant,
};
use support::{Flight, Net, SERVER};

const CONV: ConvId = ConvId(1);
const U1: UserId = UserId(1);
const U2: UserId = UserId(2);
const U3: UserId = UserId(3);

/// u1 owns d1 and d3, u2 owns d2; they share `CONV`; everyone online.
fn siblings(config: ProtocolConfig) -> Net {
    let mut net = Net::new(config, &[U1, U2, U1], &[(CONV, &[U1, U2])]);
    for d in 1..=3 {
        net.command(d, Command::GoOnline);
    }
    net.run_until_quiet();
    net
}

fn read(net: &mut Net, d: u32, conv: ConvId) {
    net.command(d, Command::Read { conv });
    net.run_until_quiet();
}

/// The watermarks of `user` in `CONV` device `d` showed, in order.
fn seen(net: &Net, d: u32, user: UserId) -> Vec<u64> {
    let events = net.events_of(Address(d));
    let seen = events.filter_map(|event| match event {
        Event::ReadSeen { user: u, up_to, .. } if *u == user => Some(up_to.0),
        _ => None,
    });
    seen.collect()
}

fn advanced(net: &Net) -> Vec<(UserId, u64)> {
    let events = net.events_of(SERVER);
    let advanced = events.filter_map(|event| match event {
        Event::ReadAdvanced { user, up_to, .. } => Some((*user, up_to.0)),
        _ => None,
    });
    advanced.collect()
}

// ---- 1:1 watermarks ----

// The "read" tick: the peer sees it, and so does the reader's other device.
#[test]
fn a_read_reaches_the_peer_and_the_readers_other_device() {
    let mut net = siblings(ProtocolConfig::default());
    net.send(2, CONV, "one");
    net.send(2, CONV, "two");
    net.run_until_quiet();
    read(&mut net, 1, CONV);
    assert_eq!(advanced(&net), vec![(U1, 2)]);
    assert_eq!(seen(&net, 2, U1), vec![2], "the peer shows the tick");
    assert_eq!(seen(&net, 3, U1), vec![2], "the sibling shows it read");
    assert_eq!(seen(&net, 1, U1), vec![2]);
    // The sibling has nothing more to read: it sends nothing.
    read(&mut net, 3, CONV);
    assert_eq!(advanced(&net), vec![(U1, 2)]);
}

// Store, then tell: a read lost in a crash before its sync was never shown to anyone, and the
// device sends it again until the server confirms it.
#[test]
fn a_read_is_durable_before_it_is_shown_and_resent_until_confirmed() {
    let mut net = siblings(ProtocolConfig::default());
    net.send(2, CONV, "one");
    net.run_until_quiet();
    net.hold_syncs = true;
    read(&mut net, 1, CONV);
    assert_eq!(advanced(&net), vec![]);
    assert_eq!(
        seen(&net, 2, U1),
        Vec::<u64>::new(),
        "nothing shown before the sync"
    );
    net.crash_server();
    net.hold_syncs = false;
    net.advance(60_000);
    assert_eq!(advanced(&net), vec![(U1, 1)]);
    assert_eq!(seen(&net, 2, U1), vec![1]);
}

// A late or reordered read never moves a watermark back.
#[test]
fn a_stale_read_is_ignored_and_the_device_told_the_current_watermark() {
    let mut net = siblings(ProtocolConfig::default());
    net.send(2, CONV, "one");
    net.send(2, CONV, "two");
    net.run_until_quiet();
    read(&mut net, 1, CONV);
    let stale = Packet::Read {
        conv: CONV,
        up_to: Seq(1),
    };
    net.inject(Address(3), SERVER, stale);
    net.run_until_quiet();
    let ignored = net.count(
        SERVER,
        |e| matches!(e, Event::ReadIgnored { up_to, .. } if up_to.0 == 1),
    );
    assert_eq!(ignored, 1);
    assert_eq!(advanced(&net), vec![(U1, 2)]);
    assert_eq!(seen(&net, 3, U1), vec![2]);
}

// A device marks read what it displayed, not what waits behind a hole.
#[test]
fn a_device_marks_read_only_what_it_displayed() {
    for (variant, expected) in [(Variant::Correct, 1), (Variant::ReadBeforeDisplay, 3)] {
        let config = ProtocolConfig {
            variant,
            gap_timeout_ms: 10_000,
            ..ProtocolConfig::default()
        };
        let mut net = siblings(config);
        net.send(2, CONV, "one");
        net.run_until_quiet();
        let push_of_two = |f: &Flight| {
            f.to == Address(1)
                && matches!(&f.packet, Packet::Deliver { message } if message.seq.0 == 2)
        };
        net.drop_all(push_of_two);
        net.send(2, CONV, "two");
        net.send(2, CONV, "three");
        net.run_until_quiet();
        read(&mut net, 1, CONV);
        let marked: Vec<u64> = net
            .events_of(Address(1))
            .filter_map(|e| match e {
                Event::ReadMarked { up_to, .. } => Some(up_to.0),
                _ => None,
            })
            .collect();
        assert_eq!(marked, vec![expected], "{variant}");
    }
}

// ---- group read counts ----

/// u1..u3 with one device each (d1..d3) and u3's second device d4, in group `CONV`.
fn group(config: ProtocolConfig) -> Net {
    let users = [U1, U2, U3];
    let mut net = Net::with_groups(config, &[U1, U2, U3, U3], &[], &[(CONV, &users)]);
    for d in 1..=4 {
        net.command(d, Command::GoOnline);
    }
    net.run_until_quiet();
    net
}

fn counts_seen(net: &Net, d: u32) -> Vec<u32> {
    let events = net.events_of(Address(d));
    let counts = events.filter_map(|event| match event {
        Event::ReadCountSeen { readers, .. } => Some(*readers),
        _ => None,
    });
    counts.collect()
}

// A member who read on two devices is one reader; the sender is never one.
#[test]
fn read_counts_count_users_not_devices() {
    for (variant, expected) in [
        (Variant::Correct, vec![1, 2]),
        (Variant::ReadCountDouble, vec![1, 2, 3]),
    ] {
        let config = ProtocolConfig {
            variant,
            ..ProtocolConfig::default()
        };
        let mut net = group(config);
        net.send(1, CONV, "hello");
        net.run_until_quiet();
        read(&mut net, 1, CONV);
        read(&mut net, 2, CONV);
        read(&mut net, 3, CONV);
        // d4 displayed the message too, and its user already read it on d3.
        net.inject(
            Address(4),
            SERVER,
            Packet::Read {
                conv: CONV,
                up_to: Seq(1),
            },
        );
        net.run_until_quiet();
        assert_eq!(counts_seen(&net, 1), expected, "{variant}");
    }
}

// Opening a conversation shows who read the user's latest message there and who has not.
#[test]
fn the_sender_sees_who_read_and_who_has_not() {
    let mut net = group(ProtocolConfig::default());
    net.send(1, CONV, "hello");
    net.run_until_quiet();
    read(&mut net, 3, CONV);
    read(&mut net, 1, CONV);
    let lists: Vec<(Vec<UserId>, Vec<UserId>)> = net
        .events_of(Address(1))
        .filter_map(|e| match e {
            Event::ReadersSeen {
                readers, unread, ..
            } => Some((readers.clone(), unread.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(lists, vec![(vec![U3], vec![U2])]);
}

// Above the size threshold, a window's reads reach the sender as one batch.
#[test]
fn large_group_read_counts_are_batched() {
    let config = ProtocolConfig {
        notify_threshold_members: 2,
        receipt_batch_ms: 1_000,
        ..ProtocolConfig::default()
    };
    let mut net = group(config);
    net.send(1, CONV, "hello");
    net.advance(100);
    read(&mut net, 2, CONV);
    read(&mut net, 3, CONV);
    assert_eq!(
        counts_seen(&net, 1),
        Vec::<u32>::new(),
        "nothing before the window closes"
    );
    net.advance(1_500);
    assert_eq!(counts_seen(&net, 1), vec![2], "one batch with both readers");
}

// A lost count push is repaired by the heartbeat's receipt key.
#[test]
fn a_lost_read_count_arrives_through_the_receipt_key() {
    let mut net = group(ProtocolConfig::default());
    net.send(1, CONV, "hello");
    net.run_until_quiet();
    net.drop_next(|f| f.to == Address(1) && matches!(f.packet, Packet::ReadCounts { .. }));
    read(&mut net, 2, CONV);
    assert_eq!(counts_seen(&net, 1), Vec::<u32>::new());
    net.advance(ProtocolConfig::default().heartbeat_interval_ms + 1_000);
    assert_eq!(counts_seen(&net, 1), vec![1]);
}

// ---- presence ----

fn presence_seen(net: &Net, d: u32, user: UserId) -> Vec<bool> {
    let events = net.events_of(Address(d));
    let seen = events.filter_map(|event| match event {
        Event::PresenceSeen { user: u, online } if *u == user => Some(*online),
        _ => None,
    });
    seen.collect()
}

/// u1 (d1) and u2 (d2) share `CONV`; u1 is online.
fn contacts(config: ProtocolConfig) -> Net {
    let mut net = Net::new(config, &[U1, U2], &[(CONV, &[U1, U2])]);
    net.command(1, Command::GoOnline);
    net.run_until_quiet();
    net
}

// Push mode: a contact sees the login and the clean logout at once.
#[test]
fn presence_changes_are_pushed_to_contacts() {
    let mut net = contacts(ProtocolConfig::default());
    assert_eq!(
        presence_seen(&net, 1, U2),
        vec![false],
        "the status at login"
    );
    net.command(2, Command::GoOnline);
    net.run_until_quiet();
    net.command(2, Command::GoOffline);
    net.run_until_quiet();
    assert_eq!(presence_seen(&net, 1, U2), vec![false, true, false]);
    let notified: Vec<usize> = net
        .events_of(SERVER)
        .filter_map(|e| match e {
            Event::PresenceChanged { user, notified, .. } if *user == U2 => Some(notified.len()),
            _ => None,
        })
        .collect();
    assert_eq!(notified, vec![1, 1], "one subscriber device per change");
}

// A phone that dies without logging out is offline after the session timeout (and, in the
// ghost-online variant, never).
#[test]
fn a_dead_device_goes_offline_after_the_session_timeout() {
    for (variant, expected) in [
        (Variant::Correct, vec![false, true, false]),
        (Variant::GhostOnline, vec![false, true]),
    ] {
        let config = ProtocolConfig {
            variant,
            ..ProtocolConfig::default()
        };
        let mut net = contacts(config.clone());
        net.command(2, Command::GoOnline);
        net.run_until_quiet();
        net.drop_all(|f| f.from == Address(2));
        net.advance(config.offline_detection_ms() + 1_000);
        assert_eq!(presence_seen(&net, 1, U2), expected, "{variant}");
    }
}

// Pull mode: nothing is pushed; opening a conversation asks, and it is asked again each poll.
#[test]
fn pull_mode_asks_for_the_open_conversation_and_polls() {
    let config = ProtocolConfig {
        presence: PresenceMode::Pull,
        presence_poll_ms: 5_000,
        ..ProtocolConfig::default()
    };
    let mut net = contacts(config);
    net.command(2, Command::GoOnline);
    net.run_until_quiet();
    assert_eq!(
        presence_seen(&net, 1, U2),
        Vec::<bool>::new(),
        "nothing pushed"
    );
    read(&mut net, 1, CONV);
    assert_eq!(presence_seen(&net, 1, U2), vec![true]);
    net.command(2, Command::GoOffline);
    net.run_until_quiet();
    net.advance(5_100);
    assert_eq!(
        presence_seen(&net, 1, U2),
        vec![true, false],
        "the next poll"
    );
    let pushes = net.packets(support::Fate::Delivered, |f| {
        matches!(f.packet, Packet::Presence(_))
    });
    assert!(pushes.is_empty());
}

// A presence push that is lost is repaired by the heartbeat's presence key.
#[test]
fn a_lost_presence_push_arrives_through_the_presence_key() {
    let mut net = contacts(ProtocolConfig::default());
    net.drop_next(|f| f.to == Address(1) && matches!(f.packet, Packet::Presence(_)));
    net.command(2, Command::GoOnline);
    net.run_until_quiet();
    assert_eq!(presence_seen(&net, 1, U2), vec![false]);
    net.advance(ProtocolConfig::default().heartbeat_interval_ms + 1_000);
    assert_eq!(presence_seen(&net, 1, U2), vec![false, true]);
}

// A server restart ends every session: everyone restarts offline at a version above every
// version handed out before, so a device that logs in again drops its stale "online".
#[test]
fn presence_after_a_server_restart_starts_over_above_the_old_versions() {
    let mut net = contacts(ProtocolConfig::default());
    net.command(2, Command::GoOnline);
    net.run_until_quiet();
    net.advance(1_000);
    net.crash_server();
    // u2 logs out while the server has no session of it: nothing is pushed.
    net.command(2, Command::GoOffline);
    net.advance(60_000);
    assert_eq!(presence_seen(&net, 1, U2), vec![false, true, false]);
}

// A device can only have read what it displayed, and it can only display what is durable: a
// read beyond the durable head (a hostile or broken client) or of nothing (seq 0) is refused
// and stored nowhere (R2 read-le-delivered).
#[test]
fn a_read_beyond_the_durable_head_or_of_nothing_is_refused() {
    let mut net = siblings(ProtocolConfig::default());
    net.send(2, CONV, "one");
    net.run_until_quiet();
    for up_to in [Seq(2), Seq(0)] {
        net.inject(Address(1), SERVER, Packet::Read { conv: CONV, up_to });
        net.run_until_quiet();
    }
    let refused = net.count(SERVER, |event| {
        matches!(
            event,
            Event::Rejected {
                reason: imsim_model::Rejection::Unexpected,
                refused,
                ..
            } if refused == "read"
        )
    });
    assert_eq!(refused, 2);
    let stored = net.count(SERVER, |event| matches!(event, Event::ReadAdvanced { .. }));
    assert_eq!(stored, 0, "a refused read is stored nowhere");
}
