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
    registry.purge(Time(1_600));
    assert!(registry.is_empty());
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
fn a_device_fails_over_after_a_lost_session_or_an_unanswered_login_only() {
    let mut failover = Failover::new(4, 3);
    assert_eq!(failover.gateway(), 1);
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
    let logic = Logic::new(&config);
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
