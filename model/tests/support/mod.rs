//! A tiny deterministic network for protocol tests: one [`Server`] at `Address(0)`, device `d` at
//! `Address(d)`, one virtual clock, and a queue of packets in flight that the test controls. No
//! madsim, async, threads or randomness: a test does the same thing on every run.
//!
//! Links take no time; only timers move the clock. When a packet leaves the queue, the rules are
//! checked in the order they were added and the first that matches decides its fate (drop,
//! duplicate or hold), like the simulator's fault layer. Storage syncs complete at once unless
//! `hold_syncs` is set, so a test can crash the server between a write and its sync.

// Each test binary that includes this module uses its own subset of the helpers.
#![allow(dead_code)]

use imsim_model::{
    Address, Client, Command, ConvId, DeviceId, DeviceIdentity, Directory, Event, Output, Packet,
    ProtocolConfig, Seq, Server, Time, UserId,
};
use std::collections::{BTreeMap, VecDeque};

pub const SERVER: Address = Address(0);

/// Steps `run_until_quiet` takes before it decides the machines are livelocked.
const QUIET_STEPS_MAX: usize = 100_000;

/// A packet on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flight {
    pub from: Address,
    pub to: Address,
    pub packet: Packet,
}

/// What became of a packet that left the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Dropped,
    Held,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Drop,
    Duplicate,
    Hold,
}

struct Rule {
    verdict: Verdict,
    /// Packets it still applies to; `None` means until `clear_rules`.
    remaining: Option<u32>,
    matches: Box<dyn Fn(&Flight) -> bool>,
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
    /// `device_users[d - 1]` owns device `d`; device `d`'s token is `1000 + d`. Nobody is online.
    pub fn new(
        config: ProtocolConfig,
        device_users: &[UserId],
        conversations: &[(ConvId, &[UserId])],
    ) -> Net {
        config.validate().expect("test config is valid");
        let mut directory = Directory::new();
        let mut clients = Vec::new();
        for (index, user) in device_users.iter().enumerate() {
            let d = index as u32 + 1;
            directory.add_device(*user, DeviceId(d), token(d));
            let identity = DeviceIdentity {
                user: *user,
                device: DeviceId(d),
                token: token(d),
                server: SERVER,
            };
            clients.push(Client::new(config.clone(), identity));
        }
        for (conv, members) in conversations {
            directory.add_conversation(*conv, members.to_vec());
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

    /// Users 1 and 2 with one device each (devices 1 and 2) and a 1:1 conversation `ConvId(1)`.
    pub fn one_to_one(config: ProtocolConfig) -> Net {
        let users = [UserId(1), UserId(2)];
        Net::new(config, &users, &[(ConvId(1), &users)])
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

    /// Every device goes online and logs in.
    pub fn go_online_all(&mut self) {
        for d in 1..=self.clients.len() as u32 {
            self.command(d, Command::GoOnline);
        }
        self.run_until_quiet();
    }

    /// Puts a hand-made packet on the wire, as if `from` had sent it.
    pub fn inject(&mut self, from: Address, to: Address, packet: Packet) {
        self.queue.push_back(Flight { from, to, packet });
    }

    /// The server crashes and restarts at once: unsynced writes and pending syncs are lost.
    pub fn crash_server(&mut self) {
        let incarnation = self.server.incarnation() + 1;
        let directory = self.server.directory().clone();
        let storage = self.server.storage();
        let server = Server::recover(
            self.config.clone(),
            directory,
            storage,
            incarnation,
            self.now,
        );
        self.server = server;
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
        self.add_rule(Verdict::Drop, Some(1), matches);
    }

    pub fn drop_all(&mut self, matches: impl Fn(&Flight) -> bool + 'static) {
        self.add_rule(Verdict::Drop, None, matches);
    }

    pub fn duplicate_next(&mut self, matches: impl Fn(&Flight) -> bool + 'static) {
        self.add_rule(Verdict::Duplicate, Some(1), matches);
    }

    pub fn hold_all(&mut self, matches: impl Fn(&Flight) -> bool + 'static) {
        self.add_rule(Verdict::Hold, None, matches);
    }

    pub fn clear_rules(&mut self) {
        self.rules.clear();
    }

    /// Held packets go back on the wire, in the order they were held.
    pub fn release_held(&mut self) {
        self.queue.extend(self.held.drain(..));
    }

    /// Held syncs complete now, in order.
    pub fn release_syncs(&mut self) {
        while let Some(through) = self.syncs.pop_front() {
            self.complete_sync(through);
        }
    }

    fn add_rule(
        &mut self,
        verdict: Verdict,
        remaining: Option<u32>,
        matches: impl Fn(&Flight) -> bool + 'static,
    ) {
        let matches = Box::new(matches);
        self.rules.push(Rule {
            verdict,
            remaining,
            matches,
        });
    }

    // ---- running ----

    /// Delivers the first queued packet matching `matches`, ahead of the others (explicit order).
    pub fn deliver_first(&mut self, matches: impl Fn(&Flight) -> bool) -> bool {
        let Some(position) = self.queue.iter().position(matches) else {
            return false;
        };
        let flight = self
            .queue
            .remove(position)
            .expect("position is in the queue");
        self.transfer(flight);
        true
    }

    /// Completes syncs, delivers packets and fires due timers until nothing is left to do at `now`.
    pub fn run_until_quiet(&mut self) {
        for _ in 0..QUIET_STEPS_MAX {
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
        panic!("no quiet after {QUIET_STEPS_MAX} steps at {}", self.now);
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
        let rule = self.rules.iter_mut().find(|rule| (rule.matches)(&flight));
        let verdict = rule.map(|rule| {
            if let Some(remaining) = &mut rule.remaining {
                *remaining -= 1;
            }
            rule.verdict
        });
        self.rules.retain(|rule| rule.remaining != Some(0));
        let fate = match verdict {
            Some(Verdict::Drop) => Fate::Dropped,
            Some(Verdict::Hold) => Fate::Held,
            Some(Verdict::Duplicate) | None => Fate::Delivered,
        };
        self.log.push((self.now, flight.clone(), fate));
        match verdict {
            Some(Verdict::Drop) => {}
            Some(Verdict::Hold) => self.held.push(flight),
            Some(Verdict::Duplicate) => {
                self.queue.push_front(flight.clone());
                self.deliver(flight);
            }
            None => self.deliver(flight),
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

    fn complete_sync(&mut self, through: u64) {
        self.server.handle_storage_synced(self.now, through);
        self.drain(SERVER);
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
                Some(Output::ArmTimer { at }) => {
                    self.timers.insert(node, at);
                }
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

    /// (seq, body) of every message device `d` displayed in `conv`, in display order.
    pub fn displayed(&self, d: u32, conv: ConvId) -> Vec<(u64, String)> {
        let displayed = self.events_of(Address(d)).filter_map(|event| match event {
            Event::Displayed {
                conv: c, seq, body, ..
            } if *c == conv => Some((seq.0, body.clone())),
            _ => None,
        });
        displayed.collect()
    }

    /// (seq, client_seq, body) of every `Committed` event of `conv`, across server restarts.
    pub fn committed(&self, conv: ConvId) -> Vec<(u64, u64, String)> {
        let committed = self.events_of(SERVER).filter_map(|event| match event {
            Event::Committed {
                conv: c,
                seq,
                client_seq,
                body,
                ..
            } if *c == conv => Some((seq.0, client_seq.0, body.clone())),
            _ => None,
        });
        committed.collect()
    }

    /// The packets that left the queue with `fate` and match, with the time they did.
    pub fn packets(&self, fate: Fate, matches: impl Fn(&Flight) -> bool) -> Vec<(Time, &Flight)> {
        let log = self
            .log
            .iter()
            .filter(|(_, flight, f)| *f == fate && matches(flight));
        log.map(|(at, flight, _)| (*at, flight)).collect()
    }

    pub fn cursor(&self, d: u32, conv: ConvId) -> Seq {
        self.client(d).cursor(conv)
    }
}

pub fn token(d: u32) -> u64 {
    1000 + u64::from(d)
}
