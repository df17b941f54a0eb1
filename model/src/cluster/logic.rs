//! The logic node: today's [`Server`] behind the session [`Registry`]. Packets from gateways
//! are unwrapped and handed to the server as if the device had sent them; everything the server
//! sends a device is wrapped and routed to the gateway the registry names.
//!
//! The server stays the single owner of sessions, seqs and storage; this layer only decides
//! which gateway a packet goes through. So the server is passed in on every call rather than
//! owned: the simulator keeps the server (and its storage) across crashes, and a restarted logic
//! node starts with an empty registry, like the server's empty sessions.

use super::{gateway_address, gateway_of, Registry};
use crate::config::ProtocolConfig;
use crate::event::Event;
use crate::ids::Address;
use crate::output::Output;
use crate::server::Server;
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::Packet;
use std::collections::VecDeque;

pub struct Logic {
    registry: Registry,
    variant: Variant,
    /// The gateways in front of this logic (numbered from 0).
    gateways: u32,
    outputs: VecDeque<Output>,
}

impl Logic {
    /// A logic node behind `gateways` gateways, with an empty registry; routes expire after
    /// `session_timeout_ms` without a packet, as the server's sessions do.
    pub fn new(config: &ProtocolConfig, gateways: u32) -> Logic {
        assert!(
            gateways > 0,
            "a logic node sits behind at least one gateway"
        );
        Logic {
            registry: Registry::new(config.session_timeout_ms),
            variant: config.variant,
            gateways,
            outputs: VecDeque::new(),
        }
    }

    /// The logic after a crash (or its shard on the node that took it over): the registry was
    /// the dead node's memory, like the server's sessions. Its first packets tell every gateway
    /// (`Packet::Restarted`), so their devices log in again now. Waiting for each device's next
    /// packet left a quiet device's session open at the session shard but gone here: it heard
    /// nothing of its groups on this shard until its heartbeat was refused, 15 s later (seed 170
    /// of `scenarios/group-2000-cluster.toml`).
    pub fn restarted(&self, config: &ProtocolConfig) -> Logic {
        let mut logic = Logic::new(config, self.gateways);
        for gateway in 0..self.gateways {
            logic.outputs.push_back(Output::Transmit {
                to: gateway_address(gateway),
                packet: Packet::Restarted,
            });
        }
        logic
    }

    // ---- getters ----

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    // ---- inputs ----

    pub fn handle_packet(&mut self, server: &mut Server, now: Time, from: Address, packet: Packet) {
        match (gateway_of(from), packet) {
            (Some(_), Packet::Upstream { device, packet }) if gateway_of(device).is_none() => {
                let moved = self.registry.register(device, from, now).is_some();
                if moved && self.resumed_without_resync(server, device, from, &packet) {
                    return;
                }
                server.handle_packet(now, device, *packet);
            }
            (Some(_), Packet::KeepAlive { device }) if gateway_of(device).is_none() => {
                self.registry.register(device, from, now);
                server.handle_keep_alive(now, device);
            }
            (Some(gateway), Packet::Unroutable { device }) => {
                self.handle_unroutable(server, now, device, from, gateway);
            }
            // Devices speak to gateways only, and a gateway forwards nothing else: ignored, as
            // a gateway ignores a logic packet it does not expect.
            _ => {}
        }
        self.route_outputs(server, now);
    }

    pub fn handle_timeout(&mut self, server: &mut Server, now: Time) {
        self.registry.purge(now);
        server.handle_timeout(now);
        self.route_outputs(server, now);
    }

    pub fn handle_storage_synced(&mut self, server: &mut Server, now: Time, through: u64) {
        server.handle_storage_synced(now, through);
        self.route_outputs(server, now);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// VARIANT failover-without-resync: a login through a new gateway while the device's
    /// session is still open resumes that session in place: answered at once with the old
    /// session and no heads, so the device does not pull, and what the dead gateway dropped
    /// waits for the heartbeat's sync key. True if it did so.
    fn resumed_without_resync(
        &mut self,
        server: &Server,
        device: Address,
        gateway: Address,
        packet: &Packet,
    ) -> bool {
        if self.variant != Variant::FailoverWithoutResync || !matches!(packet, Packet::Login { .. })
        {
            return false;
        }
        let Some(session) = server.session_id(device) else {
            return false;
        };
        let resumed = Packet::LoginOk {
            session,
            heads: Vec::new(),
        };
        let packet = Box::new(resumed);
        self.outputs.push_back(Output::Transmit {
            to: gateway,
            packet: Packet::Downstream { device, packet },
        });
        true
    }

    // ---- routing ----

    fn handle_unroutable(
        &mut self,
        server: &mut Server,
        now: Time,
        device: Address,
        gateway_address: Address,
        gateway: u32,
    ) {
        if self.variant == Variant::StaleRouteCountedDelivered {
            // VARIANT stale-route-counted-delivered: a push handed to a gateway counts as
            // delivered; the gateway's answer that it no longer holds the device changes
            // nothing, so the session stays open (the user online) with its push lost.
            return;
        }
        if !self.registry.forget(device, gateway_address) {
            // The device moved to another gateway since: that route is fresh.
            return;
        }
        if let Some(device_id) = server.session_device(device) {
            self.outputs.push_back(Output::Event(Event::RouteStale {
                device: device_id,
                gateway,
            }));
            server.close_unroutable(now, device);
        }
    }

    /// Drains the server: packets for devices go through the registry, the rest as they are.
    /// A packet for a device with no route cannot be delivered: its session ends (the device
    /// re-syncs at its next login) rather than the push counting as sent.
    fn route_outputs(&mut self, server: &mut Server, now: Time) {
        while let Some(output) = server.poll_output() {
            let Output::Transmit { to, packet } = output else {
                self.outputs.push_back(output);
                continue;
            };
            match self.registry.route(to, now) {
                Some(gateway) => {
                    let packet = Box::new(packet);
                    let downstream = Packet::Downstream { device: to, packet };
                    self.outputs.push_back(Output::Transmit {
                        to: gateway,
                        packet: downstream,
                    });
                }
                // Closing the session emits more outputs, which this loop routes in turn; a
                // closed session is not closed twice, so this ends.
                None => server.close_unroutable(now, to),
            }
        }
    }
}
