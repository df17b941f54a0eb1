//! One run of one scenario with one seed, end to end:
//! 1. From the seed, derive the topology, the fault profile and the workload plan (one ChaCha
//!    generator, in a fixed order), and madsim's own seed (a generator of its own).
//! 2. Start a fresh madsim runtime on a fresh OS thread (std's hash seeds are per thread).
//! 3. Safety phase: workload and faults together, for `workload.duration_ms`.
//! 4. Liveness phase: every fault has ended and every crashed node is back (faults are validated
//!    to end within the safety phase), every device is told to go online, no more sends; wait the
//!    quiet period. Then record the server's durable timelines and end.
//! 5. Check every invariant on the history.

use crate::faults::placement::Placements;
use crate::faults::{self, schedule, FaultClass, FaultProfile};
use crate::features::{self, Drawn};
use crate::node::{
    device_address, device_ip, gateway_ip, lock, run_device, run_gateway, run_server, server_ip,
    server_receivers, DeviceSlot, GatewaySlot, ServerSlot, World,
};
use crate::queue::QueueTier;
use crate::scenario::Scenario;
use crate::shards::{self, ShardedLogic};
use crate::workload::{self, Plan};
use imsim_history::check::{check_all, Violation};
use imsim_history::stats::RunStats;
use imsim_history::{
    replay_command, Entry, HarnessEvent, History, Node, RunStart, TimelineEntry, Topology, Traffic,
};
use imsim_model::cluster::{Failover, Logic, Producer};
use imsim_model::{Client, Command, DeviceId, DeviceIdentity, Directory, Server, Time};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Mixed into the run seed to seed madsim's own generator ("madsim" in ASCII).
const MADSIM_SEED_SALT: u64 = 0x6d61_6473_696d;

/// Mixed into the run seed to seed the long-silence draw ("silent" in ASCII): a stream of its
/// own, so adding long silences left every other seed's faults and workload as they were.
const LONG_SILENCE_SEED_SALT: u64 = 0x7369_6c65_6e74;

/// Mixed into the run seed to seed the placements' draw ("bugify" in ASCII): a stream of its own,
/// so a seed without placements kept its faults and workload.
const PLACEMENT_SEED_SALT: u64 = 0x6275_6769_6679;

/// Everything a run is made of, derived from (scenario, seed) before the simulation starts.
#[derive(Clone, Debug)]
pub struct Setup {
    pub scenario: Scenario,
    pub seed: u64,
    pub topology: Topology,
    pub faults: FaultProfile,
    pub plan: Plan,
    /// The features this seed drew, for a scenario with `[features] swarm = true`.
    pub features: Option<Drawn>,
    madsim_seed: u64,
}

impl Setup {
    pub fn new(scenario: &Scenario, seed: u64) -> Setup {
        let (drawn, features) = features::draw(scenario, seed);
        let scenario = &drawn;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let topology = workload::topology(scenario, &mut rng);
        let duration_ms = scenario.workload.duration_ms;
        let mut faults = if scenario.faults.swarm {
            let mut drawn = faults::swarm(
                &mut rng,
                &scenario.faults.swarm_classes,
                scenario.device_count(),
                faults::swarm::Shape {
                    gateways: scenario.topology.gateways,
                    logic: scenario.topology.logic,
                    queue: scenario.topology.queue,
                },
                duration_ms,
            );
            faults::swarm::draw_long_silence(
                &mut ChaCha8Rng::seed_from_u64(seed ^ LONG_SILENCE_SEED_SALT),
                &mut drawn,
                &topology,
                scenario.protocol.offline_detection_ms(),
                duration_ms,
            );
            drawn
        } else {
            FaultProfile::default()
        };
        faults.merge(&scenario.faults.profile);
        let mut plan = workload::plan(scenario, &topology, &mut rng);
        if scenario.faults.swarm
            && scenario
                .faults
                .swarm_classes
                .contains(&FaultClass::Placement)
        {
            let membership = plan
                .commands
                .values()
                .flatten()
                .any(|(_, command)| matches!(command, Command::ChangeMembership { .. }));
            faults::placement::draw(
                &mut ChaCha8Rng::seed_from_u64(seed ^ PLACEMENT_SEED_SALT),
                &mut faults,
                membership,
                duration_ms,
            );
        }
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
            features,
            madsim_seed,
        }
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

/// Runs one seed on a fresh OS thread and checks it.
pub fn run(scenario: &Scenario, seed: u64) -> RunOutcome {
    let setup = Setup::new(scenario, seed);
    let history = simulate(&setup);
    let violations = check_all(&history);
    let stats = RunStats::of(&history);
    RunOutcome {
        setup,
        history,
        violations,
        stats,
    }
}

/// The simulation alone: the history (its `traffic` record holds the packet counts).
pub fn simulate(setup: &Setup) -> History {
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
async fn control(setup: Setup) -> History {
    let scenario = &setup.scenario;
    let safety_end_ms = scenario.workload.duration_ms;
    let fault_rng = ChaCha8Rng::seed_from_u64(setup.seed ^ 0x6661_756c_7473);
    let devices: usize = setup.topology.users.iter().map(|u| u.devices.len()).sum();
    // A placed crash is asked for by the server's driver and played by a task of the controller's
    // (`schedule::play`); without one in the profile, no channel and no task.
    // (Only then: a task more changes madsim's schedule, and a run without placements must
    // replay as it did before there were any.)
    let placed_crash = setup
        .faults
        .placements
        .iter()
        .any(|p| p.kind.crashes_server());
    let (crash_requests, placed_crashes) = if placed_crash {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Some(sender), Some(receiver))
    } else {
        (None, None)
    };
    let world = Arc::new(World::new(
        faults::rules(&setup.faults),
        fault_rng,
        safety_end_ms,
        devices as u64,
        Placements::new(&setup.faults),
        crash_requests,
    ));
    world.record(
        Node::Harness,
        Entry::Harness(HarnessEvent::RunStarted(Box::new(RunStart {
            scenario: scenario.name.clone(),
            seed: setup.seed,
            variant: scenario.protocol.variant.name().to_string(),
            topology: setup.topology.clone(),
            faults: setup.faults.clone(),
            protocol: scenario.protocol.clone(),
            budget: scenario.budget.clone(),
        }))),
    );
    let handle = Handle::current();
    // Queue topology: the queue's and the consumer's nodes (only then: a node more changes
    // madsim's schedule, and a run without a queue must replay as it always did).
    let queue = scenario
        .topology
        .queue
        .then(|| QueueTier::start(&handle, &world, scenario.protocol.variant));
    let logic = start_logic(&handle, &world, &setup, queue.as_ref());
    let gateway_nodes = start_gateways(&handle, &world, &setup, &logic);
    let device_nodes = start_devices(&handle, &world, &setup);
    schedule::play(
        &world,
        &setup.faults,
        logic.first_node(),
        &device_nodes,
        &gateway_nodes,
        placed_crashes,
    );
    if let LogicTier::Sharded(sharded) = &logic {
        shards::play(&world, &setup.faults, sharded);
    }
    if let Some(queue) = &queue {
        queue.play(&world, &setup.faults, safety_end_ms);
    }

    world.sleep_until_ms(safety_end_ms).await;
    let quiet_period_ms = scenario.quiet_period_ms();
    world.record(
        Node::Harness,
        Entry::Harness(HarnessEvent::LivenessPhaseStarted { quiet_period_ms }),
    );
    world.sleep_until_ms(safety_end_ms + quiet_period_ms).await;

    for conversation in &setup.topology.conversations {
        // Queue topology: storage is the authority on what is durable.
        let from_queue = queue
            .as_ref()
            .map(|q| q.durable_timeline(conversation.conv));
        let entries = from_queue.unwrap_or_else(|| {
            logic.with_owner(conversation.conv, |server| {
                server
                    .durable_timeline(conversation.conv)
                    .iter()
                    .map(TimelineEntry::from)
                    .collect()
            })
        });
        world.record(
            Node::Harness,
            Entry::Harness(HarnessEvent::FinalTimeline {
                conv: conversation.conv,
                entries,
            }),
        );
    }
    let storages = match &queue {
        Some(queue) => vec![queue.storage()],
        None => logic.storages(),
    };
    let traffic = Traffic {
        packets: world.packet_stats(),
        synced_writes: storages.iter().map(|s| s.written()).sum(),
        message_writes: storages.iter().map(|s| s.message_writes()).sum(),
    };
    world.record(
        Node::Harness,
        Entry::Harness(HarnessEvent::Traffic(Box::new(traffic))),
    );
    world.record(Node::Harness, Entry::Harness(HarnessEvent::RunEnded));
    let history = world.take_history();
    world.end_placed_crashes();
    stop_nodes(&handle, &logic, &device_nodes, &gateway_nodes);
    for node in queue.iter().flat_map(|queue| &queue.nodes) {
        handle.kill(node.id());
    }
    history
}

/// The logic: one server (behind gateways or not), or the shards of a sharded logic.
enum LogicTier {
    Single(NodeHandle, Arc<Mutex<ServerSlot>>),
    Sharded(ShardedLogic),
}

impl LogicTier {
    /// The node a server crash kills (the profile has none with sharded logic: validated).
    fn first_node(&self) -> &NodeHandle {
        match self {
            LogicTier::Single(node, _) => node,
            LogicTier::Sharded(sharded) => &sharded.nodes[0],
        }
    }

    fn nodes(&self) -> Vec<&NodeHandle> {
        match self {
            LogicTier::Single(node, _) => vec![node],
            LogicTier::Sharded(sharded) => sharded.nodes.iter().collect(),
        }
    }

    /// Runs `read` on the server that owns `conv`.
    fn with_owner<T>(&self, conv: imsim_model::ConvId, read: impl FnOnce(&Server) -> T) -> T {
        match self {
            LogicTier::Single(_, slot) => read(&lock(slot).server),
            LogicTier::Sharded(sharded) => sharded.with_owner(conv, read),
        }
    }

    fn storages(&self) -> Vec<imsim_model::Storage> {
        match self {
            LogicTier::Single(_, slot) => vec![lock(slot).server.storage().clone()],
            LogicTier::Sharded(sharded) => sharded.storages(),
        }
    }
}

fn start_logic(
    handle: &Handle,
    world: &Arc<World>,
    setup: &Setup,
    queue: Option<&QueueTier>,
) -> LogicTier {
    let logic = setup.scenario.topology.logic;
    if logic <= 1 {
        let (node, slot) = start_server(handle, world, setup, queue);
        return LogicTier::Single(node, slot);
    }
    let directory = directory(setup);
    let devices: usize = setup.topology.users.iter().map(|u| u.devices.len()).sum();
    LogicTier::Sharded(ShardedLogic::start(
        handle,
        world,
        logic,
        setup.scenario.topology.gateways,
        &setup.scenario.protocol,
        &directory,
        server_receivers(devices),
    ))
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
fn stop_nodes(
    handle: &Handle,
    logic: &LogicTier,
    devices: &BTreeMap<DeviceId, NodeHandle>,
    gateways: &[NodeHandle],
) {
    for node in logic.nodes() {
        handle.kill(node.id());
    }
    for device in devices.values() {
        handle.kill(device.id());
    }
    for gateway in gateways {
        handle.kill(gateway.id());
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
    queue: Option<&QueueTier>,
) -> (NodeHandle, Arc<Mutex<ServerSlot>>) {
    let directory = directory(setup);
    let config = setup.scenario.protocol.clone();
    let server = Server::new(config.clone(), directory.clone(), Time(0));
    let devices: usize = setup.topology.users.iter().map(|u| u.devices.len()).sum();
    let gateways = setup.scenario.topology.gateways;
    let slot = Arc::new(Mutex::new(ServerSlot {
        server,
        config,
        directory,
        receivers: server_receivers(devices),
        started: false,
        logic: (gateways > 0).then(|| Logic::new(&setup.scenario.protocol, gateways)),
        queue: queue.map(|queue| (Producer::new(0, 0), queue.shared.clone())),
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

/// Who is who: the users' devices with their tokens, the conversations and groups.
fn directory(setup: &Setup) -> Directory {
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
    directory
}

/// Cluster topology: one node per gateway, each relaying between its devices and the logic.
fn start_gateways(
    handle: &Handle,
    world: &Arc<World>,
    setup: &Setup,
    logic: &LogicTier,
) -> Vec<NodeHandle> {
    let protocol = &setup.scenario.protocol;
    let devices: usize = setup.topology.users.iter().map(|u| u.devices.len()).sum();
    (0..setup.scenario.topology.gateways)
        .map(|gateway| {
            let slot = Arc::new(GatewaySlot {
                gateway,
                connection_timeout_ms: protocol.session_timeout_ms,
                connections_max: setup
                    .scenario
                    .topology
                    .gateway_connections_max
                    .unwrap_or(protocol.sessions_max),
                tick_ms: protocol.server_tick_ms,
                receivers: server_receivers(devices),
                shards: match logic {
                    LogicTier::Single(..) => None,
                    LogicTier::Sharded(sharded) => Some(sharded.hosts.clone()),
                },
            });
            let world = world.clone();
            handle
                .create_node()
                .name(format!("gateway-{gateway}"))
                .ip(gateway_ip(gateway))
                .init(move || run_gateway(world.clone(), slot.clone()))
                .build()
        })
        .collect()
}

fn start_devices(
    handle: &Handle,
    world: &Arc<World>,
    setup: &Setup,
) -> BTreeMap<DeviceId, NodeHandle> {
    let skews = schedule::clock_skews(&setup.faults);
    let gateways = setup.scenario.topology.gateways;
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
                failover: (gateways > 0).then(|| Failover::new(device.0, gateways)),
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
