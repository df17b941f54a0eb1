//! One run of one scenario with one seed, end to end:
//! 1. From the seed, derive the topology, the fault profile and the workload plan (one ChaCha
//!    generator, in a fixed order), and madsim's own seed (a generator of its own).
//! 2. Start a fresh madsim runtime on a fresh OS thread (std's hash seeds are per thread).
//! 3. Safety phase: workload and faults together, for `workload.duration_ms`.
//! 4. Liveness phase: every fault has ended and every crashed node is back (faults are validated
//!    to end within the safety phase), every device is told to go online, no more sends; wait the
//!    quiet period. Then record the server's durable timelines and end.
//! 5. Check every invariant on the history.

use crate::check::{check_all, Violation};
use crate::faults::FaultProfile;
use crate::history::{Entry, HarnessEvent, History, Node, RunStart, TimelineEntry, Topology};
use crate::node::{
    device_address, device_ip, lock, run_device, run_server, server_ip, server_receivers,
    DeviceSlot, PacketStats, ServerSlot, World,
};
use crate::scenario::Scenario;
use crate::workload::{self, Plan};
use imsim_model::{
    Client, Command, DeviceId, DeviceIdentity, Directory, Event, Server, Time, Variant,
};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::time::Duration;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Mixed into the run seed to seed madsim's own generator ("madsim" in ASCII).
const MADSIM_SEED_SALT: u64 = 0x6d61_6473_696d;

/// Everything a run is made of, derived from (scenario, seed) before the simulation starts.
#[derive(Clone, Debug)]
pub struct Setup {
    pub scenario: Scenario,
    pub seed: u64,
    pub topology: Topology,
    pub faults: FaultProfile,
    pub plan: Plan,
    madsim_seed: u64,
}

impl Setup {
    pub fn new(scenario: &Scenario, seed: u64) -> Setup {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let topology = workload::topology(scenario, &mut rng);
        let duration_ms = scenario.workload.duration_ms;
        let mut faults = if scenario.faults.swarm {
            FaultProfile::swarm(
                &mut rng,
                &scenario.faults.swarm_classes,
                scenario.device_count(),
                duration_ms,
            )
        } else {
            FaultProfile::default()
        };
        faults.merge(&scenario.faults.profile);
        let mut plan = workload::plan(scenario, &topology, &mut rng);
        // The liveness phase starts with every device told to go online, exactly once: also a
        // device without a scripted action, and once even when a random offline period already
        // ends at `duration_ms` (a script cannot say that, and the explicit form of the run, see
        // `shrink`, must give the same plan).
        let liveness_online = (duration_ms, Command::GoOnline);
        for device in topology.users.iter().flat_map(|user| &user.devices) {
            let commands = plan.commands.entry(*device).or_default();
            commands.retain(|command| *command != liveness_online);
            commands.push(liveness_online.clone());
        }
        // madsim's seed comes from the run seed alone, not from the stream above (like the fault
        // rules' stream in `control`): the explicit form of a run draws nothing (its topology,
        // faults and plan are written out) and must still run on the same madsim schedule.
        let madsim_seed = ChaCha8Rng::seed_from_u64(seed ^ MADSIM_SEED_SALT).gen();
        Setup {
            scenario: scenario.clone(),
            seed,
            topology,
            faults,
            plan,
            madsim_seed,
        }
    }
}

/// Counts of one run, for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    pub sends: u64,
    pub committed: u64,
    pub acked: u64,
    pub displayed: u64,
    pub server_crashes: u64,
    pub device_restarts: u64,
    pub packets: PacketStats,
    pub simulated_ms: u64,
    /// Displays on devices other than the sender's own.
    pub delivered: u64,
    /// Storage records written (synced or lost in a crash): messages, refusals, inbox copies.
    pub storage_writes: u64,
    /// Send → display on another device, in simulated milliseconds.
    pub latency_ms: Quantiles,
    /// Users going online or offline at the server.
    pub presence_changes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Quantiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Quantiles {
    fn of(mut values: Vec<u64>) -> Quantiles {
        values.sort_unstable();
        let at = |q: f64| {
            values
                .get(((values.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        Quantiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: values.last().copied().unwrap_or(0),
        }
    }
}

impl RunStats {
    /// Storage writes per committed entry (1 for store once, about the audience for fan-out
    /// write).
    pub fn writes_per_message(&self) -> f64 {
        self.storage_writes as f64 / self.committed.max(1) as f64
    }

    /// Packets of any kind per message displayed on a recipient's device.
    pub fn packets_per_delivery(&self) -> f64 {
        self.packets.sent as f64 / self.delivered.max(1) as f64
    }

    /// Presence packets (pushed changes, and status lists sent at login or on request) per
    /// status change: the storm coefficient of presence, push or pull.
    pub fn presence_packets_per_change(&self) -> f64 {
        let kinds = ["presence", "presence_state"];
        let packets: u64 = kinds
            .iter()
            .map(|kind| self.packets.by_kind.get(kind).copied().unwrap_or(0))
            .sum();
        packets as f64 / self.presence_changes.max(1) as f64
    }

    /// Notices sent per committed entry: the storm coefficient of notify-then-pull.
    pub fn notices_per_message(&self) -> f64 {
        self.packets.by_kind.get("notify").copied().unwrap_or(0) as f64
            / self.committed.max(1) as f64
    }
}

/// A finished run: its history, what the checkers found, and counts.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub setup: Setup,
    pub history: History,
    pub violations: Vec<Violation>,
    pub stats: RunStats,
}

impl RunOutcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Every violation with its witness records, then the command that replays the run.
    /// `scenario_ref` is how the user named the scenario (a path or a shipped name).
    pub fn failure_report(&self, scenario_ref: &str) -> String {
        let mut report = String::new();
        for violation in &self.violations {
            let class = format!("{:?}", violation.class()).to_lowercase();
            report += &format!(
                "VIOLATION {} ({class}): {}\n",
                violation.invariant, violation.explanation
            );
            for index in &violation.witness {
                if let Some(record) = self.history.records.get(*index) {
                    report += &format!("  [{index}] {record}\n");
                }
            }
        }
        report += &format!(
            "replay: {}\n",
            replay_command(
                scenario_ref,
                self.setup.seed,
                self.setup.scenario.protocol.variant
            )
        );
        report
    }
}

/// The exact command that reproduces a run (with `--variant` when the protocol is a broken one).
pub fn replay_command(scenario_ref: &str, seed: u64, variant: Variant) -> String {
    match variant {
        Variant::Correct => format!("imsim replay {scenario_ref} --seed {seed}"),
        variant => format!("imsim replay {scenario_ref} --seed {seed} --variant {variant}"),
    }
}

/// Runs one seed on a fresh OS thread and checks it.
pub fn run(scenario: &Scenario, seed: u64) -> RunOutcome {
    let setup = Setup::new(scenario, seed);
    let (history, packets, storage_writes) = simulate(&setup);
    let violations = check_all(&history);
    let stats = stats(&history, packets, storage_writes);
    RunOutcome {
        setup,
        history,
        violations,
        stats,
    }
}

/// The simulation alone: the history and the packet counts.
pub fn simulate(setup: &Setup) -> (History, PacketStats, u64) {
    let setup = setup.clone();
    let thread = std::thread::Builder::new()
        .name(format!("imsim-seed-{}", setup.seed))
        .spawn(move || {
            let runtime =
                Runtime::with_seed_and_config(setup.madsim_seed, madsim::Config::default());
            runtime.block_on(control(setup))
        })
        .expect("spawn a simulation thread");
    match thread.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The controller: builds the nodes, plays the faults, switches phases, reads the final state.
async fn control(setup: Setup) -> (History, PacketStats, u64) {
    let scenario = &setup.scenario;
    let safety_end_ms = scenario.workload.duration_ms;
    let fault_rng = ChaCha8Rng::seed_from_u64(setup.seed ^ 0x6661_756c_7473);
    let world = Arc::new(World::new(setup.faults.rules(), fault_rng, safety_end_ms));
    world.record(
        Node::Harness,
        Entry::Harness(HarnessEvent::RunStarted(Box::new(RunStart {
            scenario: scenario.name.clone(),
            seed: setup.seed,
            variant: scenario.protocol.variant.name().to_string(),
            topology: setup.topology.clone(),
            faults: setup.faults.clone(),
            protocol: scenario.protocol.clone(),
        }))),
    );
    let handle = Handle::current();
    let (server_node, server_slot) = start_server(&handle, &world, &setup);
    let device_nodes = start_devices(&handle, &world, &setup);
    play_faults(&world, &setup, &server_node, &device_nodes);

    world.sleep_until_ms(safety_end_ms).await;
    let quiet_period_ms = scenario.quiet_period_ms();
    world.record(
        Node::Harness,
        Entry::Harness(HarnessEvent::LivenessPhaseStarted { quiet_period_ms }),
    );
    world.sleep_until_ms(safety_end_ms + quiet_period_ms).await;

    {
        let slot = lock(&server_slot);
        for conversation in &setup.topology.conversations {
            let entries = slot
                .server
                .durable_timeline(conversation.conv)
                .iter()
                .map(|m| TimelineEntry {
                    seq: m.seq,
                    sender_device: m.sender_device,
                    client_msg_id: m.client_msg_id,
                })
                .collect();
            world.record(
                Node::Harness,
                Entry::Harness(HarnessEvent::FinalTimeline {
                    conv: conversation.conv,
                    entries,
                }),
            );
        }
    }
    world.record(Node::Harness, Entry::Harness(HarnessEvent::RunEnded));
    let storage_writes = lock(&server_slot).server.storage().written();
    let result = (world.take_history(), world.packet_stats(), storage_writes);
    stop_nodes(&handle, &server_node, &device_nodes);
    result
}

/// Kills every node once the run's results are out, so that no task outlives the run.
///
/// Dropping a madsim `Runtime` does not drop the futures of tasks that are still pending, and
/// every node has one when the run ends: its loop, waiting for input. Such a task stays
/// allocated for good: madsim's `TaskInfo` holds a waker of its own task and lives inside that
/// task's future, and the future holds the `World`, the node's endpoint and receive loops, and
/// handles that keep the runtime itself alive (about 0.6 MB per seed
/// of `one-to-one`, and gigabytes over a sweep). A killed node's tasks are woken, and the
/// executor, which drains its ready queue even after the controller's future has finished,
/// drops their futures before `block_on` returns. The history has been taken by then, so this
/// changes nothing a run records.
fn stop_nodes(handle: &Handle, server: &NodeHandle, devices: &BTreeMap<DeviceId, NodeHandle>) {
    handle.kill(server.id());
    for device in devices.values() {
        handle.kill(device.id());
    }
}

/// The login token of a device: any fixed function works; the directory and the device agree.
fn token(device: DeviceId) -> u64 {
    0x5eed_0000_0000 | u64::from(device.0)
}

fn start_server(
    handle: &Handle,
    world: &Arc<World>,
    setup: &Setup,
) -> (NodeHandle, Arc<Mutex<ServerSlot>>) {
    let mut directory = Directory::new();
    for user in &setup.topology.users {
        for device in &user.devices {
            directory.add_device(user.user, *device, token(*device));
        }
    }
    for conversation in &setup.topology.conversations {
        let members = conversation.members.clone();
        if conversation.group {
            directory.add_group(conversation.conv, members);
        } else {
            directory.add_conversation(conversation.conv, members);
        }
    }
    let config = setup.scenario.protocol.clone();
    let server = Server::new(config.clone(), directory.clone(), Time(0));
    let devices: usize = setup.topology.users.iter().map(|u| u.devices.len()).sum();
    let slot = Arc::new(Mutex::new(ServerSlot {
        server,
        config,
        directory,
        receivers: server_receivers(devices),
        started: false,
    }));
    let (world, init_slot) = (world.clone(), slot.clone());
    let node = handle
        .create_node()
        .name("server")
        .ip(server_ip())
        .init(move || run_server(world.clone(), init_slot.clone()))
        .build();
    (node, slot)
}

fn start_devices(
    handle: &Handle,
    world: &Arc<World>,
    setup: &Setup,
) -> BTreeMap<DeviceId, NodeHandle> {
    let skews: BTreeMap<DeviceId, i64> = setup
        .faults
        .clock_skew
        .iter()
        .map(|s| (s.device, s.offset_ms))
        .collect();
    let mut nodes = BTreeMap::new();
    for user in &setup.topology.users {
        for device in &user.devices {
            let identity = DeviceIdentity {
                user: user.user,
                device: *device,
                token: token(*device),
                server: imsim_model::Address(0),
            };
            debug_assert_ne!(device_address(*device), identity.server);
            let slot = Arc::new(Mutex::new(DeviceSlot {
                client: Client::new(setup.scenario.protocol.clone(), identity),
                device: *device,
                plan: setup.plan.commands.get(device).cloned().unwrap_or_default(),
                next_command: 0,
                skew_ms: skews.get(device).copied().unwrap_or(0),
                started: false,
            }));
            let world = world.clone();
            let node = handle
                .create_node()
                .name(format!("device-{}", device.0))
                .ip(device_ip(*device))
                .init(move || run_device(world.clone(), slot.clone()))
                .build();
            nodes.insert(*device, node);
        }
    }
    nodes
}

/// Crashes, restarts and partitions happen on their own tasks, each recorded in the history when
/// it happens. Crashes of one node are played one after another, so two overlapping crash windows
/// cannot restart a node that is still meant to be down.
fn play_faults(
    world: &Arc<World>,
    setup: &Setup,
    server: &NodeHandle,
    devices: &BTreeMap<DeviceId, NodeHandle>,
) {
    let server_windows: Vec<(u64, u64)> = setup
        .faults
        .server_crashes
        .iter()
        .map(|c| (c.at_ms, c.downtime_ms))
        .collect();
    spawn_crashes(world, Node::Server, server.id(), server_windows);
    let mut device_windows: BTreeMap<DeviceId, Vec<(u64, u64)>> = BTreeMap::new();
    for restart in &setup.faults.device_restarts {
        device_windows
            .entry(restart.device)
            .or_default()
            .push((restart.at_ms, restart.downtime_ms));
    }
    for (device, mut windows) in device_windows {
        windows.sort();
        spawn_crashes(world, Node::Device(device), devices[&device].id(), windows);
    }
    for partition in &setup.faults.partitions {
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

/// The figures of a run from its history (the live driver uses it too).
pub fn stats(history: &History, packets: PacketStats, storage_writes: u64) -> RunStats {
    let mut stats = RunStats {
        packets,
        storage_writes,
        ..RunStats::default()
    };
    let mut sent_at: BTreeMap<(DeviceId, imsim_model::ClientMsgId), u64> = BTreeMap::new();
    let mut latencies = Vec::new();
    for record in &history.records {
        stats.simulated_ms = stats.simulated_ms.max(record.t_ms);
        match &record.entry {
            Entry::Protocol(Event::SendRequested { client_msg_id, .. }) => {
                stats.sends += 1;
                if let Node::Device(device) = record.node {
                    sent_at.insert((device, *client_msg_id), record.t_ms);
                }
            }
            Entry::Protocol(Event::Displayed {
                sender_device,
                client_msg_id,
                ..
            }) if record.node != Node::Device(*sender_device) => {
                stats.displayed += 1;
                stats.delivered += 1;
                if let Some(sent_ms) = sent_at.get(&(*sender_device, *client_msg_id)) {
                    latencies.push(record.t_ms - sent_ms);
                }
            }
            Entry::Protocol(Event::Recovered {
                lost_unsynced_writes,
                ..
            }) => {
                stats.storage_writes += lost_unsynced_writes;
            }
            Entry::Protocol(Event::Committed { .. }) => stats.committed += 1,
            Entry::Protocol(Event::PresenceChanged { .. }) => stats.presence_changes += 1,
            Entry::Protocol(Event::SendAcked { .. }) => stats.acked += 1,
            Entry::Protocol(Event::Displayed { .. }) => stats.displayed += 1,
            Entry::Harness(HarnessEvent::NodeCrashed {
                crashed: Node::Server,
            }) => stats.server_crashes += 1,
            Entry::Harness(HarnessEvent::NodeCrashed { .. }) => stats.device_restarts += 1,
            _ => {}
        }
    }
    stats.latency_ms = Quantiles::of(latencies);
    stats
}
