//! A tiny deterministic network for protocol tests: one [`Server`] at `Address(0)`, device `d` at
//! `Address(d)`, one virtual clock and a queue of packets in flight that the test controls. No
//! madsim, async, threads or randomness. Links take no time; only timers move the clock. When a
//! packet leaves the queue, the first rule that matches it (in the order they were added) decides
//! its fate, like the simulator's fault layer. Storage syncs complete at once unless `hold_syncs`
//! is set, so a test can crash the server between a write and its sync.

// Shared by several test binaries; each uses only part of it.
#![allow(dead_code)]

use imsim_model::{
    Address, Client, Command, ConvId, DeviceId, DeviceIdentity, Directory, Event, Output, Packet,
    ProtocolConfig, Server, Time, UserId,
};
use std::collections::{BTreeMap, VecDeque};

pub const SERVER: Address = Address(0);

/// A packet on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flight {
    pub from: Address,
    pub to: Address,
    pub packet: Packet,
}

/// What became of a packet that left the queue: a rule's verdict, or `Delivered`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Dropped,
    /// Delivered, and a copy put first in the queue.
    Duplicated,
    Held,
}

type Matcher = Box<dyn Fn(&Flight) -> bool>;

struct Rule {
    fate: Fate,
    /// Packets it still applies to; `None` means until `clear_rules`.
    remaining: Option<u32>,
    matches: Matcher,
}

pub struct Net {
    pub now: Time,
    pub config: ProtocolConfig,
    pub server: Server,
    /// Device `d` is `clients[d - 1]`.
    pub clients: Vec<Client>,
    pub queue: VecDeque<Flight>,
    /// Packets stopped by a hold rule, in arrival order, until `release_held`.
    pub held: Vec<Flight>,
    /// Requested syncs (`through`) not yet completed.
    pub syncs: VecDeque<u64>,
    pub hold_syncs: bool,
    /// Every packet that left the queue, when, and what became of it.
    pub log: Vec<(Time, Flight, Fate)>,
    /// Every event, per node, stamped with the time it was drained.
    pub events: BTreeMap<Address, Vec<(Time, Event)>>,
    rules: Vec<Rule>,
    timers: BTreeMap<Address, Time>,
}

impl Net {
    /// `owners[d - 1]` owns device `d`, whose token is `1000 + d`; `members` lists each
    /// conversation's users. Nobody is online yet.
    pub fn new(config: ProtocolConfig, owners: &[UserId], members: &[(ConvId, &[UserId])]) -> Net {
        Net::with_groups(config, owners, members, &[])
    }

    /// As `new`, plus groups (conversations whose members change through the timeline).
    pub fn with_groups(
        config: ProtocolConfig,
        owners: &[UserId],
        members: &[(ConvId, &[UserId])],
        groups: &[(ConvId, &[UserId])],
    ) -> Net {
        config.validate().expect("test config is valid");
        let mut directory = Directory::new();
        let mut clients = Vec::new();
        for (d, user) in (1..).zip(owners.iter().copied()) {
            let (device, token) = (DeviceId(d), 1000 + u64::from(d));
            directory.add_device(user, device, token);
            let identity = DeviceIdentity {
                user,
                device,
                token,
                server: SERVER,
            };
            clients.push(Client::new(config.clone(), identity));
        }
        for (conv, users) in members {
            directory.add_conversation(*conv, users.to_vec());
        }
        for (conv, users) in groups {
            directory.add_group(*conv, users.to_vec());
        }
        let mut net = Net {
            now: Time(0),
            server: Server::new(config.clone(), directory, Time(0)),
            config,
            clients,
            queue: VecDeque::new(),
            held: Vec::new(),
            syncs: VecDeque::new(),
            hold_syncs: false,
            log: Vec::new(),
            events: BTreeMap::new(),
            rules: Vec::new(),
            timers: BTreeMap::new(),
        };
        net.drain(SERVER);
        net
    }

    pub fn client(&self, d: u32) -> &Client {
        &self.clients[d as usize - 1]
    }

    // ---- inputs ----

    pub fn command(&mut self, d: u32, command: Command) {
        self.clients[d as usize - 1].handle_command(self.now, command);
        self.drain(Address(d));
    }

    pub fn send(&mut self, d: u32, conv: ConvId, body: &str) {
        let body = body.to_string();
        self.command(d, Command::Send { conv, body });
    }

    /// Puts a hand-made packet on the wire, as if `from` had sent it.
    pub fn inject(&mut self, from: Address, to: Address, packet: Packet) {
        self.queue.push_back(Flight { from, to, packet });
    }

    /// The server crashes and restarts at once: unsynced writes and pending syncs are lost.
    pub fn crash_server(&mut self) {
        let incarnation = self.server.incarnation() + 1;
        let (config, directory) = (self.config.clone(), self.server.directory().clone());
        let storage = self.server.storage();
        self.server = Server::recover(config, directory, storage, incarnation, self.now);
        self.syncs.clear();
        self.timers.remove(&SERVER);
        self.drain(SERVER);
    }

    /// The app on device `d` is killed and started again.
    pub fn restart_client(&mut self, d: u32) {
        self.timers.remove(&Address(d));
        self.clients[d as usize - 1].restart(self.now);
        self.drain(Address(d));
    }

    // ---- faults: rules apply when a packet leaves the queue ----

    pub fn drop_next(&mut self, matches: impl Fn(&Flight) -> bool + 'static) {
        self.add_rule(Fate::Dropped, Some(1), Box::new(matches));
    }

    pub fn drop_all(&mut self, matches: impl Fn(&Flight) -> bool + 'static) {
        self.add_rule(Fate::Dropped, None, Box::new(matches));
    }

    pub fn duplicate_next(&mut self, matches: impl Fn(&Flight) -> bool + 'static) {
        self.add_rule(Fate::Duplicated, Some(1), Box::new(matches));
    }

    pub fn hold_all(&mut self, matches: impl Fn(&Flight) -> bool + 'static) {
        self.add_rule(Fate::Held, None, Box::new(matches));
    }

    pub fn clear_rules(&mut self) {
        self.rules.clear();
    }

    /// Hold rules end; held packets go back on the wire, in the order they were held.
    pub fn release_held(&mut self) {
        self.rules.retain(|rule| rule.fate != Fate::Held);
        self.queue.extend(self.held.drain(..));
    }

    /// Held syncs complete now, in order.
    pub fn release_syncs(&mut self) {
        while let Some(through) = self.syncs.pop_front() {
            self.server.handle_storage_synced(self.now, through);
            self.drain(SERVER);
        }
    }

    fn add_rule(&mut self, fate: Fate, remaining: Option<u32>, matches: Matcher) {
        let rule = Rule {
            fate,
            remaining,
            matches,
        };
        self.rules.push(rule);
    }

    // ---- running ----

    /// Takes the first queued packet matching `matches` out of turn; the rules still apply.
    pub fn deliver_first(&mut self, matches: impl Fn(&Flight) -> bool) -> bool {
        let position = self.queue.iter().position(matches);
        let flight = position.and_then(|position| self.queue.remove(position));
        flight.map(|flight| self.transfer(flight)).is_some()
    }

    /// Completes syncs, delivers packets and fires due timers until nothing is left to do at `now`.
    pub fn run_until_quiet(&mut self) {
        // Far more steps than any test needs; beyond it the machines are livelocked.
        for _ in 0..100_000 {
            if !self.hold_syncs && !self.syncs.is_empty() {
                self.release_syncs();
            } else if let Some(flight) = self.queue.pop_front() {
                self.transfer(flight);
            } else if let Some((&node, _)) = self.timers.iter().find(|(_, at)| **at <= self.now) {
                self.fire(node);
            } else {
                return;
            }
        }
        panic!("no quiet at {} ms: livelock", self.now.0);
    }

    /// Lets `ms` pass, firing each timer when it comes due.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now.plus_ms(ms);
        self.run_until_quiet();
        while let Some(at) = self.timers.values().copied().filter(|at| *at <= end).min() {
            self.now = self.now.max(at);
            self.run_until_quiet();
        }
        self.now = end;
        self.run_until_quiet();
    }

    fn transfer(&mut self, flight: Flight) {
        let mut fate = Fate::Delivered;
        if let Some(rule) = self.rules.iter_mut().find(|rule| (rule.matches)(&flight)) {
            fate = rule.fate;
            rule.remaining = rule.remaining.map(|remaining| remaining - 1);
        }
        self.rules.retain(|rule| rule.remaining != Some(0));
        self.log.push((self.now, flight.clone(), fate));
        match fate {
            Fate::Delivered => self.deliver(flight),
            Fate::Dropped => {}
            Fate::Duplicated => {
                self.queue.push_front(flight.clone());
                self.deliver(flight);
            }
            Fate::Held => self.held.push(flight),
        }
    }

    fn deliver(&mut self, Flight { from, to, packet }: Flight) {
        if to == SERVER {
            self.server.handle_packet(self.now, from, packet);
        } else if let Some(client) = self.clients.get_mut((to.0 as usize).wrapping_sub(1)) {
            client.handle_packet(self.now, from, packet);
        } else {
            return; // Nobody lives at that address; the log shows the packet.
        }
        self.drain(to);
    }

    fn fire(&mut self, node: Address) {
        self.timers.remove(&node);
        if node == SERVER {
            self.server.handle_timeout(self.now);
        } else {
            self.clients[node.0 as usize - 1].handle_timeout(self.now);
        }
        self.drain(node);
    }

    fn drain(&mut self, node: Address) {
        loop {
            let output = if node == SERVER {
                self.server.poll_output()
            } else {
                self.clients[node.0 as usize - 1].poll_output()
            };
            match output {
                None => return,
                Some(Output::Transmit { to, packet }) => self.inject(node, to, packet),
                Some(Output::ArmTimer { at }) => _ = self.timers.insert(node, at),
                Some(Output::SyncStorage { through }) => self.syncs.push_back(through),
                Some(Output::Event(event)) => {
                    self.events.entry(node).or_default().push((self.now, event));
                }
            }
        }
    }

    // ---- what happened ----

    pub fn events_of(&self, node: Address) -> impl Iterator<Item = &Event> + '_ {
        self.events.get(&node).into_iter().flatten().map(|(_, e)| e)
    }

    pub fn count(&self, node: Address, matches: impl Fn(&Event) -> bool) -> usize {
        self.events_of(node).filter(|e| matches(e)).count()
    }

    /// The packets that left the queue with `fate` and match, with the time they did.
    pub fn packets(&self, fate: Fate, matches: impl Fn(&Flight) -> bool) -> Vec<(Time, &Flight)> {
        let log = self.log.iter();
        let found = log.filter(|(_, flight, f)| *f == fate && matches(flight));
        found.map(|(at, flight, _)| (*at, flight)).collect()
    }
}
