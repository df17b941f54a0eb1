//! Faults that happen at moments rather than to packets: server crashes and restarts, device
//! app kills and restarts, gateway crashes and restarts, the crashes placements ask for, partitions (recorded when they start
//! and heal; the packet rule drops the packets), and each device's clock skew.

use crate::node::World;
use imsim_history::faults::FaultProfile;
use imsim_history::{Entry, HarnessEvent, Node};
use imsim_model::DeviceId;
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::Duration;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// Each device's clock offset from true time, in milliseconds (absent: none).
pub(crate) fn clock_skews(faults: &FaultProfile) -> BTreeMap<DeviceId, i64> {
    faults
        .clock_skew
        .iter()
        .map(|s| (s.device, s.offset_ms))
        .collect()
}

/// Crashes, restarts and partitions happen on their own tasks, each recorded in the history when
/// it happens. Crashes of one node are played one after another, so two overlapping crash windows
/// cannot restart a node that is still meant to be down.
pub(crate) fn play(
    world: &Arc<World>,
    faults: &FaultProfile,
    server: &NodeHandle,
    devices: &BTreeMap<DeviceId, NodeHandle>,
    gateways: &[NodeHandle],
    placed_crashes: Option<UnboundedReceiver<u64>>,
) {
    if let Some(requests) = placed_crashes {
        spawn_placed_crashes(world, server.id(), requests);
    }
    let server_windows: Vec<(u64, u64)> = faults
        .server_crashes
        .iter()
        .map(|c| (c.at_ms, c.downtime_ms))
        .collect();
    spawn_crashes(
        world,
        node_events(Node::Server),
        server.id(),
        server_windows,
    );
    play_gateways(world, faults, gateways);
    let mut device_windows: BTreeMap<DeviceId, Vec<(u64, u64)>> = BTreeMap::new();
    for restart in &faults.device_restarts {
        device_windows
            .entry(restart.device)
            .or_default()
            .push((restart.at_ms, restart.downtime_ms));
    }
    for (device, mut windows) in device_windows {
        windows.sort();
        let events = node_events(Node::Device(device));
        spawn_crashes(world, events, devices[&device].id(), windows);
    }
    for partition in &faults.partitions {
        let world = world.clone();
        let partition = partition.clone();
        madsim::task::spawn(async move {
            world.sleep_until_ms(partition.start_ms).await;
            let (device, direction) = (partition.device, partition.direction);
            world.record(
                Node::Harness,
                Entry::Harness(HarnessEvent::PartitionStarted { device, direction }),
            );
            world
                .sleep_until_ms(partition.start_ms + partition.duration_ms)
                .await;
            world.record(
                Node::Harness,
                Entry::Harness(HarnessEvent::PartitionHealed { device }),
            );
        });
    }
}

/// Cluster topology: gateway crashes (one gateway's played one after another, like any node's)
/// and gateway–logic partitions (recorded when they start and heal; the packet rule drops).
fn play_gateways(world: &Arc<World>, faults: &FaultProfile, gateways: &[NodeHandle]) {
    let mut windows: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for crash in &faults.gateway_crashes {
        windows
            .entry(crash.gateway)
            .or_default()
            .push((crash.at_ms, crash.downtime_ms));
    }
    for (gateway, mut windows) in windows {
        windows.sort();
        let events = (
            HarnessEvent::GatewayCrashed { gateway },
            HarnessEvent::GatewayRestarted { gateway },
        );
        spawn_crashes(world, events, gateways[gateway as usize].id(), windows);
    }
    for partition in &faults.gateway_partitions {
        let world = world.clone();
        let partition = partition.clone();
        madsim::task::spawn(async move {
            let gateway = partition.gateway;
            world.sleep_until_ms(partition.start_ms).await;
            world.record(
                Node::Harness,
                Entry::Harness(HarnessEvent::GatewayPartitionStarted { gateway }),
            );
            world
                .sleep_until_ms(partition.start_ms + partition.duration_ms)
                .await;
            world.record(
                Node::Harness,
                Entry::Harness(HarnessEvent::GatewayPartitionHealed { gateway }),
            );
        });
    }
}

/// Placed crashes (`faults::placement`): the server's driver asks, at the moment a placement
/// fires, for the server to die now and come back after the downtime it sends. The placements
/// keep clear of the timed crashes and of each other, so the windows never overlap.
fn spawn_placed_crashes(
    world: &Arc<World>,
    id: madsim::task::NodeId,
    mut requests: UnboundedReceiver<u64>,
) {
    let world = world.clone();
    madsim::task::spawn(async move {
        let handle = Handle::current();
        let (crashed, restarted) = node_events(Node::Server);
        while let Some(downtime_ms) = requests.recv().await {
            handle.kill(id);
            world.record(Node::Harness, Entry::Harness(crashed.clone()));
            madsim::time::sleep(Duration::from_millis(downtime_ms)).await;
            handle.restart(id);
            world.record(Node::Harness, Entry::Harness(restarted.clone()));
        }
    });
}

/// What the history records when `node` crashes and when it restarts.
fn node_events(node: Node) -> (HarnessEvent, HarnessEvent) {
    (
        HarnessEvent::NodeCrashed { crashed: node },
        HarnessEvent::NodeRestarted { restarted: node },
    )
}

fn spawn_crashes(
    world: &Arc<World>,
    (crashed, restarted): (HarnessEvent, HarnessEvent),
    id: madsim::task::NodeId,
    windows: Vec<(u64, u64)>,
) {
    if windows.is_empty() {
        return;
    }
    let world = world.clone();
    madsim::task::spawn(async move {
        let handle = Handle::current();
        for (at_ms, downtime_ms) in windows {
            world.sleep_until_ms(at_ms).await;
            handle.kill(id);
            world.record(Node::Harness, Entry::Harness(crashed.clone()));
            madsim::time::sleep(Duration::from_millis(downtime_ms)).await;
            handle.restart(id);
            world.record(Node::Harness, Entry::Harness(restarted.clone()));
        }
    });
}
