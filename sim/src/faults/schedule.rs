//! Faults that happen at moments rather than to packets: server crashes and restarts, device
//! app kills and restarts, partitions (recorded when they start and heal; the packet rule drops
//! the packets), and each device's clock skew.

use crate::node::World;
use imsim_history::faults::FaultProfile;
use imsim_history::{Entry, HarnessEvent, Node};
use imsim_model::DeviceId;
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::Duration;
use std::collections::BTreeMap;
use std::sync::Arc;

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
) {
    let server_windows: Vec<(u64, u64)> = faults
        .server_crashes
        .iter()
        .map(|c| (c.at_ms, c.downtime_ms))
        .collect();
    spawn_crashes(world, Node::Server, server.id(), server_windows);
    let mut device_windows: BTreeMap<DeviceId, Vec<(u64, u64)>> = BTreeMap::new();
    for restart in &faults.device_restarts {
        device_windows
            .entry(restart.device)
            .or_default()
            .push((restart.at_ms, restart.downtime_ms));
    }
    for (device, mut windows) in device_windows {
        windows.sort();
        spawn_crashes(world, Node::Device(device), devices[&device].id(), windows);
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

fn spawn_crashes(
    world: &Arc<World>,
    node: Node,
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
            world.record(
                Node::Harness,
                Entry::Harness(HarnessEvent::NodeCrashed { crashed: node }),
            );
            madsim::time::sleep(Duration::from_millis(downtime_ms)).await;
            handle.restart(id);
            world.record(
                Node::Harness,
                Entry::Harness(HarnessEvent::NodeRestarted { restarted: node }),
            );
        }
    });
}
