//! A gateway: holds the long connections of the devices that logged in through it, forwards
//! their packets to the logic and the logic's packets to them. It keeps no protocol state of its
//! own, so a crash loses only its connections: their devices notice (silence, or `NotLoggedIn`
//! from the restarted gateway) and log in again, here or at another gateway.

use super::shard::{destination, shard_address, shard_at, Destination, Merge};
use crate::ids::Address;
use crate::output::Output;
use crate::time::Time;
use crate::wire::{Packet, Rejection};
use std::collections::{BTreeMap, VecDeque};

pub struct Gateway {
    /// The devices whose connections this gateway holds: when each was last heard, and the
    /// device's connection number its login gave (a logout of another one is stale).
    connections: BTreeMap<Address, (Time, u64)>,
    /// A connection silent this long is closed (the logic's session expires after as long).
    connection_timeout_ms: u64,
    /// The most connections one gateway holds; a login beyond them is refused `ServerFull`.
    connections_max: usize,
    /// How often expired connections are swept.
    tick_ms: u64,
    next_tick: Option<Time>,
    /// Logic shards (1: the single logic); a device's own packets go to each, and their answers
    /// are merged (`shard.rs`).
    shards: u32,
    merge: Merge,
    /// Sharded logic: per (device, shard), when this gateway last sent the shard a `KeepAlive`
    /// for the device. Every packet the device sends one shard keeps it alive at the others,
    /// at most once per `keep_alive_ms` (the sweep tick): a single server hears every packet of
    /// a device, and a shard that heard only the device's heartbeats expired a device that was
    /// sending to another shard all along (seed 3768 of sharded-logic, also when keep-alives
    /// were sparser and counted the fanned-out heartbeats, which a partition had dropped).
    heard_by_shard: BTreeMap<(Address, u32), Time>,
    keep_alive_ms: u64,
    outputs: VecDeque<Output>,
}

impl Gateway {
    /// A gateway with no connections (a fresh start, or a restart after a crash).
    pub fn new(connection_timeout_ms: u64, connections_max: u32, tick_ms: u64) -> Gateway {
        assert!(connection_timeout_ms > 0 && tick_ms > 0 && connections_max > 0);
        Gateway {
            connections: BTreeMap::new(),
            connection_timeout_ms,
            connections_max: connections_max as usize,
            tick_ms,
            next_tick: None,
            shards: 1,
            merge: Merge::new(1),
            heard_by_shard: BTreeMap::new(),
            keep_alive_ms: tick_ms,
            outputs: VecDeque::new(),
        }
    }

    /// The same gateway in front of `shards` logic shards.
    pub fn with_shards(mut self, shards: u32) -> Gateway {
        self.shards = shards;
        self.merge = Merge::new(shards);
        self
    }

    // ---- getters ----

    pub fn holds(&self, device: Address) -> bool {
        self.connections.contains_key(&device)
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    // ---- inputs ----

    pub fn handle_packet(&mut self, now: Time, from: Address, packet: Packet) {
        if let Some(shard) = shard_at(from) {
            self.handle_from_logic(shard, packet);
        } else {
            self.handle_from_device(now, from, packet);
        }
    }

    pub fn handle_timeout(&mut self, now: Time) {
        if self.next_tick.is_some_and(|tick| now >= tick) {
            let timeout_ms = self.connection_timeout_ms;
            self.connections
                .retain(|_, (heard, _)| now.since_ms(*heard) < timeout_ms);
            let connections = &self.connections;
            self.merge
                .retain_devices(|device| connections.contains_key(&device));
            self.heard_by_shard
                .retain(|(device, _), _| connections.contains_key(device));
            self.next_tick = None;
            self.arm(now);
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- the two directions ----

    fn handle_from_logic(&mut self, shard: u32, packet: Packet) {
        match packet {
            Packet::Downstream { device, packet } if self.holds(device) => {
                if let Some(packet) = self.merge.handle_answer(device, shard, *packet) {
                    self.transmit(device, packet);
                }
            }
            // The registry's route is stale: say so, so the logic stops counting on it. With
            // sharded logic every shard hears it: each may route the device here, and the
            // session shard's session must end with the others' (`shard.rs`, rule 4). One
            // logic is shard 0.
            Packet::Downstream { device, .. } => {
                for shard in 0..self.shards {
                    self.transmit(shard_address(shard), Packet::Unroutable { device });
                }
            }
            // The logic (or one shard) lost every session: each device held here had one there,
            // and must log in again, as if its next packet had been refused. Its connection stays:
            // packets still in flight to it are delivered, and its login may come back here.
            Packet::Restarted => {
                let devices: Vec<Address> = self.connections.keys().copied().collect();
                for device in devices {
                    let refused = Packet::Restarted.kind().to_string();
                    let reason = Rejection::NotLoggedIn;
                    self.transmit(device, Packet::Error { reason, refused });
                }
            }
            // Nothing else is meant for a gateway; a peer's packet is never a reason to panic.
            _ => {}
        }
    }

    fn handle_from_device(&mut self, now: Time, device: Address, packet: Packet) {
        let logout = match packet {
            Packet::Logout { connection } => Some(connection),
            _ => None,
        };
        match &packet {
            Packet::Login { connection, .. } => {
                if !self.holds(device) && self.connections.len() >= self.connections_max {
                    let refused = packet.kind().to_string();
                    let reason = Rejection::ServerFull;
                    self.transmit(device, Packet::Error { reason, refused });
                    return;
                }
                self.connections.insert(device, (now, *connection));
                self.arm(now);
            }
            // Gateway-to-logic packets never come from a device.
            Packet::Upstream { .. }
            | Packet::Downstream { .. }
            | Packet::Unroutable { .. }
            | Packet::KeepAlive { .. } => {
                let refused = packet.kind().to_string();
                let reason = Rejection::Unexpected;
                self.transmit(device, Packet::Error { reason, refused });
                return;
            }
            _ => match self.connections.get_mut(&device) {
                Some((heard, _)) => *heard = now,
                // No connection here (this gateway restarted, or it expired): like a reset
                // connection, the device must log in again.
                None => {
                    let refused = packet.kind().to_string();
                    let reason = Rejection::NotLoggedIn;
                    self.transmit(device, Packet::Error { reason, refused });
                    return;
                }
            },
        }
        match destination(&packet, self.shards) {
            Destination::Shard(shard) => {
                let packet = Box::new(packet);
                self.transmit(shard_address(shard), Packet::Upstream { device, packet });
                self.keep_alive(now, device, shard);
            }
            Destination::EveryShard => {
                for shard in 0..self.shards {
                    let packet = Box::new(packet.clone());
                    self.transmit(shard_address(shard), Packet::Upstream { device, packet });
                }
            }
        }
        // A logout overtaken by the device's next login ends nothing here either.
        if logout.is_some() && self.connections.get(&device).map(|(_, c)| *c) == logout {
            self.connections.remove(&device);
        }
    }

    /// `shard` just heard from `device`; every other shard not told within `keep_alive_ms` is
    /// told the device is alive.
    fn keep_alive(&mut self, now: Time, device: Address, shard: u32) {
        for other in (0..self.shards).filter(|other| *other != shard) {
            let heard = self.heard_by_shard.get(&(device, other));
            if heard.is_none_or(|at| now.since_ms(*at) >= self.keep_alive_ms) {
                self.heard_by_shard.insert((device, other), now);
                self.transmit(shard_address(other), Packet::KeepAlive { device });
            }
        }
    }

    // ---- outputs ----

    fn transmit(&mut self, to: Address, packet: Packet) {
        self.outputs.push_back(Output::Transmit { to, packet });
    }

    /// Sweeps connections every `tick_ms` while there are any.
    fn arm(&mut self, now: Time) {
        if self.next_tick.is_none() && !self.connections.is_empty() {
            let tick = now.plus_ms(self.tick_ms);
            self.next_tick = Some(tick);
            self.outputs.push_back(Output::ArmTimer { at: tick });
        }
    }
}
