//! The cluster machines on their own: registry, gateway, failover, and the logic's routing in
//! front of a real server.

use super::*;
use crate::config::ProtocolConfig;
use crate::directory::Directory;
use crate::event::{Event, SessionEnd};
use crate::ids::{ConvId, DeviceId, UserId};
use crate::output::Output;
use crate::server::Server;
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::{Packet, Rejection};

const DEVICE: Address = Address(1);
const TOKEN: u64 = 7;

fn transmits(outputs: &[Output]) -> Vec<(Address, Packet)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Transmit { to, packet } => Some((*to, packet.clone())),
            _ => None,
        })
        .collect()
}

fn drain_gateway(gateway: &mut Gateway) -> Vec<Output> {
    std::iter::from_fn(|| gateway.poll_output()).collect()
}

fn drain_logic(logic: &mut Logic) -> Vec<Output> {
    std::iter::from_fn(|| logic.poll_output()).collect()
}

fn login() -> Packet {
    Packet::Login {
        user: UserId(1),
        device: DeviceId(1),
        token: TOKEN,
        connection: 0,
    }
}

#[test]
fn a_route_moves_expires_and_is_forgotten_only_by_its_own_gateway() {
    let mut registry = Registry::new(1_000);
    let (g0, g1) = (gateway_address(0), gateway_address(1));
    assert_eq!(registry.register(DEVICE, g0, Time(0)), None);
    assert_eq!(
        registry.register(DEVICE, g0, Time(10)),
        None,
        "re-registration"
    );
    assert_eq!(registry.route(DEVICE, Time(500)), Some(g0));
    assert_eq!(registry.register(DEVICE, g1, Time(600)), Some(g0), "moved");
    assert!(
        !registry.forget(DEVICE, g0),
        "a stale report about the old gateway"
    );
    assert_eq!(registry.route(DEVICE, Time(1_599)), Some(g1));
    assert_eq!(registry.route(DEVICE, Time(1_600)), None, "expired");
    assert_eq!(registry.len(), 1, "expired, still held until purged");
    registry.purge(Time(1_600));
    assert_eq!(registry.len(), 0);
    registry.register(DEVICE, g1, Time(2_000));
    assert!(registry.forget(DEVICE, g1));
    assert_eq!(registry.route(DEVICE, Time(2_001)), None);
}

#[test]
fn a_gateway_forwards_for_the_devices_it_holds_and_resets_the_others() {
    let mut gateway = Gateway::new(1_000, 10, 100);
    gateway.handle_packet(Time(0), DEVICE, Packet::Heartbeat);
    let reset = transmits(&drain_gateway(&mut gateway));
    assert!(matches!(
        &reset[..],
        [(
            DEVICE,
            Packet::Error {
                reason: Rejection::NotLoggedIn,
                ..
            }
        )]
    ));
    gateway.handle_packet(Time(1), DEVICE, login());
    let forwarded = transmits(&drain_gateway(&mut gateway));
    assert!(matches!(
        &forwarded[..],
        [(LOGIC_ADDRESS, Packet::Upstream { device: DEVICE, .. })]
    ));
    let push = Packet::Downstream {
        device: DEVICE,
        packet: Box::new(Packet::Heartbeat),
    };
    gateway.handle_packet(Time(2), LOGIC_ADDRESS, push.clone());
    assert_eq!(
        transmits(&drain_gateway(&mut gateway)),
        vec![(DEVICE, Packet::Heartbeat)]
    );
    // Silent past the timeout: the connection goes, and the route with it is stale.
    gateway.handle_timeout(Time(1_001));
    gateway.handle_timeout(Time(1_101));
    assert!(!gateway.holds(DEVICE));
    drain_gateway(&mut gateway);
    gateway.handle_packet(Time(1_200), LOGIC_ADDRESS, push);
    assert_eq!(
        transmits(&drain_gateway(&mut gateway)),
        vec![(LOGIC_ADDRESS, Packet::Unroutable { device: DEVICE })]
    );
}

#[test]
fn a_gateway_closes_a_connection_on_its_own_logout_only() {
    // A device logs out and at once in again; each shard's link reorders on its own, and so may
    // the device's: a logout that comes after the next login names the connection it ended.
    let mut gateway = Gateway::new(1_000, 10, 100);
    let login_as = |connection| Packet::Login {
        user: UserId(1),
        device: DeviceId(1),
        token: TOKEN,
        connection,
    };
    gateway.handle_packet(Time(0), DEVICE, login_as(1));
    gateway.handle_packet(Time(1), DEVICE, Packet::Logout { connection: 0 });
    assert!(
        gateway.holds(DEVICE),
        "a stale logout closed the new connection"
    );
    gateway.handle_packet(Time(2), DEVICE, Packet::Logout { connection: 1 });
    assert!(!gateway.holds(DEVICE), "its own logout closes it");
    let forwarded = transmits(&drain_gateway(&mut gateway));
    let logouts = forwarded
        .iter()
        .filter(|(to, packet)| *to == LOGIC_ADDRESS && matches!(packet, Packet::Upstream { .. }))
        .count();
    assert_eq!(
        logouts, 3,
        "the login and both logouts reach the logic: {forwarded:?}"
    );
}

#[test]
fn a_restarted_logic_has_every_gateway_send_its_devices_to_log_in_again() {
    let config = ProtocolConfig::default();
    let mut logic = Logic::new(&config, 3).restarted(&config);
    assert_eq!(
        transmits(&drain_logic(&mut logic)),
        (0..3)
            .map(|gateway| (gateway_address(gateway), Packet::Restarted))
            .collect::<Vec<_>>()
    );
    assert!(
        logic.restarted(&config).poll_output().is_some(),
        "every restart tells the gateways again"
    );
    let mut gateway = Gateway::new(1_000, 10, 100).with_shards(2);
    gateway.handle_packet(Time(0), DEVICE, login());
    gateway.handle_packet(Time(0), Address(2), login());
    drain_gateway(&mut gateway);
    gateway.handle_packet(Time(5), shard_address(1), Packet::Restarted);
    let told = transmits(&drain_gateway(&mut gateway));
    assert_eq!(told.len(), 2, "{told:?}");
    for (device, (to, packet)) in [DEVICE, Address(2)].into_iter().zip(told) {
        assert_eq!(to, device);
        assert!(matches!(
            packet,
            Packet::Error {
                reason: Rejection::NotLoggedIn,
                ..
            }
        ));
    }
    assert!(gateway.holds(DEVICE), "the connection itself stays");
}

#[test]
fn a_device_fails_over_after_a_lost_session_or_an_unanswered_login_only() {
    let mut failover = Failover::new(4, 3);
    assert_eq!(failover.gateway_address(), gateway_address(1));
    let (to, event) = failover.handle_outgoing(&login());
    assert_eq!((to, event), (gateway_address(1), None));
    let ok = Packet::LoginOk {
        session: crate::ids::SessionId(1),
        heads: vec![],
    };
    assert!(!failover.handle_incoming(Address(9), &ok), "not a gateway");
    assert!(failover.handle_incoming(gateway_address(1), &ok));
    failover.handle_event(&Event::SessionLost {
        reason: SessionEnd::Logout,
    });
    assert_eq!(
        failover.handle_outgoing(&login()).1,
        None,
        "a logout is no failure"
    );
    // This login goes unanswered: the next one goes to the next gateway.
    let (to, event) = failover.handle_outgoing(&login());
    assert_eq!(to, gateway_address(2));
    assert_eq!(
        event,
        Some(Event::FailedOver {
            from_gateway: 1,
            to_gateway: 2
        })
    );
    // The answer may come through another gateway (an earlier login's): it counts.
    assert!(failover.handle_incoming(gateway_address(0), &ok));
    failover.handle_event(&Event::SessionLost {
        reason: SessionEnd::Timeout,
    });
    assert_eq!(failover.handle_outgoing(&login()).0, gateway_address(0));
}

fn server(variant: Variant) -> (Server, Logic) {
    let mut directory = Directory::new();
    directory.add_device(UserId(1), DeviceId(1), TOKEN);
    directory.add_device(UserId(2), DeviceId(2), TOKEN + 1);
    directory.add_conversation(ConvId(1), vec![UserId(1), UserId(2)]);
    let config = ProtocolConfig {
        variant,
        ..ProtocolConfig::default()
    };
    let logic = Logic::new(&config, 2);
    (Server::new(config, directory, Time(0)), logic)
}

fn logged_in_through_g0(variant: Variant) -> (Server, Logic) {
    let (mut server, mut logic) = server(variant);
    let upstream = Packet::Upstream {
        device: DEVICE,
        packet: Box::new(login()),
    };
    logic.handle_packet(&mut server, Time(1), gateway_address(0), upstream);
    let outputs = transmits(&drain_logic(&mut logic));
    assert!(
        outputs.iter().any(|(to, packet)| *to == gateway_address(0)
            && matches!(packet, Packet::Downstream { device: DEVICE, packet }
                if matches!(**packet, Packet::LoginOk { .. }))),
        "the login is answered through the gateway it came from: {outputs:?}"
    );
    assert_eq!(server.session_count(), 1);
    (server, logic)
}

// Gateway addresses are never devices: a gateway that forwards for one (a bug, or a forged
// packet) must not log a gateway in, nor route to it as if a device sat behind it.
#[test]
fn a_gateway_forwarding_for_a_gateway_address_is_ignored() {
    let (mut server, mut logic) = server(Variant::Correct);
    let g1 = gateway_address(1);
    let upstream = Packet::Upstream {
        device: g1,
        packet: Box::new(login()),
    };
    logic.handle_packet(&mut server, Time(1), gateway_address(0), upstream);
    let keep_alive = Packet::KeepAlive { device: g1 };
    logic.handle_packet(&mut server, Time(2), gateway_address(0), keep_alive);
    assert!(transmits(&drain_logic(&mut logic)).is_empty());
    assert_eq!(server.session_count(), 0);
    assert_eq!(logic.registry().route(g1, Time(3)), None);
}

#[test]
fn a_stale_route_ends_the_session_and_is_dropped() {
    let (mut server, mut logic) = logged_in_through_g0(Variant::Correct);
    let stale = Packet::Unroutable { device: DEVICE };
    logic.handle_packet(&mut server, Time(5), gateway_address(0), stale);
    let outputs = drain_logic(&mut logic);
    assert!(outputs.contains(&Output::Event(Event::RouteStale {
        device: DeviceId(1),
        gateway: 0
    })));
    assert!(outputs.iter().any(|output| matches!(
        output,
        Output::Event(Event::SessionClosed {
            reason: SessionEnd::Unroutable,
            ..
        })
    )));
    assert_eq!(server.session_count(), 0);
    assert_eq!(logic.registry().route(DEVICE, Time(6)), None);
}

#[test]
fn a_stale_report_about_a_gateway_the_device_left_changes_nothing() {
    let (mut server, mut logic) = logged_in_through_g0(Variant::Correct);
    let heartbeat = Packet::Upstream {
        device: DEVICE,
        packet: Box::new(Packet::Heartbeat),
    };
    logic.handle_packet(&mut server, Time(3), gateway_address(1), heartbeat);
    drain_logic(&mut logic);
    let stale = Packet::Unroutable { device: DEVICE };
    logic.handle_packet(&mut server, Time(5), gateway_address(0), stale);
    assert!(drain_logic(&mut logic).is_empty());
    assert_eq!(server.session_count(), 1);
    assert_eq!(
        logic.registry().route(DEVICE, Time(6)),
        Some(gateway_address(1))
    );
}

#[test]
fn the_stale_route_variant_keeps_the_session_it_cannot_reach() {
    let (mut server, mut logic) = logged_in_through_g0(Variant::StaleRouteCountedDelivered);
    let stale = Packet::Unroutable { device: DEVICE };
    logic.handle_packet(&mut server, Time(5), gateway_address(0), stale);
    assert!(drain_logic(&mut logic).is_empty());
    assert_eq!(server.session_count(), 1);
}

fn login_through(server: &mut Server, logic: &mut Logic, gateway: u32, now: Time) -> Vec<Output> {
    let upstream = Packet::Upstream {
        device: DEVICE,
        packet: Box::new(login()),
    };
    logic.handle_packet(server, now, gateway_address(gateway), upstream);
    drain_logic(logic)
}

fn login_ok_heads(outputs: &[Output]) -> Option<usize> {
    transmits(outputs)
        .into_iter()
        .find_map(|(_, packet)| match packet {
            Packet::Downstream { packet, .. } => match *packet {
                Packet::LoginOk { heads, .. } => Some(heads.len()),
                _ => None,
            },
            _ => None,
        })
}

/// The peer (device 2, through gateway 2) sends one message and the logic makes it durable:
/// the conversation's head is 1.
fn peer_sends_one(server: &mut Server, logic: &mut Logic) {
    let peer = Address(2);
    let through = gateway_address(2);
    let login = Packet::Login {
        user: UserId(2),
        device: DeviceId(2),
        token: TOKEN + 1,
        connection: 0,
    };
    let send = Packet::Send {
        conv: ConvId(1),
        sender: UserId(2),
        client_msg_id: crate::ids::ClientMsgId(1),
        client_seq: crate::ids::ClientSeq(1),
        body: "hi".to_string(),
        client_time_ms: 0,
        change: None,
    };
    for (now, packet) in [(Time(2), login), (Time(3), send)] {
        let packet = Box::new(packet);
        logic.handle_packet(
            server,
            now,
            through,
            Packet::Upstream {
                device: peer,
                packet,
            },
        );
    }
    let syncs: Vec<u64> = drain_logic(logic)
        .into_iter()
        .filter_map(|output| match output {
            Output::SyncStorage { through } => Some(through),
            _ => None,
        })
        .collect();
    assert_eq!(syncs.len(), 1, "one write to sync");
    logic.handle_storage_synced(server, Time(4), syncs[0]);
    drain_logic(logic);
    assert_eq!(server.durable_timeline(ConvId(1)).len(), 1);
}

#[test]
fn a_failover_login_opens_a_fresh_session_with_the_heads_to_sync() {
    let (mut server, mut logic) = logged_in_through_g0(Variant::Correct);
    peer_sends_one(&mut server, &mut logic);
    let outputs = login_through(&mut server, &mut logic, 1, Time(10));
    assert!(outputs.iter().any(|output| matches!(
        output,
        Output::Event(Event::SessionClosed {
            reason: SessionEnd::Replaced,
            ..
        })
    )));
    assert_eq!(login_ok_heads(&outputs), Some(1), "the conversation's head");
    assert_eq!(
        logic.registry().route(DEVICE, Time(11)),
        Some(gateway_address(1))
    );
}

#[test]
fn the_failover_variant_resumes_the_session_without_heads() {
    let (mut server, mut logic) = logged_in_through_g0(Variant::FailoverWithoutResync);
    peer_sends_one(&mut server, &mut logic);
    let outputs = login_through(&mut server, &mut logic, 1, Time(10));
    assert_eq!(login_ok_heads(&outputs), Some(0));
    assert!(!outputs
        .iter()
        .any(|output| matches!(output, Output::Event(Event::SessionClosed { .. }))));
}

// ---- sharded logic ----

#[test]
fn conversations_and_addresses_map_to_shards() {
    assert_eq!(shard_of(ConvId(7), 3), 1);
    assert_eq!(shard_of(ConvId(7), 1), 0);
    assert_eq!(
        shard_address(0),
        LOGIC_ADDRESS,
        "shard 0 is the single logic's address"
    );
    for shard in 0..LOGIC_SHARDS_MAX {
        assert_eq!(shard_at(shard_address(shard)), Some(shard));
    }
    assert_eq!(shard_at(DEVICE), None);
    assert_eq!(shard_at(gateway_address(0)), None);
}

#[test]
fn a_sharded_gateway_sends_a_conversation_to_its_owner_and_the_device_to_every_shard() {
    let mut gateway = Gateway::new(1_000, 10, 100).with_shards(3);
    gateway.handle_packet(Time(1), DEVICE, login());
    let logins = transmits(&drain_gateway(&mut gateway));
    let shards: Vec<Address> = logins.iter().map(|(to, _)| *to).collect();
    assert_eq!(
        shards,
        vec![shard_address(0), shard_address(1), shard_address(2)]
    );
    let pull = Packet::Pull {
        conv: ConvId(5),
        after: crate::ids::Seq(0),
        limit: 10,
    };
    gateway.handle_packet(Time(2), DEVICE, pull);
    let upstream = |gateway: &mut Gateway| -> Vec<Address> {
        transmits(&drain_gateway(gateway))
            .into_iter()
            .filter(|(_, packet)| matches!(packet, Packet::Upstream { .. }))
            .map(|(to, _)| to)
            .collect()
    };
    assert_eq!(upstream(&mut gateway), vec![shard_address(2)]);
    // Presence belongs to the session shard.
    gateway.handle_packet(
        Time(3),
        DEVICE,
        Packet::PresenceQuery {
            conv: Some(ConvId(5)),
        },
    );
    assert_eq!(upstream(&mut gateway), vec![LOGIC_ADDRESS]);
}

fn head(conv: u32, seq: u64) -> crate::wire::Head {
    crate::wire::Head {
        conv: ConvId(conv),
        seq: crate::ids::Seq(seq),
        floor: crate::ids::Seq(0),
    }
}

fn downstream(packet: Packet) -> Packet {
    Packet::Downstream {
        device: DEVICE,
        packet: Box::new(packet),
    }
}

#[test]
fn a_sharded_gateway_answers_a_login_once_every_shard_did_with_each_owners_heads() {
    let mut gateway = Gateway::new(1_000, 10, 100).with_shards(2);
    gateway.handle_packet(Time(1), DEVICE, login());
    drain_gateway(&mut gateway);
    // Each shard knows every conversation of the user but owns only its own: c1 is shard 1's,
    // c2 shard 0's.
    let answer = |session: u64, c1: u64, c2: u64| Packet::LoginOk {
        session: crate::ids::SessionId(session),
        heads: vec![head(1, c1), head(2, c2)],
    };
    gateway.handle_packet(Time(2), shard_address(1), downstream(answer(70, 4, 0)));
    assert!(
        drain_gateway(&mut gateway).is_empty(),
        "shard 0 has not answered"
    );
    gateway.handle_packet(Time(3), shard_address(0), downstream(answer(9, 0, 6)));
    let merged = transmits(&drain_gateway(&mut gateway));
    assert_eq!(
        merged,
        vec![(
            DEVICE,
            Packet::LoginOk {
                session: crate::ids::SessionId(9),
                heads: vec![head(1, 4), head(2, 6)],
            }
        )],
        "the session shard's session, each conversation's head from its owner"
    );
    // Heartbeats: the sync and receipt keys add up, presence is the session shard's.
    let ack = |sync_key, presence_key| Packet::HeartbeatAck {
        sync_key,
        receipt_key: 1,
        presence_key,
    };
    gateway.handle_packet(Time(4), shard_address(0), downstream(ack(6, 33)));
    gateway.handle_packet(Time(5), shard_address(1), downstream(ack(4, 99)));
    assert_eq!(
        transmits(&drain_gateway(&mut gateway)),
        vec![(
            DEVICE,
            Packet::HeartbeatAck {
                sync_key: 10,
                receipt_key: 2,
                presence_key: 33
            }
        )]
    );
    // Presence pushes from a mirror shard do not reach the device; a push does at once.
    let presence = crate::wire::PresenceEntry {
        user: UserId(2),
        online: true,
        version: 1,
    };
    gateway.handle_packet(
        Time(6),
        shard_address(1),
        downstream(Packet::Presence(presence)),
    );
    assert!(drain_gateway(&mut gateway).is_empty());
    gateway.handle_packet(Time(7), shard_address(1), downstream(Packet::Heartbeat));
    assert_eq!(transmits(&drain_gateway(&mut gateway)).len(), 1);
}

#[test]
fn a_sharded_gateway_reports_a_stale_route_to_every_shard() {
    let mut gateway = Gateway::new(1_000, 10, 100).with_shards(3);
    gateway.handle_packet(Time(1), shard_address(2), downstream(Packet::Heartbeat));
    let reports = transmits(&drain_gateway(&mut gateway));
    let expected: Vec<(Address, Packet)> = (0..3)
        .map(|shard| (shard_address(shard), Packet::Unroutable { device: DEVICE }))
        .collect();
    assert_eq!(reports, expected);
}

/// Drives a server until its outputs are drained, syncing storage whenever asked.
fn settle(server: &mut Server, now: Time) -> Vec<Output> {
    let mut outputs = Vec::new();
    while let Some(output) = server.poll_output() {
        if let Output::SyncStorage { through } = output {
            server.handle_storage_synced(now, through);
        }
        outputs.push(output);
    }
    outputs
}

fn send(client_msg_id: u64, client_seq: u64) -> Packet {
    Packet::Send {
        conv: ConvId(1),
        sender: UserId(1),
        client_msg_id: crate::ids::ClientMsgId(client_msg_id),
        client_seq: crate::ids::ClientSeq(client_seq),
        body: "hello".into(),
        client_time_ms: 0,
        change: None,
    }
}

fn committed_seq(outputs: &[Output]) -> Option<crate::ids::Seq> {
    outputs.iter().find_map(|output| match output {
        Output::Event(Event::Committed { seq, .. }) => Some(*seq),
        _ => None,
    })
}

/// A shard's new owner after a handover: the next seq follows the last stored one, unless the
/// variant forgets it.
fn seq_after_handover(variant: Variant) -> crate::ids::Seq {
    let (mut server, _) = server(variant);
    server.handle_packet(Time(1), DEVICE, login());
    server.handle_packet(Time(2), DEVICE, send(1, 1));
    assert_eq!(
        committed_seq(&settle(&mut server, Time(2))),
        Some(crate::ids::Seq(1))
    );
    let (config, directory) = (
        ProtocolConfig {
            variant,
            ..ProtocolConfig::default()
        },
        server.directory().clone(),
    );
    let mut owner = take_over(config, directory, server.storage(), 1, Time(10));
    settle(&mut owner, Time(10));
    owner.handle_packet(Time(11), DEVICE, login());
    owner.handle_packet(Time(12), DEVICE, send(2, 2));
    committed_seq(&settle(&mut owner, Time(12))).expect("the second send commits")
}

#[test]
fn a_new_shard_owner_continues_after_the_last_stored_seq() {
    assert_eq!(seq_after_handover(Variant::Correct), crate::ids::Seq(2));
    assert_eq!(
        seq_after_handover(Variant::HandoverRestartsSeqs),
        crate::ids::Seq(1),
        "the variant reuses a durable seq"
    );
}

#[test]
fn a_device_busy_in_one_shard_is_kept_alive_at_the_others() {
    // A tick of 100 ms: keep-alives go at most every 100 ms per shard.
    let mut gateway = Gateway::new(1_000, 10, 100).with_shards(3);
    gateway.handle_packet(Time(0), DEVICE, login());
    drain_gateway(&mut gateway);
    let ack = |conv| Packet::Ack {
        conv: ConvId(conv),
        watermark: crate::ids::Seq(1),
    };
    gateway.handle_packet(Time(300), DEVICE, ack(1));
    let sent = transmits(&drain_gateway(&mut gateway));
    let kept_alive: Vec<Address> = sent
        .iter()
        .filter(|(_, packet)| matches!(packet, Packet::KeepAlive { device: DEVICE }))
        .map(|(to, _)| *to)
        .collect();
    assert_eq!(kept_alive, vec![shard_address(0), shard_address(2)]);
    gateway.handle_packet(Time(350), DEVICE, ack(1));
    assert_eq!(
        transmits(&drain_gateway(&mut gateway)).len(),
        1,
        "not again so soon"
    );
    gateway.handle_packet(Time(400), DEVICE, ack(2));
    let sent = transmits(&drain_gateway(&mut gateway));
    assert_eq!(
        sent.len(),
        3,
        "shard 2's ack, keep-alives to 0 and 1: {sent:?}"
    );
}

#[test]
fn a_keep_alive_refreshes_the_session_and_route_without_an_answer() {
    let (mut server, mut logic) = logged_in_through_g0(Variant::Correct);
    let timeout_ms = ProtocolConfig::default().session_timeout_ms;
    let keep_alive = Packet::KeepAlive { device: DEVICE };
    logic.handle_packet(
        &mut server,
        Time(timeout_ms - 10),
        gateway_address(0),
        keep_alive,
    );
    assert!(
        transmits(&drain_logic(&mut logic)).is_empty(),
        "never answered"
    );
    logic.handle_timeout(&mut server, Time(timeout_ms + 500));
    drain_logic(&mut logic);
    assert_eq!(
        server.session_count(),
        1,
        "heard through another shard: still alive"
    );
    assert_eq!(
        logic.registry().route(DEVICE, Time(timeout_ms + 500)),
        Some(gateway_address(0))
    );
}
