//! Nodes: one madsim node for the server (the logic, in the cluster topology), one per gateway
//! and one per device, each a thin driver around a model
//! state machine. A node's loop waits for a packet, a timer, a storage sync or a workload command,
//! feeds it to the machine, then drains `poll_output` completely: packets go through the fault
//! layer onto madsim's network, events go into the history.
//!
//! Each node is one madsim task: its `Driver` polls the node's receives, sends and timers itself
//! (see `Driver`).

pub(crate) use crate::discovery::server_ip;
use crate::discovery::socket_of_role;
use crate::faults::layer::FaultLayer;
use crate::faults::placement::{Placements, HOLD_MS_MAX};
use crate::faults::{PlacementKind, Rule};
use crate::queue_shared::{QueueShared, DRAIN_POLL_MS};
use crate::runaway::{self, Work};
use crate::trace::{Link, NET};
use futures_util::stream::{FuturesUnordered, StreamExt};
use imsim_history::stats::PacketStats;
use imsim_history::{Entry, HarnessEvent, History, Node};
use imsim_model::cluster::{self, Failover, Gateway, Logic, Producer, QueueOutput, LOGIC_ADDRESS};
use imsim_model::{
    Address, Client, ClientMsgId, Command, ConvId, DeviceId, Directory, Event, Output, Packet,
    ProtocolConfig, Server, Time,
};
use madsim::net::Endpoint;
use madsim::time::{sleep_until, Duration, Instant, TimeHandle};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

const TAG: u64 = 0x1a5;
pub(crate) use crate::discovery::PORT;
/// Device clocks start this far after true zero, so a negative skew never goes below zero.
const CLOCK_BASE_MS: i64 = 1_000_000_000;
/// A storage sync takes between these many milliseconds: long enough that a crash can fall
/// between a write and its sync.
pub(crate) const SYNC_MS_MIN: u64 = 1;
pub(crate) const SYNC_MS_MAX: u64 = 5;

/// What every node of one run shares: the clock origin, the history and the fault layer.
pub(crate) struct World {
    start: Instant,
    /// madsim's clock, read directly: `Instant::now()` inside a simulation goes through madsim's
    /// `clock_gettime` override, which costs several times more and was a tenth of a run's time.
    clock: TimeHandle,
    /// The clock's reading at `start`.
    start_elapsed: Duration,
    history: Mutex<History>,
    faults: Mutex<FaultLayer>,
    /// Displays and sends so far, for the runaway guard.
    work: Mutex<Work>,
    devices: u64,
    /// The faults placed at sensitive moments, and where a placed crash is asked for (the
    /// controller's task, off the server's node, kills and restarts it; `None`: the profile
    /// places no crash).
    placements: Mutex<Placements>,
    crash_requests: Mutex<Option<tokio::sync::mpsc::UnboundedSender<u64>>>,
}

pub(crate) use crate::sync::lock;

impl World {
    pub(crate) fn new(
        rules: Vec<Rule>,
        rng: ChaCha8Rng,
        safety_end_ms: u64,
        devices: u64,
        placements: Placements,
        crash_requests: Option<tokio::sync::mpsc::UnboundedSender<u64>>,
    ) -> World {
        let start = Instant::now();
        crate::trace::set_run_start(start);
        let clock = TimeHandle::current();
        World {
            start,
            start_elapsed: clock.elapsed(),
            clock,
            history: Mutex::new(History::default()),
            faults: Mutex::new(FaultLayer::new(rules, rng, safety_end_ms)),
            work: Mutex::new(Work::default()),
            devices,
            placements: Mutex::new(placements),
            crash_requests: Mutex::new(crash_requests),
        }
    }

    /// The placement of `kind` that fires now, if one is armed (see `faults::placement`).
    fn place(&self, kind: PlacementKind) -> Option<u64> {
        let now_ms = self.now_ms();
        let placement = lock(&self.placements).fire(kind, now_ms)?;
        Some(placement.downtime_ms)
    }

    /// Records that a placement fired at `conv` and, for the kinds that crash it, has the
    /// server killed now and restarted after `downtime_ms`.
    fn placement_fired(&self, kind: PlacementKind, conv: ConvId, downtime_ms: u64) {
        self.record(
            Node::Harness,
            Entry::Harness(HarnessEvent::PlacementFired { kind, conv }),
        );
        if kind.crashes_server() {
            if let Some(requests) = &*lock(&self.crash_requests) {
                // The controller's task outlives every incarnation of the server.
                let _ = requests.send(downtime_ms);
            }
        }
    }

    /// Ends the task that plays placed crashes (its channel closes), so that it does not keep
    /// the world, and the run's memory, alive after the run.
    pub(crate) fn end_placed_crashes(&self) {
        lock(&self.crash_requests).take();
    }

    /// True simulated time since the start of the run, in milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        (self.clock.elapsed() - self.start_elapsed).as_millis() as u64
    }

    pub(crate) fn record(&self, node: Node, entry: Entry) {
        let now_ms = self.now_ms();
        crate::trace::log_entry(&entry);
        match &entry {
            Entry::Protocol(Event::Displayed { .. }) => lock(&self.work).displays += 1,
            Entry::Protocol(Event::SendRequested { .. }) => lock(&self.work).sends += 1,
            _ => {}
        }
        lock(&self.history).push(now_ms, node, entry);
    }

    pub(crate) fn take_history(&self) -> History {
        std::mem::take(&mut *lock(&self.history))
    }

    pub(crate) fn packet_stats(&self) -> PacketStats {
        lock(&self.faults).stats()
    }

    pub(crate) async fn sleep_until_ms(&self, at_ms: u64) {
        sleep_until(self.start + Duration::from_millis(at_ms)).await;
    }

    /// Passes a packet through the fault rules: how many copies to send, and after how long
    /// (`None`: dropped). `device` is the device end of the link.
    fn verdict(&self, device: DeviceId, to_server: bool, packet: &Packet) -> Option<(u32, u64)> {
        let now_ms = self.now_ms();
        let (verdict, sent) = {
            let mut faults = lock(&self.faults);
            let verdict = faults.judge(packet.kind(), device, to_server, now_ms);
            (verdict, faults.sent())
        };
        if sent % runaway::CHECK_EVERY_PACKETS == 0 {
            let work = *lock(&self.work);
            if let Err(message) = runaway::check(sent, work, self.devices, now_ms) {
                // Stops the run: the sweep reports the seed as failed, with its replay command.
                panic!("{message}");
            }
        }
        let link = Link { device, to_server };
        tracing::trace!(target: NET, "transmit {link} {verdict:?} {packet:?}");
        verdict.copies_and_delay_ms(now_ms)
    }

    /// The same for a packet on one of the queue's links (logic, queue, consumer).
    fn verdict_queue(&self, packet: &Packet) -> Option<(u32, u64)> {
        let now_ms = self.now_ms();
        let verdict = lock(&self.faults).judge_queue(packet.kind(), now_ms);
        tracing::trace!(target: NET, "transmit queue {verdict:?} {packet:?}");
        verdict.copies_and_delay_ms(now_ms)
    }

    /// The same for a packet between `gateway` and the logic, either way.
    fn verdict_internal(&self, gateway: u32, packet: &Packet) -> Option<(u32, u64)> {
        let now_ms = self.now_ms();
        let verdict = lock(&self.faults).judge_internal(packet.kind(), gateway, now_ms);
        tracing::trace!(target: NET, "transmit gateway-{gateway} {verdict:?} {packet:?}");
        verdict.copies_and_delay_ms(now_ms)
    }
}

pub(crate) fn device_ip(device: DeviceId) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, (device.0 >> 8) as u8, device.0 as u8))
}

/// Gateway number `gateway` (from 0) lives at 10.2.0.`gateway + 1`.
pub(crate) fn gateway_ip(gateway: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 2, 0, gateway as u8 + 1))
}

pub(crate) fn socket_of(address: Address) -> SocketAddr {
    if let Some(gateway) = cluster::gateway_of(address) {
        return SocketAddr::new(gateway_ip(gateway), PORT);
    }
    match address.0 {
        0 => SocketAddr::new(server_ip(), PORT),
        device => SocketAddr::new(device_ip(DeviceId(device)), PORT),
    }
}

fn address_of(socket: SocketAddr) -> Address {
    // Sharded logic: each shard's server has a port of its own on the node running it.
    if let (IpAddr::V4(ip), Some(shard)) = (socket.ip(), crate::discovery::shard_of_port(socket)) {
        if ip.octets()[1] == 0 {
            return cluster::shard_address(shard);
        }
    }
    match socket.ip() {
        IpAddr::V4(ip) if ip.octets()[1] == 1 => {
            Address(u32::from(ip.octets()[2]) << 8 | u32::from(ip.octets()[3]))
        }
        IpAddr::V4(ip) if ip.octets()[1] == 2 => {
            cluster::gateway_address(u32::from(ip.octets()[3]) - 1)
        }
        _ => Address(0),
    }
}

pub(crate) fn device_address(device: DeviceId) -> Address {
    Address(device.0)
}

/// What wakes a node's loop.
pub(crate) enum Input {
    Packet(Packet, Address),
    /// The machine's timer went off.
    Alarm,
    /// The workload command at this index of the device's plan is due.
    Command(usize),
    /// The storage sync up to this record finished.
    Synced(u64),
    /// The server's held membership change (a placement) waited long enough: it goes on.
    Release,
    /// Queue topology: the logic's producer timer (its resends) went off.
    ProducerAlarm,
}

/// Work a node has scheduled for a later time on its own queue.
pub(crate) enum Later {
    Command(usize),
    Synced(u64),
    /// A packet the fault layer delayed or held.
    Send(SocketAddr, Packet),
    Release,
    ProducerAlarm,
}

/// A receive loop (never finishes) or a send.
type Io = Pin<Box<dyn Future<Output = ()> + Send>>;
type Inbox = Arc<Mutex<VecDeque<(Packet, Address)>>>;

/// Receive loops per node (see `Driver::bind`): each takes in up to about a thousand datagrams
/// per simulated second. A device needs one; the server four per device, up to 256.
const DEVICE_RECEIVERS: usize = 1;

pub(crate) fn server_receivers(devices: usize) -> usize {
    (4 * devices).clamp(16, 256)
}

/// Everything a node waits on, driven by the node's one task: its endpoint's receives and sends,
/// the machine's timer and a queue of timed work. One task per node, rather than a task per
/// send, per timer and per receive loop (measured: 1.8x the packets per wall second of the
/// default scenario).
///
/// Nothing is polled that was not woken: the receives and sends sit in a `FuturesUnordered`, and
/// a madsim timer is registered once per distinct deadline (each poll of a pending madsim `Sleep`
/// registers another timer, and a loop that re-polled its sleeps on every packet once left
/// millions of dead timers behind).
pub(crate) struct Driver {
    world: Arc<World>,
    endpoint: Arc<Endpoint>,
    /// The sends in flight, and the receive loops, each putting what it takes in into `inbox`.
    /// madsim's `recv_from_raw` is not cancel-safe (a datagram can be lost if its future is
    /// dropped during the receive delay), so the loops only end with the node.
    io: FuturesUnordered<Io>,
    inbox: Inbox,
    /// The machine's timer (true ms): each `ArmTimer` replaces the previous one.
    alarm_ms: Option<u64>,
    /// Timed work by (true ms, order of scheduling).
    later: BTreeMap<(u64, u64), Later>,
    scheduled: u64,
    /// Deadlines a madsim timer will wake this task for.
    registered: BTreeSet<u64>,
    /// Timed inputs handed out at the current instant of simulated time.
    due: DueAtInstant,
}

/// Counts timed inputs at one instant of simulated time.
#[derive(Default)]
struct DueAtInstant {
    at_ms: u64,
    count: u32,
}

impl DueAtInstant {
    /// Counts one at `now_ms`; false once more than `max` came at one instant.
    fn count(&mut self, now_ms: u64, max: u32) -> bool {
        if self.at_ms != now_ms {
            (self.at_ms, self.count) = (now_ms, 0);
        }
        self.count += 1;
        self.count <= max
    }
}

/// Timed inputs one node may take at a single instant before the driver calls it a livelock: a
/// machine that keeps arming its timer at or before now would otherwise hang the simulation.
const DUE_AT_ONE_INSTANT_MAX: u32 = 100_000;

impl Driver {
    /// Binds the node's address and starts `receivers` receives.
    ///
    /// madsim's `recv_from_raw` sleeps a few microseconds per datagram, and madsim's timers have
    /// millisecond granularity, so one receive takes in at most about 1,000 datagrams per
    /// simulated second. A server in front of thousands of devices needs many, or the harness
    /// itself, not the protocol, would congest it (seen: a 10,000-member group collapsing into
    /// timeouts and retries with no fault injected).
    pub(crate) async fn bind(world: Arc<World>, ip: IpAddr, receivers: usize) -> Driver {
        Driver::bind_at(world, SocketAddr::new(ip, PORT), receivers).await
    }

    /// The same at any port (a logic shard's server has its own).
    pub(crate) async fn bind_at(world: Arc<World>, socket: SocketAddr, receivers: usize) -> Driver {
        // Binding a fresh node's own address cannot fail: each node (each shard's server on a
        // logic node) binds once per incarnation.
        let endpoint = Arc::new(Endpoint::bind(socket).await.expect("bind node address"));
        let driver = Driver {
            world,
            endpoint,
            io: FuturesUnordered::new(),
            inbox: Inbox::default(),
            alarm_ms: None,
            later: BTreeMap::new(),
            scheduled: 0,
            registered: BTreeSet::new(),
            due: DueAtInstant::default(),
        };
        for _ in 0..receivers {
            let (endpoint, inbox) = (driver.endpoint.clone(), driver.inbox.clone());
            driver.io.push(Box::pin(async move {
                // The network fails a receive only while madsim kills the node.
                while let Ok((payload, from)) = endpoint.recv_from_raw(TAG).await {
                    if let Ok(packet) = payload.downcast::<Packet>() {
                        lock(&inbox).push_back((*packet, address_of(from)));
                    }
                }
            }));
        }
        driver
    }

    fn send(&mut self, to: SocketAddr, packet: Packet) {
        let endpoint = self.endpoint.clone();
        self.io.push(Box::pin(async move {
            // A send fails only when the node is being killed; the packet is then lost, like a
            // packet in a dying process's socket buffer.
            let _ = endpoint.send_to_raw(to, TAG, Box::new(packet)).await;
        }));
    }

    /// Sends `packet` through the fault layer; `device` is the device end of the link.
    fn transmit(&mut self, device: DeviceId, to_server: bool, to: SocketAddr, packet: Packet) {
        let verdict = self.world.verdict(device, to_server, &packet);
        self.send_judged(verdict, to, packet);
    }

    /// Sends `packet` between `gateway` and the logic through the fault layer.
    pub(crate) fn transmit_internal(&mut self, gateway: u32, to: SocketAddr, packet: Packet) {
        let verdict = self.world.verdict_internal(gateway, &packet);
        self.send_judged(verdict, to, packet);
    }

    /// Sends `packet` on one of the queue's links through the fault layer.
    pub(crate) fn transmit_queue(&mut self, to: SocketAddr, packet: Packet) {
        let verdict = self.world.verdict_queue(&packet);
        self.send_judged(verdict, to, packet);
    }

    /// Sends what the fault layer's verdict says: nothing when dropped, else `copies` of the
    /// packet after the delay.
    fn send_judged(&mut self, verdict: Option<(u32, u64)>, to: SocketAddr, packet: Packet) {
        let Some((copies, delay_ms)) = verdict else {
            return;
        };
        for _ in 1..copies {
            self.send_after(delay_ms, to, packet.clone());
        }
        self.send_after(delay_ms, to, packet);
    }

    fn send_after(&mut self, delay_ms: u64, to: SocketAddr, packet: Packet) {
        if delay_ms == 0 {
            self.send(to, packet);
        } else {
            self.schedule(self.world.now_ms() + delay_ms, Later::Send(to, packet));
        }
    }

    pub(crate) fn arm(&mut self, at_ms: u64) {
        self.alarm_ms = Some(at_ms);
    }

    pub(crate) fn schedule(&mut self, at_ms: u64, work: Later) {
        self.scheduled += 1;
        self.later.insert((at_ms, self.scheduled), work);
    }

    /// Counts a timed input at `now_ms` and stops the run if the node takes them forever without
    /// simulated time moving.
    fn count_due(&mut self, now_ms: u64) {
        assert!(
            self.due.count(now_ms, DUE_AT_ONE_INSTANT_MAX),
            "timer livelock at {now_ms} ms: the node took {DUE_AT_ONE_INSTANT_MAX} timed inputs \
             without simulated time moving (its machine keeps arming a timer at or before now)"
        );
    }

    /// Waits for the next input, sending what is due meanwhile.
    pub(crate) async fn next(&mut self) -> Input {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Input> {
        loop {
            // A finished send carries nothing back, and the receive loops never finish: they
            // move datagrams into the inbox.
            while let Poll::Ready(Some(())) = self.io.poll_next_unpin(cx) {}
            if let Some((packet, from)) = lock(&self.inbox).pop_front() {
                return Poll::Ready(Input::Packet(packet, from));
            }
            let queued = self.later.first_key_value().map(|(&(at_ms, _), _)| at_ms);
            let Some(next_ms) = queued.into_iter().chain(self.alarm_ms).min() else {
                return Poll::Pending;
            };
            let now_ms = self.world.now_ms();
            if next_ms <= now_ms {
                self.count_due(now_ms);
                if queued != Some(next_ms) {
                    self.alarm_ms = None;
                    return Poll::Ready(Input::Alarm);
                }
                match self.later.pop_first().map(|(_, work)| work) {
                    Some(Later::Command(index)) => return Poll::Ready(Input::Command(index)),
                    Some(Later::Synced(through)) => return Poll::Ready(Input::Synced(through)),
                    Some(Later::Send(to, packet)) => self.send(to, packet),
                    Some(Later::Release) => return Poll::Ready(Input::Release),
                    Some(Later::ProducerAlarm) => return Poll::Ready(Input::ProducerAlarm),
                    None => {}
                }
                continue;
            }
            while self
                .registered
                .first()
                .is_some_and(|&at_ms| at_ms <= now_ms)
            {
                self.registered.pop_first();
            }
            if !self.registered.insert(next_ms) {
                return Poll::Pending;
            }
            let deadline = self.world.start + Duration::from_millis(next_ms);
            let mut timer = self.world.clock.sleep_until(deadline);
            if Pin::new(&mut timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.registered.remove(&next_ms);
        }
    }
}

/// The server's slot outlives its node's incarnations: a crash drops the node's tasks, and the
/// restarted node recovers a new `Server` from the old one's storage.
pub(crate) struct ServerSlot {
    pub server: Server,
    pub config: ProtocolConfig,
    pub directory: Directory,
    /// Receive loops the server's node runs.
    pub receivers: usize,
    pub started: bool,
    /// Cluster topology: the server is the logic node behind gateways, and this routes its
    /// packets through the session registry. `None`: devices talk to the server directly.
    pub logic: Option<Logic>,
    /// Queue topology: the logic's producer and the queue it enqueues into. `None`: the server
    /// syncs its own storage.
    pub queue: Option<(Producer, Arc<QueueShared>)>,
}

impl ServerSlot {
    fn poll_output(&mut self) -> Option<Output> {
        match &mut self.logic {
            Some(logic) => logic.poll_output(),
            None => self.server.poll_output(),
        }
    }

    fn handle(&mut self, now: Time, input: Input) {
        let ServerSlot { server, logic, .. } = self;
        match (logic, input) {
            (None, Input::Packet(packet, from)) => server.handle_packet(now, from, packet),
            (None, Input::Synced(through)) => server.handle_storage_synced(now, through),
            (None, Input::Alarm) => server.handle_timeout(now),
            (Some(logic), Input::Packet(packet, from)) => {
                logic.handle_packet(server, now, from, packet)
            }
            (Some(logic), Input::Synced(through)) => {
                logic.handle_storage_synced(server, now, through)
            }
            (Some(logic), Input::Alarm) => logic.handle_timeout(server, now),
            (_, Input::Command(_) | Input::Release | Input::ProducerAlarm) => {}
        }
    }
}

pub(crate) async fn run_server(world: Arc<World>, slot: Arc<Mutex<ServerSlot>>) {
    let restarting = lock(&slot).started;
    let queue = lock(&slot).queue.as_ref().map(|(_, shared)| shared.clone());
    // Asked once: without a queue, the per-input path takes no extra lock.
    let with_queue = queue.is_some();
    let queue = queue.filter(|_| restarting);
    if let Some(shared) = &queue {
        // Queue topology: what the queue accepted will be stored; until it is, a server that
        // read the store back would hand out its offsets and seqs again. So the restart fences
        // the crashed server's enqueues still in flight, then waits for the queue to drain
        // (while the consumer is down, it waits for it too).
        shared.fence(lock(&slot).server.incarnation() + 1);
        while !shared.drained() {
            madsim::time::sleep(Duration::from_millis(DRAIN_POLL_MS)).await;
        }
    }
    {
        let mut slot = lock(&slot);
        if slot.started && slot.queue.is_none() {
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
            // The registry was the crashed node's memory, like the sessions.
            slot.logic = slot.logic.as_ref().map(|old| old.restarted(&slot.config));
        }
        slot.started = true;
    }
    let receivers = lock(&slot).receivers;
    let mut driver = Driver::bind(world.clone(), server_ip(), receivers).await;
    if let Some(shared) = &queue {
        // After the last await before the loop: what the recovery publishes is recorded by the
        // loop's first drain, so a crash cannot fall in between and lose it.
        recover_from_queue(&world, &mut lock(&slot), shared);
    }
    // Placements (`faults::placement`): the conversation of the send just handled, whose write
    // a sync asked for now would cover; a placed crash to ask for once the outputs are out; a
    // membership change held for a sync of its group.
    let mut handled: Option<ConvId> = None;
    let mut crash: Option<(PlacementKind, ConvId, u64)> = None;
    let mut held = Held::default();
    loop {
        let outputs: Vec<Output> = std::iter::from_fn(|| lock(&slot).poll_output()).collect();
        for output in outputs {
            match output {
                Output::Transmit { to, packet } => match cluster::gateway_of(to) {
                    Some(gateway) => driver.transmit_internal(gateway, socket_of(to), packet),
                    None => driver.transmit(DeviceId(to.0), false, socket_of(to), packet),
                },
                Output::ArmTimer { at } => driver.arm(at.0),
                Output::SyncStorage { through } => {
                    let queued = enqueue(&world, &mut lock(&slot), &mut driver, through);
                    if !queued {
                        // madsim's generator, not rand's: madsim seeds it from the run seed
                        // (`Setup::new`), so sync latencies replay like everything else.
                        let sync_ms =
                            madsim::rand::thread_rng().gen_range(SYNC_MS_MIN..=SYNC_MS_MAX);
                        driver.schedule(world.now_ms() + sync_ms, Later::Synced(through));
                    }
                    if let Some(conv) = handled {
                        let kind = PlacementKind::CrashInSyncWindow;
                        if crash.is_none() {
                            crash = world.place(kind).map(|downtime| (kind, conv, downtime));
                        }
                        if held.send.is_some_and(|(held_conv, ..)| held_conv == conv) {
                            let kind = PlacementKind::MembershipInSyncWindow;
                            world.placement_fired(kind, conv, 0);
                            held.release(&driver.inbox);
                        }
                    }
                }
                Output::Event(event) => world.record(Node::Server, Entry::Protocol(event)),
            }
        }
        if let Some((kind, conv, downtime_ms)) = crash.take() {
            world.placement_fired(kind, conv, downtime_ms);
        }
        let input = driver.next().await;
        let now = Time(world.now_ms());
        handled = None;
        // (Bound first: a guard in the `if let` would live through its block.)
        let for_producer = if with_queue {
            queue_input(&mut lock(&slot), now, &input)
        } else {
            None
        };
        if let Some(input) = for_producer {
            lock(&slot).handle(now, input);
            flush_producer(&mut lock(&slot), &mut driver);
            continue;
        }
        if let Input::Packet(packet, from) = &input {
            tracing::trace!(target: NET, "receive from {from} {packet:?}");
            if let Some(send) = SendOf::of(packet, *from) {
                if held.holds(&send) {
                    held.packets.push((packet.clone(), *from));
                    continue;
                }
                let membership = PlacementKind::MembershipInSyncWindow;
                if send.change && held.send.is_none() && world.place(membership).is_some() {
                    held.hold(send, packet.clone(), *from);
                    driver.schedule(now.0 + HOLD_MS_MAX, Later::Release);
                    continue;
                }
                handled = Some(send.conv);
                let kind = PlacementKind::DuplicateBeforeCrash;
                if let Some(downtime_ms) = world.place(kind) {
                    // The copy arrives back to back with the original; the crash follows
                    // before their write is synced.
                    lock(&slot).handle(now, Input::Packet(packet.clone(), *from));
                    crash = Some((kind, send.conv, downtime_ms));
                }
            }
        }
        if let Input::Release = input {
            // No sync of the group came in time: the change goes on, unplaced.
            held.release(&driver.inbox);
            continue;
        }
        lock(&slot).handle(now, input);
    }
}

/// Queue topology: the logic enqueues the records a sync through `through` covers, instead of
/// syncing its own storage; false without a queue.
fn enqueue(world: &World, slot: &mut ServerSlot, driver: &mut Driver, through: u64) -> bool {
    let ServerSlot { server, queue, .. } = slot;
    let Some((producer, _)) = queue else {
        return false;
    };
    producer.handle_sync_requested(Time(world.now_ms()), server.storage(), through);
    flush_producer(slot, driver);
    true
}

/// Sends what the producer asks to the queue; its timer goes on the driver's own queue of
/// timed work (the node's one timer is the server's).
fn flush_producer(slot: &mut ServerSlot, driver: &mut Driver) {
    let Some((producer, _)) = &mut slot.queue else {
        return;
    };
    while let Some(output) = producer.poll_output() {
        match output {
            QueueOutput::Transmit { to, packet } => {
                driver.transmit_queue(socket_of_role(to), packet)
            }
            QueueOutput::ArmTimer { at } => driver.schedule(at.0, Later::ProducerAlarm),
            QueueOutput::SyncStorage { .. } | QueueOutput::Note(_) => {}
        }
    }
}

/// Queue topology: the producer's part of an input. `Stored` becomes the server's sync (when
/// it moves the durable point); the producer's timer resends. `None`: not the producer's.
fn queue_input(slot: &mut ServerSlot, now: Time, input: &Input) -> Option<Input> {
    let (producer, _) = slot.queue.as_mut()?;
    match input {
        Input::Packet(Packet::Stored { through }, _) => {
            Some(match producer.handle_stored(now, *through) {
                Some(through) => Input::Synced(through),
                None => Input::ProducerAlarm,
            })
        }
        Input::ProducerAlarm => {
            producer.handle_timeout(now);
            Some(Input::ProducerAlarm)
        }
        _ => None,
    }
}

/// Queue topology: a restarted server reads the consumer's store back (the queue has drained,
/// so it holds everything the queue accepted). What the crashed server wrote and the queue
/// never accepted is lost, like unsynced writes.
fn recover_from_queue(world: &World, slot: &mut ServerSlot, shared: &QueueShared) {
    let incarnation = slot.server.incarnation() + 1;
    // The fence first: an enqueue of the crashed server still in flight is refused from now on.
    let accepted = shared.fence(incarnation) as usize;
    let durable = shared.durable_records();
    let old = slot.server.storage();
    // Offsets are log positions: the crashed server had heard `Stored` up to `published`; the
    // queue accepted up to `accepted`, all of it in the consumer's store now. (Bounded by the
    // store's length, which only a non-idempotent consumer makes differ.)
    let accepted = accepted.min(durable.len());
    let published = (old.synced() as usize).min(accepted);
    let mut storage = imsim_model::Storage::new();
    for record in &durable[..published] {
        storage.append(record.clone());
    }
    storage.sync(storage.written());
    let written: Vec<_> = old
        .durable()
        .iter()
        .chain(old.unsynced())
        .cloned()
        .collect();
    for record in written.into_iter().skip(accepted) {
        storage.append(record);
    }
    let now = Time(world.now_ms());
    let directory = slot.directory.clone();
    slot.server = Server::recover(slot.config.clone(), directory, &storage, incarnation, now);
    slot.server
        .handle_recovered_stored(now, &durable[published..accepted]);
    slot.logic = slot.logic.as_ref().map(|old| old.restarted(&slot.config));
    let stored = slot.server.storage().written();
    if let Some((producer, _)) = &mut slot.queue {
        *producer = Producer::new(stored, incarnation);
    }
    slot.started = true;
}

/// What a placement needs of a send: whose it is, its conversation, whether it changes members.
#[derive(Clone, Copy, PartialEq)]
struct SendOf {
    /// The device's address (inside an `Upstream` packet in the cluster topology).
    device: Address,
    conv: ConvId,
    client_msg_id: ClientMsgId,
    change: bool,
}

impl SendOf {
    /// `from`: the sender of the packet, a device or (in the cluster topology) a gateway.
    fn of(packet: &Packet, from: Address) -> Option<SendOf> {
        match packet {
            Packet::Upstream { device, packet } => SendOf::of(packet, *device),
            Packet::Send {
                conv,
                client_msg_id,
                change,
                ..
            } => Some(SendOf {
                device: from,
                conv: *conv,
                client_msg_id: *client_msg_id,
                change: change.is_some(),
            }),
            _ => None,
        }
    }
}

/// A membership change the server's driver holds back (the membership placement) until a send
/// of its group asks for a storage sync, with the device's retransmissions of it.
#[derive(Default)]
struct Held {
    /// The held send: its conversation, device and message id.
    send: Option<(ConvId, Address, ClientMsgId)>,
    packets: Vec<(Packet, Address)>,
}

impl Held {
    fn hold(&mut self, send: SendOf, packet: Packet, from: Address) {
        self.send = Some((send.conv, send.device, send.client_msg_id));
        self.packets.push((packet, from));
    }

    /// A copy of the held send: a retransmission, or a duplicate.
    fn holds(&self, send: &SendOf) -> bool {
        self.send == Some((send.conv, send.device, send.client_msg_id))
    }

    /// Hands the held packets to the server next, ahead of anything else in the inbox.
    fn release(&mut self, inbox: &Inbox) {
        let mut inbox = lock(inbox);
        for packet in self.packets.drain(..).rev() {
            inbox.push_front(packet);
        }
        *self = Held::default();
    }
}

/// A gateway's slot: its number and the settings a restarted gateway starts from. The gateway
/// itself is lost with its node: a restart starts with no connections.
pub(crate) struct GatewaySlot {
    pub gateway: u32,
    pub connection_timeout_ms: u64,
    pub connections_max: u32,
    pub tick_ms: u64,
    pub receivers: usize,
    /// Sharded logic: where each shard runs. `None`: the single logic.
    pub shards: Option<Arc<crate::discovery::ShardHosts>>,
}

pub(crate) async fn run_gateway(world: Arc<World>, slot: Arc<GatewaySlot>) {
    let shards = slot.shards.as_ref().map_or(1, |hosts| hosts.shards());
    let mut machine = Gateway::new(
        slot.connection_timeout_ms,
        slot.connections_max,
        slot.tick_ms,
    )
    .with_shards(shards);
    let gateway = slot.gateway;
    let mut driver = Driver::bind(world.clone(), gateway_ip(gateway), slot.receivers).await;
    loop {
        while let Some(output) = machine.poll_output() {
            match output {
                Output::Transmit { to, packet } if cluster::shard_at(to).is_some() => {
                    let socket = match &slot.shards {
                        None => Some(socket_of(LOGIC_ADDRESS)),
                        Some(hosts) => hosts.socket_of(to),
                    };
                    // A shard that no node runs right now: lost, like a packet to a dead node.
                    if let Some(socket) = socket {
                        driver.transmit_internal(gateway, socket, packet);
                    }
                }
                Output::Transmit { to, packet } => {
                    driver.transmit(DeviceId(to.0), false, socket_of(to), packet);
                }
                Output::ArmTimer { at } => driver.arm(at.0),
                // A gateway reports no events and keeps no storage.
                Output::Event(_) | Output::SyncStorage { .. } => {}
            }
        }
        let input = driver.next().await;
        let now = Time(world.now_ms());
        match input {
            Input::Packet(packet, from) => {
                tracing::trace!(target: NET, "gateway-{gateway} receive from {from} {packet:?}");
                machine.handle_packet(now, from, packet);
            }
            Input::Alarm => machine.handle_timeout(now),
            Input::Command(_) | Input::Synced(_) | Input::Release | Input::ProducerAlarm => {}
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
    /// Cluster topology: which gateway the device talks to. `None`: the server directly.
    pub failover: Option<Failover>,
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
    let (device, plan) = {
        let mut slot = lock(&slot);
        if slot.started {
            slot.restart(world.now_ms());
        }
        slot.started = true;
        let plan: Vec<(usize, u64)> = (slot.next_command..slot.plan.len())
            .map(|index| (index, slot.plan[index].0))
            .collect();
        (slot.device, plan)
    };
    let mut driver = Driver::bind(world.clone(), device_ip(device), DEVICE_RECEIVERS).await;
    // The user's plan: each command is handed to the loop when due.
    for (index, at_ms) in plan {
        driver.schedule(at_ms, Later::Command(index));
    }
    let server = socket_of(Address(0));
    loop {
        let outputs: Vec<Output> = {
            let mut slot = lock(&slot);
            let outputs: Vec<Output> = std::iter::from_fn(|| slot.client.poll_output()).collect();
            for output in &outputs {
                if let Output::ArmTimer { at } = output {
                    driver.arm(slot.true_ms(*at));
                }
            }
            outputs
        };
        for output in outputs {
            match output {
                Output::Transmit { packet, .. } => {
                    let routed = lock(&slot)
                        .failover
                        .as_mut()
                        .map(|failover| failover.handle_outgoing(&packet));
                    match routed {
                        None => driver.transmit(device, true, server, packet),
                        Some((gateway, failed_over)) => {
                            if let Some(event) = failed_over {
                                world.record(Node::Device(device), Entry::Protocol(event));
                            }
                            driver.transmit(device, true, socket_of(gateway), packet);
                        }
                    }
                }
                Output::Event(event) => {
                    if let Some(failover) = lock(&slot).failover.as_mut() {
                        failover.handle_event(&event);
                    }
                    world.record(Node::Device(device), Entry::Protocol(event))
                }
                Output::ArmTimer { .. } | Output::SyncStorage { .. } => {}
            }
        }
        let input = driver.next().await;
        let mut slot = lock(&slot);
        let now = slot.local(world.now_ms());
        match input {
            Input::Packet(packet, from) => {
                tracing::trace!(target: NET, "receive from {from} {packet:?}");
                match slot.failover.as_mut() {
                    None => slot.client.handle_packet(now, from, packet),
                    // Through its gateway the device hears the server.
                    Some(failover) => {
                        if failover.handle_incoming(from, &packet) {
                            slot.client.handle_packet(now, LOGIC_ADDRESS, packet);
                        }
                    }
                }
            }
            Input::Alarm => slot.client.handle_timeout(now),
            Input::Command(index) if index == slot.next_command => {
                slot.next_command += 1;
                let command = slot.plan[index].1.clone();
                slot.client.handle_command(now, command);
            }
            Input::Command(_) | Input::Synced(_) | Input::Release | Input::ProducerAlarm => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DueAtInstant;

    #[test]
    fn timed_inputs_are_limited_per_instant_not_in_total() {
        let mut due = DueAtInstant::default();
        assert!(due.count(5, 2) && due.count(5, 2));
        assert!(
            !due.count(5, 2),
            "a third at the same instant is one too many"
        );
        assert!(
            due.count(6, 2) && due.count(6, 2),
            "time moved: the count starts again"
        );
    }
}
