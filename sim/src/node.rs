//! Nodes: one madsim node for the server and one per device, each a thin driver around a model
//! state machine. A node's loop waits for a packet, a timer, a storage sync or a workload command,
//! feeds it to the machine, then drains `poll_output` completely: packets go through the fault
//! layer onto madsim's network, events go into the history.
//!
//! madsim's `recv_from_raw` is not cancel-safe (a datagram can be lost if the future is dropped
//! during its receive delay), so each node has a receive task that forwards datagrams into a
//! channel, and the loop selects on the channel.

use crate::faults::{PacketMeta, Rule, Verdict};
use crate::history::{Entry, History, Node};
use crate::trace::{Link, NET};
use imsim_model::{
    Address, Client, Command, DeviceId, Directory, Output, Packet, ProtocolConfig, Server, Time,
};
use madsim::net::Endpoint;
use madsim::time::{sleep, sleep_until, Duration, Instant};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

const TAG: u64 = 0x1a5;
const PORT: u16 = 7000;
/// Device clocks start this far after true zero, so a negative skew never goes below zero.
const CLOCK_BASE_MS: i64 = 1_000_000_000;
/// A storage sync takes between these many milliseconds: long enough that a crash can fall
/// between a write and its sync.
const SYNC_MS_MIN: u64 = 1;
/// Receive tasks per node (see `bind`): the server takes in up to about this many thousand
/// datagrams per simulated second; a device needs few.
const SERVER_RECEIVERS: usize = 256;
const DEVICE_RECEIVERS: usize = 1;
const SYNC_MS_MAX: u64 = 5;

/// What every node of one run shares: the clock origin, the history and the fault layer.
pub(crate) struct World {
    start: Instant,
    history: Mutex<History>,
    faults: Mutex<FaultLayer>,
    /// Packet faults apply only before this time (the end of the safety phase).
    safety_end_ms: u64,
}

struct FaultLayer {
    rules: Vec<Rule>,
    rng: ChaCha8Rng,
    stats: PacketStats,
}

/// What the fault layer did to the run's packets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PacketStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub held: u64,
    /// Packets sent, by kind (`deliver`, `notify`, `pull` …).
    pub by_kind: BTreeMap<&'static str, u64>,
}

/// Locks a mutex. The simulation runs on one thread and no lock is held across an `await`, so
/// a lock is never contended and never poisoned unless a node already panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("a node panicked while holding a lock")
}

impl World {
    pub(crate) fn new(rules: Vec<Rule>, rng: ChaCha8Rng, safety_end_ms: u64) -> World {
        let start = Instant::now();
        crate::trace::set_run_start(start);
        World {
            start,
            history: Mutex::new(History::default()),
            faults: Mutex::new(FaultLayer {
                rules,
                rng,
                stats: PacketStats::default(),
            }),
            safety_end_ms,
        }
    }

    /// True simulated time since the start of the run, in milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(crate) fn record(&self, node: Node, entry: Entry) {
        let now_ms = self.now_ms();
        crate::trace::log_entry(&entry);
        lock(&self.history).push(now_ms, node, entry);
    }

    pub(crate) fn take_history(&self) -> History {
        std::mem::take(&mut *lock(&self.history))
    }

    pub(crate) fn packet_stats(&self) -> PacketStats {
        lock(&self.faults).stats.clone()
    }

    pub(crate) async fn sleep_until_ms(&self, at_ms: u64) {
        sleep_until(self.start + Duration::from_millis(at_ms)).await;
    }

    /// Sends `packet` through the fault rules; `device` is the device end of the link.
    fn transmit(
        &self,
        endpoint: &Arc<Endpoint>,
        device: DeviceId,
        to_server: bool,
        to: SocketAddr,
        packet: Packet,
    ) {
        let now_ms = self.now_ms();
        let verdict = {
            let mut faults = lock(&self.faults);
            faults.stats.sent += 1;
            *faults.stats.by_kind.entry(packet.kind()).or_default() += 1;
            let verdict = if now_ms < self.safety_end_ms {
                faults.verdict(device, to_server, now_ms)
            } else {
                Verdict::Pass
            };
            match verdict {
                Verdict::Pass => {}
                Verdict::Drop => faults.stats.dropped += 1,
                Verdict::Duplicate => faults.stats.duplicated += 1,
                Verdict::Delay(_) => faults.stats.delayed += 1,
                Verdict::Hold(_) => faults.stats.held += 1,
            }
            verdict
        };
        let link = Link { device, to_server };
        tracing::trace!(target: NET, "transmit {link} {verdict:?} {packet:?}");
        let (copies, delay_ms) = match verdict {
            Verdict::Pass => (1, 0),
            Verdict::Drop => return,
            Verdict::Duplicate => (2, 0),
            Verdict::Delay(delay_ms) => (1, delay_ms),
            Verdict::Hold(until_ms) => (1, until_ms.saturating_sub(now_ms)),
        };
        for _ in 0..copies {
            let endpoint = endpoint.clone();
            let packet = packet.clone();
            madsim::task::spawn(async move {
                if delay_ms > 0 {
                    sleep(Duration::from_millis(delay_ms)).await;
                }
                // A send fails only when the node is being killed; the packet is then lost,
                // like a packet in a dying process's socket buffer.
                let _ = endpoint.send_to_raw(to, TAG, Box::new(packet)).await;
            });
        }
    }
}

impl FaultLayer {
    fn verdict(&mut self, device: DeviceId, to_server: bool, now_ms: u64) -> Verdict {
        let meta = PacketMeta {
            device,
            to_server,
            now_ms,
        };
        let rng = &mut self.rng;
        let mut draw = || rng.gen::<f64>();
        self.rules
            .iter()
            .map(|rule| rule.verdict(&meta, &mut draw))
            .find(|v| *v != Verdict::Pass)
            .unwrap_or(Verdict::Pass)
    }
}

pub(crate) fn server_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
}

pub(crate) fn device_ip(device: DeviceId) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, (device.0 >> 8) as u8, device.0 as u8))
}

fn socket_of(address: Address) -> SocketAddr {
    match address.0 {
        0 => SocketAddr::new(server_ip(), PORT),
        device => SocketAddr::new(device_ip(DeviceId(device)), PORT),
    }
}

fn address_of(socket: SocketAddr) -> Address {
    match socket.ip() {
        IpAddr::V4(ip) if ip.octets()[1] == 1 => {
            Address(u32::from(ip.octets()[2]) << 8 | u32::from(ip.octets()[3]))
        }
        _ => Address(0),
    }
}

pub(crate) fn device_address(device: DeviceId) -> Address {
    Address(device.0)
}

/// Everything that can wake a node, in one channel: the node's loop awaits only this, so it
/// never re-polls sleeps (each poll of a pending madsim `Sleep` registers another timer, and a
/// loop that re-created its sleeps on every packet left millions of dead timers behind).
enum Input {
    Packet(Packet, Address),
    /// The alarm set for this time (true ms) went off.
    Alarm(u64),
    /// The workload command at this index of the device's plan is due.
    Command(usize),
    /// The storage sync up to this record finished.
    Synced(u64),
}

type Inputs = mpsc::UnboundedSender<Input>;

/// Binds the node's address and starts `receivers` receive tasks feeding the node's inputs.
///
/// madsim's `recv_from_raw` sleeps a few microseconds per datagram, and madsim's timers have
/// millisecond granularity, so one receive task takes in at most about 1,000 datagrams per
/// simulated second. A server in front of thousands of devices needs many receive tasks, or the
/// harness itself, not the protocol, would congest it (seen: a 10,000-member group collapsing
/// into timeouts and retries with no fault injected).
async fn bind(ip: IpAddr, receivers: usize, inputs: &Inputs) -> Arc<Endpoint> {
    // Binding a fresh node's own address cannot fail: each node binds once per incarnation.
    let endpoint = Arc::new(
        Endpoint::bind(SocketAddr::new(ip, PORT))
            .await
            .expect("bind node address"),
    );
    for _ in 0..receivers {
        let (receiving, inputs) = (endpoint.clone(), inputs.clone());
        madsim::task::spawn(async move {
            while let Ok((payload, from)) = receiving.recv_from_raw(TAG).await {
                if let Ok(packet) = payload.downcast::<Packet>() {
                    if inputs
                        .send(Input::Packet(*packet, address_of(from)))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
    }
    endpoint
}

/// The node's timer: one sleeper task per deadline that moves earlier. A later deadline waits
/// for the pending alarm; the machine, woken early, simply arms its timer again.
struct Alarm {
    world: Arc<World>,
    inputs: Inputs,
    pending_ms: Option<u64>,
}

impl Alarm {
    fn set(&mut self, at_ms: u64) {
        if self
            .pending_ms
            .is_some_and(|pending_ms| pending_ms <= at_ms)
        {
            return;
        }
        self.pending_ms = Some(at_ms);
        let (world, inputs) = (self.world.clone(), self.inputs.clone());
        madsim::task::spawn(async move {
            world.sleep_until_ms(at_ms).await;
            let _ = inputs.send(Input::Alarm(at_ms));
        });
    }

    /// Whether an alarm that went off is the pending one (a superseded one is ignored).
    fn went_off(&mut self, at_ms: u64) -> bool {
        let current = self.pending_ms == Some(at_ms);
        if current {
            self.pending_ms = None;
        }
        current
    }
}

/// The server's slot outlives its node's incarnations: a crash drops the node's tasks, and the
/// restarted node recovers a new `Server` from the old one's storage.
pub(crate) struct ServerSlot {
    pub server: Server,
    pub config: ProtocolConfig,
    pub directory: Directory,
    pub started: bool,
}

pub(crate) async fn run_server(world: Arc<World>, slot: Arc<Mutex<ServerSlot>>) {
    {
        let mut slot = lock(&slot);
        if slot.started {
            let now = Time(world.now_ms());
            let incarnation = slot.server.incarnation() + 1;
            let recovered = Server::recover(
                slot.config.clone(),
                slot.directory.clone(),
                slot.server.storage(),
                incarnation,
                now,
            );
            slot.server = recovered;
        }
        slot.started = true;
    }
    let (inputs, mut received) = mpsc::unbounded_channel();
    let endpoint = bind(server_ip(), SERVER_RECEIVERS, &inputs).await;
    let mut alarm = Alarm {
        world: world.clone(),
        inputs: inputs.clone(),
        pending_ms: None,
    };
    loop {
        let outputs: Vec<Output> =
            std::iter::from_fn(|| lock(&slot).server.poll_output()).collect();
        for output in outputs {
            match output {
                Output::Transmit { to, packet } => {
                    world.transmit(&endpoint, DeviceId(to.0), false, socket_of(to), packet);
                }
                Output::ArmTimer { at } => alarm.set(at.0),
                Output::SyncStorage { through } => {
                    let inputs = inputs.clone();
                    // madsim's generator, not rand's: madsim seeds it from the run seed
                    // (`Setup::new`), so sync latencies replay like everything else.
                    let sync_ms = madsim::rand::thread_rng().gen_range(SYNC_MS_MIN..=SYNC_MS_MAX);
                    madsim::task::spawn(async move {
                        sleep(Duration::from_millis(sync_ms)).await;
                        let _ = inputs.send(Input::Synced(through));
                    });
                }
                Output::Event(event) => world.record(Node::Server, Entry::Protocol(event)),
            }
        }
        // The node holds a sender itself, so the channel never closes while the node runs.
        let Some(input) = received.recv().await else {
            return;
        };
        let now = Time(world.now_ms());
        let mut slot = lock(&slot);
        match input {
            Input::Packet(packet, from) => {
                tracing::trace!(target: NET, "receive from {from} {packet:?}");
                slot.server.handle_packet(now, from, packet);
            }
            Input::Synced(through) => slot.server.handle_storage_synced(now, through),
            Input::Alarm(at_ms) if alarm.went_off(at_ms) => slot.server.handle_timeout(now),
            Input::Alarm(_) | Input::Command(_) => {}
        }
    }
}

/// A device's slot: the client (its local database survives a crash), the user's plan, and the
/// device's clock offset.
pub(crate) struct DeviceSlot {
    pub client: Client,
    pub device: DeviceId,
    /// (true ms, command), in time order.
    pub plan: Vec<(u64, Command)>,
    pub next_command: usize,
    pub skew_ms: i64,
    pub started: bool,
}

impl DeviceSlot {
    fn local(&self, true_ms: u64) -> Time {
        Time((true_ms as i64 + CLOCK_BASE_MS + self.skew_ms).max(0) as u64)
    }

    fn true_ms(&self, local: Time) -> u64 {
        (local.0 as i64 - CLOCK_BASE_MS - self.skew_ms).max(0) as u64
    }

    /// After an app restart: the sends and reads the user could not make while the app was dead
    /// are skipped; whether they wanted to be online still follows the plan.
    fn restart(&mut self, now_ms: u64) {
        let local = self.local(now_ms);
        self.client.restart(local);
        while self.next_command < self.plan.len() && self.plan[self.next_command].0 < now_ms {
            let command = self.plan[self.next_command].1.clone();
            self.next_command += 1;
            if matches!(command, Command::GoOnline | Command::GoOffline) {
                self.client.handle_command(local, command);
            }
        }
    }
}

pub(crate) async fn run_device(world: Arc<World>, slot: Arc<Mutex<DeviceSlot>>) {
    let (inputs, mut received) = mpsc::unbounded_channel();
    let (device, plan) = {
        let mut slot = lock(&slot);
        if slot.started {
            slot.restart(world.now_ms());
        }
        slot.started = true;
        let plan: Vec<u64> = slot.plan[slot.next_command..]
            .iter()
            .map(|(at_ms, _)| *at_ms)
            .collect();
        (slot.device, (slot.next_command, plan))
    };
    let endpoint = bind(device_ip(device), DEVICE_RECEIVERS, &inputs).await;
    play_plan(&world, &inputs, plan);
    let server = socket_of(Address(0));
    let mut alarm = Alarm {
        world: world.clone(),
        inputs: inputs.clone(),
        pending_ms: None,
    };
    loop {
        let outputs: Vec<Output> = {
            let mut slot = lock(&slot);
            let outputs: Vec<Output> = std::iter::from_fn(|| slot.client.poll_output()).collect();
            for output in &outputs {
                if let Output::ArmTimer { at } = output {
                    alarm.set(slot.true_ms(*at));
                }
            }
            outputs
        };
        for output in outputs {
            match output {
                Output::Transmit { packet, .. } => {
                    world.transmit(&endpoint, device, true, server, packet)
                }
                Output::Event(event) => world.record(Node::Device(device), Entry::Protocol(event)),
                Output::ArmTimer { .. } | Output::SyncStorage { .. } => {}
            }
        }
        let Some(input) = received.recv().await else {
            return;
        };
        let mut slot = lock(&slot);
        let now = slot.local(world.now_ms());
        match input {
            Input::Packet(packet, from) => {
                tracing::trace!(target: NET, "receive from {from} {packet:?}");
                slot.client.handle_packet(now, from, packet);
            }
            Input::Alarm(at_ms) if alarm.went_off(at_ms) => slot.client.handle_timeout(now),
            Input::Command(index) if index == slot.next_command => {
                slot.next_command += 1;
                let command = slot.plan[index].1.clone();
                slot.client.handle_command(now, command);
            }
            Input::Alarm(_) | Input::Command(_) | Input::Synced(_) => {}
        }
    }
}

/// The user's plan on a task of its own: one sleep per command, each sent to the loop when due.
fn play_plan(world: &Arc<World>, inputs: &Inputs, (first, times): (usize, Vec<u64>)) {
    if times.is_empty() {
        return;
    }
    let (world, inputs) = (world.clone(), inputs.clone());
    madsim::task::spawn(async move {
        for (offset, at_ms) in times.into_iter().enumerate() {
            world.sleep_until_ms(at_ms).await;
            if inputs.send(Input::Command(first + offset)).is_err() {
                return;
            }
        }
    });
}
