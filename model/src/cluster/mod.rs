//! The cluster topology (DESIGN.md §8, "HA architecture"): long-connection gateways in front of
//! the logic server, as sans-IO state machines like the rest of the model.
//!
//! ```text
//!  device ──┐                        ┌── Upstream{device, packet} ──►┐
//!  device ──┼─► gateway g0 ──────────┤                                │  logic (Server
//!  device ──┘   (holds connections)  └◄── Downstream{device, packet} ─┤   + Registry)
//!  device ────► gateway g1 ─────────────────── … ─────────────────────┘
//! ```
//!
//! - A device talks to one gateway at a time ([`Failover`]): the first one chosen from its
//!   device id, the next one in turn whenever it loses its session or a login goes unanswered.
//! - A [`Gateway`] holds the connections of the devices that logged in through it and forwards
//!   their packets to the logic (`Packet::Upstream`). A packet from a device it holds no
//!   connection of is answered `NotLoggedIn`, as a reset connection would be.
//! - The [`Logic`] node is today's [`Server`](crate::Server) behind a session [`Registry`]: which
//!   gateway holds which device's connection, re-registered by every upstream packet and expired
//!   after `session_timeout_ms` of silence. Everything the server sends a device is routed through
//!   it (`Packet::Downstream`). A gateway that no longer holds the device answers
//!   `Packet::Unroutable`: the route is dropped and the device's session ends, so nothing is
//!   counted delivered that was not; the device's next login re-registers and re-syncs it.
//!
//! With `[topology] logic = L > 1` the logic is sharded by conversation ([`shard`]): the gateway
//! sends each packet to the shard owning its conversation, a device's own packets to every shard,
//! and merges their answers.
//!
//! Sessions, seqs and storage stay at the logic, keyed by the device's address, so any gateway
//! can carry any device's packets and a failover is an ordinary login through another gateway.

mod failover;
mod gateway;
mod logic;
pub mod queue;
mod registry;
pub mod shard;

pub use failover::Failover;
pub use gateway::Gateway;
pub use logic::Logic;
pub use queue::{Consumer, Producer, Queue, QueueNote, QueueOutput, Role};
pub use registry::Registry;
pub use shard::{shard_address, shard_at, shard_of, take_over, Merge, LOGIC_SHARDS_MAX};

use crate::ids::Address;

/// Gateway addresses start here; device addresses are device ids, far below it, and the logic
/// is `Address(0)`.
pub const GATEWAY_ADDRESS_BASE: u32 = 0x4000_0000;
/// The most gateways a topology may have.
pub const GATEWAYS_MAX: u32 = 64;

/// The address of gateway number `gateway` (counted from 0).
pub fn gateway_address(gateway: u32) -> Address {
    assert!(gateway < GATEWAYS_MAX, "gateway {gateway} out of range");
    Address(GATEWAY_ADDRESS_BASE + gateway)
}

/// The gateway number of `address`, if it is a gateway's.
pub fn gateway_of(address: Address) -> Option<u32> {
    address
        .0
        .checked_sub(GATEWAY_ADDRESS_BASE)
        .filter(|gateway| *gateway < GATEWAYS_MAX)
}

/// The logic server's address.
pub const LOGIC_ADDRESS: Address = Address(0);

#[cfg(test)]
mod tests;
