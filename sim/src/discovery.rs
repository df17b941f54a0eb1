//! Where the servers of a sharded logic listen: each logic node's address, each shard's port,
//! and [`ShardHosts`], the simulated service discovery (which node runs each shard now). The
//! node drivers (`node.rs`) read it to route; the sharded runtime (`shards.rs`) keeps it up to
//! date as nodes crash and shards are handed over.

use crate::sync::lock;
use imsim_model::cluster;
use imsim_model::Address;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use tokio::sync::mpsc::UnboundedSender;

/// Every node listens on this port; a shard's server on `PORT + 1 + shard`.
pub(crate) const PORT: u16 = 7000;

/// Logic node number `logic` (from 0) lives at 10.0.0.`logic + 1` (node 0 where the single
/// server would be).
pub(crate) fn logic_ip(logic: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, logic as u8 + 1))
}

pub(crate) fn shard_port(shard: u32) -> u16 {
    PORT + 1 + shard as u16
}

/// The shard whose server sent from `socket`, if its port is a shard's.
pub(crate) fn shard_of_port(socket: SocketAddr) -> Option<u32> {
    let shard = socket.port().checked_sub(PORT + 1)?;
    (u32::from(shard) < cluster::LOGIC_SHARDS_MAX).then_some(u32::from(shard))
}

/// Which node runs each shard, and which nodes are up: the cluster's coordinator, as data.
pub(crate) struct ShardHosts {
    pub(crate) hosts: Mutex<Hosts>,
}

pub(crate) struct Hosts {
    /// Per shard, the node running its server (`None`: no node up to run it).
    pub(crate) host: Vec<Option<u32>>,
    /// Per shard, the last node that ran it.
    pub(crate) last: Vec<u32>,
    pub(crate) up: Vec<bool>,
    /// Per node, how to tell its current incarnation to start a shard's server. (A task
    /// spawned from outside through a `NodeHandle` would land on the incarnation the handle
    /// was made for, dead after a restart.)
    pub(crate) starters: Vec<Option<UnboundedSender<u32>>>,
}

impl Hosts {
    pub(crate) fn hosted_by(&self, node: u32) -> Vec<u32> {
        (0..self.host.len() as u32)
            .filter(|shard| self.host[*shard as usize] == Some(node))
            .collect()
    }
}

impl ShardHosts {
    pub(crate) fn new(logic: u32) -> ShardHosts {
        ShardHosts {
            hosts: Mutex::new(Hosts {
                host: (0..logic).map(Some).collect(),
                last: (0..logic).collect(),
                up: vec![true; logic as usize],
                starters: vec![None; logic as usize],
            }),
        }
    }

    pub(crate) fn shards(&self) -> u32 {
        lock(&self.hosts).host.len() as u32
    }

    /// Where the server of the shard at `address` listens now.
    pub(crate) fn socket_of(&self, address: Address) -> Option<SocketAddr> {
        let shard = cluster::shard_at(address)?;
        let node = (*lock(&self.hosts).host.get(shard as usize)?)?;
        Some(SocketAddr::new(logic_ip(node), shard_port(shard)))
    }
}

pub(crate) fn server_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
}

pub(crate) fn queue_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 3, 0, 1))
}

pub(crate) fn consumer_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 3, 0, 2))
}

/// Where a queue-topology machine's output goes.
pub(crate) fn socket_of_role(role: cluster::Role) -> SocketAddr {
    let ip = match role {
        cluster::Role::Logic => server_ip(),
        cluster::Role::Queue => queue_ip(),
        cluster::Role::Consumer => consumer_ip(),
    };
    SocketAddr::new(ip, PORT)
}
