//! Sharded logic (`[topology] logic = L > 1`): L logic nodes, and one server per conversation
//! shard (`imsim_model::cluster::shard`), each shard's server a task of the node that runs it,
//! on a port of its own (`PORT + 1 + shard`), so a node can run several after a handover.
//!
//! Shard `s` starts on node `s`. A `logic-crash` kills a node with every shard server on it;
//! the shards are handed over at once to the next node in turn that is up (the coordinator of a
//! real cluster would notice a lost lease; the simulation hands over when the node dies). The new
//! owner recovers the shard's server from the shard's durable storage (`cluster::take_over`);
//! storage outlives nodes, as a shared store does. A shard with no node up waits for the first
//! node to restart. Gateways find a shard through [`ShardHosts`], the simulated service
//! discovery: a packet to a shard on a dead node is lost like any packet to a dead node.

use crate::discovery::{logic_ip, shard_port, ShardHosts};
use crate::node::{lock, socket_of, Driver, Input, Later, World, SYNC_MS_MAX, SYNC_MS_MIN};
use imsim_history::faults::FaultProfile;
use imsim_history::{Entry, HarnessEvent, Node};
use imsim_model::cluster::{self, shard::SESSION_SHARD, Logic};
use imsim_model::{Directory, Event, Output, ProtocolConfig, Server, Storage, Time};
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::Duration;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::unbounded_channel;

/// One shard's server and its routing; it outlives the nodes that run it.
pub(crate) struct ShardSlot {
    shard: u32,
    server: Server,
    logic: Logic,
    config: ProtocolConfig,
    directory: Directory,
    receivers: usize,
    started: bool,
}

/// The logic tier of a sharded run: its nodes and its shards.
pub(crate) struct ShardedLogic {
    pub hosts: Arc<ShardHosts>,
    slots: Vec<Arc<Mutex<ShardSlot>>>,
    pub nodes: Vec<NodeHandle>,
}

impl ShardedLogic {
    /// Starts `logic` nodes behind `gateways` gateways, node `s` running shard `s`.
    pub(crate) fn start(
        handle: &Handle,
        world: &Arc<World>,
        logic: u32,
        gateways: u32,
        config: &ProtocolConfig,
        directory: &Directory,
        receivers: usize,
    ) -> ShardedLogic {
        let hosts = Arc::new(ShardHosts::new(logic));
        let slots: Vec<Arc<Mutex<ShardSlot>>> = (0..logic)
            .map(|shard| {
                Arc::new(Mutex::new(ShardSlot {
                    shard,
                    server: Server::new(config.clone(), directory.clone(), Time(0)),
                    logic: Logic::new(config, gateways),
                    config: config.clone(),
                    directory: directory.clone(),
                    receivers,
                    started: false,
                }))
            })
            .collect();
        let nodes = (0..logic)
            .map(|node| {
                let (world, hosts, slots) = (world.clone(), hosts.clone(), slots.clone());
                handle
                    .create_node()
                    .name(format!("logic-{node}"))
                    .ip(logic_ip(node))
                    .init(move || run_logic_node(world.clone(), hosts.clone(), slots.clone(), node))
                    .build()
            })
            .collect();
        ShardedLogic {
            hosts,
            slots,
            nodes,
        }
    }

    /// `conv`'s durable timeline, from the shard that owns it.
    pub(crate) fn with_owner<T>(
        &self,
        conv: imsim_model::ConvId,
        f: impl FnOnce(&Server) -> T,
    ) -> T {
        let shard = cluster::shard_of(conv, self.slots.len() as u32);
        f(&lock(&self.slots[shard as usize]).server)
    }

    /// Every shard's storage, for the traffic record.
    pub(crate) fn storages(&self) -> Vec<Storage> {
        self.slots
            .iter()
            .map(|slot| lock(slot).server.storage().clone())
            .collect()
    }
}

/// A logic node's first task: it starts the servers of the shards it runs (at the start, or
/// after a restart that found shards no node ran), then each shard handed over to it; the
/// servers are tasks of their own, killed with the node. The hand-over channel is installed and
/// the hosted shards read under one lock, so each shard is started exactly once.
async fn run_logic_node(
    world: Arc<World>,
    hosts: Arc<ShardHosts>,
    slots: Vec<Arc<Mutex<ShardSlot>>>,
    node: u32,
) {
    let (starter, mut handed_over) = unbounded_channel();
    let hosted = {
        let mut state = lock(&hosts.hosts);
        state.starters[node as usize] = Some(starter);
        state.hosted_by(node)
    };
    for shard in hosted {
        madsim::task::spawn(run_shard(
            world.clone(),
            slots[shard as usize].clone(),
            node,
        ));
    }
    while let Some(shard) = handed_over.recv().await {
        madsim::task::spawn(run_shard(
            world.clone(),
            slots[shard as usize].clone(),
            node,
        ));
    }
}

/// The events that belong to the session shard alone (`cluster::shard`, rule 4): the other
/// shards' sessions are delivery mirrors and their presence is not what devices see.
fn recorded(shard: u32, event: &Event) -> bool {
    shard == SESSION_SHARD
        || !matches!(
            event,
            Event::SessionOpened { .. }
                | Event::SessionClosed { .. }
                | Event::PresenceChanged { .. }
                | Event::RouteStale { .. }
        )
}

/// One shard's server on node `node`: like the single server's loop, behind the shard's `Logic`.
async fn run_shard(world: Arc<World>, slot: Arc<Mutex<ShardSlot>>, node: u32) {
    let (shard, receivers) = {
        let mut slot = lock(&slot);
        if slot.started {
            let now = Time(world.now_ms());
            let incarnation = slot.server.incarnation() + 1;
            let (config, directory) = (slot.config.clone(), slot.directory.clone());
            slot.server =
                cluster::take_over(config, directory, slot.server.storage(), incarnation, now);
            slot.logic = slot.logic.restarted(&slot.config);
        }
        slot.started = true;
        (slot.shard, slot.receivers)
    };
    let socket = SocketAddr::new(logic_ip(node), shard_port(shard));
    let mut driver = Driver::bind_at(world.clone(), socket, receivers).await;
    loop {
        let outputs: Vec<Output> = std::iter::from_fn(|| lock(&slot).logic.poll_output()).collect();
        for output in outputs {
            match output {
                Output::Transmit { to, packet } => {
                    // The logic only sends to gateways.
                    if let Some(gateway) = cluster::gateway_of(to) {
                        driver.transmit_internal(gateway, socket_of(to), packet);
                    }
                }
                Output::ArmTimer { at } => driver.arm(at.0),
                Output::SyncStorage { through } => {
                    let sync_ms = madsim::rand::thread_rng().gen_range(SYNC_MS_MIN..=SYNC_MS_MAX);
                    driver.schedule(world.now_ms() + sync_ms, Later::Synced(through));
                }
                Output::Event(event) if recorded(shard, &event) => {
                    world.record(Node::Server, Entry::Protocol(event))
                }
                Output::Event(_) => {}
            }
        }
        let input = driver.next().await;
        let now = Time(world.now_ms());
        let mut slot = lock(&slot);
        let ShardSlot { server, logic, .. } = &mut *slot;
        match input {
            Input::Packet(packet, from) => logic.handle_packet(server, now, from, packet),
            Input::Synced(through) => logic.handle_storage_synced(server, now, through),
            Input::Alarm => logic.handle_timeout(server, now),
            Input::Command(_) | Input::Release | Input::ProducerAlarm => {}
        }
    }
}

/// Plays the profile's logic crashes: each node's crashes one after another, like any node's.
pub(crate) fn play(world: &Arc<World>, faults: &FaultProfile, logic: &ShardedLogic) {
    let mut windows: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for crash in &faults.logic_crashes {
        windows
            .entry(crash.logic)
            .or_default()
            .push((crash.at_ms, crash.downtime_ms));
    }
    for (node, mut windows) in windows {
        windows.sort();
        let (world, hosts) = (world.clone(), logic.hosts.clone());
        let nodes = logic.nodes.clone();
        madsim::task::spawn(async move {
            let handle = Handle::current();
            for (at_ms, downtime_ms) in windows {
                world.sleep_until_ms(at_ms).await;
                handle.kill(nodes[node as usize].id());
                world.record(
                    Node::Harness,
                    harness(HarnessEvent::LogicCrashed { logic: node }),
                );
                crash(&world, &hosts, node);
                madsim::time::sleep(Duration::from_millis(downtime_ms)).await;
                restart(&world, &hosts, &handle, &nodes, node);
            }
        });
    }
}

fn harness(event: HarnessEvent) -> Entry {
    Entry::Harness(event)
}

/// Node `node` died: its shards go to the next node in turn that is up, whose server recovers
/// them from storage; with none up they wait. Losing the session shard is, in the history's
/// words, the server crashing (its sessions and presence are gone) and restarting.
fn crash(world: &Arc<World>, hosts: &ShardHosts, node: u32) {
    let mut state = lock(&hosts.hosts);
    let moved = state.hosted_by(node);
    state.up[node as usize] = false;
    state.starters[node as usize] = None;
    let logic = state.up.len() as u32;
    let session_shard_moved = moved.contains(&SESSION_SHARD);
    if session_shard_moved {
        world.record(
            Node::Harness,
            harness(HarnessEvent::NodeCrashed {
                crashed: Node::Server,
            }),
        );
    }
    for shard in moved {
        let to = (1..logic)
            .map(|step| (node + step) % logic)
            .find(|candidate| state.up[*candidate as usize]);
        state.host[shard as usize] = to;
        let Some(to) = to else { continue };
        state.last[shard as usize] = to;
        world.record(
            Node::Harness,
            harness(HarnessEvent::ShardHandedOver {
                shard,
                from: node,
                to,
            }),
        );
        // A restarted node whose first task has not run yet has no live starter: that task
        // finds the shard among those it runs.
        if let Some(starter) = &state.starters[to as usize] {
            let _ = starter.send(shard);
        }
        if shard == SESSION_SHARD {
            world.record(
                Node::Harness,
                harness(HarnessEvent::NodeRestarted {
                    restarted: Node::Server,
                }),
            );
        }
    }
}

/// Node `node` restarts empty, taking over any shard no node runs (its init starts them).
fn restart(
    world: &Arc<World>,
    hosts: &ShardHosts,
    handle: &Handle,
    nodes: &[NodeHandle],
    node: u32,
) {
    let mut orphans = Vec::new();
    {
        let mut state = lock(&hosts.hosts);
        state.up[node as usize] = true;
        for shard in 0..state.host.len() {
            if state.host[shard].is_none() {
                state.host[shard] = Some(node);
                orphans.push((shard as u32, state.last[shard]));
                state.last[shard] = node;
            }
        }
    }
    handle.restart(nodes[node as usize].id());
    world.record(
        Node::Harness,
        harness(HarnessEvent::LogicRestarted { logic: node }),
    );
    for (shard, from) in orphans {
        world.record(
            Node::Harness,
            harness(HarnessEvent::ShardHandedOver {
                shard,
                from,
                to: node,
            }),
        );
        if shard == SESSION_SHARD {
            world.record(
                Node::Harness,
                harness(HarnessEvent::NodeRestarted {
                    restarted: Node::Server,
                }),
            );
        }
    }
}
