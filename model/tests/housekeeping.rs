//! The server's housekeeping timer: ticks fall on a grid of `server_tick_ms`, but the server only
//! asks to be woken at grid ticks when something is due (a session to expire, a push to retry);
//! an idle server asks for nothing.

use imsim_model::{
    Address, ClientMsgId, ClientSeq, ConvId, DeviceId, Directory, Event, Output, Packet,
    ProtocolConfig, Server, SessionEnd, Time, UserId,
};

const TOKEN: u64 = 7;

fn server() -> (Server, ProtocolConfig) {
    let config = ProtocolConfig::default();
    let mut directory = Directory::new();
    directory.add_device(UserId(1), DeviceId(1), TOKEN);
    directory.add_device(UserId(2), DeviceId(2), TOKEN);
    directory.add_conversation(ConvId(1), vec![UserId(1), UserId(2)]);
    (Server::new(config.clone(), directory, Time(0)), config)
}

/// `server()` after its first tick (at 0), with its outputs drained: the grid starts at 0.
fn ticked() -> (Server, ProtocolConfig) {
    let (mut server, config) = server();
    drain(&mut server);
    server.handle_timeout(Time(0));
    drain(&mut server);
    (server, config)
}

fn drain(server: &mut Server) -> Vec<Output> {
    std::iter::from_fn(|| server.poll_output()).collect()
}

fn armed(outputs: &[Output]) -> Vec<Time> {
    let times = outputs.iter().filter_map(|output| match output {
        Output::ArmTimer { at } => Some(*at),
        _ => None,
    });
    times.collect()
}

fn login(server: &mut Server, now: Time, device: u32) -> Vec<Output> {
    let login = Packet::Login {
        user: UserId(device),
        device: DeviceId(device),
        token: TOKEN,
        connection: 0,
    };
    server.handle_packet(now, Address(device), login);
    drain(server)
}

#[test]
fn an_idle_server_asks_for_no_timer() {
    let (mut server, _) = server();
    assert_eq!(armed(&drain(&mut server)), vec![Time(0)]);
    server.handle_timeout(Time(0));
    assert_eq!(armed(&drain(&mut server)), Vec::<Time>::new());
}

#[test]
fn a_silent_session_is_expired_at_the_first_grid_tick_after_its_timeout() {
    let (mut server, config) = ticked();
    let outputs = login(&mut server, Time(100), 1);
    // Grid ticks fall at multiples of the tick from the last tick (at 0).
    let tick = config.server_tick_ms;
    let due = 100 + config.session_timeout_ms;
    let expected = due.div_ceil(tick) * tick;
    assert_eq!(armed(&outputs), vec![Time(expected)]);

    // Waking early (a stale driver timer) does nothing and keeps the same tick.
    server.handle_timeout(Time(expected - 1));
    let early = drain(&mut server);
    assert!(!early.iter().any(|o| matches!(o, Output::Event(_))));
    assert_eq!(armed(&early), vec![Time(expected)]);

    server.handle_timeout(Time(expected));
    let outputs = drain(&mut server);
    let expired = outputs.iter().any(|output| {
        matches!(
            output,
            Output::Event(Event::SessionClosed {
                reason: SessionEnd::Timeout,
                ..
            })
        )
    });
    assert!(expired, "the session expired at its tick: {outputs:?}");
    assert_eq!(armed(&outputs), Vec::<Time>::new(), "and nothing is left");
}

#[test]
fn heartbeats_move_the_expiry_tick_later() {
    let (mut server, config) = ticked();
    let first = armed(&login(&mut server, Time(0), 1))[0];
    server.handle_packet(Time(10_000), Address(1), Packet::Heartbeat);
    drain(&mut server);
    // The tick armed at login comes, finds nothing due, and arms the one after the new timeout.
    server.handle_timeout(first);
    let outputs = drain(&mut server);
    assert!(!outputs.iter().any(|o| matches!(o, Output::Event(_))));
    let tick = config.server_tick_ms;
    let due = 10_000 + config.session_timeout_ms;
    let expected = due.div_ceil(tick) * tick;
    assert_eq!(armed(&outputs), vec![Time(expected)]);
}

#[test]
fn a_push_arms_the_tick_of_its_retry() {
    let (mut server, config) = ticked();
    login(&mut server, Time(0), 1);
    login(&mut server, Time(0), 2);
    let send = Packet::Send {
        conv: ConvId(1),
        sender: UserId(1),
        client_msg_id: ClientMsgId(1),
        client_seq: ClientSeq(1),
        body: "hi".to_string(),
        client_time_ms: 1_000,
        change: None,
    };
    server.handle_packet(Time(1_000), Address(1), send);
    let mut outputs = drain(&mut server);
    // The write is synced before anything is published.
    let through = outputs.iter().find_map(|output| match output {
        Output::SyncStorage { through } => Some(*through),
        _ => None,
    });
    server.handle_storage_synced(Time(1_002), through.expect("a sync request"));
    outputs.extend(drain(&mut server));
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Transmit {
            to: Address(2),
            packet: Packet::Deliver { .. }
        }
    )));
    let tick = config.server_tick_ms;
    let retry = (1_002 + config.push_retry_initial_ms).div_ceil(tick) * tick;
    assert_eq!(armed(&outputs).last(), Some(&Time(retry)));
}
